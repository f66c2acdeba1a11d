/* Every operation of the CUDA table against the CPU table, in the manner of
 * llama.cpp's test-backend-ops: fresh random inputs per case, outputs
 * poisoned with NaN before the run (an unwritten element fails), and
 * ‖gpu − cpu‖ / ‖cpu‖ printed per case; bit-exact where the operation is
 * exact. Without a usable GPU (or in a build without CUDA) each GPU case
 * prints SKIPPED and the reason. One CPU-only check runs everywhere. */
#include <math.h>
#include <string.h>

#include "testutil.h"
#include "tune/backend.h"
#include "tune/llama.h"
#include "tune/rng.h"

static const tune_backend *cpu, *gpu;

/* The GPU table, or NULL after printing why the case is skipped. */
static const tune_backend *need_gpu(const char *name)
{
    char why[256];
    cpu = tune_backend_cpu();
    gpu = tune_backend_cuda(why, sizeof why);
    if (!gpu) printf("SKIPPED %s: %s\n", name, why);
    return gpu;
}

/* Host and device buffers of one test, released together at its end. */
enum { MAX_BUFS = 512 };
static void *host_bufs[MAX_BUFS], *dev_bufs[MAX_BUFS];
static int n_host, n_dev;

static void *hbuf(size_t bytes)
{
    ck_assert_int_lt(n_host, MAX_BUFS);
    void *p = calloc(1, bytes ? bytes : 1);
    ck_assert_ptr_nonnull(p);
    return host_bufs[n_host++] = p;
}

static float *fbuf(size_t n) { return hbuf(n * sizeof(float)); }

static void release_all(void)
{
    for (int i = 0; i < n_host; i++) free(host_bufs[i]);
    for (int i = 0; i < n_dev; i++) gpu->release(dev_bufs[i]);
    n_host = n_dev = 0;
}

/* A device copy of host (bytes). */
static void *put(const void *host, size_t bytes)
{
    ck_assert_int_lt(n_dev, MAX_BUFS);
    void *d = gpu->alloc(bytes);
    ck_assert_ptr_nonnull(d);
    dev_bufs[n_dev++] = d;
    ck_assert_int_eq(gpu->upload(d, host, bytes), 0);
    return d;
}

/* A device buffer filled with 0xFF bytes: NaN as floats, all ones as bits. */
static void *poisoned(size_t bytes)
{
    void *host = hbuf(bytes);
    memset(host, 0xff, bytes);
    return put(host, bytes);
}

/* A host copy of the device buffer d, after the queued work. */
static void *get(const void *d, size_t bytes)
{
    void *host = hbuf(bytes);
    char why[256];
    ck_assert_int_eq(gpu->download(host, d, bytes), 0);
    ck_assert_msg(gpu->finish(why, sizeof why) == 0, "%s", why);
    return host;
}

/* Fresh uniform values in (lo, hi], a new stream per call. */
static uint64_t next_stream = 1000;

static float *rand_floats(size_t n, float lo, float hi)
{
    float *x = fbuf(n);
    const uint64_t stream = next_stream++;
    for (size_t i = 0; i < n; i++) x[i] = lo + (hi - lo) * tune_rng_uniform(20240611, stream, i);
    return x;
}

static void expect_close(const char *what, const float *g, const float *c, size_t n, double tol)
{
    double diff = 0.0, norm = 0.0;
    for (size_t i = 0; i < n; i++) {
        const double d = (double)g[i] - c[i];
        diff += d * d;
        norm += (double)c[i] * c[i];
    }
    const double rel = norm > 0.0 ? sqrt(diff / norm) : sqrt(diff); /* NaN when anything is NaN */
    printf("%-56s rel err %.3g\n", what, rel);
    ck_assert_msg(rel <= tol, "%s: relative error %g above %g", what, rel, tol);
}

static void expect_same(const char *what, const void *g, const void *c, size_t bytes)
{
    printf("%-56s %s\n", what, memcmp(g, c, bytes) ? "DIFFERENT" : "bit-exact");
    ck_assert_msg(memcmp(g, c, bytes) == 0, "%s: not bit-identical", what);
}

START_TEST(matmul)
{
    if (!need_gpu("matmul")) return;
    static const struct { int M, N, K; } sizes[] = {{37, 53, 29}, {64, 32, 128}, {1, 7, 1}, {130, 1, 17}, {5, 3, 0}};
    for (size_t z = 0; z < sizeof sizes / sizeof *sizes; z++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++)
                for (int bi = 0; bi < 2; bi++) {
                    const int M = sizes[z].M, N = sizes[z].N, K = sizes[z].K;
                    const float alpha = 0.7f, beta = bi ? 1.3f : 0.0f;
                    const float *a = rand_floats((size_t)M * K, -1, 1), *b = rand_floats((size_t)K * N, -1, 1);
                    float *c = rand_floats((size_t)M * N, -1, 1);
                    float *dc = beta == 0.0f ? poisoned((size_t)M * N * 4) : put(c, (size_t)M * N * 4);
                    cpu->matmul(c, a, b, M, N, K, ta, tb, alpha, beta);
                    gpu->matmul(dc, put(a, (size_t)M * K * 4), put(b, (size_t)K * N * 4), M, N, K, ta, tb, alpha,
                                beta);
                    char what[96];
                    snprintf(what, sizeof what, "matmul %dx%dx%d trans %d%d beta %g", M, N, K, ta, tb, beta);
                    expect_close(what, get(dc, (size_t)M * N * 4), c, (size_t)M * N, 1e-5);
                }
    release_all();
}
END_TEST

/* Random blocks of type for a (rows, cols) matrix: quantised from random
 * values through Q8_0 / NF4 / NF4_DQ, or random bytes with every f16 field
 * of a block made a small normal number. */
static uint8_t *rand_blocks(uint32_t type, int rows, int cols)
{
    const size_t rb = tune_qtype_row_bytes(type, cols);
    uint8_t *b = hbuf((size_t)rows * rb + tune_qtype_stats_bytes(type, rows, cols));
    if (type == TUNE_Q8_0 || type == TUNE_Q_NF4 || type == TUNE_Q_NF4_DQ) {
        const float *x = rand_floats((size_t)rows * cols, -1, 1);
        tune_quantize_rows(type, x, b, rows, cols);
        return b;
    }
    const uint64_t stream = next_stream++;
    for (size_t i = 0; i < (size_t)rows * rb; i++) b[i] = (uint8_t)(tune_rng_uniform(7, stream, i) * 256.0f);
    /* the f16 scales of each type sit at these offsets of its block */
    static const struct { uint32_t type; int offsets[2]; } scales[] = {
        {TUNE_Q4_0, {0, -1}}, {TUNE_Q4_1, {0, 2}}, {TUNE_Q5_0, {0, -1}}, {TUNE_Q5_1, {0, 2}}, {TUNE_Q2_K, {80, 82}},
        {TUNE_Q3_K, {108, -1}}, {TUNE_Q4_K, {0, 2}}, {TUNE_Q5_K, {0, 2}}, {TUNE_Q6_K, {208, -1}},
    };
    const int bb = tune_qtype_block_bytes(type);
    for (size_t s = 0; s < sizeof scales / sizeof *scales; s++)
        if (scales[s].type == type)
            for (size_t blk = 0; blk < (size_t)rows * rb / bb; blk++)
                for (int k = 0; k < 2 && scales[s].offsets[k] >= 0; k++)
                    b[blk * bb + scales[s].offsets[k] + 1] = 0x20 | (b[blk * bb + scales[s].offsets[k] + 1] & 7);
    return b;
}

START_TEST(weight_ops)
{
    if (!need_gpu("weight_ops")) return;
    static const uint32_t types[] = {TUNE_Q4_0, TUNE_Q4_1, TUNE_Q5_0, TUNE_Q5_1, TUNE_Q8_0, TUNE_Q2_K,
                                     TUNE_Q3_K, TUNE_Q4_K, TUNE_Q5_K, TUNE_Q6_K, TUNE_Q_NF4, TUNE_Q_NF4_DQ};
    enum { ROWS = 70, COLS = 512, N = 9 }; /* NF4_DQ: 560 blocks, three groups of its statistics */
    for (size_t t = 0; t < sizeof types / sizeof *types; t++) {
        const uint32_t type = types[t];
        uint8_t *blocks = rand_blocks(type, ROWS, COLS);
        const size_t bytes = (size_t)ROWS * tune_qtype_row_bytes(type, COLS) + tune_qtype_stats_bytes(type, ROWS, COLS);
        const tune_weight hw = {type, ROWS, COLS, NULL, blocks}, dw = {type, ROWS, COLS, NULL, put(blocks, bytes)};
        char what[96];
        for (int trans = 0; trans < 2; trans++) {
            const int in = trans ? ROWS : COLS, out = trans ? COLS : ROWS;
            const float *x = rand_floats((size_t)N * in, -1, 1);
            float *y = rand_floats((size_t)N * out, -1, 1);
            float *dy = put(y, (size_t)N * out * 4);
            cpu->weight_matmul(y, x, &hw, N, trans, 0.5f);
            gpu->weight_matmul(dy, put(x, (size_t)N * in * 4), &dw, N, trans, 0.5f);
            snprintf(what, sizeof what, "weight_matmul %s trans %d", tune_qtype_name(type), trans);
            expect_close(what, get(dy, (size_t)N * out * 4), y, (size_t)N * out, 1e-5);
        }
        int32_t ids[N];
        for (int n = 0; n < N; n++) ids[n] = (n * 29 + 3) % ROWS;
        float *rows = fbuf((size_t)N * COLS), *drows = poisoned((size_t)N * COLS * 4);
        cpu->weight_rows(rows, &hw, ids, N);
        gpu->weight_rows(drows, &dw, put(ids, sizeof ids), N);
        snprintf(what, sizeof what, "weight_rows %s", tune_qtype_name(type));
        expect_same(what, get(drows, (size_t)N * COLS * 4), rows, (size_t)N * COLS * 4);
    }
    release_all();
}
END_TEST

START_TEST(embedding)
{
    if (!need_gpu("embedding")) return;
    enum { V = 50, C = 37, N = 20 };
    const float *table = rand_floats((size_t)V * C, -1, 1), *dout = rand_floats((size_t)N * C, -1, 1);
    float *dtable = rand_floats((size_t)V * C, -1, 1), *out = fbuf((size_t)N * C);
    int32_t *ids = hbuf(N * sizeof *ids);
    for (int n = 0; n < N; n++) ids[n] = (n * 7) % 11; /* repeated ids */
    const int32_t *d_ids = put(ids, sizeof(int32_t) * N);
    float *d_out = poisoned(sizeof(float) * N * C), *d_dtable = put(dtable, sizeof(float) * V * C);
    cpu->embedding(out, table, ids, N, C);
    gpu->embedding(d_out, put(table, sizeof(float) * V * C), d_ids, N, C);
    expect_same("embedding", get(d_out, sizeof(float) * N * C), out, sizeof(float) * N * C);
    cpu->embedding_backward(dtable, dout, ids, N, C);
    gpu->embedding_backward(d_dtable, put(dout, sizeof(float) * N * C), d_ids, N, C);
    expect_same("embedding backward (repeated ids)", get(d_dtable, sizeof(float) * V * C), dtable,
                sizeof(float) * V * C);
    release_all();
}
END_TEST

START_TEST(rmsnorm)
{
    if (!need_gpu("rmsnorm")) return;
    static const int shapes[][2] = {{7, 300}, {3, 4096}, {5, 1}, {2, 577}};
    for (size_t z = 0; z < sizeof shapes / sizeof *shapes; z++) {
        const int N = shapes[z][0], C = shapes[z][1];
        const size_t nc = (size_t)N * C;
        const float *x = rand_floats(nc, -2, 2), *w = rand_floats(C, 0.5f, 1.5f), *dout = rand_floats(nc, -1, 1);
        float *dx = rand_floats(nc, -1, 1), *out = fbuf(nc), *rstd = fbuf(N);
        float *d_out = poisoned(nc * 4), *d_rstd = poisoned((size_t)N * 4), *d_dx = put(dx, nc * 4);
        const float *d_x = put(x, nc * 4), *d_w = put(w, (size_t)C * 4);
        cpu->rmsnorm_forward(out, rstd, x, w, N, C, 1e-5f);
        cpu->rmsnorm_backward(dx, dout, x, w, rstd, N, C);
        gpu->rmsnorm_forward(d_out, d_rstd, d_x, d_w, N, C, 1e-5f);
        gpu->rmsnorm_backward(d_dx, put(dout, nc * 4), d_x, d_w, d_rstd, N, C);
        char what[96];
        snprintf(what, sizeof what, "rmsnorm forward %dx%d", N, C);
        expect_close(what, get(d_out, nc * 4), out, nc, 1e-5);
        snprintf(what, sizeof what, "rmsnorm rstd %dx%d", N, C);
        expect_close(what, get(d_rstd, (size_t)N * 4), rstd, N, 1e-5);
        snprintf(what, sizeof what, "rmsnorm backward (accumulating) %dx%d", N, C);
        expect_close(what, get(d_dx, nc * 4), dx, nc, 1e-5);
    }
    release_all();
}
END_TEST

START_TEST(rope)
{
    if (!need_gpu("rope")) return;
    enum { N = 50, HEADS = 3 };
    static const int hds[] = {64, 48, 128};
    for (size_t z = 0; z < sizeof hds / sizeof *hds; z++) {
        const int hd = hds[z], half = hd / 2;
        const size_t nt = (size_t)N * half, nx = (size_t)N * HEADS * hd;
        int32_t *pos = hbuf(N * sizeof *pos);
        for (int n = 0; n < N; n++) pos[n] = (n * 997) % 8192; /* large angles */
        float *inv_freq = fbuf(half);
        for (int i = 0; i < half; i++) inv_freq[i] = (float)pow(10000.0, -2.0 * i / hd);
        float *cos_t = fbuf(nt), *sin_t = fbuf(nt), *d_cos = poisoned(nt * 4), *d_sin = poisoned(nt * 4);
        cpu->rope_tables(cos_t, sin_t, pos, inv_freq, N, half);
        gpu->rope_tables(d_cos, d_sin, put(pos, N * sizeof *pos), put(inv_freq, (size_t)half * 4), N, half);
        char what[96];
        snprintf(what, sizeof what, "rope tables cos, hd %d, positions to 8191", hd);
        expect_close(what, get(d_cos, nt * 4), cos_t, nt, 1e-5);
        snprintf(what, sizeof what, "rope tables sin, hd %d", hd);
        expect_close(what, get(d_sin, nt * 4), sin_t, nt, 1e-5);
        /* The rotations from the CPU's tables, so they are tested on their own. */
        const float *dc = put(cos_t, nt * 4), *ds = put(sin_t, nt * 4);
        for (int backward = 0; backward < 2; backward++) {
            float *x = rand_floats(nx, -1, 1), *d_x = put(x, nx * 4);
            (backward ? cpu->rope_backward : cpu->rope_forward)(x, cos_t, sin_t, N, HEADS, hd);
            (backward ? gpu->rope_backward : gpu->rope_forward)(d_x, dc, ds, N, HEADS, hd);
            snprintf(what, sizeof what, "rope %s, hd %d", backward ? "backward" : "forward", hd);
            expect_close(what, get(d_x, nx * 4), x, nx, 1e-5);
        }
    }
    release_all();
}
END_TEST

/* start (B, T): each row cut into segments of pseudo-random lengths, or
 * one segment per row when unpacked. */
static int32_t *segment_starts(int B, int T, int packed)
{
    int32_t *start = hbuf((size_t)B * T * sizeof *start);
    for (int b = 0; b < B; b++) {
        int t = 0, seg = 0;
        while (t < T) {
            int len = T;
            if (packed) len = 1 + (int)(tune_rng_u32(77, (uint64_t)b, (uint64_t)seg++) % (uint32_t)(T / 3 + 1));
            for (int i = t; i < T && i < t + len; i++) start[(size_t)b * T + i] = t;
            t += len;
        }
    }
    return start;
}

static const struct attention_case {
    tune_attention_shape s;
    int packed;
} attention_cases[] = {
    {{2, 37, 4, 4, 64}, 1},  /* group 1 */
    {{2, 130, 6, 2, 32}, 1}, /* group 3, T past a 128 tile */
    {{2, 1, 4, 1, 48}, 1},   /* group 4, one token, hd not a multiple of 32 */
    {{2, 130, 8, 2, 64}, 0}, /* unpacked */
    {{2, 70, 8, 2, 48}, 1},
    {{2, 45, 4, 1, 128}, 1},
};

START_TEST(attention)
{
    if (!need_gpu("attention")) return;
    const struct attention_case *ac = &attention_cases[_i];
    const tune_attention_shape *s = &ac->s;
    const size_t nq = (size_t)s->B * s->T * s->H * s->hd, nkv = (size_t)s->B * s->T * s->Hkv * s->hd;
    const size_t nl = (size_t)s->B * s->H * s->T;
    const float *q = rand_floats(nq, -2, 2), *k = rand_floats(nkv, -2, 2), *v = rand_floats(nkv, -1, 1);
    const float *dout = rand_floats(nq, -1, 1);
    const int32_t *start = segment_starts(s->B, s->T, ac->packed);
    float *out = fbuf(nq), *lse = fbuf(nl), *dq = fbuf(nq), *dk = fbuf(nkv), *dv = fbuf(nkv);
    float *scratch = fbuf(cpu->attention_scratch(s, 1));
    cpu->attention_forward(out, lse, NULL, q, k, v, start, s, scratch, 1);
    cpu->attention_backward(dq, dk, dv, dout, q, k, v, out, lse, NULL, start, s, scratch, 1);

    const float *d_q = put(q, nq * 4), *d_k = put(k, nkv * 4), *d_v = put(v, nkv * 4), *d_dout = put(dout, nq * 4);
    const int32_t *d_start = put(start, (size_t)s->B * s->T * sizeof *start);
    float *d_out = poisoned(nq * 4), *d_lse = poisoned(nl * 4), *d_scratch = poisoned(gpu->attention_scratch(s, 1) * 4);
    ck_assert_uint_eq(gpu->attention_probs(s), 0); /* the kernels recompute them */
    gpu->attention_forward(d_out, d_lse, NULL, d_q, d_k, d_v, d_start, s, d_scratch, 1);
    float *g[2][3];
    for (int run = 0; run < 2; run++) { /* twice: the reruns must be bit-identical */
        for (int j = 0; j < 3; j++) g[run][j] = poisoned((j ? nkv : nq) * 4);
        gpu->attention_backward(g[run][0], g[run][1], g[run][2], d_dout, d_q, d_k, d_v, d_out, d_lse, NULL, d_start, s,
                                d_scratch, 1);
    }
    char what[128], shape[64];
    snprintf(shape, sizeof shape, "B%d T%d H%d Hkv%d hd%d%s", s->B, s->T, s->H, s->Hkv, s->hd,
             ac->packed ? " packed" : "");
    snprintf(what, sizeof what, "attention out %s", shape);
    expect_close(what, get(d_out, nq * 4), out, nq, 1e-5);
    snprintf(what, sizeof what, "attention lse %s", shape);
    expect_close(what, get(d_lse, nl * 4), lse, nl, 1e-5);
    const float *cpu_grads[3] = {dq, dk, dv};
    static const char *names[3] = {"dq", "dk", "dv"};
    for (int j = 0; j < 3; j++) {
        const size_t n = j ? nkv : nq;
        const float *first = get(g[0][j], n * 4);
        snprintf(what, sizeof what, "attention %s %s", names[j], shape);
        expect_close(what, first, cpu_grads[j], n, 1e-5);
        snprintf(what, sizeof what, "attention %s rerun %s", names[j], shape);
        expect_same(what, get(g[1][j], n * 4), first, n * 4);
    }
    release_all();
}
END_TEST

static const struct cached_case {
    tune_attention_shape s; /* s.T: the cache's capacity */
    int p0, n;
} cached_cases[] = {
    {{1, 40, 6, 2, 48}, 13, 5},
    {{1, 64, 4, 4, 64}, 1, 3},
    {{1, 50, 8, 2, 128}, 30, 20},
    {{1, 9, 4, 1, 32}, 8, 1},
};

START_TEST(attention_cached)
{
    if (!need_gpu("attention_cached")) return;
    const struct cached_case *cc = &cached_cases[_i];
    const tune_attention_shape *s = &cc->s;
    const size_t nq = (size_t)cc->n * s->H * s->hd, nkv = (size_t)s->T * s->Hkv * s->hd;
    const float *q = rand_floats(nq, -2, 2), *kc = rand_floats(nkv, -2, 2), *vc = rand_floats(nkv, -1, 1);
    float *att = fbuf(nq), *scratch = fbuf((size_t)s->T);
    cpu->attention_cached(att, q, kc, vc, cc->p0, cc->n, s, scratch, 1);
    float *d_att = poisoned(nq * 4);
    gpu->attention_cached(d_att, put(q, nq * 4), put(kc, nkv * 4), put(vc, nkv * 4), cc->p0, cc->n, s, NULL, 1);
    char what[96];
    snprintf(what, sizeof what, "attention cached p0 %d n %d H%d Hkv%d hd%d", cc->p0, cc->n, s->H, s->Hkv, s->hd);
    expect_close(what, get(d_att, nq * 4), att, nq, 1e-5);
    release_all();
}
END_TEST

/* CPU only: the CPU table's decoding attention against plain double maths. */
START_TEST(cpu_attention_cached_matches_double_reference)
{
    cpu = tune_backend_cpu();
    const struct cached_case *cc = &cached_cases[_i];
    const tune_attention_shape *s = &cc->s;
    const int H = s->H, hd = s->hd, group = s->H / s->Hkv;
    const size_t nq = (size_t)cc->n * H * hd, nkv = (size_t)s->T * s->Hkv * hd;
    const float *q = rand_floats(nq, -2, 2), *kc = rand_floats(nkv, -2, 2), *vc = rand_floats(nkv, -1, 1);
    float *att = fbuf(nq), *ref = fbuf(nq), *scratch = fbuf((size_t)s->T);
    double *p = hbuf((size_t)s->T * sizeof *p);
    cpu->attention_cached(att, q, kc, vc, cc->p0, cc->n, s, scratch, 1);
    for (int t = 0; t < cc->n; t++)
        for (int h = 0; h < H; h++) {
            const float *qv = q + ((size_t)t * H + h) * hd;
            const size_t off = (size_t)(h / group) * hd;
            const int nk = cc->p0 + t + 1;
            double m = -INFINITY, sum = 0.0;
            for (int j = 0; j < nk; j++) {
                double dot = 0.0;
                for (int i = 0; i < hd; i++) dot += (double)qv[i] * kc[(size_t)j * s->Hkv * hd + off + i];
                p[j] = dot / sqrt((double)hd);
                m = p[j] > m ? p[j] : m;
            }
            for (int j = 0; j < nk; j++) sum += p[j] = exp(p[j] - m);
            for (int i = 0; i < hd; i++) {
                double o = 0.0;
                for (int j = 0; j < nk; j++) o += p[j] / sum * vc[(size_t)j * s->Hkv * hd + off + i];
                ref[((size_t)t * H + h) * hd + i] = (float)o;
            }
        }
    char what[96];
    snprintf(what, sizeof what, "cpu attention cached vs double, p0 %d n %d", cc->p0, cc->n);
    expect_close(what, att, ref, nq, 1e-5);
    release_all(); /* host buffers only here */
}
END_TEST

START_TEST(swiglu)
{
    if (!need_gpu("swiglu")) return;
    const size_t n = 1031;
    const float *gate = rand_floats(n, -6, 6), *up = rand_floats(n, -2, 2), *dout = rand_floats(n, -1, 1);
    float *out = fbuf(n), *dgate = fbuf(n), *dup = fbuf(n);
    float *d_out = poisoned(n * 4), *d_dgate = poisoned(n * 4), *d_dup = poisoned(n * 4);
    const float *d_gate = put(gate, n * 4), *d_up = put(up, n * 4);
    cpu->swiglu_forward(out, gate, up, n);
    cpu->swiglu_backward(dgate, dup, NULL, dout, gate, up, n);
    gpu->swiglu_forward(d_out, d_gate, d_up, n);
    expect_close("swiglu forward", get(d_out, n * 4), out, n, 1e-5);
    float *d_again = poisoned(n * 4);
    gpu->swiglu_backward(d_dgate, d_dup, d_again, put(dout, n * 4), d_gate, d_up, n);
    expect_close("swiglu forward from the backward", get(d_again, n * 4), out, n, 0.0);
    expect_close("swiglu backward dgate", get(d_dgate, n * 4), dgate, n, 1e-5);
    expect_close("swiglu backward dup", get(d_dup, n * 4), dup, n, 1e-5);
    release_all();
}
END_TEST

START_TEST(cross_entropy)
{
    if (!need_gpu("cross_entropy")) return;
    static const struct { int N, V; } cases[] = {{13, 1000}, {9, 50000}, {3, 128256}};
    for (size_t z = 0; z < sizeof cases / sizeof *cases; z++) {
        const int N = cases[z].N, V = cases[z].V;
        const size_t nv = (size_t)N * V;
        float *logits = rand_floats(nv, -8, 8), *lse = fbuf(N);
        int32_t *target = hbuf(N * sizeof *target);
        for (int n = 0; n < N; n++)
            target[n] = n % 4 == 2 ? TUNE_IGNORE_INDEX : (int32_t)(tune_rng_u32(5, z, n) % (uint32_t)V);
        const double loss0 = 1.5;
        double loss = loss0, *rows = hbuf(N * sizeof *rows);
        const int32_t *d_target = put(target, N * sizeof *target);
        float *d_logits = put(logits, nv * 4), *d_lse[2];
        double *d_loss[2];
        for (int run = 0; run < 2; run++) { /* twice: the reruns must be bit-identical */
            d_lse[run] = poisoned((size_t)N * 4);
            double *d_rows = poisoned((size_t)N * sizeof *d_rows);
            d_loss[run] = put(&loss0, sizeof loss0);
            gpu->cross_entropy_forward(d_lse[run], d_rows, d_logits, d_target, N, V);
            gpu->add_sum(d_loss[run], d_rows, (size_t)N);
        }
        cpu->cross_entropy_forward(lse, rows, logits, target, N, V);
        cpu->add_sum(&loss, rows, (size_t)N);
        cpu->cross_entropy_backward(logits, lse, target, N, V, 0.37f);
        const float *g_lse = get(d_lse[0], (size_t)N * 4);
        const double *g_loss = get(d_loss[0], sizeof(double));
        char what[96];
        snprintf(what, sizeof what, "cross-entropy lse N %d V %d", N, V);
        expect_close(what, g_lse, lse, N, 1e-5);
        const double rel = fabs(*g_loss - loss) / fabs(loss);
        printf("%-56s rel err %.3g\n", "cross-entropy loss sum (added to 1.5)", rel);
        ck_assert_msg(rel <= 1e-5, "loss %.17g, cpu %.17g", *g_loss, loss);
        expect_same("cross-entropy lse rerun", get(d_lse[1], (size_t)N * 4), g_lse, (size_t)N * 4);
        expect_same("cross-entropy loss rerun", get(d_loss[1], sizeof(double)), g_loss, sizeof(double));
        gpu->cross_entropy_backward(d_logits, d_lse[0], d_target, N, V, 0.37f);
        snprintf(what, sizeof what, "cross-entropy backward N %d V %d", N, V);
        expect_close(what, get(d_logits, nv * 4), logits, nv, 1e-5);
    }
    release_all();
}
END_TEST

START_TEST(dropout_mask)
{
    if (!need_gpu("dropout_mask")) return;
    static const struct { uint64_t seed, stream, base; size_t n; float p; } cases[] = {
        {1, TUNE_STREAM_DROPOUT, 0, 1000, 0.1f},
        {123456789012345ULL, 7, 64, 77, 0.5f},
        {42, (1ULL << 33) + 5, 1ULL << 35, 4096 + 13, 0.05f},
        {0xdeadbeefcafeULL, 2, (1ULL << 34) - 64, 4096, 0.9f}, /* the block index crosses 2^32 */
        {9, 0, 32 * 1000, 31, 0.3f},
    };
    for (size_t z = 0; z < sizeof cases / sizeof *cases; z++) {
        const size_t words = (cases[z].n + 31) / 32;
        uint32_t *bits = hbuf(words * 4), *d_bits = poisoned(words * 4);
        cpu->dropout_mask(bits, cases[z].n, cases[z].p, cases[z].seed, cases[z].stream, cases[z].base);
        gpu->dropout_mask(d_bits, cases[z].n, cases[z].p, cases[z].seed, cases[z].stream, cases[z].base);
        char what[128];
        snprintf(what, sizeof what, "dropout mask seed %llu stream %llu base %llu n %zu",
                 (unsigned long long)cases[z].seed, (unsigned long long)cases[z].stream,
                 (unsigned long long)cases[z].base, cases[z].n);
        expect_same(what, get(d_bits, words * 4), bits, words * 4);
    }
    release_all();
}
END_TEST

START_TEST(dropout_apply)
{
    if (!need_gpu("dropout_apply")) return;
    const size_t n = 1005, words = (n + 31) / 32;
    uint32_t *bits = hbuf(words * 4);
    for (size_t w = 0; w < words; w++) bits[w] = tune_rng_u32(3, 4, w);
    const uint32_t *d_bits = put(bits, words * 4);
    for (int acc = 0; acc < 2; acc++) {
        const float *x = rand_floats(n, -1, 1);
        float *out = rand_floats(n, -1, 1), *d_out = acc ? put(out, n * 4) : poisoned(n * 4);
        cpu->dropout_apply(out, x, bits, n, 0.1f, acc);
        gpu->dropout_apply(d_out, put(x, n * 4), d_bits, n, 0.1f, acc);
        expect_same(acc ? "dropout apply, accumulating" : "dropout apply", get(d_out, n * 4), out, n * 4);
    }
    release_all();
}
END_TEST

START_TEST(adamw)
{
    if (!need_gpu("adamw")) return;
    const size_t n = 1000;
    for (int variant = 0; variant < 2; variant++) {
        const double lr = 1e-3, wd = 0.01, beta1 = variant ? 0.3 : 0.9, beta2 = 0.999;
        const int step = 3 + 10 * variant;
        const tune_adamw_coeffs c = {
            (float)(1.0 - lr * wd), (float)(1.0 - beta1), (float)beta2, (float)(1.0 - beta2),
            (float)sqrt(1.0 - pow(beta2, step)), (float)(-lr / (1.0 - pow(beta1, step))), 1e-8f,
        };
        float *p = rand_floats(n, -1, 1), *m = rand_floats(n, -0.1f, 0.1f), *v = rand_floats(n, 1e-6f, 1e-2f);
        const float *g = rand_floats(n, -1, 1);
        float *d_p = put(p, n * 4), *d_m = put(m, n * 4), *d_v = put(v, n * 4);
        cpu->adamw_update(p, m, v, g, n, &c);
        gpu->adamw_update(d_p, d_m, d_v, put(g, n * 4), n, &c);
        expect_close(variant ? "adamw params (lerp weight above 0.5)" : "adamw params", get(d_p, n * 4), p, n, 1e-6);
        expect_close("adamw exp_avg", get(d_m, n * 4), m, n, 1e-6);
        expect_close("adamw exp_avg_sq", get(d_v, n * 4), v, n, 1e-6);
    }
    release_all();
}
END_TEST

START_TEST(clip_grad_norm)
{
    if (!need_gpu("clip_grad_norm")) return;
    static const tune_span spans[] = {{0, 1000}, {1007, 3}, {1010, 0}, {1010, 4101}, {5200, 1}, {5210, 90}};
    const int n_spans = sizeof spans / sizeof *spans;
    const size_t n = 5300;
    static const float max_norms[] = {0.0f, 1.0f, 1000.0f};
    const tune_span *d_spans = put(spans, sizeof spans);
    for (size_t z = 0; z < sizeof max_norms / sizeof *max_norms; z++) {
        float *grads = rand_floats(n, -1, 1), *d_grads = put(grads, n * 4);
        const float norm = cpu->clip_grad_norm(grads, spans, n_spans, max_norms[z]);
        const float g_norm = gpu->clip_grad_norm(d_grads, d_spans, n_spans, max_norms[z]);
        char what[96];
        snprintf(what, sizeof what, "clip norm, max_norm %g", max_norms[z]);
        expect_close(what, &g_norm, &norm, 1, 1e-6);
        snprintf(what, sizeof what, "clip grads, max_norm %g", max_norms[z]);
        expect_close(what, get(d_grads, n * 4), grads, n, 1e-6);
    }
    release_all();
}
END_TEST

int main(void)
{
    Suite *s = suite_create("backend");
    TCase *c = tcase_create("cpu");
    tcase_add_loop_test(c, cpu_attention_cached_matches_double_reference, 0,
                        sizeof cached_cases / sizeof *cached_cases);
    suite_add_tcase(s, c);
    TCase *g = tcase_create("cuda against cpu");
    tcase_set_timeout(g, 300);
    tcase_add_test(g, matmul);
    tcase_add_test(g, embedding);
    tcase_add_test(g, weight_ops);
    tcase_add_test(g, rmsnorm);
    tcase_add_test(g, rope);
    tcase_add_loop_test(g, attention, 0, sizeof attention_cases / sizeof *attention_cases);
    tcase_add_loop_test(g, attention_cached, 0, sizeof cached_cases / sizeof *cached_cases);
    tcase_add_test(g, swiglu);
    tcase_add_test(g, cross_entropy);
    tcase_add_test(g, dropout_mask);
    tcase_add_test(g, dropout_apply);
    tcase_add_test(g, adamw);
    tcase_add_test(g, clip_grad_norm);
    suite_add_tcase(s, g);
    return run_suite(s);
}
