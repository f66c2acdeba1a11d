/* AdamW's per-step coefficients as PyTorch computes them; the update and
 * clipping are backend operations. */
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
