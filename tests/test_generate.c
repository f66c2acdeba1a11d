#include <cJSON.h>
#include <math.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"
#include "tune/generate.h"
#include "tune/llama.h"
#include "tune/merge.h"
#include "tune/safetensors.h"

/* ---- streaming text ---- */

/* Pushes text[0, n) for each n in cuts, then the whole text as final; returns what came out. */
static char *stream_cuts(const char *text, const int *cuts, int n_cuts, const char *const *stops, int n_stops,
                         tune_text_stream *ts)
{
    tune_strbuf out = {0};
    tune_text_stream_init(ts, stops, n_stops);
    for (int i = 0; i < n_cuts; i++) tune_text_stream_push(ts, text, (size_t)cuts[i], 0, &out);
    tune_text_stream_push(ts, text, strlen(text), 1, &out);
    ck_assert(!out.oom);
    return out.data ? out.data : strdup("");
}

START_TEST(stream_waits_for_complete_utf8)
{
    const char *text = "a합계"; /* 'a', then two 3-byte characters */
    tune_text_stream ts;
    tune_strbuf out = {0};
    tune_text_stream_init(&ts, NULL, 0);
    tune_text_stream_push(&ts, text, 2, 0, &out); /* 'a' + first byte of 합 */
    ck_assert_str_eq(out.data, "a");
    tune_text_stream_push(&ts, text, 3, 0, &out);
    ck_assert_str_eq(out.data, "a");
    tune_text_stream_push(&ts, text, 5, 0, &out); /* 합 complete, 계 begun */
    ck_assert_str_eq(out.data, "a합");
    tune_text_stream_push(&ts, text, 7, 0, &out);
    ck_assert_str_eq(out.data, "a합계");
    ck_assert_uint_eq(ts.done, 7);
    tune_strbuf_free(&out);
}
END_TEST

START_TEST(stream_waits_while_a_lossy_decoding_ends_in_fffd)
{
    /* decoded text of 1, 2, 3 tokens: "a" + the bytes of 합 arriving one by one */
    tune_text_stream ts;
    tune_strbuf out = {0};
    tune_text_stream_init(&ts, NULL, 0);
    tune_text_stream_push(&ts, "a\uFFFD", strlen("a\uFFFD"), 0, &out);
    ck_assert_str_eq(out.data, "a");
    tune_text_stream_push(&ts, "a\uFFFD", strlen("a\uFFFD"), 0, &out);
    ck_assert_str_eq(out.data, "a");
    tune_text_stream_push(&ts, "a합b", strlen("a합b"), 0, &out);
    ck_assert_str_eq(out.data, "a합b");
    /* a real U+FFFD at the end comes out when the generation ends */
    tune_text_stream_push(&ts, "a합b\uFFFD", strlen("a합b\uFFFD"), 1, &out);
    ck_assert_str_eq(out.data, "a합b\uFFFD");
    tune_strbuf_free(&out);
}
END_TEST

START_TEST(stream_replaces_invalid_bytes)
{
    tune_text_stream ts;
    /* a stray continuation byte, an overlong '/', a surrogate, then a 4-byte emoji cut short at the end */
    const char text[] = "x\x80y\xC0\xAFz\xED\xA0\x80w\xF0\x9F\x98";
    const int cuts[] = {2, 4, 9};
    char *s = stream_cuts(text, cuts, 3, NULL, 0, &ts);
    ck_assert_str_eq(s, "x\uFFFDy\uFFFD\uFFFDz\uFFFD\uFFFD\uFFFDw\uFFFD\uFFFD\uFFFD");
    free(s);
}
END_TEST

START_TEST(stream_cuts_stop_string_split_over_tokens)
{
    const char *stops[] = {"</answer>", "###"};
    tune_text_stream ts;
    tune_strbuf out = {0};
    const char *text = "=SUM(A1)</answer> more";
    tune_text_stream_init(&ts, stops, 2);
    tune_text_stream_push(&ts, text, 10, 0, &out); /* "=SUM(A1)</" : "</" may begin the stop */
    ck_assert_str_eq(out.data, "=SUM(A1)");
    tune_text_stream_push(&ts, text, 14, 0, &out); /* "...</ans" */
    ck_assert_str_eq(out.data, "=SUM(A1)");
    ck_assert(!ts.stopped);
    tune_text_stream_push(&ts, text, 19, 0, &out); /* stop complete, followed by " m" */
    ck_assert(ts.stopped);
    ck_assert_uint_eq(ts.stop_at, 8);
    tune_text_stream_push(&ts, text, strlen(text), 1, &out);
    ck_assert_str_eq(out.data, "=SUM(A1)");
    tune_strbuf_free(&out);
}
END_TEST

START_TEST(stream_releases_held_text_that_is_no_stop)
{
    const char *stops[] = {"<|end|>"};
    tune_text_stream ts;
    const int cuts[] = {3, 5, 6};
    char *s = stream_cuts("ab<|x y<|e", cuts, 3, stops, 1, &ts);
    ck_assert_str_eq(s, "ab<|x y<|e"); /* the final push hands out the held "<|e" */
    ck_assert(!ts.stopped);
    free(s);
    /* the earliest of two stops wins, even inside one push */
    const char *two[] = {"B", "A"};
    const int none[] = {0};
    s = stream_cuts("xxAyyB", none, 0, two, 2, &ts);
    ck_assert_str_eq(s, "xx");
    ck_assert_uint_eq(ts.stop_at, 2);
    free(s);
    /* a stop right at the start gives nothing */
    s = stream_cuts("Ahello", none, 0, two, 2, &ts);
    ck_assert_str_eq(s, "");
    free(s);
}
END_TEST

/* ---- sampling ---- */

static tune_sampler *sampler(float temperature, int top_k, float top_p, float penalty, uint64_t seed, int V)
{
    const tune_sampling s = {temperature, top_k, top_p, penalty, seed};
    tune_sampler *sm;
    tune_error err;
    ck_assert_int_eq(tune_sampler_create(&s, V, &sm, &err), TUNE_OK);
    return sm;
}

START_TEST(sampling_checks_settings)
{
    tune_error err;
    tune_sampling s = tune_sampling_greedy();
    ck_assert_int_eq(tune_sampling_check(&s, &err), TUNE_OK);
    s.top_p = 0.0f;
    ck_assert_int_eq(tune_sampling_check(&s, &err), TUNE_ERR_INPUT);
    ck_assert_ptr_nonnull(strstr(err.message, "top_p"));
    s = tune_sampling_greedy();
    s.temperature = -0.5f;
    ck_assert_int_eq(tune_sampling_check(&s, &err), TUNE_ERR_INPUT);
    s = tune_sampling_greedy();
    s.repetition_penalty = 0.0f;
    ck_assert_int_eq(tune_sampling_check(&s, &err), TUNE_ERR_INPUT);
    s = tune_sampling_greedy();
    s.top_k = -1;
    ck_assert_int_eq(tune_sampling_check(&s, &err), TUNE_ERR_INPUT);
}
END_TEST

START_TEST(greedy_takes_first_argmax_after_penalty)
{
    tune_sampler *sm = sampler(0.0f, 0, 1.0f, 2.0f, 0, 4);
    float logits[4] = {2.0f, -1.0f, 0.5f, 3.0f};
    const int32_t history[] = {0, 1, 0, 3, 999, -5}; /* repeats count once; out-of-range ids ignored */
    tune_sampler_process(sm, logits, history, 6);
    ck_assert_float_eq(logits[0], 1.0f);
    ck_assert_float_eq(logits[1], -2.0f);
    ck_assert_float_eq(logits[2], 0.5f);
    ck_assert_float_eq(logits[3], 1.5f);
    float tie[4] = {1.0f, 4.0f, 4.0f, 0.0f};
    ck_assert_int_eq(tune_sampler_next(sm, tie, NULL, 0, 0), 1);
    tune_sampler_free(sm);
}
END_TEST

START_TEST(top_k_keeps_ties_and_top_p_keeps_the_mass)
{
    tune_sampler *sm = sampler(1.0f, 2, 1.0f, 1.0f, 0, 5);
    float a[5] = {1.0f, 3.0f, 2.0f, 2.0f, 0.0f};
    tune_sampler_process(sm, a, NULL, 0);
    ck_assert(isinf(a[0]) && isinf(a[4]));
    ck_assert_float_eq(a[1], 3.0f);
    ck_assert_float_eq(a[2], 2.0f);
    ck_assert_float_eq(a[3], 2.0f);
    tune_sampler_free(sm);
    /* probabilities 0.5, 0.3, 0.15, 0.05: top_p 0.75 keeps exactly the first two */
    sm = sampler(1.0f, 0, 0.75f, 1.0f, 0, 4);
    float b[4] = {logf(0.5f), logf(0.3f), logf(0.15f), logf(0.05f)};
    tune_sampler_process(sm, b, NULL, 0);
    ck_assert(isfinite(b[0]) && isfinite(b[1]) && isinf(b[2]) && isinf(b[3]));
    tune_sampler_free(sm);
    /* a tiny top_p still keeps the most likely token */
    sm = sampler(1.0f, 0, 1e-6f, 1.0f, 0, 4);
    float c[4] = {0.1f, 0.3f, 0.2f, 0.0f};
    tune_sampler_process(sm, c, NULL, 0);
    ck_assert(isinf(c[0]) && isfinite(c[1]) && isinf(c[2]) && isinf(c[3]));
    tune_sampler_free(sm);
}
END_TEST

START_TEST(sampling_follows_the_distribution_and_the_seed)
{
    /* probabilities 1/2, 1/4, 1/4 at temperature 1: counts over 4000 Philox draws */
    tune_sampler *sm = sampler(1.0f, 0, 1.0f, 1.0f, 42, 3);
    int count[3] = {0, 0, 0};
    int32_t first[64];
    for (int step = 0; step < 4000; step++) {
        float l[3] = {logf(2.0f), 0.0f, 0.0f};
        const int32_t t = tune_sampler_next(sm, l, NULL, 0, (uint64_t)step);
        ck_assert(t >= 0 && t < 3);
        count[t]++;
        if (step < 64) first[step] = t;
    }
    ck_assert_int_lt(abs(count[0] - 2000), 120);
    ck_assert_int_lt(abs(count[1] - 1000), 100);
    ck_assert_int_lt(abs(count[2] - 1000), 100);
    tune_sampler_free(sm);
    /* the same seed gives the same tokens; another seed other tokens */
    tune_sampler *again = sampler(1.0f, 0, 1.0f, 1.0f, 42, 3), *other = sampler(1.0f, 0, 1.0f, 1.0f, 43, 3);
    int differ = 0;
    for (int step = 0; step < 64; step++) {
        float l[3] = {logf(2.0f), 0.0f, 0.0f}, m[3] = {logf(2.0f), 0.0f, 0.0f};
        ck_assert_int_eq(tune_sampler_next(again, l, NULL, 0, (uint64_t)step), first[step]);
        differ += tune_sampler_next(other, m, NULL, 0, (uint64_t)step) != first[step];
    }
    ck_assert_int_gt(differ, 10);
    tune_sampler_free(again);
    tune_sampler_free(other);
    /* a token filtered out is never drawn */
    sm = sampler(1.0f, 1, 1.0f, 1.0f, 7, 3);
    for (int step = 0; step < 200; step++) {
        float l[3] = {0.0f, 0.1f, 0.0f};
        ck_assert_int_eq(tune_sampler_next(sm, l, NULL, 0, (uint64_t)step), 1);
    }
    tune_sampler_free(sm);
}
END_TEST

static const tune_st_tensor *golden_tensor(tune_st_file *f, const char *name)
{
    const tune_st_tensor *t = tune_st_find(f, name);
    ck_assert_msg(t != NULL, "golden tensor %s", name);
    return t;
}

static tune_st_file *open_golden(void)
{
    char path[600];
    snprintf(path, sizeof path, "%s/generate/golden.safetensors", test_data_dir());
    tune_st_file *f;
    tune_error err;
    ck_assert_int_eq(tune_st_open(path, &f, &err), TUNE_OK);
    return f;
}

/* Transformers' processors on random logits (golden.json processor_cases, same order). */
START_TEST(processors_match_transformers)
{
    static const tune_sampling cases[] = {
        {1.0f, 0, 1.0f, 1.3f, 0},  /* penalty */
        {0.7f, 0, 1.0f, 1.0f, 0},  /* temperature */
        {1.0f, 20, 1.0f, 1.0f, 0}, /* top_k */
        {1.0f, 0, 0.8f, 1.0f, 0},  /* top_p */
        {0.6f, 50, 0.9f, 1.2f, 0}, /* all */
        {1.0f, 3, 1.0f, 1.0f, 0},  /* top_k_ties */
    };
    static const int kept[] = {384, 384, 20, 25, 11, 4};
    tune_st_file *f = open_golden();
    tune_error err;
    for (int c = 0; c < (int)(sizeof cases / sizeof cases[0]); c++) {
        char name[64];
        snprintf(name, sizeof name, "proc%d.logits", c);
        const tune_st_tensor *lt = golden_tensor(f, name);
        snprintf(name, sizeof name, "proc%d.history", c);
        const tune_st_tensor *ht = golden_tensor(f, name);
        snprintf(name, sizeof name, "proc%d.out", c);
        const tune_st_tensor *ot = golden_tensor(f, name);
        const int V = (int)lt->numel, H = (int)ht->numel;
        float *logits = malloc((size_t)V * sizeof *logits), *want = malloc((size_t)V * sizeof *want);
        int32_t *hist = malloc((size_t)H * sizeof *hist);
        ck_assert_int_eq(tune_st_read_f32(lt, logits, &err), TUNE_OK);
        ck_assert_int_eq(tune_st_read_f32(ot, want, &err), TUNE_OK);
        ck_assert_int_eq(tune_st_read_i32(ht, hist, &err), TUNE_OK);
        tune_sampler *sm = sampler(cases[c].temperature, cases[c].top_k, cases[c].top_p,
                                   cases[c].repetition_penalty, 0, V);
        tune_sampler_process(sm, logits, hist, H);
        int n = 0;
        for (int i = 0; i < V; i++) {
            ck_assert_msg(isinf(want[i]) == isinf(logits[i]), "case %d token %d: %g vs %g", c, i, logits[i], want[i]);
            if (isinf(want[i])) continue;
            n++;
            ck_assert_float_eq_tol(logits[i], want[i], 1e-6f * (1.0f + fabsf(want[i])));
        }
        ck_assert_int_eq(n, kept[c]);
        tune_sampler_free(sm);
        free(logits);
        free(want);
        free(hist);
    }
    tune_st_close(f);
}
END_TEST

/* ---- decoding ---- */

static void load_model(const char *name, tune_model *m)
{
    char path[600];
    snprintf(path, sizeof path, "%s/tiny/%s", test_data_dir(), name);
    tune_error err;
    tune_status st = tune_model_load(path, m, &err);
    if (st) tune_error_print(stderr, &err);
    ck_assert_int_eq(st, TUNE_OK);
}

static void merge_golden_adapter(tune_model *m)
{
    char path[600];
    snprintf(path, sizeof path, "%s/tiny/peft_adapter", test_data_dir());
    tune_error err;
    ck_assert_int_eq(tune_merge_peft_adapter(m, path, &err), TUNE_OK);
}

/* logits (T, V) of the training forward over ids (T). */
static float *full_forward(const tune_model *m, const int32_t *ids, int T)
{
    tune_error err;
    tune_workspace *ws;
    ck_assert_int_eq(tune_workspace_create(tune_backend_cpu(), &m->cfg, NULL, 1, T, 0, &ws, &err), TUNE_OK);
    int32_t *labels = malloc((size_t)T * sizeof *labels);
    for (int t = 0; t < T; t++) labels[t] = TUNE_IGNORE_INDEX;
    const tune_batch b = {1, T, ids, labels, NULL, NULL};
    const size_t V = (size_t)m->cfg.vocab_size;
    float *out = malloc((size_t)T * V * sizeof *out);
    ck_assert_int_eq(tune_llama_logits(m, NULL, &b, ws, out, &err), TUNE_OK);
    tune_workspace_free(ws);
    free(labels);
    return out;
}

static float max_abs_diff(const float *a, const float *b, size_t n)
{
    float mx = 0.0f;
    for (size_t i = 0; i < n; i++) mx = fmaxf(mx, fabsf(a[i] - b[i]));
    return mx;
}

/* Reads an I64/F32 golden tensor; *n its element count. */
static int32_t *golden_ids(tune_st_file *f, const char *name, int *n)
{
    const tune_st_tensor *t = golden_tensor(f, name);
    int32_t *ids = malloc(t->numel * sizeof *ids);
    tune_error err;
    ck_assert_int_eq(tune_st_read_i32(t, ids, &err), TUNE_OK);
    *n = (int)t->numel;
    return ids;
}

static float *golden_floats(tune_st_file *f, const char *name)
{
    const tune_st_tensor *t = golden_tensor(f, name);
    float *x = malloc(t->numel * sizeof *x);
    tune_error err;
    ck_assert_int_eq(tune_st_read_f32(t, x, &err), TUNE_OK);
    return x;
}

/* Feeding in uneven pieces gives the training forward's logits at every position. */
static void check_incremental_equals_full(const char *model_name)
{
    tune_model m;
    load_model(model_name, &m);
    const int T = 40, V = m.cfg.vocab_size;
    int32_t ids[40];
    for (int t = 0; t < T; t++) ids[t] = (int32_t)((t * 97 + 13) % V);
    float *full = full_forward(&m, ids, T);
    float *inc = malloc((size_t)T * V * sizeof *inc);
    tune_decoder *d;
    tune_error err;
    ck_assert_int_eq(tune_decoder_create(tune_backend_cpu(), &m, NULL, &d, &err), TUNE_OK);
    static const int pieces[] = {5, 1, 1, 7, 2, 1, 11, 1, 1, 3, 1, 6}; /* sums to 40 */
    int at = 0;
    for (size_t i = 0; i < sizeof pieces / sizeof pieces[0]; i++) {
        ck_assert_int_eq(tune_decoder_feed(d, ids + at, pieces[i], inc + (size_t)at * V, 1, &err), TUNE_OK);
        at += pieces[i];
    }
    ck_assert_int_eq(at, T);
    ck_assert_int_eq(tune_decoder_length(d), T);
    const float diff = max_abs_diff(full, inc, (size_t)T * V);
    ck_assert_msg(diff <= 1e-5f, "%s: incremental vs full forward differ by %g", model_name, diff);
    /* last-token mode gives the last row */
    float last[384];
    ck_assert_int_le(V, 384);
    tune_decoder_rewind(d, T - 3);
    ck_assert_int_eq(tune_decoder_feed(d, ids + T - 3, 3, last, 0, &err), TUNE_OK);
    ck_assert_float_le(max_abs_diff(last, full + (size_t)(T - 1) * V, (size_t)V), 1e-5f);
    tune_decoder_free(d);
    free(full);
    free(inc);
    tune_model_free(&m);
}

/* Decoding on the device emulation (the CPU's kernels behind device-style
 * buffers, tests/testutil.h): the same logits bit for bit as on the CPU,
 * through prefill in pieces, a cache that grows past its first size, single
 * steps and a rewind. */
START_TEST(device_decoding_gives_cpu_logits)
{
    tune_model m;
    load_model("llama3rope", &m);
    m.cfg.max_position_embeddings = 1000; /* room for the cache to grow past its first 256 positions */
    const int T = 300, V = m.cfg.vocab_size;
    int32_t *ids = malloc((size_t)T * sizeof *ids);
    for (int t = 0; t < T; t++) ids[t] = (int32_t)((t * 97 + 13) % V);
    float *logits[2];
    const tune_backend *backends[2] = {tune_backend_cpu(), test_device_emulation()};
    tune_error err;
    for (int k = 0; k < 2; k++) {
        logits[k] = malloc((size_t)(T + 1) * V * sizeof *logits[k]);
        tune_decoder *d;
        ck_assert_int_eq(tune_decoder_create(backends[k], &m, NULL, &d, &err), TUNE_OK);
        ck_assert_int_eq(tune_decoder_feed(d, ids, 200, logits[k], 1, &err), TUNE_OK);
        for (int t = 200; t < T; t++)
            ck_assert_int_eq(tune_decoder_feed(d, ids + t, 1, logits[k] + (size_t)t * V, 1, &err), TUNE_OK);
        tune_decoder_rewind(d, 150);
        ck_assert_int_eq(tune_decoder_feed(d, ids + 150, 5, logits[k] + (size_t)T * V, 0, &err), TUNE_OK);
        tune_decoder_free(d);
    }
    ck_assert_mem_eq(logits[0], logits[1], (size_t)(T + 1) * V * sizeof *logits[0]);
    free(logits[0]);
    free(logits[1]);
    free(ids);
    tune_model_free(&m);
}
END_TEST

START_TEST(incremental_decoding_equals_full_forward)
{
    check_incremental_equals_full("gqa");
    check_incremental_equals_full("tied");
    check_incremental_equals_full("llama3rope");
}
END_TEST

/* The decoder on merged weights against the training forward with the same
 * adapter applied unmerged (y = Wx + s·B·A·x), every position. */
START_TEST(merged_decoding_equals_unmerged_forward)
{
    tune_model base, merged;
    load_model("gqa", &base);
    load_model("gqa", &merged);
    merge_golden_adapter(&merged);
    char dir[600];
    snprintf(dir, sizeof dir, "%s/tiny/peft_adapter", test_data_dir());
    const tune_model_config *mc = &base.cfg;
    unsigned char selected[2 * TUNE_N_LINEAR];
    tune_lora_config lc;
    tune_lora *lora;
    tune_error err;
    ck_assert_int_eq(tune_lora_read_peft_config(dir, mc, &lc, selected, &err), TUNE_OK);
    ck_assert_int_eq(tune_lora_create(mc, &lc, selected, 0, &lora, &err), TUNE_OK);
    ck_assert_int_eq(tune_lora_load_peft(lora, mc, dir, &err), TUNE_OK);
    const int T = 40, V = mc->vocab_size;
    int32_t ids[40], labels[40];
    for (int t = 0; t < T; t++) {
        ids[t] = (int32_t)((t * 61 + 5) % V);
        labels[t] = TUNE_IGNORE_INDEX;
    }
    tune_workspace *ws;
    ck_assert_int_eq(tune_workspace_create(tune_backend_cpu(), mc, lora, 1, T, 0, &ws, &err), TUNE_OK);
    const tune_batch b = {1, T, ids, labels, NULL, NULL};
    float *full = malloc((size_t)T * V * sizeof *full);
    ck_assert_int_eq(tune_llama_logits(&base, lora, &b, ws, full, &err), TUNE_OK);
    float *inc = malloc((size_t)T * V * sizeof *inc);
    tune_decoder *d;
    ck_assert_int_eq(tune_decoder_create(tune_backend_cpu(), &merged, NULL, &d, &err), TUNE_OK);
    ck_assert_int_eq(tune_decoder_feed(d, ids, 9, inc, 1, &err), TUNE_OK);
    for (int t = 9; t < T; t++) ck_assert_int_eq(tune_decoder_feed(d, ids + t, 1, inc + (size_t)t * V, 1, &err), TUNE_OK);
    float diff = max_abs_diff(full, inc, (size_t)T * V);
    ck_assert_msg(diff <= 1e-5f, "merged decoding vs unmerged forward: %g", diff);
    tune_decoder_free(d);
    /* The decoder's own unmerged adapter path (what a base kept in blocks uses). */
    ck_assert_int_eq(tune_decoder_create(tune_backend_cpu(), &base, lora, &d, &err), TUNE_OK);
    memset(inc, 0, (size_t)T * V * sizeof *inc);
    ck_assert_int_eq(tune_decoder_feed(d, ids, 9, inc, 1, &err), TUNE_OK);
    for (int t = 9; t < T; t++) ck_assert_int_eq(tune_decoder_feed(d, ids + t, 1, inc + (size_t)t * V, 1, &err), TUNE_OK);
    diff = max_abs_diff(full, inc, (size_t)T * V);
    ck_assert_msg(diff <= 1e-5f, "unmerged decoding vs unmerged forward: %g", diff);
    free(full);
    tune_decoder_free(d);
    tune_workspace_free(ws);
    tune_lora_free(lora);
    free(inc);
    tune_model_free(&base);
    tune_model_free(&merged);
}
END_TEST

/* A prompt longer than the decoder's prefill chunk (128) is fed in chunks. */
START_TEST(long_prefill_is_chunked_exactly)
{
    tune_model m;
    load_model("gqa", &m);
    m.cfg.max_position_embeddings = 300; /* RoPE has no limit of its own; the tiny config says 64 */
    const int T = 200, V = m.cfg.vocab_size;
    int32_t ids[200];
    for (int t = 0; t < T; t++) ids[t] = (int32_t)((t * 53 + 7) % V);
    float *full = full_forward(&m, ids, T), *inc = malloc((size_t)T * V * sizeof *inc), last[384];
    tune_decoder *d;
    tune_error err;
    ck_assert_int_eq(tune_decoder_create(tune_backend_cpu(), &m, NULL, &d, &err), TUNE_OK);
    ck_assert_int_eq(tune_decoder_feed(d, ids, T, inc, 1, &err), TUNE_OK);
    ck_assert_float_le(max_abs_diff(full, inc, (size_t)T * V), 1e-5f);
    tune_decoder_rewind(d, 0);
    ck_assert_int_eq(tune_decoder_feed(d, ids, T, last, 0, &err), TUNE_OK);
    ck_assert_float_le(max_abs_diff(last, full + (size_t)(T - 1) * V, (size_t)V), 1e-5f);
    tune_decoder_free(d);
    free(full);
    free(inc);
    tune_model_free(&m);
}
END_TEST

/* Step logits and greedy tokens of Transformers' generate (golden run `run`). */
static void check_golden_run(const char *run, int with_adapter, float penalty)
{
    tune_model m;
    load_model("gqa", &m);
    if (with_adapter) merge_golden_adapter(&m);
    tune_st_file *f = open_golden();
    int n_prompt, n_new;
    char name[64];
    int32_t *prompt = golden_ids(f, "prompt_ids", &n_prompt);
    snprintf(name, sizeof name, "%s.ids", run);
    int32_t *want = golden_ids(f, name, &n_new);
    snprintf(name, sizeof name, "%s.logits", run);
    float *want_logits = golden_floats(f, name);
    const int V = m.cfg.vocab_size;
    tune_error err;
    tune_decoder *d;
    ck_assert_int_eq(tune_decoder_create(tune_backend_cpu(), &m, NULL, &d, &err), TUNE_OK);
    /* raw logits of every step, feeding Transformers' tokens */
    float *logits = malloc((size_t)V * sizeof *logits);
    ck_assert_int_eq(tune_decoder_prefill(d, prompt, n_prompt, logits, &err), TUNE_OK);
    for (int s = 0; s < n_new; s++) {
        const float diff = max_abs_diff(logits, want_logits + (size_t)s * V, (size_t)V);
        ck_assert_msg(diff <= 1e-5f, "%s step %d: logits differ from Transformers by %g", run, s, diff);
        if (s + 1 < n_new) ck_assert_int_eq(tune_decoder_feed(d, &want[s], 1, logits, 0, &err), TUNE_OK);
    }
    /* the generation loop picks the same tokens (the cached prompt is reused) */
    const tune_sampling greedy = {0.0f, 0, 1.0f, penalty, 0};
    tune_sampler *sm;
    ck_assert_int_eq(tune_sampler_create(&greedy, V, &sm, &err), TUNE_OK);
    int32_t out[64];
    int n_out, hit_eos;
    const tune_generate_opts opts = {n_new, NULL, 0, 0};
    ck_assert_int_eq(tune_generate(d, sm, prompt, n_prompt, &opts, NULL, NULL, out, &n_out, &hit_eos, &err),
                     TUNE_OK);
    ck_assert_int_eq(n_out, n_new);
    ck_assert(!hit_eos);
    for (int s = 0; s < n_new; s++) ck_assert_msg(out[s] == want[s], "%s token %d: %d, want %d", run, s, out[s], want[s]);
    /* an EOS id ends the generation before that token */
    const int32_t eos[2] = {9999, want[5]};
    int first = 0;
    while (want[first] != want[5]) first++;
    const tune_generate_opts stop = {n_new, eos, 2, 0};
    ck_assert_int_eq(tune_generate(d, sm, prompt, n_prompt, &stop, NULL, NULL, out, &n_out, &hit_eos, &err),
                     TUNE_OK);
    ck_assert_int_eq(n_out, first);
    ck_assert(hit_eos);
    tune_sampler_free(sm);
    tune_decoder_free(d);
    tune_st_close(f);
    free(prompt);
    free(want);
    free(want_logits);
    free(logits);
    tune_model_free(&m);
}

START_TEST(greedy_decoding_matches_transformers)
{
    check_golden_run("base", 0, 1.0f);
}
END_TEST

START_TEST(adapter_decoding_matches_peft)
{
    check_golden_run("adapter", 1, 1.0f);
}
END_TEST

START_TEST(repetition_penalty_decoding_matches_transformers)
{
    check_golden_run("penalty", 0, 1.5f);
}
END_TEST

/* Tiny LLaMAs quantised by llama.cpp's llama-quantize (Q2_K, Q4_K_M, Q5_K_M,
 * Q5_0, Q5_1, Q8_0), kept in their blocks: greedy continuations equal
 * Transformers' (which dequantises the file) and the last prompt position's
 * logits agree (tools/reference/make_quant_model_golden.py). */
START_TEST(quantised_gguf_decoding_matches_transformers)
{
    cJSON *g = test_read_json("quant_models/expected.json");
    const int n_new = cJSON_GetObjectItem(g, "n_new_tokens")->valueint;
    const cJSON *file;
    int n_files = 0;
    cJSON_ArrayForEach(file, cJSON_GetObjectItem(g, "files")) {
        char path[600];
        snprintf(path, sizeof path, "%s/quant_models/%s", test_data_dir(), file->string);
        tune_model m;
        tune_error err;
        ck_assert_msg(tune_model_load_stored(path, TUNE_STORE_FILE, &m, &err) == TUNE_OK, "%s: %s", path, err.message);
        int blocks = 0; /* the matrices really stay quantised */
        for (int l = 0; l < m.cfg.num_hidden_layers; l++)
            for (int k = 0; k < TUNE_N_LINEAR; k++) blocks += m.layers[l].w[k].type != TUNE_Q_F32;
        ck_assert_int_eq(blocks, m.cfg.num_hidden_layers * TUNE_N_LINEAR);
        const int V = m.cfg.vocab_size;
        const cJSON *prompt;
        cJSON_ArrayForEach(prompt, cJSON_GetObjectItem(g, "prompts")) {
            const char *name = cJSON_GetObjectItem(prompt, "name")->valuestring;
            const cJSON *ids_j = cJSON_GetObjectItem(prompt, "ids");
            const cJSON *want = cJSON_GetObjectItem(cJSON_GetObjectItem(file, "prompts"), name);
            const int n = cJSON_GetArraySize(ids_j);
            int32_t ids[256];
            ck_assert_int_le(n + n_new, 256);
            for (int i = 0; i < n; i++) ids[i] = cJSON_GetArrayItem(ids_j, i)->valueint;
            tune_decoder *d;
            ck_assert_int_eq(tune_decoder_create(tune_backend_cpu(), &m, NULL, &d, &err), TUNE_OK);
            float *logits = malloc((size_t)V * sizeof *logits);
            ck_assert_int_eq(tune_decoder_prefill(d, ids, n, logits, &err), TUNE_OK);
            const cJSON *first = cJSON_GetObjectItem(want, "last_logits_first16");
            for (int i = 0; i < 16; i++)
                ck_assert_msg(fabs(logits[i] - cJSON_GetArrayItem(first, i)->valuedouble) <= 1e-3,
                              "%s %s logit %d: %g, Transformers %g", file->string, name, i, logits[i],
                              cJSON_GetArrayItem(first, i)->valuedouble);
            const cJSON *greedy = cJSON_GetObjectItem(want, "greedy_ids");
            for (int t = 0; t < n_new; t++) {
                int best = 0;
                for (int v = 1; v < V; v++) best = logits[v] > logits[best] ? v : best;
                ck_assert_msg(best == cJSON_GetArrayItem(greedy, t)->valueint, "%s %s token %d: %d, Transformers %d",
                              file->string, name, t, best, cJSON_GetArrayItem(greedy, t)->valueint);
                const int32_t next = best;
                ck_assert_int_eq(tune_decoder_feed(d, &next, 1, logits, 0, &err), TUNE_OK);
            }
            free(logits);
            tune_decoder_free(d);
        }
        tune_model_free(&m);
        n_files++;
    }
    ck_assert_int_ge(n_files, 6);
    cJSON_Delete(g);
}
END_TEST

static int stop_after_three(void *ctx, int32_t id)
{
    (void)id;
    return ++*(int *)ctx == 3;
}

START_TEST(prefill_reuses_the_cached_prefix)
{
    tune_model m;
    load_model("gqa", &m);
    const int V = m.cfg.vocab_size;
    int32_t a[20], b[24];
    for (int i = 0; i < 20; i++) a[i] = (int32_t)(i * 31 % V);
    memcpy(b, a, 12 * sizeof *a);
    for (int i = 12; i < 24; i++) b[i] = (int32_t)(i * 7 % V);
    float *full = full_forward(&m, b, 24);
    tune_error err;
    tune_decoder *d;
    float logits[384];
    ck_assert_int_eq(tune_decoder_create(tune_backend_cpu(), &m, NULL, &d, &err), TUNE_OK);
    ck_assert_int_eq(tune_decoder_prefill(d, a, 20, logits, &err), TUNE_OK);
    ck_assert_int_eq(tune_decoder_prefill(d, b, 24, logits, &err), TUNE_OK);
    ck_assert_int_eq(tune_decoder_length(d), 24);
    ck_assert_mem_eq(tune_decoder_tokens(d), b, sizeof b);
    ck_assert_float_le(max_abs_diff(logits, full + 23 * V, (size_t)V), 1e-5f);
    /* the same sequence again: only the last token is recomputed */
    ck_assert_int_eq(tune_decoder_prefill(d, b, 24, logits, &err), TUNE_OK);
    ck_assert_float_le(max_abs_diff(logits, full + 23 * V, (size_t)V), 1e-5f);
    /* a callback ends the generation; the context limit (64) is an input error */
    tune_sampler *sm;
    const tune_sampling greedy = tune_sampling_greedy();
    ck_assert_int_eq(tune_sampler_create(&greedy, V, &sm, &err), TUNE_OK);
    int32_t out[64];
    int n_out, hit_eos, calls = 0;
    const tune_generate_opts opts = {30, NULL, 0, 0};
    ck_assert_int_eq(tune_generate(d, sm, b, 24, &opts, stop_after_three, &calls, out, &n_out, &hit_eos, &err),
                     TUNE_OK);
    ck_assert_int_eq(n_out, 3);
    const tune_generate_opts too_long = {60, NULL, 0, 0};
    ck_assert_int_eq(tune_generate(d, sm, b, 24, &too_long, NULL, NULL, out, &n_out, &hit_eos, &err),
                     TUNE_ERR_INPUT);
    ck_assert_ptr_nonnull(strstr(err.message, "max_position_embeddings"));
    const int32_t bad = V;
    ck_assert_int_eq(tune_decoder_feed(d, &bad, 1, logits, 0, &err), TUNE_ERR_INPUT);
    tune_sampler_free(sm);
    tune_decoder_free(d);
    free(full);
    tune_model_free(&m);
}
END_TEST

static void collect(void *ctx, const char *s, size_t n)
{
    tune_strbuf_append(ctx, s, n);
}

START_TEST(session_streams_transformers_text_and_knows_eos)
{
    char path[600];
    tune_error err;
    cJSON *g = test_read_json("generate/golden.json");
    const char *prompt = cJSON_GetObjectItem(g, "prompt")->valuestring;
    const char *want = cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(g, "runs"), "base"), "text")->valuestring;
    const cJSON *want_ids = cJSON_GetObjectItem(g, "prompt_ids");
    snprintf(path, sizeof path, "%s/tiny/gqa", test_data_dir());
    tune_lm *lm;
    ck_assert_int_eq(tune_lm_open(tune_backend_cpu(), path, NULL, &lm, &err), TUNE_OK);
    const int32_t *eos;
    const int n_eos = tune_lm_eos_ids(lm, &eos);
    int has2 = 0, has0 = 0; /* <|im_end|> (config) and <|endoftext|> (vocabulary) */
    for (int i = 0; i < n_eos; i++) {
        has2 |= eos[i] == 2;
        has0 |= eos[i] == 0;
    }
    ck_assert(has2 && has0);
    /* the rendered golden prompt, fed raw, gives Transformers' prompt ids */
    const tune_chat_message msg = {"user", prompt};
    tune_ids ids = {0};
    ck_assert_int_eq(tune_lm_prompt(lm, &msg, 1, 1, &ids, &err), TUNE_OK);
    ck_assert_int_eq((int)ids.n, cJSON_GetArraySize(want_ids));
    for (int i = 0; i < (int)ids.n; i++) ck_assert_int_eq(ids.ids[i], cJSON_GetArrayItem(want_ids, i)->valueint);
    /* streamed pieces add up to the reply, which is Transformers' decoded text */
    tune_strbuf reply = {0}, streamed = {0};
    tune_reply_stats st;
    tune_reply_opts o = {tune_sampling_greedy(), 16, NULL, 0, 0, NULL};
    ck_assert_int_eq(tune_lm_generate(lm, ids.ids, (int)ids.n, &o, collect, &streamed, &reply, &st, &err), TUNE_OK);
    ck_assert_str_eq(reply.data, want);
    ck_assert_str_eq(streamed.data, want);
    ck_assert_int_eq(st.new_tokens, 16);
    ck_assert_int_eq(st.stop, TUNE_STOP_LENGTH);
    /* a stop string inside the text ends the reply before it */
    const char *stops[] = {"form"};
    o.stops = stops;
    o.n_stops = 1;
    reply.len = 0;
    ck_assert_int_eq(tune_lm_generate(lm, ids.ids, (int)ids.n, &o, NULL, NULL, &reply, &st, &err), TUNE_OK);
    ck_assert_int_eq(st.stop, TUNE_STOP_STRING);
    ck_assert_uint_eq(reply.len, (size_t)(strstr(want, "form") - want));
    ck_assert_int_lt(st.new_tokens, 16);
    tune_strbuf_free(&reply);
    tune_strbuf_free(&streamed);
    tune_ids_free(&ids);
    tune_lm_close(lm);
    cJSON_Delete(g);
}
END_TEST

/* The default model: the decoder's greedy continuations of the four prompts
 * of tests/data/smollm2 equal Transformers' (EOS not stopping; the first 16
 * of its 32 tokens, to keep the suite short). */
static void smollm2_greedy(const tune_model *m)
{
    tune_error err;
    cJSON *g = test_read_json("smollm2/golden.json");
    tune_decoder *d;
    tune_sampler *sm;
    const tune_sampling greedy = tune_sampling_greedy();
    ck_assert_int_eq(tune_decoder_create(tune_backend_cpu(), m, NULL, &d, &err), TUNE_OK);
    ck_assert_int_eq(tune_sampler_create(&greedy, m->cfg.vocab_size, &sm, &err), TUNE_OK);
    const cJSON *p;
    cJSON_ArrayForEach(p, cJSON_GetObjectItem(g, "prompts"))
    {
        const cJSON *in = cJSON_GetObjectItem(p, "input_ids"), *want = cJSON_GetObjectItem(p, "greedy_ids");
        const int n = cJSON_GetArraySize(in), n_new = cJSON_GetArraySize(want) < 16 ? cJSON_GetArraySize(want) : 16;
        int32_t prompt[256], out[64];
        ck_assert(n <= 256 && n_new <= 64);
        for (int i = 0; i < n; i++) prompt[i] = cJSON_GetArrayItem(in, i)->valueint;
        int n_out, hit_eos;
        const tune_generate_opts opts = {n_new, NULL, 0, 0};
        ck_assert_int_eq(tune_generate(d, sm, prompt, n, &opts, NULL, NULL, out, &n_out, &hit_eos, &err), TUNE_OK);
        ck_assert_int_eq(n_out, n_new);
        for (int i = 0; i < n_new; i++)
            ck_assert_msg(out[i] == cJSON_GetArrayItem(want, i)->valueint, "%s token %d: %d, Transformers %d",
                          cJSON_GetObjectItem(p, "name")->valuestring, i, out[i],
                          cJSON_GetArrayItem(want, i)->valueint);
    }
    tune_sampler_free(sm);
    tune_decoder_free(d);
    cJSON_Delete(g);
}

/* The adapter tune trained on the default model (tests/data/smollm2/adapter),
 * merged into the weights: the decoder's logits at every prompt position equal
 * PEFT's (its 20 largest per row, 1e-4 relative, the real-model tolerance). */
static void smollm2_merged_adapter(tune_model *m)
{
    char path[600];
    tune_error err;
    snprintf(path, sizeof path, "%s/smollm2/adapter", test_data_dir());
    ck_assert_int_eq(tune_merge_peft_adapter(m, path, &err), TUNE_OK);
    tune_st_file *base, *ad;
    snprintf(path, sizeof path, "%s/smollm2/golden.safetensors", test_data_dir());
    ck_assert_int_eq(tune_st_open(path, &base, &err), TUNE_OK);
    snprintf(path, sizeof path, "%s/smollm2/adapter_golden.safetensors", test_data_dir());
    ck_assert_int_eq(tune_st_open(path, &ad, &err), TUNE_OK);
    tune_decoder *d;
    ck_assert_int_eq(tune_decoder_create(tune_backend_cpu(), m, NULL, &d, &err), TUNE_OK);
    static const char *const prompts[] = {"excel_ko", "excel_en", "english", "code"};
    const int V = m->cfg.vocab_size;
    for (int p = 0; p < 4; p++) {
        char name[64];
        int n, k;
        snprintf(name, sizeof name, "%s.input_ids", prompts[p]);
        int32_t *ids = golden_ids(base, name, &n);
        snprintf(name, sizeof name, "%s.top_ids", prompts[p]);
        int32_t *top = golden_ids(ad, name, &k);
        snprintf(name, sizeof name, "%s.top_logits", prompts[p]);
        float *want = golden_floats(ad, name), *logits = malloc((size_t)n * V * sizeof *logits);
        ck_assert_int_eq(k, n * 20);
        tune_decoder_rewind(d, 0);
        ck_assert_int_eq(tune_decoder_feed(d, ids, n, logits, 1, &err), TUNE_OK);
        for (int i = 0; i < k; i++) {
            const float got = logits[(size_t)(i / 20) * V + top[i]], ref = want[i];
            ck_assert_msg(fabsf(got - ref) <= 1e-4f * fmaxf(1.0f, fabsf(ref)), "%s row %d: %g, PEFT %g", prompts[p],
                          i / 20, got, ref);
        }
        free(ids);
        free(top);
        free(want);
        free(logits);
    }
    tune_decoder_free(d);
    tune_st_close(base);
    tune_st_close(ad);
}

/* The default model (SmolLM2-135M-Instruct Q4_1, `make model`), loaded once
 * for both checks. Skipped, saying so, without the file. */
START_TEST(smollm2_decoding_matches_transformers_and_peft)
{
    const char *gguf = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
    if (access(gguf, R_OK) != 0) {
        printf("SKIPPED: %s absent (run make model)\n", gguf);
        return;
    }
    tune_error err;
    tune_model m;
    ck_assert_int_eq(tune_model_load(gguf, &m, &err), TUNE_OK);
    smollm2_greedy(&m);
    smollm2_merged_adapter(&m);
    tune_model_free(&m);
}
END_TEST

/* ---- chrF ---- */

START_TEST(chrf_matches_sacrebleu)
{
    tune_error err;
    cJSON *g = test_read_json("chrf/golden.json");
    tune_chrf_stats corpus;
    memset(&corpus, 0, sizeof corpus);
    int n = 0;
    const cJSON *pair;
    cJSON_ArrayForEach(pair, cJSON_GetObjectItem(g, "pairs"))
    {
        const char *hyp = cJSON_GetObjectItem(pair, "hyp")->valuestring;
        const char *ref = cJSON_GetObjectItem(pair, "ref")->valuestring;
        tune_chrf_stats one;
        memset(&one, 0, sizeof one);
        ck_assert_int_eq(tune_chrf_add(&one, hyp, ref, &err), TUNE_OK);
        ck_assert_int_eq(tune_chrf_add(&corpus, hyp, ref, &err), TUNE_OK);
        const double want = cJSON_GetObjectItem(pair, "chrf")->valuedouble;
        ck_assert_msg(fabs(tune_chrf_score(&one) - want) < 1e-9, "pair %d (%s | %s): %.12f, sacreBLEU %.12f", n, hyp,
                      ref, tune_chrf_score(&one), want);
        n++;
    }
    ck_assert_int_ge(n, 30);
    ck_assert_double_eq_tol(tune_chrf_score(&corpus), cJSON_GetObjectItem(g, "corpus_chrf")->valuedouble, 1e-9);
    cJSON_Delete(g);
}
END_TEST

START_TEST(chrf_counts_clipped_matches_of_invalid_bytes_as_fffd)
{
    /* "a\xff" is a, U+FFFD: unigrams a and U+FFFD match, the bigram matches too. */
    tune_chrf_stats s;
    tune_error err;
    memset(&s, 0, sizeof s);
    ck_assert_int_eq(tune_chrf_add(&s, "a\xff b", "a\xef\xbf\xbd\xef\xbf\xbd" "b", &err), TUNE_OK);
    ck_assert_int_eq(s.hyp[0], 3);
    ck_assert_int_eq(s.ref[0], 4);
    ck_assert_int_eq(s.match[0], 3); /* a, one U+FFFD (clipped to the hypothesis's one), b */
    ck_assert_int_eq(s.match[1], 2); /* "a U+FFFD", "U+FFFD b" */
    ck_assert_int_eq(s.hyp[3], 0);   /* no 4-grams in the hypothesis... */
    ck_assert_int_eq(s.ref[3], 1);   /* ...one in the reference */
}
END_TEST

/* ---- BLEU and Excel accuracy ---- */

START_TEST(bleu_matches_sacrebleu)
{
    tune_error err;
    cJSON *g = test_read_json("bleu/golden.json");
    tune_bleu_stats corpus;
    memset(&corpus, 0, sizeof corpus);
    int n = 0;
    const cJSON *pair;
    cJSON_ArrayForEach(pair, cJSON_GetObjectItem(g, "pairs"))
    {
        const char *hyp = cJSON_GetObjectItem(pair, "hyp")->valuestring;
        const char *ref = cJSON_GetObjectItem(pair, "ref")->valuestring;
        tune_bleu_stats one;
        memset(&one, 0, sizeof one);
        ck_assert_int_eq(tune_bleu_add(&one, hyp, ref, &err), TUNE_OK);
        ck_assert_int_eq(tune_bleu_add(&corpus, hyp, ref, &err), TUNE_OK);
        const double want = cJSON_GetObjectItem(pair, "bleu")->valuedouble;
        ck_assert_msg(fabs(tune_bleu_score(&one, 1) - want) < 1e-9, "pair %d (%s | %s): %.12f, sacreBLEU %.12f", n, hyp,
                      ref, tune_bleu_score(&one, 1), want);
        n++;
    }
    ck_assert_int_ge(n, 45);
    ck_assert_double_eq_tol(tune_bleu_score(&corpus, 0), cJSON_GetObjectItem(g, "corpus_bleu")->valuedouble, 1e-9);
    cJSON_Delete(g);
}
END_TEST

START_TEST(excel_accuracy_names_functions_and_matches_formulas)
{
    tune_error err;
    tune_excel_stats s;
    memset(&s, 0, sizeof s);
    const char *ref = "=VLOOKUP(A2, $F$2:$G$100, 2, FALSE)로 찾고, IFERROR(로 감쌉니다. Excel(엑셀) 예: =SUM(A1:A10).";
    /* The three functions named (any case), the VLOOKUP formula with other spacing and case; not the SUM one. */
    ck_assert_int_eq(tune_excel_add(&s, "use vlookup: =vlookup(A2,$F$2:$G$100,2,false) inside IFERROR, or Sum", ref, &err),
                     TUNE_OK);
    ck_assert_int_eq(s.fn_answers, 1);
    ck_assert_int_eq(s.fn_named, 1);
    ck_assert_int_eq(s.formulas, 2);
    ck_assert_int_eq(s.formulas_matched, 1);
    /* VLOOKUPS is another word; another formula does not match; SUM(A1:A10) without "=" is no formula. */
    ck_assert_int_eq(tune_excel_add(&s, "VLOOKUPS and IFERROR; =HLOOKUP(A2,$F$2:$G$100,2,FALSE) SUM(A1:A10)", ref, &err),
                     TUNE_OK);
    ck_assert_int_eq(s.fn_answers, 2);
    ck_assert_int_eq(s.fn_named, 1);
    ck_assert_int_eq(s.formulas, 4);
    ck_assert_int_eq(s.formulas_matched, 1);
    /* Strings keep their case; a reference without functions or formulas counts for neither. */
    ck_assert_int_eq(tune_excel_add(&s, "=COUNTIF(A:A, \"Seoul\")", "=countif(a:a,\"Seoul\")", &err), TUNE_OK);
    ck_assert_int_eq(s.formulas, 5);
    ck_assert_int_eq(s.formulas_matched, 5 - 4 + 1);
    ck_assert_int_eq(tune_excel_add(&s, "anything", "합계는 자동 합계 버튼으로 구합니다.", &err), TUNE_OK);
    ck_assert_int_eq(s.fn_answers, 2);
    ck_assert_int_eq(s.formulas, 5);
}
END_TEST

static Suite *generate_suite(void)
{
    Suite *s = suite_create("generate");
    TCase *tc = tcase_create("stream");
    tcase_add_test(tc, stream_waits_for_complete_utf8);
    tcase_add_test(tc, stream_replaces_invalid_bytes);
    tcase_add_test(tc, stream_waits_while_a_lossy_decoding_ends_in_fffd);
    tcase_add_test(tc, stream_cuts_stop_string_split_over_tokens);
    tcase_add_test(tc, stream_releases_held_text_that_is_no_stop);
    suite_add_tcase(s, tc);
    tc = tcase_create("sampling");
    tcase_add_test(tc, sampling_checks_settings);
    tcase_add_test(tc, greedy_takes_first_argmax_after_penalty);
    tcase_add_test(tc, top_k_keeps_ties_and_top_p_keeps_the_mass);
    tcase_add_test(tc, sampling_follows_the_distribution_and_the_seed);
    tcase_add_test(tc, processors_match_transformers);
    suite_add_tcase(s, tc);
    tc = tcase_create("decode");
    tcase_add_test(tc, incremental_decoding_equals_full_forward);
    tcase_add_test(tc, device_decoding_gives_cpu_logits);
    tcase_add_test(tc, long_prefill_is_chunked_exactly);
    tcase_add_test(tc, merged_decoding_equals_unmerged_forward);
    tcase_add_test(tc, greedy_decoding_matches_transformers);
    tcase_add_test(tc, adapter_decoding_matches_peft);
    tcase_add_test(tc, repetition_penalty_decoding_matches_transformers);
    tcase_add_test(tc, prefill_reuses_the_cached_prefix);
    tcase_add_test(tc, quantised_gguf_decoding_matches_transformers);
    tcase_add_test(tc, session_streams_transformers_text_and_knows_eos);
    tcase_add_test(tc, smollm2_decoding_matches_transformers_and_peft);
    suite_add_tcase(s, tc);
    tc = tcase_create("chrf");
    tcase_add_test(tc, chrf_matches_sacrebleu);
    tcase_add_test(tc, chrf_counts_clipped_matches_of_invalid_bytes_as_fffd);
    tcase_add_test(tc, bleu_matches_sacrebleu);
    tcase_add_test(tc, excel_accuracy_names_functions_and_matches_formulas);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return run_suite(generate_suite()); }
