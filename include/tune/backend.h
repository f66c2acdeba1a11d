/* Compute backends: cpu (BLAS + OpenMP) and cuda (cuBLAS + cuRAND + kernels)
 * offer the same small set of operations through one table, tune_backend.
 * The LLaMA passes, AdamW, clipping, evaluation and decoding call only the
 * table; every pointer they hand it is a buffer of that backend (host
 * memory for the CPU, device memory for CUDA). */
#ifndef TUNE_BACKEND_H
#define TUNE_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "tune/error.h"
#include "tune/kernels.h"
#include "tune/lora.h"
#include "tune/model.h"

/* Debian's OpenBLAS 0.3.21 may run its slower Haswell/Prescott kernels on an
 * AVX-512 CPU (it does not recognise the core). The library reads
 * OPENBLAS_CORETYPE only when it loads, so when the loaded core is not an
 * AVX-512 one and the CPU has AVX-512, this sets SkylakeX and re-executes
 * the program once. An OPENBLAS_CORETYPE the user set is kept as it is (no
 * re-execution); TUNE_KEEP_BLAS_CORE=1 turns the re-execution off too. */
void tune_cpu_prefer_fast_blas(char **argv);
/* OpenBLAS's build, the kernels in use and who chose them, e.g.
 * "OpenBLAS 0.3.21 ... Haswell MAX_THREADS=64, Haswell kernels
 * (OPENBLAS_CORETYPE from the environment)". */
void tune_cpu_blas_describe(char *buf, size_t size);

/* Attention shape: B rows of T tokens, H query heads and Hkv key/value heads of hd. */
typedef struct tune_attention_shape {
    int B, T, H, Hkv, hd;
} tune_attention_shape;

/* The part of a training step an operation belongs to (for tracing):
 * RECOMPUTE is the forward that gradient checkpointing runs again inside
 * the backward. */
typedef enum { TUNE_PASS_FORWARD, TUNE_PASS_RECOMPUTE, TUNE_PASS_BACKWARD, TUNE_PASS_OPTIMIZER } tune_pass;

/* ---- The seam ------------------------------------------------------------
 * Operations are queued in order; a device backend may run them
 * asynchronously. Errors are sticky: `finish` (and download) report the
 * first. Every operation has the contract of the tune_cpu_* function of the
 * same name below, with these differences: attention_backward also takes the
 * forward's output; clip_grad_norm takes its spans as a backend buffer and
 * returns the norm to the host. */
typedef struct tune_backend {
    const char *name; /* "cpu" or "cuda" */
    int device;       /* 1: buffers are device memory, reached by upload/download */

    /* Buffers: alloc returns NULL when out of memory; upload/download
     * return 0, or -1 after an error (the reason from finish). */
    void *(*alloc)(size_t bytes);
    void (*release)(void *buf);
    int (*upload)(void *dst, const void *host_src, size_t bytes);
    int (*download)(void *host_dst, const void *src, size_t bytes);
    void (*copy)(void *dst, const void *src, size_t bytes);
    void (*zero)(void *dst, size_t bytes);
    /* Waits for the queued work: 0, or -1 with the first error in why (NULL when why_size is 0). */
    int (*finish)(char *why, size_t why_size);
    /* Free and total bytes of device memory (the CPU backend: 0 and 0). */
    void (*memory)(size_t *free_bytes, size_t *total_bytes);

    void (*matmul)(float *c, const float *a, const float *b, int M, int N, int K, int trans_a, int trans_b,
                   float alpha, float beta);
    void (*embedding)(float *out, const float *table, const int32_t *ids, int N, int C);
    /* Products with, and rows of, a model matrix (fp32 or blocks): tune_weight_matmul, tune_weight_rows. */
    void (*weight_matmul)(float *y, const float *x, const tune_weight *w, int N, int trans, float beta);
    void (*weight_rows)(float *out, const tune_weight *w, const int32_t *ids, int N);
    void (*embedding_backward)(float *dtable, const float *dout, const int32_t *ids, int N, int C);
    void (*rmsnorm_forward)(float *out, float *rstd, const float *x, const float *w, int N, int C, float eps);
    void (*rmsnorm_backward)(float *dx, const float *dout, const float *x, const float *w, const float *rstd,
                             int N, int C);
    void (*rope_tables)(float *cos, float *sin, const int32_t *pos, const float *inv_freq, int N, int half);
    void (*rope_forward)(float *x, const float *cos, const float *sin, int N, int n_head, int hd);
    void (*rope_backward)(float *dx, const float *cos, const float *sin, int N, int n_head, int hd);
    /* Floats of scratch the attention passes need for this shape. */
    size_t (*attention_scratch)(const tune_attention_shape *s, int n_threads);
    /* Floats of the probabilities attention_forward keeps for the backward
     * in a probs buffer; 0: this backend recomputes them (probs is NULL). */
    size_t (*attention_probs)(const tune_attention_shape *s);
    void (*attention_forward)(float *out, float *lse, float *probs, const float *q, const float *k,
                              const float *v, const int32_t *start, const tune_attention_shape *s, float *scratch,
                              int n_threads);
    void (*attention_backward)(float *dq, float *dk, float *dv, const float *dout, const float *q, const float *k,
                               const float *v, const float *out, const float *lse, const float *probs,
                               const int32_t *start, const tune_attention_shape *s, float *scratch,
                               int n_threads);
    void (*attention_cached)(float *att, const float *q, const float *kc, const float *vc, int p0, int n,
                             const tune_attention_shape *s, float *scratch, int n_threads);
    void (*swiglu_forward)(float *out, const float *gate, const float *up, size_t n);
    void (*swiglu_backward)(float *dgate, float *dup, float *out, const float *dout, const float *gate,
                            const float *up, size_t n);
    void (*cross_entropy_forward)(float *lse, double *row_loss, const float *logits, const int32_t *target, int N,
                                  int V);
    void (*add_sum)(double *acc, const double *x, size_t n);
    void (*cross_entropy_backward)(float *logits, const float *lse, const int32_t *target, int N, int V,
                                   float scale);
    void (*dropout_mask)(uint32_t *bits, size_t n, float p, uint64_t seed, uint64_t stream, uint64_t base);
    void (*dropout_apply)(float *out, const float *x, const uint32_t *bits, size_t n, float p, int accumulate);
    void (*adamw_update)(float *params, float *exp_avg, float *exp_avg_sq, const float *grads, size_t n,
                         const tune_adamw_coeffs *c);
    float (*clip_grad_norm)(float *grads, const tune_span *tensors, int n_tensors, float max_norm);
    void (*add)(float *y, const float *x, size_t n);
    /* What the operations that follow are for: the pass, the layer (-1:
     * none) and a static name ("q_proj", "attention"). Only a tracing table
     * (tune_trace_open) has it; callers go through tune_backend_label. */
    void (*label)(tune_pass pass, int layer, const char *what);
} tune_backend;

/* be->label when be has one (a tracing table); nothing otherwise. */
void tune_backend_label(const tune_backend *be, tune_pass pass, int layer, const char *what);

/* The `backend:` key: auto (CUDA when this build has it and a GPU is usable,
 * else the CPU), cpu, cuda. */
typedef enum { TUNE_BACKEND_AUTO = 0, TUNE_BACKEND_CPU, TUNE_BACKEND_CUDA } tune_backend_kind;

/* The table for kind. why receives the choice and its reason ("cuda: NVIDIA
 * H200 (...)", "cpu: this tune was built without CUDA (...)"). cuda without
 * a usable GPU is an input error giving the reason; never a silent CPU run. */
tune_status tune_backend_select(tune_backend_kind kind, const tune_backend **be, char *why, size_t why_size,
                                tune_error *err);

/* The CPU table (today's kernels). */
const tune_backend *tune_backend_cpu(void);
/* The CUDA table when this build has CUDA and a GPU is usable; otherwise
 * NULL with the reason in why. On success why names the GPU and its memory. */
const tune_backend *tune_backend_cuda(char *why, size_t why_size);
/* The GPU tune_backend_cuda opens (default 0), set before its first call:
 * data-parallel ranks take the one of their node-local rank. */
void tune_backend_cuda_pick(int ordinal);
/* The GPU and its memory, or why there is none (for `tune --version`). */
void tune_backend_cuda_describe(char *buf, size_t size);

/* A host array where the backend computes: the array itself on the CPU
 * (nothing is copied), a device copy otherwise. NULL when out of memory. */
void *tune_backend_mirror(const tune_backend *be, void *host, size_t bytes);
/* Releases what tune_backend_mirror made (nothing on the CPU). */
void tune_backend_unmirror(const tune_backend *be, void *buf, const void *host);
/* Copies a mirror back into its host array (nothing on the CPU, where
 * they are one). 0, or -1 after a backend error. */
int tune_backend_fetch(const tune_backend *be, void *host, const void *buf, size_t bytes);
/* The run error for a failed backend operation: "<name> backend failed
 * <doing>: <the first error finish reports>". */
tune_status tune_backend_failed(const tune_backend *be, const char *doing, tune_error *err);

/* The model's weights where be computes: a tune_model whose pointers are
 * backend buffers (on the CPU the model's own). Release with
 * tune_backend_model_free, never tune_model_free. */
tune_status tune_backend_model(const tune_backend *be, const tune_model *host, tune_model *view, tune_error *err);
void tune_backend_model_free(const tune_backend *be, tune_model *view, const tune_model *host);
/* The adapters where be computes: params mirrored, grads mirrored and
 * zeroed; modules and index are shared with host. */
tune_status tune_backend_lora(const tune_backend *be, tune_lora *host, tune_lora *view, tune_error *err);
void tune_backend_lora_free(const tune_backend *be, tune_lora *view, const tune_lora *host);

/* ---- Tracing (tune explain) -------------------------------------------------
 * A copy of a backend's table whose operations call the real ones between two
 * clock reads and record each one: its pass, layer and label (from
 * tune_backend_label), shape, FLOPs, bytes moved and time. On a device each
 * recorded operation is waited for, so its time is its own. The table's
 * functions have no context argument, so one trace at a time per process. */

/* FLOPs and bytes moved of one operation, by the formulas the trace uses. */
typedef struct tune_cost {
    double flops, bytes;
} tune_cost;

/* c (M, N) = op(a)·op(b), + c when accumulate: 2·M·N·K FLOPs; reads a and b (and c), writes c. */
tune_cost tune_cost_matmul(long M, long N, long K, int accumulate);
/* x·Wᵀ (trans 0: (N, cols) → (N, rows)) or dy·W (trans 1: (N, rows) → (N, cols)) with a model
 * matrix: 2·N·rows·cols FLOPs; reads the matrix as stored (its blocks when quantised). */
tune_cost tune_cost_weight_matmul(const tune_weight *w, long N, int trans, int accumulate);
/* Causal attention: q·kᵀ and p·v over the lower triangle, 2·2·B·H·T²·hd / 2
 * FLOPs forward; the backward's four products twice that. */
tune_cost tune_cost_attention(const tune_attention_shape *s, int backward);
/* Model FLOPs of one training token at sequence length T, as the benchmarks
 * count them: 4 × (frozen linear + lm_head parameters) + 6 × lora_params
 * (the A and B matrices) + 6 × layers × T × attention width (H·hd: causal
 * attention, forward and backward). Recomputation is overhead, not work. */
double tune_model_flops_per_token(const tune_model_config *cfg, double lora_params, long T);

typedef struct tune_trace_op {
    tune_pass pass;
    int layer;             /* -1: outside the layers */
    const char *what;      /* the label ("q_proj", "attention", "head"); NULL when none */
    const char *op;        /* the table's operation: "matmul", "weight_matmul", ... */
    const char *dtype;     /* the storage of the model matrix it reads ("Q4_1"); NULL for none */
    const char *shape_fmt; /* how tune_trace_op_shape prints dims */
    long dims[5];
    double flops, bytes, seconds;
} tune_trace_op;

typedef struct tune_trace {
    tune_trace_op *ops; /* (n) in the order they ran */
    size_t n, cap;
    double seconds;     /* from tune_trace_record(1) to tune_trace_record(0) */
    int oom;            /* an operation could not be recorded: the trace is incomplete */
} tune_trace;

/* Traces real into t (emptied): *traced is the table to run instead of
 * real; recording starts with tune_trace_record(1). TUNE_ERR_RUN while
 * another trace is open. attention_cached (decoding) is passed through
 * unrecorded. */
tune_status tune_trace_open(const tune_backend *real, tune_trace *t, const tune_backend **traced, tune_error *err);
/* Starts (1) or stops (0) recording, after waiting for queued work; the
 * time between the two is t->seconds. */
void tune_trace_record(int on);
/* Ends the trace; the traced table must not be used afterwards. t keeps its ops. */
void tune_trace_close(void);
void tune_trace_free(tune_trace *t);
/* "layer 3 q_proj weight_matmul". */
void tune_trace_op_name(const tune_trace_op *op, char *buf, size_t size);
/* "2048×576 · (576×576)ᵀ Q4_1". */
void tune_trace_op_shape(const tune_trace_op *op, char *buf, size_t size);
/* "forward", "recompute", "backward", "optimizer". */
const char *tune_pass_name(tune_pass pass);

/* be's sgemm rate in GFLOP/s: the best of reps n×n×n products c = a·bᵀ (as
 * a linear layer computes) through be->matmul on its own buffers, after one
 * to warm up. */
tune_status tune_backend_sgemm_gflops(const tune_backend *be, int n, int reps, double *gflops, tune_error *err);

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
 * packing), so it never decreases along a row. Query head h reads kv head h / (H / Hkv). scratch:
 * tune_cpu_attention_scratch floats (a block of every thread's query rows against T keys).
 * out, q: (B, T, H, hd)   k, v: (B, T, Hkv, hd)   lse: (B, H, T) kept for backward
 * start: (B, T)   probs: NULL, or tune_cpu_attention_probs floats where the
 * forward keeps the probabilities for the backward to read (no recompute). */
size_t tune_cpu_attention_scratch(const tune_attention_shape *s, int n_threads);
size_t tune_cpu_attention_probs(const tune_attention_shape *s);
void tune_cpu_attention_forward(float *out, float *lse, float *probs, const float *q, const float *k,
                                const float *v, const int32_t *start, const tune_attention_shape *s,
                                float *scratch, int n_threads);
void tune_cpu_attention_forward_ref(float *out, float *lse, const float *q, const float *k,
                                    const float *v, const int32_t *start, const tune_attention_shape *s);
/* Sets dq (B, T, H, hd) and dk, dv (B, T, Hkv, hd) from dout (B, T, H, hd);
 * reads the probabilities from probs, the forward's, or with probs NULL
 * recomputes them from q and k to the same bits. The heads of a group are
 * summed into dk and dv inside the products, in a fixed order. */
void tune_cpu_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *q,
                                 const float *k, const float *v, const float *probs, const int32_t *start,
                                 const tune_attention_shape *s, float *scratch, int n_threads);
void tune_cpu_attention_backward_ref(float *dq, float *dk, float *dv, const float *dout,
                                     const float *q, const float *k, const float *v,
                                     const int32_t *start, const tune_attention_shape *s);

/* Causal attention of n queries at positions p0.. against a key/value cache
 * holding positions 0 .. p0 + n − 1 (decoding). scratch: n_threads rows of
 * s->T floats, s->T the cache's capacity; s->B = 1.
 * att, q: (n, H, hd)   kc, vc: (capacity, Hkv, hd) */
void tune_cpu_attention_cached(float *att, const float *q, const float *kc, const float *vc, int p0, int n,
                               const tune_attention_shape *s, float *scratch, int n_threads);

/* out = silu(gate) · up. out, gate, up: (n) */
void tune_cpu_swiglu_forward(float *out, const float *gate, const float *up, size_t n);
/* Sets dgate, dup: (n) from dout: (n), and out (n), unless NULL, to the
 * forward's output again: its sigmoid is taken here anyway, so a backward
 * that needs the output gets it without a pass of its own. */
void tune_cpu_swiglu_backward(float *dgate, float *dup, float *out, const float *dout, const float *gate,
                              const float *up, size_t n);

/* Cross-entropy of each row against target[n]: row_loss[n] = lse − the
 * target's logit, in double (TUNE_IGNORE_INDEX: no loss, 0 and lse 0); lse
 * kept for the backward. logits: (N, V)   target, lse, row_loss: (N) */
void tune_cpu_cross_entropy_forward(float *lse, double *row_loss, const float *logits, const int32_t *target,
                                    int N, int V);
/* *acc += x[0] + x[1] + ... + x[n − 1], summed in that order from 0. */
void tune_cpu_add_sum(double *acc, const double *x, size_t n);
/* Turns logits into scale · ∂loss_sum/∂logits in place; rows without a target become 0. */
void tune_cpu_cross_entropy_backward(float *logits, const float *lse, const int32_t *target, int N,
                                     int V, float scale);

/* dtable[ids[n]] += dout[n], rows added in order n = 0, 1, ...
 * dtable: (V, C)   dout: (N, C)   ids: (N) */
void tune_cpu_embedding_backward(float *dtable, const float *dout, const int32_t *ids, int N, int C);

/* Dropout keep-bits: bit e of bits (element e, LSB first in 32-bit words) is
 * set when the Philox word at (seed, stream, base + e) keeps it; the same for
 * any thread count. base must be a multiple of 32. bits: (⌈n/32⌉) */
void tune_cpu_dropout_mask(uint32_t *bits, size_t n, float p, uint64_t seed, uint64_t stream, uint64_t base);
/* out = x ⊙ mask, or out += x ⊙ mask with accumulate; mask = bit / (1 − p).
 * out, x: (n) */
void tune_cpu_dropout_apply(float *out, const float *x, const uint32_t *bits, size_t n, float p, int accumulate);

/* AdamW over n elements (tune_adamw_element). params, exp_avg, exp_avg_sq, grads: (n) */
void tune_cpu_adamw_update(float *params, float *exp_avg, float *exp_avg_sq, const float *grads, size_t n,
                           const tune_adamw_coeffs *c);

/* y += x, element by element (the sum of two micro-batches' gradients).
 * y, x: (n) */
void tune_cpu_add(float *y, const float *x, size_t n);

/* Gradient clipping as torch.nn.utils.clip_grad_norm_: the global L2 norm
 * over the tensors (each tensor's norm first, then the norm of those norms,
 * sums in a fixed order). When max_norm > 0 every gradient is multiplied by
 * min(1, max_norm / (norm + 1e-6)). Returns the norm before clipping.
 * grads: the flat buffer the spans index. */
float tune_cpu_clip_grad_norm(float *grads, const tune_span *tensors, int n_tensors, float max_norm);

#endif
