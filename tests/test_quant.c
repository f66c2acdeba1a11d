/* Storage types and block dequantisation: every type tune reads against the
 * gguf Python package's numpy dequantisation of random blocks, bit for bit,
 * and the table of block shapes. Goldens come from
 * tools/reference/make_quant_golden.py (GGUF types) and
 * tools/reference/make_nf4_golden.py (NF4, bitsandbytes) and
 * tools/reference/make_nf4_dq_golden.py (NF4 with double quantisation).
 *
 * Then the weights kept in blocks: the fast products against the plain
 * dequantise-then-multiply reference for every type, shape and path; rows
 * and whole-matrix dequantisation; the Q8_0 and NF4 quantisers against
 * ggml's and bitsandbytes' output and their error bounds; and models loaded
 * with each storage against the fp32 load. NF4_DQ (its absmax values in 8
 * bits, statistics after the rows) runs through all of it too. */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <string.h>

#include "testutil.h"
#include "tune/model.h"
#include "tune/quant.h"
#include "tune/rng.h"
#include "tune/util.h"

static const struct { uint32_t type; const char *name; int values, bytes; } types[] = {
    {TUNE_Q_F32, "F32", 1, 4},     {TUNE_Q_F16, "F16", 1, 2},     {TUNE_Q_BF16, "BF16", 1, 2},
    {TUNE_Q4_0, "Q4_0", 32, 18},   {TUNE_Q4_1, "Q4_1", 32, 20},   {TUNE_Q5_0, "Q5_0", 32, 22},
    {TUNE_Q5_1, "Q5_1", 32, 24},   {TUNE_Q8_0, "Q8_0", 32, 34},   {TUNE_Q2_K, "Q2_K", 256, 84},
    {TUNE_Q3_K, "Q3_K", 256, 110}, {TUNE_Q4_K, "Q4_K", 256, 144}, {TUNE_Q5_K, "Q5_K", 256, 176},
    {TUNE_Q6_K, "Q6_K", 256, 210},
};
#define N_TYPES (int)(sizeof types / sizeof types[0])

/* tests/data/quant/<name>, whole. */
static uint8_t *read_data(const char *name, size_t *len)
{
    char path[512];
    snprintf(path, sizeof path, "%s/quant/%s", test_data_dir(), name);
    char *data;
    tune_error err;
    ck_assert_msg(tune_read_file(path, &data, len, &err) == TUNE_OK, "%s", err.message);
    return (uint8_t *)data;
}

static uint32_t bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* Dequantises golden blocks as rows of rows_blocks blocks and compares every
 * value's bits with gguf's. */
static void check_type(int t, int row_blocks)
{
    char name[64];
    size_t n_raw, n_exp;
    snprintf(name, sizeof name, "blocks_%s.bin", types[t].name);
    uint8_t *raw = read_data(name, &n_raw);
    snprintf(name, sizeof name, "expected_%s.f32", types[t].name);
    uint8_t *exp_bytes = read_data(name, &n_exp);
    ck_assert_uint_eq(n_exp % 4, 0);
    const int n = (int)(n_exp / 4);
    float *want = malloc(n_exp), *got = malloc(n_exp);
    memcpy(want, exp_bytes, n_exp);
    ck_assert_int_eq(n % types[t].values, 0);
    ck_assert_uint_eq(tune_qtype_row_bytes(types[t].type, n), n_raw);

    const int cols = row_blocks * types[t].values;
    ck_assert_int_eq(n % cols, 0);
    const size_t row_bytes = tune_qtype_row_bytes(types[t].type, cols);
    for (int i = 0; i < n; i++) got[i] = NAN; /* a value never written shows */
    for (int r = 0; r < n / cols; r++)
        tune_dequant_row(types[t].type, raw + (size_t)r * row_bytes, got + (size_t)r * cols, cols);
    for (int i = 0; i < n; i++)
        ck_assert_msg(bits(got[i]) == bits(want[i]), "%s[%d] (rows of %d): %.9g (0x%08x), gguf gives %.9g (0x%08x)",
                      types[t].name, i, cols, got[i], bits(got[i]), want[i], bits(want[i]));
    free(raw);
    free(exp_bytes);
    free(want);
    free(got);
}

START_TEST(dequant_matches_gguf)
{
    /* _i: the type; the golden files as one row, then as rows of one block. */
    check_type(_i, 8 * (types[_i].values == 1 ? 8 : 1));
    check_type(_i, 1);
}
END_TEST

START_TEST(table_is_consistent)
{
    for (int t = 0; t < N_TYPES; t++) {
        const uint32_t ty = types[t].type;
        const int bv = types[t].values, bb = types[t].bytes;
        ck_assert_str_eq(tune_qtype_name(ty), types[t].name);
        ck_assert_int_eq(tune_qtype_block_values(ty), bv);
        ck_assert_int_eq(tune_qtype_block_bytes(ty), bb);
        ck_assert_uint_eq(tune_qtype_row_bytes(ty, 0), 0);
        for (int k = 1; k <= 5; k++) ck_assert_uint_eq(tune_qtype_row_bytes(ty, k * bv), (size_t)k * bb);
        /* 576 (SmolLM2's width) is 18 blocks of 32, not a whole number of 256. */
        ck_assert_uint_eq(tune_qtype_row_bytes(ty, 576), bv == 256 ? 0 : (size_t)(576 / bv) * bb);
        if (bv > 1) {
            ck_assert_uint_eq(tune_qtype_row_bytes(ty, bv + 1), 0);
            ck_assert_uint_eq(tune_qtype_row_bytes(ty, 3 * bv - 1), 0);
            ck_assert_uint_eq(tune_qtype_row_bytes(ty, bv / 2), 0);
        }
        ck_assert_uint_eq(tune_qtype_row_bytes(ty, -bv), 0);
    }
    /* NF4: blocks of 64 (codes two a byte; the absmax is handled with it). */
    ck_assert_str_eq(tune_qtype_name(TUNE_Q_NF4), "NF4");
    ck_assert_int_eq(tune_qtype_block_values(TUNE_Q_NF4), 64);
    const int nf4 = tune_qtype_block_bytes(TUNE_Q_NF4);
    ck_assert_int_ge(nf4, 32);
    ck_assert_uint_eq(tune_qtype_row_bytes(TUNE_Q_NF4, 128), 2 * (size_t)nf4);
    ck_assert_uint_eq(tune_qtype_row_bytes(TUNE_Q_NF4, 96), 0);

    /* Types tune cannot read: ggml's Q4_2/Q4_3 (removed), Q8_1, Q8_K, the IQ
     * quants, I8..F64, TQ1_0, MXFP4, and numbers nobody uses. */
    const uint32_t unknown[] = {4, 5, 9, 15, 16, 20, 23, 24, 28, 29, 31, 34, 39, 1023, 1026, UINT32_MAX};
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        ck_assert_ptr_null(tune_qtype_name(unknown[i]));
        ck_assert_int_eq(tune_qtype_block_values(unknown[i]), 0);
        ck_assert_int_eq(tune_qtype_block_bytes(unknown[i]), 0);
        ck_assert_uint_eq(tune_qtype_row_bytes(unknown[i], 256), 0);
    }
}
END_TEST

START_TEST(goldens_cover_the_scale_fields)
{
    /* The goldens are not degenerate: most values are nonzero and their
     * magnitudes span many binades (the f16 scales are random normal
     * halves), so a scale read from the wrong bytes, a d swapped with dmin
     * or a sub-block given its neighbour's scale shows. */
    for (int t = 3; t < N_TYPES; t++) {
        char name[64];
        size_t n_exp;
        snprintf(name, sizeof name, "expected_%s.f32", types[t].name);
        uint8_t *exp_bytes = read_data(name, &n_exp);
        int lo = 1000, hi = -1000, nonzero = 0;
        for (size_t i = 0; i < n_exp / 4; i++) {
            float v;
            memcpy(&v, exp_bytes + 4 * i, 4);
            ck_assert(isfinite(v));
            if (v == 0) continue;
            nonzero++;
            int e;
            frexpf(v, &e);
            lo = e < lo ? e : lo;
            hi = e > hi ? e : hi;
        }
        ck_assert_int_gt(nonzero, (int)(n_exp / 4) / 2);
        ck_assert_msg(hi - lo >= 10, "%s: exponents %d..%d", types[t].name, lo, hi);
        free(exp_bytes);
    }
}
END_TEST

START_TEST(q8_0_quantiser_golden_is_ggml_rounding)
{
    /* The golden for tune's Q8_0 quantiser: 8 blocks of 32 floats and the
     * 8 × 34 bytes gguf's port of ggml's reference quantiser makes of them.
     * Block 6 has absmax 127, so d = 1 and its values round half away from
     * zero: 0.5 → 1, -0.5 → -1, 1.5 → 2, 2.5 → 3, 0.49999997 → 0. */
    size_t n_in, n_out;
    uint8_t *in = read_data("q8_0_quantize_in.f32", &n_in);
    uint8_t *out = read_data("q8_0_quantize_out.bin", &n_out);
    ck_assert_uint_eq(n_in, 256 * 4);
    ck_assert_uint_eq(n_out, tune_qtype_row_bytes(TUNE_Q8_0, 256));
    const uint8_t *b6 = out + 6 * 34;
    ck_assert_uint_eq(tune_load_u16(b6), 0x3c00); /* f16 1.0 */
    const int8_t want[12] = {127, 1, -1, 2, -2, 3, -3, 63, -63, 127, -127, 0};
    for (int j = 0; j < 12; j++) ck_assert_int_eq((int8_t)b6[2 + j], want[j]);
    /* The zero block: d = 0 and every q = 0. */
    for (int j = 0; j < 34; j++) ck_assert_uint_eq(out[4 * 34 + j], 0);
    /* Dequantised, every value is within one step (q·d rounds x/d, d is an f16). */
    float x[256], y[256];
    memcpy(x, in, sizeof x);
    tune_dequant_row(TUNE_Q8_0, out, y, 256);
    for (int b = 0; b < 8; b++) {
        if (b == 5) continue; /* d is an f16 subnormal there: only roughly right */
        float d = tune_f16_to_f32(tune_load_u16(out + 34 * b));
        for (int j = 0; j < 32; j++) ck_assert_float_le(fabsf(y[32 * b + j] - x[32 * b + j]), d);
    }
    free(in);
    free(out);
}
END_TEST

/* ---- Weights kept in blocks ------------------------------------------------ */

/* Test randomness: the project's Philox stream, word by word. */
typedef struct test_rng {
    uint64_t seed, index;
} test_rng;

static uint32_t rng_u32(test_rng *r) { return tune_rng_u32(r->seed, 0, r->index++); }

static float rng_uniform(test_rng *r) { return tune_rng_word_to_uniform(rng_u32(r)); } /* (0, 1] */

static float rng_normal(test_rng *r)
{
    const float u = rng_uniform(r), v = rng_uniform(r);
    return sqrtf(-2.0f * logf(u)) * cosf(6.2831853f * v);
}

/* The weights the products run on: every block type as random bytes with
 * sane scales, Q8_0 and NF4 also as their quantisers make them from normal
 * values, and fp32 (BLAS straight). */
static const struct { uint32_t type; const char *name; int quantised; } wtypes[] = {
    {TUNE_Q_F32, "F32", 0},   {TUNE_Q4_0, "Q4_0", 0}, {TUNE_Q4_1, "Q4_1", 0}, {TUNE_Q5_0, "Q5_0", 0},
    {TUNE_Q5_1, "Q5_1", 0},   {TUNE_Q8_0, "Q8_0", 0}, {TUNE_Q2_K, "Q2_K", 0}, {TUNE_Q3_K, "Q3_K", 0},
    {TUNE_Q4_K, "Q4_K", 0},   {TUNE_Q5_K, "Q5_K", 0}, {TUNE_Q6_K, "Q6_K", 0}, {TUNE_Q_NF4, "NF4", 0},
    {TUNE_Q8_0, "Q8_0 quantised", 1}, {TUNE_Q_NF4, "NF4 quantised", 1}, {TUNE_Q_NF4_DQ, "NF4_DQ quantised", 1},
};
#define N_WTYPES (int)(sizeof wtypes / sizeof wtypes[0])

/* Byte offsets of a block's f16 scale fields (d, m, dmin), as
 * make_quant_golden.py lists them; -1 ends a list. */
static const int *scale_fields(uint32_t type)
{
    static const int d[] = {0, -1}, dm[] = {0, 2, -1}, q2k[] = {80, 82, -1}, q3k[] = {108, -1}, q6k[] = {208, -1},
                     none[] = {-1};
    switch (type) {
    case TUNE_Q4_0: case TUNE_Q5_0: case TUNE_Q8_0: return d;
    case TUNE_Q4_1: case TUNE_Q5_1: case TUNE_Q4_K: case TUNE_Q5_K: return dm;
    case TUNE_Q2_K: return q2k;
    case TUNE_Q3_K: return q3k;
    case TUNE_Q6_K: return q6k;
    default: return none;
    }
}

/* A random f16 of either sign with magnitude in [2^-5, 2^5). */
static uint16_t sane_f16(test_rng *r)
{
    const uint32_t u = rng_u32(r);
    return (uint16_t)((u & 1) << 15 | (10 + (u >> 1) % 10) << 10 | ((u >> 8) & 1023));
}

/* A (rows, cols) weight of wtypes[t], random; free with free_weight. */
static tune_weight random_weight(int t, int rows, int cols, test_rng *r)
{
    const uint32_t type = wtypes[t].type;
    tune_weight w = {.type = type, .rows = rows, .cols = cols};
    if (type == TUNE_Q_F32) {
        w.f32 = malloc((size_t)rows * cols * sizeof *w.f32);
        for (size_t i = 0; i < (size_t)rows * cols; i++) w.f32[i] = rng_normal(r);
        return w;
    }
    const size_t rb = tune_qtype_row_bytes(type, cols), n = (size_t)rows * rb;
    ck_assert_uint_gt(rb, 0);
    w.blocks = malloc(tune_weight_bytes(&w));
    if (wtypes[t].quantised) {
        float *x = malloc((size_t)rows * cols * sizeof *x);
        for (int i = 0; i < rows; i++) {
            const float scale = i % 3 == 0 ? 0.02f : i % 3 == 1 ? 1.0f : 30.0f;
            for (int j = 0; j < cols; j++) x[(size_t)i * cols + j] = scale * rng_normal(r);
        }
        tune_quantize_rows(type, x, w.blocks, rows, cols);
        free(x);
        return w;
    }
    for (size_t i = 0; i < n; i += 4) {
        const uint32_t u = rng_u32(r);
        for (size_t k = 0; k < 4 && i + k < n; k++) w.blocks[i + k] = (uint8_t)(u >> (8 * k));
    }
    const size_t bb = (size_t)tune_qtype_block_bytes(type);
    for (uint8_t *blk = w.blocks; blk < w.blocks + n; blk += bb) {
        if (type == TUNE_Q_NF4) { /* the f32 absmax */
            const float a = 0.05f + 2.0f * rng_uniform(r);
            memcpy(blk, &a, 4);
            continue;
        }
        for (const int *f = scale_fields(type); *f >= 0; f++) {
            const uint16_t h = sane_f16(r);
            blk[*f] = (uint8_t)h, blk[*f + 1] = (uint8_t)(h >> 8);
        }
    }
    return w;
}

static void free_weight(tune_weight *w)
{
    free(w->f32);
    free(w->blocks);
}

/* Row i of w in fp32 through the per-block maths of tune/quant.h (the plain
 * reference, whatever fast paths tune_dequant_row or the products take);
 * NF4_DQ's block b of row i is block i · cols / 64 + b of the matrix. */
static void ref_row(const tune_weight *w, int i, float *y)
{
    if (w->type == TUNE_Q_F32) {
        memcpy(y, w->f32 + (size_t)i * w->cols, (size_t)w->cols * sizeof *y);
        return;
    }
    const int bv = tune_qtype_block_values(w->type), bb = tune_qtype_block_bytes(w->type), nb = w->cols / bv;
    const size_t rb = tune_qtype_row_bytes(w->type, w->cols);
    const uint8_t *row = w->blocks + (size_t)i * rb, *stats = w->blocks + (size_t)w->rows * rb;
    for (int b = 0; b < nb; b++) {
        if (w->type == TUNE_Q_NF4_DQ)
            tune_dequant_nf4_dq(tune_nf4_dq_code, stats, (size_t)i * nb + b, row + (size_t)b * bb, y + (size_t)b * bv);
        else
            tune_dequant_block(w->type, row + (size_t)b * bb, y + (size_t)b * bv);
    }
}

/* One product y = beta·y + x·Wᵀ (trans 0) or x·W (trans 1) of
 * tune_weight_matmul against tune_weight_matmul_ref (itself checked against
 * the product in double of W dequantised row by row). Every output is within
 * 1e-5 · scale + 1e-6, where scale = Σ|x_k·w_k| + |beta·y| is what fp32
 * rounding of the sum is proportional to; one wrong weight of a row of K
 * moves an output by about scale / K, above the bound for every K here.
 * With beta 0, y holds NaN before: it must not be read. At 1 and at 2
 * threads, two runs are bit-identical. Returns the worst |err| / scale. */
static double check_product(const tune_weight *w, const char *name, int N, int trans, float beta, test_rng *r)
{
    const int K = trans ? w->rows : w->cols, M = trans ? w->cols : w->rows;
    const size_t nx = (size_t)N * K, ny = (size_t)N * M;
    float *x = malloc(nx * sizeof *x), *y0 = malloc(ny * sizeof *y0), *want = malloc(ny * sizeof *want);
    float *got[2] = {malloc(ny * sizeof(float)), malloc(ny * sizeof(float))};
    float *full = malloc((size_t)w->rows * w->cols * sizeof *full); /* (rows, cols) */
    double *scale = malloc(ny * sizeof *scale), *dot = malloc(ny * sizeof *dot);
    for (size_t i = 0; i < nx; i++) x[i] = rng_normal(r);
    for (size_t i = 0; i < ny; i++) y0[i] = beta == 0.0f ? NAN : rng_normal(r);
    /* W row by row through the per-block maths (not the product code's own
     * dequantisation), then y and the scale in double. */
    for (int i = 0; i < w->rows; i++) ref_row(w, i, full + (size_t)i * w->cols);
    for (int n = 0; n < N; n++) { /* loops in memory order: full is (K, M) for trans 1, (M, K) for trans 0 */
        const float *xn = x + (size_t)n * K;
        double *sn = scale + (size_t)n * M, *dn = dot + (size_t)n * M;
        for (int m = 0; m < M; m++) sn[m] = dn[m] = 0.0;
        for (int k = 0; trans && k < K; k++)
            for (int m = 0; m < M; m++) {
                const double p = (double)xn[k] * full[(size_t)k * M + m];
                dn[m] += p, sn[m] += fabs(p);
            }
        for (int m = 0; !trans && m < M; m++)
            for (int k = 0; k < K; k++) {
                const double p = (double)xn[k] * full[(size_t)m * K + k];
                dn[m] += p, sn[m] += fabs(p);
            }
        for (int m = 0; m < M && beta != 0.0f; m++) {
            dn[m] += (double)beta * y0[(size_t)n * M + m];
            sn[m] += fabs((double)beta * y0[(size_t)n * M + m]);
        }
    }
    /* The reference is that product, rounded (to float, then the beta term). */
    memcpy(want, y0, ny * sizeof *want);
    tune_weight_matmul_ref(want, x, w, N, trans, beta);
    for (size_t i = 0; i < ny; i++)
        ck_assert_msg(fabs(want[i] - dot[i]) <= 1e-6 * scale[i], "%s (%d, %d) N %d trans %d beta %g: reference y[%zu][%zu] "
                      "= %.9g, the product in double %.9g", name, w->rows, w->cols, N, trans, beta, i / M, i % M,
                      want[i], dot[i]);
    double worst = 0.0;
    for (int threads = 1; threads <= 2; threads++) {
        omp_set_num_threads(threads);
        for (int run = 0; run < 2; run++) {
            memcpy(got[run], y0, ny * sizeof(float));
            tune_weight_matmul(got[run], x, w, N, trans, beta);
        }
        ck_assert_msg(memcmp(got[0], got[1], ny * sizeof(float)) == 0,
                      "%s (%d, %d) N %d trans %d beta %g, %d threads: two runs differ", name, w->rows, w->cols, N,
                      trans, beta, threads);
        for (size_t i = 0; i < ny; i++) {
            const double err = fabs((double)got[0][i] - want[i]);
            ck_assert_msg(isfinite(want[i]) && isfinite(got[0][i]) && err <= 1e-5 * scale[i] + 1e-6,
                          "%s (%d, %d) N %d trans %d beta %g, %d threads: y[%zu][%zu] = %.9g, reference %.9g "
                          "(|err| %.3g, bound %.3g)",
                          name, w->rows, w->cols, N, trans, beta, threads, i / M, i % M, got[0][i], want[i], err,
                          1e-5 * scale[i] + 1e-6);
            if (err / scale[i] > worst) worst = err / scale[i];
        }
    }
    free(x), free(y0), free(want), free(got[0]), free(got[1]), free(full), free(scale), free(dot);
    return worst;
}

START_TEST(products_match_reference)
{
    /* _i: the weight type. Rows not a multiple of 16, and fewer than 16;
     * 300 rows of 512 are two threads' slices of unequal length (trans 0);
     * 576 columns (SmolLM2's width) are 18 blocks of 32, 9 of 64 and no
     * whole number of 128 or 256 (not for the K-quants). N ≤ 8 takes the
     * dot-product path (trans 0), above it the tiled BLAS path; 40 rows of
     * x are two threads' slices of 32 and 8 (trans 1). Products over
     * several tiles: products_over_tiles_match_reference. NF4_DQ's
     * groups of 256 blocks span rows in (33, 768) and (45, 576); 8192
     * columns are 128 of its blocks, two chunks of its AVX-512 kernels. */
    static const int shapes[][2] = {{70, 512}, {33, 768}, {300, 512}, {37, 2048}, {45, 576}, {5, 256}, {3, 8192}};
    static const int Ns[] = {1, 3, 8, 9, 40};
    const int saved_threads = omp_get_max_threads();
    test_rng r = {1000 + (uint64_t)_i, 0};
    double worst = 0.0;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        if (wtypes[_i].type != TUNE_Q_F32 && !tune_qtype_row_bytes(wtypes[_i].type, shapes[s][1])) continue;
        tune_weight w = random_weight(_i, shapes[s][0], shapes[s][1], &r);
        for (size_t k = 0; k < sizeof Ns / sizeof Ns[0]; k++)
            for (int trans = 0; trans <= 1; trans++)
                for (int b = 0; b <= 1; b++) {
                    const double e = check_product(&w, wtypes[_i].name, Ns[k], trans, b ? 0.5f : 0.0f, &r);
                    worst = e > worst ? e : worst;
                }
        free_weight(&w);
    }
    omp_set_num_threads(saved_threads);
    printf("weight product %-15s worst |err| / sum|x*w| %.3g (bound 1e-5)\n", wtypes[_i].name, worst);
}
END_TEST

START_TEST(products_over_tiles_match_reference)
{
    /* The tiling is the same for every block type; two of them. 2060 rows
     * of 256 are two tiles of W (2048 + 12 rows), added in order into y
     * (beta on the first only). 520 rows of x take the split by rows of x
     * (two threads' slices of 272 and 248; trans 1: both tiles), 40 the
     * split by rows of W: trans 0 by slices of W's rows, trans 1 by two
     * halves of W, the second added after. 4200 rows make each half two
     * tiles (2048 + 64); the halves' sum is the same bits at 1 and 2
     * threads. */
    static const uint32_t types[] = {TUNE_Q8_0, TUNE_Q4_K};
    const int saved_threads = omp_get_max_threads();
    test_rng r = {3000, 0};
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        int wi = 0;
        while (wtypes[wi].type != types[t] || wtypes[wi].quantised) wi++;
        tune_weight w = random_weight(wi, 2060, 256, &r);
        check_product(&w, wtypes[wi].name, 520, 0, 0.5f, &r);
        check_product(&w, wtypes[wi].name, 520, 1, 0.5f, &r);
        check_product(&w, wtypes[wi].name, 40, 0, 0.0f, &r);
        check_product(&w, wtypes[wi].name, 40, 1, 0.5f, &r);
        free_weight(&w);
        w = random_weight(wi, 4200, 256, &r);
        check_product(&w, wtypes[wi].name, 40, 1, 0.0f, &r);
        enum { N = 40 };
        float *x = malloc((size_t)N * 4200 * sizeof *x), *y[2];
        for (size_t i = 0; i < (size_t)N * 4200; i++) x[i] = rng_normal(&r);
        for (int threads = 1; threads <= 2; threads++) {
            omp_set_num_threads(threads);
            y[threads - 1] = malloc((size_t)N * 256 * sizeof(float));
            tune_weight_matmul(y[threads - 1], x, &w, N, 1, 0.0f);
        }
        ck_assert_msg(memcmp(y[0], y[1], (size_t)N * 256 * sizeof(float)) == 0,
                      "%s: the halves' product differs between 1 and 2 threads", wtypes[wi].name);
        free(x), free(y[0]), free(y[1]);
        free_weight(&w);
    }
    omp_set_num_threads(saved_threads);
}
END_TEST

START_TEST(rows_and_dequantize_match_dequant_row)
{
    /* tune_weight_row, tune_dequant_row (rows that stand alone), tune_weight_rows
     * (80 ids × 512: the parallel loop) and tune_weight_dequantize give the
     * per-block maths of each row, bit for bit. */
    enum { ROWS = 70, COLS = 512, N = 80 };
    test_rng r = {2000 + (uint64_t)_i, 0};
    tune_weight w = random_weight(_i, ROWS, COLS, &r);
    const uint8_t *src = w.type == TUNE_Q_F32 ? (const uint8_t *)w.f32 : w.blocks;
    const size_t rb = w.type == TUNE_Q_F32 ? COLS * sizeof(float) : tune_qtype_row_bytes(w.type, COLS);
    int32_t ids[N] = {0, ROWS - 1, 5, 5, ROWS - 2, 1};
    for (int n = 6; n < N; n++) ids[n] = (int32_t)(rng_u32(&r) % ROWS);
    float *out = malloc((size_t)N * COLS * sizeof *out), *full = malloc((size_t)ROWS * COLS * sizeof *full);
    float want[COLS], row[COLS];
    for (size_t i = 0; i < (size_t)N * COLS; i++) out[i] = NAN;
    for (size_t i = 0; i < (size_t)ROWS * COLS; i++) full[i] = NAN;
    tune_weight_rows(out, &w, ids, N);
    tune_weight_dequantize(&w, full);
    for (int n = 0; n < N; n++) {
        ref_row(&w, ids[n], want);
        ck_assert_msg(memcmp(out + (size_t)n * COLS, want, sizeof want) == 0, "%s: row %d (id %d)", wtypes[_i].name,
                      n, ids[n]);
    }
    for (int i = 0; i < ROWS; i++) {
        ref_row(&w, i, want);
        for (int j = 0; j < COLS; j++) ck_assert(isfinite(want[j]));
        ck_assert_msg(memcmp(full + (size_t)i * COLS, want, sizeof want) == 0, "%s: dequantised row %d",
                      wtypes[_i].name, i);
        for (int j = 0; j < COLS; j++) row[j] = NAN;
        tune_weight_row(&w, i, row);
        ck_assert_msg(memcmp(row, want, sizeof want) == 0, "%s: tune_weight_row of row %d", wtypes[_i].name, i);
        if (w.type == TUNE_Q_NF4_DQ) continue;
        for (int j = 0; j < COLS; j++) row[j] = NAN;
        tune_dequant_row(w.type, src + (size_t)i * rb, row, COLS);
        ck_assert_msg(memcmp(row, want, sizeof want) == 0, "%s: tune_dequant_row of row %d", wtypes[_i].name, i);
    }
    free(out);
    free(full);
    free_weight(&w);
}
END_TEST

START_TEST(q8_0_quantiser_matches_ggml)
{
    /* tune_quantize_row(Q8_0) writes the bytes gguf's port of ggml's
     * reference quantiser wrote, as one row of 8 blocks and as 8 rows of one. */
    size_t n_in, n_out;
    uint8_t *in = read_data("q8_0_quantize_in.f32", &n_in);
    uint8_t *want = read_data("q8_0_quantize_out.bin", &n_out);
    ck_assert_uint_eq(n_in, 256 * 4);
    ck_assert_uint_eq(n_out, 8 * 34);
    float x[256];
    uint8_t got[8 * 34];
    memcpy(x, in, sizeof x);
    for (int pass = 0; pass < 2; pass++) {
        memset(got, 0xa5, sizeof got);
        if (pass == 0) tune_quantize_row(TUNE_Q8_0, x, got, 256);
        else
            for (int b = 0; b < 8; b++) tune_quantize_row(TUNE_Q8_0, x + 32 * b, got + 34 * b, 32);
        for (int i = 0; i < 8 * 34; i++)
            ck_assert_msg(got[i] == want[i], "pass %d: block %d byte %d: tune 0x%02x, ggml 0x%02x", pass, i / 34,
                          i % 34, got[i], want[i]);
    }
    free(in);
    free(want);
}
END_TEST

static const float nf4_table[16] = TUNE_NF4_VALUES;

/* bitsandbytes' two rules for the code of s = x · (1 / absmax): its CPU
 * backend (quantize_4bit in PyTorch) counts the float32 midpoints
 * (table[i] + table[i+1]) / 2 below s; its CUDA kernel (dQuantizeNF4)
 * counts the float literals it is written with, four of which are the
 * float next to that midpoint. */
static int nf4_code_cpu_rule(float s)
{
    int c = 0;
    while (c < 15 && s > (nf4_table[c] + nf4_table[c + 1]) / 2) c++;
    return c;
}

static int nf4_code_cuda_rule(float s)
{
    static const float literals[15] = {
        -0.8480964004993439f, -0.6106329262256622f, -0.4599952697753906f, -0.33967943489551544f,
        -0.23460740596055984f, -0.13791173323988914f, -0.045525018125772476f, 0.03979014977812767f,
        0.1202552504837513f, 0.2035212516784668f, 0.2920137718319893f, 0.3893125355243683f,
        0.5016634166240692f, 0.6427869200706482f, 0.8614784181118011f,
    };
    int c = 0;
    for (int i = 0; i < 15; i++) c += s > literals[i];
    return c;
}

START_TEST(nf4_quantiser_matches_bitsandbytes)
{
    /* bitsandbytes' quantize_4bit(blocksize 64, nf4) of a (4, 256) tensor on
     * the CPU: its packed codes (the flattened tensor two a byte, first value
     * in the high nibble) and absmax are what tune_quantize_row(NF4) makes,
     * row by row; its dequantize_4bit values are tune_dequant_row's, bit for
     * bit. The exception: four values of the golden's tie block sit exactly
     * between a float32 midpoint and the CUDA kernel's literal for it, where
     * bitsandbytes' CPU and CUDA backends give neighbouring codes; there
     * either code is bitsandbytes' (make_nf4_golden.py). */
    enum { ROWS = 4, COLS = 256, BLOCKS = ROWS * COLS / 64 };
    size_t n_in, n_codes, n_absmax, n_deq;
    uint8_t *in = read_data("nf4_in.f32", &n_in), *codes = read_data("nf4_codes.bin", &n_codes);
    uint8_t *absmax_bytes = read_data("nf4_absmax.f32", &n_absmax), *deq_bytes = read_data("nf4_dequant.f32", &n_deq);
    ck_assert_uint_eq(n_in, ROWS * COLS * 4);
    ck_assert_uint_eq(n_codes, ROWS * COLS / 2);
    ck_assert_uint_eq(n_absmax, BLOCKS * 4);
    ck_assert_uint_eq(n_deq, ROWS * COLS * 4);
    ck_assert_int_eq(tune_qtype_block_bytes(TUNE_Q_NF4), 36);
    ck_assert_uint_eq(tune_qtype_row_bytes(TUNE_Q_NF4, COLS), 4 * 36);
    float x[ROWS * COLS], absmax[BLOCKS], deq[ROWS * COLS], y[ROWS * COLS];
    memcpy(x, in, sizeof x);
    memcpy(absmax, absmax_bytes, sizeof absmax);
    memcpy(deq, deq_bytes, sizeof deq);

    uint8_t bnb[BLOCKS * 36], got[BLOCKS * 36]; /* bitsandbytes' blocks in tune's layout */
    for (int b = 0; b < BLOCKS; b++) {
        memcpy(bnb + 36 * b, &absmax[b], 4);
        memcpy(bnb + 36 * b + 4, codes + 32 * b, 32);
    }
    memset(got, 0xa5, sizeof got);
    for (int i = 0; i < ROWS; i++) tune_quantize_row(TUNE_Q_NF4, x + i * COLS, got + i * 4 * 36, COLS);
    int disputed = 0;
    for (int b = 0; b < BLOCKS; b++) {
        ck_assert_msg(memcmp(got + 36 * b, bnb + 36 * b, 4) == 0, "block %d: absmax %.9g, bitsandbytes %.9g", b,
                      *(float *)(void *)(got + 36 * b), absmax[b]);
        const float inv = absmax[b] > 0 ? 1.0f / absmax[b] : 0.0f;
        for (int j = 0; j < 64; j++) {
            const int shift = j % 2 ? 0 : 4, c = (got[36 * b + 4 + j / 2] >> shift) & 15,
                      want = (bnb[36 * b + 4 + j / 2] >> shift) & 15;
            const float s = x[64 * b + j] * inv;
            ck_assert_int_eq(nf4_code_cpu_rule(s), want); /* the rule is bitsandbytes' CPU rule */
            const int cuda = nf4_code_cuda_rule(s);
            disputed += cuda != want;
            ck_assert_msg(c == want || c == cuda,
                          "block %d value %d: x %.9g (x / absmax %.9g): code %d, bitsandbytes %d (CUDA rule %d)", b, j,
                          x[64 * b + j], s, c, want, cuda);
        }
    }
    ck_assert_int_eq(disputed, 4);
    for (int i = 0; i < ROWS; i++) tune_dequant_row(TUNE_Q_NF4, bnb + i * 4 * 36, y + i * COLS, COLS);
    for (int i = 0; i < ROWS * COLS; i++)
        ck_assert_msg(bits(y[i]) == bits(deq[i]), "value %d: %.9g, bitsandbytes %.9g", i, y[i], deq[i]);

    /* The golden's special blocks (make_nf4_golden.py): an all-zero block
     * (absmax 0, every code 7), a block holding ±absmax (codes 15 and 0),
     * and one with absmax 1 whose first 15 values sit on the decision points
     * (the lower code), the next 15 a float below them, the next 15 a float
     * above (the upper code). */
    const uint8_t *zero = bnb + 36 * (1 * 4 + 2), *pm = bnb + 36 * (2 * 4 + 1), *ties = bnb + 36 * (3 * 4 + 3);
    ck_assert_uint_eq(tune_load_u32(zero), 0);
    for (int j = 0; j < 32; j++) ck_assert_uint_eq(zero[4 + j], 0x77);
    ck_assert_float_eq(absmax[2 * 4 + 1], 0.375f);
    ck_assert_int_eq(pm[4 + 5 / 2] & 15, 15);
    ck_assert_int_eq(pm[4 + 40 / 2] >> 4, 0);
    ck_assert_float_eq(absmax[3 * 4 + 3], 1.0f);
    for (int j = 0; j < 45; j++) {
        const int c = (ties[4 + j / 2] >> (j % 2 ? 0 : 4)) & 15;
        ck_assert_int_eq(c, j < 30 ? j % 15 : j - 30 + 1);
        if (j < 15) ck_assert_float_eq(x[64 * 15 + j], (nf4_table[j] + nf4_table[j + 1]) / 2);
    }
    free(in);
    free(codes);
    free(absmax_bytes);
    free(deq_bytes);
}
END_TEST

START_TEST(nf4_dq_matches_bitsandbytes)
{
    /* bitsandbytes' quantize_4bit(blocksize 64, nf4, compress_statistics) of
     * an (88, 192) tensor on the CPU (make_nf4_dq_golden.py): 264 blocks,
     * three a row, so its second group of 256 blocks starts inside row 85
     * and holds 8. In tune's layout (block i: its uint8 absmax q, then its 32
     * code bytes; after the rows the offset and the two absmax2) these are
     * the bytes tune_quantize_rows(NF4_DQ) makes, and tune_weight_row and
     * tune_weight_dequantize give dequantize_4bit's values bit for bit. The
     * code table is bitsandbytes' create_dynamic_map(). */
    enum { ROWS = 88, COLS = 192, BLOCKS = ROWS * COLS / 64 };
    size_t n_in, n_codes, n_q, n_stats, n_code2, n_deq;
    uint8_t *in = read_data("nf4dq_in.f32", &n_in), *codes = read_data("nf4dq_codes.bin", &n_codes);
    uint8_t *q = read_data("nf4dq_qabsmax.bin", &n_q), *stats = read_data("nf4dq_stats.f32", &n_stats);
    uint8_t *code2 = read_data("nf4dq_code.f32", &n_code2), *deq = read_data("nf4dq_dequant.f32", &n_deq);
    ck_assert_uint_eq(n_in, ROWS * COLS * 4);
    ck_assert_uint_eq(n_codes, ROWS * COLS / 2);
    ck_assert_uint_eq(n_q, BLOCKS);
    ck_assert_uint_eq(n_stats, 3 * 4);
    ck_assert_uint_eq(n_code2, 256 * 4);
    ck_assert_uint_eq(n_deq, ROWS * COLS * 4);
    for (int k = 0; k < 256; k++)
        ck_assert_msg(bits(tune_nf4_dq_code[k]) == tune_load_u32(code2 + 4 * k), "code %d: %.9g", k,
                      tune_nf4_dq_code[k]);

    tune_weight w = {.type = TUNE_Q_NF4_DQ, .rows = ROWS, .cols = COLS};
    const size_t bytes = tune_weight_bytes(&w);
    ck_assert_uint_eq(tune_qtype_row_bytes(TUNE_Q_NF4_DQ, COLS), 3 * 33);
    ck_assert_uint_eq(bytes, BLOCKS * 33 + n_stats);
    uint8_t *bnb = malloc(bytes), *got = malloc(bytes);
    for (int i = 0; i < BLOCKS; i++) {
        bnb[33 * i] = q[i];
        memcpy(bnb + 33 * i + 1, codes + 32 * i, 32);
    }
    memcpy(bnb + BLOCKS * 33, stats, n_stats);
    float *x = malloc(n_in), *y = malloc(n_in);
    memcpy(x, in, n_in);
    memset(got, 0xa5, bytes);
    tune_quantize_rows(TUNE_Q_NF4_DQ, x, got, ROWS, COLS);
    for (size_t i = 0; i < bytes; i++)
        ck_assert_msg(got[i] == bnb[i], "byte %zu (block %zu, byte %zu): tune 0x%02x, bitsandbytes 0x%02x", i, i / 33,
                      i % 33, got[i], bnb[i]);
    ck_assert_int_eq(q[100], 255); /* the group's largest |absmax - offset| */

    w.blocks = bnb;
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < ROWS * COLS; i++) y[i] = NAN;
        if (pass == 0)
            for (int r = 0; r < ROWS; r++) tune_weight_row(&w, r, y + r * COLS);
        else
            tune_weight_dequantize(&w, y);
        for (int i = 0; i < ROWS * COLS; i++)
            ck_assert_msg(bits(y[i]) == tune_load_u32(deq + 4 * i), "%s: value %d: %.9g, bitsandbytes %.9g",
                          pass ? "tune_weight_dequantize" : "tune_weight_row", i, y[i],
                          (double)*(float *)(void *)(deq + 4 * i));
    }
    free(in), free(codes), free(q), free(stats), free(code2), free(deq), free(bnb), free(got), free(x), free(y);
}
END_TEST

START_TEST(nf4_dq_saves_bytes)
{
    /* A Llama-3.2-1B MLP matrix (8192, 2048): 262144 blocks of 64, 36 bytes
     * each as NF4, 33 as NF4_DQ plus 4 · (1 + 1024) bytes of statistics:
     * 4.127 bits a weight instead of 4.5, 0.373 less, as the QLoRA paper
     * counts it. Other types keep nothing after their rows. */
    const tune_weight nf4 = {.type = TUNE_Q_NF4, .rows = 8192, .cols = 2048};
    const tune_weight dq = {.type = TUNE_Q_NF4_DQ, .rows = 8192, .cols = 2048};
    ck_assert_uint_eq(tune_weight_bytes(&nf4), 262144u * 36);
    ck_assert_uint_eq(tune_qtype_stats_bytes(TUNE_Q_NF4_DQ, 8192, 2048), 4 * (1 + 1024));
    ck_assert_uint_eq(tune_weight_bytes(&dq), 262144u * 33 + 4 * (1 + 1024));
    const double values = 8192.0 * 2048;
    ck_assert_double_eq_tol(8.0 * (double)(tune_weight_bytes(&nf4) - tune_weight_bytes(&dq)) / values, 0.373, 0.001);
    /* 257 blocks: two groups, the second of one block. */
    ck_assert_uint_eq(tune_qtype_stats_bytes(TUNE_Q_NF4_DQ, 257, 64), 4 * 3);
    ck_assert_uint_eq(tune_qtype_stats_bytes(TUNE_Q_NF4_DQ, 256, 64), 4 * 2);
    ck_assert_uint_eq(tune_qtype_stats_bytes(TUNE_Q_NF4, 8192, 2048), 0);
    ck_assert_uint_eq(tune_qtype_stats_bytes(TUNE_Q8_0, 8192, 2048), 0);
    ck_assert_str_eq(tune_qtype_name(TUNE_Q_NF4_DQ), "NF4_DQ");
    ck_assert_int_eq(tune_qtype_block_values(TUNE_Q_NF4_DQ), 64);
    ck_assert_int_eq(tune_qtype_block_bytes(TUNE_Q_NF4_DQ), 33);
    ck_assert_uint_eq(tune_qtype_row_bytes(TUNE_Q_NF4_DQ, 96), 0);
}
END_TEST

/* The largest half-gap between neighbouring NF4 values: between -1 and
 * -0.6961928 (0.1519), wider than the gap between 0.7229568 and 1 (0.1385). */
#define NF4_HALF_GAP (0.5 * (1.0 - 0.6961928009986877))

/* Checks y (a dequantised row) against x (the row quantised) block by block
 * for type Q8_0 or NF4 and returns the worst |err| / bound.
 * Q8_0: |err| ≤ d/2 with d = absmax / 127 (round to nearest), widened by
 * the f16 rounding of d: 0.5·d·(1 + 2^-10) + 2^-11·|x|.
 * NF4: |err| ≤ the largest half-gap · absmax (plus 1e-6 of it for the
 * float32 product), and y is the nearest code value (no other code
 * value · absmax is closer to x). */
static double check_block_bound(uint32_t type, const float *x, const float *y, int cols, const char *what)
{
    const int bv = type == TUNE_Q8_0 ? 32 : 64;
    double worst = 0.0;
    for (int b = 0; b < cols / bv; b++) {
        float amax = 0.0f;
        for (int j = 0; j < bv; j++) amax = fmaxf(amax, fabsf(x[b * bv + j]));
        for (int j = 0; j < bv; j++) {
            const int i = b * bv + j;
            const double err = fabs((double)y[i] - x[i]);
            const double bound = type == TUNE_Q8_0 ? 0.5 * (amax / 127.0f) * (1 + 0x1p-10) + 0x1p-11 * fabs(x[i])
                                                   : NF4_HALF_GAP * amax * (1 + 1e-6);
            ck_assert_msg(err <= bound, "%s: %s value %d of %d: x %.9g, y %.9g, absmax %.9g (|err| %.3g > %.3g)", what,
                          tune_qtype_name(type), i, cols, x[i], y[i], amax, err, bound);
            for (int k = 0; type == TUNE_Q_NF4 && k < 16; k++)
                ck_assert_msg(err <= fabs((double)nf4_table[k] * amax - x[i]) + 1e-6 * amax,
                              "%s: NF4 value %d: x %.9g took %.9g, code value %d (%.9g) is closer", what, i, x[i],
                              y[i], k, nf4_table[k] * amax);
            if (bound > 0 && err / bound > worst) worst = err / bound;
        }
    }
    return worst;
}

START_TEST(round_trips_within_format_bounds)
{
    /* Normal values at three scales (f16 d stays a normal number), 64 rows of
     * 1024, quantised then dequantised. */
    enum { ROWS = 64, COLS = 1024 };
    test_rng r = {3000, 0};
    float *x = malloc((size_t)ROWS * COLS * sizeof *x), y[COLS];
    for (int i = 0; i < ROWS; i++) {
        const float scale = i % 3 == 0 ? 0.05f : i % 3 == 1 ? 1.0f : 30.0f;
        for (int j = 0; j < COLS; j++) x[(size_t)i * COLS + j] = scale * rng_normal(&r);
    }
    const uint32_t types2[2] = {TUNE_Q8_0, TUNE_Q_NF4};
    uint8_t *blocks = malloc(tune_qtype_row_bytes(TUNE_Q8_0, COLS) + tune_qtype_row_bytes(TUNE_Q_NF4, COLS));
    for (int t = 0; t < 2; t++) {
        double worst = 0.0;
        for (int i = 0; i < ROWS; i++) {
            tune_quantize_row(types2[t], x + (size_t)i * COLS, blocks, COLS);
            tune_dequant_row(types2[t], blocks, y, COLS);
            const double e = check_block_bound(types2[t], x + (size_t)i * COLS, y, COLS, "round trip");
            worst = e > worst ? e : worst;
        }
        /* The bound is nearly reached: it is not loose. */
        ck_assert_double_gt(worst, 0.9);
        printf("round trip %-4s worst |err| / bound %.6g\n", tune_qtype_name(types2[t]), worst);
    }
    free(x);
    free(blocks);
}
END_TEST

START_TEST(nf4_dq_round_trip_within_bounds)
{
    /* Normal values at three scales by row, 64 rows of 1024, quantised as
     * NF4_DQ then dequantised. Each block's absmax comes back within half
     * the widest gap of the dynamic map (0.0141 near ±1) of its group's
     * absmax2, plus the lookup table's step (2 / 65535); each value within
     * NF4's half-gap of the true absmax plus that absmax error. The 4-bit
     * codes are NF4's, byte for byte. */
    enum { ROWS = 64, COLS = 1024, NB = ROWS * COLS / 64 };
    test_rng r = {3100, 0};
    float *x = malloc((size_t)ROWS * COLS * sizeof *x), *y = malloc((size_t)ROWS * COLS * sizeof *y);
    for (int i = 0; i < ROWS; i++) {
        const float scale = i % 3 == 0 ? 0.05f : i % 3 == 1 ? 1.0f : 30.0f;
        for (int j = 0; j < COLS; j++) x[(size_t)i * COLS + j] = scale * rng_normal(&r);
    }
    tune_weight w = {.type = TUNE_Q_NF4_DQ, .rows = ROWS, .cols = COLS};
    w.blocks = malloc(tune_weight_bytes(&w));
    uint8_t nf4[36];
    tune_quantize_rows(TUNE_Q_NF4_DQ, x, w.blocks, ROWS, COLS);
    tune_weight_dequantize(&w, y);
    const uint8_t *stats = w.blocks + NB * 33;
    double worst = 0.0;
    for (int i = 0; i < NB; i++) {
        const float *xb = x + 64 * i, *yb = y + 64 * i;
        tune_quantize_row(TUNE_Q_NF4, xb, nf4, 64);
        ck_assert_msg(memcmp(nf4 + 4, w.blocks + 33 * i + 1, 32) == 0, "block %d: not NF4's codes", i);
        float amax = 0.0f, absmax2;
        for (int j = 0; j < 64; j++) amax = fmaxf(amax, fabsf(xb[j]));
        memcpy(&absmax2, stats + 4 + 4 * (i / 256), 4);
        const float got = tune_nf4_dq_absmax(tune_nf4_dq_code, stats, (size_t)i, w.blocks[33 * i]);
        const double aerr = fabs((double)got - amax), abound = (0.5 * 0.0140625 + 2.0 / 65535) * absmax2 * (1 + 1e-5);
        ck_assert_msg(aerr <= abound, "block %d: absmax %.9g came back %.9g (|err| %.3g > %.3g)", i, amax, got, aerr,
                      abound);
        if (aerr / abound > worst) worst = aerr / abound;
        for (int j = 0; j < 64; j++) {
            const double err = fabs((double)yb[j] - xb[j]);
            const double bound = (NF4_HALF_GAP * amax + aerr) * (1 + 1e-6);
            ck_assert_msg(err <= bound, "block %d value %d: x %.9g, y %.9g (|err| %.3g > %.3g)", i, j, xb[j], yb[j],
                          err, bound);
        }
    }
    ck_assert_double_gt(worst, 0.3); /* the bound is not loose */
    printf("round trip NF4_DQ absmax worst |err| / bound %.6g\n", worst);
    free(x), free(y), free(w.blocks);
}
END_TEST

/* ---- Models loaded with each storage --------------------------------------- */

static const char *const stored_models[] = {
    "tiny/gqa", "tiny/tied", "model_load/untied_bf16", "model_load/sharded_f16", "gguf/tiny_llama.gguf",
};
#define N_STORED_MODELS (int)(sizeof stored_models / sizeof stored_models[0])

/* tiny_llama.gguf's tensor types, layer by layer in tune_linear_kind order. */
static const uint32_t tiny_gguf_types[2][TUNE_N_LINEAR] = {
    {TUNE_Q8_0, TUNE_Q4_1, TUNE_Q_BF16, TUNE_Q_F32, TUNE_Q4_0, TUNE_Q8_0, TUNE_Q_F16},
    {TUNE_Q4_1, TUNE_Q8_0, TUNE_Q4_0, TUNE_Q_F16, TUNE_Q4_1, TUNE_Q_BF16, TUNE_Q8_0},
};

/* The type a linear weight of file type ft and cols inputs must get. */
static uint32_t expected_linear_type(tune_weight_storage s, uint32_t ft, int cols)
{
    if (s == TUNE_STORE_F32) return TUNE_Q_F32;
    if (ft != TUNE_Q_F32 && ft != TUNE_Q_F16 && ft != TUNE_Q_BF16) return ft; /* blocks stay as the file has them */
    if (s == TUNE_STORE_INT8 && cols % 32 == 0) return TUNE_Q8_0;
    if (s == TUNE_STORE_NF4 && cols % 64 == 0) return TUNE_Q_NF4;
    if (s == TUNE_STORE_NF4_DQ && cols % 64 == 0) return TUNE_Q_NF4_DQ;
    return TUNE_Q_F32;
}

static void assert_same_floats(const float *a, const float *b, size_t n, const char *what)
{
    for (size_t i = 0; i < n; i++)
        ck_assert_msg(bits(a[i]) == bits(b[i]), "%s[%zu]: %.9g, fp32 load %.9g", what, i, a[i], b[i]);
}

/* w (a matrix loaded with some storage) against ref (its fp32 load):
 * type, and values (exactly, unless quantised at load: then its blocks are
 * tune_quantize_rows of the fp32 matrix and, for the types whose rows stand
 * alone, within the format's bound). Returns 1 when it was quantised at load. */
static int check_stored_matrix(const tune_weight *w, const tune_weight *ref, uint32_t want_type, uint32_t file_type,
                               const char *what)
{
    ck_assert_msg(w->type == want_type, "%s: type %s, expected %s", what, tune_qtype_name(w->type),
                  tune_qtype_name(want_type));
    ck_assert_int_eq(ref->type, TUNE_Q_F32);
    ck_assert_int_eq(w->rows, ref->rows);
    ck_assert_int_eq(w->cols, ref->cols);
    ck_assert((w->type == TUNE_Q_F32) == (w->f32 != NULL));
    ck_assert((w->type == TUNE_Q_F32) == (w->blocks == NULL));
    const size_t n = (size_t)w->rows * w->cols;
    float *full = malloc(n * sizeof *full);
    tune_weight_dequantize(w, full);
    const int quantised = w->type != TUNE_Q_F32 && w->type != file_type;
    if (!quantised) {
        assert_same_floats(full, ref->f32, n, what);
    } else {
        const size_t rb = tune_qtype_row_bytes(w->type, w->cols), bytes = tune_weight_bytes(w);
        uint8_t *blocks = malloc(bytes);
        tune_quantize_rows(w->type, ref->f32, blocks, w->rows, w->cols);
        for (int i = 0; i < w->rows; i++) {
            ck_assert_msg(memcmp(blocks + (size_t)i * rb, w->blocks + (size_t)i * rb, rb) == 0,
                          "%s row %d: not the quantised fp32 row", what, i);
            if (w->type != TUNE_Q_NF4_DQ)
                check_block_bound(w->type, ref->f32 + (size_t)i * w->cols, full + (size_t)i * w->cols, w->cols, what);
        }
        const size_t rows_bytes = (size_t)w->rows * rb;
        ck_assert_msg(memcmp(blocks + rows_bytes, w->blocks + rows_bytes, bytes - rows_bytes) == 0,
                      "%s: not the quantised matrix's statistics", what);
        free(blocks);
    }
    free(full);
    return quantised;
}

START_TEST(models_stored_as_asked)
{
    /* _i: model × storage (FILE, INT8, NF4, NF4_DQ). Linear weights become
     * Q8_0 / NF4 / NF4_DQ where their columns are whole blocks, else stay
     * fp32 (q/k of an F32/F16/BF16 GGUF quantised after un-permuting); a GGUF's
     * blocks stay as they are (its q/k rows un-permuted as blocks, so they
     * dequantise to the fp32 load exactly); embeddings and norms are the
     * fp32 load's; the bytes the headers predict are the bytes held. */
    static const tune_weight_storage storages[] = {TUNE_STORE_FILE, TUNE_STORE_INT8, TUNE_STORE_NF4,
                                                   TUNE_STORE_NF4_DQ};
    const char *name = stored_models[_i / 4];
    const tune_weight_storage s = storages[_i % 4];
    const int is_gguf = strstr(name, ".gguf") != NULL;
    char path[512], what[256];
    snprintf(path, sizeof path, "%s/%s", test_data_dir(), name);
    tune_model ref, m;
    tune_error err;
    ck_assert_msg(tune_model_load_stored(path, TUNE_STORE_F32, &ref, &err) == TUNE_OK, "%s", err.message);
    ck_assert_msg(tune_model_load_stored(path, s, &m, &err) == TUNE_OK, "%s", err.message);
    const tune_model_config *c = &m.cfg;
    ck_assert_int_eq(c->vocab_size, ref.cfg.vocab_size);
    ck_assert_int_eq(c->hidden_size, ref.cfg.hidden_size);
    ck_assert_int_eq(c->num_hidden_layers, ref.cfg.num_hidden_layers);
    ck_assert_int_eq(c->tie_word_embeddings, ref.cfg.tie_word_embeddings);
    if (is_gguf) ck_assert_int_eq(c->num_hidden_layers, 2);
    const size_t C = (size_t)c->hidden_size;

    size_t held = C * sizeof(float) * (size_t)(2 * c->num_hidden_layers + 1); /* norms */
    int n_quantised = 0, n_kept = 0;
    snprintf(what, sizeof what, "%s %s embed", name, tune_storage_name(s));
    check_stored_matrix(&m.embed, &ref.embed, TUNE_Q_F32, TUNE_Q_F32, what);
    held += tune_weight_bytes(&m.embed);
    if (c->tie_word_embeddings) {
        ck_assert(m.lm_head.type == m.embed.type && m.lm_head.f32 == m.embed.f32);
    } else {
        snprintf(what, sizeof what, "%s %s lm_head", name, tune_storage_name(s));
        const uint32_t ft = is_gguf ? TUNE_Q8_0 : TUNE_Q_F32; /* output.weight is Q8_0 in the file */
        check_stored_matrix(&m.lm_head, &ref.lm_head, ft, ft, what);
        held += tune_weight_bytes(&m.lm_head);
    }
    assert_same_floats(m.final_norm, ref.final_norm, C, "final_norm");
    for (int l = 0; l < c->num_hidden_layers; l++) {
        assert_same_floats(m.layers[l].attn_norm, ref.layers[l].attn_norm, C, "attn_norm");
        assert_same_floats(m.layers[l].ffn_norm, ref.layers[l].ffn_norm, C, "ffn_norm");
        for (int k = 0; k < TUNE_N_LINEAR; k++) {
            const tune_weight *w = &m.layers[l].w[k];
            const uint32_t ft = is_gguf ? tiny_gguf_types[l][k] : TUNE_Q_F32;
            const uint32_t want = expected_linear_type(s, ft, w->cols);
            const uint32_t ft_seen = ft == TUNE_Q_F16 || ft == TUNE_Q_BF16 ? TUNE_Q_F32 : ft;
            ck_assert_uint_eq(tune_storage_type(s, 1, ft_seen, w->cols), want);
            snprintf(what, sizeof what, "%s %s layer %d %s", name, tune_storage_name(s), l, tune_linear_names[k]);
            const int q = check_stored_matrix(w, &ref.layers[l].w[k], want, ft_seen, what);
            n_quantised += q;
            n_kept += w->type != TUNE_Q_F32 && !q;
            held += tune_weight_bytes(w);
        }
    }
    ck_assert_uint_eq(tune_model_bytes(&m), held);
    size_t predicted = 0;
    ck_assert_msg(tune_model_stored_bytes(path, s, &predicted, &err) == TUNE_OK, "%s", err.message);
    ck_assert_uint_eq(predicted, held);
    ck_assert_msg(tune_model_stored_bytes(path, TUNE_STORE_F32, &predicted, &err) == TUNE_OK, "%s", err.message);
    ck_assert_uint_eq(predicted, tune_model_bytes(&ref));

    /* Not vacuous: what each case is there to show happened. */
    if (is_gguf) ck_assert_int_eq(n_kept, 9); /* the file's Q4_0/Q4_1/Q8_0 linear weights */
    if (is_gguf && s != TUNE_STORE_FILE) ck_assert_int_eq(n_quantised, 5); /* its BF16/F16/F32 ones */
    if (!is_gguf && s == TUNE_STORE_FILE) ck_assert_int_eq(n_quantised, 0);
    if (strncmp(name, "tiny/", 5) == 0 && s == TUNE_STORE_INT8) ck_assert_int_eq(n_quantised, 14);
    if (strncmp(name, "tiny/", 5) == 0 && (s == TUNE_STORE_NF4 || s == TUNE_STORE_NF4_DQ))
        ck_assert_int_eq(n_quantised, 12); /* down: 160 */
    if (strncmp(name, "model_load/", 11) == 0 && s == TUNE_STORE_INT8) ck_assert_int_eq(n_quantised, 2); /* down: 32 */
    if (strncmp(name, "model_load/", 11) == 0 && s >= TUNE_STORE_NF4) ck_assert_int_eq(n_quantised, 0); /* 16, 32 */
    if (n_quantised + n_kept > 0) ck_assert_uint_lt(tune_model_bytes(&m), tune_model_bytes(&ref));
    else ck_assert_uint_eq(tune_model_bytes(&m), tune_model_bytes(&ref));
    tune_model_free(&m);
    tune_model_free(&ref);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("quant");
    TCase *tc = tcase_create("core");
    tcase_add_loop_test(tc, dequant_matches_gguf, 0, N_TYPES);
    tcase_add_test(tc, table_is_consistent);
    tcase_add_test(tc, goldens_cover_the_scale_fields);
    tcase_add_test(tc, q8_0_quantiser_golden_is_ggml_rounding);
    tcase_add_test(tc, q8_0_quantiser_matches_ggml);
    tcase_add_test(tc, nf4_quantiser_matches_bitsandbytes);
    tcase_add_test(tc, nf4_dq_matches_bitsandbytes);
    tcase_add_test(tc, nf4_dq_saves_bytes);
    tcase_add_test(tc, round_trips_within_format_bounds);
    tcase_add_test(tc, nf4_dq_round_trip_within_bounds);
    suite_add_tcase(s, tc);
    TCase *blocks = tcase_create("blocks");
    tcase_set_timeout(blocks, 300); /* the products' double-precision reference, under the sanitizers too */
    tcase_add_loop_test(blocks, products_match_reference, 0, N_WTYPES);
    tcase_add_test(blocks, products_over_tiles_match_reference);
    tcase_add_loop_test(blocks, rows_and_dequantize_match_dequant_row, 0, N_WTYPES);
    tcase_add_loop_test(blocks, models_stored_as_asked, 0, 4 * N_STORED_MODELS);
    suite_add_tcase(s, blocks);
    return run_suite(s);
}
