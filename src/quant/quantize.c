/* Quantisers for load_in_8bit (Q8_0) and load_in_4bit (NF4). */
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

static void quantize_nf4(const float *x, uint8_t *out, int cols)
{
    for (int b = 0; b < cols / 64; b++, x += 64, out += 36) {
        float amax = 0.0f;
        for (int j = 0; j < 64; j++) amax = fmaxf(amax, fabsf(x[j]));
        memcpy(out, &amax, 4);
        const float inv = amax != 0.0f ? 1.0f / amax : 0.0f; /* an all-zero block: every code 7 (0.0) */
        for (int j = 0; j < 32; j++)
            out[4 + j] = (uint8_t)(nf4_code(x[2 * j] * inv) << 4 | nf4_code(x[2 * j + 1] * inv));
    }
}

void tune_quantize_row(uint32_t type, const float *x, uint8_t *out, int cols)
{
    if (type == TUNE_Q8_0) quantize_q8_0(x, out, cols);
    else quantize_nf4(x, out, cols);
}

void tune_quantize_rows(uint32_t type, const float *x, uint8_t *out, int rows, int cols)
{
    const size_t rb = tune_qtype_row_bytes(type, cols);
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) tune_quantize_row(type, x + (size_t)r * cols, out + r * rb, cols);
}
