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

/* A CPU loop over these maths that should vectorise (elementwise, or a max:
 * the result is the same in any order). */
#if defined(_OPENMP) && !defined(__CUDACC__)
#define TUNE_PRAGMA(x) _Pragma(#x)
#define TUNE_SIMD TUNE_PRAGMA(omp simd)
#else
#define TUNE_SIMD
#endif

/* A CPU function whose loops vectorise is built for AVX-512 and AVX2 too,
 * and the loader picks the version this CPU runs. The maths is unfused
 * (C11 forbids contraction) and elementwise, so every version gives the
 * same bits. */
#if !defined(__CUDACC__) && defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define TUNE_CPU_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define TUNE_CPU_CLONES
#endif
#if !defined(__CUDACC__) && defined(__GNUC__)
#define TUNE_ALWAYS_INLINE __attribute__((always_inline))
#else
#define TUNE_ALWAYS_INLINE
#endif

/* e^x within 1 ulp of expf for x in [-87.33, 88.72] (0 below: no subnormal
 * results; inf above; NaN stays NaN): Cephes' range reduction and degree-6
 * polynomial, the same arithmetic on every CPU and GPU (libm's expf is
 * neither), and branch-free so a loop of it vectorises: the range checks are
 * integer masks on the bits, since float compares may trap and would keep
 * the compiler from vectorising. */
TUNE_HD static inline float tune_expf(float x)
{
    union { float f; uint32_t u; } xb = {x};
    const uint32_t nan = -(uint32_t)((xb.u & 0x7fffffffu) > 0x7f800000u);
    const uint32_t big = -(uint32_t)((xb.u < 0x80000000u) & (xb.u > 0x42b17218u));   /* x > 88.7228391 */
    const uint32_t tiny = -(uint32_t)((xb.u >= 0x80000000u) & (xb.u > 0xc2aeac50u)); /* x < -87.3365479 */
    const uint32_t fixed = nan | big | tiny;
    union { uint32_t u; float f; } xr = {xb.u & ~fixed}; /* 0 where the result is set below */
    const float t = xr.f * 1.44269504088896341f;          /* x / ln 2 */
    const int n = (int)(t + copysignf(0.5f, t));
    const float fn = (float)n;
    const float r = (xr.f - fn * 0.693359375f) + fn * 2.12194440e-4f; /* x − n·ln 2 in two parts */
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    /* · 2^n as two normal powers of two, so n = -126 or 128 needs no special case */
    const int n1 = n / 2, n2 = n - n1;
    union { uint32_t u; float f; } s1 = {(uint32_t)(n1 + 127) << 23}, s2 = {(uint32_t)(n2 + 127) << 23};
    union { float f; uint32_t u; } y = {p * s1.f * s2.f};
    y.u = (y.u & ~fixed) | (0x7f800000u & big) | (xb.u & nan);
    return y.f;
}

/* ---- LLaMA layer maths (forward and backward of one row / pair / element) ---- */

/* RMSNorm of one row: out = x · rsqrt(mean(x²) + eps) · w, as Transformers
 * computes it in fp32. x, out: (C)   w: (C). Returns rstd for the backward. */
/* Sums in double over 8 interleaved lanes (term i into lane i % 8), the
 * lanes then added pairwise: a fixed order, so the same bits on every CPU,
 * and loops that vectorise (one running sum was an add every 4 cycles). */
#define TUNE_SUM_LANES 8

TUNE_HD static inline double tune_lanes_total(const double *s)
{
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

/* lanes[i % 8] += term for i < n, in index order; term is a double
 * expression of i. Whole groups of 8 (one vector of doubles), then the rest:
 * with the tail inside the loop's condition the compiler kept it scalar.
 * The functions below that use it are always inlined: their callers are
 * built per CPU (TUNE_CPU_CLONES), and a copy of their own is what lets
 * these loops use the wider vectors. */
#define TUNE_LANES_ADD(lanes, n, term)                                         \
    do {                                                                       \
        int i0_ = 0;                                                           \
        for (; i0_ + TUNE_SUM_LANES <= (n); i0_ += TUNE_SUM_LANES) {           \
            TUNE_SIMD                                                          \
            for (int l_ = 0; l_ < TUNE_SUM_LANES; l_++) {                      \
                const int i = i0_ + l_;                                        \
                (lanes)[l_] += (term);                                         \
            }                                                                  \
        }                                                                      \
        for (int l_ = 0; i0_ + l_ < (n); l_++) {                               \
            const int i = i0_ + l_;                                            \
            (lanes)[l_] += (term);                                             \
        }                                                                      \
    } while (0)

TUNE_HD static inline TUNE_ALWAYS_INLINE void tune_lanes_add(double *lanes, const float *a, const float *b, int n)
{
    TUNE_LANES_ADD(lanes, n, (double)a[i] * b[i]);
}

TUNE_HD static inline TUNE_ALWAYS_INLINE float tune_rmsnorm_row(float *out, const float *x, const float *w, int C,
                                                                float eps)
{
    double lanes[TUNE_SUM_LANES] = {0};
    tune_lanes_add(lanes, x, x, C);
    const double ss = tune_lanes_total(lanes);
    const float rstd = 1.0f / sqrtf((float)(ss / C) + eps);
    TUNE_SIMD
    for (int i = 0; i < C; i++) out[i] = x[i] * rstd * w[i];
    return rstd;
}

/* dx += d(out)/dx · dout for one row (w frozen: no dw).
 * dx, dout, x: (C)   w: (C) */
TUNE_HD static inline TUNE_ALWAYS_INLINE void tune_rmsnorm_row_backward(float *dx, const float *dout, const float *x,
                                                                        const float *w, float rstd, int C)
{
    double lanes[TUNE_SUM_LANES] = {0}; /* Σ dout·w·x */
    TUNE_LANES_ADD(lanes, C, (double)dout[i] * w[i] * x[i]);
    const double dot = tune_lanes_total(lanes);
    const float k = (float)(dot / C) * rstd * rstd * rstd;
    TUNE_SIMD
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

TUNE_HD static inline float tune_sigmoid(float x) { return 1.0f / (1.0f + tune_expf(-x)); }

/* SwiGLU: silu(g) · u. */
TUNE_HD static inline float tune_swiglu(float g, float u) { return g * tune_sigmoid(g) * u; }

/* Backward of tune_swiglu: *dg, *du from d(out). Returns tune_swiglu(g, u)
 * from the same sigmoid, for a backward that needs the forward's output. */
TUNE_HD static inline float tune_swiglu_backward(float dout, float g, float u, float *dg, float *du)
{
    const float sg = tune_sigmoid(g);
    *du = dout * g * sg;
    *dg = dout * u * sg * (1.0f + g * (1.0f - sg));
    return g * sg * u;
}

/* out[i] = e^(x[i] − shift), i < n (out may be x): whole vectors of 16,
 * then the last few padded to 16 in a copy, so that no element takes a
 * scalar path (rows of attention are short: a scalar remainder of up to 15
 * cost as much as the rest of the row). */
TUNE_HD static inline TUNE_ALWAYS_INLINE void tune_exp_shifted(float *out, const float *x, int n, float shift)
{
    int i0 = 0;
    for (; i0 + 16 <= n; i0 += 16) {
        TUNE_SIMD
        for (int i = 0; i < 16; i++) out[i0 + i] = tune_expf(x[i0 + i] - shift);
    }
    if (i0 < n) {
        float t[16] = {0};
        for (int i = 0; i0 + i < n; i++) t[i] = x[i0 + i];
        TUNE_SIMD
        for (int i = 0; i < 16; i++) t[i] = tune_expf(t[i] - shift);
        for (int i = 0; i0 + i < n; i++) out[i0 + i] = t[i];
    }
}

/* max x[i], i < n, n ≥ 1: 16 running maxima over whole vectors, then the
 * rest (the order does not change a maximum). */
TUNE_HD static inline TUNE_ALWAYS_INLINE float tune_row_max(const float *x, int n)
{
    float m16[16];
    for (int l = 0; l < 16; l++) m16[l] = x[0];
    int i0 = 0;
    for (; i0 + 16 <= n; i0 += 16) {
        TUNE_SIMD
        for (int l = 0; l < 16; l++) m16[l] = x[i0 + l] > m16[l] ? x[i0 + l] : m16[l];
    }
    float m = m16[0];
    for (int l = 1; l < 16; l++) m = m16[l] > m ? m16[l] : m;
    for (; i0 < n; i0++) m = x[i0] > m ? x[i0] : m;
    return m;
}

/* log Σ exp(x[i]) over one row, stable. x: (n), n ≥ 1. The exps are made
 * a chunk at a time and summed in lanes as above. Always inlined: the
 * callers are built per CPU (TUNE_CPU_CLONES), and a copy of their own is
 * what lets these loops use the wider vectors. */
TUNE_HD static inline TUNE_ALWAYS_INLINE float tune_logsumexp_row(const float *x, int n)
{
    const float m = tune_row_max(x, n);
    double lanes[TUNE_SUM_LANES] = {0};
    for (int i0 = 0; i0 < n; i0 += 64) {
        float e[64];
        const int k = n - i0 < 64 ? n - i0 : 64;
        tune_exp_shifted(e, x + i0, k, m);
        TUNE_LANES_ADD(lanes, k, (double)e[i]);
    }
    return m + (float)log(tune_lanes_total(lanes));
}

/* Softmax of one row in place; returns its log-sum-exp. p: (n), n ≥ 1.
 * One pass of exps: e^(p − max) is kept, summed and scaled by 1 / Σ
 * (exps were half the cost of attention's forward softmax, and taking
 * them again as e^(p − lse) did them twice). */
TUNE_HD static inline TUNE_ALWAYS_INLINE float tune_softmax_row(float *p, int n)
{
    const float m = tune_row_max(p, n);
    tune_exp_shifted(p, p, n, m);
    double lanes[TUNE_SUM_LANES] = {0};
    TUNE_LANES_ADD(lanes, n, (double)p[i]);
    const double sum = tune_lanes_total(lanes);
    const float inv = (float)(1.0 / sum);
    TUNE_SIMD
    for (int i = 0; i < n; i++) p[i] *= inv;
    return m + (float)log(sum);
}

/* Backward of a softmax row: ds = p ⊙ (dp − Σ p·dp), in place over dp.
 * dp, p: (n) */
TUNE_HD static inline TUNE_ALWAYS_INLINE void tune_softmax_row_backward(float *dp, const float *p, int n)
{
    double lanes[TUNE_SUM_LANES] = {0};
    tune_lanes_add(lanes, p, dp, n);
    const float dot = (float)tune_lanes_total(lanes);
    TUNE_SIMD
    for (int i = 0; i < n; i++) dp[i] = p[i] * (dp[i] - dot);
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
