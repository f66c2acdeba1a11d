/* Quantisers for load_in_8bit (Q8_0) and load_in_4bit (NF4, NF4_DQ). */
#include <math.h>
#include <string.h>

#include "tune/quant.h"

static void quantize_q8_0(const float *x, uint8_t *out, int cols)
{
    for (int b = 0; b < cols / 32; b++, x += 32, out += 34) {
        float amax = 0.0f;
        for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[j]));
        const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        const uint16_t h = tune_f32_to_f16(d);
        out[0] = (uint8_t)h, out[1] = (uint8_t)(h >> 8);
        for (int j = 0; j < 32; j++) out[2 + j] = (uint8_t)(int8_t)roundf(x[j] * id);
    }
}

/* bitsandbytes' decision points: the midpoints between neighbouring NF4
 * values; a normalised x takes the code of the number of points below it. */
static const float nf4_midpoints[15] = {
    -0.8480964004993439f, -0.6106329262256622f, -0.4599952697753906f, -0.33967943489551544f,
    -0.23460740596055984f, -0.13791173323988914f, -0.045525018125772476f, 0.03979014977812767f,
    0.1202552504837513f, 0.2035212516784668f, 0.2920137718319893f, 0.3893125355243683f,
    0.5016634166240692f, 0.6427869200706482f, 0.8614784181118011f,
};

static uint8_t nf4_code(float x)
{
    uint8_t code = 0;
    while (code < 15 && x > nf4_midpoints[code]) code++;
    return code;
}

static float absmax64(const float *x)
{
    float amax = 0.0f;
    for (int j = 0; j < 64; j++) amax = fmaxf(amax, fabsf(x[j]));
    return amax;
}

/* The 32 code bytes of 64 values x whose absmax is amax. */
static void nf4_codes(const float *x, float amax, uint8_t *qs)
{
    const float inv = amax != 0.0f ? 1.0f / amax : 0.0f; /* an all-zero block: every code 7 (0.0) */
    for (int j = 0; j < 32; j++) qs[j] = (uint8_t)(nf4_code(x[2 * j] * inv) << 4 | nf4_code(x[2 * j + 1] * inv));
}

static void quantize_nf4(const float *x, uint8_t *out, int cols)
{
    for (int b = 0; b < cols / 64; b++, x += 64, out += 36) {
        const float amax = absmax64(x);
        memcpy(out, &amax, 4);
        nf4_codes(x, amax, out + 4);
    }
}

/* The dynamic-map code of v ∈ [-1, 1] as bitsandbytes' CPU quantize_blockwise
 * (0.50) finds it: v goes to step k = (uint16)((v + 1) · 0.5 · 65535 + 0.5)
 * of a 65536-entry table whose entry k is the number of midpoints between
 * neighbouring codes below −1 + 2k / 65535, all in float32. Not quite the
 * nearest code: values near a midpoint can take the farther one. */
static uint8_t dynamic_code(float v, const float *midpoints)
{
    v = fminf(fmaxf(v, -1.0f), 1.0f);
    const float t = (v + 1.0f) * 0.5f * 65535.0f;
    const unsigned k = (unsigned)(t + 0.5f);
    const float grid = -1.0f + (2.0f * (float)k) / 65535.0f;
    int lo = 0, hi = 255; /* the first midpoint not below grid */
    while (lo < hi) {
        const int mid = (lo + hi) / 2;
        if (midpoints[mid] < grid) lo = mid + 1;
        else hi = mid;
    }
    return (uint8_t)lo;
}

/* NF4_DQ: NF4's codes; the absmax values' mean as offset; per group of 256
 * blocks, absmax2 = max |absmax − offset| and each block's 8-bit q. The
 * block absmax values are recomputed from x where needed (cheap beside
 * the codes) rather than held in a matrix-sized buffer. */
static void quantize_nf4_dq(const float *x, uint8_t *out, int rows, int cols)
{
    const size_t nb = (size_t)rows * (size_t)(cols / 64), ng = (nb + 255) / 256;
    if (!nb) return; /* nothing, not even statistics (tune_qtype_stats_bytes) */
    uint8_t *stats = out + nb * 33;
    double sum = 0.0; /* in block order, so every thread count gives the same offset */
    for (size_t i = 0; i < nb; i++) sum += absmax64(x + 64 * i);
    const float offset = (float)(sum / (double)nb);
    memcpy(stats, &offset, 4);
    float midpoints[255];
    for (int i = 0; i < 255; i++) midpoints[i] = 0.5f * (tune_nf4_dq_code[i] + tune_nf4_dq_code[i + 1]);
#pragma omp parallel for schedule(static)
    for (size_t g = 0; g < ng; g++) {
        const size_t i0 = 256 * g, i1 = i0 + 256 < nb ? i0 + 256 : nb;
        float amax2 = 0.0f;
        for (size_t i = i0; i < i1; i++) amax2 = fmaxf(amax2, fabsf(absmax64(x + 64 * i) - offset));
        memcpy(stats + 4 + 4 * g, &amax2, 4);
        const float inv = amax2 != 0.0f ? 1.0f / amax2 : 0.0f; /* all equal: every q 0, absmax = offset */
        for (size_t i = i0; i < i1; i++) {
            const float amax = absmax64(x + 64 * i);
            out[33 * i] = amax2 != 0.0f ? dynamic_code((amax - offset) * inv, midpoints) : 0;
            nf4_codes(x + 64 * i, amax, out + 33 * i + 1);
        }
    }
}

void tune_quantize_row(uint32_t type, const float *x, uint8_t *out, int cols)
{
    if (type == TUNE_Q8_0) quantize_q8_0(x, out, cols);
    else quantize_nf4(x, out, cols);
}

void tune_quantize_rows(uint32_t type, const float *x, uint8_t *out, int rows, int cols)
{
    if (type == TUNE_Q_NF4_DQ) {
        quantize_nf4_dq(x, out, rows, cols);
        return;
    }
    const size_t rb = tune_qtype_row_bytes(type, cols);
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) tune_quantize_row(type, x + (size_t)r * cols, out + r * rb, cols);
}
