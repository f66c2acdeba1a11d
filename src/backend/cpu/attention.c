/* Causal grouped-query attention on the CPU. For each (batch row, query
 * head) the queries go in blocks of ATTN_BLOCK rows; a block sees only the
 * keys from its first row's segment start to its last row, so the scores of
 * a block are one sgemm over that range (the causal half and, when packed,
 * the other segments are never computed), the softmax runs per row over the
 * keys the query may see, and the output is a second sgemm. The backward
 * recomputes the probabilities from the kept log-sum-exp instead of storing
 * (B, H, T, T). */
#include "tune/backend.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <string.h>

#include "tune/kernels.h"

enum { ATTN_BLOCK = 64 };

static int block_rows(int T) { return T < ATTN_BLOCK ? T : ATTN_BLOCK; }

size_t tune_cpu_attention_scratch(const tune_attention_shape *s, int n_threads)
{
    return (size_t)n_threads * 2 * block_rows(s->T) * (size_t)s->T;
}

/* The (b, h) slices; rows are strided by the packed head layout. */
typedef struct head_view {
    const float *q, *k, *v;
    int ldq, ldkv; /* row strides of q (and out, dq) and of k, v */
    size_t q_off, kv_off;
} head_view;

static head_view view(const float *q, const float *k, const float *v, const tune_attention_shape *s, int b,
                      int h)
{
    const int kh = h / (s->H / s->Hkv);
    head_view hv;
    hv.ldq = s->H * s->hd;
    hv.ldkv = s->Hkv * s->hd;
    hv.q_off = (size_t)b * s->T * hv.ldq + (size_t)h * s->hd;
    hv.kv_off = (size_t)b * s->T * hv.ldkv + (size_t)kh * s->hd;
    hv.q = q + hv.q_off;
    hv.k = k + hv.kv_off;
    hv.v = v + hv.kv_off;
    return hv;
}

static float attn_scale(int hd) { return (float)(1.0 / sqrt((double)hd)); }

/* One block of query rows [i0, i1) of one (b, h): it sees keys [k0, i1). */
typedef struct block {
    int i0, i1, k0;
} block;

/* P (i1 − i0, i1 − k0): the block's probabilities, row stride i1 − k0. With
 * have_lse they are recomputed from lse (T), otherwise the softmax is taken
 * and lse filled. start: (T) of this batch row. */
TUNE_CPU_CLONES static void probabilities(float *P, float *lse, int have_lse, const head_view *hv,
                                          const int32_t *start, const block *bl, int hd)
{
    const int rows = bl->i1 - bl->i0, nk = bl->i1 - bl->k0;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, nk, hd, attn_scale(hd), hv->q + (size_t)bl->i0 * hv->ldq,
                hv->ldq, hv->k + (size_t)bl->k0 * hv->ldkv, hv->ldkv, 0.0f, P, nk);
    for (int i = bl->i0; i < bl->i1; i++) {
        float *row = P + (size_t)(i - bl->i0) * nk;
        const int lo = start[i] - bl->k0, hi = i - bl->k0; /* visible keys, inclusive */
        if (have_lse) {
            TUNE_SIMD
            for (int j = lo; j <= hi; j++) row[j] = tune_expf(row[j] - lse[i]);
        } else {
            lse[i] = tune_softmax_row(row + lo, hi - lo + 1);
        }
        memset(row, 0, (size_t)lo * sizeof *row);
        memset(row + hi + 1, 0, (size_t)(nk - 1 - hi) * sizeof *row);
    }
}

static block block_of(const int32_t *start, int i0, int T)
{
    const block bl = {i0, i0 + ATTN_BLOCK < T ? i0 + ATTN_BLOCK : T, start[i0]}; /* starts never decrease */
    return bl;
}

void tune_cpu_attention_forward(float *out, float *lse, const float *q, const float *k, const float *v,
                                const int32_t *start, const tune_attention_shape *s, float *scratch,
                                int n_threads)
{
    const int T = s->T, hd = s->hd;
    const size_t work = (size_t)s->B * s->H * T * T * hd;
    openblas_set_num_threads(1); /* sgemm inside the OpenMP loop */
#pragma omp parallel for num_threads(n_threads) schedule(dynamic) if (work >= TUNE_CPU_PARALLEL_MIN)
    for (int bh = 0; bh < s->B * s->H; bh++) {
        const int b = bh / s->H, h = bh % s->H;
        const head_view hv = view(q, k, v, s, b, h);
        const int32_t *st = start + (size_t)b * T;
        float *P = scratch + (size_t)omp_get_thread_num() * 2 * block_rows(T) * T;
        for (int i0 = 0; i0 < T; i0 += ATTN_BLOCK) {
            const block bl = block_of(st, i0, T);
            const int rows = bl.i1 - bl.i0, nk = bl.i1 - bl.k0;
            probabilities(P, lse + (size_t)bh * T, 0, &hv, st, &bl, hd);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, hd, nk, 1.0f, P, nk,
                        hv.v + (size_t)bl.k0 * hv.ldkv, hv.ldkv, 0.0f, out + hv.q_off + (size_t)bl.i0 * hv.ldq, hv.ldq);
        }
    }
}

void tune_cpu_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *q,
                                 const float *k, const float *v, const float *lse, const int32_t *start,
                                 const tune_attention_shape *s, float *scratch, float *dkv_head,
                                 int n_threads)
{
    const int T = s->T, hd = s->hd, H = s->H, Hkv = s->Hkv;
    const float scale = attn_scale(hd);
    const size_t per_head = (size_t)s->B * T * H * hd;
    float *dk_head = dkv_head, *dv_head = dkv_head + per_head; /* (B, T, H, hd) each */
    const size_t work = per_head * T;
    openblas_set_num_threads(1); /* sgemm inside the OpenMP loop */
#pragma omp parallel for num_threads(n_threads) schedule(dynamic) if (work >= TUNE_CPU_PARALLEL_MIN)
    for (int bh = 0; bh < s->B * H; bh++) {
        const int b = bh / H, h = bh % H;
        const head_view hv = view(q, k, v, s, b, h);
        const int32_t *st = start + (size_t)b * T;
        float *P = scratch + (size_t)omp_get_thread_num() * 2 * block_rows(T) * T, *dP = P + (size_t)block_rows(T) * T;
        float *dKh = dk_head + hv.q_off, *dVh = dv_head + hv.q_off; /* (T, hd), row stride ldq */
        for (int t = 0; t < T; t++) {
            memset(dKh + (size_t)t * hv.ldq, 0, (size_t)hd * sizeof *dKh);
            memset(dVh + (size_t)t * hv.ldq, 0, (size_t)hd * sizeof *dVh);
        }
        for (int i0 = 0; i0 < T; i0 += ATTN_BLOCK) {
            const block bl = block_of(st, i0, T);
            const int rows = bl.i1 - bl.i0, nk = bl.i1 - bl.k0;
            const float *dO = dout + hv.q_off + (size_t)bl.i0 * hv.ldq, *Qb = hv.q + (size_t)bl.i0 * hv.ldq;
            const float *Kb = hv.k + (size_t)bl.k0 * hv.ldkv, *Vb = hv.v + (size_t)bl.k0 * hv.ldkv;
            probabilities(P, (float *)(lse + (size_t)bh * T), 1, &hv, st, &bl, hd);
            /* dV_h += Pᵀ dO;  dP = dO Vᵀ */
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nk, hd, rows, 1.0f, P, nk, dO, hv.ldq, 1.0f,
                        dVh + (size_t)bl.k0 * hv.ldq, hv.ldq);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, nk, hd, 1.0f, dO, hv.ldq, Vb, hv.ldkv, 0.0f,
                        dP, nk);
            for (int i = bl.i0; i < bl.i1; i++) {
                float *row = dP + (size_t)(i - bl.i0) * nk;
                const int lo = st[i] - bl.k0, hi = i - bl.k0;
                tune_softmax_row_backward(row + lo, P + (size_t)(i - bl.i0) * nk + lo, hi - lo + 1);
                memset(row, 0, (size_t)lo * sizeof *row);
                memset(row + hi + 1, 0, (size_t)(nk - 1 - hi) * sizeof *row);
            }
            /* dQ = scale dS K;  dK_h += scale dSᵀ Q */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, hd, nk, scale, dP, nk, Kb, hv.ldkv, 0.0f,
                        dq + hv.q_off + (size_t)bl.i0 * hv.ldq, hv.ldq);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nk, hd, rows, scale, dP, nk, Qb, hv.ldq, 1.0f,
                        dKh + (size_t)bl.k0 * hv.ldq, hv.ldq);
        }
    }
    /* Sum the query heads of each group, in head order. */
    const int group = H / Hkv;
#pragma omp parallel for num_threads(n_threads) if (work >= TUNE_CPU_PARALLEL_MIN)
    for (long n = 0; n < (long)s->B * T; n++)
        for (int kh = 0; kh < Hkv; kh++)
            for (int d = 0; d < hd; d++) {
                float sk = 0.0f, sv = 0.0f;
                for (int g = 0; g < group; g++) {
                    const size_t i = ((size_t)n * H + kh * group + g) * hd + d;
                    sk += dk_head[i];
                    sv += dv_head[i];
                }
                dk[((size_t)n * Hkv + kh) * hd + d] = sk;
                dv[((size_t)n * Hkv + kh) * hd + d] = sv;
            }
}

/* ---- Plain reference versions: one query row at a time, in double. ---- */

static double dot(const float *a, const float *b, int n)
{
    double s = 0.0;
    for (int i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

/* Row maximum and log-sum-exp of the scaled scores of query i. */
static double ref_lse(const head_view *hv, int i, int st, int hd)
{
    const double scale = 1.0 / sqrt((double)hd);
    double m = -INFINITY, sum = 0.0;
    for (int j = st; j <= i; j++) m = fmax(m, scale * dot(hv->q + (size_t)i * hv->ldq, hv->k + (size_t)j * hv->ldkv, hd));
    for (int j = st; j <= i; j++)
        sum += exp(scale * dot(hv->q + (size_t)i * hv->ldq, hv->k + (size_t)j * hv->ldkv, hd) - m);
    return m + log(sum);
}

static double ref_p(const head_view *hv, int i, int j, double lse, int hd)
{
    return exp(dot(hv->q + (size_t)i * hv->ldq, hv->k + (size_t)j * hv->ldkv, hd) / sqrt((double)hd) - lse);
}

void tune_cpu_attention_forward_ref(float *out, float *lse, const float *q, const float *k, const float *v,
                                    const int32_t *start, const tune_attention_shape *s)
{
    for (int b = 0; b < s->B; b++)
        for (int h = 0; h < s->H; h++) {
            const head_view hv = view(q, k, v, s, b, h);
            for (int i = 0; i < s->T; i++) {
                const int st = start[(size_t)b * s->T + i];
                const double l = ref_lse(&hv, i, st, s->hd);
                lse[((size_t)b * s->H + h) * s->T + i] = (float)l;
                for (int d = 0; d < s->hd; d++) {
                    double o = 0.0;
                    for (int j = st; j <= i; j++) o += ref_p(&hv, i, j, l, s->hd) * hv.v[(size_t)j * hv.ldkv + d];
                    out[hv.q_off + (size_t)i * hv.ldq + d] = (float)o;
                }
            }
        }
}

void tune_cpu_attention_backward_ref(float *dq, float *dk, float *dv, const float *dout, const float *q,
                                     const float *k, const float *v, const int32_t *start,
                                     const tune_attention_shape *s)
{
    const size_t nq = (size_t)s->B * s->T * s->H * s->hd, nkv = (size_t)s->B * s->T * s->Hkv * s->hd;
    memset(dq, 0, nq * sizeof *dq);
    memset(dk, 0, nkv * sizeof *dk);
    memset(dv, 0, nkv * sizeof *dv);
    const double scale = 1.0 / sqrt((double)s->hd);
    for (int b = 0; b < s->B; b++)
        for (int h = 0; h < s->H; h++) {
            const head_view hv = view(q, k, v, s, b, h);
            const float *dO = dout + hv.q_off;
            for (int i = 0; i < s->T; i++) {
                const int st = start[(size_t)b * s->T + i];
                const double l = ref_lse(&hv, i, st, s->hd);
                double D = 0.0; /* Σ_j P_ij dP_ij */
                for (int j = st; j <= i; j++)
                    D += ref_p(&hv, i, j, l, s->hd) * dot(dO + (size_t)i * hv.ldq, hv.v + (size_t)j * hv.ldkv, s->hd);
                for (int j = st; j <= i; j++) {
                    const double p = ref_p(&hv, i, j, l, s->hd);
                    const double ds = p * (dot(dO + (size_t)i * hv.ldq, hv.v + (size_t)j * hv.ldkv, s->hd) - D);
                    for (int d = 0; d < s->hd; d++) {
                        dq[hv.q_off + (size_t)i * hv.ldq + d] += (float)(scale * ds * hv.k[(size_t)j * hv.ldkv + d]);
                        dk[hv.kv_off + (size_t)j * hv.ldkv + d] += (float)(scale * ds * hv.q[(size_t)i * hv.ldq + d]);
                        dv[hv.kv_off + (size_t)j * hv.ldkv + d] += (float)(p * dO[(size_t)i * hv.ldq + d]);
                    }
                }
            }
        }
}

/* ---- Decoding: queries against a key/value cache ---- */

/* One query row qv against keys and values 0 .. nk − 1 of one head (rows
 * strided by kvd) into o (hd); p (nk): scratch for the probabilities. Its
 * own function so that the loops are built for this CPU's vector width: the
 * accumulation of o in particular was scalar (one add per value and key). */
TUNE_CPU_CLONES static void attend_row(float *restrict o, const float *restrict qv, const float *restrict kc,
                                       const float *restrict vc, int nk, int kvd, int hd, float scale,
                                       float *restrict p)
{
    for (int j = 0; j < nk; j++) {
        const float *kv = kc + (size_t)j * kvd;
        float dot = 0.0f;
        /* vector partial sums: a strict left-to-right sum left this loop at one add per 4 cycles */
#pragma omp simd reduction(+ : dot)
        for (int i = 0; i < hd; i++) dot += qv[i] * kv[i];
        p[j] = dot * scale;
    }
    tune_softmax_row(p, nk);
    for (int i = 0; i < hd; i++) o[i] = 0.0f;
    for (int j = 0; j < nk; j++) {
        const float *vv = vc + (size_t)j * kvd, pj = p[j];
        TUNE_SIMD
        for (int i = 0; i < hd; i++) o[i] += pj * vv[i];
    }
}

void tune_cpu_attention_cached(float *att, const float *q, const float *kc, const float *vc, int p0, int n,
                               const tune_attention_shape *s, float *scratch, int n_threads)
{
    const int H = s->H, hd = s->hd, group = s->H / s->Hkv, kvd = s->Hkv * s->hd;
    const float scale = 1.0f / sqrtf((float)hd);
    /* one thread for a single token: a team's barrier costs more than the work (backend.h) */
#pragma omp parallel for collapse(2) schedule(static) num_threads(n_threads) \
    if ((size_t)n * H * (p0 + n) * hd >= TUNE_CPU_PARALLEL_MIN)
    for (int t = 0; t < n; t++)
        for (int h = 0; h < H; h++) {
            const size_t off = (size_t)(h / group) * hd;
            attend_row(att + ((size_t)t * H + h) * hd, q + ((size_t)t * H + h) * hd, kc + off, vc + off,
                       p0 + t + 1 /* keys 0 .. p0 + t */, kvd, hd, scale, scratch + (size_t)omp_get_thread_num() * s->T);
        }
}
