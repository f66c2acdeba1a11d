#include <cJSON.h>
#include <dlfcn.h>
#include <dirent.h>
#include <math.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"
#include "tune/plan.h"
#include "tune/safetensors.h"
#include "tune/train.h"
#include "tune/util.h"

/* ---- counted allocations ------------------------------------------------ */

/* The malloc family, glibc's own (it supports replacing these), with the
 * caller of each call recorded while alloc_counting is set. Not under
 * AddressSanitizer, whose runtime replaces them itself: there the test
 * that reads the record says so and passes. (Valgrind also replaces them,
 * and then records nothing.) */
#if defined(__SANITIZE_ADDRESS__)
#define COUNTS_ALLOCATIONS 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define COUNTS_ALLOCATIONS 0
#endif
#endif
#ifndef COUNTS_ALLOCATIONS
#define COUNTS_ALLOCATIONS 1
#endif

enum { MAX_CALLERS = 1024 };
static _Atomic int alloc_counting;
static _Atomic long alloc_count;
static void *alloc_callers[MAX_CALLERS];

#if COUNTS_ALLOCATIONS
#include <errno.h>
void *__libc_malloc(size_t n);
void *__libc_calloc(size_t n, size_t size);
void *__libc_realloc(void *p, size_t n);
void *__libc_memalign(size_t align, size_t n);

#define counted()                                                                                      \
    do {                                                                                               \
        if (alloc_counting) {                                                                          \
            const long i_ = alloc_count++;                                                             \
            if (i_ < MAX_CALLERS) alloc_callers[i_] = __builtin_return_address(0);                     \
        }                                                                                              \
    } while (0)

void *malloc(size_t n)
{
    counted();
    return __libc_malloc(n);
}

void *calloc(size_t n, size_t size)
{
    counted();
    return __libc_calloc(n, size);
}

void *realloc(void *p, size_t n)
{
    counted();
    return __libc_realloc(p, n);
}

void *aligned_alloc(size_t align, size_t n)
{
    counted();
    return __libc_memalign(align, n);
}

int posix_memalign(void **p, size_t align, size_t n)
{
    counted();
    void *q = __libc_memalign(align, n);
    if (!q && n) return ENOMEM;
    *p = q;
    return 0;
}
#endif

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
            tune_cpu_adamw_update(p, m, v, g, n, &k);
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
        const float norm = tune_cpu_clip_grad_norm(g, spans, n_spans, max_norm);
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
    ck_assert_float_eq(tune_cpu_clip_grad_norm(g, spans, 2, 0.0f), 13.0f);
    ck_assert_float_eq(g[0], 3.0f);
    ck_assert_float_eq(g[4], 12.0f);
}
END_TEST

/* More tensors than the CPU sums at once (256), and tensors long enough to
 * be shared between threads: the norm of the norms in double, and every
 * element scaled. */
START_TEST(clip_over_many_tensors)
{
    enum { NT = 600 };
    tune_span spans[NT];
    size_t n = 0;
    for (int t = 0; t < NT; t++) {
        spans[t] = (tune_span){n, (size_t)(t * 37 % 3001) + (t % 50 == 0 ? 70000 : 1)};
        n += spans[t].size;
    }
    float *g = malloc(n * sizeof *g), *keep = malloc(n * sizeof *keep);
    for (size_t i = 0; i < n; i++) g[i] = keep[i] = (float)((i * 7919 % 2001) / 1000.0 - 1.0);
    double total = 0.0;
    for (int t = 0; t < NT; t++) {
        double sq = 0.0;
        for (size_t i = 0; i < spans[t].size; i++) sq += (double)g[spans[t].offset + i] * g[spans[t].offset + i];
        const float norm = (float)sqrt(sq);
        total += (double)norm * norm;
    }
    const float want = (float)sqrt(total), norm = tune_cpu_clip_grad_norm(g, spans, NT, 1.0f);
    ck_assert_msg(fabsf(norm - want) <= 1e-6f * want, "norm %.9g, in double %.9g", norm, want);
    const float coef = 1.0f / (norm + 1e-6f);
    for (size_t i = 0; i < n; i++) ck_assert_float_eq(g[i], keep[i] * coef);
    free(g);
    free(keep);
}
END_TEST


/* ---- the training loop on the tiny gqa model ---------------------------- */

#define GOLDEN_STEPS 6
#define GOLDEN_ACCUM 2

/* The tiny model, its adapter at the golden's starting weights, and the
 * golden file (its micro-batches and final weights). */
typedef struct fixture {
    tune_model model;
    tune_lora *lora;
    tune_st_file *golden;
    cJSON *json;
    double lr[GOLDEN_STEPS];
    char dir[64]; /* a fresh temporary folder */
    const tune_backend *be; /* where runs train (NULL: the CPU) */
} fixture;

static void tiny_path(char *buf, size_t size, const char *rel)
{
    snprintf(buf, size, "%s/tiny/%s", test_data_dir(), rel);
}

/* Copies the golden tensors "<prefix>NAME" into lora's params. */
static void load_prefixed(tune_lora *lora, const tune_st_file *f, const char *prefix)
{
    tune_error err;
    for (int i = 0; i < lora->n_modules; i++) {
        const tune_lora_module *m = &lora->modules[i];
        for (int ab = 0; ab < 2; ab++) {
            char path[128], name[256];
            tune_linear_module_path(m->layer, m->kind, path, sizeof path);
            snprintf(name, sizeof name, "%sbase_model.model.%s.lora_%c.weight", prefix, path, ab ? 'B' : 'A');
            const tune_st_tensor *t = tune_st_find(f, name);
            ck_assert_msg(t != NULL, "golden tensor %s missing", name);
            ck_assert_uint_eq(t->numel, (size_t)lora->cfg.r * (ab ? m->out : m->in));
            ck_assert_int_eq(tune_st_read_f32(t, lora->params + (ab ? m->b_offset : m->a_offset), &err), TUNE_OK);
        }
    }
}

static void fixture_init(fixture *fx, float dropout)
{
    memset(fx, 0, sizeof *fx);
    tune_error err;
    char path[1024];
    tiny_path(path, sizeof path, "gqa");
    ck_assert_msg(tune_model_load(path, &fx->model, &err) == TUNE_OK, "%s", err.message);
    const tune_lora_config lc = {.r = 4, .alpha = 8.0f, .dropout = dropout, .target_mask = (1u << TUNE_N_LINEAR) - 1};
    ck_assert_int_eq(tune_lora_create(&fx->model.cfg, &lc, NULL, 7, &fx->lora, &err), TUNE_OK);
    tiny_path(path, sizeof path, "gqa/train_golden.safetensors");
    ck_assert_msg(tune_st_open(path, &fx->golden, &err) == TUNE_OK, "%s", err.message);
    load_prefixed(fx->lora, fx->golden, "init.");
    fx->json = load_json("tiny/gqa/train_golden.json");
    /* The learning rates come from the plan's schedule, as in a real run:
     * cosine with 2 warmup steps of 6. */
    const tune_schedule sched = {.kind = TUNE_LR_COSINE, .lr = 1e-2, .warmup_steps = 2, .total_steps = GOLDEN_STEPS};
    for (int s = 0; s < GOLDEN_STEPS; s++) fx->lr[s] = tune_schedule_lr(&sched, s);
    snprintf(fx->dir, sizeof fx->dir, "%s/tune-train-XXXXXX", P_tmpdir);
    ck_assert_ptr_nonnull(mkdtemp(fx->dir));
}

static void remove_tree(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char p[2048];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        if (tune_is_dir(p)) remove_tree(p);
        else unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

static void fixture_free(fixture *fx)
{
    remove_tree(fx->dir);
    cJSON_Delete(fx->json);
    tune_st_close(fx->golden);
    tune_lora_free(fx->lora);
    tune_model_free(&fx->model);
}

/* Replays the golden's micro-batches: index i is step i/2, micro-batch i%2.
 * merge: one (4, T) micro-batch per step instead (accumulation 1).
 * fail_at: the get() of this index of epoch fail_epoch fails (an
 * interrupted run), -1 never. */
typedef struct replay {
    const tune_st_file *golden;
    int merge;
    long fail_at;
    int fail_epoch;
    long n_mb; /* micro-batches per epoch; 0: all 12 (6 merged) */
    int vary;  /* odd epochs have 10 micro-batches, as packing can give */
    int32_t ids[4 * 12], labels[4 * 12];
} replay;

static void read_ids(const tune_st_file *f, const char *name, int32_t *dst)
{
    tune_error err;
    const tune_st_tensor *t = tune_st_find(f, name);
    ck_assert_msg(t != NULL, "%s missing", name);
    ck_assert_uint_eq(t->numel, 24);
    ck_assert_int_eq(tune_st_read_i32(t, dst, &err), TUNE_OK);
}

static tune_status replay_get(void *ctx, int epoch, long index, tune_batch *b, tune_error *err)
{
    replay *r = ctx;
    if (index == r->fail_at && epoch == r->fail_epoch) return tune_fail_run(err, NULL, "simulated interruption at micro-batch %ld", index);
    const long step = (epoch * (r->merge ? 6 : 12) + index) / (r->merge ? 1 : 2);
    const int n = r->merge ? 2 : 1;
    for (int j = 0; j < n; j++) {
        const long mb = r->merge ? j : index % 2;
        char name[64];
        snprintf(name, sizeof name, "step%ld.mb%ld.input_ids", step % GOLDEN_STEPS, mb);
        read_ids(r->golden, name, r->ids + 24 * j);
        snprintf(name, sizeof name, "step%ld.mb%ld.labels", step % GOLDEN_STEPS, mb);
        read_ids(r->golden, name, r->labels + 24 * j);
    }
    *b = (tune_batch){.B = 2 * n, .T = 12, .input_ids = r->ids, .labels = r->labels};
    return TUNE_OK;
}

static long replay_count(void *ctx, int epoch, tune_error *err)
{
    (void)epoch;
    (void)err;
    const replay *r = ctx;
    if (r->vary && epoch % 2) return 10;
    return r->n_mb ? r->n_mb : r->merge ? 6 : 12;
}

static tune_batch_source replay_source(replay *r)
{
    return (tune_batch_source){.ctx = r, .max_B = r->merge ? 4 : 2, .max_T = 12, .count = replay_count,
                               .get = replay_get};
}

/* Records every step's loss, lr and grad norm. */
typedef struct recorder {
    double loss[64], lr[64], grad_norm[64];
    int n_steps, n_saves, n_evals;
    double eval_loss;
} recorder;

static void record(void *ctx, const tune_train_event *ev)
{
    recorder *r = ctx;
    char line[512];
    tune_train_format_event(ev, ev->kind == TUNE_EVENT_STEP, line, sizeof line);
    if (ev->kind == TUNE_EVENT_STEP && r->n_steps < 64) {
        ck_assert_ptr_nonnull(strstr(line, "loss"));
        r->loss[r->n_steps] = ev->loss;
        r->lr[r->n_steps] = ev->lr;
        r->grad_norm[r->n_steps] = ev->grad_norm;
        r->n_steps++;
    }
    if (ev->kind == TUNE_EVENT_SAVE) r->n_saves++;
    if (ev->kind == TUNE_EVENT_EVAL) {
        r->n_evals++;
        r->eval_loss = ev->eval_loss;
    }
}

static tune_train_options golden_options(fixture *fx, const char *out, int accum, recorder *rec)
{
    return (tune_train_options){
        .output_dir = out, .total_steps = GOLDEN_STEPS, .lr = fx->lr, .gradient_accumulation_steps = accum,
        .adam_beta1 = 0.9, .adam_beta2 = 0.999, .adam_epsilon = 1e-8, .weight_decay = 0.01,
        .max_grad_norm = json_num(fx->json, "max_grad_norm"), .seed = 42, .logging_steps = 1,
        .base_model_name_or_path = "tests/data/tiny/gqa", .tune_version = "test",
        .on_event = rec ? record : NULL, .event_ctx = rec, .backend = fx->be};
}

static void subdir(char *buf, size_t size, const char *dir, const char *name)
{
    ck_assert_int_lt(snprintf(buf, size, "%s/%s", dir, name), (int)size);
}

static void assert_params_match(const tune_lora *lora, const tune_st_file *golden, const char *prefix, double tol)
{
    float *want = malloc(lora->n_params * sizeof *want);
    ck_assert_ptr_nonnull(want);
    tune_lora copy = *lora;
    copy.params = want;
    load_prefixed(&copy, golden, prefix);
    double worst = 0.0;
    for (size_t i = 0; i < lora->n_params; i++) worst = fmax(worst, fabs((double)lora->params[i] - want[i]));
    ck_assert_msg(worst <= tol, "%sweights differ by %g (tolerance %g)", prefix, worst, tol);
    free(want);
}

static int files_equal(const char *a, const char *b)
{
    char *x, *y;
    size_t nx, ny;
    tune_error err;
    ck_assert_msg(tune_read_file(a, &x, &nx, &err) == TUNE_OK, "%s", err.message);
    ck_assert_msg(tune_read_file(b, &y, &ny, &err) == TUNE_OK, "%s", err.message);
    const int same = nx == ny && memcmp(x, y, nx) == 0;
    free(x);
    free(y);
    return same;
}

START_TEST(trajectory_matches_transformers)
{
    fixture fx;
    fixture_init(&fx, 0.0f);
    replay r = {.golden = fx.golden, .fail_at = -1};
    const tune_batch_source src = replay_source(&r);
    recorder rec = {0};
    char out[128];
    subdir(out, sizeof out, fx.dir, "run");
    const tune_train_options o = golden_options(&fx, out, GOLDEN_ACCUM, &rec);
    tune_error err;
    ck_assert_msg(tune_train_run(&o, &src, NULL, &fx.model, fx.lora, &err) == TUNE_OK, "%s", err.message);
    ck_assert_int_eq(rec.n_steps, GOLDEN_STEPS);
    const cJSON *st;
    int s = 0;
    cJSON_ArrayForEach(st, cJSON_GetObjectItemCaseSensitive(fx.json, "steps"))
    {
        ck_assert_msg(fabs(rec.loss[s] - json_num(st, "loss")) <= 1e-5 * json_num(st, "loss"),
                      "step %d loss %.9g want %.9g", s, rec.loss[s], json_num(st, "loss"));
        ck_assert_msg(fabs(rec.grad_norm[s] - json_num(st, "grad_norm")) <= 1e-5 * json_num(st, "grad_norm"),
                      "step %d grad norm %.9g want %.9g", s, rec.grad_norm[s], json_num(st, "grad_norm"));
        ck_assert_msg(fabs(rec.lr[s] - json_num(st, "lr")) <= 1e-15, "step %d lr %.17g want %.17g", s, rec.lr[s],
                      json_num(st, "lr"));
        s++;
    }
    assert_params_match(fx.lora, fx.golden, "final.", 1e-5);

    /* The final adapter on disk holds the same weights. */
    char path[256];
    subdir(path, sizeof path, out, "adapter_model.safetensors");
    tune_st_file *f;
    ck_assert_msg(tune_st_open(path, &f, &err) == TUNE_OK, "%s", err.message);
    ck_assert_int_eq(f->n_tensors, 2 * fx.lora->n_modules);
    ck_assert_str_eq(tune_st_metadata(f, "format"), "pt");
    tune_st_close(f);
    const char *outputs[] = {"adapter_config.json", "trainer_state.json", "run_manifest.json", "loss.svg",
                             "training_log.jsonl"};
    for (size_t i = 0; i < sizeof outputs / sizeof *outputs; i++) {
        subdir(path, sizeof path, out, outputs[i]);
        ck_assert_msg(tune_path_exists(path), "%s missing", outputs[i]);
    }
    fixture_free(&fx);
}
END_TEST

/* One micro-batch of 4 rows per step gives the same run as 2 x 2. */
START_TEST(one_batch_of_four_equals_two_of_two)
{
    fixture fx;
    fixture_init(&fx, 0.0f);
    replay r = {.golden = fx.golden, .merge = 1, .fail_at = -1};
    const tune_batch_source src = replay_source(&r);
    recorder rec = {0};
    char out[128];
    subdir(out, sizeof out, fx.dir, "run");
    const tune_train_options o = golden_options(&fx, out, 1, &rec);
    tune_error err;
    ck_assert_msg(tune_train_run(&o, &src, NULL, &fx.model, fx.lora, &err) == TUNE_OK, "%s", err.message);
    ck_assert_int_eq(rec.n_steps, GOLDEN_STEPS);
    assert_params_match(fx.lora, fx.golden, "final.", 1e-5);
    fixture_free(&fx);
}
END_TEST

/* Runs the golden's 6 steps with dropout into fx->dir/<name>; returns the status. */
static tune_status run_into(fixture *fx, const char *name, replay *r, long save_steps, int limit,
                            const char *resume, int auto_resume, const tune_batch_source *eval, recorder *rec,
                            tune_error *err)
{
    const tune_batch_source src = replay_source(r);
    char out[128];
    subdir(out, sizeof out, fx->dir, name);
    tune_train_options o = golden_options(fx, out, GOLDEN_ACCUM, rec);
    o.save_steps = save_steps;
    o.save_total_limit = limit;
    o.resume_from_checkpoint = resume;
    o.auto_resume = auto_resume;
    o.eval_steps = eval ? 2 : 0;
    return tune_train_run(&o, &src, eval, &fx->model, fx->lora, err);
}

/* Nothing in an optimizer step allocates: the calls are recorded from the
 * end of step 1 (the first, which may take its scratch) to the end of step
 * 2, with nothing logged, evaluated or saved between them, and batches
 * that the source hands out without reading or asserting anything. What
 * OpenBLAS and the OpenMP runtime allocate inside their own calls is
 * theirs (OpenBLAS's small-matrix kernels malloc a buffer per call at this
 * tiny model's shapes); every other call counts, tune's and the C
 * library's on its behalf. Accumulation 2, so the micro-batch gradient
 * slot is used too; dropout on, so its masks are made. */
typedef struct preloaded {
    int32_t ids[12][24], labels[12][24];
} preloaded;

static tune_status preloaded_get(void *ctx, int epoch, long index, tune_batch *b, tune_error *err)
{
    (void)epoch;
    (void)err;
    preloaded *p = ctx;
    *b = (tune_batch){.B = 2, .T = 12, .input_ids = p->ids[index % 12], .labels = p->labels[index % 12]};
    return TUNE_OK;
}

static void record_second_step(void *ctx, const tune_train_event *ev)
{
    (void)ctx;
    if (ev->kind != TUNE_EVENT_STEP) return;
    if (ev->step == 1) {
        alloc_count = 0;
        alloc_counting = 1;
    }
    if (ev->step == 2) alloc_counting = 0;
}

START_TEST(steps_allocate_nothing)
{
    if (!COUNTS_ALLOCATIONS) {
        puts("steps_allocate_nothing: not counted under AddressSanitizer");
        return;
    }
    fixture fx;
    fixture_init(&fx, 0.1f);
    static preloaded p;
    for (int i = 0; i < 12; i++) {
        char name[64];
        snprintf(name, sizeof name, "step%d.mb%d.input_ids", i / 2, i % 2);
        read_ids(fx.golden, name, p.ids[i]);
        snprintf(name, sizeof name, "step%d.mb%d.labels", i / 2, i % 2);
        read_ids(fx.golden, name, p.labels[i]);
    }
    replay r = {0};
    tune_batch_source src = replay_source(&r);
    src.ctx = &p;
    src.get = preloaded_get;
    char out[128];
    subdir(out, sizeof out, fx.dir, "alloc");
    tune_train_options o = golden_options(&fx, out, GOLDEN_ACCUM, NULL);
    o.total_steps = 3;
    o.logging_steps = 1000;
    o.on_event = record_second_step;
    tune_error err;
    ck_assert_msg(tune_train_run(&o, &src, NULL, &fx.model, fx.lora, &err) == TUNE_OK, "%s", err.message);
    ck_assert_int_eq(alloc_counting, 0);
    ck_assert_int_le(alloc_count, MAX_CALLERS);
    long ours = 0, runtimes = 0;
    for (long i = 0; i < alloc_count; i++) {
        Dl_info where;
        const int known = dladdr(alloc_callers[i], &where) && where.dli_fname;
        if (known && (strstr(where.dli_fname, "openblas") || strstr(where.dli_fname, "libgomp"))) {
            runtimes++;
            continue;
        }
        ours++;
        fprintf(stderr, "step 2 allocated from %s (%s)\n", known ? where.dli_fname : "?",
                known && where.dli_sname ? where.dli_sname : "?");
    }
    printf("steps_allocate_nothing: %ld allocations inside OpenBLAS and OpenMP, none elsewhere\n", runtimes);
    ck_assert_msg(ours == 0, "the second step allocated %ld times outside OpenBLAS and OpenMP", ours);
    fixture_free(&fx);
}
END_TEST

/* Same inputs, same bytes: two runs, and a run interrupted after a
 * checkpoint and resumed, end with identical adapters. Dropout is on, so
 * the masks must depend on the step, not on the process's history. */
START_TEST(rerun_and_resume_are_byte_identical)
{
    fixture fx;
    fixture_init(&fx, 0.1f);
    float *init = malloc(fx.lora->n_params * sizeof *init);
    ck_assert_ptr_nonnull(init);
    memcpy(init, fx.lora->params, fx.lora->n_params * sizeof *init);
    replay r = {.golden = fx.golden, .fail_at = -1};
    tune_error err;
    ck_assert_msg(run_into(&fx, "a", &r, 2, 0, NULL, 0, NULL, NULL, &err) == TUNE_OK, "%s", err.message);

    memcpy(fx.lora->params, init, fx.lora->n_params * sizeof *init);
    ck_assert_msg(run_into(&fx, "b", &r, 2, 0, NULL, 0, NULL, NULL, &err) == TUNE_OK, "%s", err.message);

    /* Interrupted while fetching step 4 (micro-batch 6): checkpoint-2 exists. */
    memcpy(fx.lora->params, init, fx.lora->n_params * sizeof *init);
    r.fail_at = 6;
    ck_assert_int_eq(run_into(&fx, "c", &r, 2, 0, NULL, 0, NULL, NULL, &err), TUNE_ERR_RUN);
    ck_assert_ptr_nonnull(strstr(err.message, "simulated interruption"));
    char path[256], other[256];
    subdir(path, sizeof path, fx.dir, "c/checkpoint-2/trainer_state.json");
    ck_assert(tune_path_exists(path));
    subdir(path, sizeof path, fx.dir, "c/adapter_model.safetensors");
    ck_assert(!tune_path_exists(path));
    /* A fresh process would start from a re-initialised adapter; scramble it. */
    for (size_t i = 0; i < fx.lora->n_params; i++) fx.lora->params[i] = 0.5f;
    r.fail_at = -1;
    recorder rec = {0};
    ck_assert_msg(run_into(&fx, "c", &r, 2, 0, NULL, 1, NULL, &rec, &err) == TUNE_OK, "%s", err.message);
    ck_assert_int_eq(rec.n_steps, 4); /* steps 3..6 only */

    const char *files[] = {"adapter_model.safetensors", "adapter_config.json", "checkpoint-6/optimizer.safetensors",
                           "checkpoint-4/adapter_model.safetensors"};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        char a[256];
        snprintf(a, sizeof a, "a/%s", files[i]);
        subdir(path, sizeof path, fx.dir, a);
        snprintf(a, sizeof a, "b/%s", files[i]);
        subdir(other, sizeof other, fx.dir, a);
        ck_assert_msg(files_equal(path, other), "rerun differs: %s", files[i]);
        snprintf(a, sizeof a, "c/%s", files[i]);
        subdir(other, sizeof other, fx.dir, a);
        ck_assert_msg(files_equal(path, other), "resumed run differs: %s", files[i]);
    }
    /* The resumed run's log has each step once. */
    subdir(path, sizeof path, fx.dir, "c/training_log.jsonl");
    char *log;
    size_t len;
    ck_assert_int_eq(tune_read_file(path, &log, &len, &err), TUNE_OK);
    int lines = 0;
    for (size_t i = 0; i < len; i++) lines += log[i] == '\n';
    ck_assert_int_eq(lines, GOLDEN_STEPS + 1); /* one per step, and the final train_loss */
    free(log);

    /* Explicit resume from an older checkpoint replaces the later ones. */
    for (size_t i = 0; i < fx.lora->n_params; i++) fx.lora->params[i] = 0.0f;
    subdir(path, sizeof path, fx.dir, "c/checkpoint-2");
    ck_assert_msg(run_into(&fx, "c", &r, 2, 0, path, 0, NULL, NULL, &err) == TUNE_OK, "%s", err.message);
    subdir(path, sizeof path, fx.dir, "a/adapter_model.safetensors");
    subdir(other, sizeof other, fx.dir, "c/adapter_model.safetensors");
    ck_assert(files_equal(path, other));
    free(init);
    fixture_free(&fx);
}
END_TEST


/* Runs the golden's 6 steps with dropout, checkpoints every 2 steps and an
 * evaluation source, on backend be, into fx->dir/<name>. */
static void run_on(fixture *fx, const tune_backend *be, const char *name, const char *resume, recorder *rec)
{
    replay r = {.golden = fx->golden, .fail_at = -1}, er = {.golden = fx->golden, .fail_at = -1, .n_mb = 3};
    const tune_batch_source eval = replay_source(&er);
    tune_error err;
    fx->be = be;
    ck_assert_msg(run_into(fx, name, &r, 2, 0, resume, 0, &eval, rec, &err) == TUNE_OK, "%s", err.message);
}

/* A device backend's bookkeeping without a GPU: the CPU kernels behind
 * device-style buffers give the CPU's bytes (adapter, checkpoints, losses,
 * gradient norms, eval losses), and a run resumed on them from their own
 * checkpoint ends with the same adapter. */
START_TEST(device_bookkeeping_gives_cpu_bytes)
{
    fixture fx;
    fixture_init(&fx, 0.1f);
    float *init = malloc(fx.lora->n_params * sizeof *init);
    ck_assert_ptr_nonnull(init);
    memcpy(init, fx.lora->params, fx.lora->n_params * sizeof *init);
    recorder cpu = {0}, dev = {0};
    run_on(&fx, tune_backend_cpu(), "cpu", NULL, &cpu);
    float *cpu_params = malloc(fx.lora->n_params * sizeof *cpu_params);
    ck_assert_ptr_nonnull(cpu_params);
    memcpy(cpu_params, fx.lora->params, fx.lora->n_params * sizeof *cpu_params);
    memcpy(fx.lora->params, init, fx.lora->n_params * sizeof *init);
    run_on(&fx, test_device_emulation(), "dev", NULL, &dev);
    /* the host adapter holds the device's final weights */
    ck_assert_mem_eq(fx.lora->params, cpu_params, fx.lora->n_params * sizeof *cpu_params);
    ck_assert_int_eq(dev.n_steps, GOLDEN_STEPS);
    ck_assert_int_eq(dev.n_evals, cpu.n_evals);
    ck_assert_mem_eq(dev.loss, cpu.loss, sizeof dev.loss);
    ck_assert_mem_eq(dev.grad_norm, cpu.grad_norm, sizeof dev.grad_norm);
    ck_assert_double_eq(dev.eval_loss, cpu.eval_loss);
    const char *files[] = {"adapter_model.safetensors", "checkpoint-2/adapter_model.safetensors",
                           "checkpoint-4/optimizer.safetensors", "checkpoint-6/optimizer.safetensors"};
    char a[256], b[256];
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        snprintf(b, sizeof b, "cpu/%s", files[i]);
        subdir(a, sizeof a, fx.dir, b);
        snprintf(b, sizeof b, "dev/%s", files[i]);
        char other[256];
        subdir(other, sizeof other, fx.dir, b);
        ck_assert_msg(files_equal(a, other), "device bookkeeping differs: %s", files[i]);
    }
    /* resumed on the device from its checkpoint-2, host weights scrambled */
    for (size_t i = 0; i < fx.lora->n_params; i++) fx.lora->params[i] = 0.5f;
    subdir(a, sizeof a, fx.dir, "dev/checkpoint-2");
    recorder resumed = {0};
    run_on(&fx, test_device_emulation(), "dev", a, &resumed);
    ck_assert_int_eq(resumed.n_steps, GOLDEN_STEPS - 2);
    subdir(a, sizeof a, fx.dir, "cpu/adapter_model.safetensors");
    subdir(b, sizeof b, fx.dir, "dev/adapter_model.safetensors");
    ck_assert_msg(files_equal(a, b), "the resumed device run differs");
    free(cpu_params);
    free(init);
    fixture_free(&fx);
}
END_TEST

/* Kills its own process (SIGKILL: no cleanup runs) once step `ctx` is done. */
static void kill_after(void *ctx, const tune_train_event *ev)
{
    if (ev->kind == TUNE_EVENT_STEP && ev->step == *(const long *)ctx) raise(SIGKILL);
}

/* Run by the process the SIGKILL test starts (this binary again, so no
 * OpenMP state crosses a fork): trains into $TUNE_TEST_KILLED_RUN with
 * dropout, saving every 2 steps, and kills itself after step 3. */
START_TEST(killed_child)
{
    const char *out = getenv("TUNE_TEST_KILLED_RUN");
    fixture fx;
    fixture_init(&fx, 0.1f);
    replay r = {.golden = fx.golden, .fail_at = -1};
    const tune_batch_source src = replay_source(&r);
    long kill_step = 3;
    tune_train_options o = golden_options(&fx, out, GOLDEN_ACCUM, NULL);
    o.save_steps = 2;
    o.on_event = kill_after;
    o.event_ctx = &kill_step;
    tune_error err;
    tune_train_run(&o, &src, NULL, &fx.model, fx.lora, &err);
    ck_abort_msg("the run was not killed: %s", err.message);
}
END_TEST

/* A process killed with SIGKILL between checkpoints, with a half-written
 * checkpoint folder lying around, resumes to the uninterrupted bytes. */
START_TEST(sigkill_mid_run_resumes_identically)
{
    fixture fx;
    fixture_init(&fx, 0.1f);
    replay r = {.golden = fx.golden, .fail_at = -1};
    tune_error err;
    char out[128], path[256], other[256];
    subdir(out, sizeof out, fx.dir, "k");
    /* The same environment (thread count, data folder) plus where to train. */
    ck_assert_int_eq(setenv("TUNE_TEST_KILLED_RUN", out, 1), 0);
    ck_assert_int_eq(setenv("CK_FORK", "no", 1), 0);
    char *const argv[] = {"test_train", NULL};
    const pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        execv("/proc/self/exe", argv);
        _exit(127);
    }
    unsetenv("TUNE_TEST_KILLED_RUN");
    unsetenv("CK_FORK");
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "child status %d", status);
    subdir(path, sizeof path, out, "checkpoint-2/trainer_state.json");
    ck_assert(tune_path_exists(path));
    subdir(path, sizeof path, out, "adapter_model.safetensors");
    ck_assert(!tune_path_exists(path));
    /* A crash while writing checkpoint-4 would leave checkpoint-4.tmp. */
    subdir(path, sizeof path, out, "checkpoint-4.tmp");
    ck_assert_int_eq(mkdir(path, 0755), 0);
    subdir(path, sizeof path, out, "checkpoint-4.tmp/trainer_state.json");
    ck_assert_int_eq(tune_write_file_atomic(path, "{", 1, &err), TUNE_OK);
    char latest[256];
    ck_assert(tune_train_latest_checkpoint(out, latest, sizeof latest));
    ck_assert_ptr_nonnull(strstr(latest, "checkpoint-2"));

    /* The uninterrupted run, then the resumed one from a scrambled adapter. */
    ck_assert_msg(run_into(&fx, "a", &r, 2, 0, NULL, 0, NULL, NULL, &err) == TUNE_OK, "%s", err.message);
    for (size_t i = 0; i < fx.lora->n_params; i++) fx.lora->params[i] = -1.0f;
    recorder rec = {0};
    ck_assert_msg(run_into(&fx, "k", &r, 2, 0, NULL, 1, NULL, &rec, &err) == TUNE_OK, "%s", err.message);
    ck_assert_int_eq(rec.n_steps, 4);
    subdir(path, sizeof path, fx.dir, "a/adapter_model.safetensors");
    subdir(other, sizeof other, out, "adapter_model.safetensors");
    ck_assert(files_equal(path, other));
    subdir(path, sizeof path, out, "checkpoint-4.tmp");
    ck_assert(!tune_path_exists(path));
    fixture_free(&fx);
}
END_TEST

/* Epochs of different lengths (12 then 10 micro-batches, accumulation 2):
 * 11 steps cross into the second epoch at step 7; a run resumed in the
 * middle of it ends with the same bytes. */
START_TEST(epochs_of_different_lengths)
{
    fixture fx;
    fixture_init(&fx, 0.1f);
    float *init = malloc(fx.lora->n_params * sizeof *init);
    ck_assert_ptr_nonnull(init);
    memcpy(init, fx.lora->params, fx.lora->n_params * sizeof *init);
    double lr[11];
    for (int s = 0; s < 11; s++) lr[s] = 1e-3;
    replay r = {.golden = fx.golden, .fail_at = -1, .vary = 1};
    const tune_batch_source src = replay_source(&r);
    char out[128], path[256], other[256];
    subdir(out, sizeof out, fx.dir, "a");
    tune_train_options o = golden_options(&fx, out, GOLDEN_ACCUM, NULL);
    o.total_steps = 11;
    o.lr = lr;
    o.save_steps = 4;
    tune_error err;
    ck_assert_msg(tune_train_run(&o, &src, NULL, &fx.model, fx.lora, &err) == TUNE_OK, "%s", err.message);
    subdir(path, sizeof path, out, "checkpoint-8/trainer_state.json");
    size_t len;
    char *text;
    ck_assert_int_eq(tune_read_file(path, &text, &len, &err), TUNE_OK);
    cJSON *state = cJSON_Parse(text);
    free(text);
    ck_assert_ptr_nonnull(state);
    /* After step 8: epoch 1 + 2 of its 5 steps; the next micro-batch is 4. */
    ck_assert_double_eq_tol(json_num(state, "epoch"), 1.4, 1e-12);
    const cJSON *pos = cJSON_GetObjectItemCaseSensitive(state, "data_position");
    ck_assert_double_eq(json_num(pos, "epoch"), 1);
    ck_assert_double_eq(json_num(pos, "micro_batch"), 4);
    cJSON_Delete(state);

    memcpy(fx.lora->params, init, fx.lora->n_params * sizeof *init);
    subdir(out, sizeof out, fx.dir, "b");
    o.output_dir = out;
    r.fail_epoch = 1;
    r.fail_at = 6; /* epoch 1, step 10 (after checkpoint-8) */
    ck_assert_int_eq(tune_train_run(&o, &src, NULL, &fx.model, fx.lora, &err), TUNE_ERR_RUN);
    r.fail_at = -1;
    o.auto_resume = 1;
    recorder rec = {0};
    o.on_event = record;
    o.event_ctx = &rec;
    ck_assert_msg(tune_train_run(&o, &src, NULL, &fx.model, fx.lora, &err) == TUNE_OK, "%s", err.message);
    ck_assert_int_eq(rec.n_steps, 3); /* 9, 10, 11 */
    subdir(path, sizeof path, fx.dir, "a/adapter_model.safetensors");
    subdir(other, sizeof other, fx.dir, "b/adapter_model.safetensors");
    ck_assert(files_equal(path, other));
    free(init);
    fixture_free(&fx);
}
END_TEST

static int count_checkpoints(const char *dir)
{
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) n += strncmp(e->d_name, "checkpoint-", 11) == 0;
    closedir(d);
    return n;
}

START_TEST(save_total_limit_keeps_the_newest)
{
    fixture fx;
    fixture_init(&fx, 0.0f);
    replay r = {.golden = fx.golden, .fail_at = -1};
    recorder rec = {0};
    tune_error err;
    ck_assert_msg(run_into(&fx, "run", &r, 1, 2, NULL, 0, NULL, &rec, &err) == TUNE_OK, "%s", err.message);
    ck_assert_int_eq(rec.n_saves, GOLDEN_STEPS);
    char out[128], path[256], latest[256];
    subdir(out, sizeof out, fx.dir, "run");
    ck_assert_int_eq(count_checkpoints(out), 2);
    subdir(path, sizeof path, out, "checkpoint-5");
    ck_assert(tune_is_dir(path));
    subdir(path, sizeof path, out, "checkpoint-6");
    ck_assert(tune_is_dir(path));
    ck_assert(tune_train_latest_checkpoint(out, latest, sizeof latest));
    ck_assert_str_eq(latest, path);
    fixture_free(&fx);
}
END_TEST

/* Evaluation: the mean token loss over the whole eval set, logged every
 * eval_steps and at the end, equal to a direct forward pass. */
START_TEST(eval_loss_is_mean_over_eval_set)
{
    fixture fx;
    fixture_init(&fx, 0.0f);
    replay r = {.golden = fx.golden, .fail_at = -1};
    replay er = {.golden = fx.golden, .fail_at = -1, .n_mb = 3};
    tune_batch_source eval = replay_source(&er);
    recorder rec = {0};
    tune_error err;
    ck_assert_msg(run_into(&fx, "run", &r, 0, 0, NULL, 0, &eval, &rec, &err) == TUNE_OK, "%s", err.message);
    ck_assert_int_eq(rec.n_evals, 3); /* steps 2, 4, 6 */
    tune_workspace *ws;
    ck_assert_int_eq(tune_workspace_create(tune_backend_cpu(), &fx.model.cfg, fx.lora, 2, 12, 0, &ws, &err), TUNE_OK);
    double sum = 0.0;
    long n = 0;
    for (long i = 0; i < 3; i++) {
        tune_batch b;
        double ls;
        long nt;
        ck_assert_int_eq(replay_get(&er, 0, i, &b, &err), TUNE_OK);
        ck_assert_int_eq(tune_llama_forward(&fx.model, fx.lora, &b, NULL, 0.0f, ws, &ls, &nt, &err), TUNE_OK);
        sum += ls;
        n += nt;
    }
    tune_workspace_free(ws);
    ck_assert_double_eq_tol(rec.eval_loss, sum / (double)n, 1e-12);
    /* tune eval's path, on the CPU and on the device emulation: the same figure */
    double on_cpu, on_dev;
    long n_cpu, n_dev;
    ck_assert_int_eq(tune_evaluate_on(tune_backend_cpu(), &fx.model, fx.lora, &eval, &on_cpu, &n_cpu, &err), TUNE_OK);
    ck_assert_int_eq(tune_evaluate_on(test_device_emulation(), &fx.model, fx.lora, &eval, &on_dev, &n_dev, &err),
                     TUNE_OK);
    ck_assert_double_eq(on_cpu, rec.eval_loss);
    ck_assert_double_eq(on_dev, on_cpu);
    ck_assert_int_eq(n_dev, n);
    /* The loss curve shows both series. */
    char path[256];
    subdir(path, sizeof path, fx.dir, "run/loss.svg");
    char *svg;
    size_t len;
    ck_assert_int_eq(tune_read_file(path, &svg, &len, &err), TUNE_OK);
    ck_assert_ptr_nonnull(strstr(svg, "<svg"));
    ck_assert_ptr_nonnull(strstr(svg, "validation loss"));
    ck_assert_int_ge(strstr(svg, "#ff7f0e\" stroke-width=\"2\" points") != NULL, 1);
    free(svg);
    fixture_free(&fx);
}
END_TEST

/* A learning rate that blows the weights up: the run stops with a clear
 * error at the first non-finite loss, keeping the last good checkpoint. */
START_TEST(nan_loss_stops_and_keeps_checkpoint)
{
    fixture fx;
    fixture_init(&fx, 0.0f);
    fx.lr[2] = 1e38;
    replay r = {.golden = fx.golden, .fail_at = -1};
    tune_error err;
    ck_assert_int_eq(run_into(&fx, "run", &r, 2, 0, NULL, 0, NULL, NULL, &err), TUNE_ERR_RUN);
    ck_assert_msg(strstr(err.message, "at step 4") != NULL, "%s", err.message);
    ck_assert_msg(strstr(err.message, "checkpoint-2") != NULL, "%s", err.message);
    /* The tensor: the first of PEFT's order whose gradient is not finite. */
    char want[128];
    snprintf(want, sizeof want, "the gradient of base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight is "
                                "not finite (%d of the %d trainable tensors are)",
             2 * fx.lora->n_modules, 2 * fx.lora->n_modules);
    ck_assert_msg(strstr(err.message, want) != NULL, "%s", err.message);
    ck_assert_msg(strstr(err.message, "on_nan_inf: skip") != NULL, "%s", err.message);
    char path[256];
    subdir(path, sizeof path, fx.dir, "run/checkpoint-2/adapter_model.safetensors");
    ck_assert(tune_path_exists(path));
    subdir(path, sizeof path, fx.dir, "run/adapter_model.safetensors");
    ck_assert(!tune_path_exists(path));
    fixture_free(&fx);
}
END_TEST

/* The run in out ended normally: its adapter is there and its log's last entry says `mark`. */
static void assert_run_ended(const char *out, const char *mark)
{
    char path[256], *log;
    size_t len;
    tune_error err;
    subdir(path, sizeof path, out, "adapter_model.safetensors");
    ck_assert(tune_path_exists(path));
    subdir(path, sizeof path, out, "training_log.jsonl");
    ck_assert_int_eq(tune_read_file(path, &log, &len, &err), TUNE_OK);
    ck_assert_msg(strstr(log, mark) != NULL, "the training log lacks %s", mark);
    free(log);
}

/* Counts SKIP events and remembers the last one's text. */
typedef struct skips {
    int n;
    char last[512];
} skips;

static void count_skips(void *ctx, const tune_train_event *ev)
{
    skips *k = ctx;
    if (ev->kind != TUNE_EVENT_SKIP) return;
    k->n++;
    tune_train_format_event(ev, 0, k->last, sizeof k->last);
}

/* on_nan_inf: skip: a like blow-up skips steps 4 to 6 (no update: the
 * weights stay finite, as step 3 left them), logs each with what was not
 * finite, and ends normally; the final train_loss counts steps 1 to 3. */
START_TEST(nan_inf_steps_are_skipped_when_asked)
{
    fixture fx;
    fixture_init(&fx, 0.0f);
    fx.lr[2] = 1e30; /* weights of about 1e30: finite, but the next forward pass overflows */
    replay r = {.golden = fx.golden, .fail_at = -1};
    const tune_batch_source src = replay_source(&r);
    char out[128];
    subdir(out, sizeof out, fx.dir, "run");
    tune_train_options o = golden_options(&fx, out, GOLDEN_ACCUM, NULL);
    o.skip_nonfinite = 1;
    o.save_steps = 3;
    skips k = {0};
    o.on_event = count_skips;
    o.event_ctx = &k;
    tune_error err;
    ck_assert_msg(tune_train_run(&o, &src, NULL, &fx.model, fx.lora, &err) == TUNE_OK, "%s", err.message);
    ck_assert_int_eq(k.n, 3);
    ck_assert_msg(strstr(k.last, "step 6/6 skipped, no update (on_nan_inf: skip): ") == k.last, "%s", k.last);
    ck_assert_msg(strstr(k.last, "lora_A.weight is not finite") != NULL, "%s", k.last);
    for (size_t i = 0; i < fx.lora->n_params; i++) ck_assert(isfinite(fx.lora->params[i]));
    /* The final adapter is step 3's. */
    char path[256], other[256];
    subdir(path, sizeof path, out, "adapter_model.safetensors");
    subdir(other, sizeof other, out, "checkpoint-3/adapter_model.safetensors");
    ck_assert(files_equal(path, other));
    assert_run_ended(out, "\"skipped_nonfinite_steps\":3");
    subdir(path, sizeof path, out, "training_log.jsonl");
    char *log;
    size_t len;
    ck_assert_int_eq(tune_read_file(path, &log, &len, &err), TUNE_OK);
    int n = 0;
    for (const char *p = log; (p = strstr(p, "\"skipped_nonfinite\":")); p++) n++;
    ck_assert_int_eq(n, 3);
    free(log);
    fixture_free(&fx);
}
END_TEST

/* Asks the loop to stop (as the CLI's SIGTERM handler does) once step `ctx` is done. */
static void stop_after(void *ctx, const tune_train_event *ev)
{
    if (ev->kind == TUNE_EVENT_STEP && ev->step == *(const long *)ctx) tune_train_request_stop();
}

/* A stop request ends the run after the step in progress with a checkpoint
 * of that step (at step 4, save_steps' own) and TUNE_INTERRUPTED naming it;
 * resuming gives the uninterrupted bytes. */
START_TEST(stop_request_checkpoints_and_resumes)
{
    fixture fx;
    fixture_init(&fx, 0.1f);
    float *init = malloc(fx.lora->n_params * sizeof *init);
    ck_assert_ptr_nonnull(init);
    memcpy(init, fx.lora->params, fx.lora->n_params * sizeof *init);
    replay r = {.golden = fx.golden, .fail_at = -1};
    tune_error err;
    ck_assert_msg(run_into(&fx, "a", &r, 2, 0, NULL, 0, NULL, NULL, &err) == TUNE_OK, "%s", err.message);
    const tune_batch_source src = replay_source(&r);
    for (long at = 3; at <= 4; at++) {
        memcpy(fx.lora->params, init, fx.lora->n_params * sizeof *init);
        char out[128], path[256], other[256], name[16];
        snprintf(name, sizeof name, "stop%ld", at);
        subdir(out, sizeof out, fx.dir, name);
        tune_train_options o = golden_options(&fx, out, GOLDEN_ACCUM, NULL);
        o.save_steps = 2;
        o.on_event = stop_after;
        o.event_ctx = &at;
        ck_assert_int_eq(tune_train_run(&o, &src, NULL, &fx.model, fx.lora, &err), TUNE_INTERRUPTED);
        snprintf(path, sizeof path, "/checkpoint-%ld", at);
        ck_assert_msg(strstr(err.file, path) != NULL, "%s", err.file);
        snprintf(path, sizeof path, "after step %ld of 6", at);
        ck_assert_msg(strstr(err.message, path) != NULL, "%s", err.message);
        ck_assert_int_eq(count_checkpoints(out), 2); /* 2, and 3 or 4 */
        subdir(path, sizeof path, out, "adapter_model.safetensors");
        ck_assert(!tune_path_exists(path));
        for (size_t i = 0; i < fx.lora->n_params; i++) fx.lora->params[i] = 0.25f;
        o.on_event = NULL;
        o.auto_resume = 1;
        ck_assert_msg(tune_train_run(&o, &src, NULL, &fx.model, fx.lora, &err) == TUNE_OK, "%s", err.message);
        subdir(other, sizeof other, fx.dir, "a/adapter_model.safetensors");
        ck_assert_msg(files_equal(path, other), "stopped after step %ld: the resumed adapter differs", at);
    }
    free(init);
    fixture_free(&fx);
}
END_TEST

/* Axolotl's loss watchdog: the losses are 6.39, 6.19, 6.23, ...: above 6.2
 * never twice in a row, so all 6 steps run; above 6.0 twice in a row ends
 * the run normally after step 2 (its update applied, as Axolotl's callback
 * does at step end), with the adapter written and the reason logged. */
START_TEST(loss_watchdog_ends_a_diverging_run)
{
    fixture fx;
    fixture_init(&fx, 0.0f);
    replay r = {.golden = fx.golden, .fail_at = -1};
    const tune_batch_source src = replay_source(&r);
    char out[128];
    subdir(out, sizeof out, fx.dir, "run");
    recorder rec = {0};
    tune_train_options o = golden_options(&fx, out, GOLDEN_ACCUM, &rec);
    o.loss_watchdog_threshold = 6.2;
    o.loss_watchdog_patience = 2;
    tune_error err;
    ck_assert_msg(tune_train_run(&o, &src, NULL, &fx.model, fx.lora, &err) == TUNE_OK, "%s", err.message);
    ck_assert_int_eq(rec.n_steps, GOLDEN_STEPS);
    load_prefixed(fx.lora, fx.golden, "init.");
    rec.n_steps = 0;
    subdir(out, sizeof out, fx.dir, "watchdog");
    o.output_dir = out;
    o.loss_watchdog_threshold = 6.0;
    ck_assert_msg(tune_train_run(&o, &src, NULL, &fx.model, fx.lora, &err) == TUNE_OK, "%s", err.message);
    ck_assert_int_eq(rec.n_steps, 2);
    assert_run_ended(out, "\"stopped_by_loss_watchdog\":true");
    fixture_free(&fx);
}
END_TEST

/* Early stopping: with lr 0 after step 2 the eval loss cannot improve, so
 * patience 1 ends the run normally at the second evaluation (step 4). */
START_TEST(early_stopping_ends_the_run)
{
    fixture fx;
    fixture_init(&fx, 0.0f);
    for (int s = 2; s < GOLDEN_STEPS; s++) fx.lr[s] = 0.0;
    replay r = {.golden = fx.golden, .fail_at = -1};
    replay er = {.golden = fx.golden, .fail_at = -1, .n_mb = 2};
    const tune_batch_source src = replay_source(&r), eval = replay_source(&er);
    char out[128];
    subdir(out, sizeof out, fx.dir, "run");
    recorder rec = {0};
    tune_train_options o = golden_options(&fx, out, GOLDEN_ACCUM, &rec);
    o.eval_steps = 2;
    o.early_stopping_patience = 1;
    tune_error err;
    ck_assert_msg(tune_train_run(&o, &src, &eval, &fx.model, fx.lora, &err) == TUNE_OK, "%s", err.message);
    ck_assert_int_eq(rec.n_steps, 4);
    ck_assert_int_eq(rec.n_evals, 2);
    assert_run_ended(out, "\"stopped_early\":true");
    fixture_free(&fx);
}
END_TEST

START_TEST(resume_refuses_other_batch_layout)
{
    fixture fx;
    fixture_init(&fx, 0.0f);
    replay r = {.golden = fx.golden, .fail_at = -1};
    tune_error err;
    ck_assert_msg(run_into(&fx, "run", &r, 3, 0, NULL, 0, NULL, NULL, &err) == TUNE_OK, "%s", err.message);
    replay m = {.golden = fx.golden, .merge = 1, .fail_at = -1};
    const tune_batch_source src = replay_source(&m);
    char out[128];
    subdir(out, sizeof out, fx.dir, "run");
    tune_train_options o = golden_options(&fx, out, 1, NULL);
    o.auto_resume = 1;
    ck_assert_int_eq(tune_train_run(&o, &src, NULL, &fx.model, fx.lora, &err), TUNE_ERR_INPUT);
    ck_assert_msg(strstr(err.message, "resuming needs the same data") != NULL, "%s", err.message);
    ck_assert_ptr_nonnull(strstr(err.file, "checkpoint-6"));
    fixture_free(&fx);
}
END_TEST

/* Progress lines: a bar on a terminal, plain log lines otherwise. */
START_TEST(progress_lines)
{
    char line[512];
    tune_train_event ev = {.kind = TUNE_EVENT_STEP, .step = 3, .total_steps = 6, .first_step = 1, .epoch = 0.5,
                           .loss = 1.23456, .lr = 1e-4, .grad_norm = 0.5, .elapsed_s = 4.0};
    tune_train_format_event(&ev, 1, line, sizeof line);
    ck_assert_msg(strstr(line, " 50%|") == line && strstr(line, "| 3/6 [00:04<00:06, 2.00 s/step] loss 1.2346") != NULL,
                  "%s", line);
    tune_train_format_event(&ev, 0, line, sizeof line);
    ck_assert_str_eq(line, "");
    ev.kind = TUNE_EVENT_LOG;
    ev.tokens_per_s = 1234.4;
    tune_train_format_event(&ev, 0, line, sizeof line);
    ck_assert_str_eq(line, "step 3/6 epoch 0.50 loss 1.2346 lr 0.0001 grad_norm 0.5000 tokens/s 1234");
    ev.kind = TUNE_EVENT_EVAL;
    ev.eval_loss = 2.5;
    tune_train_format_event(&ev, 1, line, sizeof line);
    ck_assert_str_eq(line, "step 3/6 eval_loss 2.5000");
}
END_TEST

/* Every get() a run makes, in order: epoch, index and the input ids. */
typedef struct recording {
    const tune_batch_source *inner;
    int n;
    int epoch[64];
    long index[64];
    int32_t ids[64][2 * 12];
} recording;

static tune_status recording_get(void *ctx, int epoch, long index, tune_batch *b, tune_error *err)
{
    recording *r = ctx;
    tune_status st = r->inner->get(r->inner->ctx, epoch, index, b, err);
    if (!st) {
        ck_assert_int_lt(r->n, 64);
        ck_assert_int_eq(b->B * b->T, 2 * 12);
        r->epoch[r->n] = epoch;
        r->index[r->n] = index;
        memcpy(r->ids[r->n++], b->input_ids, sizeof r->ids[0]);
    }
    return st;
}

static long recording_count(void *ctx, int epoch, tune_error *err)
{
    const recording *r = ctx;
    return r->inner->count(r->inner->ctx, epoch, err);
}

static void read_column(const tune_st_file *f, const char *name, int32_t *dst, size_t n)
{
    tune_error err;
    const tune_st_tensor *t = tune_st_find(f, name);
    ck_assert_msg(t != NULL, "%s missing", name);
    ck_assert_uint_eq(t->numel, n);
    ck_assert_int_eq(tune_st_read_i32(t, dst, &err), TUNE_OK);
}

/* The batches file holds the micro-batches the loop trains on, in its
 * order: epochs of 12 and 10 micro-batches, 3 a step (the last step of the
 * second epoch has 1), 11 steps. */
START_TEST(batches_file_is_the_training_order)
{
    fixture fx;
    fixture_init(&fx, 0.0f);
    double lr[11];
    for (int s = 0; s < 11; s++) lr[s] = 1e-3;
    replay rp = {.golden = fx.golden, .fail_at = -1, .vary = 1};
    const tune_batch_source inner = replay_source(&rp);
    recording rec = {.inner = &inner};
    const tune_batch_source src = {.ctx = &rec, .max_B = inner.max_B, .max_T = inner.max_T,
                                   .count = recording_count, .get = recording_get};
    tune_train_options o = golden_options(&fx, NULL, 3, NULL);
    o.total_steps = 11;
    o.lr = lr;
    tune_error err;
    ck_assert_msg(tune_train_run(&o, &src, NULL, &fx.model, fx.lora, &err) == TUNE_OK, "%s", err.message);
    ck_assert_int_eq(rec.n, 12 + 10 + 3 * 3);

    char path[256];
    subdir(path, sizeof path, fx.dir, "batches.safetensors");
    const recording trained = rec;
    ck_assert_msg(tune_train_write_batches(&inner, 11, 3, 0, path, &err) == TUNE_OK, "%s", err.message);
    tune_st_file *f;
    ck_assert_msg(tune_st_open(path, &f, &err) == TUNE_OK, "%s", err.message);
    int32_t step[31], epoch[31], index[31], targets[31], col[24];
    read_column(f, "step", step, 31);
    read_column(f, "epoch", epoch, 31);
    read_column(f, "index", index, 31);
    read_column(f, "targets", targets, 31);
    ck_assert_int_eq(step[21], 7); /* epoch 1's short last step */
    ck_assert_int_eq(step[22], 8);
    ck_assert_int_eq(step[30], 10);
    for (int k = 0; k < 31; k++) {
        ck_assert_int_eq(epoch[k], trained.epoch[k]);
        ck_assert_int_eq(index[k], trained.index[k]);
        char name[64];
        snprintf(name, sizeof name, "input_ids.%d", k);
        read_column(f, name, col, 24);
        ck_assert(memcmp(col, trained.ids[k], sizeof col) == 0);
        /* the replay gives no positions or segments: the forward's defaults */
        snprintf(name, sizeof name, "position_ids.%d", k);
        read_column(f, name, col, 24);
        ck_assert_int_eq(col[13], 1);
        snprintf(name, sizeof name, "segment_ids.%d", k);
        read_column(f, name, col, 24);
        ck_assert_int_eq(col[23], 1);
        snprintf(name, sizeof name, "labels.%d", k);
        read_column(f, name, col, 24);
        long n = 0;
        for (int r = 0; r < 2; r++)
            for (int t = 1; t < 12; t++) n += col[12 * r + t] != TUNE_IGNORE_INDEX;
        ck_assert_int_eq(targets[k], n);
    }
    ck_assert_ptr_null(tune_st_find(f, "input_ids.31"));
    tune_st_close(f);

    /* --steps: the first steps only */
    ck_assert_msg(tune_train_write_batches(&inner, 11, 3, 5, path, &err) == TUNE_OK, "%s", err.message);
    ck_assert_msg(tune_st_open(path, &f, &err) == TUNE_OK, "%s", err.message);
    read_column(f, "step", step, 15);
    ck_assert_int_eq(step[14], 4);
    tune_st_close(f);
    fixture_free(&fx);
}
END_TEST

static Suite *train_suite(void)
{
    Suite *s = suite_create("train");
    TCase *opt = tcase_create("optimizer");
    tcase_add_test(opt, adamw_matches_torch);
    tcase_add_test(opt, clip_grad_norm_matches_torch);
    tcase_add_test(opt, clip_disabled_leaves_gradients);
    tcase_add_test(opt, clip_over_many_tensors);
    tcase_add_test(opt, progress_lines);
    suite_add_tcase(s, opt);
    TCase *loop = tcase_create("loop");
    tcase_add_test(loop, trajectory_matches_transformers);
    tcase_add_test(loop, one_batch_of_four_equals_two_of_two);
    tcase_add_test(loop, rerun_and_resume_are_byte_identical);
    tcase_add_test(loop, device_bookkeeping_gives_cpu_bytes);
    tcase_add_test(loop, sigkill_mid_run_resumes_identically);
    tcase_add_test(loop, epochs_of_different_lengths);
    tcase_add_test(loop, save_total_limit_keeps_the_newest);
    tcase_add_test(loop, eval_loss_is_mean_over_eval_set);
    tcase_add_test(loop, nan_loss_stops_and_keeps_checkpoint);
    tcase_add_test(loop, nan_inf_steps_are_skipped_when_asked);
    tcase_add_test(loop, stop_request_checkpoints_and_resumes);
    tcase_add_test(loop, loss_watchdog_ends_a_diverging_run);
    tcase_add_test(loop, early_stopping_ends_the_run);
    tcase_add_test(loop, resume_refuses_other_batch_layout);
    tcase_add_test(loop, batches_file_is_the_training_order);
    tcase_add_test(loop, steps_allocate_nothing);
    suite_add_tcase(s, loop);
    return s;
}

int main(void)
{
    if (getenv("TUNE_TEST_KILLED_RUN")) { /* the child of sigkill_mid_run_resumes_identically */
        /* Selections the parent ran under would skip the child's case. */
        const char *const selections[] = {"CK_RUN_SUITE", "CK_RUN_CASE", "CK_INCLUDE_TAGS", "CK_EXCLUDE_TAGS"};
        for (size_t i = 0; i < sizeof selections / sizeof *selections; i++) unsetenv(selections[i]);
        Suite *s = suite_create("killed");
        TCase *tc = tcase_create("killed");
        tcase_add_test(tc, killed_child);
        suite_add_tcase(s, tc);
        return run_suite(s);
    }
    return run_suite(train_suite());
}
