#include <math.h>
#include <string.h>

#include "testutil.h"
#include "tune/generate.h"
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

static Suite *generate_suite(void)
{
    Suite *s = suite_create("generate");
    TCase *tc = tcase_create("stream");
    tcase_add_test(tc, stream_waits_for_complete_utf8);
    tcase_add_test(tc, stream_replaces_invalid_bytes);
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
    return s;
}

int main(void) { return run_suite(generate_suite()); }
