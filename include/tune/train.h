/* Training: AdamW, gradient clipping, the training loop with gradient
 * accumulation, evaluation, logging, checkpoints and resume. */
#ifndef TUNE_TRAIN_H
#define TUNE_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "tune/error.h"
#include "tune/kernels.h"

/* ---- AdamW, as torch.optim.AdamW (single-tensor path) ---------------- */

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

/* step is the 1-based number of this update. */
tune_adamw_coeffs tune_adamw_coeffs_make(double lr, double beta1, double beta2, double eps,
                                         double weight_decay, long step);

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

/* Applies one update to n elements. params, exp_avg, exp_avg_sq, grads: (n). */
void tune_adamw_update(float *params, float *exp_avg, float *exp_avg_sq, const float *grads, size_t n,
                       const tune_adamw_coeffs *c);

/* ---- Gradient clipping, as torch.nn.utils.clip_grad_norm_ ------------- */

/* One tensor inside a flat buffer. */
typedef struct tune_span {
    size_t offset, size;
} tune_span;

/* The global L2 norm over the tensors (each tensor's norm first, then the
 * norm of those norms, sums in a fixed order). When max_norm > 0 every
 * gradient is multiplied by min(1, max_norm / (norm + 1e-6)). Returns the
 * norm before clipping. grads: the flat buffer the spans index. */
float tune_clip_grad_norm(float *grads, const tune_span *tensors, int n_tensors, float max_norm);

#endif
