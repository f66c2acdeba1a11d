/* Per-element maths written once: the CPU loops and the CUDA kernels both
 * call these, so the CPU tests cover the GPU's arithmetic. */
#ifndef TUNE_KERNELS_H
#define TUNE_KERNELS_H

#include <math.h>
#include <stdint.h>

#ifdef __CUDACC__
#define TUNE_HD __host__ __device__
#else
#define TUNE_HD
#endif

/* ---- Float formats: fp16 / bf16 <-> fp32 (safetensors, GGUF) ----------
 * Bit-exact with PyTorch's tensor conversions: round to nearest even; NaN
 * becomes 0x7E00 with its sign in fp16 and 0xFFFF in bf16. */

TUNE_HD static inline uint32_t tune_f32_bits(float f)
{
    union { float f; uint32_t u; } v;
    v.f = f;
    return v.u;
}

TUNE_HD static inline float tune_bits_f32(uint32_t u)
{
    union { float f; uint32_t u; } v;
    v.u = u;
    return v.f;
}

TUNE_HD static inline float tune_bf16_to_f32(uint16_t h)
{
    return tune_bits_f32((uint32_t)h << 16);
}

TUNE_HD static inline uint16_t tune_f32_to_bf16(float f)
{
    uint32_t u = tune_f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return 0xffff;
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

TUNE_HD static inline float tune_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
    if (exp == 0x1f) return tune_bits_f32(sign | 0x7f800000u | (mant << 13));
    if (exp != 0) return tune_bits_f32(sign | ((exp + 112u) << 23) | (mant << 13));
    if (mant == 0) return tune_bits_f32(sign);
    uint32_t e = 113; /* subnormal: shift the leading 1 into the implicit bit */
    while (!(mant & 0x400u)) { mant <<= 1; e--; }
    return tune_bits_f32(sign | (e << 23) | ((mant & 0x3ffu) << 13));
}

TUNE_HD static inline uint16_t tune_f32_to_f16(float f)
{
    uint32_t u = tune_f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return sign | 0x7e00;          /* NaN */
    if (a >= 0x477ff000u) return sign | 0x7c00;         /* >= 65520 rounds to inf */
    uint32_t m, shift;
    if (a >= 0x38800000u) {                             /* normal half */
        m = a - (112u << 23);                           /* rebias the exponent */
        shift = 13;
    } else {                                            /* subnormal half, or zero */
        uint32_t e = a >> 23;
        if (e < 102) return sign;                       /* below half the smallest subnormal */
        m = (a & 0x7fffffu) | 0x800000u;
        shift = 126 - e;
    }
    uint32_t r = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (r & 1u))) r++;   /* carries into the exponent as it should */
    return sign | (uint16_t)r;
}

#endif
