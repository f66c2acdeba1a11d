/* The CPU backend's table: host buffers and the tune_cpu_* kernels. */
#include <stdlib.h>
#include <string.h>

#include "tune/backend.h"

static void *cpu_alloc(size_t bytes) { return aligned_alloc(64, (bytes + 63) & ~(size_t)63); }

static void cpu_release(void *buf) { free(buf); }

/* Host to host: upload and download are copies (nothing when they are one array). */
static int cpu_upload(void *dst, const void *src, size_t bytes)
{
    if (dst != src && bytes) memcpy(dst, src, bytes);
    return 0;
}

/* Copies and zeroes of a layer's activations (megabytes) in slices of
 * 64 KiB shared between the threads: one thread alone moves about half as
 * much (the bench config's copies and zeroes: 19 against 10 ms a step). */
enum { SLICE_BYTES = 64 * 1024 };

/* dst ← src, or zeroes where src is NULL. */
static void sliced(void *dst, const void *src, size_t bytes)
{
    const long n = (long)((bytes + SLICE_BYTES - 1) / SLICE_BYTES);
#pragma omp parallel for if (n > 4)
    for (long i = 0; i < n; i++) {
        const size_t off = (size_t)i * SLICE_BYTES, len = bytes - off < SLICE_BYTES ? bytes - off : SLICE_BYTES;
        if (src) memcpy((char *)dst + off, (const char *)src + off, len);
        else memset((char *)dst + off, 0, len);
    }
}

static void cpu_copy(void *dst, const void *src, size_t bytes)
{
    if (dst != src) sliced(dst, src, bytes);
}

static void cpu_zero(void *dst, size_t bytes) { sliced(dst, NULL, bytes); }

static int cpu_finish(char *why, size_t why_size)
{
    if (why_size) why[0] = '\0';
    return 0;
}

static void cpu_memory(size_t *free_bytes, size_t *total_bytes) { *free_bytes = *total_bytes = 0; }

static void cpu_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *q, const float *k,
                                   const float *v, const float *out, const float *lse, const float *probs,
                                   const int32_t *start, const tune_attention_shape *s, float *scratch,
                                   int n_threads)
{
    (void)out, (void)lse; /* the CPU takes each row's Σ p·dp from the probabilities, made again as the forward did */
    tune_cpu_attention_backward(dq, dk, dv, dout, q, k, v, probs, start, s, scratch, n_threads);
}

static const tune_backend cpu = {
    .name = "cpu",
    .device = 0,
    .alloc = cpu_alloc,
    .release = cpu_release,
    .upload = cpu_upload,
    .download = cpu_upload,
    .copy = cpu_copy,
    .zero = cpu_zero,
    .finish = cpu_finish,
    .memory = cpu_memory,
    .matmul = tune_cpu_matmul,
    .embedding = tune_cpu_embedding,
    .weight_matmul = tune_weight_matmul,
    .weight_rows = tune_weight_rows,
    .embedding_backward = tune_cpu_embedding_backward,
    .rmsnorm_forward = tune_cpu_rmsnorm_forward,
    .rmsnorm_backward = tune_cpu_rmsnorm_backward,
    .rope_tables = tune_cpu_rope_tables,
    .rope_forward = tune_cpu_rope_forward,
    .rope_backward = tune_cpu_rope_backward,
    .attention_scratch = tune_cpu_attention_scratch,
    .attention_probs = tune_cpu_attention_probs,
    .attention_forward = tune_cpu_attention_forward,
    .attention_backward = cpu_attention_backward,
    .attention_cached = tune_cpu_attention_cached,
    .swiglu_forward = tune_cpu_swiglu_forward,
    .swiglu_backward = tune_cpu_swiglu_backward,
    .cross_entropy_forward = tune_cpu_cross_entropy_forward,
    .add_sum = tune_cpu_add_sum,
    .cross_entropy_backward = tune_cpu_cross_entropy_backward,
    .dropout_mask = tune_cpu_dropout_mask,
    .dropout_apply = tune_cpu_dropout_apply,
    .adamw_update = tune_cpu_adamw_update,
    .clip_grad_norm = tune_cpu_clip_grad_norm,
    .add = tune_cpu_add,
};

const tune_backend *tune_backend_cpu(void) { return &cpu; }
