/* The one schema table: every key's type, default, range or values, status
 * and meaning. Parsing, defaults, validation, `tune config keys` and
 * docs/config.md are all driven from here. */
#include "schema.h"

#include <stdio.h>
#include <string.h>

#define CF(f) offsetof(tune_config, f)
#define CN(f) offsetof(tune_config, f##_count)
#define DF(f) offsetof(tune_dataset_config, f)
#define DN(f) offsetof(tune_dataset_config, f##_count)
#define GE(x) .has_min = 1, .min = (x)
#define GT(x) .has_min = 1, .min = (x), .min_open = 1
#define LE(x) .has_max = 1, .max = (x)
#define LT(x) .has_max = 1, .max = (x), .max_open = 1
#define N_OF(a) (int)(sizeof(a) / sizeof((a)[0]))
#define ENUM(name, boolish) static const enum_spec name = {name##_values, N_OF(name##_values), boolish}

_Static_assert(sizeof(tune_lr_scheduler) == sizeof(int) && sizeof(tune_chat_template) == sizeof(int),
               "enums are stored through int pointers");

static const enum_value adapter_values[] = {
    {"lora", TUNE_ADAPTER_LORA, 1},
    {"qlora", TUNE_ADAPTER_QLORA, 1},
};
ENUM(adapter, 0);

static const enum_value bf16_values[] = {
    {"false", TUNE_BF16_FALSE, 1},
    {"auto", TUNE_BF16_AUTO, 1},
    {"true", 2, 0},
};
ENUM(bf16, 1);

static const enum_value model_type_values[] = {
    {"AutoModelForCausalLM", TUNE_MODEL_TYPE_AUTO, 1},
    {"LlamaForCausalLM", TUNE_MODEL_TYPE_LLAMA, 1},
    {"MistralForCausalLM", -1, 0},
    {"Qwen2ForCausalLM", -1, 0},
};
ENUM(model_type, 0);

static const enum_value tokenizer_type_values[] = {
    {"AutoTokenizer", TUNE_TOKENIZER_TYPE_AUTO, 1},
    {"LlamaTokenizer", TUNE_TOKENIZER_TYPE_LLAMA, 1},
    {"LlamaTokenizerFast", TUNE_TOKENIZER_TYPE_LLAMA_FAST, 1},
    {"PreTrainedTokenizerFast", TUNE_TOKENIZER_TYPE_PRETRAINED_FAST, 1},
    {"GPT2Tokenizer", TUNE_TOKENIZER_TYPE_GPT2, 1},
};
ENUM(tokenizer_type, 0);

static const enum_value excess_values[] = {
    {"drop", TUNE_EXCESS_DROP, 1},
    {"truncate", TUNE_EXCESS_TRUNCATE, 1},
    {"raise", TUNE_EXCESS_RAISE, 1},
};
ENUM(excess, 0);

static const enum_value on_nan_inf_values[] = {
    {"stop", TUNE_NAN_INF_STOP, 1},
    {"skip", TUNE_NAN_INF_SKIP, 1},
};
ENUM(on_nan_inf, 0);

static const enum_value chat_template_values[] = {
    {"tokenizer_default", TUNE_CHAT_TEMPLATE_TOKENIZER_DEFAULT, 1},
    {"chatml", TUNE_CHAT_TEMPLATE_CHATML, 1},
    {"llama3", TUNE_CHAT_TEMPLATE_LLAMA3, 1},
    {"llama2", TUNE_CHAT_TEMPLATE_LLAMA2, 1},
    {"vicuna", TUNE_CHAT_TEMPLATE_VICUNA, 1},
    {"vicuna_v1.1", TUNE_CHAT_TEMPLATE_VICUNA, 1},
    {"vicuna_v1_1", TUNE_CHAT_TEMPLATE_VICUNA, 1},
    {"llama3_1", TUNE_CHAT_TEMPLATE_LLAMA3_1, 1},
    {"llama3_2", TUNE_CHAT_TEMPLATE_LLAMA3_1, 1},
    {"smollm2", TUNE_CHAT_TEMPLATE_SMOLLM2, 1},
    {"zephyr", TUNE_CHAT_TEMPLATE_ZEPHYR, 1},
    {"alpaca", TUNE_CHAT_TEMPLATE_ALPACA, 1},
    {"jinja", TUNE_CHAT_TEMPLATE_JINJA, 1},
#define FALLBACK(name, v) {"tokenizer_default_fallback_" name, TUNE_CHAT_TEMPLATE_FALLBACK + TUNE_CHAT_TEMPLATE_##v, 1}
    FALLBACK("chatml", CHATML),
    FALLBACK("llama3", LLAMA3),
    FALLBACK("llama2", LLAMA2),
    FALLBACK("vicuna", VICUNA),
    FALLBACK("vicuna_v1.1", VICUNA),
    FALLBACK("vicuna_v1_1", VICUNA),
    FALLBACK("llama3_1", LLAMA3_1),
    FALLBACK("llama3_2", LLAMA3_1),
    FALLBACK("smollm2", SMOLLM2),
    FALLBACK("zephyr", ZEPHYR),
    FALLBACK("alpaca", ALPACA),
#undef FALLBACK
    {"mistral_v1", -1, 0},
    {"gemma", -1, 0},
    {"phi_3", -1, 0},
    {"qwen_25", -1, 0},
};
ENUM(chat_template, 0);

static const enum_value lr_scheduler_values[] = {
    {"constant", TUNE_LR_CONSTANT, 1},
    {"linear", TUNE_LR_LINEAR, 1},
    {"cosine", TUNE_LR_COSINE, 1},
    {"constant_with_warmup", TUNE_LR_CONSTANT_WITH_WARMUP, 1},
    {"one_cycle", -1, 0},
    {"rex", -1, 0},
    {"log_sweep", -1, 0},
    {"polynomial", -1, 0},
    {"inverse_sqrt", -1, 0},
    {"cosine_with_restarts", -1, 0},
    {"reduce_lr_on_plateau", -1, 0},
    {"warmup_stable_decay", -1, 0},
};
ENUM(lr_scheduler, 0);

static const enum_value optimizer_values[] = {
    {"adamw_torch", TUNE_OPTIMIZER_ADAMW, 1},
    {"adamw_hf", TUNE_OPTIMIZER_ADAMW, 1},
    {"adamw_torch_fused", TUNE_OPTIMIZER_ADAMW, 1},
    {"adamw_bnb_8bit", -1, 0},
    {"adamw_8bit", -1, 0},
    {"paged_adamw_8bit", -1, 0},
    {"paged_adamw_32bit", -1, 0},
    {"adafactor", -1, 0},
    {"sgd", -1, 0},
    {"lion_8bit", -1, 0},
    {"muon", -1, 0},
};
ENUM(optimizer, 0);

static const enum_value backend_values[] = {
    {"auto", TUNE_BACKEND_AUTO, 1},
    {"cpu", TUNE_BACKEND_CPU, 1},
    {"cuda", TUNE_BACKEND_CUDA, 1},
};
ENUM(backend, 0);

static const enum_value dataset_type_values[] = {
    {"alpaca", TUNE_DS_ALPACA, 1},
    {"chat_template", TUNE_DS_CHAT_TEMPLATE, 1},
    {"llama2", TUNE_DS_LLAMA2, 1},
    {"completion", TUNE_DS_COMPLETION, 1},
    {"sharegpt", TUNE_DS_SHAREGPT, 1},
    {"input_output", -1, 0},
    {"alpaca_chat", -1, 0},
    {"oasst", -1, 0},
    {"pygmalion", -1, 0},
};
ENUM(dataset_type, 0);

static const enum_value train_on_eos_values[] = {
    {"turn", TUNE_EOS_TURN, 1},
    {"all", TUNE_EOS_ALL, 1},
    {"last", TUNE_EOS_LAST, 1},
    {"none", TUNE_EOS_NONE, 1},
};
ENUM(train_on_eos, 0);

static const sub_field special_tokens_fields[] = {
    {"bos_token", offsetof(tune_special_tokens, bos_token)},
    {"eos_token", offsetof(tune_special_tokens, eos_token)},
    {"pad_token", offsetof(tune_special_tokens, pad_token)},
    {"unk_token", offsetof(tune_special_tokens, unk_token)},
};
static const sub_spec special_tokens_sub = {special_tokens_fields, N_OF(special_tokens_fields)};

static const sub_field mpm_fields[] = {
    {"role", offsetof(tune_message_property_mappings, role)},
    {"content", offsetof(tune_message_property_mappings, content)},
};
static const sub_spec mpm_sub = {mpm_fields, N_OF(mpm_fields)};

static const char *const lora_module_names[] = {"q_proj", "k_proj", "v_proj", "o_proj",
                                                "gate_proj", "up_proj", "down_proj", NULL};
static const char *const saved_module_names[] = {"embed_tokens", "lm_head", NULL};

#define S_MODEL "Model"
#define S_ADAPTER "LoRA adapter"
#define S_DATA "Data"
#define S_TRAIN "Training"
#define S_OUT "Output, checkpoints and evaluation"
#define S_MACHINE "Machine"
#define S_EXT "Integrations tune does not have"
#define NOT_YET .supported = 0
#define YES .supported = 1

const key_spec tune_config_keys[] = {
    /* Model */
    {.name = "base_model", .type = K_STR, .off = CF(base_model), YES, .required = 1, .section = S_MODEL,
     .doc = "The model to adapt: a Hugging Face folder (config.json + safetensors) or a GGUF file. Relative paths are "
            "taken from the current directory."},
    {.name = "base_model_config", .type = K_STR, .off = CF(base_model_config), YES, .section = S_MODEL,
     .doc = "Folder or file whose config.json / GGUF header describes the model, when not base_model."},
    {.name = "tokenizer_config", .type = K_STR, .off = CF(tokenizer_config), YES, .section = S_MODEL,
     .doc = "Folder with tokenizer.json (or a GGUF file) for the tokenizer, when not base_model."},
    {.name = "model_type", .type = K_ENUM, .off = CF(model_type), .def = "AutoModelForCausalLM", .en = &model_type, YES,
     .section = S_MODEL, .doc = "Model class; tune trains LLaMA-family decoders only."},
    {.name = "tokenizer_type", .type = K_ENUM, .off = CF(tokenizer_type), .def = "AutoTokenizer",
     .en = &tokenizer_type, YES, .section = S_MODEL,
     .doc = "Tokenizer class; informational, tune reads tokenizer.json or the GGUF vocabulary."},
    {.name = "trust_remote_code", .type = K_BOOL, .off = CF(trust_remote_code), .def = "false", NOT_YET,
     .section = S_MODEL, .doc = "Run model code shipped with the model (tune runs no Python)."},
    {.name = "load_in_8bit", .type = K_BOOL, .off = CF(load_in_8bit), .def = "false", YES, .section = S_MODEL,
     .doc = "Keep full-precision linear weights in 8 bits: int8 with an f16 scale per 32 (GGUF's Q8_0), "
            "multiplied tile by tile. A quantised GGUF keeps its own blocks either way. --load_8bit sets it."},
    {.name = "load_in_4bit", .type = K_BOOL, .off = CF(load_in_4bit), .def = "false", YES, .section = S_MODEL,
     .doc = "Keep full-precision linear weights in 4 bits: NF4 blocks of 64 with an fp32 absmax each "
            "(QLoRA, bitsandbytes' code values). Needs adapter: qlora."},
    {.name = "bnb_4bit_use_double_quant", .type = K_BOOL, .off = CF(bnb_4bit_use_double_quant), .def = "false", YES,
     .section = S_MODEL,
     .doc = "With load_in_4bit: keep each NF4 block's absmax in 8 bits too (QLoRA's double quantisation, "
            "bitsandbytes' compress_statistics): 33 bytes a block of 64 instead of 36, about 0.37 bits a weight "
            "less. Hugging Face's BitsAndBytesConfig key."},

    /* Adapter */
    {.name = "adapter", .type = K_ENUM, .off = CF(adapter), .def = "lora", .en = &adapter, YES, .section = S_ADAPTER,
     .doc = "Adapter kind: lora, or qlora (LoRA on a 4-bit NF4 base, with load_in_4bit). The adapter is "
            "saved in the same PEFT format either way. tune trains adapters only (no full fine-tuning)."},
    {.name = "lora_r", .type = K_INT, .off = CF(lora_r), .def = "8", GE(1), LE(65536), YES, .section = S_ADAPTER,
     .doc = "LoRA rank r: A is (r, in), B is (out, r). vLLM loads r in {1, 8, 16, 32, 64, 128, 256, 320, 512}."},
    {.name = "lora_alpha", .type = K_FLOAT, .off = CF(lora_alpha), .def = "16", GT(0), YES, .section = S_ADAPTER,
     .doc = "LoRA alpha; the update is scaled by alpha / r."},
    {.name = "lora_dropout", .type = K_FLOAT, .off = CF(lora_dropout), .def = "0.0", GE(0), LT(1), YES,
     .section = S_ADAPTER, .doc = "Dropout on the LoRA input during training."},
    {.name = "lora_target_modules", .type = K_STRLIST, .off = CF(lora_target_modules), .count_off = CN(lora_target_modules),
     .allowed = lora_module_names, YES, .section = S_ADAPTER,
     .doc = "Linear layers of every block that get adapters (PEFT module names)."},
    {.name = "lora_target_linear", .type = K_BOOL, .off = CF(lora_target_linear), .def = "false", YES,
     .section = S_ADAPTER, .doc = "Adapt all seven linear layers of every block (adds to lora_target_modules)."},
    {.name = "lora_modules_to_save", .type = K_STRLIST, .off = CF(lora_modules_to_save),
     .count_off = CN(lora_modules_to_save), .allowed = saved_module_names, YES, .section = S_ADAPTER,
     .doc = "Modules trained in full and saved with the adapter, as PEFT's modules_to_save (vLLM does not "
            "load them); needed with new tokens."},
    {.name = "lora_fan_in_fan_out", .type = K_BOOL, .off = CF(lora_fan_in_fan_out), .def = "false", NOT_YET,
     .section = S_ADAPTER, .doc = "Weights stored (in, out), as in GPT-2's Conv1D."},
    {.name = "peft_use_rslora", .type = K_BOOL, .off = CF(peft_use_rslora), .def = "false", YES,
     .section = S_ADAPTER, .doc = "Rank-stabilised LoRA: scale by alpha / sqrt(r) instead of alpha / r."},
    {.name = "peft_use_dora", .type = K_BOOL, .off = CF(peft_use_dora), .def = "false", NOT_YET,
     .section = S_ADAPTER, .doc = "Weight-decomposed LoRA (DoRA)."},
    {.name = "lora_model_dir", .type = K_STR, .off = CF(lora_model_dir), NOT_YET, .section = S_ADAPTER,
     .doc = "Start from an existing adapter folder."},

    /* Data */
    {.name = "datasets", .type = K_DATASETS, .off = CF(datasets), .count_off = CN(datasets), YES, .required = 1,
     .section = S_DATA, .doc = "Training data: a list of entries (see \"Dataset entries\" below)."},
    {.name = "test_datasets", .type = K_DATASETS, .off = CF(test_datasets), .count_off = CN(test_datasets), YES,
     .section = S_DATA, .doc = "Evaluation data, entries as in datasets. Excludes val_set_size."},
    {.name = "val_set_size", .type = K_FLOAT, .off = CF(val_set_size), .def = "0.0", GE(0), YES, .section = S_DATA,
     .doc = "Hold out part of the training data for evaluation: a fraction when <= 1, a record count when > 1."},
    {.name = "dataset_prepared_path", .type = K_STR, .off = CF(dataset_prepared_path), YES, .section = S_DATA,
     .doc = "Folder for the tokenized data cache (default: output_dir/prepared)."},
    {.name = "shuffle_merged_datasets", .type = K_BOOL, .off = CF(shuffle_merged_datasets), .def = "true", YES,
     .section = S_DATA, .doc = "Shuffle the training records (seeded by seed) after merging the datasets."},
    {.name = "sequence_len", .type = K_INT, .off = CF(sequence_len), .def = "512", GE(2), LE(1048576), YES,
     .section = S_DATA, .doc = "Maximum tokens per training sequence."},
    {.name = "excess_length_strategy", .type = K_ENUM, .off = CF(excess_length_strategy), .def = "drop", .en = &excess,
     YES, .section = S_DATA, .doc = "Records longer than sequence_len: drop them, truncate them, or raise an error."},
    {.name = "sample_packing", .type = K_BOOL, .off = CF(sample_packing), .def = "false", YES, .section = S_DATA,
     .doc = "Pack several records into one sequence (attention does not cross record boundaries)."},
    {.name = "pad_to_sequence_len", .type = K_BOOL, .off = CF(pad_to_sequence_len), .def = "false", YES,
     .section = S_DATA, .doc = "Pad every micro-batch to sequence_len instead of its longest sequence."},
    {.name = "train_on_inputs", .type = K_BOOL, .off = CF(train_on_inputs), .def = "false", YES, .section = S_DATA,
     .doc = "Also train on prompt tokens (otherwise only responses carry loss)."},
    {.name = "special_tokens", .type = K_SUB, .off = CF(special_tokens), .sub = &special_tokens_sub, YES,
     .section = S_DATA, .doc = "bos_token / eos_token / pad_token / unk_token overrides; one not in the vocabulary "
                               "is added (HF add_special_tokens)."},
    {.name = "tokens", .type = K_STRLIST, .off = CF(tokens), .count_off = CN(tokens), YES, .section = S_DATA,
     .doc = "Tokens added to the vocabulary (HF add_tokens); new rows start at the mean embedding and "
            "need lora_modules_to_save: [embed_tokens, lm_head]."},
    {.name = "chat_template", .type = K_ENUM, .off = CF(chat_template), .def = "tokenizer_default",
     .en = &chat_template, YES, .section = S_DATA,
     .doc = "Chat template for chat_template and sharegpt datasets: the tokenizer's own (tokenizer_default, run by "
            "tune's Jinja engine), a built-in one, jinja (chat_template_jinja), or tokenizer_default_fallback_NAME "
            "(the tokenizer's own when it has one, else NAME)."},
    {.name = "chat_template_jinja", .type = K_STR, .off = CF(chat_template_jinja), YES, .section = S_DATA,
     .doc = "The Jinja chat template chat_template: jinja runs: its text, or the path of a .jinja file."},
    {.name = "default_system_message", .type = K_STR, .off = CF(default_system_message), YES, .section = S_DATA,
     .doc = "System message for conversations that have none (default: the template's own)."},
    {.name = "chat_template_date", .type = K_STR, .off = CF(chat_template_date), .def = "\"26 Jul 2024\"", YES,
     .section = S_DATA, .doc = "Fixed \"Today Date\" for Llama 3.1/3.2 templates, so the data is reproducible."},
    {.name = "skip_bad_records", .type = K_BOOL, .off = CF(skip_bad_records), .def = "false", YES, .section = S_DATA,
     .doc = "Skip malformed data records with a warning instead of stopping with an error."},

    /* Training */
    {.name = "micro_batch_size", .type = K_INT, .off = CF(micro_batch_size), .def = "1", GE(1), LE(65536), YES,
     .section = S_TRAIN, .doc = "Sequences per forward/backward pass."},
    {.name = "gradient_accumulation_steps", .type = K_INT, .off = CF(gradient_accumulation_steps), .def = "1", GE(1),
     LE(65536), YES, .section = S_TRAIN, .doc = "Micro-batches per optimizer step."},
    {.name = "eval_batch_size", .type = K_INT, .off = CF(eval_batch_size), GE(1), LE(65536), YES, .section = S_TRAIN,
     .doc = "Sequences per evaluation pass (default: micro_batch_size)."},
    {.name = "num_epochs", .type = K_FLOAT, .off = CF(num_epochs), .def = "1", GT(0), LE(1e6), YES,
     .section = S_TRAIN, .doc = "Passes over the training data (may be fractional); max_steps wins when set."},
    {.name = "max_steps", .type = K_INT, .off = CF(max_steps), GE(1), YES, .section = S_TRAIN,
     .doc = "Total optimizer steps; overrides num_epochs."},
    {.name = "warmup_steps", .type = K_INT, .off = CF(warmup_steps), GE(0), YES, .section = S_TRAIN,
     .doc = "Linear warmup steps (exclusive with warmup_ratio)."},
    {.name = "warmup_ratio", .type = K_FLOAT, .off = CF(warmup_ratio), .def = "0.0", GE(0), LE(1), YES,
     .section = S_TRAIN, .doc = "Warmup as a fraction of total steps: ceil(ratio x total)."},
    {.name = "learning_rate", .type = K_FLOAT, .off = CF(learning_rate), GT(0), LE(10), YES, .required = 1,
     .section = S_TRAIN, .doc = "Peak learning rate."},
    {.name = "lr_scheduler", .type = K_ENUM, .off = CF(lr_scheduler), .def = "cosine", .en = &lr_scheduler, YES,
     .section = S_TRAIN, .doc = "Learning-rate schedule, as in Transformers: linear and cosine start with warmup; constant has none "
            "(use constant_with_warmup)."},
    {.name = "cosine_min_lr_ratio", .type = K_FLOAT, .off = CF(cosine_min_lr_ratio), .def = "0.0", GE(0), LE(1), YES,
     .section = S_TRAIN, .doc = "cosine only: decay to this fraction of learning_rate instead of 0."},
    {.name = "optimizer", .type = K_ENUM, .off = CF(optimizer), .def = "adamw_torch", .en = &optimizer, YES,
     .section = S_TRAIN, .doc = "AdamW with decoupled weight decay (adamw_hf and adamw_torch_fused are the same here)."},
    {.name = "weight_decay", .type = K_FLOAT, .off = CF(weight_decay), .def = "0.0", GE(0), LE(10), YES,
     .section = S_TRAIN, .doc = "AdamW weight decay."},
    {.name = "adam_beta1", .type = K_FLOAT, .off = CF(adam_beta1), .def = "0.9", GE(0), LT(1), YES,
     .section = S_TRAIN, .doc = "AdamW beta1."},
    {.name = "adam_beta2", .type = K_FLOAT, .off = CF(adam_beta2), .def = "0.999", GE(0), LT(1), YES,
     .section = S_TRAIN, .doc = "AdamW beta2."},
    {.name = "adam_epsilon", .type = K_FLOAT, .off = CF(adam_epsilon), .def = "1e-08", GT(0), LE(1), YES,
     .section = S_TRAIN, .doc = "AdamW epsilon."},
    {.name = "max_grad_norm", .type = K_FLOAT, .off = CF(max_grad_norm), .def = "1.0", GE(0), YES,
     .section = S_TRAIN, .doc = "Clip the global gradient norm to this (0: no clipping)."},
    {.name = "bf16", .type = K_ENUM, .off = CF(bf16), .def = "false", .en = &bf16, YES, .section = S_TRAIN,
     .doc = "tune computes in fp32 (bf16 weights are upcast on load). false and auto (= fp32 here) are accepted; "
            "true (bf16 mixed precision) is not supported yet."},
    {.name = "fp16", .type = K_BOOL, .off = CF(fp16), .def = "false", NOT_YET, .section = S_TRAIN,
     .doc = "fp16 mixed precision."},
    {.name = "tf32", .type = K_BOOL, .off = CF(tf32), .def = "false", NOT_YET, .section = S_TRAIN,
     .doc = "TF32 tensor-core matmuls on CUDA."},
    {.name = "gradient_checkpointing", .type = K_BOOL, .off = CF(gradient_checkpointing), .def = "false", YES,
     .section = S_TRAIN, .doc = "Keep only each layer's input between the passes; the backward recomputes the rest "
                                "(about a third more compute, the same gradients bit for bit, much less memory)."},
    {.name = "flash_attention", .type = K_BOOL, .off = CF(flash_attention), .def = "false", NOT_YET,
     .section = S_TRAIN, .doc = "FlashAttention kernels."},
    {.name = "neftune_noise_alpha", .type = K_FLOAT, .off = CF(neftune_noise_alpha), .def = "0.0", GE(0), NOT_YET,
     .section = S_TRAIN, .doc = "NEFTune embedding noise."},
    {.name = "seed", .type = K_INT, .off = CF(seed), .def = "42", GE(0), LE(4294967295.0), YES, .section = S_TRAIN,
     .doc = "Seed of every random choice (LoRA init, dropout, shuffles)."},

    /* Output */
    {.name = "output_dir", .type = K_STR, .off = CF(output_dir), .def = "./model-out", YES, .section = S_OUT,
     .doc = "Where the adapter, checkpoints, logs and config_resolved.yml go."},
    {.name = "logging_steps", .type = K_INT, .off = CF(logging_steps), .def = "1", GE(1), YES, .section = S_OUT,
     .doc = "Log the training loss every this many optimizer steps."},
    {.name = "save_steps", .type = K_INT, .off = CF(save_steps), GE(1), YES, .section = S_OUT,
     .doc = "Checkpoint every this many steps (exclusive with saves_per_epoch; neither: once per epoch)."},
    {.name = "saves_per_epoch", .type = K_INT, .off = CF(saves_per_epoch), GE(1), YES, .section = S_OUT,
     .doc = "Checkpoints per epoch: every ceil(total / (saves_per_epoch x num_epochs)) steps."},
    {.name = "save_total_limit", .type = K_INT, .off = CF(save_total_limit), GE(1), YES, .section = S_OUT,
     .doc = "Keep at most this many checkpoints (default: all)."},
    {.name = "eval_steps", .type = K_INT, .off = CF(eval_steps), GE(1), YES, .section = S_OUT,
     .doc = "Evaluate every this many steps (exclusive with evals_per_epoch; neither: once per epoch)."},
    {.name = "evals_per_epoch", .type = K_INT, .off = CF(evals_per_epoch), GE(1), YES, .section = S_OUT,
     .doc = "Evaluations per epoch: every ceil(total / (evals_per_epoch x num_epochs)) steps."},
    {.name = "resume_from_checkpoint", .type = K_STR, .off = CF(resume_from_checkpoint), YES, .section = S_OUT,
     .doc = "Resume from this checkpoint folder."},
    {.name = "auto_resume_from_checkpoints", .type = K_BOOL, .off = CF(auto_resume_from_checkpoints), .def = "false",
     YES, .section = S_OUT, .doc = "Resume from the newest checkpoint in output_dir when there is one."},
    {.name = "early_stopping_patience", .type = K_INT, .off = CF(early_stopping_patience), GE(1), YES,
     .section = S_OUT, .doc = "Stop after this many evaluations without improvement."},
    {.name = "loss_watchdog_threshold", .type = K_FLOAT, .off = CF(loss_watchdog_threshold), .def = "0.0", GE(0), YES,
     .section = S_OUT, .doc = "End the run (adapter written) when the loss stays above this (0: off)."},
    {.name = "loss_watchdog_patience", .type = K_INT, .off = CF(loss_watchdog_patience), .def = "3", GE(1), YES,
     .section = S_OUT, .doc = "Steps above loss_watchdog_threshold before stopping."},
    {.name = "on_nan_inf", .type = K_ENUM, .off = CF(on_nan_inf), .def = "stop", .en = &on_nan_inf, YES,
     .section = S_OUT,
     .doc = "A step whose loss or gradient is NaN or infinite: stop the run (naming the step and the tensor; the "
            "checkpoints stay), or skip its update and go on (logged as skipped_nonfinite). A tune key: Axolotl "
            "and Transformers have none (logging_nan_inf_filter only hides such losses from the log)."},

    /* Machine */
    {.name = "backend", .type = K_ENUM, .off = CF(backend), .def = "auto", .en = &backend, YES, .section = S_MACHINE,
     .doc = "Where to compute: auto (cuda when built with it and a GPU is usable, else cpu), cpu (BLAS + "
            "OpenMP) or cuda (refused when no GPU is usable)."},
    {.name = "threads", .type = K_INT, .off = CF(threads), .def = "0", GE(0), LE(4096), YES, .section = S_MACHINE,
     .doc = "CPU threads (0: all cores). Results are bit-identical for a given thread count."},

    /* Integrations */
    {.name = "wandb_project", .type = K_STR, .off = CF(wandb_project), NOT_YET, .section = S_EXT,
     .doc = "Weights & Biases logging (tune writes its own loss log)."},
    {.name = "wandb_entity", .type = K_STR, .off = CF(wandb_entity), NOT_YET, .section = S_EXT,
     .doc = "Weights & Biases logging."},
    {.name = "wandb_name", .type = K_STR, .off = CF(wandb_name), NOT_YET, .section = S_EXT,
     .doc = "Weights & Biases logging."},
    {.name = "hub_model_id", .type = K_STR, .off = CF(hub_model_id), NOT_YET, .section = S_EXT,
     .doc = "Upload to a model hub."},
    {.name = "deepspeed", .type = K_STR, .off = CF(deepspeed), NOT_YET, .section = S_EXT,
     .doc = "DeepSpeed config (tune trains on one machine)."},
};
const int tune_config_n_keys = N_OF(tune_config_keys);
_Static_assert(N_OF(tune_config_keys) <= TUNE_CONFIG_MAX_KEYS, "raise TUNE_CONFIG_MAX_KEYS");

#define S_DS "Dataset entries"
const key_spec tune_dataset_keys[] = {
    {.name = "path", .type = K_STR, .off = DF(path), YES, .required = 1, .section = S_DS,
     .doc = "A JSON Lines / JSON file, or a folder of them (local paths only)."},
    {.name = "type", .type = K_ENUM, .off = DF(type), .def = "alpaca", .en = &dataset_type, YES, .section = S_DS,
     .doc = "Record format: alpaca (instruction/input/output), chat_template (message lists), sharegpt "
            "(chat_template reading ShareGPT's conversations with from/value), llama2 (Llama-2-chat text), "
            "completion (raw text)."},
    {.name = "data_files", .type = K_STRLIST, .off = DF(data_files), .count_off = DN(data_files), YES,
     .section = S_DS, .doc = "Files inside path to read (a string or a list; default: all)."},
    {.name = "split", .type = K_STR, .off = DF(split), .def = "train", YES, .section = S_DS,
     .doc = "Split name, for folders laid out by split."},
    {.name = "name", .type = K_STR, .off = DF(name), NOT_YET, .section = S_DS,
     .doc = "Hub dataset configuration name (tune reads local files only)."},
    {.name = "field_instruction", .type = K_STR, .off = DF(field_instruction), .def = "instruction", YES,
     .section = S_DS, .doc = "alpaca: field with the instruction."},
    {.name = "field_input", .type = K_STR, .off = DF(field_input), .def = "input", YES, .section = S_DS,
     .doc = "alpaca: field with the optional input."},
    {.name = "field_output", .type = K_STR, .off = DF(field_output), .def = "output", YES, .section = S_DS,
     .doc = "alpaca: field with the response."},
    {.name = "field_system", .type = K_STR, .off = DF(field_system), .def = "system", YES, .section = S_DS,
     .doc = "Field with a per-record system message."},
    {.name = "field_messages", .type = K_STR, .off = DF(field_messages), YES, .section = S_DS,
     .doc = "chat_template / sharegpt: field with the message list (default: messages; sharegpt: conversations)."},
    {.name = "field", .type = K_STR, .off = DF(field), .def = "text", YES, .section = S_DS,
     .doc = "completion: field with the text."},
    {.name = "message_property_mappings", .type = K_SUB, .off = DF(message_property_mappings), .sub = &mpm_sub,
     YES, .section = S_DS,
     .doc = "chat_template / sharegpt: message fields holding role and content (default: {role: role, content: "
            "content}; sharegpt: {role: from, content: value})."},
    {.name = "roles", .type = K_ROLES, .off = DF(roles), .count_off = DN(roles), YES, .section = S_DS,
     .doc = "chat_template: role -> list of source role names (default: user [human, user], assistant [gpt, "
            "assistant], system [system], tool [tool])."},
    {.name = "chat_template", .type = K_ENUM, .off = DF(chat_template), .en = &chat_template, YES, .section = S_DS,
     .doc = "This dataset's chat template (default: the top-level chat_template)."},
    {.name = "roles_to_train", .type = K_STRLIST, .off = DF(roles_to_train), .count_off = DN(roles_to_train),
     .def = "[assistant]", YES, .section = S_DS, .doc = "chat_template: roles whose messages carry loss."},
    {.name = "train_on_eos", .type = K_ENUM, .off = DF(train_on_eos), .def = "turn", .en = &train_on_eos, YES,
     .section = S_DS, .doc = "chat_template: which end-of-turn tokens carry loss: turn (of trained turns), all, last, "
                             "none."},
};
const int tune_dataset_n_keys = N_OF(tune_dataset_keys);
_Static_assert(N_OF(tune_dataset_keys) <= TUNE_DATASET_MAX_KEYS, "raise TUNE_DATASET_MAX_KEYS");

static int key_eq(const char *key, const char *name, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        char c = name[i] == '-' ? '_' : name[i];
        if (key[i] != c) return 0;
    }
    return key[len] == '\0';
}

int tune_schema_find(const key_spec *keys, int n, const char *name, size_t len)
{
    for (int i = 0; i < n; i++)
        if (key_eq(keys[i].name, name, len)) return i;
    return -1;
}

/* Edit distance (optimal string alignment), capped: names are short. */
static int edit_distance(const char *a, const char *b)
{
    size_t n = strlen(a), m = strlen(b);
    if (n > 63 || m > 63) return 99;
    int d[64][64];
    for (size_t i = 0; i <= n; i++) d[i][0] = (int)i;
    for (size_t j = 0; j <= m; j++) d[0][j] = (int)j;
    for (size_t i = 1; i <= n; i++)
        for (size_t j = 1; j <= m; j++) {
            int sub = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
            int del = d[i - 1][j] + 1, ins = d[i][j - 1] + 1;
            d[i][j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
            /* A swap of two neighbours counts as one edit (feild -> field). */
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] && d[i - 2][j - 2] + 1 < d[i][j])
                d[i][j] = d[i - 2][j - 2] + 1;
        }
    return d[n][m];
}

static const char *closest(const char *name, const char *cand, const char *best, int *best_d)
{
    int d = edit_distance(name, cand);
    if (d < *best_d) {
        *best_d = d;
        return cand;
    }
    return best;
}

/* Close means at most a third of the name's letters changed (at least 1, at most 3). */
static int close_enough(const char *name, int d)
{
    int limit = (int)strlen(name) / 3;
    if (limit < 1) limit = 1;
    if (limit > 3) limit = 3;
    return d <= limit;
}

const char *tune_schema_suggest(const key_spec *keys, int n, const char *name)
{
    const char *best = NULL;
    int best_d = 99;
    for (int i = 0; i < n; i++) best = closest(name, keys[i].name, best, &best_d);
    return best && close_enough(name, best_d) ? best : NULL;
}

const char *tune_schema_suggest_name(const char *const *names, const char *name)
{
    const char *best = NULL;
    int best_d = 99;
    for (int i = 0; names[i]; i++) best = closest(name, names[i], best, &best_d);
    return best && close_enough(name, best_d) ? best : NULL;
}

const enum_value *tune_schema_enum_find(const enum_spec *en, const char *name)
{
    for (int i = 0; i < en->n; i++)
        if (!strcmp(en->values[i].name, name)) return &en->values[i];
    return NULL;
}

const char *tune_schema_enum_canonical(const enum_spec *en, int value)
{
    for (int i = 0; i < en->n; i++)
        if (en->values[i].value == value) return en->values[i].name;
    return NULL;
}

void tune_schema_enum_list(const enum_spec *en, int supported_only, char *buf, size_t size)
{
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; i < en->n; i++) {
        if (supported_only && !en->values[i].supported) continue;
        int w = snprintf(buf + used, size - used, "%s%s", used ? ", " : "", en->values[i].name);
        if (w < 0 || (size_t)w >= size - used) return;
        used += (size_t)w;
    }
}

static void fmt_num(char *buf, size_t size, double v)
{
    snprintf(buf, size, "%.15g", v);
}

void tune_schema_range_text(const key_spec *k, char *buf, size_t size)
{
    char lo[32], hi[32];
    fmt_num(lo, sizeof lo, k->min);
    fmt_num(hi, sizeof hi, k->max);
    if (k->has_min && k->has_max)
        snprintf(buf, size, "in %c%s, %s%c", k->min_open ? '(' : '[', lo, hi, k->max_open ? ')' : ']');
    else if (k->has_min)
        snprintf(buf, size, "%s %s", k->min_open ? ">" : ">=", lo);
    else if (k->has_max)
        snprintf(buf, size, "%s %s", k->max_open ? "<" : "<=", hi);
    else
        buf[0] = '\0';
}

const char *tune_schema_type_name(const key_spec *k)
{
    switch (k->type) {
    case K_STR: return "string";
    case K_BOOL: return "bool";
    case K_INT: return "integer";
    case K_FLOAT: return "number";
    case K_ENUM: return "one of";
    case K_STRLIST: return "list of strings";
    case K_SUB: return "mapping";
    case K_ROLES: return "mapping of lists";
    case K_DATASETS: return "list of datasets";
    }
    return "?";
}
