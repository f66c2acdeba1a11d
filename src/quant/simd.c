/* AVX-512 row dequantisation for the common block types, and the dot
 * product the decoding kernel takes with each dequantised row. Each value
 * is the scalar tune_dequant_* value bit for bit (the same products and
 * sums, unfused); the plain functions in tune/quant.h are the reference the
 * tests hold these to. Compiled for AVX-512 by function attribute and
 * chosen at run time, so the binary still runs on any x86-64. */
#include "internal.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#include <immintrin.h>

#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,f16c,fma")))

/* How far ahead of a single-row product the weights are prefetched:
 * decoding streams every weight once a token, and with the hardware
 * prefetcher alone a core waited on memory for a third of its time. */
#define PREFETCH_AHEAD 2048 /* bytes */

/* F16C from cpuid itself: clang 14's __builtin_cpu_supports does not know "f16c". */
static int have_f16c(void)
{
    unsigned a, b, c, d;
    return __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
}

int tune_quant_have_avx512(void)
{
    static int have = -1;
    if (have < 0) {
        __builtin_cpu_init();
        have = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") && have_f16c() &&
               __builtin_cpu_supports("fma");
    }
    return have;
}

AVX512 static inline float f16(const uint8_t *p) { return _cvtsh_ss(tune_load_u16(p)); }

/* 16 bytes at p widened to 16 int32 lanes. */
AVX512 static inline __m512i bytes16(const uint8_t *p) { return _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)p)); }

AVX512 static inline __m512 cvt(__m512i v) { return _mm512_cvtepi32_ps(v); }

/* (float)q · d, and (float)q · d + m rounded twice, as the scalar code does. */
AVX512 static inline __m512 scaled(__m512i q, float d) { return _mm512_mul_ps(cvt(q), _mm512_set1_ps(d)); }
AVX512 static inline __m512 scaled_add(__m512i q, float d, float m)
{
    return _mm512_add_ps(_mm512_mul_ps(cvt(q), _mm512_set1_ps(d)), _mm512_set1_ps(m));
}

/* Each type decodes one block into registers, w[k] = values 16k .. 16k + 15. */

AVX512 static inline void blk_q8_0(const uint8_t *b, __m512 *w)
{
    const float d = f16(b);
    w[0] = scaled(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(b + 2))), d);
    w[1] = scaled(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(b + 18))), d);
}

AVX512 static inline void blk_q4_0(const uint8_t *b, __m512 *w)
{
    const __m512i mask = _mm512_set1_epi32(15), eight = _mm512_set1_epi32(8);
    const float d = f16(b);
    const __m512i q = bytes16(b + 2);
    w[0] = scaled(_mm512_sub_epi32(_mm512_and_si512(q, mask), eight), d);
    w[1] = scaled(_mm512_sub_epi32(_mm512_srli_epi32(q, 4), eight), d);
}

AVX512 static inline void blk_q4_1(const uint8_t *b, __m512 *w)
{
    const __m512i mask = _mm512_set1_epi32(15);
    const float d = f16(b), m = f16(b + 2);
    const __m512i q = bytes16(b + 4);
    w[0] = scaled_add(_mm512_and_si512(q, mask), d, m);
    w[1] = scaled_add(_mm512_srli_epi32(q, 4), d, m);
}

/* v with 16 added in the lanes whose bit of qh (from bit shift on) is set:
 * the fifth bits of a Q5 block's 16 values. */
AVX512 static inline __m512i fifth_bits(__m512i v, uint32_t qh, int shift)
{
    return _mm512_mask_add_epi32(v, (__mmask16)(qh >> shift), v, _mm512_set1_epi32(16));
}

AVX512 static inline void blk_q5_0(const uint8_t *b, __m512 *w)
{
    const __m512i mask = _mm512_set1_epi32(15), sixteen = _mm512_set1_epi32(16);
    const float d = f16(b);
    const uint32_t qh = tune_load_u32(b + 2);
    const __m512i q = bytes16(b + 6);
    w[0] = scaled(_mm512_sub_epi32(fifth_bits(_mm512_and_si512(q, mask), qh, 0), sixteen), d);
    w[1] = scaled(_mm512_sub_epi32(fifth_bits(_mm512_srli_epi32(q, 4), qh, 16), sixteen), d);
}

AVX512 static inline void blk_q5_1(const uint8_t *b, __m512 *w)
{
    const __m512i mask = _mm512_set1_epi32(15);
    const float d = f16(b), m = f16(b + 2);
    const uint32_t qh = tune_load_u32(b + 4);
    const __m512i q = bytes16(b + 8);
    w[0] = scaled_add(fifth_bits(_mm512_and_si512(q, mask), qh, 0), d, m);
    w[1] = scaled_add(fifth_bits(_mm512_srli_epi32(q, 4), qh, 16), d, m);
}

AVX512 static inline void blk_q4_k(const uint8_t *b, __m512 *w)
{
    const __m512i mask = _mm512_set1_epi32(15);
    const float d = f16(b), dmin = f16(b + 2);
    for (int j = 0; j < 8; j++) {
        int sc, m;
        tune_k4_scale_min(b + 4, j, &sc, &m);
        const float dl = d * (float)sc, ml = -(dmin * (float)m);
        const uint8_t *q = b + 16 + 32 * (j >> 1);
        const int shift = 4 * (j & 1);
        w[2 * j] = scaled_add(_mm512_and_si512(_mm512_srli_epi32(bytes16(q), shift), mask), dl, ml);
        w[2 * j + 1] = scaled_add(_mm512_and_si512(_mm512_srli_epi32(bytes16(q + 16), shift), mask), dl, ml);
    }
}

AVX512 static inline void blk_q6_k(const uint8_t *b, __m512 *w)
{
    const __m512i mask = _mm512_set1_epi32(15), three = _mm512_set1_epi32(3), off = _mm512_set1_epi32(32);
    const float d = f16(b + 208);
    const int8_t *sc = (const int8_t *)(b + 192);
    for (int g = 0; g < 2; g++)
        for (int h = 0; h < 2; h++) {
            const __m512i a = bytes16(b + 64 * g + 16 * h), c = bytes16(b + 64 * g + 32 + 16 * h);
            const __m512i hb = bytes16(b + 128 + 32 * g + 16 * h);
            /* value 128g + 32s + 16h + k: nibble s / 2 of (s odd ? c : a), top bits 2s of hb */
            const __m512i lo[4] = {_mm512_and_si512(a, mask), _mm512_and_si512(c, mask), _mm512_srli_epi32(a, 4),
                                   _mm512_srli_epi32(c, 4)};
            for (int s = 0; s < 4; s++) {
                const __m512i top = _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(hb, 2 * s), three), 4);
                const int k = 8 * g + 2 * s + h; /* also the scale's index */
                w[k] = scaled(_mm512_sub_epi32(_mm512_or_si512(lo[s], top), off), d * (float)sc[k]);
            }
        }
}

AVX512 static inline void blk_nf4(const uint8_t *b, __m512 *w)
{
    const float values[16] = TUNE_NF4_VALUES;
    const __m512 table = _mm512_loadu_ps(values);
    /* lanes 2k and 2k + 1 read byte k: its high nibble, then its low one */
    const __m512i shifts = _mm512_setr_epi32(4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0);
    const __m512i mask = _mm512_set1_epi32(15);
    float absmax;
    memcpy(&absmax, b, 4);
    const __m512 scale = _mm512_set1_ps(absmax);
    for (int k = 0; k < 4; k++) {
        const __m128i bytes = _mm_loadl_epi64((const __m128i *)(b + 4 + 8 * k));
        const __m512i pairs = _mm512_cvtepu8_epi32(_mm_unpacklo_epi8(bytes, bytes));
        const __m512i codes = _mm512_and_si512(_mm512_srlv_epi32(pairs, shifts), mask);
        w[k] = _mm512_mul_ps(_mm512_permutexvar_ps(codes, table), scale);
    }
}

/* For each type: row_T stores a row's values; dot_T takes the dot product of
 * one row with each of N rows of x (N ≤ TUNE_QUANT_DOT_ROWS), never storing
 * the values. */
#define KERNELS(T, BV, BB)                                                                             \
    AVX512 static void row_##T(const uint8_t *b, float *y, int nb)                                       \
    {                                                                                                  \
        for (int i = 0; i < nb; i++, b += BB, y += BV) {                                               \
            __m512 w[BV / 16];                                                                         \
            blk_##T(b, w);                                                                             \
            for (int k = 0; k < BV / 16; k++) _mm512_storeu_ps(y + 16 * k, w[k]);                      \
        }                                                                                              \
    }                                                                                                  \
    AVX512 static void dot_##T(const uint8_t *b, int nb, const float *x, size_t ldx, int N, float *out) \
    {                                                                                                  \
        if (N == 1) { /* decoding: two running sums in registers, no loop over rows of x */           \
            __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();                                 \
            for (int i = 0; i < nb; i++, b += BB, x += BV) {                                           \
                __m512 w[BV / 16];                                                                     \
                for (int line = 0; line < BB; line += 64) /* every cache line of a K-quant's block */  \
                    _mm_prefetch((const char *)b + PREFETCH_AHEAD + line, _MM_HINT_T0);                \
                blk_##T(b, w);                                                                         \
                for (int k = 0; k < BV / 16; k += 2) {                                                 \
                    s0 = _mm512_fmadd_ps(w[k], _mm512_loadu_ps(x + 16 * k), s0);                       \
                    s1 = _mm512_fmadd_ps(w[k + 1], _mm512_loadu_ps(x + 16 * k + 16), s1);              \
                }                                                                                      \
            }                                                                                          \
            out[0] = _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));                                      \
            return;                                                                                    \
        }                                                                                              \
        __m512 acc[TUNE_QUANT_DOT_ROWS];                                                               \
        for (int n = 0; n < N; n++) acc[n] = _mm512_setzero_ps();                                      \
        for (int i = 0; i < nb; i++, b += BB, x += BV) {                                               \
            __m512 w[BV / 16];                                                                         \
            blk_##T(b, w);                                                                             \
            for (int n = 0; n < N; n++)                                                                \
                for (int k = 0; k < BV / 16; k++)                                                      \
                    acc[n] = _mm512_fmadd_ps(w[k], _mm512_loadu_ps(x + n * ldx + 16 * k), acc[n]);     \
        }                                                                                              \
        for (int n = 0; n < N; n++) out[n] = _mm512_reduce_add_ps(acc[n]);                              \
    }

KERNELS(q8_0, 32, 34)
KERNELS(q4_0, 32, 18)
KERNELS(q4_1, 32, 20)
KERNELS(q5_0, 32, 22)
KERNELS(q5_1, 32, 24)
KERNELS(q4_k, 256, 144)
KERNELS(q6_k, 256, 210)
KERNELS(nf4, 64, 36)

/* NF4_DQ: a chunk of a row at a time becomes plain NF4 blocks (each
 * block's absmax decoded from the statistics, its codes copied) that NF4's
 * kernels run, so the values are tune_dequant_nf4_dq's bit for bit. */
#define NF4_DQ_CHUNK 64 /* blocks */

/* n blocks from block i0 of the matrix → nf4 (n NF4 blocks). */
static void nf4_dq_chunk(const uint8_t *b, const uint8_t *stats, size_t i0, int n, uint8_t *nf4)
{
    for (int i = 0; i < n; i++, b += 33, nf4 += 36) {
        const float absmax = tune_nf4_dq_absmax(tune_nf4_dq_code, stats, i0 + (size_t)i, b[0]);
        memcpy(nf4, &absmax, 4);
        memcpy(nf4 + 4, b + 1, 32);
    }
}

AVX512 static void row_nf4_dq(const uint8_t *b, const uint8_t *stats, size_t i0, float *y, int nb)
{
    uint8_t nf4[NF4_DQ_CHUNK * 36];
    for (int c = 0; c < nb; c += NF4_DQ_CHUNK) {
        const int n = nb - c < NF4_DQ_CHUNK ? nb - c : NF4_DQ_CHUNK;
        nf4_dq_chunk(b + (size_t)c * 33, stats, i0 + (size_t)c, n, nf4);
        row_nf4(nf4, y + (size_t)c * 64, n);
    }
}

AVX512 static void dot_nf4_dq(const uint8_t *b, const uint8_t *stats, size_t i0, int nb, const float *x, size_t ldx,
                              int N, float *out)
{
    uint8_t nf4[NF4_DQ_CHUNK * 36];
    float part[TUNE_QUANT_DOT_ROWS];
    for (int n = 0; n < N; n++) out[n] = 0.0f;
    for (int c = 0; c < nb; c += NF4_DQ_CHUNK) {
        const int n = nb - c < NF4_DQ_CHUNK ? nb - c : NF4_DQ_CHUNK;
        nf4_dq_chunk(b + (size_t)c * 33, stats, i0 + (size_t)c, n, nf4);
        dot_nf4(nf4, n, x + (size_t)c * 64, ldx, N, part);
        for (int k = 0; k < N; k++) out[k] += part[k];
    }
}

/* One row against one x (decoding) for the 32-value types and Q4_K, never
 * forming the values: a block's sum is d·Σ q·x, plus offset·Σ x for the
 * types with an offset (Σ x per block, xsum, computed once per product).
 * Codes become floats by a permute of a table of small integers (the exact
 * values a conversion gives; Q4_0's −8 and Q5_0's −16 are in the table),
 * two blocks a turn into two sums. */

AVX512 static inline __m128 f16_pair(const uint8_t *p) { return _mm_cvtph_ps(_mm_cvtsi32_si128((int)tune_load_u32(p))); }

/* Lane k holds first + k. */
AVX512 static inline __m512 counting_from(float first)
{
    return _mm512_add_ps(_mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), _mm512_set1_ps(first));
}

/* Σ_j t[q_j]·x_j over a block's 32 codes: lo for values 0..15, hi for 16..31
 * (the table t indexed by each lane's low 4 bits). */
AVX512 static inline __m512 table_dot(__m512i lo, __m512i hi, __m512 t, const float *x)
{
    return _mm512_fmadd_ps(_mm512_permutexvar_ps(hi, t), _mm512_loadu_ps(x + 16),
                           _mm512_mul_ps(_mm512_permutexvar_ps(lo, t), _mm512_loadu_ps(x)));
}

/* Each type's step: *acc + d·Σ q·x of block b, and *off + offset·Σ x. */
AVX512 static inline void step_q4_1(const uint8_t *b, const float *x, const float *xs, __m512 *acc, __m128 *off)
{
    const __m128 dm = f16_pair(b);
    const __m512i q = bytes16(b + 4);
    *off = _mm_fmadd_ss(_mm_movehdup_ps(dm), _mm_load_ss(xs), *off);
    *acc = _mm512_fmadd_ps(table_dot(q, _mm512_srli_epi32(q, 4), counting_from(0.0f), x), _mm512_broadcastss_ps(dm), *acc);
}

AVX512 static inline void step_q4_0(const uint8_t *b, const float *x, const float *xs, __m512 *acc, __m128 *off)
{
    (void)xs, (void)off;
    const __m512i q = bytes16(b + 2);
    *acc = _mm512_fmadd_ps(table_dot(q, _mm512_srli_epi32(q, 4), counting_from(-8.0f), x), _mm512_set1_ps(f16(b)), *acc);
}

/* table_dot with a 32-entry table (low, high): each lane's bit 4 picks the half. */
AVX512 static inline __m512 table32_dot(__m512i lo, __m512i hi, __m512 low, __m512 high, const float *x)
{
    return _mm512_fmadd_ps(_mm512_permutex2var_ps(low, hi, high), _mm512_loadu_ps(x + 16),
                           _mm512_mul_ps(_mm512_permutex2var_ps(low, lo, high), _mm512_loadu_ps(x)));
}

/* Σ_j t[q_j]·x_j over a Q5 block's 32 five-bit codes (16 bytes of nibbles q,
 * fifth bits qh), t = first, first + 1, ..: the fifth bit picks the upper
 * half of the 32-entry table. */
AVX512 static inline __m512 five_bit_dot(__m512i q, uint32_t qh, float first, const float *x)
{
    const __m512i lo = fifth_bits(_mm512_and_si512(q, _mm512_set1_epi32(15)), qh, 0);
    const __m512i hi = fifth_bits(_mm512_srli_epi32(q, 4), qh, 16);
    return table32_dot(lo, hi, counting_from(first), counting_from(first + 16.0f), x);
}

AVX512 static inline void step_q5_0(const uint8_t *b, const float *x, const float *xs, __m512 *acc, __m128 *off)
{
    (void)xs, (void)off;
    const __m512 p = five_bit_dot(bytes16(b + 6), tune_load_u32(b + 2), -16.0f, x);
    *acc = _mm512_fmadd_ps(p, _mm512_set1_ps(f16(b)), *acc);
}

AVX512 static inline void step_q5_1(const uint8_t *b, const float *x, const float *xs, __m512 *acc, __m128 *off)
{
    const __m128 dm = f16_pair(b);
    *off = _mm_fmadd_ss(_mm_movehdup_ps(dm), _mm_load_ss(xs), *off);
    *acc = _mm512_fmadd_ps(five_bit_dot(bytes16(b + 8), tune_load_u32(b + 4), 0.0f, x), _mm512_broadcastss_ps(dm), *acc);
}

AVX512 static inline void step_q8_0(const uint8_t *b, const float *x, const float *xs, __m512 *acc, __m128 *off)
{
    (void)xs, (void)off;
    const __m512 lo = cvt(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(b + 2))));
    const __m512 hi = cvt(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(b + 18))));
    const __m512 p = _mm512_fmadd_ps(hi, _mm512_loadu_ps(x + 16), _mm512_mul_ps(lo, _mm512_loadu_ps(x)));
    *acc = _mm512_fmadd_ps(p, _mm512_set1_ps(f16(b)), *acc);
}

/* dot1_T: one row of cols values against x, two blocks a turn into two
 * sums kept in registers. */
#define DOT1(T, BB)                                                                                    \
    AVX512 static float dot1_##T(const uint8_t *b, int cols, const float *x, const float *xsum)        \
    {                                                                                                  \
        const int nb = cols / 32;                                                                      \
        __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();                                 \
        __m128 off0 = _mm_setzero_ps(), off1 = _mm_setzero_ps();                                       \
        int i = 0;                                                                                     \
        for (; i + 1 < nb; i += 2, b += 2 * BB, x += 64) {                                             \
            _mm_prefetch((const char *)b + PREFETCH_AHEAD, _MM_HINT_T0);                               \
            step_##T(b, x, xsum + i, &acc0, &off0);                                                    \
            step_##T(b + BB, x + 32, xsum + i + 1, &acc1, &off1);                                      \
        }                                                                                              \
        if (i < nb) step_##T(b, x, xsum + i, &acc0, &off0);                                            \
        return _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1)) + _mm_cvtss_f32(_mm_add_ss(off0, off1)); \
    }

DOT1(q4_1, 20)
DOT1(q4_0, 18)
DOT1(q5_0, 22)
DOT1(q5_1, 24)
DOT1(q8_0, 34)

/* Q4_K and Q5_K: sub-block j (32 values) contributes (d·sc)·Σ q·x −
 * (dmin·m)·Σ x; with five, the fifth bit of value 32j + l is bit j of qh[l]
 * (blocks of 176 bytes, qh at 16, qs at 48; Q4_K: 144, qs at 16). */
AVX512 static inline float k_quant_dot1(const uint8_t *b, int cols, const float *x, const float *xsum, int five)
{
    const int block_bytes = five ? 176 : 144, qs = five ? 48 : 16, nb = cols / 256;
    const __m512 low = counting_from(0.0f), high = counting_from(16.0f);
    const __m512i mask = _mm512_set1_epi32(15), bit4 = _mm512_set1_epi32(16);
    __m512 acc[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
    float offsets = 0.0f;
    for (int i = 0; i < nb; i++, b += block_bytes) {
        for (int line = 0; line < block_bytes; line += 64)
            _mm_prefetch((const char *)b + PREFETCH_AHEAD + line, _MM_HINT_T0);
        const __m128 dm = f16_pair(b);
        const float d = _mm_cvtss_f32(dm), dmin = _mm_cvtss_f32(_mm_shuffle_ps(dm, dm, 1));
        /* qh[l] << 4: shifted right by j, bit j lands on bit 4 */
        const __m512i h0 = five ? _mm512_slli_epi32(bytes16(b + 16), 4) : mask;
        const __m512i h1 = five ? _mm512_slli_epi32(bytes16(b + 32), 4) : mask;
#pragma GCC unroll 4
        for (int j = 0; j < 8; j += 2, x += 64, xsum += 2) {
            int sc0, m0, sc1, m1;
            tune_k4_scale_min(b + 4, j, &sc0, &m0);
            tune_k4_scale_min(b + 4, j + 1, &sc1, &m1);
            const __m512i q0 = bytes16(b + qs + 16 * j), q1 = bytes16(b + qs + 16 + 16 * j);
            /* sub-block j: the low nibbles of 32 bytes; j + 1: their high nibbles */
            __m512 p0, p1;
            if (five) {
                const __m512i lo0 = _mm512_ternarylogic_epi32(q0, _mm512_and_si512(_mm512_srli_epi32(h0, j), bit4), mask, 0xEC);
                const __m512i lo1 = _mm512_ternarylogic_epi32(q1, _mm512_and_si512(_mm512_srli_epi32(h1, j), bit4), mask, 0xEC);
                const __m512i hi0 = _mm512_or_si512(_mm512_srli_epi32(q0, 4), _mm512_and_si512(_mm512_srli_epi32(h0, j + 1), bit4));
                const __m512i hi1 = _mm512_or_si512(_mm512_srli_epi32(q1, 4), _mm512_and_si512(_mm512_srli_epi32(h1, j + 1), bit4));
                p0 = table32_dot(lo0, lo1, low, high, x);
                p1 = table32_dot(hi0, hi1, low, high, x + 32);
            } else {
                p0 = table_dot(q0, q1, low, x);
                p1 = table_dot(_mm512_srli_epi32(q0, 4), _mm512_srli_epi32(q1, 4), low, x + 32);
            }
            acc[0] = _mm512_fmadd_ps(p0, _mm512_set1_ps(d * (float)sc0), acc[0]);
            acc[1] = _mm512_fmadd_ps(p1, _mm512_set1_ps(d * (float)sc1), acc[1]);
            offsets -= dmin * (float)m0 * xsum[0] + dmin * (float)m1 * xsum[1];
        }
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(acc[0], acc[1])) + offsets;
}

AVX512 static float dot1_q4_k(const uint8_t *b, int cols, const float *x, const float *xsum)
{
    return k_quant_dot1(b, cols, x, xsum, 0);
}

AVX512 static float dot1_q5_k(const uint8_t *b, int cols, const float *x, const float *xsum)
{
    return k_quant_dot1(b, cols, x, xsum, 1);
}

/* Q6_K: 16 groups of 16 values, group k scaled by d·sc[k]: Σ_k d·sc[k]·Σ (q − 32)·x,
 * the 6-bit q put together as blk_q6_k does, the scales made once a block. */
AVX512 static float dot1_q6_k(const uint8_t *b, int cols, const float *x, const float *xsum)
{
    (void)xsum;
    const int nb = cols / 256;
    const __m512i mask = _mm512_set1_epi32(15), top_bits = _mm512_set1_epi32(0x30), off = _mm512_set1_epi32(32);
    __m512 acc[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
    float scale[16];
    for (int i = 0; i < nb; i++, b += 210) {
        for (int line = 0; line < 210; line += 64) _mm_prefetch((const char *)b + PREFETCH_AHEAD + line, _MM_HINT_T0);
        const __m512i sc = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(b + 192)));
        _mm512_storeu_ps(scale, _mm512_mul_ps(cvt(sc), _mm512_set1_ps(f16(b + 208))));
        /* unrolled whole, so that lo, top and acc stay in registers */
#pragma GCC unroll 2
        for (int g = 0; g < 2; g++)
#pragma GCC unroll 2
            for (int h = 0; h < 2; h++) {
                const __m512i a = bytes16(b + 64 * g + 16 * h), c = bytes16(b + 64 * g + 32 + 16 * h);
                const __m512i hb = bytes16(b + 128 + 32 * g + 16 * h);
                /* value 128g + 32s + 16h + k: nibble s / 2 of (s odd ? c : a), top bits 2s of hb */
                const __m512i lo[4] = {_mm512_and_si512(a, mask), _mm512_and_si512(c, mask), _mm512_srli_epi32(a, 4),
                                       _mm512_srli_epi32(c, 4)};
                const __m512i top[4] = {_mm512_slli_epi32(hb, 4), _mm512_slli_epi32(hb, 2), hb, _mm512_srli_epi32(hb, 2)};
#pragma GCC unroll 4
                for (int s = 0; s < 4; s++) {
                    const int k = 8 * g + 2 * s + h;
                    /* lo | (top & 0x30), one instruction */
                    const __m512i q = _mm512_ternarylogic_epi32(lo[s], top[s], top_bits, 0xF8);
                    const __m512 p = _mm512_mul_ps(cvt(_mm512_sub_epi32(q, off)), _mm512_loadu_ps(x + 16 * k));
                    acc[s & 1] = _mm512_fmadd_ps(p, _mm512_set1_ps(scale[k]), acc[s & 1]);
                }
            }
        x += 256;
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(acc[0], acc[1]));
}

AVX512 static int dot_avx512_blocks(uint32_t type, const uint8_t *row, int cols, const float *x, size_t ldx, int N,
                                    float *out)
{
    switch (type) {
    case TUNE_Q8_0: dot_q8_0(row, cols / 32, x, ldx, N, out); return 1;
    case TUNE_Q4_0: dot_q4_0(row, cols / 32, x, ldx, N, out); return 1;
    case TUNE_Q4_1: dot_q4_1(row, cols / 32, x, ldx, N, out); return 1;
    case TUNE_Q5_0: dot_q5_0(row, cols / 32, x, ldx, N, out); return 1;
    case TUNE_Q5_1: dot_q5_1(row, cols / 32, x, ldx, N, out); return 1;
    case TUNE_Q4_K: dot_q4_k(row, cols / 256, x, ldx, N, out); return 1;
    case TUNE_Q6_K: dot_q6_k(row, cols / 256, x, ldx, N, out); return 1;
    case TUNE_Q_NF4: dot_nf4(row, cols / 64, x, ldx, N, out); return 1;
    default: return 0;
    }
}

AVX512 static int row_avx512(uint32_t type, const uint8_t *row, float *y, int cols)
{
    switch (type) {
    case TUNE_Q8_0: row_q8_0(row, y, cols / 32); return 1;
    case TUNE_Q4_0: row_q4_0(row, y, cols / 32); return 1;
    case TUNE_Q4_1: row_q4_1(row, y, cols / 32); return 1;
    case TUNE_Q5_0: row_q5_0(row, y, cols / 32); return 1;
    case TUNE_Q5_1: row_q5_1(row, y, cols / 32); return 1;
    case TUNE_Q4_K: row_q4_k(row, y, cols / 256); return 1;
    case TUNE_Q6_K: row_q6_k(row, y, cols / 256); return 1;
    case TUNE_Q_NF4: row_nf4(row, y, cols / 64); return 1;
    default: return 0;
    }
}

void tune_quant_dequant_row(uint32_t type, const uint8_t *row, float *y, int cols)
{
    if (!(tune_quant_have_avx512() && row_avx512(type, row, y, cols))) tune_dequant_row(type, row, y, cols);
}

tune_quant_dot1_fn tune_quant_dot1_kernel(uint32_t type)
{
    if (!tune_quant_have_avx512()) return NULL;
    switch (type) {
    case TUNE_Q4_1: return dot1_q4_1;
    case TUNE_Q4_0: return dot1_q4_0;
    case TUNE_Q5_0: return dot1_q5_0;
    case TUNE_Q5_1: return dot1_q5_1;
    case TUNE_Q8_0: return dot1_q8_0;
    case TUNE_Q4_K: return dot1_q4_k;
    case TUNE_Q5_K: return dot1_q5_k;
    case TUNE_Q6_K: return dot1_q6_k;
    default: return NULL;
    }
}

int tune_quant_dot_rows(uint32_t type, const uint8_t *row, int cols, const float *x, int N, float *out)
{
    return tune_quant_have_avx512() && dot_avx512_blocks(type, row, cols, x, (size_t)cols, N, out);
}

/* Row r of an NF4_DQ weight: its blocks, and its first block's index in the matrix. */
static const uint8_t *nf4_dq_row(const tune_weight *w, int r, size_t *i0)
{
    *i0 = (size_t)r * (size_t)(w->cols / 64);
    return w->blocks + *i0 * 33;
}

static int nf4_dq_row_fast(const tune_weight *w, int r, float *y)
{
    if (!tune_quant_have_avx512()) return 0;
    size_t i0;
    const uint8_t *row = nf4_dq_row(w, r, &i0);
    row_nf4_dq(row, w->blocks + (size_t)w->rows * tune_qtype_row_bytes(w->type, w->cols), i0, y, w->cols / 64);
    return 1;
}

static int nf4_dq_dot_fast(const tune_weight *w, int r, const float *x, int N, float *out)
{
    if (!tune_quant_have_avx512()) return 0;
    size_t i0;
    const uint8_t *row = nf4_dq_row(w, r, &i0);
    dot_nf4_dq(row, w->blocks + (size_t)w->rows * tune_qtype_row_bytes(w->type, w->cols), i0, w->cols / 64, x,
               (size_t)w->cols, N, out);
    return 1;
}

#else /* no x86-64 vector extensions: the plain versions */

int tune_quant_have_avx512(void) { return 0; }

tune_quant_dot1_fn tune_quant_dot1_kernel(uint32_t type)
{
    (void)type;
    return NULL;
}

void tune_quant_dequant_row(uint32_t type, const uint8_t *row, float *y, int cols)
{
    tune_dequant_row(type, row, y, cols);
}

int tune_quant_dot_rows(uint32_t type, const uint8_t *row, int cols, const float *x, int N, float *out)
{
    (void)type, (void)row, (void)cols, (void)x, (void)N, (void)out;
    return 0;
}

static int nf4_dq_row_fast(const tune_weight *w, int r, float *y)
{
    (void)w, (void)r, (void)y;
    return 0;
}

static int nf4_dq_dot_fast(const tune_weight *w, int r, const float *x, int N, float *out)
{
    (void)w, (void)r, (void)x, (void)N, (void)out;
    return 0;
}

#endif

void tune_quant_weight_row(const tune_weight *w, int r, float *y)
{
    if (w->type != TUNE_Q_NF4_DQ)
        tune_quant_dequant_row(w->type, w->blocks + (size_t)r * tune_qtype_row_bytes(w->type, w->cols), y, w->cols);
    else if (!nf4_dq_row_fast(w, r, y))
        tune_weight_row(w, r, y);
}

int tune_quant_weight_dot(const tune_weight *w, int r, const float *x, int N, float *out)
{
    if (w->type == TUNE_Q_NF4_DQ) return nf4_dq_dot_fast(w, r, x, N, out);
    return tune_quant_dot_rows(w->type, w->blocks + (size_t)r * tune_qtype_row_bytes(w->type, w->cols), w->cols, x, N,
                               out);
}
