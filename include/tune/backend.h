/* Compute backends: cpu (BLAS + OpenMP) and cuda (cuBLAS + cuRAND + kernels)
 * offer the same small set of operations. */
#ifndef TUNE_BACKEND_H
#define TUNE_BACKEND_H

#include <stddef.h>
#include <stdint.h>

/* Debian's OpenBLAS 0.3.21 may run its slower Haswell/Prescott kernels on an
 * AVX-512 CPU (it does not recognise the core, or the environment pins it).
 * The library reads OPENBLAS_CORETYPE only when it loads, so when the loaded
 * core is not an AVX-512 one and the CPU has AVX-512, this sets SkylakeX and
 * re-executes the program once. TUNE_KEEP_BLAS_CORE=1 turns it off. */
void tune_cpu_prefer_fast_blas(char **argv);
/* The OpenBLAS core in use, e.g. "SkylakeX". */
const char *tune_cpu_blas_core(void);

/* CUDA backend (built with `make CUDA=1`). tune_cuda_probe says whether a
 * usable GPU is present; without one, or in a build without CUDA, it returns
 * 0 and writes the reason into why. */
int tune_cuda_probe(char *why, unsigned long why_size);

#ifdef TUNE_CUDA
/* out (M, N) = a (M, K) · b(N, K)ᵀ on the GPU, all pointers in device memory,
 * row-major as everywhere in tune. Returns 0 on success. */
int tune_cuda_matmul_nt(float *out, const float *a, const float *b, int M, int N, int K);
/* Inverted-dropout mask from the shared Philox stream: mask[i] is 0 or
 * 1/(1-p), kept exactly where tune_cpu_dropout_mask keeps element base + i
 * of (seed, stream). Device memory. */
int tune_cuda_dropout_mask(float *mask, long n, float p, unsigned long long seed,
                           unsigned long long stream, unsigned long long base);
#endif
/* ---- Operations of the forward and backward passes (CPU: BLAS + OpenMP) ----
 * Row-major fp32 throughout. A backward accumulates (+=) into its gradient
 * unless it says "sets". Each fast kernel with a loop of its own has a plain
 * reference version (suffix _ref) that the tests compare it with. */

/* Loops with less work than this (elements, or multiply-adds / 64) stay on
 * one thread: an OpenMP fork and barrier cost more, above all on a busy machine. */
#define TUNE_CPU_PARALLEL_MIN 32768


/* c = alpha · op(a) · op(b) + beta · c, op(x) = xᵀ when the trans flag is set.
 * Sets OpenBLAS to one thread and splits the product between OpenMP threads.
 * c: (M, N)   op(a): (M, K)   op(b): (K, N); a, b stored as given (lda = their row length). */
void tune_cpu_matmul(float *c, const float *a, const float *b, int M, int N, int K, int trans_a,
                     int trans_b, float alpha, float beta);
void tune_cpu_matmul_ref(float *c, const float *a, const float *b, int M, int N, int K, int trans_a,
                         int trans_b, float alpha, float beta);

/* out[n] = table[ids[n]]; ids already checked to lie in [0, V).
 * out: (N, C)   table: (V, C)   ids: (N) */
void tune_cpu_embedding(float *out, const float *table, const int32_t *ids, int N, int C);

/* out = rmsnorm(x) · w, rstd kept. out, x: (N, C)   w: (C)   rstd: (N) */
void tune_cpu_rmsnorm_forward(float *out, float *rstd, const float *x, const float *w, int N, int C,
                              float eps);
/* dx += ∂out/∂x · dout. dx, dout, x: (N, C)   w: (C)   rstd: (N) */
void tune_cpu_rmsnorm_backward(float *dx, const float *dout, const float *x, const float *w,
                               const float *rstd, int N, int C);

/* cos/sin of pos[n] · inv_freq[i], computed in double and rounded once.
 * cos, sin: (N, half)   pos: (N)   inv_freq: (half) */
void tune_cpu_rope_tables(float *cos, float *sin, const int32_t *pos, const float *inv_freq, int N,
                          int half);
/* Rotate-half RoPE in place over every head: pairs (i, i + hd/2).
 * x: (N, n_head, hd)   cos, sin: (N, hd/2) */
void tune_cpu_rope_forward(float *x, const float *cos, const float *sin, int N, int n_head, int hd);
/* Its backward, in place on the gradient dx: (N, n_head, hd). */
void tune_cpu_rope_backward(float *dx, const float *cos, const float *sin, int N, int n_head, int hd);

/* Causal grouped-query attention with softmax in fp32. Query t of row b sees
 * keys [start[b·T + t], t]: start is where t's segment begins (0 without
 * packing), so it never decreases along a row. Query head h reads kv head h / (H / Hkv). scratch: per thread
 * 2·T·T floats, n_threads of them (tune_cpu_attention_scratch).
 * out, q: (B, T, H, hd)   k, v: (B, T, Hkv, hd)   lse: (B, H, T) kept for backward
 * start: (B, T) */
typedef struct tune_attention_shape {
    int B, T, H, Hkv, hd;
} tune_attention_shape;
size_t tune_cpu_attention_scratch(const tune_attention_shape *s, int n_threads);
void tune_cpu_attention_forward(float *out, float *lse, const float *q, const float *k, const float *v,
                                const int32_t *start, const tune_attention_shape *s, float *scratch,
                                int n_threads);
void tune_cpu_attention_forward_ref(float *out, float *lse, const float *q, const float *k,
                                    const float *v, const int32_t *start, const tune_attention_shape *s);
/* Sets dq (B, T, H, hd) and dk, dv (B, T, Hkv, hd) from dout (B, T, H, hd);
 * recomputes the probabilities from q, k and lse. dkv_head: (2, B, T, H, hd)
 * scratch for per-query-head key/value gradients, summed per group in a fixed order. */
void tune_cpu_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *q,
                                 const float *k, const float *v, const float *lse, const int32_t *start,
                                 const tune_attention_shape *s, float *scratch, float *dkv_head,
                                 int n_threads);
void tune_cpu_attention_backward_ref(float *dq, float *dk, float *dv, const float *dout,
                                     const float *q, const float *k, const float *v,
                                     const int32_t *start, const tune_attention_shape *s);

/* out = silu(gate) · up. out, gate, up: (n) */
void tune_cpu_swiglu_forward(float *out, const float *gate, const float *up, size_t n);
/* Sets dgate, dup: (n) from dout: (n). */
void tune_cpu_swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate,
                              const float *up, size_t n);

/* Cross-entropy of each row against target[n] (TUNE_IGNORE_INDEX: no loss).
 * Returns the summed loss (rows added in order) and keeps lse (N) for the backward.
 * logits: (N, V)   target: (N) */
double tune_cpu_cross_entropy_forward(float *lse, const float *logits, const int32_t *target, int N,
                                      int V);
/* Turns logits into scale · ∂loss_sum/∂logits in place; rows without a target become 0. */
void tune_cpu_cross_entropy_backward(float *logits, const float *lse, const int32_t *target, int N,
                                     int V, float scale);

/* Dropout keep-bits: bit e of bits (element e, LSB first in 32-bit words) is
 * set when the Philox word at (seed, stream, base + e) keeps it; the same for
 * any thread count. base must be a multiple of 32. bits: (⌈n/32⌉) */
void tune_cpu_dropout_mask(uint32_t *bits, size_t n, float p, uint64_t seed, uint64_t stream, uint64_t base);
/* out = x ⊙ mask, or out += x ⊙ mask with accumulate; mask = bit / (1 − p).
 * out, x: (n) */
void tune_cpu_dropout_apply(float *out, const float *x, const uint32_t *bits, size_t n, float p, int accumulate);

#endif
