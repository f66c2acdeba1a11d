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

/* Inverted dropout: 1/(1−p) where the uniform u (0, 1] is above p, else 0. */
TUNE_HD static inline float tune_dropout_scale(float u, float p) { return u > p ? 1.0f / (1.0f - p) : 0.0f; }

#endif
