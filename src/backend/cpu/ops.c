/* CPU operations of the LLaMA passes: BLAS for products, OpenMP loops over
 * rows calling the per-element maths of tune/kernels.h. */
#include "tune/backend.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>

#include "tune/kernels.h"
#include "tune/llama.h"
#include "tune/rng.h"

/* BLAS runs on one thread and the work is split between OpenMP threads here:
 * a multithreaded pthread OpenBLAS next to OpenMP loops leaves two sets of
 * threads spinning against each other (measured 5-10x slower on 2 cores). */
void tune_cpu_matmul(float *c, const float *a, const float *b, int M, int N, int K, int trans_a,
                     int trans_b, float alpha, float beta)
{
    if (M == 0 || N == 0) return;
    if (K == 0) { /* BLAS rejects lda = 0; the product is empty */
        for (size_t i = 0; i < (size_t)M * N; i++) c[i] = beta == 0.0f ? 0.0f : beta * c[i];
        return;
    }
    openblas_set_num_threads(1);
    const int lda = trans_a ? M : K, ldb = trans_b ? K : N;
    const CBLAS_TRANSPOSE ta = trans_a ? CblasTrans : CblasNoTrans, tb = trans_b ? CblasTrans : CblasNoTrans;
    const int split_m = M >= N, len = split_m ? M : N;
    const int n_threads = (double)M * N * K < 64.0 * TUNE_CPU_PARALLEL_MIN ? 1 : omp_get_max_threads();
    /* Slices of whole 16-row (or column) blocks, one per thread. */
    const int slice = ((len + n_threads - 1) / n_threads + 15) / 16 * 16;
#pragma omp parallel for num_threads(n_threads) schedule(static, 1)
    for (int lo = 0; lo < len; lo += slice) {
        const int n = len - lo < slice ? len - lo : slice;
        if (split_m)
            cblas_sgemm(CblasRowMajor, ta, tb, n, N, K, alpha, trans_a ? a + lo : a + (size_t)lo * lda, lda, b, ldb,
                        beta, c + (size_t)lo * N, N);
        else
            cblas_sgemm(CblasRowMajor, ta, tb, M, n, K, alpha, a, lda, trans_b ? b + (size_t)lo * ldb : b + lo, ldb,
                        beta, c + lo, N);
    }
}

void tune_cpu_matmul_ref(float *c, const float *a, const float *b, int M, int N, int K, int trans_a,
                         int trans_b, float alpha, float beta)
{
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double sum = 0.0;
            for (int p = 0; p < K; p++) {
                const float av = trans_a ? a[(size_t)p * M + i] : a[(size_t)i * K + p];
                const float bv = trans_b ? b[(size_t)j * K + p] : b[(size_t)p * N + j];
                sum += (double)av * bv;
            }
            float *cij = &c[(size_t)i * N + j];
            *cij = alpha * (float)sum + (beta == 0.0f ? 0.0f : beta * *cij);
        }
}

void tune_cpu_embedding(float *out, const float *table, const int32_t *ids, int N, int C)
{
#pragma omp parallel for if ((size_t)N * C >= TUNE_CPU_PARALLEL_MIN)
    for (int n = 0; n < N; n++) {
        const float *row = table + (size_t)ids[n] * C;
        float *o = out + (size_t)n * C;
        for (int i = 0; i < C; i++) o[i] = row[i];
    }
}

void tune_cpu_embedding_backward(float *dtable, const float *dout, const int32_t *ids, int N, int C)
{
    for (int n = 0; n < N; n++) { /* in order: repeated ids add up the same way on every run */
        float *row = dtable + (size_t)ids[n] * C;
        const float *d = dout + (size_t)n * C;
        for (int c = 0; c < C; c++) row[c] += d[c];
    }
}

TUNE_CPU_CLONES void tune_cpu_rmsnorm_forward(float *out, float *rstd, const float *x, const float *w, int N,
                                              int C, float eps)
{
#pragma omp parallel for if ((size_t)N * C >= TUNE_CPU_PARALLEL_MIN)
    for (int n = 0; n < N; n++)
        rstd[n] = tune_rmsnorm_row(out + (size_t)n * C, x + (size_t)n * C, w, C, eps);
}

TUNE_CPU_CLONES void tune_cpu_rmsnorm_backward(float *dx, const float *dout, const float *x, const float *w,
                                               const float *rstd, int N, int C)
{
#pragma omp parallel for if ((size_t)N * C >= TUNE_CPU_PARALLEL_MIN)
    for (int n = 0; n < N; n++)
        tune_rmsnorm_row_backward(dx + (size_t)n * C, dout + (size_t)n * C, x + (size_t)n * C, w, rstd[n],
                                  C);
}

void tune_cpu_rope_tables(float *cos_t, float *sin_t, const int32_t *pos, const float *inv_freq, int N,
                          int half)
{
#pragma omp parallel for if ((size_t)N * half >= TUNE_CPU_PARALLEL_MIN)
    for (int n = 0; n < N; n++)
        for (int i = 0; i < half; i++) {
            /* The angle is rounded to fp32 first, as Transformers computes it. */
            const float angle = (float)pos[n] * inv_freq[i];
            cos_t[(size_t)n * half + i] = (float)cos((double)angle);
            sin_t[(size_t)n * half + i] = (float)sin((double)angle);
        }
}

static void rope_apply(float *x, const float *cos_t, const float *sin_t, int N, int n_head, int hd,
                       int backward)
{
    const int half = hd / 2;
#pragma omp parallel for if ((size_t)N * n_head * hd >= TUNE_CPU_PARALLEL_MIN)
    for (int n = 0; n < N; n++) {
        const float *c = cos_t + (size_t)n * half, *s = sin_t + (size_t)n * half;
        for (int h = 0; h < n_head; h++) {
            float *v = x + ((size_t)n * n_head + h) * hd;
            for (int i = 0; i < half; i++) {
                if (backward)
                    tune_rope_pair_backward(&v[i], &v[i + half], c[i], s[i]);
                else
                    tune_rope_pair(&v[i], &v[i + half], c[i], s[i]);
            }
        }
    }
}

void tune_cpu_rope_forward(float *x, const float *cos_t, const float *sin_t, int N, int n_head, int hd)
{
    rope_apply(x, cos_t, sin_t, N, n_head, hd, 0);
}

void tune_cpu_rope_backward(float *dx, const float *cos_t, const float *sin_t, int N, int n_head, int hd)
{
    rope_apply(dx, cos_t, sin_t, N, n_head, hd, 1);
}

TUNE_CPU_CLONES void tune_cpu_swiglu_forward(float *out, const float *gate, const float *up, size_t n)
{
#pragma omp parallel for simd if (n >= TUNE_CPU_PARALLEL_MIN)
    for (size_t i = 0; i < n; i++) out[i] = tune_swiglu(gate[i], up[i]);
}

TUNE_CPU_CLONES void tune_cpu_swiglu_backward(float *dgate, float *dup, float *out, const float *dout,
                                              const float *gate, const float *up, size_t n)
{
    if (out) {
#pragma omp parallel for simd if (n >= TUNE_CPU_PARALLEL_MIN)
        for (size_t i = 0; i < n; i++) out[i] = tune_swiglu_backward(dout[i], gate[i], up[i], &dgate[i], &dup[i]);
    } else {
#pragma omp parallel for simd if (n >= TUNE_CPU_PARALLEL_MIN)
        for (size_t i = 0; i < n; i++) tune_swiglu_backward(dout[i], gate[i], up[i], &dgate[i], &dup[i]);
    }
}

TUNE_CPU_CLONES void tune_cpu_cross_entropy_forward(float *lse, double *row_loss, const float *logits,
                                                    const int32_t *target, int N, int V)
{
#pragma omp parallel for if ((size_t)N * V >= TUNE_CPU_PARALLEL_MIN)
    for (int n = 0; n < N; n++) {
        const int ignored = target[n] == TUNE_IGNORE_INDEX;
        lse[n] = ignored ? 0.0f : tune_logsumexp_row(logits + (size_t)n * V, V);
        row_loss[n] = ignored ? 0.0 : (double)lse[n] - logits[(size_t)n * V + target[n]];
    }
}

void tune_cpu_add_sum(double *acc, const double *x, size_t n)
{
    double sum = 0.0; /* in order: the same on every thread count and backend */
    for (size_t i = 0; i < n; i++) sum += x[i];
    *acc += sum;
}

TUNE_CPU_CLONES void tune_cpu_cross_entropy_backward(float *logits, const float *lse, const int32_t *target, int N,
                                                     int V, float scale)
{
#pragma omp parallel for if ((size_t)N * V >= TUNE_CPU_PARALLEL_MIN)
    for (int n = 0; n < N; n++) {
        float *row = logits + (size_t)n * V;
        if (target[n] == TUNE_IGNORE_INDEX) {
            for (int i = 0; i < V; i++) row[i] = 0.0f;
            continue;
        }
        TUNE_SIMD
        for (int i = 0; i < V; i++) row[i] = scale * tune_expf(row[i] - lse[n]);
        row[target[n]] -= scale;
    }
}

void tune_cpu_dropout_mask(uint32_t *bits, size_t n, float p, uint64_t seed, uint64_t stream, uint64_t base)
{
    /* Word w holds elements 32w..32w+31: eight whole Philox blocks, since base is a multiple of 32. */
    const size_t n_words = (n + 31) / 32;
    const uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
#pragma omp parallel for if (n * 8 >= TUNE_CPU_PARALLEL_MIN)
    for (size_t w = 0; w < n_words; w++) {
        uint32_t word = 0;
        for (int k = 0; k < 8; k++) {
            const uint64_t b = (base + 32 * (uint64_t)w) / 4 + k;
            const uint32_t ctr[4] = {(uint32_t)b, (uint32_t)(b >> 32), (uint32_t)stream, (uint32_t)(stream >> 32)};
            uint32_t r[4];
            tune_philox4x32_10(ctr, key, r);
            for (int j = 0; j < 4; j++)
                word |= (uint32_t)tune_dropout_keep(tune_rng_word_to_uniform(r[j]), p) << (4 * k + j);
        }
        bits[w] = word;
    }
}

/* One word's 32 elements; acc is a constant at each call, so both loops vectorise. */
static inline void apply_word(float *out, const float *x, uint32_t word, int n, float scale, int acc)
{
    for (int j = 0; j < n; j++) {
        const float v = (word >> j) & 1u ? x[j] * scale : 0.0f;
        out[j] = acc ? out[j] + v : v;
    }
}

void tune_cpu_dropout_apply(float *out, const float *x, const uint32_t *bits, size_t n, float p, int accumulate)
{
    const float scale = 1.0f / (1.0f - p);
    const size_t n_words = (n + 31) / 32;
#pragma omp parallel for if (n >= TUNE_CPU_PARALLEL_MIN)
    for (size_t w = 0; w < n_words; w++) {
        const int len = n - 32 * w < 32 ? (int)(n - 32 * w) : 32;
        if (accumulate)
            apply_word(out + 32 * w, x + 32 * w, bits[w], len, scale, 1);
        else
            apply_word(out + 32 * w, x + 32 * w, bits[w], len, scale, 0);
    }
}

void tune_cpu_adamw_update(float *params, float *exp_avg, float *exp_avg_sq, const float *grads, size_t n,
                       const tune_adamw_coeffs *c)
{
#pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++)
        tune_adamw_element(&params[i], &exp_avg[i], &exp_avg_sq[i], grads[i], c);
}

void tune_cpu_add(float *y, const float *x, size_t n)
{
#pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++) y[i] += x[i];
}

/* Each tensor's Σ g² in lanes (tune_lanes_add), the tensors shared out
 * between threads a batch at a time: one sum in one double chain ran at an
 * add every 4 cycles (12 ms a step for SmolLM2's 4.9M LoRA values). Each
 * tensor's sum has one order whichever thread takes it, and the norms are
 * added in tensor order. */
enum { CLIP_BATCH = 256 };
TUNE_CPU_CLONES float tune_cpu_clip_grad_norm(float *grads, const tune_span *tensors, int n_tensors, float max_norm)
{
    /* torch: the fp32 norm of each tensor, then the fp32 norm of those. */
    size_t n = 0;
    for (int t = 0; t < n_tensors; t++) n += tensors[t].size;
    double total_sq = 0.0;
    for (int t0 = 0; t0 < n_tensors; t0 += CLIP_BATCH) {
        float norms[CLIP_BATCH];
        const int nt = n_tensors - t0 < CLIP_BATCH ? n_tensors - t0 : CLIP_BATCH;
#pragma omp parallel for schedule(dynamic) if (n > 65536)
        for (int t = 0; t < nt; t++) {
            double lanes[TUNE_SUM_LANES] = {0};
            const float *g = grads + tensors[t0 + t].offset;
            const size_t size = tensors[t0 + t].size, chunk = (size_t)1 << 30; /* a multiple of the lanes */
            for (size_t i = 0; i < size; i += chunk)
                tune_lanes_add(lanes, g + i, g + i, (int)(size - i < chunk ? size - i : chunk));
            norms[t] = (float)sqrt(tune_lanes_total(lanes));
        }
        for (int t = 0; t < nt; t++) total_sq += (double)norms[t] * norms[t];
    }
    const float total = (float)sqrt(total_sq);
    if (max_norm > 0.0f) {
        float coef = max_norm / (total + 1e-6f);
        if (coef > 1.0f) coef = 1.0f;
#pragma omp parallel for schedule(dynamic) if (n > 65536)
        for (int t = 0; t < n_tensors; t++) {
            float *g = grads + tensors[t].offset;
            TUNE_SIMD
            for (size_t i = 0; i < tensors[t].size; i++) g[i] *= coef;
        }
    }
    return total;
}
