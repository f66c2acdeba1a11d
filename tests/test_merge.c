#include <cJSON.h>
#include <math.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"
#include "tune/kernels.h"
#include "tune/llama.h"
#include "tune/merge.h"

static char tmpdir[256];

static const char *scratch(const char *name)
{
    if (!tmpdir[0]) {
        snprintf(tmpdir, sizeof tmpdir, "%s/tune-merge-XXXXXX", P_tmpdir);
        ck_assert_ptr_nonnull(mkdtemp(tmpdir));
    }
    static char path[4][600];
    static int next;
    char *p = path[next++ & 3];
    snprintf(p, 600, "%s/%s", tmpdir, name);
    return p;
}

static const char *data_path(const char *rel)
{
    static char path[4][600];
    static int next;
    char *p = path[next++ & 3];
    snprintf(p, 600, "%s/%s", test_data_dir(), rel);
    return p;
}

static void load(const char *path, tune_model *m)
{
    tune_error err;
    tune_status st = tune_model_load(path, m, &err);
    if (st) tune_error_print(stderr, &err);
    ck_assert_int_eq(st, TUNE_OK);
}

/* Writes an adapter folder: the LoRA tensors of a tiny model's golden.safetensors plus a config. */
static const char *make_adapter(const char *name, const char *model, const char *config_json, int drop_one)
{
    tune_error err;
    const char *dir = scratch(name);
    ck_assert_int_eq(tune_mkdir_p(dir, &err), TUNE_OK);
    char path[700], golden[600];
    snprintf(golden, sizeof golden, "%s/tiny/%s/golden.safetensors", test_data_dir(), model);
    tune_st_file *g;
    ck_assert_int_eq(tune_st_open(golden, &g, &err), TUNE_OK);
    tune_st_entry e[64];
    int n = 0;
    for (int i = 0; i < g->n_tensors; i++) {
        const tune_st_tensor *t = &g->tensors[i];
        if (strncmp(t->name, "base_model.model.", 17)) continue;
        if (drop_one && strstr(t->name, "layers.1.mlp.up_proj.lora_B")) continue;
        ck_assert_int_lt(n, 64);
        e[n] = (tune_st_entry){.name = t->name, .dtype = t->dtype, .ndim = t->ndim, .data = t->data};
        memcpy(e[n].shape, t->shape, sizeof t->shape);
        n++;
    }
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    ck_assert_int_eq(tune_st_write(path, e, n, &err), TUNE_OK);
    tune_st_close(g);
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    ck_assert_int_eq(tune_write_file_atomic(path, config_json, strlen(config_json), &err), TUNE_OK);
    return dir;
}

/* merged[l][k] == base + scaling · B·A, the product summed in double here. */
static void check_merged_weights(const tune_model *base, const tune_model *merged, const char *adapter_file,
                                 float scaling, double tol)
{
    tune_error err;
    tune_st_file *f;
    ck_assert_int_eq(tune_st_open(adapter_file, &f, &err), TUNE_OK);
    int checked = 0;
    for (int l = 0; l < base->cfg.num_hidden_layers; l++)
        for (int k = 0; k < TUNE_N_LINEAR; k++) {
            char module[96], name[160];
            int out, in;
            tune_linear_shape(&base->cfg, (tune_linear_kind)k, &out, &in);
            tune_linear_module_path(l, (tune_linear_kind)k, module, sizeof module);
            snprintf(name, sizeof name, "base_model.model.%s.lora_A.weight", module);
            const tune_st_tensor *a = tune_st_find(f, name);
            snprintf(name, sizeof name, "base_model.model.%s.lora_B.weight", module);
            const tune_st_tensor *b = tune_st_find(f, name);
            const float *w0 = base->layers[l].w[k].f32, *w1 = merged->layers[l].w[k].f32;
            if (!a) {
                ck_assert_mem_eq(w0, w1, (size_t)out * in * sizeof *w0);
                continue;
            }
            const int r = (int)a->shape[0];
            float *A = malloc(a->numel * sizeof *A), *B = malloc(b->numel * sizeof *B);
            ck_assert_int_eq(tune_st_read_f32(a, A, &err), TUNE_OK);
            ck_assert_int_eq(tune_st_read_f32(b, B, &err), TUNE_OK);
            for (int o = 0; o < out; o++)
                for (int i = 0; i < in; i++) {
                    double d = 0.0;
                    for (int j = 0; j < r; j++) d += (double)B[o * r + j] * A[j * in + i];
                    const double want = w0[(size_t)o * in + i] + scaling * d;
                    ck_assert_double_le(fabs(w1[(size_t)o * in + i] - want), tol + tol * fabs(want));
                }
            free(A);
            free(B);
            checked++;
        }
    ck_assert_int_gt(checked, 0);
    tune_st_close(f);
}

/* max |logits(m, golden input_ids) − golden `name`| over the gqa golden batch (2, 12). */
static float golden_logits_diff(const tune_model *m, const char *name)
{
    tune_error err;
    tune_st_file *g;
    ck_assert_int_eq(tune_st_open(data_path("tiny/gqa/golden.safetensors"), &g, &err), TUNE_OK);
    const tune_st_tensor *ids_t = tune_st_find(g, "input_ids"), *want_t = tune_st_find(g, name);
    ck_assert(ids_t && want_t);
    int32_t ids[24], labels[24];
    ck_assert_int_eq(tune_st_read_i32(ids_t, ids, &err), TUNE_OK);
    for (int i = 0; i < 24; i++) labels[i] = TUNE_IGNORE_INDEX;
    float *want = malloc(want_t->numel * sizeof *want);
    ck_assert_int_eq(tune_st_read_f32(want_t, want, &err), TUNE_OK);
    tune_workspace *ws;
    ck_assert_int_eq(tune_workspace_create(tune_backend_cpu(), &m->cfg, NULL, 2, 12, 0, &ws, &err), TUNE_OK);
    const tune_batch b = {2, 12, ids, labels, NULL, NULL};
    float *got = malloc(want_t->numel * sizeof *got);
    ck_assert_int_eq(tune_llama_logits(m, NULL, &b, ws, got, &err), TUNE_OK);
    float mx = 0.0f;
    for (size_t i = 0; i < want_t->numel; i++) mx = fmaxf(mx, fabsf(got[i] - want[i]));
    tune_workspace_free(ws);
    free(got);
    free(want);
    tune_st_close(g);
    return mx;
}

START_TEST(merged_model_gives_peft_logits)
{
    /* PEFT's logits of base + adapter (unmerged) on the golden batch, from the merged
     * weights in memory and from the merged folder written in f32 */
    tune_model merged, reread;
    tune_error err;
    load(data_path("tiny/gqa"), &merged);
    ck_assert_float_le(golden_logits_diff(&merged, "base_logits"), 1e-5f);
    ck_assert_float_gt(golden_logits_diff(&merged, "logits"), 1e-2f); /* the adapter matters */
    ck_assert_int_eq(tune_merge_peft_adapter(&merged, data_path("tiny/peft_adapter"), &err), TUNE_OK);
    ck_assert_float_le(golden_logits_diff(&merged, "logits"), 1e-5f);
    const char *out = scratch("gqa_logits");
    tune_strbuf notes = {0};
    ck_assert_int_eq(tune_merge_save_hf(&merged, data_path("tiny/gqa"), NULL, out, TUNE_DT_F32, &notes, &err), TUNE_OK);
    load(out, &reread);
    ck_assert_float_le(golden_logits_diff(&reread, "logits"), 1e-5f);
    tune_model_free(&merged);
    tune_model_free(&reread);
}
END_TEST

START_TEST(merge_adds_scaled_product_and_round_trips_f32)
{
    tune_model base, merged, reread;
    tune_error err;
    load(data_path("tiny/gqa"), &base);
    load(data_path("tiny/gqa"), &merged);
    ck_assert_int_eq(tune_merge_peft_adapter(&merged, data_path("tiny/peft_adapter"), &err), TUNE_OK);
    check_merged_weights(&base, &merged, data_path("tiny/peft_adapter/adapter_model.safetensors"), 2.0f, 1e-6);
    const char *out = scratch("gqa_f32");
    tune_strbuf notes = {0};
    ck_assert_int_eq(tune_merge_save_hf(&merged, data_path("tiny/gqa"), NULL, out, TUNE_DT_F32, &notes, &err), TUNE_OK);
    ck_assert_uint_eq(notes.len, 0);
    load(out, &reread);
    ck_assert_uint_eq(reread.n_floats, merged.n_floats);
    ck_assert_mem_eq(reread.storage, merged.storage, merged.n_floats * sizeof(float));
    ck_assert_int_eq(reread.cfg.tie_word_embeddings, 0);
    char path[700];
    snprintf(path, sizeof path, "%s/tokenizer.json", out);
    ck_assert(tune_path_exists(path));
    snprintf(path, sizeof path, "%s/generation_config.json", out);
    ck_assert(tune_path_exists(path));
    snprintf(path, sizeof path, "%s.tmp", out);
    ck_assert(!tune_path_exists(path));
    /* the folder exists now: a second merge into it is refused and leaves it alone */
    ck_assert_int_eq(tune_merge_save_hf(&merged, data_path("tiny/gqa"), NULL, out, TUNE_DT_F32, &notes, &err),
                     TUNE_ERR_INPUT);
    ck_assert_ptr_nonnull(strstr(err.message, "already exists"));
    tune_model_free(&base);
    tune_model_free(&merged);
    tune_model_free(&reread);
}
END_TEST

START_TEST(merge_bf16_keeps_ties_and_rslora_scaling)
{
    /* llama3rope: tied embeddings, rslora (alpha 8 / sqrt(4) = 4), q/v/down only */
    const char *cfg = "{\"peft_type\": \"LORA\", \"r\": 4, \"lora_alpha\": 8, \"use_rslora\": true, "
                      "\"bias\": \"none\", \"use_dora\": false, \"fan_in_fan_out\": false, "
                      "\"rank_pattern\": {}, \"alpha_pattern\": {}, \"modules_to_save\": null, "
                      "\"target_modules\": [\"q_proj\", \"v_proj\", \"down_proj\"]}";
    const char *adapter = make_adapter("rope_adapter", "llama3rope", cfg, 0);
    tune_model base, merged, reread;
    tune_error err;
    load(data_path("tiny/llama3rope"), &base);
    load(data_path("tiny/llama3rope"), &merged);
    ck_assert_int_eq(tune_merge_peft_adapter(&merged, adapter, &err), TUNE_OK);
    char file[700];
    snprintf(file, sizeof file, "%s/adapter_model.safetensors", adapter);
    check_merged_weights(&base, &merged, file, 4.0f, 1e-6);
    const char *out = scratch("rope_bf16");
    tune_strbuf notes = {0};
    ck_assert_int_eq(tune_merge_save_hf(&merged, data_path("tiny/llama3rope"), NULL, out, TUNE_DT_BF16, &notes, &err),
                     TUNE_OK);
    load(out, &reread);
    ck_assert_int_eq(reread.cfg.tie_word_embeddings, 1);
    ck_assert_ptr_eq(reread.lm_head.f32, reread.embed.f32);
    ck_assert_int_eq(reread.cfg.rope_type, TUNE_ROPE_LLAMA3);
    ck_assert_int_eq(reread.cfg.n_eos_token_ids, 2);
    ck_assert_uint_eq(reread.n_floats, merged.n_floats);
    for (size_t i = 0; i < merged.n_floats; i++)
        ck_assert_float_eq(reread.storage[i], tune_bf16_to_f32(tune_f32_to_bf16(merged.storage[i])));
    /* the file holds no lm_head and records bfloat16 */
    tune_st_file *f;
    snprintf(file, sizeof file, "%s/model.safetensors", out);
    ck_assert_int_eq(tune_st_open(file, &f, &err), TUNE_OK);
    ck_assert_ptr_null(tune_st_find(f, "lm_head.weight"));
    ck_assert_int_eq(tune_st_find(f, "model.embed_tokens.weight")->dtype, TUNE_DT_BF16);
    tune_st_close(f);
    snprintf(file, sizeof file, "%s/config.json", out);
    char *text;
    size_t len;
    ck_assert_int_eq(tune_read_file(file, &text, &len, &err), TUNE_OK);
    ck_assert_ptr_nonnull(strstr(text, "\"bfloat16\""));
    free(text);
    tune_model_free(&base);
    tune_model_free(&merged);
    tune_model_free(&reread);
}
END_TEST

START_TEST(merge_refuses_what_it_cannot_represent)
{
    tune_model m;
    tune_error err;
    load(data_path("tiny/gqa"), &m);
#define TARGETS "\"target_modules\": [\"q_proj\", \"k_proj\", \"v_proj\", \"o_proj\", \"gate_proj\", \"up_proj\", \"down_proj\"]"
    const char *plain = "{\"peft_type\": \"LORA\", \"r\": 4, \"lora_alpha\": 8, " TARGETS "}";
    const char *dora = "{\"peft_type\": \"LORA\", \"r\": 4, \"lora_alpha\": 8, \"use_dora\": true, " TARGETS "}";
    const char *pattern = "{\"peft_type\": \"LORA\", \"r\": 4, \"lora_alpha\": 8, \"rank_pattern\": {\"q_proj\": 8}, "
                          TARGETS "}";
    const char *prefix = "{\"peft_type\": \"PREFIX_TUNING\", \"r\": 4, \"lora_alpha\": 8, " TARGETS "}";
#undef TARGETS
    struct { const char *name, *cfg; int drop; const char *want; } cases[] = {
        {"dora", dora, 0, "use_dora"},
        {"pattern", pattern, 0, "rank_pattern"},
        {"prefix", prefix, 0, "peft_type"},
        {"half", plain, 1, "layers.1.mlp.up_proj.lora_B"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *dir = make_adapter(cases[i].name, "gqa", cases[i].cfg, cases[i].drop);
        ck_assert_int_eq(tune_merge_peft_adapter(&m, dir, &err), TUNE_ERR_INPUT);
        ck_assert_msg(strstr(err.message, cases[i].want), "%s: %s", cases[i].name, err.message);
    }
    /* the tied model has 4 kv heads: the gqa adapter's k/v shapes do not fit */
    tune_model tied;
    load(data_path("tiny/tied"), &tied);
    ck_assert_int_eq(tune_merge_peft_adapter(&tied, data_path("tiny/peft_adapter"), &err), TUNE_ERR_INPUT);
    ck_assert_ptr_nonnull(strstr(err.message, "expected shape"));
    /* a model with fewer layers than the adapter names */
    tune_model one = m;
    one.cfg.num_hidden_layers = 1;
    ck_assert_int_eq(tune_merge_peft_adapter(&one, data_path("tiny/peft_adapter"), &err), TUNE_ERR_INPUT);
    ck_assert_ptr_nonnull(strstr(err.message, "layers.1."));
    tune_model_free(&tied);
    tune_model_free(&m);
}
END_TEST

START_TEST(merge_cleans_a_stale_tmp_folder)
{
    tune_model m;
    tune_error err;
    load(data_path("tiny/gqa"), &m);
    const char *out = scratch("stale");
    char tmp[700], junk[800];
    snprintf(tmp, sizeof tmp, "%s.tmp", out);
    ck_assert_int_eq(tune_mkdir_p(tmp, &err), TUNE_OK);
    snprintf(junk, sizeof junk, "%s/model.safetensors.tmp", tmp);
    ck_assert_int_eq(tune_write_file_atomic(junk, "half", 4, &err), TUNE_OK);
    tune_strbuf notes = {0};
    ck_assert_int_eq(tune_merge_save_hf(&m, data_path("tiny/gqa"), NULL, out, TUNE_DT_F32, &notes, &err), TUNE_OK);
    ck_assert(tune_is_dir(out) && !tune_path_exists(tmp));
    /* a tmp folder with files of someone else's is not deleted */
    const char *out2 = scratch("foreign");
    snprintf(tmp, sizeof tmp, "%s.tmp", out2);
    ck_assert_int_eq(tune_mkdir_p(tmp, &err), TUNE_OK);
    snprintf(junk, sizeof junk, "%s/notes.txt", tmp);
    ck_assert_int_eq(tune_write_file_atomic(junk, "mine", 4, &err), TUNE_OK);
    ck_assert_int_eq(tune_merge_save_hf(&m, data_path("tiny/gqa"), NULL, out2, TUNE_DT_F32, &notes, &err), TUNE_ERR_INPUT);
    ck_assert(tune_path_exists(junk) && !tune_path_exists(out2));
    tune_model_free(&m);
}
END_TEST

static Suite *merge_suite(void)
{
    Suite *s = suite_create("merge");
    TCase *tc = tcase_create("merge");
    tcase_add_test(tc, merge_adds_scaled_product_and_round_trips_f32);
    tcase_add_test(tc, merged_model_gives_peft_logits);
    tcase_add_test(tc, merge_bf16_keeps_ties_and_rslora_scaling);
    tcase_add_test(tc, merge_refuses_what_it_cannot_represent);
    tcase_add_test(tc, merge_cleans_a_stale_tmp_folder);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return run_suite(merge_suite()); }
