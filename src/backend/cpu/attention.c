/* Causal grouped-query attention on the CPU. Work goes by (batch row, kv
 * head): the G = H / Hkv query heads that share a kv head are taken
 * together, so each product is G times taller than one head's. Their
 * queries go in blocks of ATTN_BLOCK positions, gathered into rows (position,
 * head) of one matrix; a block sees only the keys from its first position's
 * segment start to its last position, so its scores are one sgemm over that
 * range (the causal half and, when packed, the other segments are never
 * computed), the softmax runs per row over the keys the query may see, and
 * the output is a second sgemm. The backward reads the probabilities the
 * forward kept where the caller gave a buffer for them (a block's rows
 * against the keys it saw, tune_cpu_attention_probs floats), and otherwise
 * recomputes them as the forward made them; its key and value gradients sum
 * the group's heads inside the sgemm, straight into dk and dv. */
#include "tune/backend.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <string.h>

#include "tune/kernels.h"

enum { ATTN_BLOCK = 32 };

static int block_rows(int T) { return T < ATTN_BLOCK ? T : ATTN_BLOCK; }

/* One thread's scratch: P and dP (G·block × T), gathered queries, outputs
 * or output gradients, and query gradients (G·block × hd each). */
static size_t thread_scratch(const tune_attention_shape *s)
{
    const size_t rows = (size_t)(s->H / s->Hkv) * block_rows(s->T);
    return rows * (2 * (size_t)s->T + 3 * (size_t)s->hd);
}

size_t tune_cpu_attention_scratch(const tune_attention_shape *s, int n_threads)
{
    return (size_t)n_threads * thread_scratch(s);
}

/* Kept probabilities of one (b, kv head): each block at its largest, its
 * rows against keys [0, i1), blocks in order. */
static size_t group_probs(const tune_attention_shape *s)
{
    size_t n = 0;
    for (int i0 = 0; i0 < s->T; i0 += ATTN_BLOCK) {
        const int i1 = i0 + ATTN_BLOCK < s->T ? i0 + ATTN_BLOCK : s->T;
        n += (size_t)(s->H / s->Hkv) * (i1 - i0) * i1;
    }
    return n;
}

size_t tune_cpu_attention_probs(const tune_attention_shape *s) { return (size_t)s->B * s->Hkv * group_probs(s); }

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

/* One (b, kv head): its group's first query head and where its rows start. */
typedef struct group_view {
    int b, h0, G, hd, T, ldq, ldkv;
    size_t q_off, kv_off; /* of position 0, head h0 in q / out / dq; of kv head in k / v / dk / dv */
    const int32_t *start; /* (T) of row b */
} group_view;

static group_view group_of(const tune_attention_shape *s, const int32_t *start, int bk)
{
    group_view g;
    const int kh = bk % s->Hkv;
    g.b = bk / s->Hkv;
    g.G = s->H / s->Hkv;
    g.h0 = kh * g.G;
    g.hd = s->hd;
    g.T = s->T;
    g.ldq = s->H * s->hd;
    g.ldkv = s->Hkv * s->hd;
    g.q_off = (size_t)g.b * s->T * g.ldq + (size_t)g.h0 * s->hd;
    g.kv_off = (size_t)g.b * s->T * g.ldkv + (size_t)kh * s->hd;
    g.start = start + (size_t)g.b * s->T;
    return g;
}

/* Positions [i0, i1) of one group: they see keys [k0, i1). Row r·G + g of
 * the block's matrices is position i0 + r, head h0 + g. */
typedef struct block {
    int i0, i1, k0, rows, nk;
} block;

static block block_of(const group_view *g, int i0)
{
    block bl;
    bl.i0 = i0;
    bl.i1 = i0 + ATTN_BLOCK < g->T ? i0 + ATTN_BLOCK : g->T;
    bl.k0 = g->start[i0]; /* starts never decrease */
    bl.rows = (bl.i1 - bl.i0) * g->G;
    bl.nk = bl.i1 - bl.k0;
    return bl;
}

/* dst (rows, hd) ← the block's G heads of src (rows of stride ldq from off). */
static void gather(float *dst, const float *src, const group_view *g, const block *bl)
{
    const size_t width = (size_t)g->G * g->hd;
    for (int i = bl->i0; i < bl->i1; i++)
        memcpy(dst + (size_t)(i - bl->i0) * width, src + g->q_off + (size_t)i * g->ldq, width * sizeof *dst);
}

static void scatter(float *dst, const float *src, const group_view *g, const block *bl)
{
    const size_t width = (size_t)g->G * g->hd;
    for (int i = bl->i0; i < bl->i1; i++)
        memcpy(dst + g->q_off + (size_t)i * g->ldq, src + (size_t)(i - bl->i0) * width, width * sizeof *dst);
}

/* lse of row r of the block: position i0 + r / G, head h0 + r % G. lse is (B, H, T). */
static float *lse_at(float *lse, const group_view *g, const tune_attention_shape *s, const block *bl, int r)
{
    return lse + ((size_t)g->b * s->H + g->h0 + r % g->G) * s->T + bl->i0 + r / g->G;
}

/* P (rows, nk): the block's probabilities from its gathered queries Qg;
 * lse, unless NULL, receives each row's log-sum-exp. A backward that
 * recomputes them takes the same steps, so it gets the forward's bits: a
 * run with gradient checkpointing (which recomputes) trains exactly as one
 * that keeps them. */
TUNE_CPU_CLONES static void probabilities(float *P, float *lse, const float *Qg, const float *k, const group_view *g,
                                          const tune_attention_shape *s, const block *bl)
{
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, bl->rows, bl->nk, g->hd, attn_scale(g->hd), Qg, g->hd,
                k + g->kv_off + (size_t)bl->k0 * g->ldkv, g->ldkv, 0.0f, P, bl->nk);
    for (int r = 0; r < bl->rows; r++) {
        const int i = bl->i0 + r / g->G;
        float *row = P + (size_t)r * bl->nk;
        const int lo = g->start[i] - bl->k0, hi = i - bl->k0; /* visible keys, inclusive */
        const float l = tune_softmax_row(row + lo, hi - lo + 1);
        if (lse) *lse_at(lse, g, s, bl, r) = l;
        memset(row, 0, (size_t)lo * sizeof *row);
        memset(row + hi + 1, 0, (size_t)(bl->nk - 1 - hi) * sizeof *row);
    }
}

void tune_cpu_attention_forward(float *out, float *lse, float *probs, const float *q, const float *k,
                                const float *v, const int32_t *start, const tune_attention_shape *s,
                                float *scratch, int n_threads)
{
    const size_t work = (size_t)s->B * s->H * s->T * s->T * s->hd;
    openblas_set_num_threads(1); /* sgemm inside the OpenMP loop */
#pragma omp parallel for num_threads(n_threads) schedule(dynamic) if (work >= TUNE_CPU_PARALLEL_MIN)
    for (int bk = 0; bk < s->B * s->Hkv; bk++) {
        const group_view g = group_of(s, start, bk);
        const size_t rows = (size_t)g.G * block_rows(s->T);
        float *own = scratch + (size_t)omp_get_thread_num() * thread_scratch(s), *P = own;
        float *Qg = own + 2 * rows * s->T, *Og = Qg + rows * s->hd;
        size_t kept = (size_t)bk * group_probs(s); /* where this block's probabilities go in probs */
        for (int i0 = 0; i0 < s->T; i0 += ATTN_BLOCK) {
            const block bl = block_of(&g, i0);
            if (probs) P = probs + kept;
            kept += (size_t)bl.rows * bl.i1;
            gather(Qg, q, &g, &bl);
            probabilities(P, lse, Qg, k, &g, s, &bl);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, bl.rows, g.hd, bl.nk, 1.0f, P, bl.nk,
                        v + g.kv_off + (size_t)bl.k0 * g.ldkv, g.ldkv, 0.0f, Og, g.hd);
            scatter(out, Og, &g, &bl);
        }
    }
}

void tune_cpu_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *q,
                                 const float *k, const float *v, const float *probs, const int32_t *start,
                                 const tune_attention_shape *s, float *scratch, int n_threads)
{
    const float scale = attn_scale(s->hd);
    const size_t work = (size_t)s->B * s->H * s->T * s->T * s->hd;
    openblas_set_num_threads(1); /* sgemm inside the OpenMP loop */
#pragma omp parallel for num_threads(n_threads) schedule(dynamic) if (work >= TUNE_CPU_PARALLEL_MIN)
    for (int bk = 0; bk < s->B * s->Hkv; bk++) {
        const group_view g = group_of(s, start, bk);
        const size_t rows = (size_t)g.G * block_rows(s->T);
        float *own = scratch + (size_t)omp_get_thread_num() * thread_scratch(s), *dP = own + rows * s->T;
        float *Qg = dP + rows * s->T, *dOg = Qg + rows * s->hd, *dQg = dOg + rows * s->hd;
        size_t kept = (size_t)bk * group_probs(s);
        float *dK = dk + g.kv_off, *dV = dv + g.kv_off; /* (T, hd), row stride ldkv */
        for (int t = 0; t < s->T; t++) {
            memset(dK + (size_t)t * g.ldkv, 0, (size_t)g.hd * sizeof *dK);
            memset(dV + (size_t)t * g.ldkv, 0, (size_t)g.hd * sizeof *dV);
        }
        for (int i0 = 0; i0 < s->T; i0 += ATTN_BLOCK) {
            const block bl = block_of(&g, i0);
            const float *Kb = k + g.kv_off + (size_t)bl.k0 * g.ldkv, *Vb = v + g.kv_off + (size_t)bl.k0 * g.ldkv;
            gather(Qg, q, &g, &bl);
            gather(dOg, dout, &g, &bl);
            const float *P = own;
            if (probs)
                P = probs + kept;
            else
                probabilities(own, NULL, Qg, k, &g, s, &bl);
            kept += (size_t)bl.rows * bl.i1;
            /* dV += Pᵀ dO (the group's heads summed in the product);  dP = dO Vᵀ */
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, bl.nk, g.hd, bl.rows, 1.0f, P, bl.nk, dOg, g.hd,
                        1.0f, dV + (size_t)bl.k0 * g.ldkv, g.ldkv);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, bl.rows, bl.nk, g.hd, 1.0f, dOg, g.hd, Vb, g.ldkv,
                        0.0f, dP, bl.nk);
            for (int r = 0; r < bl.rows; r++) {
                const int i = bl.i0 + r / g.G, lo = g.start[i] - bl.k0, hi = i - bl.k0;
                float *row = dP + (size_t)r * bl.nk;
                tune_softmax_row_backward(row + lo, P + (size_t)r * bl.nk + lo, hi - lo + 1);
                memset(row, 0, (size_t)lo * sizeof *row);
                memset(row + hi + 1, 0, (size_t)(bl.nk - 1 - hi) * sizeof *row);
            }
            /* dQ = scale dS K;  dK += scale dSᵀ Q */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, bl.rows, g.hd, bl.nk, scale, dP, bl.nk, Kb, g.ldkv,
                        0.0f, dQg, g.hd);
            scatter(dq, dQg, &g, &bl);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, bl.nk, g.hd, bl.rows, scale, dP, bl.nk, Qg, g.hd, 1.0f,
                        dK + (size_t)bl.k0 * g.ldkv, g.ldkv);
        }
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
