/* Causal grouped-query attention on the GPU, one warp per row and an online
 * softmax (running max and sum), so no T×T matrix is ever stored. Lane l
 * holds head dimensions l, l + 32, ...; dot products are summed across the
 * warp in a fixed butterfly order (every lane gets the same bits). The
 * backward recomputes the probabilities from the kept lse and writes each
 * gradient row from one warp, looping in a fixed order: no atomics, so reruns
 * are bit-identical.
 * Layouts: q, out, dq, dout: (B, T, H, hd)   k, v, dk, dv: (B, T, Hkv, hd)
 * lse, D: (B, H, T)   start: (B, T) */
#include <math.h>

#include "cuda_internal.h"

enum { WARPS = 4, MAX_HD = 256 };

__device__ static float warp_sum(float v)
{
    for (int m = 16; m > 0; m /= 2) v += __shfl_xor_sync(0xffffffffu, v, m);
    return v;
}

/* This lane's R elements of a head row x: (hd); 0 past hd. */
template <int R> __device__ static void load_row(float (&r)[R], const float *x, int hd)
{
    const int lane = threadIdx.x % 32;
#pragma unroll
    for (int i = 0; i < R; i++) r[i] = lane + 32 * i < hd ? x[lane + 32 * i] : 0.0f;
}

template <int R> __device__ static void store_row(float *x, const float (&r)[R], float mul, int hd)
{
    const int lane = threadIdx.x % 32;
#pragma unroll
    for (int i = 0; i < R; i++)
        if (lane + 32 * i < hd) x[lane + 32 * i] = r[i] * mul;
}

/* a · x over the head, x a row in memory. */
template <int R> __device__ static float dot_row(const float (&a)[R], const float *x, int hd)
{
    const int lane = threadIdx.x % 32;
    float s = 0.0f;
#pragma unroll
    for (int i = 0; i < R; i++)
        if (lane + 32 * i < hd) s += a[i] * x[lane + 32 * i];
    return warp_sum(s);
}

/* acc += w · x, x a row in memory. */
template <int R> __device__ static void axpy_row(float (&acc)[R], float w, const float *x, int hd)
{
    const int lane = threadIdx.x % 32;
#pragma unroll
    for (int i = 0; i < R; i++)
        if (lane + 32 * i < hd) acc[i] += w * x[lane + 32 * i];
}

/* The online softmax of one query row over keys [lo, hi] (lo ≤ hi) of kh,
 * vh (row stride kvd): acc = softmax(scale·q·kᵀ)·v; returns the lse. */
template <int R>
__device__ static float attend(float (&acc)[R], const float (&qr)[R], const float *kh, const float *vh, int lo,
                               int hi, size_t kvd, int hd, float scale)
{
    float m = -INFINITY, l = 0.0f;
#pragma unroll
    for (int i = 0; i < R; i++) acc[i] = 0.0f;
    for (int j = lo; j <= hi; j++) {
        const float s = dot_row(qr, kh + j * kvd, hd) * scale;
        const float m_new = fmaxf(m, s);
        const float corr = tune_expf(m - m_new), p = tune_expf(s - m_new); /* corr = 0 at the first key */
        l = l * corr + p;
#pragma unroll
        for (int i = 0; i < R; i++) acc[i] *= corr;
        axpy_row(acc, p, vh + j * kvd, hd);
        m = m_new;
    }
#pragma unroll
    for (int i = 0; i < R; i++) acc[i] /= l;
    return m + logf(l);
}

/* One warp per query row (b, h, t); consecutive warps take consecutive t of
 * one head, so they read the same keys from cache. */
struct rows {
    size_t row;
    int b, h, t;
};

__device__ static bool query_row(rows *r, const tune_attention_shape s)
{
    r->row = (size_t)blockIdx.x * WARPS + threadIdx.x / 32;
    if (r->row >= (size_t)s.B * s.H * s.T) return false;
    r->t = (int)(r->row % s.T);
    r->h = (int)(r->row / s.T % s.H);
    r->b = (int)(r->row / s.T / s.H);
    return true; /* r->row is also the (b, h, t) index of lse and D */
}

template <int R>
__global__ static void forward_kernel(float *out, float *lse, const float *q, const float *k, const float *v,
                                      const int32_t *start, const tune_attention_shape s, float scale)
{
    rows r;
    if (!query_row(&r, s)) return;
    const size_t kvd = (size_t)s.Hkv * s.hd, kv_off = (size_t)r.b * s.T * kvd + (size_t)(r.h / (s.H / s.Hkv)) * s.hd;
    const size_t q_off = (((size_t)r.b * s.T + r.t) * s.H + r.h) * s.hd;
    float qr[R], acc[R];
    load_row(qr, q + q_off, s.hd);
    const float l = attend(acc, qr, k + kv_off, v + kv_off, start[(size_t)r.b * s.T + r.t], r.t, kvd, s.hd, scale);
    store_row(out + q_off, acc, 1.0f, s.hd);
    if (threadIdx.x % 32 == 0) lse[r.row] = l;
}

/* D = Σ dout·out per query row: the Σ p·dp of the softmax backward. */
__global__ static void row_dot_kernel(float *D, const float *dout, const float *out, const tune_attention_shape s)
{
    rows r;
    if (!query_row(&r, s)) return;
    const size_t q_off = (((size_t)r.b * s.T + r.t) * s.H + r.h) * s.hd;
    float sum = 0.0f;
    for (int d = threadIdx.x % 32; d < s.hd; d += 32) sum += dout[q_off + d] * out[q_off + d];
    sum = warp_sum(sum);
    if (threadIdx.x % 32 == 0) D[r.row] = sum;
}

/* dq of one query row: scale · Σ_j p·(dp − D)·k_j over its visible keys. */
template <int R>
__global__ static void dq_kernel(float *dq, const float *dout, const float *q, const float *k, const float *v,
                                 const float *lse, const float *D, const int32_t *start, const tune_attention_shape s,
                                 float scale)
{
    rows r;
    if (!query_row(&r, s)) return;
    const size_t kvd = (size_t)s.Hkv * s.hd, kv_off = (size_t)r.b * s.T * kvd + (size_t)(r.h / (s.H / s.Hkv)) * s.hd;
    const size_t q_off = (((size_t)r.b * s.T + r.t) * s.H + r.h) * s.hd;
    float qr[R], dor[R], acc[R];
    load_row(qr, q + q_off, s.hd);
    load_row(dor, dout + q_off, s.hd);
#pragma unroll
    for (int i = 0; i < R; i++) acc[i] = 0.0f;
    const float lse_i = lse[r.row], D_i = D[r.row];
    for (int j = start[(size_t)r.b * s.T + r.t]; j <= r.t; j++) {
        const float *kj = k + kv_off + j * kvd;
        const float p = tune_expf(dot_row(qr, kj, s.hd) * scale - lse_i);
        const float dp = dot_row(dor, v + kv_off + j * kvd, s.hd);
        axpy_row(acc, p * (dp - D_i), kj, s.hd);
    }
    store_row(dq + q_off, acc, scale, s.hd);
}

/* dk, dv of one key row (b, j, kv head): the group's query heads in order,
 * each over the queries i ≥ j that see j (start never decreases, so they
 * end at the first i whose segment starts after j). */
template <int R>
__global__ static void dkv_kernel(float *dk, float *dv, const float *dout, const float *q, const float *k,
                                  const float *v, const float *lse, const float *D, const int32_t *start,
                                  const tune_attention_shape s, float scale)
{
    const size_t row = (size_t)blockIdx.x * WARPS + threadIdx.x / 32; /* (b, kvh, j) */
    if (row >= (size_t)s.B * s.Hkv * s.T) return;
    const int j = (int)(row % s.T), kvh = (int)(row / s.T % s.Hkv), b = (int)(row / s.T / s.Hkv);
    const int group = s.H / s.Hkv;
    const size_t kv_off = (((size_t)b * s.T + j) * s.Hkv + kvh) * s.hd, qd = (size_t)s.H * s.hd;
    const int32_t *st = start + (size_t)b * s.T;
    float kr[R], vr[R], dkr[R], dvr[R];
    load_row(kr, k + kv_off, s.hd);
    load_row(vr, v + kv_off, s.hd);
#pragma unroll
    for (int i = 0; i < R; i++) dkr[i] = dvr[i] = 0.0f;
    for (int g = 0; g < group; g++) {
        const int h = kvh * group + g;
        const size_t bh = (size_t)b * s.H + h; /* lse, D row (b, h, ·) */
        for (int i = j; i < s.T && st[i] <= j; i++) {
            const size_t q_off = ((size_t)b * s.T + i) * qd + (size_t)h * s.hd;
            const float p = tune_expf(dot_row(kr, q + q_off, s.hd) * scale - lse[bh * s.T + i]);
            axpy_row(dvr, p, dout + q_off, s.hd);
            const float dp = dot_row(vr, dout + q_off, s.hd);
            axpy_row(dkr, p * (dp - D[bh * s.T + i]), q + q_off, s.hd);
        }
    }
    store_row(dk + kv_off, dkr, scale, s.hd);
    store_row(dv + kv_off, dvr, 1.0f, s.hd);
}

/* Decoding: one warp per (t, h); query t sees cache positions 0 .. p0 + t.
 * att, q: (n, H, hd)   kc, vc: (capacity, Hkv, hd) */
template <int R>
__global__ static void cached_kernel(float *att, const float *q, const float *kc, const float *vc, int p0, int n,
                                     const tune_attention_shape s, float scale)
{
    const size_t row = (size_t)blockIdx.x * WARPS + threadIdx.x / 32; /* (t, h) */
    if (row >= (size_t)n * s.H) return;
    const int t = (int)(row / s.H), h = (int)(row % s.H);
    const size_t kvd = (size_t)s.Hkv * s.hd, kv_off = (size_t)(h / (s.H / s.Hkv)) * s.hd;
    float qr[R], acc[R];
    load_row(qr, q + row * s.hd, s.hd);
    attend(acc, qr, kc + kv_off, vc + kv_off, 0, p0 + t, kvd, s.hd, scale);
    store_row(att + row * s.hd, acc, 1.0f, s.hd);
}

/* Lanes' share of a head, rounded up to a power of two; 0 when hd is too large. */
static int lane_elems(int hd)
{
    for (int r = 1; r <= MAX_HD / 32; r *= 2)
        if (32 * r >= hd) return r;
    return 0;
}

static unsigned warp_blocks(size_t rows) { return (unsigned)((rows + WARPS - 1) / WARPS); }

/* Calls KERNEL<R> for this head size with the arguments that follow. */
#define DISPATCH(hd, what, KERNEL, grid, ...)                                    \
    do {                                                                         \
        switch (lane_elems(hd)) {                                                \
        case 1: KERNEL<1><<<grid, WARPS * 32>>>(__VA_ARGS__); break;             \
        case 2: KERNEL<2><<<grid, WARPS * 32>>>(__VA_ARGS__); break;             \
        case 4: KERNEL<4><<<grid, WARPS * 32>>>(__VA_ARGS__); break;             \
        case 8: KERNEL<8><<<grid, WARPS * 32>>>(__VA_ARGS__); break;             \
        default: tune_cuda_fail(what, "head size above 256 is not supported"); \
        }                                                                        \
        tune_cuda_launched(what);                                                \
    } while (0)

/* The forward's scale, as the CPU computes it. */
static float attn_scale(int hd) { return (float)(1.0 / sqrt((double)hd)); }

/* D (B, H, T). */
size_t tune_cuda_attention_scratch(const tune_attention_shape *s, int n_threads)
{
    (void)n_threads;
    return (size_t)s->B * s->H * s->T;
}

/* The kernels recompute the probabilities in the backward: none are kept. */
size_t tune_cuda_attention_probs(const tune_attention_shape *s)
{
    (void)s;
    return 0;
}

void tune_cuda_attention_forward(float *out, float *lse, float *probs, const float *q, const float *k,
                                 const float *v, const int32_t *start, const tune_attention_shape *s, float *scratch,
                                 int n_threads)
{
    (void)probs;
    (void)scratch;
    (void)n_threads;
    const size_t rows = (size_t)s->B * s->H * s->T;
    if (!rows) return;
    DISPATCH(s->hd, "attention forward kernel", forward_kernel, warp_blocks(rows), out, lse, q, k, v, start, *s,
             attn_scale(s->hd));
}

void tune_cuda_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *q, const float *k,
                                  const float *v, const float *out, const float *lse, const float *probs,
                                  const int32_t *start, const tune_attention_shape *s, float *scratch,
                                  int n_threads)
{
    (void)probs;
    (void)n_threads;
    const size_t rows = (size_t)s->B * s->H * s->T, kv_rows = (size_t)s->B * s->Hkv * s->T;
    if (!rows) return;
    float *D = scratch;
    row_dot_kernel<<<warp_blocks(rows), WARPS * 32>>>(D, dout, out, *s);
    tune_cuda_launched("attention backward row dot kernel");
    DISPATCH(s->hd, "attention backward dq kernel", dq_kernel, warp_blocks(rows), dq, dout, q, k, v, lse, D, start, *s,
             attn_scale(s->hd));
    DISPATCH(s->hd, "attention backward dk/dv kernel", dkv_kernel, warp_blocks(kv_rows), dk, dv, dout, q, k, v, lse,
             D, start, *s, attn_scale(s->hd));
}

void tune_cuda_attention_cached(float *att, const float *q, const float *kc, const float *vc, int p0, int n,
                                const tune_attention_shape *s, float *scratch, int n_threads)
{
    (void)scratch;
    (void)n_threads;
    const size_t rows = (size_t)n * s->H;
    if (!rows) return;
    /* the scale as the CPU's decoding computes it */
    DISPATCH(s->hd, "cached attention kernel", cached_kernel, warp_blocks(rows), att, q, kc, vc, p0, n, *s,
             1.0f / sqrtf((float)s->hd));
}
