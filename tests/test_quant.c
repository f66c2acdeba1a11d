/* Storage types and block dequantisation: every type tune reads against the
 * gguf Python package's numpy dequantisation of random blocks, bit for bit,
 * and the table of block shapes. Goldens come from
 * tools/reference/make_quant_golden.py. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "testutil.h"
#include "tune/quant.h"
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
    const uint32_t unknown[] = {4, 5, 9, 15, 16, 20, 23, 24, 28, 29, 31, 34, 39, 1023, 1025, UINT32_MAX};
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

int main(void)
{
    Suite *s = suite_create("quant");
    TCase *tc = tcase_create("core");
    tcase_add_loop_test(tc, dequant_matches_gguf, 0, N_TYPES);
    tcase_add_test(tc, table_is_consistent);
    tcase_add_test(tc, goldens_cover_the_scale_fields);
    tcase_add_test(tc, q8_0_quantiser_golden_is_ggml_rounding);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
