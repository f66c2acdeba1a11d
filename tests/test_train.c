#include <cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "tune/train.h"
#include "tune/util.h"

/* ---- helpers ---------------------------------------------------------- */

static cJSON *load_json(const char *rel)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", test_data_dir(), rel);
    char *text;
    size_t len;
    tune_error err;
    ck_assert_msg(tune_read_file(path, &text, &len, &err) == TUNE_OK, "%s", err.message);
    cJSON *root = cJSON_Parse(text);
    free(text);
    ck_assert_ptr_nonnull(root);
    return root;
}

/* A JSON array of numbers as floats; *n receives the count. */
static float *json_floats(const cJSON *arr, size_t *n)
{
    ck_assert(cJSON_IsArray(arr));
    *n = (size_t)cJSON_GetArraySize(arr);
    float *out = malloc(*n * sizeof *out + 1);
    ck_assert_ptr_nonnull(out);
    size_t i = 0;
    const cJSON *x;
    cJSON_ArrayForEach(x, arr) out[i++] = (float)x->valuedouble;
    return out;
}

static double json_num(const cJSON *obj, const char *key)
{
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(obj, key);
    ck_assert_msg(cJSON_IsNumber(x), "missing number %s", key);
    return x->valuedouble;
}

/* |got - want| <= rel · max(|want|, floor): relative, with a floor so values
 * near zero are judged on the scale of the tensor. */
static void assert_close(const float *got, const float *want, size_t n, double rel, double floor,
                         const char *what)
{
    for (size_t i = 0; i < n; i++) {
        const double scale = fmax(fabs((double)want[i]), floor);
        ck_assert_msg(fabs((double)got[i] - want[i]) <= rel * scale, "%s[%zu]: got %.9g want %.9g", what,
                      i, got[i], want[i]);
    }
}

static double max_abs(const float *x, size_t n)
{
    double m = 0.0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs((double)x[i]));
    return m;
}

/* The golden file's tensors, laid out one after another. */
static int golden_spans(const cJSON *root, tune_span *spans, int cap)
{
    const cJSON *shape;
    int n = 0;
    size_t off = 0;
    cJSON_ArrayForEach(shape, cJSON_GetObjectItemCaseSensitive(root, "shapes"))
    {
        ck_assert_int_lt(n, cap);
        size_t size = 1;
        const cJSON *d;
        cJSON_ArrayForEach(d, shape) size *= (size_t)d->valueint;
        spans[n].offset = off;
        spans[n].size = size;
        off += size;
        n++;
    }
    return n;
}

/* ---- AdamW and clipping against torch --------------------------------- */

START_TEST(adamw_matches_torch)
{
    cJSON *root = load_json("train/optimizer_golden.json");
    const cJSON *c;
    int n_cases = 0;
    cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(root, "adamw"))
    {
        size_t n;
        float *p = json_floats(cJSON_GetObjectItemCaseSensitive(c, "init"), &n);
        float *m = calloc(n, sizeof *m), *v = calloc(n, sizeof *v);
        ck_assert(m && v);
        long step = 0;
        const cJSON *s;
        cJSON_ArrayForEach(s, cJSON_GetObjectItemCaseSensitive(c, "steps"))
        {
            step++;
            size_t ng, np, nm, nv;
            float *g = json_floats(cJSON_GetObjectItemCaseSensitive(s, "grad"), &ng);
            float *wp = json_floats(cJSON_GetObjectItemCaseSensitive(s, "param"), &np);
            float *wm = json_floats(cJSON_GetObjectItemCaseSensitive(s, "exp_avg"), &nm);
            float *wv = json_floats(cJSON_GetObjectItemCaseSensitive(s, "exp_avg_sq"), &nv);
            ck_assert(ng == n && np == n && nm == n && nv == n);
            const tune_adamw_coeffs k =
                tune_adamw_coeffs_make(json_num(c, "lr"), json_num(c, "beta1"), json_num(c, "beta2"),
                                       json_num(c, "eps"), json_num(c, "weight_decay"), step);
            tune_adamw_update(p, m, v, g, n, &k);
            /* torch's vectorised sqrt is not always correctly rounded, so the
             * moments and weights agree to a few ulps, not bit for bit. */
            assert_close(p, wp, n, 1e-6, 0.0, "param");
            assert_close(m, wm, n, 1e-6, 1e-3 * max_abs(wm, n), "exp_avg");
            assert_close(v, wv, n, 1e-6, 1e-3 * max_abs(wv, n), "exp_avg_sq");
            free(g);
            free(wp);
            free(wm);
            free(wv);
        }
        ck_assert_int_eq(step, 5);
        free(p);
        free(m);
        free(v);
        n_cases++;
    }
    ck_assert_int_eq(n_cases, 4);
    cJSON_Delete(root);
}
END_TEST

START_TEST(clip_grad_norm_matches_torch)
{
    cJSON *root = load_json("train/optimizer_golden.json");
    tune_span spans[8];
    const int n_spans = golden_spans(root, spans, 8);
    const cJSON *c;
    int n_cases = 0, n_clipped = 0;
    cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(root, "clip"))
    {
        size_t n, nw;
        float *g = json_floats(cJSON_GetObjectItemCaseSensitive(c, "grad"), &n);
        float *want = json_floats(cJSON_GetObjectItemCaseSensitive(c, "clipped"), &nw);
        ck_assert(n == nw && n == spans[n_spans - 1].offset + spans[n_spans - 1].size);
        const float max_norm = (float)json_num(c, "max_norm");
        const float norm = tune_clip_grad_norm(g, spans, n_spans, max_norm);
        const float want_norm = (float)json_num(c, "norm");
        ck_assert_msg(fabs(norm - want_norm) <= 1e-6 * want_norm, "norm %.9g want %.9g", norm, want_norm);
        assert_close(g, want, n, 1e-6, 0.0, "clipped grad");
        n_clipped += norm > max_norm;
        free(g);
        free(want);
        n_cases++;
    }
    ck_assert_int_eq(n_cases, 4);
    ck_assert_int_ge(n_clipped, 2); /* the golden exercises both sides of max_norm */
    cJSON_Delete(root);
}
END_TEST

START_TEST(clip_disabled_leaves_gradients)
{
    float g[5] = {3, 4, 0, 0, 12};
    const tune_span spans[2] = {{0, 2}, {2, 3}};
    ck_assert_float_eq(tune_clip_grad_norm(g, spans, 2, 0.0f), 13.0f);
    ck_assert_float_eq(g[0], 3.0f);
    ck_assert_float_eq(g[4], 12.0f);
}
END_TEST

static Suite *train_suite(void)
{
    Suite *s = suite_create("train");
    TCase *opt = tcase_create("optimizer");
    tcase_add_test(opt, adamw_matches_torch);
    tcase_add_test(opt, clip_grad_norm_matches_torch);
    tcase_add_test(opt, clip_disabled_leaves_gradients);
    suite_add_tcase(s, opt);
    return s;
}

int main(void)
{
    return run_suite(train_suite());
}
