#include <cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"
#include "tune/plan.h"

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

static void teardown(void)
{
    const char *files[] = {"model.gguf", "train.jsonl", "eval.jsonl"};
    for (int i = 0; i < 3; i++) {
        char p[300];
        snprintf(p, sizeof p, "%s/%s", tmpdir, files[i]);
        unlink(p);
    }
    rmdir(tmpdir);
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
    long long per_layer = 4 * 576 + (2 * 9 + 2 * 3) * 64 + 3 * 1536 + 7 * 16 + 9 * 256;
    ck_assert_int_eq(p.mem_activations, 4LL * 2 * 256 * (30 * per_layer + 576 + 2 * 49152));
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
    suite_add_tcase(s, tc);
    return run_suite(s);
}
