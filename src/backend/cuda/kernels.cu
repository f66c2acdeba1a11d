/* Elementwise, norm, RoPE, cross-entropy, dropout and optimizer kernels.
 * Each calls the TUNE_HD per-element maths the CPU loops call; every sum
 * runs in a fixed order (no float atomics), so reruns are bit-identical. */
#include <curand_kernel.h>
#include <math.h>

#include "cuda_internal.h"

extern "C" {
#include "tune/kernels.h"
#include "tune/llama.h"
#include "tune/rng.h"
}

#define GRID_STRIDE(i, n) \
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (size_t)gridDim.x * blockDim.x)

enum { ROW_THREADS = 256 }; /* one block per row: a power of two for the tree sums */

/* Sum of v over the block, in a fixed tree order; every thread gets it.
 * sh: (ROW_THREADS) shared. */
__device__ static double block_sum(double v, double *sh)
{
    sh[threadIdx.x] = v;
    __syncthreads();
    for (int stride = ROW_THREADS / 2; stride > 0; stride /= 2) {
        if ((int)threadIdx.x < stride) sh[threadIdx.x] += sh[threadIdx.x + stride];
        __syncthreads();
    }
    const double total = sh[0];
    __syncthreads(); /* sh is reused by the caller's next sum */
    return total;
}

__global__ static void scale_kernel(float *c, size_t n, float beta)
{
    GRID_STRIDE(i, n) c[i] = beta == 0.0f ? 0.0f : beta * c[i];
}

void tune_cuda_scale(float *c, size_t n, float beta)
{
    if (!n) return;
    scale_kernel<<<tune_cuda_blocks(n), TUNE_CUDA_THREADS>>>(c, n, beta);
    tune_cuda_launched("scale kernel");
}

/* y += x. y, x: (n) */
__global__ static void add_kernel(float *y, const float *x, size_t n)
{
    GRID_STRIDE(i, n) y[i] += x[i];
}

void tune_cuda_add(float *y, const float *x, size_t n)
{
    if (!n) return;
    add_kernel<<<tune_cuda_blocks(n), TUNE_CUDA_THREADS>>>(y, x, n);
    tune_cuda_launched("add kernel");
}

/* out: (N, C)   table: (V, C)   ids: (N) */
__global__ static void embedding_kernel(float *out, const float *table, const int32_t *ids, int N, int C)
{
    GRID_STRIDE(i, (size_t)N * C) out[i] = table[(size_t)ids[i / C] * C + i % C];
}

void tune_cuda_embedding(float *out, const float *table, const int32_t *ids, int N, int C)
{
    if ((size_t)N * C == 0) return;
    embedding_kernel<<<tune_cuda_blocks((size_t)N * C), TUNE_CUDA_THREADS>>>(out, table, ids, N, C);
    tune_cuda_launched("embedding kernel");
}

/* One thread per column, rows added in order n = 0, 1, ... as on the CPU,
 * so repeated ids sum the same way every run.
 * dtable: (V, C)   dout: (N, C)   ids: (N) */
__global__ static void embedding_backward_kernel(float *dtable, const float *dout, const int32_t *ids, int N, int C)
{
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    for (int n = 0; n < N; n++) dtable[(size_t)ids[n] * C + c] += dout[(size_t)n * C + c];
}

void tune_cuda_embedding_backward(float *dtable, const float *dout, const int32_t *ids, int N, int C)
{
    if (N == 0 || C == 0) return;
    embedding_backward_kernel<<<(C + TUNE_CUDA_THREADS - 1) / TUNE_CUDA_THREADS, TUNE_CUDA_THREADS>>>(dtable, dout,
                                                                                                      ids, N, C);
    tune_cuda_launched("embedding backward kernel");
}

/* One block per row. The sums are tune_rmsnorm_row's, in double, as a tree;
 * the per-element expressions are its own.
 * out, x: (N, C)   w: (C)   rstd: (N) */
__global__ static void rmsnorm_forward_kernel(float *out, float *rstd, const float *x, const float *w, int C,
                                              float eps)
{
    __shared__ double sh[ROW_THREADS];
    const size_t row = (size_t)blockIdx.x * C;
    double ss = 0.0;
    for (int i = threadIdx.x; i < C; i += ROW_THREADS) ss += (double)x[row + i] * x[row + i];
    ss = block_sum(ss, sh);
    const float r = 1.0f / sqrtf((float)(ss / C) + eps);
    for (int i = threadIdx.x; i < C; i += ROW_THREADS) out[row + i] = x[row + i] * r * w[i];
    if (threadIdx.x == 0) rstd[blockIdx.x] = r;
}

void tune_cuda_rmsnorm_forward(float *out, float *rstd, const float *x, const float *w, int N, int C, float eps)
{
    if (N == 0) return;
    rmsnorm_forward_kernel<<<N, ROW_THREADS>>>(out, rstd, x, w, C, eps);
    tune_cuda_launched("rmsnorm forward kernel");
}

/* As tune_rmsnorm_row_backward: dx += dout·w·rstd − x·k.
 * dx, dout, x: (N, C)   w: (C)   rstd: (N) */
__global__ static void rmsnorm_backward_kernel(float *dx, const float *dout, const float *x, const float *w,
                                               const float *rstd, int C)
{
    __shared__ double sh[ROW_THREADS];
    const size_t row = (size_t)blockIdx.x * C;
    double dot = 0.0;
    for (int i = threadIdx.x; i < C; i += ROW_THREADS) dot += (double)dout[row + i] * w[i] * x[row + i];
    dot = block_sum(dot, sh);
    const float r = rstd[blockIdx.x];
    const float k = (float)(dot / C) * r * r * r;
    for (int i = threadIdx.x; i < C; i += ROW_THREADS) dx[row + i] += dout[row + i] * w[i] * r - x[row + i] * k;
}

void tune_cuda_rmsnorm_backward(float *dx, const float *dout, const float *x, const float *w, const float *rstd,
                                int N, int C)
{
    if (N == 0) return;
    rmsnorm_backward_kernel<<<N, ROW_THREADS>>>(dx, dout, x, w, rstd, C);
    tune_cuda_launched("rmsnorm backward kernel");
}

/* The angle rounded to fp32 first (as Transformers), cos/sin in double.
 * cos, sin: (N, half)   pos: (N)   inv_freq: (half) */
__global__ static void rope_tables_kernel(float *cos_t, float *sin_t, const int32_t *pos, const float *inv_freq,
                                          int N, int half)
{
    GRID_STRIDE(e, (size_t)N * half) {
        const float angle = (float)pos[e / half] * inv_freq[e % half];
        cos_t[e] = (float)cos((double)angle);
        sin_t[e] = (float)sin((double)angle);
    }
}

void tune_cuda_rope_tables(float *cos_t, float *sin_t, const int32_t *pos, const float *inv_freq, int N, int half)
{
    if ((size_t)N * half == 0) return;
    rope_tables_kernel<<<tune_cuda_blocks((size_t)N * half), TUNE_CUDA_THREADS>>>(cos_t, sin_t, pos, inv_freq, N,
                                                                                 half);
    tune_cuda_launched("rope tables kernel");
}

/* One thread per pair (n, head, i): x[i] and x[i + hd/2].
 * x: (N, n_head, hd)   cos, sin: (N, hd/2) */
__global__ static void rope_kernel(float *x, const float *cos_t, const float *sin_t, int N, int n_head, int hd,
                                   int backward)
{
    const int half = hd / 2;
    GRID_STRIDE(e, (size_t)N * n_head * half) {
        const size_t nh = e / half, n = nh / n_head;
        const int i = (int)(e % half);
        float *v = x + nh * hd;
        const float c = cos_t[n * half + i], s = sin_t[n * half + i];
        if (backward)
            tune_rope_pair_backward(&v[i], &v[i + half], c, s);
        else
            tune_rope_pair(&v[i], &v[i + half], c, s);
    }
}

static void rope(float *x, const float *cos_t, const float *sin_t, int N, int n_head, int hd, int backward)
{
    const size_t pairs = (size_t)N * n_head * (hd / 2);
    if (!pairs) return;
    rope_kernel<<<tune_cuda_blocks(pairs), TUNE_CUDA_THREADS>>>(x, cos_t, sin_t, N, n_head, hd, backward);
    tune_cuda_launched("rope kernel");
}

void tune_cuda_rope_forward(float *x, const float *cos_t, const float *sin_t, int N, int n_head, int hd)
{
    rope(x, cos_t, sin_t, N, n_head, hd, 0);
}

void tune_cuda_rope_backward(float *dx, const float *cos_t, const float *sin_t, int N, int n_head, int hd)
{
    rope(dx, cos_t, sin_t, N, n_head, hd, 1);
}

__global__ static void swiglu_forward_kernel(float *out, const float *gate, const float *up, size_t n)
{
    GRID_STRIDE(i, n) out[i] = tune_swiglu(gate[i], up[i]);
}

void tune_cuda_swiglu_forward(float *out, const float *gate, const float *up, size_t n)
{
    if (!n) return;
    swiglu_forward_kernel<<<tune_cuda_blocks(n), TUNE_CUDA_THREADS>>>(out, gate, up, n);
    tune_cuda_launched("swiglu forward kernel");
}

__global__ static void swiglu_backward_kernel(float *dgate, float *dup, float *out, const float *dout,
                                              const float *gate, const float *up, size_t n)
{
    GRID_STRIDE(i, n) {
        const float o = tune_swiglu_backward(dout[i], gate[i], up[i], &dgate[i], &dup[i]);
        if (out) out[i] = o;
    }
}

void tune_cuda_swiglu_backward(float *dgate, float *dup, float *out, const float *dout, const float *gate,
                               const float *up, size_t n)
{
    if (!n) return;
    swiglu_backward_kernel<<<tune_cuda_blocks(n), TUNE_CUDA_THREADS>>>(dgate, dup, out, dout, gate, up, n);
    tune_cuda_launched("swiglu backward kernel");
}

/* One block per row: tune_logsumexp_row with the Σ exp in double as a tree,
 * and the row's loss lse − logit[target] in double into row_loss (0 and
 * lse 0 for an ignored row). lse: (N)   row_loss: (N)   logits: (N, V)   target: (N) */
__global__ static void cross_entropy_rows_kernel(float *lse, double *row_loss, const float *logits,
                                                 const int32_t *target, int V)
{
    __shared__ double sh[ROW_THREADS];
    __shared__ float shm[ROW_THREADS];
    const int n = blockIdx.x, t = target[n];
    if (t == TUNE_IGNORE_INDEX) { /* the whole block leaves: no barrier is reached */
        if (threadIdx.x == 0) {
            lse[n] = 0.0f;
            row_loss[n] = 0.0;
        }
        return;
    }
    const float *x = logits + (size_t)n * V;
    float m = x[0];
    for (int i = threadIdx.x; i < V; i += ROW_THREADS) m = x[i] > m ? x[i] : m;
    shm[threadIdx.x] = m;
    __syncthreads();
    for (int stride = ROW_THREADS / 2; stride > 0; stride /= 2) {
        if ((int)threadIdx.x < stride && shm[threadIdx.x + stride] > shm[threadIdx.x])
            shm[threadIdx.x] = shm[threadIdx.x + stride];
        __syncthreads();
    }
    m = shm[0];
    double sum = 0.0;
    for (int i = threadIdx.x; i < V; i += ROW_THREADS) sum += tune_expf(x[i] - m);
    sum = block_sum(sum, sh);
    if (threadIdx.x == 0) {
        const float l = m + (float)log(sum);
        lse[n] = l;
        row_loss[n] = (double)l - x[t];
    }
}

void tune_cuda_cross_entropy_forward(float *lse, double *row_loss, const float *logits, const int32_t *target, int N,
                                     int V)
{
    if (N == 0) return;
    cross_entropy_rows_kernel<<<N, ROW_THREADS>>>(lse, row_loss, logits, target, V);
    tune_cuda_launched("cross-entropy kernel");
}

/* One thread: x added in order from 0, then into *acc, as the CPU. x: (n) */
__global__ static void add_sum_kernel(double *acc, const double *x, size_t n)
{
    double sum = 0.0;
    for (size_t i = 0; i < n; i++) sum += x[i];
    *acc += sum;
}

void tune_cuda_add_sum(double *acc, const double *x, size_t n)
{
    add_sum_kernel<<<1, 1>>>(acc, x, n);
    tune_cuda_launched("sum kernel");
}

/* In place: scale·(softmax − onehot); rows without a target become 0.
 * Blocks in y walk the rows. logits: (N, V)   lse, target: (N) */
__global__ static void cross_entropy_backward_kernel(float *logits, const float *lse, const int32_t *target, int N,
                                                     int V, float scale)
{
    for (int n = blockIdx.y; n < N; n += gridDim.y) {
        float *row = logits + (size_t)n * V;
        const int t = target[n];
        for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < V; i += gridDim.x * blockDim.x) {
            if (t == TUNE_IGNORE_INDEX) {
                row[i] = 0.0f;
                continue;
            }
            float g = scale * tune_expf(row[i] - lse[n]);
            if (i == t) g -= scale;
            row[i] = g;
        }
    }
}

void tune_cuda_cross_entropy_backward(float *logits, const float *lse, const int32_t *target, int N, int V,
                                      float scale)
{
    if (N == 0 || V == 0) return;
    const dim3 grid((V + TUNE_CUDA_THREADS - 1) / TUNE_CUDA_THREADS, N < 65535 ? N : 65535);
    cross_entropy_backward_kernel<<<grid, TUNE_CUDA_THREADS>>>(logits, lse, target, N, V, scale);
    tune_cuda_launched("cross-entropy backward kernel");
}

/* One thread per 32-bit word w: elements base + 32w .. base + 32w + 31 are
 * Philox blocks (base + 32w)/4 .. +7 of counter (block, stream). cuRAND's
 * curand_init(seed, subsequence, offset) starts at counter
 * (offset/4 low, offset/4 high, subsequence low, subsequence high) under key
 * seed (offset a multiple of 4 starts on a block's first word), and each
 * curand4 returns one block and steps to the next: the words of
 * tune_rng_u32(seed, stream, index). bits: (⌈n/32⌉) */
__global__ static void dropout_mask_kernel(uint32_t *bits, size_t n_words, float p, uint64_t seed, uint64_t stream,
                                           uint64_t base)
{
    GRID_STRIDE(w, n_words) {
        curandStatePhilox4_32_10_t state;
        curand_init(seed, stream, base + 32 * (uint64_t)w, &state);
        uint32_t word = 0;
        for (int k = 0; k < 8; k++) {
            const uint4 r = curand4(&state);
            const uint32_t u[4] = {r.x, r.y, r.z, r.w};
            for (int j = 0; j < 4; j++)
                word |= (uint32_t)tune_dropout_keep(tune_rng_word_to_uniform(u[j]), p) << (4 * k + j);
        }
        bits[w] = word;
    }
}

void tune_cuda_dropout_mask(uint32_t *bits, size_t n, float p, uint64_t seed, uint64_t stream, uint64_t base)
{
    const size_t n_words = (n + 31) / 32;
    if (!n_words) return;
    dropout_mask_kernel<<<tune_cuda_blocks(n_words), TUNE_CUDA_THREADS>>>(bits, n_words, p, seed, stream, base);
    tune_cuda_launched("dropout mask kernel");
}

/* out = x·bit/(1−p), or out += it. __fmul_rn keeps the product from fusing
 * into the add, so the result is the CPU's bit for bit. out, x: (n) */
__global__ static void dropout_apply_kernel(float *out, const float *x, const uint32_t *bits, size_t n, float scale,
                                            int accumulate)
{
    GRID_STRIDE(i, n) {
        const float v = (bits[i / 32] >> (i % 32)) & 1u ? __fmul_rn(x[i], scale) : 0.0f;
        out[i] = accumulate ? out[i] + v : v;
    }
}

void tune_cuda_dropout_apply(float *out, const float *x, const uint32_t *bits, size_t n, float p, int accumulate)
{
    if (!n) return;
    dropout_apply_kernel<<<tune_cuda_blocks(n), TUNE_CUDA_THREADS>>>(out, x, bits, n, 1.0f / (1.0f - p), accumulate);
    tune_cuda_launched("dropout apply kernel");
}

/* params, exp_avg, exp_avg_sq, grads: (n) */
__global__ static void adamw_kernel(float *params, float *exp_avg, float *exp_avg_sq, const float *grads, size_t n,
                                    tune_adamw_coeffs c)
{
    GRID_STRIDE(i, n) tune_adamw_element(&params[i], &exp_avg[i], &exp_avg_sq[i], grads[i], &c);
}

void tune_cuda_adamw_update(float *params, float *exp_avg, float *exp_avg_sq, const float *grads, size_t n,
                            const tune_adamw_coeffs *c)
{
    if (!n) return;
    adamw_kernel<<<tune_cuda_blocks(n), TUNE_CUDA_THREADS>>>(params, exp_avg, exp_avg_sq, grads, n, *c);
    tune_cuda_launched("AdamW kernel");
}

/* One block per tensor: its fp32 norm from a double sum of squares.
 * norms: (n_tensors) */
__global__ static void tensor_norm_kernel(float *norms, const float *grads, const tune_span *tensors)
{
    __shared__ double sh[ROW_THREADS];
    const tune_span t = tensors[blockIdx.x];
    double sq = 0.0;
    for (size_t i = threadIdx.x; i < t.size; i += ROW_THREADS) sq += (double)grads[t.offset + i] * grads[t.offset + i];
    sq = block_sum(sq, sh);
    if (threadIdx.x == 0) norms[blockIdx.x] = (float)sqrt(sq);
}

/* The norm of the norms in tensor order, and the clipping coefficient:
 * result[0] = norm, result[1] = coefficient (1 without clipping). */
__global__ static void total_norm_kernel(float *result, const float *norms, int n_tensors, float max_norm)
{
    double total_sq = 0.0;
    for (int t = 0; t < n_tensors; t++) total_sq += (double)norms[t] * norms[t];
    const float total = (float)sqrt(total_sq);
    float coef = 1.0f;
    if (max_norm > 0.0f) {
        coef = max_norm / (total + 1e-6f);
        if (coef > 1.0f) coef = 1.0f;
    }
    result[0] = total;
    result[1] = coef;
}

__global__ static void clip_kernel(float *grads, const tune_span *tensors, const float *result)
{
    const tune_span t = tensors[blockIdx.x];
    const float coef = result[1];
    for (size_t i = threadIdx.x; i < t.size; i += blockDim.x) grads[t.offset + i] *= coef;
}

float tune_cuda_clip_grad_norm(float *grads, const tune_span *tensors, int n_tensors, float max_norm)
{
    static void *scratch; /* result (2), norms (n_tensors) */
    static size_t have;
    if (n_tensors == 0) return 0.0f;
    float *result = (float *)tune_cuda_scratch(&scratch, &have, (2 + (size_t)n_tensors) * sizeof(float),
                                               "clipping scratch");
    if (!result) return NAN;
    tensor_norm_kernel<<<n_tensors, ROW_THREADS>>>(result + 2, grads, tensors);
    tune_cuda_launched("gradient norm kernel");
    total_norm_kernel<<<1, 1>>>(result, result + 2, n_tensors, max_norm);
    tune_cuda_launched("total norm kernel");
    if (max_norm > 0.0f) {
        clip_kernel<<<n_tensors, TUNE_CUDA_THREADS>>>(grads, tensors, result);
        tune_cuda_launched("clipping kernel");
    }
    float total = NAN;
    if (tune_cuda_check(cudaMemcpy(&total, result, sizeof total, cudaMemcpyDeviceToHost), "gradient norm download"))
        return NAN;
    return total;
}
