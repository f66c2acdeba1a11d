/* The tracing table (tune explain): every operation of the real table,
 * timed and recorded with its shape, FLOPs and bytes moved; the cost
 * formulas; and the sgemm rate the totals are held against.
 *
 * Element-wise operations count a few FLOPs per element (their cost is
 * memory, not arithmetic); pure data movement counts none. Bytes are what
 * an operation reads and writes once, fp32 activations and the model
 * matrices as stored. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tune/backend.h"

#define F 4.0 /* bytes of a float */

/* The shapes tune_trace_op_shape prints (over dims). */
static const char SHAPE_N[] = "%ld";
static const char SHAPE_BYTES[] = "%ld bytes";
static const char SHAPE_2D[] = "%ld×%ld";
static const char SHAPE_3D[] = "%ld×%ld×%ld";
static const char SHAPE_ROWS[] = "%ld rows × %ld";
static const char SHAPE_ROWS_OF[] = "%ld rows of %ld×%ld";
static const char SHAPE_ATTENTION[] = "%ld×%ld × %ld×%ld, %ld kv heads"; /* B×T × H×hd */
static const char SHAPE_TENSORS[] = "%ld values in %ld tensors";
/* matmul by (trans_a, trans_b): a and b as stored */
static const char *const SHAPE_MATMUL[2][2] = {
    {"%ld×%ld · %ld×%ld", "%ld×%ld · (%ld×%ld)ᵀ"},
    {"(%ld×%ld)ᵀ · %ld×%ld", "(%ld×%ld)ᵀ · (%ld×%ld)ᵀ"},
};

tune_cost tune_cost_matmul(long M, long N, long K, int accumulate)
{
    return (tune_cost){2.0 * M * N * K, F * ((double)M * K + (double)K * N + (accumulate ? 2.0 : 1.0) * M * N)};
}

tune_cost tune_cost_weight_matmul(const tune_weight *w, long N, int trans, int accumulate)
{
    const double in = trans ? w->rows : w->cols, out = trans ? w->cols : w->rows;
    return (tune_cost){2.0 * N * w->rows * w->cols,
                       (double)tune_weight_bytes(w) + F * N * (in + (accumulate ? 2.0 : 1.0) * out)};
}

tune_cost tune_cost_attention(const tune_attention_shape *s, int backward)
{
    const double B = s->B, T = s->T, q = (double)s->H * s->hd, kv = (double)s->Hkv * s->hd;
    const double fwd = 2.0 * 2.0 * B * s->H * T * T * s->hd / 2.0;
    /* forward: q, k, v in; out and the row statistics out. backward: dout,
     * q, k, v, out, lse in; dq, dk, dv out */
    const double bytes = backward ? F * B * T * (4 * q + 4 * kv + s->H) : F * B * T * (2 * q + 2 * kv + s->H);
    return (tune_cost){backward ? 2.0 * fwd : fwd, bytes};
}

double tune_model_flops_per_token(const tune_model_config *cfg, double lora_params, long T)
{
    double linear = 0.0;
    for (int k = 0; k < TUNE_N_LINEAR; k++) {
        int out, in;
        tune_linear_shape(cfg, (tune_linear_kind)k, &out, &in);
        linear += (double)out * in;
    }
    const double L = cfg->num_hidden_layers, frozen = L * linear + (double)cfg->vocab_size * cfg->hidden_size;
    return 4.0 * frozen + 6.0 * lora_params + 6.0 * L * (double)T * cfg->num_attention_heads * cfg->head_dim;
}

const char *tune_pass_name(tune_pass pass)
{
    static const char *const names[] = {"forward", "recompute", "backward", "optimizer"};
    return pass >= TUNE_PASS_FORWARD && pass <= TUNE_PASS_OPTIMIZER ? names[pass] : "?";
}

void tune_trace_op_name(const tune_trace_op *op, char *buf, size_t size)
{
    char layer[32] = "";
    if (op->layer >= 0) snprintf(layer, sizeof layer, "layer %d ", op->layer);
    snprintf(buf, size, "%s%s%s%s", layer, op->what ? op->what : "", op->what ? " " : "", op->op);
}

void tune_trace_op_shape(const tune_trace_op *op, char *buf, size_t size)
{
    const long *d = op->dims;
    const int n = snprintf(buf, size, op->shape_fmt, d[0], d[1], d[2], d[3], d[4]);
    if (op->dtype && n >= 0 && (size_t)n < size) snprintf(buf + n, size - (size_t)n, " %s", op->dtype);
}

void tune_trace_free(tune_trace *t)
{
    free(t->ops);
    memset(t, 0, sizeof *t);
}

/* ---- The tracing table ---- */

static struct {
    const tune_backend *real; /* NULL: no trace open */
    tune_trace *t;
    tune_backend table;
    int on;
    double since;             /* when recording started */
    tune_pass pass;           /* the last label */
    int layer;
    const char *what;
} T;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* A device runs operations queued; waiting makes the time the operation's own. */
static void sync_device(void)
{
    if (T.real->device) T.real->finish(NULL, 0);
}

/* The record of an operation begun at t0, or NULL when not recording (or
 * out of memory: the trace says it is incomplete). */
static tune_trace_op *done(double t0, const char *op, tune_cost c)
{
    if (!T.on) return NULL;
    sync_device();
    const double seconds = now() - t0;
    tune_trace *t = T.t;
    if (t->n == t->cap) {
        const size_t cap = t->cap ? 2 * t->cap : 4096;
        tune_trace_op *ops = realloc(t->ops, cap * sizeof *ops);
        if (!ops) {
            t->oom = 1;
            return NULL;
        }
        t->ops = ops;
        t->cap = cap;
    }
    tune_trace_op *r = &t->ops[t->n++];
    *r = (tune_trace_op){.pass = T.pass, .layer = T.layer, .what = T.what, .op = op, .shape_fmt = SHAPE_N,
                         .flops = c.flops, .bytes = c.bytes, .seconds = seconds};
    return r;
}

static void shape(tune_trace_op *r, const char *fmt, long a, long b, long c, long d, long e)
{
    if (!r) return;
    r->shape_fmt = fmt;
    r->dims[0] = a;
    r->dims[1] = b;
    r->dims[2] = c;
    r->dims[3] = d;
    r->dims[4] = e;
}

/* n elements, k FLOPs and b bytes each. */
static tune_cost per_element(double n, double k, double b) { return (tune_cost){n * k, n * b}; }

static int t_upload(void *dst, const void *src, size_t bytes)
{
    const double t0 = now();
    const int rc = T.real->upload(dst, src, bytes);
    shape(done(t0, "upload", per_element((double)bytes, 0, 1)), SHAPE_BYTES, (long)bytes, 0, 0, 0, 0);
    return rc;
}

static int t_download(void *dst, const void *src, size_t bytes)
{
    const double t0 = now();
    const int rc = T.real->download(dst, src, bytes);
    shape(done(t0, "download", per_element((double)bytes, 0, 1)), SHAPE_BYTES, (long)bytes, 0, 0, 0, 0);
    return rc;
}

static void t_copy(void *dst, const void *src, size_t bytes)
{
    const double t0 = now();
    T.real->copy(dst, src, bytes);
    shape(done(t0, "copy", per_element((double)bytes, 0, 2)), SHAPE_BYTES, (long)bytes, 0, 0, 0, 0);
}

static void t_zero(void *dst, size_t bytes)
{
    const double t0 = now();
    T.real->zero(dst, bytes);
    shape(done(t0, "zero", per_element((double)bytes, 0, 1)), SHAPE_BYTES, (long)bytes, 0, 0, 0, 0);
}

static void t_matmul(float *c, const float *a, const float *b, int M, int N, int K, int trans_a, int trans_b,
                     float alpha, float beta)
{
    const double t0 = now();
    T.real->matmul(c, a, b, M, N, K, trans_a, trans_b, alpha, beta);
    tune_trace_op *r = done(t0, "matmul", tune_cost_matmul(M, N, K, beta != 0.0f));
    /* a and b as stored: op(a) (M, K), op(b) (K, N) */
    shape(r, SHAPE_MATMUL[!!trans_a][!!trans_b], trans_a ? K : M, trans_a ? M : K, trans_b ? N : K, trans_b ? K : N,
          0);
}

static void t_embedding(float *out, const float *table, const int32_t *ids, int N, int C)
{
    const double t0 = now();
    T.real->embedding(out, table, ids, N, C);
    shape(done(t0, "embedding", per_element((double)N * C, 0, 2 * F)), SHAPE_ROWS, N, C, 0, 0, 0);
}

static void t_weight_matmul(float *y, const float *x, const tune_weight *w, int N, int trans, float beta)
{
    const double t0 = now();
    T.real->weight_matmul(y, x, w, N, trans, beta);
    tune_trace_op *r = done(t0, "weight_matmul", tune_cost_weight_matmul(w, N, trans, beta != 0.0f));
    if (trans) shape(r, SHAPE_MATMUL[0][0], N, w->rows, w->rows, w->cols, 0);
    else shape(r, SHAPE_MATMUL[0][1], N, w->cols, w->rows, w->cols, 0);
    if (r) r->dtype = tune_qtype_name(w->type);
}

static void t_weight_rows(float *out, const tune_weight *w, const int32_t *ids, int N)
{
    const double t0 = now();
    T.real->weight_rows(out, w, ids, N);
    /* rows in blocks are dequantised: d·q + m per value */
    const double row_bytes = (double)tune_weight_bytes(w) / w->rows;
    tune_cost c = {w->type == TUNE_Q_F32 ? 0.0 : 2.0 * N * w->cols, N * (row_bytes + F * w->cols)};
    tune_trace_op *r = done(t0, "weight_rows", c);
    shape(r, SHAPE_ROWS_OF, N, w->rows, w->cols, 0, 0);
    if (r) r->dtype = tune_qtype_name(w->type);
}

static void t_embedding_backward(float *dtable, const float *dout, const int32_t *ids, int N, int C)
{
    const double t0 = now();
    T.real->embedding_backward(dtable, dout, ids, N, C);
    shape(done(t0, "embedding_backward", per_element((double)N * C, 1, 3 * F)), SHAPE_ROWS, N, C, 0, 0, 0);
}

static void t_rmsnorm_forward(float *out, float *rstd, const float *x, const float *w, int N, int C, float eps)
{
    const double t0 = now();
    T.real->rmsnorm_forward(out, rstd, x, w, N, C, eps);
    shape(done(t0, "rmsnorm_forward", per_element((double)N * C, 4, 2 * F)), SHAPE_2D, N, C, 0, 0, 0);
}

static void t_rmsnorm_backward(float *dx, const float *dout, const float *x, const float *w, const float *rstd,
                               int N, int C)
{
    const double t0 = now();
    T.real->rmsnorm_backward(dx, dout, x, w, rstd, N, C);
    shape(done(t0, "rmsnorm_backward", per_element((double)N * C, 8, 4 * F)), SHAPE_2D, N, C, 0, 0, 0);
}

static void t_rope_tables(float *cos, float *sin, const int32_t *pos, const float *inv_freq, int N, int half)
{
    const double t0 = now();
    T.real->rope_tables(cos, sin, pos, inv_freq, N, half);
    shape(done(t0, "rope_tables", per_element((double)N * half, 3, 2 * F)), SHAPE_2D, N, half, 0, 0, 0);
}

static void t_rope_forward(float *x, const float *cos, const float *sin, int N, int n_head, int hd)
{
    const double t0 = now();
    T.real->rope_forward(x, cos, sin, N, n_head, hd);
    shape(done(t0, "rope_forward", per_element((double)N * n_head * hd, 3, 3 * F)), SHAPE_3D, N, n_head, hd, 0, 0);
}

static void t_rope_backward(float *dx, const float *cos, const float *sin, int N, int n_head, int hd)
{
    const double t0 = now();
    T.real->rope_backward(dx, cos, sin, N, n_head, hd);
    shape(done(t0, "rope_backward", per_element((double)N * n_head * hd, 3, 3 * F)), SHAPE_3D, N, n_head, hd, 0,
          0);
}

static void attention_shape(tune_trace_op *r, const tune_attention_shape *s)
{
    shape(r, SHAPE_ATTENTION, s->B, s->T, s->H, s->hd, s->Hkv);
}

static void t_attention_forward(float *out, float *lse, float *probs, const float *q, const float *k,
                                const float *v, const int32_t *start, const tune_attention_shape *s, float *scratch,
                                int n_threads)
{
    const double t0 = now();
    T.real->attention_forward(out, lse, probs, q, k, v, start, s, scratch, n_threads);
    tune_cost c = tune_cost_attention(s, 0);
    if (probs) c.bytes += F * (double)T.real->attention_probs(s); /* written for the backward */
    attention_shape(done(t0, "attention_forward", c), s);
}

static void t_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *q, const float *k,
                                 const float *v, const float *out, const float *lse, const float *probs,
                                 const int32_t *start, const tune_attention_shape *s, float *scratch,
                                 int n_threads)
{
    const double t0 = now();
    T.real->attention_backward(dq, dk, dv, dout, q, k, v, out, lse, probs, start, s, scratch, n_threads);
    tune_cost c = tune_cost_attention(s, 1);
    if (probs) c.bytes += F * (double)T.real->attention_probs(s); /* read instead of recomputed */
    attention_shape(done(t0, "attention_backward", c), s);
}

static void t_swiglu_forward(float *out, const float *gate, const float *up, size_t n)
{
    const double t0 = now();
    T.real->swiglu_forward(out, gate, up, n);
    shape(done(t0, "swiglu_forward", per_element((double)n, 5, 3 * F)), SHAPE_N, (long)n, 0, 0, 0, 0);
}

static void t_swiglu_backward(float *dgate, float *dup, float *out, const float *dout, const float *gate,
                              const float *up, size_t n)
{
    const double t0 = now();
    T.real->swiglu_backward(dgate, dup, out, dout, gate, up, n);
    shape(done(t0, "swiglu_backward", per_element((double)n, out ? 12 : 10, (out ? 6 : 5) * F)), SHAPE_N, (long)n,
          0, 0, 0, 0);
}

static void t_cross_entropy_forward(float *lse, double *row_loss, const float *logits, const int32_t *target, int N,
                                    int V)
{
    const double t0 = now();
    T.real->cross_entropy_forward(lse, row_loss, logits, target, N, V);
    shape(done(t0, "cross_entropy_forward", per_element((double)N * V, 3, F)), SHAPE_2D, N, V, 0, 0, 0);
}

static void t_add_sum(double *acc, const double *x, size_t n)
{
    const double t0 = now();
    T.real->add_sum(acc, x, n);
    shape(done(t0, "add_sum", per_element((double)n, 1, 8)), SHAPE_N, (long)n, 0, 0, 0, 0);
}

static void t_cross_entropy_backward(float *logits, const float *lse, const int32_t *target, int N, int V,
                                     float scale)
{
    const double t0 = now();
    T.real->cross_entropy_backward(logits, lse, target, N, V, scale);
    shape(done(t0, "cross_entropy_backward", per_element((double)N * V, 3, 2 * F)), SHAPE_2D, N, V, 0, 0, 0);
}

static void t_dropout_mask(uint32_t *bits, size_t n, float p, uint64_t seed, uint64_t stream, uint64_t base)
{
    const double t0 = now();
    T.real->dropout_mask(bits, n, p, seed, stream, base);
    shape(done(t0, "dropout_mask", per_element((double)n, 0, 1.0 / 8)), SHAPE_N, (long)n, 0, 0, 0, 0);
}

static void t_dropout_apply(float *out, const float *x, const uint32_t *bits, size_t n, float p, int accumulate)
{
    const double t0 = now();
    T.real->dropout_apply(out, x, bits, n, p, accumulate);
    const tune_cost c = per_element((double)n, accumulate ? 2 : 1, (accumulate ? 3 : 2) * F + 1.0 / 8);
    shape(done(t0, "dropout_apply", c), SHAPE_N, (long)n, 0, 0, 0, 0);
}

static void t_adamw_update(float *params, float *exp_avg, float *exp_avg_sq, const float *grads, size_t n,
                           const tune_adamw_coeffs *c)
{
    const double t0 = now();
    T.real->adamw_update(params, exp_avg, exp_avg_sq, grads, n, c);
    /* decay, two moment updates, bias corrections, the step: about 12 per element */
    shape(done(t0, "adamw_update", per_element((double)n, 12, 7 * F)), SHAPE_N, (long)n, 0, 0, 0, 0);
}

static float t_clip_grad_norm(float *grads, const tune_span *tensors, int n_tensors, float max_norm)
{
    const double t0 = now();
    const float norm = T.real->clip_grad_norm(grads, tensors, n_tensors, max_norm);
    tune_trace_op *r = done(t0, "clip_grad_norm", (tune_cost){0, 0});
    if (!r) return norm;
    const tune_span *spans = tensors;
    tune_span *copy = NULL;
    if (T.real->device) { /* the spans are a device buffer: read a copy, after the timing */
        const size_t span_bytes = (size_t)n_tensors * sizeof *tensors;
        copy = malloc(span_bytes);
        spans = copy && !T.real->download(copy, tensors, span_bytes) ? copy : NULL;
    }
    double n = 0;
    for (int i = 0; spans && i < n_tensors; i++) n += (double)spans[i].size;
    free(copy);
    /* sum of squares, then the scaling when it clips */
    const tune_cost c = per_element(n, max_norm > 0 ? 3 : 2, (max_norm > 0 ? 3 : 1) * F);
    r->flops = c.flops;
    r->bytes = c.bytes;
    shape(r, SHAPE_TENSORS, (long)n, n_tensors, 0, 0, 0);
    return norm;
}

static void t_add(float *y, const float *x, size_t n)
{
    const double t0 = now();
    T.real->add(y, x, n);
    shape(done(t0, "add", per_element((double)n, 1, 3 * F)), SHAPE_N, (long)n, 0, 0, 0, 0);
}

static void t_label(tune_pass pass, int layer, const char *what)
{
    T.pass = pass;
    T.layer = layer;
    T.what = what;
}

tune_status tune_trace_open(const tune_backend *real, tune_trace *t, const tune_backend **traced, tune_error *err)
{
    *traced = NULL;
    if (T.real) return tune_fail_run(err, NULL, "a trace is already open");
    memset(t, 0, sizeof *t);
    T.real = real;
    T.t = t;
    T.on = 0;
    T.pass = TUNE_PASS_FORWARD;
    T.layer = -1;
    T.what = NULL;
    T.table = *real; /* name, device, buffers, finish, memory, attention_scratch, _probs and _cached as they are */
    T.table.upload = t_upload;
    T.table.download = t_download;
    T.table.copy = t_copy;
    T.table.zero = t_zero;
    T.table.matmul = t_matmul;
    T.table.embedding = t_embedding;
    T.table.weight_matmul = t_weight_matmul;
    T.table.weight_rows = t_weight_rows;
    T.table.embedding_backward = t_embedding_backward;
    T.table.rmsnorm_forward = t_rmsnorm_forward;
    T.table.rmsnorm_backward = t_rmsnorm_backward;
    T.table.rope_tables = t_rope_tables;
    T.table.rope_forward = t_rope_forward;
    T.table.rope_backward = t_rope_backward;
    T.table.attention_forward = t_attention_forward;
    T.table.attention_backward = t_attention_backward;
    T.table.swiglu_forward = t_swiglu_forward;
    T.table.swiglu_backward = t_swiglu_backward;
    T.table.cross_entropy_forward = t_cross_entropy_forward;
    T.table.add_sum = t_add_sum;
    T.table.cross_entropy_backward = t_cross_entropy_backward;
    T.table.dropout_mask = t_dropout_mask;
    T.table.dropout_apply = t_dropout_apply;
    T.table.adamw_update = t_adamw_update;
    T.table.clip_grad_norm = t_clip_grad_norm;
    T.table.add = t_add;
    T.table.label = t_label;
    *traced = &T.table;
    return TUNE_OK;
}

void tune_trace_record(int on)
{
    if (!T.real || T.on == !!on) return;
    sync_device();
    const double t = now();
    if (on) T.since = t;
    else T.t->seconds += t - T.since;
    T.on = !!on;
}

void tune_trace_close(void)
{
    tune_trace_record(0);
    T.real = NULL;
    T.t = NULL;
}

void tune_backend_label(const tune_backend *be, tune_pass pass, int layer, const char *what)
{
    if (be->label) be->label(pass, layer, what);
}

tune_status tune_backend_sgemm_gflops(const tune_backend *be, int n, int reps, double *gflops, tune_error *err)
{
    *gflops = 0.0;
    const size_t nn = (size_t)n * n, bytes = nn * sizeof(float);
    float *host = malloc(bytes), *a = be->alloc(bytes), *b = be->alloc(bytes), *c = be->alloc(bytes);
    tune_status st = TUNE_OK;
    if (!host || !a || !b || !c) {
        st = tune_fail_run(err, NULL, "out of %s memory for a %d×%d sgemm", be->name, n, n);
        goto done;
    }
    for (size_t i = 0; i < nn; i++) host[i] = (float)(i % 17) * 0.0625f - 0.5f; /* no zeros, no denormals */
    if (be->upload(a, host, bytes) || be->upload(b, host, bytes)) {
        st = tune_backend_failed(be, "measuring sgemm", err);
        goto done;
    }
    double best = INFINITY;
    for (int i = 0; i <= reps; i++) { /* the first warms up */
        const double t0 = now();
        be->matmul(c, a, b, n, n, n, 0, 1, 1.0f, 0.0f);
        if (be->finish(NULL, 0)) {
            st = tune_backend_failed(be, "measuring sgemm", err);
            goto done;
        }
        const double s = now() - t0;
        if (i > 0 && s < best) best = s;
    }
    *gflops = 2.0 * (double)n * n * n / best / 1e9;
done:
    free(host);
    if (a) be->release(a);
    if (b) be->release(b);
    if (c) be->release(c);
    return st;
}
