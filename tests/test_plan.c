#include <cJSON.h>
#include <ftw.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"
#include "tune/plan.h"
#include "tune/tokenizer.h"

static char tmpdir[256];

/* A scratch folder with an (empty) model file and data files: the plan only checks they exist. */
static void setup(void)
{
    snprintf(tmpdir, sizeof tmpdir, "%s/tune-plan-XXXXXX", P_tmpdir);
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
    const char *files[] = {"model.gguf", "train.jsonl", "eval.jsonl"};
    tune_error e;
    for (int i = 0; i < 3; i++) {
        char p[300];
        snprintf(p, sizeof p, "%s/%s", tmpdir, files[i]);
        ck_assert_int_eq(tune_write_file_atomic(p, "", 0, &e), TUNE_OK);
    }
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

/* The scratch folder and everything the tests wrote in it (prepared-data caches). */
static void teardown(void)
{
    nftw(tmpdir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Config text with @ replaced by the scratch folder and $ by the test data
 * folder; parsed, validated and planned. */
static tune_status plan_from(const char *yaml, tune_config *cfg, tune_plan *plan, tune_error_list *errs)
{
    char text[4096];
    size_t n = 0;
    for (const char *p = yaml; *p && n + 80 < sizeof text; p++) {
        if (*p == '@') n += (size_t)snprintf(text + n, sizeof text - n, "%s", tmpdir);
        else if (*p == '$') n += (size_t)snprintf(text + n, sizeof text - n, "%s", test_data_dir());
        else text[n++] = *p;
    }
    text[n] = '\0';
    tune_error e;
    ck_assert_int_eq(tune_config_init(cfg, &e), TUNE_OK);
    cfg->config_path = strdup("p.yml");
    ck_assert_int_eq(tune_config_parse_string(cfg, "p.yml", text, n, errs), TUNE_OK);
    for (int i = 0; i < errs->count; i++) tune_error_print(stderr, &errs->items[i]);
    ck_assert_int_eq(tune_config_validate(cfg, errs), TUNE_OK);
    return tune_plan_init(plan, cfg, errs);
}

/* The model: SmolLM2-135M's config.json alone (the plan reads no weights). */
#define BASE "base_model: $/plan/smollm2-135m\ndatasets:\n  - path: @/train.jsonl\nlearning_rate: 2e-4\n"

START_TEST(schedules_match_transformers)
{
    char path[512];
    snprintf(path, sizeof path, "%s/plan/schedules.json", test_data_dir());
    char *text;
    size_t len;
    tune_error e;
    ck_assert_int_eq(tune_read_file(path, &text, &len, &e), TUNE_OK);
    cJSON *root = cJSON_Parse(text);
    free(text);
    ck_assert_ptr_nonnull(root);
    const cJSON *cases = cJSON_GetObjectItem(root, "cases");
    int n_cases = 0, n_steps = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, cases)
    {
        const char *kind = cJSON_GetObjectItem(c, "kind")->valuestring;
        tune_schedule s = {
            .kind = !strcmp(kind, "constant")               ? TUNE_LR_CONSTANT
                    : !strcmp(kind, "constant_with_warmup") ? TUNE_LR_CONSTANT_WITH_WARMUP
                    : !strcmp(kind, "linear")               ? TUNE_LR_LINEAR
                                                            : TUNE_LR_COSINE,
            .lr = cJSON_GetObjectItem(c, "lr")->valuedouble,
            .warmup_steps = (long)cJSON_GetObjectItem(c, "warmup")->valuedouble,
            .total_steps = (long)cJSON_GetObjectItem(c, "total")->valuedouble,
            .min_lr_ratio = cJSON_GetObjectItem(c, "min_lr_ratio")->valuedouble,
        };
        long step = 0;
        const cJSON *lr;
        cJSON_ArrayForEach(lr, cJSON_GetObjectItem(c, "lrs"))
        {
            double want = lr->valuedouble, got = tune_schedule_lr(&s, step);
            ck_assert_msg(fabs(got - want) <= 1e-12 * fabs(want) + 1e-300, "%s w%ld t%ld step %ld: %.17g != %.17g", kind,
                          s.warmup_steps, s.total_steps, step, got, want);
            step++;
            n_steps++;
        }
        ck_assert_int_eq(step, s.total_steps + 1);
        n_cases++;
    }
    ck_assert_int_ge(n_cases, 12);
    ck_assert_int_ge(n_steps, 300);
    cJSON_Delete(root);
}
END_TEST

START_TEST(steps_per_epoch_rule)
{
    /* ceil(ceil(n / micro_batch_size) / gradient_accumulation_steps) */
    ck_assert_int_eq(tune_plan_steps_per_epoch(8, 4, 2), 1);
    ck_assert_int_eq(tune_plan_steps_per_epoch(9, 4, 2), 2);  /* 3 micro-batches: 2 + a short group of 1 */
    ck_assert_int_eq(tune_plan_steps_per_epoch(16, 4, 2), 2);
    ck_assert_int_eq(tune_plan_steps_per_epoch(17, 4, 2), 3);
    ck_assert_int_eq(tune_plan_steps_per_epoch(1, 4, 8), 1);
    ck_assert_int_eq(tune_plan_steps_per_epoch(0, 4, 2), 0);
    ck_assert_int_eq(tune_plan_steps_per_epoch(1000, 1, 1), 1000);
    ck_assert_int_eq(tune_plan_steps_per_epoch(1000, 3, 7), 48); /* 334 micro-batches */
}
END_TEST

START_TEST(plan_steps_from_examples)
{
    tune_config cfg;
    tune_plan p;
    tune_error_list errs = {0};
    ck_assert_int_eq(plan_from(BASE "lora_target_linear: true\nmicro_batch_size: 4\ngradient_accumulation_steps: 2\n"
                                    "num_epochs: 2\nwarmup_ratio: 0.05\nlogging_steps: 5\n"
                                    "test_datasets:\n  - path: @/eval.jsonl\nevals_per_epoch: 4\nsaves_per_epoch: 1\n",
                               &cfg, &p, &errs),
                     TUNE_OK);
    /* Before the data stage. */
    ck_assert_int_eq(p.n_train_examples, TUNE_PLAN_UNKNOWN);
    ck_assert_int_eq(p.steps_per_epoch, TUNE_PLAN_UNKNOWN);
    ck_assert_int_eq(p.total_steps, TUNE_PLAN_UNKNOWN);
    ck_assert_int_eq(p.warmup_steps, TUNE_PLAN_UNKNOWN);
    ck_assert_int_eq(p.eval_every, TUNE_PLAN_UNKNOWN);
    ck_assert_int_eq(p.n_lora_targets, 7);
    ck_assert_double_eq(p.lora_scaling, 2.0); /* alpha 16 / r 8 */
    /* 1000 examples: 250 micro-batches, 125 steps per epoch, 250 in all. */
    tune_plan_set_examples(&p, 1000, 100);
    ck_assert_int_eq(p.micro_batches_per_epoch, 250);
    ck_assert_int_eq(p.steps_per_epoch, 125);
    ck_assert_int_eq(p.total_steps, 250);
    ck_assert_int_eq(p.warmup_steps, 13); /* ceil(0.05 · 250) */
    ck_assert_int_eq(p.schedule.total_steps, 250);
    ck_assert_int_eq(p.schedule.warmup_steps, 13);
    ck_assert_int_eq(p.eval_every, 32);   /* ceil(250 / (4 · 2)) */
    ck_assert_int_eq(p.save_every, 125);  /* ceil(250 / (1 · 2)) */
    ck_assert_int_eq(p.logging_steps, 5);
    ck_assert_double_eq(tune_schedule_lr(&p.schedule, 0), 0.0);
    ck_assert_double_eq(tune_schedule_lr(&p.schedule, 13), 2e-4);
    tune_plan_free(&p);
    tune_config_free(&cfg);

    /* Fractional epochs round the total up; max_steps wins; warmup_steps as given. */
    ck_assert_int_eq(plan_from(BASE "lora_target_modules: [q_proj, v_proj]\nnum_epochs: 1.5\nwarmup_steps: 3\n"
                                    "micro_batch_size: 3\n",
                               &cfg, &p, &errs),
                     TUNE_OK);
    tune_plan_set_examples(&p, 10, 0); /* 4 steps per epoch */
    ck_assert_int_eq(p.steps_per_epoch, 4);
    ck_assert_int_eq(p.total_steps, 6);
    ck_assert_int_eq(p.warmup_steps, 3);
    ck_assert_int_eq(p.save_every, 4); /* once per epoch */
    ck_assert_int_eq(p.eval_every, 0); /* no eval data */
    ck_assert_uint_eq(p.lora_target_mask, (1u << TUNE_Q_PROJ) | (1u << TUNE_V_PROJ));
    tune_plan_free(&p);
    tune_config_free(&cfg);

    ck_assert_int_eq(plan_from(BASE "lora_target_linear: true\nmax_steps: 20\nwarmup_ratio: 0.1\nsave_steps: 7\n"
                                    "val_set_size: 0.1\neval_steps: 5\npeft_use_rslora: true\nlora_r: 16\n",
                               &cfg, &p, &errs),
                     TUNE_OK);
    ck_assert_int_eq(p.total_steps, 20); /* known before the data */
    ck_assert_int_eq(p.warmup_steps, 2);
    ck_assert_int_eq(p.save_every, 7);
    ck_assert_int_eq(p.eval_every, 5);
    ck_assert_double_eq(p.lora_scaling, 4.0); /* 16 / sqrt(16) */
    tune_plan_set_examples(&p, 100000, 10);
    ck_assert_int_eq(p.total_steps, 20);
    tune_plan_free(&p);
    tune_config_free(&cfg);
}
END_TEST

START_TEST(lora_size_and_memory_from_model_dims)
{
    tune_config cfg;
    tune_plan p;
    tune_error_list errs = {0};
    ck_assert_int_eq(plan_from(BASE "lora_target_linear: true\nlora_r: 16\nmicro_batch_size: 2\nsequence_len: 256\n", &cfg,
                               &p, &errs),
                     TUNE_OK);
    /* SmolLM2-135M, as PyTorch and PEFT count it (model 134,515,008; LoRA r 16 on all seven 4,884,480). */
    ck_assert(p.have_model);
    ck_assert_int_eq(p.model.num_hidden_layers, 30);
    ck_assert_int_eq(p.n_model_params, 134515008LL);
    ck_assert_int_eq(p.n_lora_params, 4884480LL);
    ck_assert_int_eq(p.mem_weights, 4 * 134515008LL);
    ck_assert_int_eq(p.mem_lora, 16 * 4884480LL);
    /* the workspace of the run: 210 adapted modules of rank 16, batches of 2 x 256 */
    ck_assert_int_eq(p.mem_activations, (long long)tune_workspace_bytes(p.be, &p.model, 210, 16, 0, 2, 256, 0));
    /* per token it keeps, per layer, residuals, q, k, v, attention output, gate, up (about
     * 4C + 24·hd + 2I floats), and no whole-batch logits (2·V would add 393 KB a token) */
    const long long per_token = p.mem_activations / (2 * 256);
    ck_assert_int_gt(per_token, 4LL * 30 * (4 * 576 + 24 * 64 + 2 * 1536));
    ck_assert_int_lt(per_token, 4LL * 30 * (4 * 576 + 24 * 64 + 2 * 1536) + 4LL * 2 * 49152);
    ck_assert_int_eq(p.mem_total, p.mem_weights + p.mem_lora + p.mem_activations);
    /* An untied head adds V·C parameters. */
    tune_model_config m = p.model;
    m.tie_word_embeddings = 0;
    tune_plan_set_model(&p, &m);
    ck_assert_int_eq(p.n_model_params, 134515008LL + 49152LL * 576);
    tune_plan_free(&p);
    tune_config_free(&cfg);

    /* q and v at r 8: PEFT's 460,800. */
    ck_assert_int_eq(plan_from(BASE "lora_target_modules: [v_proj, q_proj]\n", &cfg, &p, &errs), TUNE_OK);
    ck_assert_int_eq(p.n_lora_params, 460800LL);
    ck_assert_int_eq(p.n_lora_targets, 2);
    tune_plan_free(&p);
    tune_config_free(&cfg);
}
END_TEST

START_TEST(unreadable_model_header_is_an_error)
{
    tune_config cfg;
    tune_plan p;
    tune_error_list errs = {0};
    /* model.gguf in the scratch folder is an empty file. */
    ck_assert_int_eq(plan_from("base_model: @/model.gguf\ndatasets:\n  - path: @/train.jsonl\nlearning_rate: 2e-4\n"
                               "lora_target_linear: true\n",
                               &cfg, &p, &errs),
                     TUNE_ERR_INPUT);
    ck_assert_int_eq(errs.count, 1);
    ck_assert_ptr_nonnull(strstr(errs.items[0].file, "model.gguf"));
    ck_assert(!p.have_model);
    ck_assert_int_eq(p.n_lora_params, -1);
    tune_error_list_free(&errs);
    tune_plan_free(&p);
    tune_config_free(&cfg);
}
END_TEST

START_TEST(paths_resolved_and_checked)
{
    tune_config cfg;
    tune_plan p;
    tune_error_list errs = {0};
    ck_assert_int_eq(plan_from("base_model: @/missing.gguf\ndatasets:\n  - path: @/train.jsonl\n  - path: nope.jsonl\n"
                               "learning_rate: 1e-4\nlora_target_linear: true\noutput_dir: rel/out\n",
                               &cfg, &p, &errs),
                     TUNE_ERR_INPUT);
    ck_assert_int_eq(errs.count, 2);
    ck_assert_int_eq(errs.items[0].line, 1);
    ck_assert_int_eq(errs.items[0].col, 1);
    ck_assert_ptr_nonnull(strstr(errs.items[0].message, "base_model: '"));
    ck_assert_ptr_nonnull(strstr(errs.items[0].message, "does not exist"));
    ck_assert_int_eq(errs.items[1].line, 4);
    ck_assert_int_eq(errs.items[1].col, 5);
    ck_assert_str_eq(errs.items[1].message, "datasets[1].path: 'nope.jsonl' does not exist");
    /* Relative paths are taken from the current directory. */
    char cwd[1024];
    ck_assert_ptr_nonnull(getcwd(cwd, sizeof cwd));
    char want[1200];
    snprintf(want, sizeof want, "%s/rel/out", cwd);
    ck_assert_str_eq(p.output_dir, want);
    snprintf(want, sizeof want, "%s/rel/out/prepared", cwd);
    ck_assert_str_eq(p.prepared_dir, want);
    tune_error_list_free(&errs);
    tune_plan_free(&p);
    tune_config_free(&cfg);
}
END_TEST

START_TEST(plan_json_and_text)
{
    tune_config cfg;
    tune_plan p;
    tune_error_list errs = {0};
    ck_assert_int_eq(plan_from(BASE "lora_target_linear: true\nlr_scheduler: linear\n", &cfg, &p, &errs), TUNE_OK);
    char *json;
    tune_error e;
    ck_assert_int_eq(tune_plan_to_json(&p, &json, &e), TUNE_OK);
    cJSON *root = cJSON_Parse(json);
    ck_assert_ptr_nonnull(root);
    const cJSON *steps = cJSON_GetObjectItem(root, "steps");
    ck_assert(cJSON_IsNull(cJSON_GetObjectItem(steps, "total_steps")));
    ck_assert(cJSON_IsNull(cJSON_GetObjectItem(steps, "train_tokens")));
    ck_assert_str_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(root, "schedule"), "kind")->valuestring, "linear");
    cJSON_Delete(root);
    free(json);
    tune_plan_set_examples(&p, 64, 0);
    ck_assert_int_eq(tune_plan_to_json(&p, &json, &e), TUNE_OK);
    root = cJSON_Parse(json);
    ck_assert_double_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(root, "steps"), "total_steps")->valuedouble, 64);
    cJSON_Delete(root);
    free(json);
    tune_strbuf sb = {0};
    ck_assert_int_eq(tune_plan_format(&p, &sb), TUNE_OK);
    ck_assert_ptr_nonnull(strstr(sb.data, "per epoch 64; total 64 (num_epochs 1)"));
    tune_strbuf_free(&sb);
    tune_plan_free(&p);
    tune_config_free(&cfg);
}
END_TEST

/* The tiny test model (context 64, a ChatML-style template tune does not
 * fingerprint) with the data stage's alpaca and ShareGPT fixtures. */
#define TINY                                                                                                     \
    "base_model: $/tiny/gqa\ndatasets:\n  - path: $/data/alpaca.jsonl\n  - path: $/data/sharegpt.json\n"        \
    "    type: sharegpt\nlearning_rate: 1e-4\nlora_target_linear: true\nchat_template: chatml\n"                 \
    "micro_batch_size: 2\noutput_dir: @/out\n"

/* The warning whose message contains text, or NULL. */
static const tune_error *warning_with(const tune_plan *p, const char *text)
{
    for (int i = 0; i < p->warnings.count; i++)
        if (strstr(p->warnings.items[i].message, text)) return &p->warnings.items[i];
    return NULL;
}

START_TEST(prepare_data_gives_the_plan_its_counts)
{
    for (int packing = 0; packing < 2; packing++) {
        char yaml[1024];
        snprintf(yaml, sizeof yaml, TINY "sequence_len: 256\nsample_packing: %s\n", packing ? "true" : "false");
        for (int run = 0; run < 2; run++) { /* the second run reads the cache */
            tune_config cfg;
            tune_plan p;
            tune_error_list errs = {0};
            ck_assert_int_eq(plan_from(yaml, &cfg, &p, &errs), TUNE_OK);
            ck_assert_int_eq(p.n_train_examples, TUNE_PLAN_UNKNOWN);
            tune_plan_data d;
            tune_error e;
            tune_status st = tune_plan_prepare_data(&p, &cfg, 0, &d, &e);
            if (st) tune_error_print(stderr, &e);
            ck_assert_int_eq(st, TUNE_OK);
            ck_assert_int_eq(p.data_prepared, 1);
            /* packing is not part of the cache key: the packed runs find the unpacked runs' cache */
            ck_assert_int_eq(d.prep.report.from_cache, run || packing);
            /* 3 alpaca records + 2 conversations, nothing dropped at 256 */
            ck_assert_uint_eq(d.prep.train.count, 5);
            ck_assert_int_eq(p.n_train_unpacked, 5);
            ck_assert_int_eq(p.n_train_tokens, (long long)d.prep.train.n_tokens);
            if (packing) {
                ck_assert_int_lt(p.n_train_examples, 5);
                ck_assert_int_ge(p.n_train_examples, 1);
                ck_assert_int_eq(d.batch.sample_packing, 1);
            } else {
                ck_assert_int_eq(p.n_train_examples, 5);
            }
            ck_assert_int_eq(p.steps_per_epoch, tune_plan_steps_per_epoch(p.n_train_examples, 2, 1));
            ck_assert_int_eq(p.total_steps, p.steps_per_epoch);
            ck_assert_int_eq(p.n_eval_examples, 0);
            ck_assert_int_eq(d.batch.micro_batch_size, 2);
            ck_assert_int_eq(d.batch.sequence_len, 256);
            ck_assert_int_eq(d.batch.pad_id, d.dtok.pad_id >= 0 ? d.dtok.pad_id : d.dtok.eos_id);
            /* sequence_len 256 is above the tiny model's 64 positions */
            ck_assert_ptr_nonnull(warning_with(&p, "above the model's context length 64"));
            ck_assert_ptr_null(warning_with(&p, "dropped"));
            /* the ShareGPT entry took its own field names */
            ck_assert_str_eq(d.setup.datasets[1].field_messages, "conversations");
            ck_assert_str_eq(d.setup.datasets[1].field_role, "from");
            ck_assert_int_eq(d.setup.opt.chat_template.id, TUNE_TEMPLATE_CHATML);
            tune_plan_data_free(&d);
            tune_plan_free(&p);
            tune_config_free(&cfg);
            tune_error_list_free(&errs);
        }
    }
}
END_TEST

START_TEST(plan_warnings_name_the_key)
{
    tune_config cfg;
    tune_plan p;
    tune_error_list errs = {0};
    /* line 11 is lora_r, line 12 sequence_len */
    ck_assert_int_eq(plan_from(TINY "lora_r: 12\nsequence_len: 48\n", &cfg, &p, &errs), TUNE_OK);
    const tune_error *w = warning_with(&p, "vLLM loads only r in");
    ck_assert_ptr_nonnull(w);
    ck_assert_str_eq(w->file, "p.yml");
    ck_assert_int_eq(w->line, 11);
    ck_assert_ptr_null(warning_with(&p, "context length"));
    tune_plan_data d;
    tune_error e;
    ck_assert_int_eq(tune_plan_prepare_data(&p, &cfg, 0, &d, &e), TUNE_OK);
    /* every alpaca record is longer than 48 tokens with this small vocabulary */
    w = warning_with(&p, "examples dropped as longer than sequence_len 48");
    ck_assert_ptr_nonnull(w);
    ck_assert_int_eq(w->line, 12);
    long longest = 0;
    for (int i = 0; i < d.prep.report.n_datasets; i++)
        if (d.prep.report.datasets[i].longest > longest) longest = d.prep.report.datasets[i].longest;
    ck_assert_int_gt(longest, 48);
    char expect[128];
    snprintf(expect, sizeof expect, "the longest has %ld tokens); sequence_len: %ld keeps them all", longest,
             (longest + 63) / 64 * 64);
    ck_assert_ptr_nonnull(strstr(w->message, expect));
    tune_strbuf sb = {0};
    ck_assert_int_eq(tune_plan_format(&p, &sb), TUNE_OK);
    ck_assert_ptr_nonnull(strstr(sb.data, "warnings     p.yml:11:1: lora_r 12"));
    tune_strbuf_free(&sb);
    tune_plan_data_free(&d);
    tune_plan_free(&p);
    tune_config_free(&cfg);
}
END_TEST

START_TEST(data_errors_are_explained_not_fatal)
{
    char path[300];
    snprintf(path, sizeof path, "%s/train.jsonl", tmpdir);
    tune_error e;
    const char bad[] = "{\"instruction\": \"a\", \"output\": \"b\"}\n{\"instruction\": 3}\n";
    ck_assert_int_eq(tune_write_file_atomic(path, bad, sizeof bad - 1, &e), TUNE_OK);
    tune_config cfg;
    tune_plan p;
    tune_error_list errs = {0};
    ck_assert_int_eq(plan_from("base_model: $/tiny/gqa\ndatasets:\n  - path: @/train.jsonl\nlearning_rate: 1e-4\n"
                               "lora_target_linear: true\nsequence_len: 64\noutput_dir: @/out\n",
                               &cfg, &p, &errs),
                     TUNE_OK);
    tune_plan_data d;
    ck_assert_int_eq(tune_plan_prepare_data(&p, &cfg, 0, &d, &e), TUNE_ERR_INPUT);
    ck_assert_int_eq(p.data_prepared, -1);
    ck_assert_ptr_nonnull(strstr(e.file, "train.jsonl"));
    ck_assert_int_eq(e.line, 2);
    ck_assert_int_eq(p.data_error.line, 2);
    ck_assert_int_eq(p.n_train_examples, TUNE_PLAN_UNKNOWN);
    ck_assert_int_eq(p.total_steps, TUNE_PLAN_UNKNOWN);
    tune_strbuf sb = {0};
    ck_assert_int_eq(tune_plan_format(&p, &sb), TUNE_OK);
    ck_assert_ptr_nonnull(strstr(sb.data, "data         not prepared"));
    ck_assert_ptr_nonnull(strstr(sb.data, "train.jsonl:2"));
    tune_strbuf_free(&sb);
    tune_plan_data_free(&d);
    tune_plan_free(&p);
    tune_config_free(&cfg);
    /* skip_bad_records: the good record is used and the skip is a warning */
    ck_assert_int_eq(plan_from("base_model: $/tiny/gqa\ndatasets:\n  - path: @/train.jsonl\nlearning_rate: 1e-4\n"
                               "lora_target_linear: true\nsequence_len: 256\noutput_dir: @/out\nskip_bad_records: true\n",
                               &cfg, &p, &errs),
                     TUNE_OK);
    ck_assert_int_eq(tune_plan_prepare_data(&p, &cfg, 0, &d, &e), TUNE_OK);
    ck_assert_int_eq(p.n_train_examples, 1);
    const tune_error *w = warning_with(&p, "1 bad record skipped");
    ck_assert_ptr_nonnull(w);
    ck_assert_int_eq(w->line, 8);
    tune_plan_data_free(&d);
    tune_plan_free(&p);
    tune_config_free(&cfg);
    /* special_tokens overrides: the pad id the batches use, the EOS the data stage appends */
    ck_assert_int_eq(plan_from(TINY "sequence_len: 256\nspecial_tokens:\n  pad_token: <|endoftext|>\n"
                                    "  eos_token: <|im_start|>\n",
                               &cfg, &p, &errs),
                     TUNE_OK);
    ck_assert_int_eq(tune_plan_prepare_data(&p, &cfg, 0, &d, &e), TUNE_OK);
    ck_assert_int_eq(d.dtok.pad_id, tune_tokenizer_token_to_id(d.tok, "<|endoftext|>"));
    ck_assert_int_eq(d.batch.pad_id, d.dtok.pad_id);
    ck_assert_int_eq(d.dtok.eos_id, tune_tokenizer_token_to_id(d.tok, "<|im_start|>"));
    ck_assert_str_eq(d.setup.opt.chat_template.opt.eos, "<|im_start|>");
    tune_plan_data_free(&d);
    tune_plan_free(&p);
    tune_config_free(&cfg);
    /* a special_tokens override that is not in the vocabulary is a new token, which needs trained
     * embeddings: error at the key without lora_modules_to_save */
    ck_assert_int_eq(plan_from(TINY "sequence_len: 64\nspecial_tokens:\n  eos_token: <nope>\n", &cfg, &p, &errs),
                     TUNE_OK);
    ck_assert_int_eq(tune_plan_prepare_data(&p, &cfg, 0, &d, &e), TUNE_ERR_INPUT);
    ck_assert_ptr_nonnull(strstr(e.message, "special_tokens: 1 new token needs trained embeddings"));
    ck_assert_int_eq(e.line, 12); /* special_tokens */
    tune_plan_data_free(&d);
    tune_plan_free(&p);
    tune_config_free(&cfg);
    /* with them, the token is added as a special token and becomes the EOS; tokens add more; the
     * trainable parameters count the grown embed_tokens and lm_head copies */
    ck_assert_int_eq(plan_from(TINY "sequence_len: 64\nspecial_tokens:\n  eos_token: <nope>\n"
                                    "tokens: [엑셀, 시트]\nlora_modules_to_save: [embed_tokens, lm_head]\n",
                               &cfg, &p, &errs),
                     TUNE_OK);
    const long long lora_only = p.n_lora_params - 2LL * p.model.vocab_size * p.model.hidden_size;
    ck_assert_int_eq(tune_plan_prepare_data(&p, &cfg, 0, &d, &e), TUNE_OK);
    ck_assert_uint_eq(d.n_new_tokens, 3);
    ck_assert_int_eq(p.vocab_size, p.model.vocab_size + 3);
    ck_assert_int_eq(d.dtok.eos_id, p.model.vocab_size);
    ck_assert(tune_tokenizer_is_special(d.tok, d.dtok.eos_id));
    ck_assert_int_eq(tune_tokenizer_token_to_id(d.tok, "시트"), p.model.vocab_size + 2);
    ck_assert_int_eq(p.n_lora_params, lora_only + 2LL * (p.model.vocab_size + 3) * p.model.hidden_size);
    tune_plan_data_free(&d);
    tune_plan_free(&p);
    tune_config_free(&cfg);
    tune_error_list_free(&errs);
}
END_TEST

/* A config with one override applied; 0 when it is accepted. */
static int config_accepts(const char *key, const char *value, tune_config *cfg)
{
    tune_error e;
    tune_error_list errs = {0};
    ck_assert_int_eq(tune_config_init(cfg, &e), TUNE_OK);
    tune_status st = tune_config_set(cfg, "datasets.0.path", "d.jsonl", "--set", &errs);
    if (!st) st = tune_config_set(cfg, key, value, "--set", &errs);
    tune_error_list_free(&errs);
    return st == TUNE_OK;
}

START_TEST(schema_and_data_stage_agree)
{
    /* Every dataset type the schema stores is one the data stage takes, and back. */
    int n_types = 0;
    for (int v = 0; v < 64; v++) {
        const char *name = tune_config_enum_name("type", v);
        if (!name) continue;
        n_types++;
        tune_dataset_options o;
        tune_error e;
        ck_assert_msg(tune_dataset_options_init(&o, name, &e) == TUNE_OK, "data stage rejects type %s", name);
    }
    static const char *const DATA_TYPES[] = {"alpaca", "sharegpt", "chat_template", "llama2", "completion"};
    ck_assert_int_eq(n_types, 5);
    for (size_t i = 0; i < sizeof DATA_TYPES / sizeof DATA_TYPES[0]; i++) {
        tune_config cfg;
        ck_assert_msg(config_accepts("datasets.0.type", DATA_TYPES[i], &cfg), "schema rejects type %s", DATA_TYPES[i]);
        ck_assert_str_eq(tune_config_enum_name("type", (int)cfg.datasets[0].type), DATA_TYPES[i]);
        tune_config_free(&cfg);
    }
    /* Every chat_template value the schema stores resolves, for a model whose
     * own template tune knows (ChatML's source, from the template goldens). */
    char path[512];
    snprintf(path, sizeof path, "%s/data/templates_golden.json", test_data_dir());
    char *text;
    size_t len;
    tune_error e;
    ck_assert_int_eq(tune_read_file(path, &text, &len, &e), TUNE_OK);
    cJSON *golden = cJSON_Parse(text);
    free(text);
    const cJSON *chatml = cJSON_GetObjectItem(cJSON_GetObjectItem(golden, "templates"), "chatml");
    const char *source = cJSON_GetStringValue(cJSON_GetObjectItem(chatml, "source"));
    ck_assert_ptr_nonnull(source);
    tune_template_id id;
    int n_values = 0;
    for (int v = 0; v < 64; v++) {
        const char *name = tune_config_enum_name("chat_template", v);
        if (!name) continue;
        n_values++;
        ck_assert_msg(tune_template_resolve(name, source, &id, &e) == TUNE_OK,
                      "data stage rejects chat_template %s", name);
    }
    ck_assert_int_ge(n_values, 2 * TUNE_N_TEMPLATES + 1);
    cJSON_Delete(golden);
    /* Every built-in template (and its fallback form) is a schema value meaning that template. */
    for (int t = 0; t < TUNE_N_TEMPLATES; t++) {
        char name[96];
        for (int fallback = 0; fallback < 2; fallback++) {
            snprintf(name, sizeof name, "%s%s", fallback ? "tokenizer_default_fallback_" : "",
                     tune_template_name((tune_template_id)t));
            tune_config cfg;
            ck_assert_msg(config_accepts("chat_template", name, &cfg), "schema rejects chat_template %s", name);
            ck_assert_int_eq(tune_template_resolve(tune_config_enum_name("chat_template", (int)cfg.chat_template), NULL,
                                                   &id, &e),
                             TUNE_OK);
            ck_assert_int_eq(id, t);
            tune_config_free(&cfg);
        }
    }
    /* The data stage's aliases too. */
    static const char *const ALIASES[] = {"llama3_2", "vicuna", "vicuna_v1_1"};
    for (size_t i = 0; i < sizeof ALIASES / sizeof ALIASES[0]; i++) {
        tune_config cfg;
        ck_assert_msg(config_accepts("chat_template", ALIASES[i], &cfg), "schema rejects chat_template %s", ALIASES[i]);
        tune_template_id want;
        ck_assert(tune_template_from_name(ALIASES[i], &want));
        ck_assert_int_eq(tune_template_resolve(tune_config_enum_name("chat_template", (int)cfg.chat_template), NULL,
                                               &id, &e),
                         TUNE_OK);
        ck_assert_int_eq(id, want);
        tune_config_free(&cfg);
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("plan");
    TCase *tc = tcase_create("core");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, schedules_match_transformers);
    tcase_add_test(tc, steps_per_epoch_rule);
    tcase_add_test(tc, plan_steps_from_examples);
    tcase_add_test(tc, lora_size_and_memory_from_model_dims);
    tcase_add_test(tc, unreadable_model_header_is_an_error);
    tcase_add_test(tc, paths_resolved_and_checked);
    tcase_add_test(tc, plan_json_and_text);
    tcase_add_test(tc, prepare_data_gives_the_plan_its_counts);
    tcase_add_test(tc, plan_warnings_name_the_key);
    tcase_add_test(tc, data_errors_are_explained_not_fatal);
    tcase_add_test(tc, schema_and_data_stage_agree);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
