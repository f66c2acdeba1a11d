/* Experiment config: a YAML file in Axolotl's key names, parsed into a typed
 * struct whose fields are named exactly like the keys. One schema table
 * (src/config/schema.c) drives parsing, defaults, validation, `tune config
 * keys` and docs/config.md. Every value remembers where it came from. */
#ifndef TUNE_CONFIG_H
#define TUNE_CONFIG_H

#include "tune/backend.h"
#include "tune/error.h"
#include "tune/util.h"

/* Upper bounds of the schema tables (checked by a static assertion). */
#define TUNE_CONFIG_MAX_KEYS 128
#define TUNE_DATASET_MAX_KEYS 32
/* Deepest nesting of mappings and sequences a config (or an override's
 * value) may have; deeper YAML is refused before it is loaded. */
#define TUNE_CONFIG_MAX_DEPTH 64
/* Longest config text (and override value); also the most bytes its values
 * may add up to with YAML aliases expanded (an alias repeats its anchor's
 * value without repeating its text). */
#define TUNE_CONFIG_MAX_BYTES (1 << 20)
/* Most entries in `datasets:` or in `test_datasets:`. */
#define TUNE_CONFIG_MAX_DATASETS 1024
/* Errors reported for one config text before the rest is left unread. */
#define TUNE_CONFIG_MAX_ERRORS 100

typedef enum {
    TUNE_FROM_DEFAULT = 0, /* schema default */
    TUNE_FROM_FILE,        /* the config file, at line:col */
    TUNE_FROM_CLI,         /* a command-line override, named by flag */
} tune_origin_kind;

typedef struct tune_origin {
    tune_origin_kind kind;
    int line, col;  /* 1-based position of the key in the file (TUNE_FROM_FILE) */
    char flag[300]; /* "--lr", "--set datasets.0.path" (TUNE_FROM_CLI) */
    int bad;        /* the value given there was rejected (already reported) */
} tune_origin;

/* Enums: the C value is the index of the canonical name in the schema's
 * value list. A value of -1 means "not set" for keys without a default. */
typedef enum { TUNE_ADAPTER_LORA = 0, TUNE_ADAPTER_QLORA = 1 } tune_adapter;
typedef enum { TUNE_BF16_FALSE = 0, TUNE_BF16_AUTO = 1 } tune_bf16;
typedef enum { TUNE_MODEL_TYPE_AUTO = 0, TUNE_MODEL_TYPE_LLAMA = 1 } tune_model_type;
typedef enum {
    TUNE_TOKENIZER_TYPE_AUTO = 0, TUNE_TOKENIZER_TYPE_LLAMA, TUNE_TOKENIZER_TYPE_LLAMA_FAST,
    TUNE_TOKENIZER_TYPE_PRETRAINED_FAST, TUNE_TOKENIZER_TYPE_GPT2,
} tune_tokenizer_type;
typedef enum { TUNE_EXCESS_DROP = 0, TUNE_EXCESS_TRUNCATE, TUNE_EXCESS_RAISE } tune_excess_length_strategy;
typedef enum { TUNE_NAN_INF_STOP = 0, TUNE_NAN_INF_SKIP } tune_on_nan_inf;
typedef enum {
    TUNE_CHAT_TEMPLATE_UNSET = -1, /* a dataset entry without its own: use the top-level one */
    TUNE_CHAT_TEMPLATE_TOKENIZER_DEFAULT = 0,
    TUNE_CHAT_TEMPLATE_CHATML,
    TUNE_CHAT_TEMPLATE_LLAMA3,
    TUNE_CHAT_TEMPLATE_LLAMA2,
    TUNE_CHAT_TEMPLATE_VICUNA,
    TUNE_CHAT_TEMPLATE_LLAMA3_1, /* also llama3_2 */
    TUNE_CHAT_TEMPLATE_SMOLLM2,
    TUNE_CHAT_TEMPLATE_ZEPHYR,
    TUNE_CHAT_TEMPLATE_ALPACA,
    TUNE_CHAT_TEMPLATE_JINJA, /* chat_template_jinja */
    /* tokenizer_default_fallback_NAME: the tokenizer's own template when tune
     * knows it, else NAME; stored as TUNE_CHAT_TEMPLATE_FALLBACK + NAME's value */
    TUNE_CHAT_TEMPLATE_FALLBACK = 16,
} tune_chat_template;
/* As Transformers' SchedulerType: constant has no warmup, constant_with_warmup has. */
typedef enum { TUNE_LR_CONSTANT = 0, TUNE_LR_LINEAR, TUNE_LR_COSINE, TUNE_LR_CONSTANT_WITH_WARMUP } tune_lr_scheduler;
typedef enum { TUNE_OPTIMIZER_ADAMW = 0 } tune_optimizer; /* adamw_torch (adamw_hf, adamw_torch_fused) */
/* sharegpt is chat_template with ShareGPT's defaults (conversations, from/value). */
typedef enum {
    TUNE_DS_ALPACA = 0, TUNE_DS_CHAT_TEMPLATE, TUNE_DS_LLAMA2, TUNE_DS_COMPLETION, TUNE_DS_SHAREGPT,
} tune_dataset_type;
typedef enum { TUNE_EOS_TURN = 0, TUNE_EOS_ALL, TUNE_EOS_LAST, TUNE_EOS_NONE } tune_train_on_eos;

typedef struct tune_message_property_mappings {
    char *role;    /* source field holding a message's role */
    char *content; /* source field holding a message's text */
} tune_message_property_mappings;

typedef struct tune_role_map {
    char *role;         /* target role: system, user, assistant, tool */
    char **names;       /* source role names mapped to it */
    int names_count;
} tune_role_map;

typedef struct tune_special_tokens {
    char *bos_token, *eos_token, *pad_token, *unk_token; /* NULL: the tokenizer's own */
} tune_special_tokens;

/* One entry of `datasets:` or `test_datasets:`. */
typedef struct tune_dataset_config {
    char *path;
    tune_dataset_type type;
    char **data_files;
    int data_files_count;
    char *split;
    char *name; /* hub configuration name: not supported yet */
    char *field_instruction, *field_input, *field_output, *field_system;
    char *field_messages;
    char *field; /* completion: the text field */
    tune_message_property_mappings message_property_mappings;
    tune_role_map *roles; /* empty: the default mapping (see docs/config.md) */
    int roles_count;
    tune_chat_template chat_template;
    char **roles_to_train;
    int roles_to_train_count;
    tune_train_on_eos train_on_eos;
    int line, col; /* position of the entry in the file (0 when made on the command line) */
    tune_origin origin[TUNE_DATASET_MAX_KEYS]; /* by dataset-schema index */
} tune_dataset_config;

typedef struct tune_config {
    char *config_path; /* the file parsed, as given; NULL when none */

    /* model */
    char *base_model, *base_model_config, *tokenizer_config;
    tune_model_type model_type;
    tune_tokenizer_type tokenizer_type;
    int trust_remote_code;
    int load_in_8bit, load_in_4bit, bnb_4bit_use_double_quant;
    /* adapter */
    tune_adapter adapter;
    long lora_r;
    double lora_alpha, lora_dropout;
    char **lora_target_modules;
    int lora_target_modules_count;
    int lora_target_linear;
    char **lora_modules_to_save;
    int lora_modules_to_save_count;
    int lora_fan_in_fan_out, peft_use_rslora, peft_use_dora;
    char *lora_model_dir;
    /* data */
    tune_dataset_config *datasets;
    int datasets_count;
    tune_dataset_config *test_datasets;
    int test_datasets_count;
    double val_set_size;
    char *dataset_prepared_path;
    int shuffle_merged_datasets;
    long sequence_len;
    tune_excess_length_strategy excess_length_strategy;
    int sample_packing, pad_to_sequence_len, train_on_inputs;
    tune_special_tokens special_tokens;
    char **tokens;
    int tokens_count;
    tune_chat_template chat_template;
    char *chat_template_jinja;
    char *default_system_message;
    char *chat_template_date;
    int skip_bad_records;
    /* training */
    long gradient_accumulation_steps, micro_batch_size, eval_batch_size; /* eval_batch_size -1: micro_batch_size */
    double num_epochs;
    long max_steps;     /* -1: from num_epochs */
    long warmup_steps;  /* -1: from warmup_ratio */
    double warmup_ratio;
    double learning_rate;
    tune_lr_scheduler lr_scheduler;
    double cosine_min_lr_ratio;
    tune_optimizer optimizer;
    double weight_decay, adam_beta1, adam_beta2, adam_epsilon, max_grad_norm;
    tune_bf16 bf16;
    int fp16, tf32;
    int gradient_checkpointing, flash_attention;
    double neftune_noise_alpha;
    long seed;
    /* output, checkpoints, evaluation */
    char *output_dir;
    long logging_steps;
    long save_steps, saves_per_epoch, save_total_limit;  /* -1: not set */
    long eval_steps, evals_per_epoch;                    /* -1: not set */
    char *resume_from_checkpoint;
    int auto_resume_from_checkpoints;
    long early_stopping_patience;                        /* -1: off */
    double loss_watchdog_threshold;                      /* 0: off */
    long loss_watchdog_patience;
    tune_on_nan_inf on_nan_inf;
    /* machine */
    tune_backend_kind backend;
    long threads; /* 0: all cores */
    /* integrations tune does not have */
    char *wandb_project, *wandb_entity, *wandb_name, *hub_model_id, *deepspeed;

    tune_origin origin[TUNE_CONFIG_MAX_KEYS]; /* by schema index; see tune_config_origin */
} tune_config;

/* Fills every default (no file). Returns TUNE_ERR_RUN only when out of memory. */
tune_status tune_config_init(tune_config *cfg, tune_error *err);
void tune_config_free(tune_config *cfg);

/* Parses YAML text / a file into cfg (initialised with tune_config_init),
 * appending every error found (file:line:col) to errs. name labels errors. */
tune_status tune_config_parse_string(tune_config *cfg, const char *name, const char *text, size_t len,
                                     tune_error_list *errs);
tune_status tune_config_parse_file(tune_config *cfg, const char *path, tune_error_list *errs);

/* One override. key is a schema key ("learning_rate", "learning-rate") or a
 * dotted path ("datasets.0.path"); value is YAML text ("5e-5", "[q_proj, v_proj]",
 * "q_proj,v_proj" for lists). flag names it in errors ("--lr"). */
tune_status tune_config_set(tune_config *cfg, const char *key, const char *value, const char *flag,
                            tune_error_list *errs);

/* Command-line overrides: --key value, --key=value, --some-key value,
 * --set a.b=value, and the short flags --model, --dataset, --dataset_path,
 * --output_dir, --epochs, --batch_size, --lr, --lora_r, --load_8bit. Every
 * argument in argv[0..argc) must be an override. */
tune_status tune_config_apply_args(tune_config *cfg, int argc, char **argv, tune_error_list *errs);

/* Cross-key checks on the final values: required keys, keys not supported
 * yet, contradictions. */
tune_status tune_config_validate(const tune_config *cfg, tune_error_list *errs);

/* init + parse_file + apply_args + validate. cfg must be freed even on error. */
tune_status tune_config_load(tune_config *cfg, const char *path, int argc, char **argv, tune_error_list *errs);

/* Where a top-level key's (or a dataset key's) value came from; NULL for an unknown key. */
const tune_origin *tune_config_origin(const tune_config *cfg, const char *key);
const tune_origin *tune_dataset_origin(const tune_dataset_config *ds, const char *key);
/* "default", "excel.yml:12:1", "command line --lr". */
void tune_origin_describe(const tune_config *cfg, const tune_origin *o, char *buf, size_t size);
/* Fills err with a message about a value, positioned at its origin. */
tune_status tune_config_error_at(const tune_config *cfg, const tune_origin *o, tune_error *err,
                                 const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* Canonical name of an enum value ("cosine"), of the key's enum. */
const char *tune_config_enum_name(const char *key, int value);

/* Equal values (origins are not compared). */
int tune_config_equal(const tune_config *a, const tune_config *b);

/* The resolved config as YAML, every key, a comment naming each value's
 * origin. Parsing it gives a config equal to cfg. */
tune_status tune_config_format_resolved(const tune_config *cfg, tune_strbuf *out);
/* Written atomically. */
tune_status tune_config_write_resolved(const tune_config *cfg, const char *path, tune_error *err);

/* Every key with type, default, status and doc: plain text or Markdown
 * (docs/config.md is this Markdown). */
void tune_config_keys_format(tune_strbuf *out, int markdown);

#endif
