/* What the CUDA backend's files share: error recording, launch sizes, and
 * the operations each file contributes to the table in cuda_backend.cu.
 * Everything runs on the default stream, in the order it is queued. */
#ifndef TUNE_CUDA_INTERNAL_H
#define TUNE_CUDA_INTERNAL_H

#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

extern "C" {
#include "tune/backend.h"
}

/* Records the first failure ("what: reason"); later ones are dropped. */
void tune_cuda_fail(const char *what, const char *reason);
/* Records e when it is an error; returns 0 on success, -1 otherwise. */
int tune_cuda_check(cudaError_t e, const char *what);
/* After a kernel launch: records a bad launch. */
void tune_cuda_launched(const char *what);
/* A device buffer of at least bytes kept between calls (per user), grown
 * when too small; NULL after recording the failure. */
void *tune_cuda_scratch(void **buf, size_t *have, size_t bytes, const char *what);

enum { TUNE_CUDA_THREADS = 256 };

/* Blocks for n elements at TUNE_CUDA_THREADS each (grid-stride loops cover the rest). */
static inline unsigned tune_cuda_blocks(size_t n)
{
    const size_t b = (n + TUNE_CUDA_THREADS - 1) / TUNE_CUDA_THREADS;
    return (unsigned)(b < 65536 ? b : 65536);
}

/* cuda_backend.cu: the table's matmul, and a column-major cuBLAS sgemm
 * c = op(a)·op(b) + beta·c with leading dimensions (alpha 1). */
void tune_cuda_matmul(float *c, const float *a, const float *b, int M, int N, int K, int trans_a, int trans_b,
                      float alpha, float beta);
void tune_cuda_sgemm_cm(int trans_a, int trans_b, int m, int n, int k, const float *a, int lda, const float *b,
                        int ldb, float beta, float *c, int ldc);

/* weights.cu */
void tune_cuda_weight_matmul(float *y, const float *x, const tune_weight *w, int N, int trans, float beta);
void tune_cuda_weight_rows(float *out, const tune_weight *w, const int32_t *ids, int N);

/* kernels.cu */
void tune_cuda_scale(float *c, size_t n, float beta);
void tune_cuda_add(float *y, const float *x, size_t n);
void tune_cuda_embedding(float *out, const float *table, const int32_t *ids, int N, int C);
void tune_cuda_embedding_backward(float *dtable, const float *dout, const int32_t *ids, int N, int C);
void tune_cuda_rmsnorm_forward(float *out, float *rstd, const float *x, const float *w, int N, int C, float eps);
void tune_cuda_rmsnorm_backward(float *dx, const float *dout, const float *x, const float *w, const float *rstd,
                                int N, int C);
void tune_cuda_rope_tables(float *cos, float *sin, const int32_t *pos, const float *inv_freq, int N, int half);
void tune_cuda_rope_forward(float *x, const float *cos, const float *sin, int N, int n_head, int hd);
void tune_cuda_rope_backward(float *dx, const float *cos, const float *sin, int N, int n_head, int hd);
void tune_cuda_swiglu_forward(float *out, const float *gate, const float *up, size_t n);
void tune_cuda_swiglu_backward(float *dgate, float *dup, float *out, const float *dout, const float *gate,
                               const float *up, size_t n);
void tune_cuda_cross_entropy_forward(float *lse, double *row_loss, const float *logits, const int32_t *target,
                                     int N, int V);
void tune_cuda_add_sum(double *acc, const double *x, size_t n);
void tune_cuda_cross_entropy_backward(float *logits, const float *lse, const int32_t *target, int N, int V,
                                      float scale);
void tune_cuda_dropout_mask(uint32_t *bits, size_t n, float p, uint64_t seed, uint64_t stream, uint64_t base);
void tune_cuda_dropout_apply(float *out, const float *x, const uint32_t *bits, size_t n, float p, int accumulate);
void tune_cuda_adamw_update(float *params, float *exp_avg, float *exp_avg_sq, const float *grads, size_t n,
                            const tune_adamw_coeffs *c);
float tune_cuda_clip_grad_norm(float *grads, const tune_span *tensors, int n_tensors, float max_norm);

/* attention.cu */
size_t tune_cuda_attention_scratch(const tune_attention_shape *s, int n_threads);
size_t tune_cuda_attention_probs(const tune_attention_shape *s);
void tune_cuda_attention_forward(float *out, float *lse, float *probs, const float *q, const float *k,
                                 const float *v, const int32_t *start, const tune_attention_shape *s, float *scratch,
                                 int n_threads);
void tune_cuda_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *q, const float *k,
                                  const float *v, const float *out, const float *lse, const float *probs,
                                  const int32_t *start, const tune_attention_shape *s, float *scratch,
                                  int n_threads);
void tune_cuda_attention_cached(float *att, const float *q, const float *kc, const float *vc, int p0, int n,
                                const tune_attention_shape *s, float *scratch, int n_threads);

#endif
