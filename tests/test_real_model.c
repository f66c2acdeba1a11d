/* The real default model, SmolLM2-135M-Instruct (Q4_1 GGUF), through tune
 * against Transformers on the same file (tests/data/smollm2, made by
 * tools/reference/make_smollm2_golden.py), for four prompts: the chat
 * template and tokenizer read from the GGUF (rendered text, ids, decoded
 * text), the loader and forward pass (logits, top-1 ids, loss, the 32-token
 * greedy continuation), and an adapter tune trained on the model, loaded back
 * by tune, against PEFT with the same adapter. Without the model file (`make
 * model` fetches it) each test says that it was skipped and passes: the tiny
 * models cover every code path. */
#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"
#include "tune/llama.h"
#include "tune/lora.h"
#include "tune/model.h"
#include "tune/safetensors.h"
#include "tune/template.h"
#include "tune/tokenizer.h"
#include "tune/util.h"

#define MODEL_PATH "models/SmolLM2-135M-Instruct.Q4_1.gguf"
#define TOL 1e-4 /* |tune − reference| ≤ TOL · max(1, |reference|) */

static const char *const PROMPTS[] = {"excel_ko", "excel_en", "english", "code"};
enum { N_PROMPTS = sizeof PROMPTS / sizeof PROMPTS[0] };

/* 1 when the model file is there; otherwise says so plainly. */
static int have_model(void)
{
    if (access(MODEL_PATH, R_OK) == 0) return 1;
    printf("SKIPPED: " MODEL_PATH " absent (run make model)\n");
    fflush(stdout);
    return 0;
}

/* The JSON string member key of obj. */
static const char *json_str(const cJSON *obj, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    ck_assert_msg(cJSON_IsString(v), "golden.json: \"%s\" is not a string", key);
    return v->valuestring;
}

/* The chat prompts' text is what tune renders from their messages with the
 * template it recognises in the GGUF (SmolLM2's ChatML, default system
 * message included). */
static void check_render(const tune_tokenizer *tok, const cJSON *messages, const char *name, const char *text)
{
    tune_error err = {0};
    tune_template_id id;
    ck_assert_msg(tune_template_resolve(NULL, tune_tokenizer_chat_template(tok), &id, &err) == TUNE_OK, "%s",
                  err.message);
    ck_assert_int_eq(id, TUNE_TEMPLATE_SMOLLM2);
    tune_chat_message msgs[4];
    const int n = cJSON_GetArraySize(messages);
    ck_assert(n >= 1 && n <= 4);
    for (int i = 0; i < n; i++) {
        const cJSON *m = cJSON_GetArrayItem(messages, i);
        msgs[i] = (tune_chat_message){json_str(m, "role"), json_str(m, "content")};
    }
    const tune_template_options opt = tune_template_default_options(id);
    tune_strbuf out = {0};
    ck_assert_msg(tune_template_render(id, &opt, msgs, n, 1, &out, NULL, &err) == TUNE_OK, "%s", err.message);
    ck_assert(!out.oom);
    ck_assert_msg(out.len == strlen(text) && memcmp(out.data, text, out.len) == 0, "%s: tune renders \"%.*s\"", name,
                  (int)out.len, out.data);
    tune_strbuf_free(&out);
}

/* Encoding each prompt's text gives its ids; decoding the ids gives the text
 * back, and the greedy continuation decodes as Transformers decodes it. */
START_TEST(smollm2_tokenizer_matches_transformers)
{
    if (!have_model()) return;
    tune_error err = {0};
    tune_tokenizer *tok = NULL;
    ck_assert_msg(tune_tokenizer_load(MODEL_PATH, &tok, &err) == TUNE_OK, "%s", err.message);
    char path[1024], *json = NULL;
    size_t len = 0;
    snprintf(path, sizeof path, "%s/smollm2/golden.json", test_data_dir());
    ck_assert_msg(tune_read_file(path, &json, &len, &err) == TUNE_OK, "%s", err.message);
    cJSON *doc = cJSON_ParseWithLength(json, len);
    ck_assert_msg(doc != NULL, "%s: not JSON", path);
    const cJSON *prompts = cJSON_GetObjectItemCaseSensitive(doc, "prompts");
    ck_assert_int_eq(cJSON_GetArraySize(prompts), N_PROMPTS);
    const cJSON *p;
    tune_ids ids = {0};
    cJSON_ArrayForEach(p, prompts) {
        const char *name = json_str(p, "name"), *text = json_str(p, "text");
        const cJSON *messages = cJSON_GetObjectItemCaseSensitive(p, "messages");
        if (cJSON_IsArray(messages)) check_render(tok, messages, name, text);
        const cJSON *want = cJSON_GetObjectItemCaseSensitive(p, "input_ids");
        ck_assert_msg(tune_tokenizer_encode(tok, text, strlen(text), 0, &ids, &err) == TUNE_OK, "%s", err.message);
        ck_assert_msg(ids.n == (size_t)cJSON_GetArraySize(want), "%s: %zu ids, Transformers %d", name, ids.n,
                      cJSON_GetArraySize(want));
        for (size_t i = 0; i < ids.n; i++)
            ck_assert_msg(ids.ids[i] == cJSON_GetArrayItem(want, (int)i)->valueint, "%s: id %zu is %d, Transformers %d",
                          name, i, ids.ids[i], cJSON_GetArrayItem(want, (int)i)->valueint);
        char *back = NULL;
        size_t n_back = 0;
        ck_assert_msg(tune_tokenizer_decode(tok, ids.ids, ids.n, 0, &back, &n_back, &err) == TUNE_OK, "%s",
                      err.message);
        ck_assert_msg(n_back == strlen(text) && memcmp(back, text, n_back) == 0, "%s: decodes to \"%s\"", name, back);
        free(back);

        const cJSON *gen = cJSON_GetObjectItemCaseSensitive(p, "greedy_ids");
        int32_t g[64];
        const int n_gen = cJSON_GetArraySize(gen);
        ck_assert_int_le(n_gen, 64);
        for (int i = 0; i < n_gen; i++) g[i] = cJSON_GetArrayItem(gen, i)->valueint;
        const char *gen_text = json_str(p, "greedy_text");
        ck_assert_msg(tune_tokenizer_decode(tok, g, (size_t)n_gen, 0, &back, &n_back, &err) == TUNE_OK, "%s",
                      err.message);
        ck_assert_msg(n_back == strlen(gen_text) && memcmp(back, gen_text, n_back) == 0,
                      "%s: continuation decodes to \"%s\", Transformers \"%s\"", name, back, gen_text);
        free(back);
    }
    tune_ids_free(&ids);
    cJSON_Delete(doc);
    free(json);
    tune_tokenizer_free(tok);
}
END_TEST

static tune_model model;

/* The largest deviations seen, over every prompt (printed at the end). */
typedef struct deviation {
    double abs, rel, loss;
} deviation;

/* Golden tensor "<prompt>.<what>" of f, with n elements (0: any). */
static const tune_st_tensor *want(const tune_st_file *f, const char *prompt, const char *what, size_t n)
{
    char name[128];
    snprintf(name, sizeof name, "%s.%s", prompt, what);
    const tune_st_tensor *t = tune_st_find(f, name);
    ck_assert_msg(t != NULL, "golden tensor %s missing", name);
    ck_assert_msg(n == 0 || t->numel == n, "golden tensor %s: %zu elements, expected %zu", name, t->numel, n);
    return t;
}

static float *read_f32(const tune_st_tensor *t)
{
    float *x = malloc(t->numel * sizeof *x);
    tune_error err = {0};
    ck_assert_ptr_nonnull(x);
    ck_assert_msg(tune_st_read_f32(t, x, &err) == TUNE_OK, "%s", err.message);
    return x;
}

static int32_t *read_i32(const tune_st_tensor *t)
{
    int32_t *x = malloc(t->numel * sizeof *x);
    tune_error err = {0};
    ck_assert_ptr_nonnull(x);
    ck_assert_msg(tune_st_read_i32(t, x, &err) == TUNE_OK, "%s", err.message);
    return x;
}

/* got against the reference value, recording the deviation. */
static void check_value(deviation *dev, double got, double ref, const char *prompt, const char *what, int pos, int id)
{
    const double d = fabs(got - ref), scale = fabs(ref) > 1.0 ? fabs(ref) : 1.0;
    if (d > dev->abs) dev->abs = d;
    if (d / scale > dev->rel) dev->rel = d / scale;
    ck_assert_msg(d <= TOL * scale, "%s: %s at position %d, id %d: tune %.8g, reference %.8g", prompt, what, pos, id,
                  got, ref);
}

/* First index of the largest value, as torch.argmax. */
static int argmax(const float *x, int n)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

static double logsumexp(const float *x, int n)
{
    const double m = x[argmax(x, n)];
    double s = 0.0;
    for (int i = 0; i < n; i++) s += exp((double)x[i] - m);
    return m + log(s);
}

/* Forward of ids (1, N) with labels (1, N) through the model (and lora, may be
 * NULL); *mean_loss gets the mean over trained targets. Returns the logits (N, V). */
static float *forward(const tune_lora *lora, const int32_t *ids, const int32_t *labels, int N, double *mean_loss,
                      long *n_targets)
{
    tune_error err = {0};
    tune_workspace *ws = NULL;
    ck_assert_msg(tune_workspace_create(tune_backend_cpu(), &model.cfg, lora, 1, N, 0, &ws, &err) == TUNE_OK, "%s", err.message);
    const tune_batch batch = {.B = 1, .T = N, .input_ids = ids, .labels = labels};
    double loss_sum = 0.0;
    ck_assert_msg(tune_llama_forward(&model, lora, &batch, NULL, 0.0f, ws, &loss_sum, n_targets, &err) == TUNE_OK,
                  "%s", err.message);
    *mean_loss = *n_targets ? loss_sum / (double)*n_targets : 0.0;
    float *logits = malloc((size_t)N * model.cfg.vocab_size * sizeof *logits);
    ck_assert(logits);
    ck_assert_msg(tune_llama_logits(&model, lora, &batch, ws, logits, &err) == TUNE_OK, "%s", err.message);
    tune_workspace_free(ws);
    return logits;
}

/* Rows [0, N) of logits (N, V) against the golden top-K logits and
 * logsumexp of prompt p in f; the argmax of each row is the reference's
 * top-1. Returns the argmaxes (N), for the caller to free. */
static int *check_rows(deviation *dev, const tune_st_file *f, const char *p, const float *logits, int N)
{
    const int V = model.cfg.vocab_size;
    const tune_st_tensor *top_t = want(f, p, "top_ids", 0);
    ck_assert_int_eq(top_t->ndim, 2);
    ck_assert_int_eq(top_t->shape[0], N);
    const int K = (int)top_t->shape[1];
    int32_t *top = read_i32(top_t);
    for (int i = 0; i < N * K; i++) ck_assert(top[i] >= 0 && top[i] < V);
    float *top_v = read_f32(want(f, p, "top_logits", (size_t)N * K)), *lse = read_f32(want(f, p, "logsumexp", N));
    int *am = malloc((size_t)N * sizeof *am);
    ck_assert_ptr_nonnull(am);
    for (int t = 0; t < N; t++) {
        const float *row = logits + (size_t)t * V;
        for (int k = 0; k < K; k++)
            check_value(dev, row[top[t * K + k]], top_v[t * K + k], p, "top logit", t, top[t * K + k]);
        check_value(dev, logsumexp(row, V), lse[t], p, "logsumexp", t, -1);
        am[t] = argmax(row, V);
        ck_assert_msg(am[t] == top[t * K], "%s: top-1 at position %d is %d, reference %d", p, t, am[t], top[t * K]);
    }
    free(top); free(top_v); free(lse);
    return am;
}

static void check_loss(deviation *dev, double got, const tune_st_file *f, const char *p)
{
    float *loss = read_f32(want(f, p, "loss", 1));
    const double d = fabs(got - loss[0]);
    if (d > dev->loss) dev->loss = d;
    ck_assert_msg(d <= TOL * fmax(1.0, fabs(loss[0])), "%s: loss %.8g, reference %.8g", p, got, loss[0]);
    free(loss);
}

/* One forward over prompt + greedy continuation. The model is causal, so the
 * logits at position t are those of the prefix [0, t]: the argmax at t
 * equalling token t + 1 for every continuation position is the greedy
 * generation reproduced token for token. Labels keep the prompt only, so
 * the loss is the prompt's. */
static void check_prompt(deviation *dev, const tune_st_file *golden, const char *p)
{
    const int V = model.cfg.vocab_size;
    const tune_st_tensor *ids_t = want(golden, p, "input_ids", 0), *gen_t = want(golden, p, "greedy_ids", 0);
    const int n = (int)ids_t->numel, G = (int)gen_t->numel, N = n + G;
    int32_t *ids = read_i32(ids_t), *gen = read_i32(gen_t);
    float *last = read_f32(want(golden, p, "last_logits", V));
    int32_t *seq = malloc((size_t)N * sizeof *seq), *labels = malloc((size_t)N * sizeof *labels); // (1, N)
    ck_assert(seq && labels);
    for (int t = 0; t < N; t++) {
        seq[t] = t < n ? ids[t] : gen[t - n];
        labels[t] = t < n ? ids[t] : TUNE_IGNORE_INDEX;
    }
    double loss;
    long n_targets;
    float *logits = forward(NULL, seq, labels, N, &loss, &n_targets); // (N, V)
    ck_assert_int_eq(n_targets, n - 1);
    check_loss(dev, loss, golden, p);
    for (int v = 0; v < V; v++) check_value(dev, logits[(size_t)(n - 1) * V + v], last[v], p, "logit", n - 1, v);
    int *am = check_rows(dev, golden, p, logits, N);
    for (int t = n - 1; t < N - 1; t++)
        ck_assert_msg(am[t] == seq[t + 1], "%s: greedy token %d is %d, Transformers %d", p, t - n + 1, am[t], seq[t + 1]);
    free(logits);
    free(am); free(seq); free(labels); free(ids); free(gen); free(last);
}

/* Greedy generation of the first G tokens as a loop of full forwards over
 * the growing sequence, reusing one workspace sized for the whole of it (as a
 * generator would): the same tokens as Transformers' greedy continuation. */
static void check_greedy_loop(const tune_st_file *golden, const char *p, int G)
{
    const tune_st_tensor *ids_t = want(golden, p, "input_ids", 0), *gen_t = want(golden, p, "greedy_ids", 0);
    ck_assert_int_le(G, (int)gen_t->numel);
    const int n = (int)ids_t->numel, N = n + G, V = model.cfg.vocab_size;
    int32_t *ids = read_i32(ids_t), *gen = read_i32(gen_t);
    int32_t *seq = malloc((size_t)N * sizeof *seq), *labels = malloc((size_t)N * sizeof *labels); // (1, N)
    ck_assert(seq && labels);
    memcpy(seq, ids, (size_t)n * sizeof *seq);
    for (int t = 0; t < N; t++) labels[t] = TUNE_IGNORE_INDEX;
    tune_error err = {0};
    tune_workspace *ws = NULL;
    ck_assert_msg(tune_workspace_create(tune_backend_cpu(), &model.cfg, NULL, 1, N, 0, &ws, &err) == TUNE_OK, "%s", err.message);
    float *logits = malloc((size_t)N * V * sizeof *logits); // (N, V)
    ck_assert(logits);
    for (int s = 0; s < G; s++) {
        const tune_batch batch = {.B = 1, .T = n + s, .input_ids = seq, .labels = labels};
        ck_assert_msg(tune_llama_logits(&model, NULL, &batch, ws, logits, &err) == TUNE_OK, "%s", err.message);
        seq[n + s] = argmax(logits + (size_t)(n + s - 1) * V, V);
        ck_assert_msg(seq[n + s] == gen[s], "%s: greedy token %d is %d, Transformers %d", p, s, seq[n + s], gen[s]);
    }
    tune_workspace_free(ws);
    free(logits);
    free(seq); free(labels); free(ids); free(gen);
}

static tune_st_file *open_golden(const char *name)
{
    char path[1024];
    tune_error err = {0};
    tune_st_file *f = NULL;
    snprintf(path, sizeof path, "%s/smollm2/%s", test_data_dir(), name);
    ck_assert_msg(tune_st_open(path, &f, &err) == TUNE_OK, "%s", err.message);
    return f;
}

static void load_model(void)
{
    tune_error err = {0};
    ck_assert_msg(tune_model_load(MODEL_PATH, &model, &err) == TUNE_OK, "%s", err.message);
}

START_TEST(smollm2_matches_transformers)
{
    if (!have_model()) return;
    load_model();
    tune_st_file *golden = open_golden("golden.safetensors");
    deviation dev = {0};
    for (int i = 0; i < N_PROMPTS; i++) check_prompt(&dev, golden, PROMPTS[i]);
    /* The shortest prompt, 8 steps: the teacher-forced check above covers all 32. */
    check_greedy_loop(golden, "code", 8);
    tune_st_close(golden);
    tune_model_free(&model);
    printf("SmolLM2 vs Transformers, %d prompts: logits max abs %.3g, max rel %.3g (bound %.0e); loss max abs %.3g\n",
           (int)N_PROMPTS, dev.abs, dev.rel, TOL, dev.loss);
    fflush(stdout);
}
END_TEST

/* An adapter tune trained on SmolLM2 and saved (tests/data/smollm2/adapter),
 * loaded back by tune, gives the logits and loss PEFT gives with it. */
START_TEST(smollm2_adapter_matches_peft)
{
    if (!have_model()) return;
    load_model();
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/smollm2/adapter", test_data_dir());
    tune_error err = {0};
    tune_lora_config lc;
    unsigned char *selected = calloc((size_t)model.cfg.num_hidden_layers * TUNE_N_LINEAR, 1);
    ck_assert_ptr_nonnull(selected);
    ck_assert_msg(tune_lora_read_peft_config(dir, &model.cfg, &lc, selected, &err) == TUNE_OK, "%s", err.message);
    tune_lora *lora = NULL;
    ck_assert_msg(tune_lora_create(&model.cfg, &lc, selected, 0, &lora, &err) == TUNE_OK, "%s", err.message);
    ck_assert_msg(tune_lora_load_peft(lora, &model.cfg, dir, &err) == TUNE_OK, "%s", err.message);
    tune_st_file *golden = open_golden("golden.safetensors"), *peft = open_golden("adapter_golden.safetensors");
    deviation dev = {0};
    for (int i = 0; i < N_PROMPTS; i++) {
        const tune_st_tensor *ids_t = want(golden, PROMPTS[i], "input_ids", 0);
        const int n = (int)ids_t->numel;
        int32_t *ids = read_i32(ids_t);
        double loss;
        long n_targets;
        float *logits = forward(lora, ids, ids, n, &loss, &n_targets);
        ck_assert_int_eq(n_targets, n - 1);
        check_loss(&dev, loss, peft, PROMPTS[i]);
        free(check_rows(&dev, peft, PROMPTS[i], logits, n));
        free(logits);
        free(ids);
    }
    tune_st_close(golden);
    tune_st_close(peft);
    tune_lora_free(lora);
    free(selected);
    tune_model_free(&model);
    printf("SmolLM2 + tune-trained adapter vs PEFT, %d prompts: logits max abs %.3g, max rel %.3g (bound %.0e); "
           "loss max abs %.3g\n",
           (int)N_PROMPTS, dev.abs, dev.rel, TOL, dev.loss);
    fflush(stdout);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("real_model");
    TCase *tc = tcase_create("smollm2");
    tcase_add_test(tc, smollm2_tokenizer_matches_transformers);
    tcase_add_test(tc, smollm2_matches_transformers);
    tcase_add_test(tc, smollm2_adapter_matches_peft);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
