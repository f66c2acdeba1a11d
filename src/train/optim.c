/* AdamW and global-norm gradient clipping with PyTorch's semantics. */
#include <math.h>

#include "tune/train.h"

tune_adamw_coeffs tune_adamw_coeffs_make(double lr, double beta1, double beta2, double eps,
                                         double weight_decay, long step)
{
    /* torch computes these in Python floats (double) and hands them to the
     * fp32 kernels, which round them to float. */
    const double bc1 = 1.0 - pow(beta1, (double)step);
    const double bc2 = 1.0 - pow(beta2, (double)step);
    tune_adamw_coeffs c;
    c.decay = (float)(1.0 - lr * weight_decay);
    c.lerp_weight = (float)(1.0 - beta1);
    c.beta2 = (float)beta2;
    c.one_minus_beta2 = (float)(1.0 - beta2);
    c.bc2_sqrt = (float)sqrt(bc2);
    c.neg_step_size = (float)(-(lr / bc1));
    c.eps = (float)eps;
    return c;
}

void tune_adamw_update(float *params, float *exp_avg, float *exp_avg_sq, const float *grads, size_t n,
                       const tune_adamw_coeffs *c)
{
    #pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++)
        tune_adamw_element(&params[i], &exp_avg[i], &exp_avg_sq[i], grads[i], c);
}

float tune_clip_grad_norm(float *grads, const tune_span *tensors, int n_tensors, float max_norm)
{
    /* torch: the fp32 norm of each tensor, then the fp32 norm of those. */
    double total_sq = 0.0;
    for (int t = 0; t < n_tensors; t++) {
        const float *g = grads + tensors[t].offset;
        double sq = 0.0;
        for (size_t i = 0; i < tensors[t].size; i++) sq += (double)g[i] * g[i];
        const float norm = (float)sqrt(sq);
        total_sq += (double)norm * norm;
    }
    const float total = (float)sqrt(total_sq);
    if (max_norm > 0.0f) {
        float coef = max_norm / (total + 1e-6f);
        if (coef > 1.0f) coef = 1.0f;
        for (int t = 0; t < n_tensors; t++) {
            float *g = grads + tensors[t].offset;
            for (size_t i = 0; i < tensors[t].size; i++) g[i] *= coef;
        }
    }
    return total;
}
