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

/* ---- LLaMA layer maths (forward and backward of one row / pair / element) ---- */

/* RMSNorm of one row: out = x · rsqrt(mean(x²) + eps) · w, as Transformers
 * computes it in fp32. x, out: (C)   w: (C). Returns rstd for the backward. */
TUNE_HD static inline float tune_rmsnorm_row(float *out, const float *x, const float *w, int C, float eps)
{
    double ss = 0.0;
    for (int i = 0; i < C; i++) ss += (double)x[i] * x[i];
    const float rstd = 1.0f / sqrtf((float)(ss / C) + eps);
    for (int i = 0; i < C; i++) out[i] = x[i] * rstd * w[i];
    return rstd;
}

/* dx += d(out)/dx · dout for one row (w frozen: no dw).
 * dx, dout, x: (C)   w: (C) */
TUNE_HD static inline void tune_rmsnorm_row_backward(float *dx, const float *dout, const float *x,
                                                     const float *w, float rstd, int C)
{
    double dot = 0.0; /* Σ dout·w·x */
    for (int i = 0; i < C; i++) dot += (double)dout[i] * w[i] * x[i];
    const float k = (float)(dot / C) * rstd * rstd * rstd;
    for (int i = 0; i < C; i++) dx[i] += dout[i] * w[i] * rstd - x[i] * k;
}

/* Rotate-half RoPE on one pair (x0 = x[i], x1 = x[i + d/2]). */
TUNE_HD static inline void tune_rope_pair(float *x0, float *x1, float c, float s)
{
    const float a = *x0, b = *x1;
    *x0 = a * c - b * s;
    *x1 = b * c + a * s;
}

/* Its transpose (the rotation by −angle): the backward of tune_rope_pair. */
TUNE_HD static inline void tune_rope_pair_backward(float *d0, float *d1, float c, float s)
{
    const float a = *d0, b = *d1;
    *d0 = a * c + b * s;
    *d1 = b * c - a * s;
}

TUNE_HD static inline float tune_sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

/* SwiGLU: silu(g) · u. */
TUNE_HD static inline float tune_swiglu(float g, float u) { return g * tune_sigmoid(g) * u; }

/* Backward of tune_swiglu: *dg, *du from d(out). */
TUNE_HD static inline void tune_swiglu_backward(float dout, float g, float u, float *dg, float *du)
{
    const float sg = tune_sigmoid(g);
    *du = dout * g * sg;
    *dg = dout * u * sg * (1.0f + g * (1.0f - sg));
}

/* log Σ exp(x[i]) over one row, stable. x: (n), n ≥ 1 */
TUNE_HD static inline float tune_logsumexp_row(const float *x, int n)
{
    float m = x[0];
    for (int i = 1; i < n; i++) m = x[i] > m ? x[i] : m;
    double sum = 0.0;
    for (int i = 0; i < n; i++) sum += expf(x[i] - m);
    return m + (float)log(sum);
}

/* Softmax of one row in place; returns its log-sum-exp. p: (n), n ≥ 1 */
TUNE_HD static inline float tune_softmax_row(float *p, int n)
{
    const float lse = tune_logsumexp_row(p, n);
    for (int i = 0; i < n; i++) p[i] = expf(p[i] - lse);
    return lse;
}

/* Backward of a softmax row: ds = p ⊙ (dp − Σ p·dp), in place over dp.
 * dp, p: (n) */
TUNE_HD static inline void tune_softmax_row_backward(float *dp, const float *p, int n)
{
    double dot = 0.0;
    for (int i = 0; i < n; i++) dot += (double)p[i] * dp[i];
    for (int i = 0; i < n; i++) dp[i] = p[i] * (dp[i] - (float)dot);
}

/* Dropout keeps an element when its uniform u (0, 1] is above p; kept
 * elements are scaled by 1/(1−p) (inverted dropout). */
TUNE_HD static inline int tune_dropout_keep(float u, float p) { return u > p; }

/* ---- Optimizer (AdamW as torch.optim.AdamW's single-tensor path) -------- */

/* The per-step scalars, computed in double from the hyperparameters and the
 * step as torch does, then rounded to float as torch's kernels see them. */
typedef struct tune_adamw_coeffs {
    float decay;          /* 1 - lr·weight_decay */
    float lerp_weight;    /* 1 - beta1: m = lerp(m, g, 1 - beta1) */
    float beta2;
    float one_minus_beta2;
    float bc2_sqrt;       /* sqrt(1 - beta2^step) */
    float neg_step_size;  /* -lr / (1 - beta1^step) */
    float eps;
} tune_adamw_coeffs;

/* One element of an AdamW update, in torch's order of operations:
 * p *= 1 - lr·wd; m = lerp(m, g, 1-β1); v = v·β2 + (1-β2)·g·g;
 * p += -lr/bc1 · m / (sqrt(v)/sqrt(bc2) + eps). */
TUNE_HD static inline void tune_adamw_element(float *p, float *m, float *v, float g,
                                              const tune_adamw_coeffs *c)
{
    float pv = *p * c->decay;
    /* torch's lerp: the formula depends on which side of 0.5 the weight is. */
    const float w = c->lerp_weight;
    float mv = *m;
    mv = w < 0.5f ? mv + w * (g - mv) : g - (g - mv) * (1.0f - w);
    float vv = *v * c->beta2;
    vv = vv + c->one_minus_beta2 * g * g;
    const float denom = sqrtf(vv) / c->bc2_sqrt + c->eps;
    pv = pv + c->neg_step_size * mv / denom;
    *p = pv;
    *m = mv;
    *v = vv;
}

/* One tensor inside a flat buffer. */
typedef struct tune_span {
    size_t offset, size;
} tune_span;

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
