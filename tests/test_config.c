#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"
#include "tune/config.h"
#include "tune/data.h"

/* A valid minimal config, to which tests append keys. */
#define MINIMAL "base_model: m\ndatasets:\n  - path: d.jsonl\nlearning_rate: 2e-4\nlora_target_linear: true\n"

static const char *data_path(const char *name)
{
    static char buf[4][512];
    static int next;
    char *p = buf[next++ % 4];
    snprintf(p, 512, "%s/config/%s", test_data_dir(), name);
    return p;
}

/* init + parse + validate, as tune_config_load does for a file. */
static tune_status load_text(const char *text, tune_config *cfg, tune_error_list *errs)
{
    tune_error e;
    ck_assert_int_eq(tune_config_init(cfg, &e), TUNE_OK);
    tune_status a = tune_config_parse_string(cfg, "t.yml", text, strlen(text), errs);
    cfg->config_path = strdup("t.yml");
    tune_status b = tune_config_validate(cfg, errs);
    return a > b ? a : b;
}

static void dump(const tune_error_list *errs)
{
    for (int i = 0; i < errs->count; i++) tune_error_print(stderr, &errs->items[i]);
}

/* Asserts that one error in the list is at file:line:col and contains text. */
static void expect_error(const tune_error_list *errs, const char *file, int line, int col, const char *text)
{
    for (int i = 0; i < errs->count; i++) {
        const tune_error *e = &errs->items[i];
        if (!strcmp(e->file, file) && e->line == line && e->col == col && strstr(e->message, text)) return;
    }
    dump(errs);
    ck_abort_msg("no error %s:%d:%d containing '%s'", file, line, col, text);
}

static void expect_one(const char *yaml, int line, int col, const char *text)
{
    tune_config cfg;
    tune_error_list errs = {0};
    ck_assert_int_eq(load_text(yaml, &cfg, &errs), TUNE_ERR_INPUT);
    expect_error(&errs, "t.yml", line, col, text);
    if (errs.count != 1) dump(&errs);
    ck_assert_int_eq(errs.count, 1);
    tune_error_list_free(&errs);
    tune_config_free(&cfg);
}

START_TEST(defaults_fill_every_key)
{
    tune_config cfg;
    tune_error e;
    ck_assert_int_eq(tune_config_init(&cfg, &e), TUNE_OK);
    ck_assert_int_eq(cfg.lora_r, 8);
    ck_assert_double_eq(cfg.lora_alpha, 16);
    ck_assert_int_eq(cfg.sequence_len, 512);
    ck_assert_int_eq(cfg.micro_batch_size, 1);
    ck_assert_double_eq(cfg.num_epochs, 1);
    ck_assert_int_eq(cfg.max_steps, -1);
    ck_assert_int_eq(cfg.warmup_steps, -1);
    ck_assert_int_eq(cfg.lr_scheduler, TUNE_LR_COSINE);
    ck_assert_int_eq(cfg.optimizer, TUNE_OPTIMIZER_ADAMW);
    ck_assert_double_eq(cfg.adam_beta2, 0.999);
    ck_assert_double_eq(cfg.adam_epsilon, 1e-8);
    ck_assert_str_eq(cfg.chat_template_date, "26 Jul 2024");
    ck_assert_str_eq(cfg.output_dir, "./model-out");
    ck_assert_int_eq(cfg.skip_bad_records, 0);
    ck_assert_int_eq(cfg.backend, TUNE_BACKEND_AUTO);
    ck_assert_int_eq(cfg.threads, 0);
    ck_assert_int_eq(cfg.seed, 42);
    ck_assert_int_eq(cfg.shuffle_merged_datasets, 1);
    ck_assert_ptr_null(cfg.base_model);
    ck_assert_int_eq(cfg.datasets_count, 0);
    ck_assert_int_eq(tune_config_origin(&cfg, "lora_r")->kind, TUNE_FROM_DEFAULT);
    ck_assert_ptr_null(tune_config_origin(&cfg, "no_such_key"));
    tune_config_free(&cfg);
}
END_TEST

START_TEST(minimal_config_is_valid)
{
    tune_config cfg;
    tune_error_list errs = {0};
    tune_status st = load_text(MINIMAL, &cfg, &errs);
    dump(&errs);
    ck_assert_int_eq(st, TUNE_OK);
    ck_assert_int_eq(errs.count, 0);
    ck_assert_int_eq(cfg.datasets_count, 1);
    ck_assert_int_eq(cfg.datasets[0].type, TUNE_DS_ALPACA);
    ck_assert_str_eq(cfg.datasets[0].field_instruction, "instruction");
    ck_assert_int_eq(cfg.datasets[0].roles_to_train_count, 1);
    ck_assert_str_eq(cfg.datasets[0].roles_to_train[0], "assistant");
    ck_assert_ptr_null(cfg.datasets[0].message_property_mappings.role); /* the type's default */
    ck_assert_int_eq(cfg.datasets[0].chat_template, TUNE_CHAT_TEMPLATE_UNSET);
    ck_assert_int_eq(cfg.datasets[0].train_on_eos, TUNE_EOS_TURN);
    tune_config_free(&cfg);
}
END_TEST

START_TEST(full_file_parses_with_positions)
{
    tune_config cfg;
    tune_error_list errs = {0};
    tune_error e;
    ck_assert_int_eq(tune_config_init(&cfg, &e), TUNE_OK);
    tune_status st = tune_config_parse_file(&cfg, data_path("full.yml"), &errs);
    if (st == TUNE_OK) st = tune_config_validate(&cfg, &errs);
    dump(&errs);
    ck_assert_int_eq(st, TUNE_OK);
    ck_assert_str_eq(cfg.base_model, "models/SmolLM2-135M-Instruct");
    ck_assert_str_eq(cfg.tokenizer_config, "models/tok");
    ck_assert_int_eq(cfg.model_type, TUNE_MODEL_TYPE_LLAMA);
    ck_assert_int_eq(cfg.lora_r, 16);
    ck_assert_double_eq(cfg.lora_dropout, 0.05);
    ck_assert_int_eq(cfg.lora_target_modules_count, 2);
    ck_assert_str_eq(cfg.lora_target_modules[1], "v_proj");
    ck_assert_int_eq(cfg.peft_use_rslora, 1);
    ck_assert_int_eq(cfg.datasets_count, 3);
    const tune_dataset_config *a = &cfg.datasets[0], *c = &cfg.datasets[1], *t = &cfg.datasets[2];
    ck_assert_int_eq(a->data_files_count, 1);
    ck_assert_str_eq(a->data_files[0], "part-1.jsonl");
    ck_assert_int_eq(c->type, TUNE_DS_CHAT_TEMPLATE);
    ck_assert_int_eq(c->data_files_count, 2);
    ck_assert_str_eq(c->split, "validation");
    ck_assert_str_eq(c->field_messages, "conversations");
    ck_assert_str_eq(c->message_property_mappings.role, "from");
    ck_assert_str_eq(c->message_property_mappings.content, "value");
    ck_assert_int_eq(c->roles_count, 2);
    ck_assert_str_eq(c->roles[1].role, "assistant");
    ck_assert_int_eq(c->roles[1].names_count, 2);
    ck_assert_str_eq(c->roles[1].names[1], "bot");
    ck_assert_int_eq(c->chat_template, TUNE_CHAT_TEMPLATE_LLAMA3);
    ck_assert_int_eq(c->roles_to_train_count, 2);
    ck_assert_int_eq(c->train_on_eos, TUNE_EOS_LAST);
    ck_assert_int_eq(t->type, TUNE_DS_COMPLETION);
    ck_assert_str_eq(t->field, "body");
    ck_assert_str_eq(cfg.special_tokens.pad_token, "<|pad|>");
    ck_assert_ptr_null(cfg.special_tokens.eos_token);
    ck_assert_int_eq(cfg.chat_template, TUNE_CHAT_TEMPLATE_CHATML);
    ck_assert_str_eq(cfg.default_system_message, "Quote \" backslash \\ tab\t newline\n done — 한국어");
    ck_assert_str_eq(cfg.chat_template_date, "01 Jan 2025");
    ck_assert_double_eq(cfg.num_epochs, 1.5);
    ck_assert_double_eq(cfg.learning_rate, 5e-5);
    ck_assert_int_eq(cfg.bf16, TUNE_BF16_AUTO);
    ck_assert_int_eq(cfg.optimizer, TUNE_OPTIMIZER_ADAMW);
    ck_assert_ptr_null(cfg.wandb_project);
    /* Origins: key positions, 1-based. */
    const tune_origin *o = tune_config_origin(&cfg, "learning_rate");
    ck_assert_int_eq(o->kind, TUNE_FROM_FILE);
    ck_assert_int_eq(o->line, 46);
    ck_assert_int_eq(o->col, 1);
    o = tune_dataset_origin(c, "train_on_eos");
    ck_assert_int_eq(o->line, 30);
    ck_assert_int_eq(o->col, 5);
    ck_assert_int_eq(c->line, 17);
    ck_assert_int_eq(c->col, 5);
    char where[256];
    tune_origin_describe(&cfg, tune_config_origin(&cfg, "seed"), where, sizeof where);
    ck_assert_ptr_nonnull(strstr(where, "full.yml:55:1"));
    tune_origin_describe(&cfg, tune_config_origin(&cfg, "lora_fan_in_fan_out"), where, sizeof where);
    ck_assert_str_eq(where, "default");
    tune_config_free(&cfg);
}
END_TEST

START_TEST(unknown_key_suggests_closest)
{
    expect_one(MINIMAL "lora_alpah: 16\n", 6, 1, "unknown key 'lora_alpah' (did you mean 'lora_alpha'?)");
    expect_one(MINIMAL "xyzzy: 1\n", 6, 1, "unknown key 'xyzzy'");
    expect_one(MINIMAL "field_instruction: q\n", 6, 1, "it is a dataset key: put it in an entry under datasets:");
    expect_one("base_model: m\ndatasets:\n  - path: d.jsonl\n    feild: x\nlearning_rate: 1e-4\n"
               "lora_target_linear: true\n",
               4, 5, "unknown key 'feild' in dataset entry (did you mean 'field'?)");
}
END_TEST

START_TEST(wrong_types_at_value_position)
{
    expect_one(MINIMAL "lora_r: sixteen\n", 6, 9, "lora_r must be an integer, got 'sixteen'");
    expect_one(MINIMAL "lora_r: 16.5\n", 6, 9, "lora_r must be an integer");
    expect_one(MINIMAL "lora_dropout: [1]\n", 6, 15, "lora_dropout must be a number, got a list");
    expect_one(MINIMAL "sample_packing: maybe\n", 6, 17, "sample_packing must be true or false, got 'maybe'");
    expect_one(MINIMAL "output_dir: {a: 1}\n", 6, 13, "output_dir must be a string, got a mapping");
    expect_one(MINIMAL "lora_target_modules: [q_proj, qproj]\n", 6, 31,
               "unknown module 'qproj' (did you mean 'q_proj'?)");
    expect_one("base_model: m\ndatasets: d.jsonl\nlearning_rate: 1e-4\nlora_target_linear: true\n", 2, 11,
               "datasets must be a list of dataset entries");
    expect_one(MINIMAL "special_tokens: {pad: x}\n", 6, 18, "unknown key 'pad' in special_tokens");
    expect_one(MINIMAL "lora_alpha: inf\n", 6, 13, "lora_alpha must be a number");
}
END_TEST

START_TEST(out_of_range_values)
{
    expect_one(MINIMAL "lora_r: 0\n", 6, 9, "lora_r must be in [1, 65536], got 0");
    expect_one(MINIMAL "lora_dropout: 1.0\n", 6, 15, "lora_dropout must be in [0, 1), got 1.0");
    expect_one(MINIMAL "micro_batch_size: -2\n", 6, 19, "micro_batch_size must be in [1, 65536], got -2");
    expect_one("base_model: m\ndatasets:\n  - path: d.jsonl\nlearning_rate: 0\nlora_target_linear: true\n", 4, 16,
               "learning_rate must be in (0, 10], got 0");
    expect_one(MINIMAL "val_set_size: 10.5\n", 6, 1, "must be a whole number");
}
END_TEST

START_TEST(bad_enum_lists_allowed_values)
{
    expect_one(MINIMAL "lr_scheduler: cosin\n", 6, 15,
               "bad value 'cosin' for lr_scheduler (allowed: constant, linear, cosine, constant_with_warmup; did you mean 'cosine'?)");
    expect_one(MINIMAL "backend: tpu\n", 6, 10, "bad value 'tpu' for backend (allowed: auto, cpu, cuda; did you mean 'cpu'?)");
    expect_one(MINIMAL "optimizer: sgd\n", 6, 12,
               "optimizer: sgd is not supported yet (supported: adamw_torch, adamw_hf, adamw_torch_fused)");
    expect_one("base_model: m\ndatasets:\n  - path: d.jsonl\n    type: oasst\nlearning_rate: 1e-4\n"
               "lora_target_linear: true\n",
               4, 11, "type: oasst is not supported yet");
    expect_one(MINIMAL "datasets:\n  - path: x\n    train_on_eos: some\n", 6, 1, "duplicate key 'datasets'");
}
END_TEST

START_TEST(missing_required_keys)
{
    tune_config cfg;
    tune_error_list errs = {0};
    ck_assert_int_eq(load_text("lora_r: 8\n", &cfg, &errs), TUNE_ERR_INPUT);
    expect_error(&errs, "t.yml", 1, 1, "missing required key 'base_model'");
    expect_error(&errs, "t.yml", 1, 1, "missing required key 'datasets'");
    expect_error(&errs, "t.yml", 1, 1, "missing required key 'learning_rate'");
    expect_error(&errs, "t.yml", 1, 1, "no LoRA target");
    ck_assert_int_eq(errs.count, 4);
    tune_error_list_free(&errs);
    tune_config_free(&cfg);
    expect_one("base_model: m\ndatasets:\n  - type: alpaca\nlearning_rate: 1e-4\nlora_target_linear: true\n", 3, 5,
               "datasets[0]: missing required key 'path'");
    expect_one("base_model: m\ndatasets: []\nlearning_rate: 1e-4\nlora_target_linear: true\n", 2, 1,
               "datasets must list at least one dataset");
}
END_TEST

START_TEST(contradictions)
{
    expect_one(MINIMAL "warmup_steps: 10\nwarmup_ratio: 0.1\n", 7, 1,
               "warmup_steps and warmup_ratio are both set (warmup_steps at t.yml:6:1); use one");
    expect_one(MINIMAL "save_steps: 10\nsaves_per_epoch: 2\n", 7, 1, "save_steps and saves_per_epoch are both set");
    expect_one(MINIMAL "eval_steps: 10\nevals_per_epoch: 2\n", 7, 1, "eval_steps and evals_per_epoch are both set");
    expect_one(MINIMAL "val_set_size: 0.1\ntest_datasets:\n  - path: e.jsonl\n", 6, 1,
               "val_set_size and test_datasets are both set");
    expect_one(MINIMAL "lr_scheduler: linear\ncosine_min_lr_ratio: 0.1\n", 7, 1,
               "cosine_min_lr_ratio applies to lr_scheduler: cosine only");
    expect_one(MINIMAL "lr_scheduler: constant\nwarmup_ratio: 0.1\n", 6, 1,
               "lr_scheduler: constant has no warmup (as in Transformers); use constant_with_warmup");
    /* qlora without load_in_4bit, and 4-bit without qlora, as Axolotl refuses them. */
    tune_config cfg;
    tune_error_list errs = {0};
    ck_assert_int_eq(load_text(MINIMAL "adapter: qlora\n", &cfg, &errs), TUNE_ERR_INPUT);
    expect_error(&errs, "t.yml", 6, 1, "adapter: qlora needs load_in_4bit: true");
    ck_assert_int_eq(errs.count, 1);
    tune_error_list_free(&errs);
    tune_config_free(&cfg);
    ck_assert_int_eq(load_text(MINIMAL "load_in_8bit: true\nload_in_4bit: true\n", &cfg, &errs), TUNE_ERR_INPUT);
    expect_error(&errs, "t.yml", 7, 1, "load_in_8bit and load_in_4bit are both true");
    expect_error(&errs, "t.yml", 7, 1, "load_in_4bit trains QLoRA: set adapter: qlora");
    ck_assert_int_eq(errs.count, 2);
    tune_error_list_free(&errs);
    tune_config_free(&cfg);
    /* Double quantisation applies to load_in_4bit's NF4 only; with it (and qlora) it is accepted. */
    expect_one(MINIMAL "bnb_4bit_use_double_quant: true\n", 6, 1,
               "bnb_4bit_use_double_quant quantises load_in_4bit's NF4 scales: it needs load_in_4bit: true and "
               "adapter: qlora");
    ck_assert_int_eq(load_text(MINIMAL "load_in_8bit: true\nbnb_4bit_use_double_quant: true\n", &cfg, &errs),
                     TUNE_ERR_INPUT);
    expect_error(&errs, "t.yml", 7, 1, "bnb_4bit_use_double_quant quantises load_in_4bit's NF4 scales");
    ck_assert_int_eq(errs.count, 1);
    tune_error_list_free(&errs);
    tune_config_free(&cfg);
    ck_assert_int_eq(load_text(MINIMAL "load_in_4bit: true\nadapter: qlora\nbnb_4bit_use_double_quant: true\n", &cfg,
                               &errs),
                     TUNE_OK);
    ck_assert_int_eq(cfg.bnb_4bit_use_double_quant, 1);
    tune_config_free(&cfg);
    ck_assert_int_eq(load_text("base_model: m\ndatasets:\n  - path: d.jsonl\nlearning_rate: 2e-4\n", &cfg, &errs),
                     TUNE_ERR_INPUT);
    expect_error(&errs, "t.yml", 1, 1, "no LoRA target");
    tune_error_list_free(&errs);
    tune_config_free(&cfg);
}
END_TEST

START_TEST(not_supported_yet_at_key_position)
{
    expect_one(MINIMAL "trust_remote_code: true\n", 6, 1, "trust_remote_code: not supported yet");
    expect_one(MINIMAL "neftune_noise_alpha: 5\n", 6, 1, "neftune_noise_alpha: not supported yet");
    expect_one(MINIMAL "fp16: true\n", 6, 1, "fp16: not supported yet");
    expect_one(MINIMAL "bf16: true\n", 6, 1, "bf16: true is not supported yet (supported: false, auto)");
    expect_one(MINIMAL "wandb_project: x\n", 6, 1, "wandb_project: not supported yet");
    expect_one(MINIMAL "lora_fan_in_fan_out: true\n", 6, 1, "lora_fan_in_fan_out: not supported yet");
    expect_one(MINIMAL "lora_modules_to_save: [embed_tokens, q_proj]\n", 6, 38, "q_proj");
    expect_one("base_model: m\ndatasets:\n  - path: d.jsonl\n    name: sub\nlearning_rate: 1e-4\n"
               "lora_target_linear: true\n",
               4, 5, "datasets[0].name: not supported yet");
    /* At their defaults (off, or null) these keys are fine. */
    tune_config cfg;
    tune_error_list errs = {0};
    ck_assert_int_eq(load_text(MINIMAL "load_in_8bit: false\nfp16: no\nbf16: False\nwandb_project:\n"
                                       "neftune_noise_alpha: null\nbf16: auto\n",
                               &cfg, &errs),
                     TUNE_ERR_INPUT); /* only the duplicate bf16 */
    expect_error(&errs, "t.yml", 11, 1, "duplicate key 'bf16'");
    ck_assert_int_eq(errs.count, 1);
    tune_error_list_free(&errs);
    tune_config_free(&cfg);
}
END_TEST

START_TEST(all_errors_in_one_run)
{
    tune_config cfg;
    tune_error_list errs = {0};
    ck_assert_int_eq(tune_config_load(&cfg, data_path("errors.yml"), 0, NULL, &errs), TUNE_ERR_INPUT);
    const char *f = data_path("errors.yml");
    expect_error(&errs, f, 4, 5, "unknown key 'typ' in dataset entry (did you mean 'type'?)");
    expect_error(&errs, f, 7, 1, "unknown key 'lora_alpah'");
    expect_error(&errs, f, 8, 9, "lora_r must be an integer");
    expect_error(&errs, f, 9, 15, "lora_dropout must be in [0, 1)");
    expect_error(&errs, f, 10, 15, "bad value 'cosin'");
    expect_error(&errs, f, 11, 12, "optimizer: sgd is not supported yet");
    expect_error(&errs, f, 12, 1, "trust_remote_code: not supported yet");
    expect_error(&errs, f, 13, 1, "neftune_noise_alpha: not supported yet");
    expect_error(&errs, f, 15, 1, "warmup_steps and warmup_ratio are both set");
    ck_assert_int_eq(errs.count, 9);
    tune_error_list_free(&errs);
    tune_config_free(&cfg);
}
END_TEST

static void expect_yaml_error(const char *file, int line, int col, const char *text)
{
    tune_config cfg;
    tune_error_list errs = {0};
    ck_assert_int_eq(tune_config_load(&cfg, data_path(file), 0, NULL, &errs), TUNE_ERR_INPUT);
    expect_error(&errs, data_path(file), line, col, text);
    ck_assert_int_eq(errs.count, 1);
    tune_error_list_free(&errs);
    tune_config_free(&cfg);
}

START_TEST(malformed_yaml_gives_position)
{
    expect_yaml_error("tab.yml", 3, 1, "invalid YAML: found character that cannot start any token");
    expect_yaml_error("indent.yml", 4, 4, "invalid YAML");
    expect_yaml_error("alias.yml", 1, 13, "invalid YAML: found undefined alias");
    tune_config cfg;
    tune_error_list errs = {0};
    ck_assert_int_eq(tune_config_load(&cfg, data_path("duplicate.yml"), 0, NULL, &errs), TUNE_ERR_INPUT);
    expect_error(&errs, data_path("duplicate.yml"), 5, 5, "duplicate key 'path' (first at line 4, column 5)");
    expect_error(&errs, data_path("duplicate.yml"), 7, 1, "duplicate key 'learning_rate'");
    ck_assert_int_eq(errs.count, 2);
    tune_error_list_free(&errs);
    tune_config_free(&cfg);
    /* Parsing alone (tune_config_load skips validation after these). */
    tune_error e;
    const char *bad[] = {"- a\n- b\n", "# nothing\n", "x: 1\n---\ny: 2\n"};
    const char *msg[] = {"the config must be a mapping", "the config is empty", "more than one YAML document"};
    const int line[] = {1, 1, 3};
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(tune_config_init(&cfg, &e), TUNE_OK);
        ck_assert_int_eq(tune_config_parse_string(&cfg, "t.yml", bad[i], strlen(bad[i]), &errs), TUNE_ERR_INPUT);
        expect_error(&errs, "t.yml", line[i], 1, msg[i]);
        ck_assert_int_eq(errs.count, 1);
        tune_error_list_free(&errs);
        tune_config_free(&cfg);
    }
    expect_one(MINIMAL "[a]: 1\n", 6, 1, "keys must be plain names");
    ck_assert_int_eq(tune_config_load(&cfg, "/nonexistent/c.yml", 0, NULL, &errs), TUNE_ERR_INPUT);
    ck_assert_int_eq(errs.count, 1);
    tune_error_list_free(&errs);
    tune_config_free(&cfg);
}
END_TEST

START_TEST(yaml_scalars_as_pyyaml_reads_them)
{
    tune_config cfg;
    tune_error_list errs = {0};
    ck_assert_int_eq(load_text(MINIMAL "sample_packing: yes\ntrain_on_inputs: On\nlora_r: \"32\"\n"
                                       "warmup_ratio: .5\noutput_dir: ~\nseed:\n",
                               &cfg, &errs),
                     TUNE_OK);
    ck_assert_int_eq(cfg.sample_packing, 1);
    ck_assert_int_eq(cfg.train_on_inputs, 1);
    ck_assert_int_eq(cfg.lora_r, 32);
    ck_assert_double_eq(cfg.warmup_ratio, 0.5);
    ck_assert_str_eq(cfg.output_dir, "./model-out"); /* null: the default */
    ck_assert_int_eq(cfg.seed, 42);
    ck_assert_int_eq(tune_config_origin(&cfg, "seed")->kind, TUNE_FROM_DEFAULT);
    tune_config_free(&cfg);
}
END_TEST

static tune_status load_args(const char *yaml, int argc, char **argv, tune_config *cfg, tune_error_list *errs)
{
    tune_error e;
    ck_assert_int_eq(tune_config_init(cfg, &e), TUNE_OK);
    cfg->config_path = strdup("t.yml");
    tune_status a = tune_config_parse_string(cfg, "t.yml", yaml, strlen(yaml), errs);
    tune_status b = tune_config_apply_args(cfg, argc, argv, errs);
    tune_status c = tune_config_validate(cfg, errs);
    a = a > b ? a : b;
    return a > c ? a : c;
}

START_TEST(overrides_every_form)
{
    char *argv[] = {"--learning_rate", "5e-5",    "--lora-alpha", "64",     "--seed=3",
                    "--set",           "datasets.0.path=x.jsonl",      "--set", "datasets.1.path=y.jsonl",
                    "--lora_target_modules", "q_proj, v_proj",         "--sample-packing",
                    "--set",           "special_tokens.pad_token=<pad>", "--set", "datasets.1.message_property_mappings.role=from",
                    "--output_dir",    "o"};
    int argc = (int)(sizeof argv / sizeof argv[0]);
    tune_config cfg;
    tune_error_list errs = {0};
    tune_status st = load_args(MINIMAL, argc, argv, &cfg, &errs);
    dump(&errs);
    ck_assert_int_eq(st, TUNE_OK);
    ck_assert_double_eq(cfg.learning_rate, 5e-5);
    ck_assert_double_eq(cfg.lora_alpha, 64);
    ck_assert_int_eq(cfg.seed, 3);
    ck_assert_int_eq(cfg.datasets_count, 2);
    ck_assert_str_eq(cfg.datasets[0].path, "x.jsonl");
    ck_assert_str_eq(cfg.datasets[1].path, "y.jsonl");
    ck_assert_int_eq(cfg.datasets[1].type, TUNE_DS_ALPACA);
    ck_assert_str_eq(cfg.datasets[1].message_property_mappings.role, "from");
    ck_assert_ptr_null(cfg.datasets[1].message_property_mappings.content);
    ck_assert_int_eq(cfg.lora_target_modules_count, 2);
    ck_assert_str_eq(cfg.lora_target_modules[1], "v_proj");
    ck_assert_int_eq(cfg.sample_packing, 1);
    ck_assert_str_eq(cfg.special_tokens.pad_token, "<pad>");
    ck_assert_str_eq(cfg.output_dir, "o");
    const tune_origin *o = tune_config_origin(&cfg, "learning_rate");
    ck_assert_int_eq(o->kind, TUNE_FROM_CLI);
    ck_assert_str_eq(o->flag, "--learning_rate");
    o = tune_dataset_origin(&cfg.datasets[0], "path");
    ck_assert_int_eq(o->kind, TUNE_FROM_CLI);
    ck_assert_str_eq(o->flag, "--set datasets.0.path");
    char where[256];
    tune_origin_describe(&cfg, tune_config_origin(&cfg, "lora_alpha"), where, sizeof where);
    ck_assert_str_eq(where, "command line --lora_alpha");
    tune_config_free(&cfg);
}
END_TEST

START_TEST(short_flags_of_the_original_scripts)
{
    char *argv[] = {"--model", "mm", "--dataset", "a.jsonl", "--output_dir", "od", "--epochs", "3",
                    "--batch_size", "4", "--lr", "1e-3", "--lora_r", "4"};
    tune_config cfg;
    tune_error_list errs = {0};
    ck_assert_int_eq(load_args("lora_target_linear: true\n", 14, argv, &cfg, &errs), TUNE_OK);
    ck_assert_str_eq(cfg.base_model, "mm");
    ck_assert_int_eq(cfg.datasets_count, 1);
    ck_assert_str_eq(cfg.datasets[0].path, "a.jsonl");
    ck_assert_str_eq(cfg.output_dir, "od");
    ck_assert_double_eq(cfg.num_epochs, 3);
    ck_assert_int_eq(cfg.micro_batch_size, 4);
    ck_assert_double_eq(cfg.learning_rate, 1e-3);
    ck_assert_int_eq(cfg.lora_r, 4);
    tune_config_free(&cfg);

    char *argv2[] = {"--dataset_path", "b.jsonl", "--load_8bit"};
    ck_assert_int_eq(load_args(MINIMAL, 3, argv2, &cfg, &errs), TUNE_OK);
    ck_assert_str_eq(cfg.datasets[0].path, "b.jsonl");
    ck_assert_int_eq(cfg.load_in_8bit, 1);
    tune_config_free(&cfg);
}
END_TEST

START_TEST(bad_overrides_name_the_flag)
{
    char *argv[] = {"--lr", "-1", "--lora_alpah", "3", "--set", "datasets.7.path=z", "--lora_r=x",
                    "stray", "--set", "nokey", "--set", "datasets.0.typo=1", "--backend", "gpu",
                    "--lora_target_modules", "q_proj,,v_proj", "--warmup_steps", "5", "--warmup_ratio", "0.1"};
    tune_config cfg;
    tune_error_list errs = {0};
    ck_assert_int_eq(load_args(MINIMAL, 20, argv, &cfg, &errs), TUNE_ERR_INPUT);
    expect_error(&errs, "command line", 0, 0, "--lr: learning_rate must be in (0, 10], got -1");
    expect_error(&errs, "command line", 0, 0, "--lora_alpah: unknown option (did you mean '--lora_alpha'?)");
    expect_error(&errs, "command line", 0, 0, "--set datasets.7.path: expected datasets.N.KEY with N from 0 to 1");
    expect_error(&errs, "command line", 0, 0, "--lora_r: lora_r must be an integer, got 'x'");
    expect_error(&errs, "command line", 0, 0, "stray: unexpected argument");
    expect_error(&errs, "command line", 0, 0, "--set: expected --set KEY=VALUE");
    expect_error(&errs, "command line", 0, 0, "--set datasets.0.typo: unknown key 'typo' in dataset entry");
    expect_error(&errs, "command line", 0, 0, "--backend: bad value 'gpu' for backend");
    expect_error(&errs, "command line", 0, 0, "--lora_target_modules: lora_target_modules: empty list element");
    expect_error(&errs, "command line", 0, 0,
                 "--warmup_ratio: warmup_steps and warmup_ratio are both set (warmup_steps at command line --warmup_steps)");
    ck_assert_int_eq(errs.count, 10);
    /* The old values stay when an override is bad. */
    ck_assert_double_eq(cfg.learning_rate, 2e-4);
    tune_error_list_free(&errs);
    tune_config_free(&cfg);
    /* An override can put a key back to its default, clearing a file value. */
    char *argv3[] = {"--load_in_8bit", "false", "--warmup_steps", "null"};
    ck_assert_int_eq(load_args(MINIMAL "load_in_8bit: true\nwarmup_steps: 3\nwarmup_ratio: 0.1\n", 4, argv3, &cfg, &errs),
                     TUNE_OK);
    ck_assert_int_eq(cfg.warmup_steps, -1);
    tune_config_free(&cfg);
}
END_TEST

START_TEST(resolved_config_round_trips)
{
    char *argv[] = {"--lr", "3e-4", "--set", "datasets.1.roles={user: [human, \"q: x\"]}", "--num_epochs", "0.1"};
    tune_config a, b;
    tune_error_list errs = {0};
    tune_error e;
    ck_assert_int_eq(tune_config_load(&a, data_path("full.yml"), 6, argv, &errs), TUNE_OK);
    char dir[256];
    snprintf(dir, sizeof dir, "%s/tune-config-XXXXXX", P_tmpdir);
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char path[300];
    snprintf(path, sizeof path, "%s/resolved.yml", dir);
    ck_assert_int_eq(tune_config_write_resolved(&a, path, &e), TUNE_OK);
    tune_status st = tune_config_load(&b, path, 0, NULL, &errs);
    dump(&errs);
    ck_assert_int_eq(st, TUNE_OK);
    ck_assert(tune_config_equal(&a, &b));
    ck_assert_str_eq(b.default_system_message, a.default_system_message);
    ck_assert_double_eq(b.num_epochs, 0.1);
    ck_assert_int_eq(b.datasets[1].roles[0].names_count, 2);
    ck_assert_str_eq(b.datasets[1].roles[0].names[1], "q: x");
    /* The comments name each value's origin. */
    char *text;
    size_t len;
    ck_assert_int_eq(tune_read_file(path, &text, &len, &e), TUNE_OK);
    ck_assert_ptr_nonnull(strstr(text, "learning_rate: 0.0003"));
    ck_assert_ptr_nonnull(strstr(text, "# command line --lr"));
    ck_assert_ptr_nonnull(strstr(text, "full.yml:6:1\n"));
    ck_assert_ptr_nonnull(strstr(text, "lora_fan_in_fan_out: false"));
    free(text);
    /* A changed value is noticed. */
    b.lora_r++;
    ck_assert(!tune_config_equal(&a, &b));
    unlink(path);
    rmdir(dir);
    tune_config_free(&a);
    tune_config_free(&b);
    /* Defaults alone round-trip too. */
    ck_assert_int_eq(tune_config_init(&a, &e), TUNE_OK);
    ck_assert_int_eq(tune_config_init(&b, &e), TUNE_OK);
    tune_strbuf sb = {0};
    ck_assert_int_eq(tune_config_format_resolved(&a, &sb), TUNE_OK);
    ck_assert_int_eq(tune_config_parse_string(&b, "r.yml", sb.data, sb.len, &errs), TUNE_OK);
    ck_assert(tune_config_equal(&a, &b));
    tune_strbuf_free(&sb);
    tune_config_free(&a);
    tune_config_free(&b);
}
END_TEST

/* Every truncation and a few byte substitutions of a full config: errors or
 * success, never a crash (the sanitizer build checks memory). */
START_TEST(hostile_yaml_never_crashes)
{
    char *text;
    size_t len;
    tune_error e;
    ck_assert_int_eq(tune_read_file(data_path("full.yml"), &text, &len, &e), TUNE_OK);
    const char subst[] = {':', '\t', '[', '{', '*', '&', '-', '"', '\'', '\n', '\0', (char)0xff};
    int failures = 0;
    for (size_t cut = 0; cut <= len; cut += 2) {
        for (int k = -1; k < (int)sizeof subst; k++) {
            if (k >= 0 && (cut == len || cut % 8)) break; /* substitutions at every 8th byte */
            char *t = malloc(len + 1);
            ck_assert_ptr_nonnull(t);
            memcpy(t, text, len + 1);
            size_t n = k < 0 ? cut : len;
            if (k >= 0) t[cut] = subst[k];
            tune_config cfg;
            tune_error_list errs = {0};
            ck_assert_int_eq(tune_config_init(&cfg, &e), TUNE_OK);
            if (tune_config_parse_string(&cfg, "h.yml", t, n, &errs) != TUNE_OK) failures++;
            tune_config_validate(&cfg, &errs);
            tune_strbuf sb = {0};
            tune_config_format_resolved(&cfg, &sb);
            tune_strbuf_free(&sb);
            for (int i = 0; i < errs.count; i++) ck_assert_str_eq(errs.items[i].code == TUNE_ERR_INPUT ? "" : "x", "");
            tune_error_list_free(&errs);
            tune_config_free(&cfg);
            free(t);
        }
    }
    ck_assert_int_gt(failures, 100); /* most mutations are reported */
    free(text);
    /* Odd command lines. */
    char *argv[] = {"--", "--=", "--set=", "--set", "=", "--set", "a.b.c.d=1", "-x", "--set", "datasets.-1.path=x",
                    "--set", "datasets.0", "--set", "datasets.0.path.x=1", "--lora_r", "[", "--lr="};
    tune_config cfg;
    tune_error_list errs = {0};
    ck_assert_int_eq(load_args(MINIMAL, (int)(sizeof argv / sizeof argv[0]), argv, &cfg, &errs), TUNE_ERR_INPUT);
    ck_assert_int_ge(errs.count, 9);
    tune_error_list_free(&errs);
    tune_config_free(&cfg);
}
END_TEST

/* Nesting beyond TUNE_CONFIG_MAX_DEPTH is refused, naming the limit and
 * where it is crossed, before libyaml's loader (quadratic in the depth)
 * sees it: 100,000 levels of flow or block collections, in the file or in
 * an override's value. The limit itself still loads. */
static void expect_too_deep(const char *yaml, int line, int col)
{
    tune_config cfg;
    tune_error_list errs = {0};
    ck_assert_int_eq(load_text(yaml, &cfg, &errs), TUNE_ERR_INPUT);
    expect_error(&errs, "t.yml", line, col, "the YAML nests deeper than 64 levels, tune's limit for a config");
    tune_error_list_free(&errs);
    tune_config_free(&cfg);
}

START_TEST(deep_nesting_is_refused_at_the_limit)
{
    const size_t n = 100000;
    char *t = malloc(4 * n + 64);
    ck_assert_ptr_nonnull(t);
    size_t k = (size_t)sprintf(t, "base_model: ");
    for (size_t i = 0; i < n; i++) t[k++] = '[';
    t[k] = 0;
    expect_too_deep(t, 1, 13 + TUNE_CONFIG_MAX_DEPTH - 1);
    /* Block mappings, one level per line: the limit is crossed at line 65. */
    k = 0;
    for (size_t i = 0; i < 200; i++) k += (size_t)sprintf(t + k, "%*sa:\n", (int)i, "");
    expect_too_deep(t, TUNE_CONFIG_MAX_DEPTH + 1, TUNE_CONFIG_MAX_DEPTH + 1);
    /* Exactly at the limit: an ordinary type error, not the depth. */
    k = (size_t)sprintf(t, MINIMAL "lora_r: ");
    for (int i = 0; i < TUNE_CONFIG_MAX_DEPTH - 1; i++) t[k++] = '[';
    for (int i = 0; i < TUNE_CONFIG_MAX_DEPTH - 1; i++) t[k++] = ']';
    t[k++] = '\n';
    t[k] = 0;
    expect_one(t, 6, 9, "lora_r must be an integer");

    k = 0;
    for (size_t i = 0; i < n; i++) t[k++] = '[';
    t[k] = 0;
    char *argv[] = {"--lora_r", t};
    tune_config cfg;
    tune_error_list errs = {0};
    ck_assert_int_eq(load_args(MINIMAL, 2, argv, &cfg, &errs), TUNE_ERR_INPUT);
    expect_error(&errs, "command line", 0, 0, "--lora_r: the YAML nests deeper than 64 levels");
    tune_error_list_free(&errs);
    tune_config_free(&cfg);
    free(t);
}
END_TEST

/* What a config can make tune hold is bounded (docs/limits.md), each limit
 * refused before the work it bounds: the text, the bytes of values its YAML
 * aliases repeat, the dataset entries, the roles of one, and the errors
 * reported (reading stops after them: unknown keys cost a scan of the keys
 * before them each). */
static void expect_limit(const char *yaml, int line, int col, const char *text)
{
    tune_config cfg;
    tune_error_list errs = {0};
    ck_assert_int_eq(load_text(yaml, &cfg, &errs), TUNE_ERR_INPUT);
    expect_error(&errs, "t.yml", line, col, text);
    tune_error_list_free(&errs);
    tune_config_free(&cfg);
}

START_TEST(size_limits_are_refused)
{
    const size_t big = TUNE_CONFIG_MAX_BYTES;
    char *t = malloc(2 * big + 4096);
    ck_assert_ptr_nonnull(t);
    size_t k = (size_t)sprintf(t, MINIMAL "# ");
    memset(t + k, 'x', big);
    t[k + big] = 0;
    expect_limit(t, 0, 0, "bytes of YAML, more than tune's limit of 1048576 for a config");

    /* 17 aliases of a 64 KiB path: 1.1 MiB of values from 70 KiB of text */
    k = (size_t)sprintf(t, "base_model: m\nlearning_rate: 2e-4\nlora_target_linear: true\ndatasets:\n  - path: &p ");
    memset(t + k, 'p', 65536);
    k += 65536;
    k += (size_t)sprintf(t + k, "\n    data_files: [*p");
    for (int i = 0; i < 16; i++) k += (size_t)sprintf(t + k, ", *p");
    sprintf(t + k, "]\n");
    expect_limit(t, 0, 0, "the values of the config add up to more than 1048576 bytes with its YAML aliases expanded");

    k = (size_t)sprintf(t, MINIMAL "test_datasets: [");
    for (int i = 0; i <= TUNE_CONFIG_MAX_DATASETS; i++) k += (size_t)sprintf(t + k, "%s{path: d}", i ? ", " : "");
    sprintf(t + k, "]\n");
    expect_limit(t, 6, 16, "test_datasets: 1025 entries, more than tune's limit of 1024");

    k = (size_t)sprintf(t, "base_model: m\nlearning_rate: 2e-4\nlora_target_linear: true\ndatasets:\n"
                           "  - path: d.jsonl\n    roles:\n");
    for (int i = 0; i <= TUNE_DATA_MAX_ROLES; i++) k += (size_t)sprintf(t + k, "      r%d: [n%d]\n", i, i);
    expect_limit(t, 7, 7, "roles: 17 roles, more than tune's limit of 16");

    k = (size_t)sprintf(t, MINIMAL);
    for (int i = 0; i < 5000; i++) k += (size_t)sprintf(t + k, "unknown_%d: 1\n", i);
    tune_config cfg;
    tune_error_list errs = {0};
    ck_assert_int_eq(load_text(t, &cfg, &errs), TUNE_ERR_INPUT);
    ck_assert_int_eq(errs.count, TUNE_CONFIG_MAX_ERRORS + 1);
    expect_error(&errs, "t.yml", 105, 1, "unknown key 'unknown_99'");
    expect_error(&errs, "t.yml", 106, 1, "more than 100 errors: the rest of the config was not read");
    tune_error_list_free(&errs);
    tune_config_free(&cfg);
    free(t);
}
END_TEST

START_TEST(docs_match_the_schema)
{
    char path[512];
    snprintf(path, sizeof path, "%s/../../docs/config.md", test_data_dir());
    char *text;
    size_t len;
    tune_error e;
    ck_assert_msg(tune_read_file(path, &text, &len, &e) == TUNE_OK, "docs/config.md missing");
    tune_strbuf sb = {0};
    tune_config_keys_format(&sb, 1);
    ck_assert_msg(len == sb.len && !memcmp(text, sb.data, len),
                  "docs/config.md is stale: regenerate with build/tune config keys --markdown > docs/config.md");
    ck_assert_ptr_nonnull(strstr(sb.data, "| `lora_alpha` | number | `16` |"));
    ck_assert_ptr_nonnull(strstr(sb.data, "| `trust_remote_code` | bool | `false` |  | not supported yet |"));
    tune_strbuf_free(&sb);
    free(text);
    tune_strbuf plain = {0};
    tune_config_keys_format(&plain, 0);
    ck_assert_ptr_nonnull(strstr(plain.data, "roles_to_train"));
    tune_strbuf_free(&plain);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("config");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, defaults_fill_every_key);
    tcase_add_test(tc, minimal_config_is_valid);
    tcase_add_test(tc, full_file_parses_with_positions);
    tcase_add_test(tc, unknown_key_suggests_closest);
    tcase_add_test(tc, wrong_types_at_value_position);
    tcase_add_test(tc, out_of_range_values);
    tcase_add_test(tc, bad_enum_lists_allowed_values);
    tcase_add_test(tc, missing_required_keys);
    tcase_add_test(tc, contradictions);
    tcase_add_test(tc, not_supported_yet_at_key_position);
    tcase_add_test(tc, all_errors_in_one_run);
    tcase_add_test(tc, malformed_yaml_gives_position);
    tcase_add_test(tc, yaml_scalars_as_pyyaml_reads_them);
    tcase_add_test(tc, overrides_every_form);
    tcase_add_test(tc, short_flags_of_the_original_scripts);
    tcase_add_test(tc, bad_overrides_name_the_flag);
    tcase_add_test(tc, resolved_config_round_trips);
    tcase_add_test(tc, hostile_yaml_never_crashes);
    tcase_add_test(tc, deep_nesting_is_refused_at_the_limit);
    tcase_add_test(tc, size_limits_are_refused);
    tcase_add_test(tc, docs_match_the_schema);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
