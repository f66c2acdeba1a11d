/* Quantised weight storage: the block formats of GGUF files (ggml's Q4_0 …
 * Q8_0 and the K-quants) and QLoRA's NF4 (with or without double
 * quantisation of its absmax values), the per-block dequantisation
 * maths (shared with CUDA kernels), quantisers for load_in_8bit /
 * load_in_4bit, and matrices kept in blocks with products that run on them.
 *
 * A quantised matrix is rows × row_bytes: every row is a whole number of
 * blocks (GGUF guarantees it; NF4 needs cols % 64 == 0), so rows can be
 * addressed, sliced and dequantised independently. NF4_DQ alone follows its
 * rows with statistics of the whole matrix (its row r needs them too). */
#ifndef TUNE_QUANT_H
#define TUNE_QUANT_H

#include <stddef.h>
#include <stdint.h>

#include "tune/kernels.h"

/* Storage types, numbered as ggml numbers them; NF4 and NF4_DQ are tune's own. */
typedef enum {
    TUNE_Q_F32 = 0, TUNE_Q_F16 = 1, TUNE_Q4_0 = 2, TUNE_Q4_1 = 3,
    TUNE_Q5_0 = 6, TUNE_Q5_1 = 7, TUNE_Q8_0 = 8,
    TUNE_Q2_K = 10, TUNE_Q3_K = 11, TUNE_Q4_K = 12, TUNE_Q5_K = 13, TUNE_Q6_K = 14,
    TUNE_Q_BF16 = 30,
    TUNE_Q_NF4 = 1024, TUNE_Q_NF4_DQ = 1025,
} tune_qtype;

/* 1 for tune's own types (NF4, NF4_DQ): numbers no GGUF file may hold. */
static inline int tune_qtype_is_own(uint32_t type) { return type == TUNE_Q_NF4 || type == TUNE_Q_NF4_DQ; }

/* Values per block and bytes per block of a storage type; 0 for a type tune
 * cannot read (the GGUF reader names it in its error). */
int tune_qtype_block_values(uint32_t type);
int tune_qtype_block_bytes(uint32_t type);
/* "Q4_K", "NF4", ...; NULL for unknown types. */
const char *tune_qtype_name(uint32_t type);
/* Bytes of one row of cols values; 0 when cols is not a whole number of blocks. */
size_t tune_qtype_row_bytes(uint32_t type, int cols);
/* Bytes a (rows, cols) matrix keeps after its rows: NF4_DQ's statistics, 0 for other types. */
size_t tune_qtype_stats_bytes(uint32_t type, int rows, int cols);

/* ---- Per-block maths (bit-exact with ggml and the gguf Python package) ----
 * The f16/bf16 widening (kernels.h) is exact; a value of the form d·q + m is
 * one rounded product then one rounded sum, as numpy computes it (no fused
 * multiply-add). */

TUNE_HD static inline uint16_t tune_load_u16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

TUNE_HD static inline uint32_t tune_load_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* d·q + m rounded twice. */
TUNE_HD static inline float tune_mul_add_unfused(float q, float d, float m)
{
#ifdef __CUDA_ARCH__
    return __fadd_rn(__fmul_rn(d, q), m);
#else
    /* Two statements: C11 mode (gcc) and clang's default contract only
     * within one expression, so this stays unfused. */
    float p = d * q;
    return p + m;
#endif
}

/* Q8_0 block {f16 d; i8 qs[32]} (34 bytes) → y (32). */
TUNE_HD static inline void tune_dequant_q8_0(const uint8_t *blk, float *y)
{
    float d = tune_f16_to_f32(tune_load_u16(blk));
    for (int j = 0; j < 32; j++) y[j] = (float)(int8_t)blk[2 + j] * d;
}

/* Q4_0 block {f16 d; u8 qs[16]} (18 bytes) → y (32): low nibbles first. */
TUNE_HD static inline void tune_dequant_q4_0(const uint8_t *blk, float *y)
{
    float d = tune_f16_to_f32(tune_load_u16(blk));
    for (int j = 0; j < 16; j++) {
        y[j] = (float)((blk[2 + j] & 15) - 8) * d;
        y[j + 16] = (float)((blk[2 + j] >> 4) - 8) * d;
    }
}

/* Q4_1 block {f16 d; f16 m; u8 qs[16]} (20 bytes) → y (32). */
TUNE_HD static inline void tune_dequant_q4_1(const uint8_t *blk, float *y)
{
    float d = tune_f16_to_f32(tune_load_u16(blk));
    float m = tune_f16_to_f32(tune_load_u16(blk + 2));
    for (int j = 0; j < 16; j++) {
        y[j] = tune_mul_add_unfused((float)(blk[4 + j] & 15), d, m);
        y[j + 16] = tune_mul_add_unfused((float)(blk[4 + j] >> 4), d, m);
    }
}

/* Q5_0 block {f16 d; u8 qh[4]; u8 qs[16]} (22 bytes) → y (32): value j is
 * (the low nibble, for j ≥ 16 the high nibble, of qs[j % 16]) | (bit j of
 * the little-endian u32 qh) << 4, minus 16, times d. */
TUNE_HD static inline void tune_dequant_q5_0(const uint8_t *blk, float *y)
{
    float d = tune_f16_to_f32(tune_load_u16(blk));
    uint32_t qh = tune_load_u32(blk + 2);
    const uint8_t *qs = blk + 6;
    for (int j = 0; j < 16; j++) {
        int lo = (qs[j] & 15) | (int)((qh >> j) & 1) << 4;
        int hi = (qs[j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4;
        y[j] = (float)(lo - 16) * d;
        y[j + 16] = (float)(hi - 16) * d;
    }
}

/* Q5_1 block {f16 d; f16 m; u8 qh[4]; u8 qs[16]} (24 bytes) → y (32): the
 * 5-bit value as in Q5_0 (no offset), then d·q + m. */
TUNE_HD static inline void tune_dequant_q5_1(const uint8_t *blk, float *y)
{
    float d = tune_f16_to_f32(tune_load_u16(blk));
    float m = tune_f16_to_f32(tune_load_u16(blk + 2));
    uint32_t qh = tune_load_u32(blk + 4);
    const uint8_t *qs = blk + 8;
    for (int j = 0; j < 16; j++) {
        int lo = (qs[j] & 15) | (int)((qh >> j) & 1) << 4;
        int hi = (qs[j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4;
        y[j] = tune_mul_add_unfused((float)lo, d, m);
        y[j + 16] = tune_mul_add_unfused((float)hi, d, m);
    }
}

/* K-quants: super-blocks of 256 values; y = (d·sc)·q − dmin·m (Q2_K, Q4_K,
 * Q5_K) or (d·sc)·q (Q3_K, Q6_K), in the order ggml and numpy compute it.
 * Every product in these formats (and in the 32-value ones) is exact in
 * float32: an f16 scale has 11 significant bits and sc·q at most 13 more,
 * so the only rounding is the final sum, and neither the order of the
 * products nor a fused multiply-add could change a bit. 2-bit fields are
 * packed so that value i = 128·g + 32·s + l (l < 32) sits at bits
 * 2s..2s+1 of byte 32·g + l. */

/* Q2_K block {u8 scales[16]; u8 qs[64]; f16 d; f16 dmin} (84 bytes) → y (256):
 * sub-block j (16 values) has scale d·(scales[j] & 15) and min
 * dmin·(scales[j] >> 4). */
TUNE_HD static inline void tune_dequant_q2_k(const uint8_t *blk, float *y)
{
    const uint8_t *sc = blk, *qs = blk + 16;
    float d = tune_f16_to_f32(tune_load_u16(blk + 80));
    float dmin = tune_f16_to_f32(tune_load_u16(blk + 82));
    for (int j = 0; j < 16; j++) {
        float dl = d * (float)(sc[j] & 15);
        float ml = dmin * (float)(sc[j] >> 4);
        for (int k = 0; k < 16; k++) {
            int i = 16 * j + k;
            int q = (qs[32 * (i >> 7) + (i & 31)] >> (2 * ((i >> 5) & 3))) & 3;
            y[i] = tune_mul_add_unfused((float)q, dl, -ml);
        }
    }
}

/* Q3_K block {u8 hmask[32]; u8 qs[64]; u8 scales[12]; f16 d} (110 bytes) → y (256):
 * 16 sub-blocks of 16 with 6-bit scales minus 32: the low 4 bits of scale j
 * are the low (j < 8) or high nibble of scales[j % 8], the top 2 bits are
 * bits 2·(j / 4)..+1 of scales[8 + j % 4]. A value is its 2-bit field,
 * minus 4 when bit i / 32 of hmask[i % 32] is clear; y = (d·s)·q. */
TUNE_HD static inline void tune_dequant_q3_k(const uint8_t *blk, float *y)
{
    const uint8_t *hm = blk, *qs = blk + 32, *sc = blk + 96;
    float d = tune_f16_to_f32(tune_load_u16(blk + 108));
    for (int j = 0; j < 16; j++) {
        int low = j < 8 ? sc[j] & 15 : sc[j - 8] >> 4;
        int high = (sc[8 + (j & 3)] >> (2 * (j >> 2))) & 3;
        float dl = d * (float)((low | high << 4) - 32);
        for (int k = 0; k < 16; k++) {
            int i = 16 * j + k;
            int q = (qs[32 * (i >> 7) + (i & 31)] >> (2 * ((i >> 5) & 3))) & 3;
            if (!((hm[i & 31] >> (i >> 5)) & 1)) q -= 4;
            y[i] = dl * (float)q;
        }
    }
}

/* The 6-bit scale and min of sub-block j (0..7) of Q4_K and Q5_K, packed in
 * 12 bytes as ggml's get_scale_min_k4 unpacks them. */
TUNE_HD static inline void tune_k4_scale_min(const uint8_t *s, int j, int *sc, int *m)
{
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 15) | (s[j - 4] >> 6) << 4;
        *m = (s[j + 4] >> 4) | (s[j] >> 6) << 4;
    }
}

/* Q4_K block {f16 d; f16 dmin; u8 scales[12]; u8 qs[128]} (144 bytes) and
 * Q5_K block {f16 d; f16 dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]} (176
 * bytes) → y (256): 8 sub-blocks of 32; sub-block j is the low (j even) or
 * high nibbles of qs[32·(j / 2) ..+31], Q5_K adding bit j of qh[l] as the
 * fifth bit of value 32·j + l (qh NULL for Q4_K); y = (d·sc)·q − dmin·m. */
TUNE_HD static inline void tune_dequant_k4_k5(const uint8_t *blk, const uint8_t *qh, const uint8_t *qs, float *y)
{
    float d = tune_f16_to_f32(tune_load_u16(blk));
    float dmin = tune_f16_to_f32(tune_load_u16(blk + 2));
    for (int j = 0; j < 8; j++) {
        int sc, m;
        tune_k4_scale_min(blk + 4, j, &sc, &m);
        float dl = d * (float)sc, ml = dmin * (float)m;
        const uint8_t *q = qs + 32 * (j >> 1);
        int shift = 4 * (j & 1);
        for (int l = 0; l < 32; l++) {
            int v = ((q[l] >> shift) & 15) | (qh ? ((qh[l] >> j) & 1) << 4 : 0);
            y[32 * j + l] = tune_mul_add_unfused((float)v, dl, -ml);
        }
    }
}

TUNE_HD static inline void tune_dequant_q4_k(const uint8_t *blk, float *y)
{
    tune_dequant_k4_k5(blk, NULL, blk + 16, y);
}

TUNE_HD static inline void tune_dequant_q5_k(const uint8_t *blk, float *y)
{
    tune_dequant_k4_k5(blk, blk + 16, blk + 48, y);
}

/* Q6_K block {u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d} (210 bytes) → y (256):
 * in half g (128 values), value r = 64·h + l takes nibble h of
 * ql[64·g + l], and value r = 32·s + l takes bits 2s..2s+1 of qh[32·g + l]
 * as its top two bits; q = the 6-bit value − 32; y = (d·scales[i / 16])·q. */
TUNE_HD static inline void tune_dequant_q6_k(const uint8_t *blk, float *y)
{
    const uint8_t *ql = blk, *qh = blk + 128, *sc = blk + 192;
    float d = tune_f16_to_f32(tune_load_u16(blk + 208));
    for (int j = 0; j < 16; j++) {
        float dl = d * (float)(int8_t)sc[j];
        for (int k = 0; k < 16; k++) {
            int i = 16 * j + k, g = i >> 7, r = i & 127;
            int lo = (ql[64 * g + (r & 63)] >> (4 * (r >> 6))) & 15;
            int hi = (qh[32 * g + (r & 31)] >> (2 * (r >> 5))) & 3;
            y[i] = dl * (float)((lo | hi << 4) - 32);
        }
    }
}

/* NF4 (QLoRA): the 16 code values of bitsandbytes' table. */
#define TUNE_NF4_VALUES                                                                     \
    { -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,             \
      -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,            \
      0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f, \
      0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f }

/* NF4 codes of 64 values (32 bytes), two a byte, the first value in the
 * high nibble as bitsandbytes packs them → y (64): code value · absmax. */
TUNE_HD static inline void tune_dequant_nf4_codes(const uint8_t *qs, float absmax, float *y)
{
    const float table[16] = TUNE_NF4_VALUES;
    for (int j = 0; j < 32; j++) {
        y[2 * j] = table[qs[j] >> 4] * absmax;
        y[2 * j + 1] = table[qs[j] & 15] * absmax;
    }
}

/* NF4 block of 64 values: {f32 absmax; u8 qs[32]} (36 bytes). */
TUNE_HD static inline void tune_dequant_nf4(const uint8_t *blk, float *y)
{
    union { uint32_t u; float f; } absmax = {tune_load_u32(blk)};
    tune_dequant_nf4_codes(blk + 4, absmax.f, y);
}

/* NF4 with double quantisation (QLoRA; bitsandbytes' quantize_4bit with
 * compress_statistics): each 64-value block keeps its absmax in 8 bits,
 * {u8 q; u8 qs[32]} (33 bytes), and the matrix's rows are followed by its
 * statistics {f32 offset; f32 absmax2[ceil(blocks / 256)]}. Block i of the
 * whole matrix (row-major, as bitsandbytes flattens it: row r's block b is
 * r · cols / 64 + b, so a group of 256 spans rows) has
 * absmax = code2[q] · absmax2[i / 256] + offset, rounded twice as
 * bitsandbytes' dequantize_blockwise and its separate `+= offset` round it;
 * code2 is bitsandbytes' signed 8-bit dynamic map (create_dynamic_map). */
#define TUNE_NF4_DQ_CODE_VALUES                                                                                      \
    {                                                                                                                \
      -0.99296874f, -0.9789063f, -0.96484375f, -0.9507812f, -0.93671876f, -0.92265624f, -0.9085938f,                 \
      -0.89453125f, -0.8804687f, -0.86640626f, -0.85234374f, -0.8382813f, -0.82421875f, -0.8101562f,                 \
      -0.79609376f, -0.78203124f, -0.7679688f, -0.75390625f, -0.7398437f, -0.72578126f, -0.7117188f,                 \
      -0.6976563f, -0.68359375f, -0.6695312f, -0.65546876f, -0.6414063f, -0.6273438f, -0.61328125f,                  \
      -0.5992187f, -0.58515626f, -0.5710938f, -0.5570313f, -0.54296875f, -0.5289062f, -0.5148437f,                   \
      -0.50078124f, -0.4867187f, -0.47265625f, -0.45859373f, -0.44453126f, -0.43046874f, -0.41640624f,               \
      -0.40234375f, -0.38828123f, -0.37421876f, -0.36015624f, -0.34609374f, -0.33203125f, -0.31796873f,              \
      -0.30390626f, -0.28984374f, -0.27578127f, -0.26171875f, -0.24765624f, -0.23359375f, -0.21953125f,              \
      -0.20546874f, -0.19140625f, -0.17734376f, -0.16328125f, -0.14921875f, -0.13515624f, -0.12109375f,              \
      -0.107031256f, -0.09859375f, -0.09578126f, -0.092968754f, -0.09015625f, -0.08734375f, -0.08453125f,            \
      -0.08171876f, -0.07890625f, -0.07609375f, -0.07328125f, -0.070468746f, -0.067656256f, -0.06484375f,            \
      -0.06203125f, -0.059218753f, -0.05640625f, -0.05359375f, -0.05078125f, -0.04796875f, -0.04515625f,             \
      -0.042343747f, -0.03953125f, -0.036718752f, -0.03390625f, -0.03109375f, -0.028281251f, -0.02546875f,           \
      -0.02265625f, -0.019843752f, -0.01703125f, -0.01421875f, -0.01140625f, -0.00971875f, -0.009156249f,            \
      -0.00859375f, -0.00803125f, -0.00746875f, -0.00690625f, -0.00634375f, -0.00578125f, -0.0052187503f,            \
      -0.0046562497f, -0.00409375f, -0.0035312497f, -0.00296875f, -0.00240625f, -0.00184375f, -0.0012812499f,        \
      -0.0009437501f, -0.00083125f, -0.00071875006f, -0.0006062501f, -0.00049375003f, -0.00038125002f,               \
      -0.00026875004f, -0.00015625001f, -8.875e-05f, -6.625e-05f, -4.375e-05f, -2.1249998e-05f, -7.75e-06f,          \
      -3.2500002e-06f, -5.5000004e-07f, 0.0f, 5.5000004e-07f, 3.2500002e-06f, 7.75e-06f, 2.1249998e-05f,             \
      4.375e-05f, 6.625e-05f, 8.875e-05f, 0.00015625001f, 0.00026875004f, 0.00038125002f, 0.00049375003f,            \
      0.0006062501f, 0.00071875006f, 0.00083125f, 0.0009437501f, 0.0012812499f, 0.00184375f, 0.00240625f,            \
      0.00296875f, 0.0035312497f, 0.00409375f, 0.0046562497f, 0.0052187503f, 0.00578125f, 0.00634375f,               \
      0.00690625f, 0.00746875f, 0.00803125f, 0.00859375f, 0.009156249f, 0.00971875f, 0.01140625f, 0.01421875f,       \
      0.01703125f, 0.019843752f, 0.02265625f, 0.02546875f, 0.028281251f, 0.03109375f, 0.03390625f,                   \
      0.036718752f, 0.03953125f, 0.042343747f, 0.04515625f, 0.04796875f, 0.05078125f, 0.05359375f, 0.05640625f,      \
      0.059218753f, 0.06203125f, 0.06484375f, 0.067656256f, 0.070468746f, 0.07328125f, 0.07609375f,                  \
      0.07890625f, 0.08171876f, 0.08453125f, 0.08734375f, 0.09015625f, 0.092968754f, 0.09578126f, 0.09859375f,       \
      0.107031256f, 0.12109375f, 0.13515624f, 0.14921875f, 0.16328125f, 0.17734376f, 0.19140625f, 0.20546874f,       \
      0.21953125f, 0.23359375f, 0.24765624f, 0.26171875f, 0.27578127f, 0.28984374f, 0.30390626f, 0.31796873f,        \
      0.33203125f, 0.34609374f, 0.36015624f, 0.37421876f, 0.38828123f, 0.40234375f, 0.41640624f, 0.43046874f,        \
      0.44453126f, 0.45859373f, 0.47265625f, 0.4867187f, 0.50078124f, 0.5148437f, 0.5289062f, 0.54296875f,           \
      0.5570313f, 0.5710938f, 0.58515626f, 0.5992187f, 0.61328125f, 0.6273438f, 0.6414063f, 0.65546876f,             \
      0.6695312f, 0.68359375f, 0.6976563f, 0.7117188f, 0.72578126f, 0.7398437f, 0.75390625f, 0.7679688f,             \
      0.78203124f, 0.79609376f, 0.8101562f, 0.82421875f, 0.8382813f, 0.85234374f, 0.86640626f, 0.8804687f,           \
      0.89453125f, 0.9085938f, 0.92265624f, 0.93671876f, 0.9507812f, 0.96484375f, 0.9789063f, 0.99296874f,           \
      1.0f                                                                                                           \
    }

/* The absmax of block i, quantised as q, from the statistics stats. */
TUNE_HD static inline float tune_nf4_dq_absmax(const float *code2, const uint8_t *stats, size_t i, uint8_t q)
{
    union { uint32_t u; float f; } offset = {tune_load_u32(stats)};
    union { uint32_t u; float f; } absmax2 = {tune_load_u32(stats + 4 + 4 * (i / 256))};
    return tune_mul_add_unfused(code2[q], absmax2.f, offset.f);
}

/* Block i (blk) of a double-quantised NF4 matrix → y (64). */
TUNE_HD static inline void tune_dequant_nf4_dq(const float *code2, const uint8_t *stats, size_t i, const uint8_t *blk,
                                               float *y)
{
    tune_dequant_nf4_codes(blk + 1, tune_nf4_dq_absmax(code2, stats, i, blk[0]), y);
}

/* TUNE_NF4_DQ_CODE_VALUES for the CPU's code (a GPU keeps its own copy). */
extern const float tune_nf4_dq_code[256];

/* One block of a block type whose blocks stand alone (not F32/F16/BF16,
 * not NF4_DQ) → y (its block values); nothing for other types (callers
 * check the type first). */
TUNE_HD static inline void tune_dequant_block(uint32_t type, const uint8_t *blk, float *y)
{
    switch (type) {
    case TUNE_Q4_0: tune_dequant_q4_0(blk, y); break;
    case TUNE_Q4_1: tune_dequant_q4_1(blk, y); break;
    case TUNE_Q5_0: tune_dequant_q5_0(blk, y); break;
    case TUNE_Q5_1: tune_dequant_q5_1(blk, y); break;
    case TUNE_Q8_0: tune_dequant_q8_0(blk, y); break;
    case TUNE_Q2_K: tune_dequant_q2_k(blk, y); break;
    case TUNE_Q3_K: tune_dequant_q3_k(blk, y); break;
    case TUNE_Q4_K: tune_dequant_q4_k(blk, y); break;
    case TUNE_Q5_K: tune_dequant_q5_k(blk, y); break;
    case TUNE_Q6_K: tune_dequant_q6_k(blk, y); break;
    case TUNE_Q_NF4: tune_dequant_nf4(blk, y); break;
    default: break;
    }
}

/* Dequantises one row of cols values of any readable type whose rows stand
 * alone (all but NF4_DQ: tune_weight_row) into y (cols). */
void tune_dequant_row(uint32_t type, const uint8_t *row, float *y, int cols);

/* ---- Weights kept in blocks ------------------------------------------------
 * A frozen matrix of the model: fp32, or blocks of one storage type. */
typedef struct tune_weight {
    uint32_t type;   /* TUNE_Q_F32, or the block type of blocks */
    int rows, cols;  /* (out, in) of a linear layer; (V, C) of an embedding */
    float *f32;      /* (rows, cols) when type is TUNE_Q_F32, else NULL */
    uint8_t *blocks; /* (rows, tune_qtype_row_bytes(type, cols)) otherwise, then
                        tune_qtype_stats_bytes(type, rows, cols) */
} tune_weight;

/* Bytes the weight's values take (NF4_DQ's statistics included). */
size_t tune_weight_bytes(const tune_weight *w);
/* Row r of w in fp32 by the plain per-block maths (the reference the fast
 * paths are held to). y: (w->cols) */
void tune_weight_row(const tune_weight *w, int r, float *y);

/* Quantisers for load_in_8bit and load_in_4bit: one row of cols values
 * (a whole number of blocks) into blocks. Q8_0 as ggml's reference
 * quantiser rounds (d = absmax / 127, q = round(x / d)); NF4 as bitsandbytes
 * does (absmax of 64, the nearest code value of x / absmax). */
void tune_quantize_row(uint32_t type, const float *x, uint8_t *out, int cols); /* TUNE_Q8_0 or TUNE_Q_NF4 */
/* A whole matrix, rows in parallel: Q8_0, NF4, or NF4_DQ (whose statistics
 * need the whole matrix). NF4_DQ's 4-bit codes are NF4's; its absmax
 * values are quantised as bitsandbytes' CPU backend quantises them: offset
 * = their mean, then per 256, absmax2 = max |absmax − offset| and q = the
 * code its 65536-step lookup table gives (absmax − offset) · (1 / absmax2).
 * The mean is summed in double and rounded once; PyTorch's float32 mean
 * can differ from it in the last bit (its summation order follows the
 * CPU's vector width), so for one matrix the two agree exactly only when
 * the means do. x: (rows, cols)   out: tune_weight_bytes of the matrix */
void tune_quantize_rows(uint32_t type, const float *x, uint8_t *out, int rows, int cols);

/* y = beta·y + x·Wᵀ   (trans 0: x (N, w->cols), y (N, w->rows)), or
 * y = beta·y + x·W    (trans 1: x (N, w->rows), y (N, w->cols)),
 * on the blocks: each thread dequantises a bounded tile of rows at a time
 * (never the whole matrix) and multiplies it with BLAS; a few rows of x
 * (decoding) take a dot-product kernel that reads the blocks once. fp32
 * weights go straight to tune_cpu_matmul's BLAS product. */
void tune_weight_matmul(float *y, const float *x, const tune_weight *w, int N, int trans, float beta);
/* The plain reference: dequantise everything, then multiply in double. */
void tune_weight_matmul_ref(float *y, const float *x, const tune_weight *w, int N, int trans, float beta);
/* The whole matrix in fp32. out: (w->rows, w->cols) */
void tune_weight_dequantize(const tune_weight *w, float *out);
/* out[n] = row ids[n] of w, dequantised. out: (N, w->cols) */
void tune_weight_rows(float *out, const tune_weight *w, const int32_t *ids, int N);

#endif
