/* A grown vocabulary: new rows at the mean of the old ones, and training the
 * embedding and lm_head as PEFT modules_to_save, against PyTorch + PEFT
 * goldens (tests/data/tiny/vocab, tools/reference/make_vocab_golden.py). */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"
#include "tune/llama.h"
#include "tune/merge.h"
#include "tune/rng.h"
#include "tune/safetensors.h"
#include "tune/util.h"

#define ADDED 3 /* tokens the golden script adds */

static void load_tiny(const char *name, tune_model *m)
{
    char dir[512];
    snprintf(dir, sizeof dir, "%s/tiny/%s", test_data_dir(), name);
    tune_error err;
    ck_assert_msg(tune_model_load(dir, m, &err) == TUNE_OK, "%s", err.message);
}

/* Row v of every grown matrix equals the fp64 column mean of the old rows. */
static void check_growth(const char *name)
{
    tune_model m;
    load_tiny(name, &m);
    const int V = m.cfg.vocab_size, C = m.cfg.hidden_size, tied = m.cfg.tie_word_embeddings;
    float *old_e = malloc((size_t)V * C * sizeof *old_e), *old_h = malloc((size_t)V * C * sizeof *old_h);
    ck_assert(old_e && old_h);
    memcpy(old_e, m.embed.f32, (size_t)V * C * sizeof *old_e);
    memcpy(old_h, m.lm_head.f32, (size_t)V * C * sizeof *old_h);
    const float norm0 = m.final_norm[0], w0 = m.layers[1].w[TUNE_DOWN_PROJ].f32[7];
    tune_error err;
    ck_assert_int_eq(tune_model_resize_vocab(&m, V, &err), TUNE_OK); /* same size: nothing changes */
    ck_assert_int_eq(tune_model_resize_vocab(&m, V + ADDED, &err), TUNE_OK);
    ck_assert_int_eq(m.cfg.vocab_size, V + ADDED);
    ck_assert_int_eq(tune_model_resize_vocab(&m, V, &err), TUNE_ERR_INPUT);
    ck_assert(tied ? m.lm_head.f32 == m.embed.f32 : m.lm_head.f32 != m.embed.f32);
    ck_assert(m.final_norm[0] == norm0 && m.layers[1].w[TUNE_DOWN_PROJ].f32[7] == w0);
    ck_assert(memcmp(m.embed.f32, old_e, (size_t)V * C * sizeof *old_e) == 0);
    ck_assert(memcmp(m.lm_head.f32, old_h, (size_t)V * C * sizeof *old_h) == 0);
    for (int c = 0; c < C; c++) {
        double se = 0.0, sh = 0.0;
        for (int v = 0; v < V; v++) {
            se += old_e[(size_t)v * C + c];
            sh += old_h[(size_t)v * C + c];
        }
        for (int v = V; v < V + ADDED; v++) {
            ck_assert_float_eq(m.embed.f32[(size_t)v * C + c], (float)(se / V));
            ck_assert_float_eq(m.lm_head.f32[(size_t)v * C + c], (float)(sh / V));
        }
    }
    free(old_e);
    free(old_h);
    tune_model_free(&m);
}

START_TEST(growth_untied) { check_growth("gqa"); }
END_TEST

START_TEST(growth_tied) { check_growth("tied"); }
END_TEST

static float *golden_f32(const tune_st_file *st, const char *name, size_t n)
{
    const tune_st_tensor *t = tune_st_find(st, name);
    ck_assert_msg(t != NULL, "golden tensor %s missing", name);
    ck_assert_uint_eq(t->numel, n);
    float *x = malloc(n * sizeof *x);
    tune_error err;
    ck_assert(x);
    ck_assert_int_eq(tune_st_read_f32(t, x, &err), TUNE_OK);
    return x;
}

static void assert_close(const float *got, const float *want, size_t n, float atol, float rtol, const char *what)
{
    for (size_t i = 0; i < n; i++)
        ck_assert_msg(fabsf(got[i] - want[i]) <= atol + rtol * fabsf(want[i]), "%s[%zu]: %.9g, want %.9g", what, i,
                      (double)got[i], (double)want[i]);
}

/* LoRA on q/v plus trained embed_tokens and lm_head copies: the loss and
 * every gradient (LoRA, embedding rows, lm_head) as PEFT computes them. */
static void check_saved_gradients(const char *name)
{
    tune_model m;
    load_tiny(name, &m);
    tune_error err;
    ck_assert_int_eq(tune_model_resize_vocab(&m, m.cfg.vocab_size + ADDED, &err), TUNE_OK);
    const int V = m.cfg.vocab_size, C = m.cfg.hidden_size, B = 2, T = 10;
    char path[600];
    snprintf(path, sizeof path, "%s/tiny/vocab/%s.safetensors", test_data_dir(), name);
    tune_st_file *st;
    ck_assert_msg(tune_st_open(path, &st, &err) == TUNE_OK, "%s", err.message);
    const char *targets[] = {"q_proj", "v_proj"};
    unsigned char sel[2 * TUNE_N_LINEAR];
    ck_assert_int_eq(m.cfg.num_hidden_layers, 2);
    ck_assert_int_eq(tune_lora_select_names(&m.cfg, targets, 2, sel, &err), TUNE_OK);
    const tune_lora_config lc = {.r = 4, .alpha = 8.0f};
    tune_lora *lora;
    ck_assert_int_eq(tune_lora_create(&m.cfg, &lc, sel, 1, &lora, &err), TUNE_OK);
    const size_t n_lora = lora->n_params;
    ck_assert_int_eq(tune_lora_add_saved(lora, &m, TUNE_SAVE_EMBED | TUNE_SAVE_LM_HEAD, &err), TUNE_OK);
    ck_assert_uint_eq(lora->n_params, n_lora + 2 * (size_t)V * C);
    ck_assert_int_eq(tune_lora_add_saved(lora, &m, TUNE_SAVE_EMBED, &err), TUNE_ERR_INPUT);
    for (int mi = 0; mi < lora->n_modules; mi++) { /* PEFT's A and B values */
        const tune_lora_module *mod = &lora->modules[mi];
        char mp[96], tn[200];
        tune_linear_module_path(mod->layer, mod->kind, mp, sizeof mp);
        for (int b = 0; b < 2; b++) {
            snprintf(tn, sizeof tn, "init.base_model.model.%s.lora_%c.weight", mp, b ? 'B' : 'A');
            const size_t n = (size_t)lc.r * (b ? mod->out : mod->in);
            float *x = golden_f32(st, tn, n);
            memcpy(lora->params + (b ? mod->b_offset : mod->a_offset), x, n * sizeof *x);
            free(x);
        }
    }
    int32_t ids[2 * 10], labels[2 * 10];
    const tune_st_tensor *t = tune_st_find(st, "input_ids");
    ck_assert(t && t->numel == (size_t)B * T);
    ck_assert_int_eq(tune_st_read_i32(t, ids, &err), TUNE_OK);
    t = tune_st_find(st, "labels");
    ck_assert(t && t->numel == (size_t)B * T);
    ck_assert_int_eq(tune_st_read_i32(t, labels, &err), TUNE_OK);
    const tune_batch batch = {.B = B, .T = T, .input_ids = ids, .labels = labels};
    tune_workspace *ws;
    ck_assert_int_eq(tune_workspace_create(tune_backend_cpu(), &m.cfg, lora, B, T, 0, &ws, &err), TUNE_OK);
    double loss_sum;
    long n_targets;
    ck_assert_msg(tune_llama_forward(&m, lora, &batch, NULL, 0.0f, ws, &loss_sum, &n_targets, &err) == TUNE_OK, "%s",
                  err.message);
    /* the training forward, with the scale of the mean loss */
    ck_assert_int_eq(tune_llama_forward(&m, lora, &batch, NULL, 1.0f / (float)n_targets, ws, &loss_sum, &n_targets,
                                        &err), TUNE_OK);
    float *want_loss = golden_f32(st, "loss", 1);
    ck_assert_msg(fabs(loss_sum / n_targets - want_loss[0]) < 1e-5, "loss %.7f, want %.7f", loss_sum / n_targets,
                  (double)want_loss[0]);
    ck_assert_int_eq(tune_llama_backward(&m, lora, &batch, NULL, ws, &err), TUNE_OK);
    float *ge = golden_f32(st, "grad.embed_tokens", (size_t)V * C), *gh = golden_f32(st, "grad.lm_head", (size_t)V * C);
    assert_close(lora->grads + lora->embed_offset, ge, (size_t)V * C, 1e-5f, 1e-4f, "grad.embed_tokens");
    assert_close(lora->grads + lora->head_offset, gh, (size_t)V * C, 1e-5f, 1e-4f, "grad.lm_head");
    for (int mi = 0; mi < lora->n_modules; mi++) {
        const tune_lora_module *mod = &lora->modules[mi];
        char mp[96], tn[200];
        tune_linear_module_path(mod->layer, mod->kind, mp, sizeof mp);
        for (int b = 0; b < 2; b++) {
            snprintf(tn, sizeof tn, "grad.base_model.model.%s.lora_%c.weight", mp, b ? 'B' : 'A');
            const size_t n = (size_t)lc.r * (b ? mod->out : mod->in);
            float *want = golden_f32(st, tn, n);
            assert_close(lora->grads + (b ? mod->b_offset : mod->a_offset), want, n, 1e-6f, 1e-4f, tn);
            free(want);
        }
    }
    /* the new tokens' rows got gradients: they are inputs and targets */
    ck_assert(lora->grads[lora->embed_offset + (size_t)(V - 1) * C] != 0.0f);
    ck_assert(lora->grads[lora->head_offset + (size_t)(V - 1) * C] != 0.0f);
    /* a model of another vocabulary is refused */
    tune_model other;
    load_tiny(name, &other);
    ck_assert_int_eq(tune_llama_forward(&other, lora, &batch, NULL, 0.0f, ws, &loss_sum, &n_targets, &err),
                     TUNE_ERR_INPUT);
    tune_model_free(&other);
    free(want_loss);
    free(ge);
    free(gh);
    tune_workspace_free(ws);
    tune_lora_free(lora);
    tune_st_close(st);
    tune_model_free(&m);
}

START_TEST(saved_gradients_untied) { check_saved_gradients("gqa"); }
END_TEST

START_TEST(saved_gradients_tied) { check_saved_gradients("tied"); }
END_TEST

/* A grown model with LoRA on q/v and the saved modules of `saved`. */
static tune_lora *grown_lora(tune_model *m, unsigned saved)
{
    const char *targets[] = {"q_proj", "v_proj"};
    unsigned char sel[2 * TUNE_N_LINEAR];
    tune_error err;
    ck_assert_int_eq(tune_lora_select_names(&m->cfg, targets, 2, sel, &err), TUNE_OK);
    const tune_lora_config lc = {.r = 4, .alpha = 8.0f};
    tune_lora *lora;
    ck_assert_int_eq(tune_lora_create(&m->cfg, &lc, sel, 7, &lora, &err), TUNE_OK);
    if (saved) ck_assert_int_eq(tune_lora_add_saved(lora, m, saved, &err), TUNE_OK);
    return lora;
}

/* Saved as PEFT saves modules_to_save, read back bit for bit; an adapter
 * whose saved modules differ from the configuration's is refused. */
START_TEST(saved_modules_round_trip)
{
    tune_model m;
    load_tiny("gqa", &m);
    tune_error err;
    ck_assert_int_eq(tune_model_resize_vocab(&m, m.cfg.vocab_size + ADDED, &err), TUNE_OK);
    tune_lora *lora = grown_lora(&m, TUNE_SAVE_EMBED | TUNE_SAVE_LM_HEAD);
    for (size_t i = 0; i < lora->n_params; i++) lora->params[i] = tune_rng_uniform(5, 0, i) - 0.5f;
    char dir[256];
    snprintf(dir, sizeof dir, "%s/tune-vocab-XXXXXX", P_tmpdir); /* removed below */
    ck_assert_ptr_nonnull(mkdtemp(dir));
    ck_assert_msg(tune_lora_save_peft(lora, dir, NULL, &err) == TUNE_OK, "%s", err.message);
    char path[600], *text;
    size_t len;
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    ck_assert_int_eq(tune_read_file(path, &text, &len, &err), TUNE_OK);
    ck_assert_ptr_nonnull(strstr(text, "\"modules_to_save\": [\n    \"embed_tokens\",\n    \"lm_head\"\n  ],"));
    free(text);
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    tune_st_file *st;
    ck_assert_int_eq(tune_st_open(path, &st, &err), TUNE_OK);
    const tune_st_tensor *e = tune_st_find(st, "base_model.model.model.embed_tokens.weight");
    const tune_st_tensor *h = tune_st_find(st, "base_model.model.lm_head.weight");
    ck_assert(e && h && e->shape[0] == m.cfg.vocab_size && e->shape[1] == m.cfg.hidden_size);
    ck_assert_int_eq(st->n_tensors, 2 * lora->n_modules + 2);
    tune_st_close(st);

    tune_lora *back = grown_lora(&m, TUNE_SAVE_EMBED | TUNE_SAVE_LM_HEAD);
    ck_assert_msg(tune_lora_load_peft(back, &m.cfg, dir, &err) == TUNE_OK, "%s", err.message);
    ck_assert_uint_eq(back->n_params, lora->n_params);
    ck_assert(memcmp(back->params, lora->params, lora->n_params * sizeof *lora->params) == 0);
    tune_lora *plain = grown_lora(&m, 0), *embed_only = grown_lora(&m, TUNE_SAVE_EMBED);
    ck_assert_int_eq(tune_lora_load_peft(plain, &m.cfg, dir, &err), TUNE_ERR_INPUT);
    ck_assert_ptr_nonnull(strstr(err.message, "modules_to_save"));
    ck_assert_int_eq(tune_lora_load_peft(embed_only, &m.cfg, dir, &err), TUNE_ERR_INPUT);
    ck_assert_ptr_nonnull(strstr(err.message, "modules_to_save"));
    tune_lora_config cfg;
    unsigned char sel[2 * TUNE_N_LINEAR];
    ck_assert_int_eq(tune_lora_read_peft_config(dir, &m.cfg, &cfg, sel, &err), TUNE_OK);
    ck_assert_uint_eq(cfg.modules_to_save, TUNE_SAVE_EMBED | TUNE_SAVE_LM_HEAD);
    /* the adapter of the model before growth does not fit the grown one */
    tune_model small;
    load_tiny("gqa", &small);
    tune_lora *other = grown_lora(&small, TUNE_SAVE_EMBED | TUNE_SAVE_LM_HEAD);
    ck_assert_int_eq(tune_lora_load_peft(other, &small.cfg, dir, &err), TUNE_ERR_INPUT);
    tune_lora_free(other);
    tune_model_free(&small);
    remove(path);
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    remove(path);
    ck_assert_int_eq(rmdir(dir), 0);
    tune_lora_free(embed_only);
    tune_lora_free(plain);
    tune_lora_free(back);
    tune_lora_free(lora);
    tune_model_free(&m);
}
END_TEST

/* Logits of ids (2, 10) under model (+ lora). out: (2 * 10, vocab) */
static void forward_logits(const tune_model *m, const tune_lora *lora, const int32_t *ids, float *out)
{
    const int B = 2, T = 10;
    int32_t labels[2 * 10];
    for (int i = 0; i < B * T; i++) labels[i] = ids[i];
    const tune_batch batch = {.B = B, .T = T, .input_ids = ids, .labels = labels};
    tune_workspace *ws;
    tune_error err;
    ck_assert_int_eq(tune_workspace_create(tune_backend_cpu(), &m->cfg, lora, B, T, 0, &ws, &err), TUNE_OK);
    ck_assert_msg(tune_llama_logits(m, lora, &batch, ws, out, &err) == TUNE_OK, "%s", err.message);
    tune_workspace_free(ws);
}

/* An adapter with modules_to_save merged into the plain base (which grows
 * and, when tied, unties) gives the logits of the grown model with the
 * adapter unmerged, for every set of saved modules, and so does the
 * Hugging Face folder tune merge writes from it. */
static void check_merged_saved(const char *name, unsigned saved)
{
    tune_model m;
    load_tiny(name, &m);
    tune_error err;
    const int V0 = m.cfg.vocab_size;
    ck_assert_int_eq(tune_model_resize_vocab(&m, V0 + ADDED, &err), TUNE_OK);
    tune_lora *lora = grown_lora(&m, saved);
    for (size_t i = 0; i < lora->n_params; i++) lora->params[i] += 0.2f * (tune_rng_uniform(9, 0, i) - 0.5f);
    char dir[256], out[300], path[400];
    snprintf(dir, sizeof dir, "%s/tune-vocab-XXXXXX", P_tmpdir); /* removed below */
    ck_assert_ptr_nonnull(mkdtemp(dir));
    ck_assert_int_eq(tune_lora_save_peft(lora, dir, NULL, &err), TUNE_OK);
    const int V = V0 + ADDED;
    int32_t ids[20];
    for (int i = 0; i < 20; i++) ids[i] = (i % 4 == 0) ? V0 + i % ADDED : (int32_t)((i * 37) % V0);
    float *want = malloc((size_t)20 * V * sizeof *want), *got = malloc((size_t)20 * V * sizeof *got);
    ck_assert(want && got);
    forward_logits(&m, lora, ids, want);

    tune_model merged;
    load_tiny(name, &merged);
    ck_assert_msg(tune_merge_peft_adapter(&merged, dir, &err) == TUNE_OK, "%s", err.message);
    ck_assert_int_eq(merged.cfg.vocab_size, V);
    ck_assert_int_eq(merged.cfg.tie_word_embeddings, 0); /* PEFT's copies are separate */
    forward_logits(&merged, NULL, ids, got);
    assert_close(got, want, (size_t)20 * V, 1e-5f, 1e-4f, "merged logits");

    snprintf(out, sizeof out, "%s/merged", dir);
    snprintf(path, sizeof path, "%s/tiny/%s", test_data_dir(), name);
    tune_strbuf notes = {0};
    ck_assert_msg(tune_merge_save_hf(&merged, path, dir, out, TUNE_DT_F32, &notes, &err) == TUNE_OK, "%s",
                  err.message);
    tune_model reloaded;
    ck_assert_msg(tune_model_load(out, &reloaded, &err) == TUNE_OK, "%s", err.message);
    ck_assert_int_eq(reloaded.cfg.vocab_size, V);
    ck_assert_int_eq(reloaded.cfg.tie_word_embeddings, 0);
    forward_logits(&reloaded, NULL, ids, got);
    assert_close(got, want, (size_t)20 * V, 1e-5f, 1e-4f, "reloaded merged logits");
    tune_model_free(&reloaded);
    tune_strbuf_free(&notes);
    const char *files[] = {"merged/model.safetensors", "merged/config.json", "merged/generation_config.json",
                           "merged/tokenizer.json", "merged/tokenizer_config.json", "merged/special_tokens_map.json",
                           "merged", "adapter_model.safetensors", "adapter_config.json"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        remove(path);
    }
    ck_assert_int_eq(rmdir(dir), 0);
    free(want);
    free(got);
    tune_model_free(&merged);
    tune_lora_free(lora);
    tune_model_free(&m);
}

START_TEST(merged_saved_modules_untied)
{
    const unsigned sets[] = {TUNE_SAVE_EMBED | TUNE_SAVE_LM_HEAD, TUNE_SAVE_EMBED, TUNE_SAVE_LM_HEAD};
    check_merged_saved("gqa", sets[_i]);
}
END_TEST

START_TEST(merged_saved_modules_tied)
{
    const unsigned sets[] = {TUNE_SAVE_EMBED | TUNE_SAVE_LM_HEAD, TUNE_SAVE_EMBED, TUNE_SAVE_LM_HEAD};
    check_merged_saved("tied", sets[_i]);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("vocab");
    TCase *tc = tcase_create("vocab");
    tcase_add_test(tc, growth_untied);
    tcase_add_test(tc, growth_tied);
    tcase_add_test(tc, saved_gradients_untied);
    tcase_add_test(tc, saved_gradients_tied);
    tcase_add_test(tc, saved_modules_round_trip);
    tcase_add_loop_test(tc, merged_saved_modules_untied, 0, 3);
    tcase_add_loop_test(tc, merged_saved_modules_tied, 0, 3);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
