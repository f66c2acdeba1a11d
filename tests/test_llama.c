/* LLaMA forward/backward: fast kernels against their references, backward
 * passes against finite differences, packing and accumulation identities on
 * a tiny random model, and (tests/data/tiny) PyTorch + PEFT goldens. */
#include <cJSON.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "tune/backend.h"
#include "tune/kernels.h"
#include "tune/llama.h"
#include "tune/rng.h"
#include "tune/safetensors.h"
#include "tune/util.h"

/* Uniform in [-a, a) from Philox stream 99 of seed. */
static void fill(float *x, size_t n, float a, uint64_t seed)
{
    for (size_t i = 0; i < n; i++) x[i] = (2.0f * tune_rng_uniform(seed, 99, i) - 1.0f) * a;
}

static float *rnd(size_t n, float a, uint64_t seed)
{
    float *x = malloc(n * sizeof *x);
    ck_assert_ptr_nonnull(x);
    fill(x, n, a, seed);
    return x;
}

static void assert_close(const float *got, const float *want, size_t n, float atol, float rtol, const char *what)
{
    for (size_t i = 0; i < n; i++)
        ck_assert_msg(fabsf(got[i] - want[i]) <= atol + rtol * fabsf(want[i]), "%s[%zu]: got %.8g want %.8g", what, i,
                      got[i], want[i]);
}

/* ---- kernels against their reference versions ---- */

START_TEST(matmul_matches_reference)
{
    /* small (one call), and large enough to be split by rows or by columns */
    static const int shapes[3][3] = {{13, 7, 29}, {150, 131, 120}, {97, 203, 120}};
    for (int sh = 0; sh < 3; sh++) {
        const int M = shapes[sh][0], N = shapes[sh][1], K = shapes[sh][2];
        float *a = rnd((size_t)M * K, 1, 1), *b = rnd((size_t)K * N, 1, 2);
        float *c1 = malloc((size_t)M * N * sizeof(float)), *c2 = malloc((size_t)M * N * sizeof(float));
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++) {
                fill(c1, (size_t)M * N, 1, 3);
                memcpy(c2, c1, (size_t)M * N * sizeof(float));
                tune_cpu_matmul(c1, a, b, M, N, K, ta, tb, 0.7f, 0.5f);
                tune_cpu_matmul_ref(c2, a, b, M, N, K, ta, tb, 0.7f, 0.5f);
                assert_close(c1, c2, (size_t)M * N, 1e-5f, 1e-5f, "matmul");
            }
        /* an empty inner dimension leaves beta · c */
        fill(c1, (size_t)M * N, 1, 3);
        memcpy(c2, c1, (size_t)M * N * sizeof(float));
        tune_cpu_matmul(c1, a, b, M, N, 0, 0, 0, 1.0f, 0.5f);
        tune_cpu_matmul_ref(c2, a, b, M, N, 0, 0, 0, 1.0f, 0.5f);
        assert_close(c1, c2, (size_t)M * N, 0.0f, 0.0f, "matmul K=0");
        free(a); free(b); free(c1); free(c2);
    }
}
END_TEST

/* Segment starts (B, T): odd rows are packed, a second segment begins at split. */
static void starts(int32_t *start, int B, int T, int split)
{
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) start[b * T + t] = b % 2 && t >= split ? split : 0;
}

/* Small (one thread), large enough for the OpenMP loop, and longer than a
 * query block (32 positions) with the packed row's second segment starting
 * inside a block (the fourth, 96 .. 127). */
static const tune_attention_shape attn_shapes[3] = {{3, 11, 6, 2, 8}, {2, 40, 4, 2, 16}, {2, 150, 2, 1, 8}};
static const int attn_splits[3] = {4, 4, 100};

START_TEST(attention_matches_reference)
{
    const tune_attention_shape s = attn_shapes[_i];
    const size_t nq = (size_t)s.B * s.T * s.H * s.hd, nkv = (size_t)s.B * s.T * s.Hkv * s.hd, nl = (size_t)s.B * s.H * s.T;
    float *q = rnd(nq, 2, 4), *k = rnd(nkv, 2, 5), *v = rnd(nkv, 1, 6), *dout = rnd(nq, 1, 7);
    float *o1 = malloc(nq * 4), *o2 = malloc(nq * 4), *l1 = malloc(nl * 4), *l2 = malloc(nl * 4);
    float *dq1 = malloc(nq * 4), *dq2 = malloc(nq * 4), *dk1 = malloc(nkv * 4), *dk2 = malloc(nkv * 4);
    float *dv1 = malloc(nkv * 4), *dv2 = malloc(nkv * 4);
    const int threads = 2;
    float *scratch = malloc(tune_cpu_attention_scratch(&s, threads) * 4);
    int32_t *start = malloc((size_t)s.B * s.T * sizeof *start);
    const int split = attn_splits[_i];
    starts(start, s.B, s.T, split); /* row 1 is packed: [0, split) and [split, T) */
    tune_cpu_attention_forward(o1, l1, NULL, q, k, v, start, &s, scratch, threads);
    tune_cpu_attention_forward_ref(o2, l2, q, k, v, start, &s);
    assert_close(o1, o2, nq, 1e-5f, 1e-5f, "out");
    assert_close(l1, l2, nl, 1e-5f, 1e-5f, "lse");
    tune_cpu_attention_backward_ref(dq2, dk2, dv2, dout, q, k, v, start, &s);
    tune_cpu_attention_backward(dq1, dk1, dv1, dout, q, k, v, NULL, start, &s, scratch, threads);
    assert_close(dq1, dq2, nq, 1e-5f, 1e-4f, "dq");
    assert_close(dk1, dk2, nkv, 1e-5f, 1e-4f, "dk");
    assert_close(dv1, dv2, nkv, 1e-5f, 1e-4f, "dv");
    /* The probabilities kept by the forward: the same output and lse, and a
     * backward that reads them gives the recomputing one's bits */
    const size_t np = tune_cpu_attention_probs(&s);
    float *probs = malloc(np * 4), *o3 = malloc(nq * 4), *l3 = malloc(nl * 4);
    tune_cpu_attention_forward(o3, l3, probs, q, k, v, start, &s, scratch, threads);
    ck_assert_mem_eq(o3, o1, nq * 4);
    ck_assert_mem_eq(l3, l1, nl * 4);
    memcpy(dq2, dq1, nq * 4);
    memcpy(dk2, dk1, nkv * 4);
    memcpy(dv2, dv1, nkv * 4);
    tune_cpu_attention_backward(dq1, dk1, dv1, dout, q, k, v, probs, start, &s, scratch, threads);
    ck_assert_mem_eq(dq1, dq2, nq * 4);
    ck_assert_mem_eq(dk1, dk2, nkv * 4);
    ck_assert_mem_eq(dv1, dv2, nkv * 4);
    memset(probs, 0, np * 4); /* dV = Pᵀ·dO: nothing when they are read and all zero */
    tune_cpu_attention_backward(dq1, dk1, dv1, dout, q, k, v, probs, start, &s, scratch, threads);
    for (size_t i = 0; i < nkv; i++) ck_assert_float_eq(dv1[i], 0.0f);
    free(probs); free(o3); free(l3);
    /* Packing: the second segment of row 1 sees nothing of the first. */
    float *v2 = malloc(nkv * 4);
    memcpy(v2, v, nkv * 4);
    for (int t = 0; t < split; t++)
        for (int i = 0; i < s.Hkv * s.hd; i++) v2[((size_t)1 * s.T + t) * s.Hkv * s.hd + i] += 5.0f;
    tune_cpu_attention_forward(o2, l2, NULL, q, k, v2, start, &s, scratch, threads);
    for (int t = split; t < s.T; t++)
        for (int i = 0; i < s.H * s.hd; i++) {
            const size_t at = ((size_t)1 * s.T + t) * s.H * s.hd + i;
            ck_assert_float_eq(o1[at], o2[at]);
        }
    free(q); free(k); free(v); free(v2); free(dout); free(o1); free(o2); free(l1); free(l2);
    free(dq1); free(dq2); free(dk1); free(dk2); free(dv1); free(dv2); free(scratch); free(start);
}
END_TEST

/* ---- per-op backward against central differences (double-checked in fp32) ---- */

/* d/dx of Σ w·f(x) by central differences, for one element. */
typedef void (*op_fn)(float *out, const float *x, void *ctx);

static double weighted(op_fn f, const float *x, const float *w, size_t n_out, void *ctx)
{
    float *out = malloc(n_out * sizeof *out);
    f(out, x, ctx);
    double s = 0.0;
    for (size_t i = 0; i < n_out; i++) s += (double)w[i] * out[i];
    free(out);
    return s;
}

static void check_fd(op_fn f, float *x, size_t n_in, const float *w, size_t n_out, const float *grad, void *ctx,
                     const char *what)
{
    const float eps = 1e-2f;
    for (size_t i = 0; i < n_in; i++) {
        const float keep = x[i];
        x[i] = keep + eps;
        const double up = weighted(f, x, w, n_out, ctx);
        x[i] = keep - eps;
        const double dn = weighted(f, x, w, n_out, ctx);
        x[i] = keep;
        const double fd = (up - dn) / (2.0 * eps);
        ck_assert_msg(fabs(fd - grad[i]) <= 2e-3 + 1e-2 * fabs(fd), "%s d[%zu]: analytic %.6g, numeric %.6g", what, i,
                      grad[i], fd);
    }
}

enum { ON = 5, OC = 12 }; /* rows, columns of the op tests */
static float op_w[OC], op_cos[ON * 3], op_sin[ON * 3];
static int32_t op_target[ON] = {3, TUNE_IGNORE_INDEX, 0, 11, 7};

static void rms_f(float *out, const float *x, void *ctx)
{
    float rstd[ON];
    (void)ctx;
    tune_cpu_rmsnorm_forward(out, rstd, x, op_w, ON, OC, 1e-5f);
}
static void rope_f(float *out, const float *x, void *ctx)
{
    (void)ctx;
    memcpy(out, x, sizeof(float) * ON * OC);
    tune_cpu_rope_forward(out, op_cos, op_sin, ON, 2, 6);
}
static void swiglu_f(float *out, const float *x, void *ctx)
{
    (void)ctx;
    tune_cpu_swiglu_forward(out, x, x + ON * OC, ON * OC);
}
static void ce_f(float *out, const float *x, void *ctx)
{
    float lse[ON];
    double rows[ON], sum = 0.0;
    (void)ctx;
    tune_cpu_cross_entropy_forward(lse, rows, x, op_target, ON, OC);
    tune_cpu_add_sum(&sum, rows, ON);
    out[0] = (float)sum;
}

START_TEST(op_backwards_match_finite_differences)
{
    const size_t n = ON * OC;
    fill(op_w, OC, 1, 10);
    for (int i = 0; i < OC; i++) op_w[i] += 1.0f;
    float *x = rnd(2 * n, 2, 11), *w = rnd(n, 1, 12), *out = malloc(2 * n * 4), *dx = malloc(2 * n * 4);
    /* RMSNorm */
    float rstd[ON];
    tune_cpu_rmsnorm_forward(out, rstd, x, op_w, ON, OC, 1e-5f);
    memset(dx, 0, n * 4);
    tune_cpu_rmsnorm_backward(dx, w, x, op_w, rstd, ON, OC);
    check_fd(rms_f, x, n, w, n, dx, NULL, "rmsnorm");
    /* RoPE: 2 heads of 6, positions 0, 3, 7, 100, 4096 */
    const int32_t pos[ON] = {0, 3, 7, 100, 4096};
    const float inv[3] = {1.0f, 0.1f, 0.01f};
    tune_cpu_rope_tables(op_cos, op_sin, pos, inv, ON, 3);
    memcpy(dx, w, n * 4);
    tune_cpu_rope_backward(dx, op_cos, op_sin, ON, 2, 6);
    check_fd(rope_f, x, n, w, n, dx, NULL, "rope");
    /* SwiGLU: gate x[0..n), up x[n..2n); the output the backward gives
     * again is the forward's, bit for bit (LoRA's dA of down_proj uses it) */
    float *again = malloc(n * 4);
    tune_cpu_swiglu_backward(dx, dx + n, again, w, x, x + n, n);
    check_fd(swiglu_f, x, 2 * n, w, n, dx, NULL, "swiglu");
    tune_cpu_swiglu_forward(out, x, x + n, n);
    ck_assert_mem_eq(again, out, n * 4);
    tune_cpu_swiglu_backward(out, out + n, NULL, w, x, x + n, n);
    ck_assert_mem_eq(out, dx, 2 * n * 4);
    free(again);
    /* Cross-entropy with an ignored row */
    float lse[ON], one = 1.0f;
    double rows[ON];
    tune_cpu_cross_entropy_forward(lse, rows, x, op_target, ON, OC);
    memcpy(dx, x, n * 4);
    tune_cpu_cross_entropy_backward(dx, lse, op_target, ON, OC, 1.0f);
    check_fd(ce_f, x, n, &one, 1, dx, NULL, "cross-entropy");
    free(x); free(w); free(out); free(dx);
}
END_TEST

START_TEST(dropout_mask_is_addressed)
{
    /* Element e keeps by the Philox word at base + e, whatever the thread count. */
    const size_t n = 1001, words = (n + 31) / 32;
    const uint64_t base = (uint64_t)3 << 40, stream = TUNE_STREAM_DROPOUT + ((uint64_t)9 << 32);
    uint32_t a[32], b[32];
    omp_set_num_threads(1);
    tune_cpu_dropout_mask(a, n, 0.3f, 77, stream, base);
    omp_set_num_threads(2);
    tune_cpu_dropout_mask(b, n, 0.3f, 77, stream, base);
    ck_assert_mem_eq(a, b, words * sizeof *a);
    float *x = rnd(n, 1, 13), *y = malloc(n * 4), *z = rnd(n, 1, 14), *z0 = malloc(n * 4);
    memcpy(z0, z, n * 4);
    tune_cpu_dropout_apply(y, x, a, n, 0.3f, 0);
    tune_cpu_dropout_apply(z, x, a, n, 0.3f, 1);
    int dropped = 0;
    for (size_t e = 0; e < n; e++) {
        const int keep = tune_rng_uniform(77, stream, base + e) > 0.3f;
        ck_assert_int_eq((a[e / 32] >> (e % 32)) & 1u, keep);
        ck_assert_float_eq(y[e], keep ? x[e] * (1.0f / 0.7f) : 0.0f);
        ck_assert_float_eq(z[e], z0[e] + y[e]);
        dropped += !keep;
    }
    ck_assert_int_gt(dropped, 200);
    ck_assert_int_lt(dropped, 400);
    free(x); free(y); free(z); free(z0);
}
END_TEST

/* ---- a tiny random model ---- */

static void tiny_model(tune_model *m, int tied, tune_rope_type rope)
{
    memset(m, 0, sizeof *m);
    tune_model_config *c = &m->cfg;
    c->vocab_size = 31;
    c->hidden_size = 16;
    c->intermediate_size = 24;
    c->num_hidden_layers = 3;
    c->num_attention_heads = 4;
    c->num_key_value_heads = 2;
    c->head_dim = 6;
    c->max_position_embeddings = 64;
    c->rms_norm_eps = 1e-5f;
    c->rope_theta = 10000.0;
    c->rope_type = rope;
    c->rope_factor = 8.0;
    c->rope_low_freq_factor = 1.0;
    c->rope_high_freq_factor = 4.0;
    c->rope_original_max_position_embeddings = 16;
    c->tie_word_embeddings = tied;
    const size_t V = 31, C = 16, L = 3;
    size_t per_layer = 2 * C;
    for (int k = 0; k < TUNE_N_LINEAR; k++) {
        int out, in;
        tune_linear_shape(c, (tune_linear_kind)k, &out, &in);
        per_layer += (size_t)out * in;
    }
    m->n_floats = V * C * (tied ? 1 : 2) + L * per_layer + C;
    m->storage = rnd(m->n_floats, 0.3f, 20);
    m->layers = calloc(L, sizeof *m->layers);
    ck_assert_ptr_nonnull(m->layers);
    float *p = m->storage;
    m->embed = (tune_weight){TUNE_Q_F32, (int)V, (int)C, p, NULL}, p += V * C;
    for (size_t l = 0; l < L; l++) {
        tune_layer *ly = &m->layers[l];
        ly->attn_norm = p, p += C;
        for (int k = 0; k < TUNE_N_LINEAR; k++) {
            int out, in;
            tune_linear_shape(c, (tune_linear_kind)k, &out, &in);
            ly->w[k] = (tune_weight){TUNE_Q_F32, out, in, p, NULL}, p += (size_t)out * in;
        }
        ly->ffn_norm = p, p += C;
        for (size_t i = 0; i < C; i++) ly->attn_norm[i] += 1.0f, ly->ffn_norm[i] += 1.0f;
    }
    m->final_norm = p, p += C;
    for (size_t i = 0; i < C; i++) m->final_norm[i] += 1.0f;
    m->lm_head = tied ? m->embed : (tune_weight){TUNE_Q_F32, (int)V, (int)C, p, NULL};
}

static void tiny_free(tune_model *m)
{
    free(m->storage);
    free(m->layers);
}

/* LoRA on the selected modules (NULL: every linear), with random B so that
 * every gradient is non-zero. */
static tune_lora *tiny_lora_on(const tune_model *m, float dropout, const unsigned char *selected)
{
    const tune_lora_config lc = {.r = 2, .alpha = 4.0f, .dropout = dropout, .target_mask = 0x7f};
    tune_lora *lora;
    tune_error err;
    ck_assert_int_eq(tune_lora_create(&m->cfg, &lc, selected, 5, &lora, &err), TUNE_OK);
    fill(lora->params, lora->n_params, 0.4f, 21);
    return lora;
}

static tune_lora *tiny_lora(const tune_model *m, float dropout) { return tiny_lora_on(m, dropout, NULL); }

enum { TB = 2, TT = 9 };
/* Row 0: one sequence. Row 1: two packed sequences [0, 4) and [4, 9). */
static int32_t t_ids[TB * TT] = {1, 5, 9, 30, 2, 2, 7, 0, 11, 4, 8, 15, 16, 23, 4, 2, 29, 3};
static int32_t t_labels[TB * TT] = {-100, 5, 9, 30, 2, -100, 7, 0, 11, -100, 8, 15, 16, 23, 4, 2, 29, 3};
static int32_t t_pos[TB * TT] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 2, 3, 0, 1, 2, 3, 4};
static int32_t t_seg[TB * TT] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1};

static tune_batch tiny_batch(int row0, int rows)
{
    const tune_batch b = {rows, TT, t_ids + row0 * TT, t_labels + row0 * TT, t_pos + row0 * TT, t_seg + row0 * TT};
    return b;
}

/* The summed loss of a forward; grad_scale > 0 makes it a training forward. */
static double loss_of(const tune_model *m, const tune_lora *lora, const tune_batch *b, const tune_dropout *dp,
                      float grad_scale, tune_workspace *ws)
{
    double loss;
    long n;
    tune_error err;
    ck_assert_int_eq(tune_llama_forward(m, lora, b, dp, grad_scale, ws, &loss, &n, &err), TUNE_OK);
    return loss;
}

static void lora_gradients_match_finite_differences(tune_rope_type rope, int tied, float p,
                                                    const unsigned char *selected)
{
    tune_model m;
    tiny_model(&m, tied, rope);
    tune_lora *lora = tiny_lora_on(&m, p, selected);
    tune_workspace *ws;
    tune_error err;
    ck_assert_int_eq(tune_workspace_create(tune_backend_cpu(), &m.cfg, lora, TB, TT, 0, &ws, &err), TUNE_OK);
    const tune_batch b = tiny_batch(0, TB);
    const tune_dropout dp = {p, 1234, 17};
    double loss;
    long n;
    ck_assert_int_eq(tune_llama_forward(&m, lora, &b, &dp, 1.0f, ws, &loss, &n, &err), TUNE_OK);
    ck_assert_int_eq(n, 14); /* the label at the segment change is not a target */
    ck_assert_int_eq(tune_llama_backward(&m, lora, &b, &dp, ws, &err), TUNE_OK);
    const float eps = 3e-3f; /* small: the loss is curved enough that 1e-2 leaves 3% truncation error */
    for (size_t i = 0; i < lora->n_params; i++) {
        const float keep = lora->params[i];
        lora->params[i] = keep + eps;
        const double up = loss_of(&m, lora, &b, &dp, 0.0f, ws);
        lora->params[i] = keep - eps;
        const double dn = loss_of(&m, lora, &b, &dp, 0.0f, ws);
        lora->params[i] = keep;
        const double fd = (up - dn) / (2.0 * eps);
        ck_assert_msg(fabs(fd - lora->grads[i]) <= 2e-3 + 1e-2 * fabs(fd), "param %zu: analytic %.6g, numeric %.6g", i,
                      lora->grads[i], fd);
    }
    tune_workspace_free(ws);
    tune_lora_free(lora);
    tiny_free(&m);
}

START_TEST(lora_gradients_fd_default_rope)
{
    lora_gradients_match_finite_differences(TUNE_ROPE_DEFAULT, 0, 0.0f, NULL);
}
END_TEST

START_TEST(lora_gradients_fd_llama3_rope_tied_dropout)
{
    lora_gradients_match_finite_differences(TUNE_ROPE_LLAMA3, 1, 0.25f, NULL);
}
END_TEST

/* Some modules only, none in layer 0: the backward stops early and recomputes
 * only the inputs those modules need. */
START_TEST(lora_gradients_fd_some_modules)
{
    unsigned char sel[3 * TUNE_N_LINEAR] = {0};
    sel[1 * TUNE_N_LINEAR + TUNE_K_PROJ] = 1;
    sel[1 * TUNE_N_LINEAR + TUNE_DOWN_PROJ] = 1;
    sel[2 * TUNE_N_LINEAR + TUNE_UP_PROJ] = 1;
    sel[2 * TUNE_N_LINEAR + TUNE_O_PROJ] = 1;
    lora_gradients_match_finite_differences(TUNE_ROPE_DEFAULT, 0, 0.1f, sel);
}
END_TEST

/* Two runs give the same bits (no uninitialised or racy state). */
START_TEST(reruns_are_bit_identical)
{
    tune_model m;
    tiny_model(&m, 0, TUNE_ROPE_DEFAULT);
    tune_lora *lora = tiny_lora(&m, 0.3f);
    tune_workspace *ws;
    tune_error err;
    ck_assert_int_eq(tune_workspace_create(tune_backend_cpu(), &m.cfg, lora, TB, TT, 0, &ws, &err), TUNE_OK);
    const tune_batch b = tiny_batch(0, TB);
    const tune_dropout dp = {0.3f, 99, 4};
    float *g1 = malloc(lora->n_params * 4);
    double l1 = 0, l2 = 0;
    for (int run = 0; run < 2; run++) {
        memset(lora->grads, 0, lora->n_params * 4);
        *(run ? &l2 : &l1) = loss_of(&m, lora, &b, &dp, 0.5f, ws);
        ck_assert_int_eq(tune_llama_backward(&m, lora, &b, &dp, ws, &err), TUNE_OK);
        if (!run) memcpy(g1, lora->grads, lora->n_params * 4);
    }
    ck_assert_double_eq(l1, l2);
    ck_assert_mem_eq(g1, lora->grads, lora->n_params * 4);
    /* another micro-batch index draws other masks */
    const tune_dropout dp2 = {0.3f, 99, 5};
    ck_assert_double_ne(loss_of(&m, lora, &b, &dp2, 0.0f, ws), l1);
    free(g1);
    tune_workspace_free(ws);
    tune_lora_free(lora);
    tiny_free(&m);
}
END_TEST

/* A packed row gives the losses and gradients of its sequences run alone. */
START_TEST(packed_row_equals_separate_sequences)
{
    tune_model m;
    tiny_model(&m, 0, TUNE_ROPE_DEFAULT);
    tune_lora *lora = tiny_lora(&m, 0.0f);
    tune_workspace *ws;
    tune_error err;
    ck_assert_int_eq(tune_workspace_create(tune_backend_cpu(), &m.cfg, lora, 1, TT, 0, &ws, &err), TUNE_OK);
    const tune_batch packed = tiny_batch(1, 1);
    double lp, l1, l2;
    long np, n1, n2;
    ck_assert_int_eq(tune_llama_forward(&m, lora, &packed, NULL, 1.0f, ws, &lp, &np, &err), TUNE_OK);
    ck_assert_int_eq(tune_llama_backward(&m, lora, &packed, NULL, ws, &err), TUNE_OK);
    float *gp = malloc(lora->n_params * 4);
    memcpy(gp, lora->grads, lora->n_params * 4);
    memset(lora->grads, 0, lora->n_params * 4);
    const tune_batch s1 = {1, 4, t_ids + TT, t_labels + TT, NULL, NULL};
    const tune_batch s2 = {1, 5, t_ids + TT + 4, t_labels + TT + 4, NULL, NULL};
    ck_assert_int_eq(tune_llama_forward(&m, lora, &s1, NULL, 1.0f, ws, &l1, &n1, &err), TUNE_OK);
    ck_assert_int_eq(tune_llama_backward(&m, lora, &s1, NULL, ws, &err), TUNE_OK);
    ck_assert_int_eq(tune_llama_forward(&m, lora, &s2, NULL, 1.0f, ws, &l2, &n2, &err), TUNE_OK);
    ck_assert_int_eq(tune_llama_backward(&m, lora, &s2, NULL, ws, &err), TUNE_OK);
    ck_assert_int_eq(np, n1 + n2);
    ck_assert_double_eq_tol(lp, l1 + l2, 1e-5 * fabs(lp));
    assert_close(gp, lora->grads, lora->n_params, 1e-5f, 1e-4f, "packed grad");
    free(gp);
    tune_workspace_free(ws);
    tune_lora_free(lora);
    tiny_free(&m);
}
END_TEST

/* Two half batches with grad_scale 1/N_total add up to the full batch. */
START_TEST(accumulated_half_batches_equal_full_batch)
{
    tune_model m;
    tiny_model(&m, 1, TUNE_ROPE_DEFAULT);
    tune_lora *lora = tiny_lora(&m, 0.0f);
    tune_workspace *ws;
    tune_error err;
    ck_assert_int_eq(tune_workspace_create(tune_backend_cpu(), &m.cfg, lora, TB, TT, 0, &ws, &err), TUNE_OK);
    const tune_batch full = tiny_batch(0, TB), h0 = tiny_batch(0, 1), h1 = tiny_batch(1, 1);
    double loss;
    long n;
    ck_assert_int_eq(tune_llama_forward(&m, lora, &full, NULL, 0.0f, ws, &loss, &n, &err), TUNE_OK); /* counts */
    const float scale = 1.0f / n;
    ck_assert_int_eq(tune_llama_forward(&m, lora, &full, NULL, scale, ws, &loss, &n, &err), TUNE_OK);
    ck_assert_int_eq(tune_llama_backward(&m, lora, &full, NULL, ws, &err), TUNE_OK);
    float *gf = malloc(lora->n_params * 4);
    memcpy(gf, lora->grads, lora->n_params * 4);
    memset(lora->grads, 0, lora->n_params * 4);
    ck_assert_int_eq(tune_llama_forward(&m, lora, &h0, NULL, scale, ws, &loss, &n, &err), TUNE_OK);
    ck_assert_int_eq(tune_llama_backward(&m, lora, &h0, NULL, ws, &err), TUNE_OK);
    ck_assert_int_eq(tune_llama_forward(&m, lora, &h1, NULL, scale, ws, &loss, &n, &err), TUNE_OK);
    ck_assert_int_eq(tune_llama_backward(&m, lora, &h1, NULL, ws, &err), TUNE_OK);
    assert_close(lora->grads, gf, lora->n_params, 1e-6f, 1e-4f, "accumulated grad");
    free(gf);
    tune_workspace_free(ws);
    tune_lora_free(lora);
    tiny_free(&m);
}
END_TEST

/* Gradient checkpointing recomputes each layer in the backward pass: the
 * same loss and gradients bit for bit, with dropout and with adapters on
 * some layers only, from a smaller workspace. */
START_TEST(checkpointing_gives_identical_gradients)
{
    /* (layer, kind): nothing on layer 0, q/v and down on layer 1, everything on layer 2 */
    static const unsigned char upper_layers[3 * TUNE_N_LINEAR] = {0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 1,
                                                                  1, 1, 1, 1, 1, 1, 1};
    for (int variant = 0; variant < 2; variant++) {
        tune_model m;
        tiny_model(&m, 1, TUNE_ROPE_DEFAULT);
        const float p = variant ? 0.25f : 0.0f;
        tune_lora *lora = tiny_lora_on(&m, p, variant ? upper_layers : NULL);
        const tune_dropout dp = {p, 7, 3};
        const tune_batch b = tiny_batch(0, TB);
        float *grads[2];
        double loss[2];
        for (int ckpt = 0; ckpt < 2; ckpt++) {
            tune_workspace *ws;
            tune_error err;
            long n;
            ck_assert_int_eq(tune_workspace_create(tune_backend_cpu(), &m.cfg, lora, TB, TT, ckpt, &ws, &err), TUNE_OK);
            memset(lora->grads, 0, lora->n_params * 4);
            ck_assert_int_eq(tune_llama_forward(&m, lora, &b, &dp, 0.125f, ws, &loss[ckpt], &n, &err), TUNE_OK);
            ck_assert_int_eq(tune_llama_backward(&m, lora, &b, &dp, ws, &err), TUNE_OK);
            grads[ckpt] = malloc(lora->n_params * 4);
            memcpy(grads[ckpt], lora->grads, lora->n_params * 4);
            tune_workspace_free(ws);
        }
        ck_assert(loss[0] == loss[1]);
        ck_assert_mem_eq(grads[0], grads[1], lora->n_params * 4);
        size_t nonzero = 0;
        for (size_t i = 0; i < lora->n_params; i++) nonzero += grads[0][i] != 0.0f;
        ck_assert_uint_gt(nonzero, lora->n_params / 4); /* something was trained */
        ck_assert_uint_lt(tune_workspace_bytes(tune_backend_cpu(), &m.cfg, lora->n_modules, 2, 0, TB, TT, 1),
                          tune_workspace_bytes(tune_backend_cpu(), &m.cfg, lora->n_modules, 2, 0, TB, TT, 0));
        free(grads[0]);
        free(grads[1]);
        tune_lora_free(lora);
        tiny_free(&m);
    }
}
END_TEST

/* The backward skips what only the gradient of the model's input needs,
 * below the lowest trained layer (q/k/v's input gradients; the attention
 * backward where no q/k/v adapter is there): the adapters' gradients are
 * those of a run that needs everything, the embedding trained as well. */
START_TEST(skipped_input_gradient_changes_nothing)
{
    /* layer 0 untouched, layer 1 MLP only (no attention backward there), layer 2 everything;
     * then everything everywhere (layer 0's q/k/v input gradients skipped) */
    static const unsigned char mlp_from_1[3 * TUNE_N_LINEAR] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1,
                                                                1, 1, 1, 1, 1, 1, 1};
    const unsigned char *cases[2] = {mlp_from_1, NULL};
    for (int c = 0; c < 2; c++) {
        tune_model m;
        tiny_model(&m, 1, TUNE_ROPE_DEFAULT);
        tune_lora *lora[2];
        const tune_batch b = tiny_batch(0, TB);
        tune_error err;
        for (int embed = 0; embed < 2; embed++) {
            lora[embed] = tiny_lora_on(&m, 0.0f, cases[c]);
            if (embed) ck_assert_int_eq(tune_lora_add_saved(lora[embed], &m, TUNE_SAVE_EMBED, &err), TUNE_OK);
            tune_workspace *ws;
            long n;
            double loss;
            ck_assert_int_eq(tune_workspace_create(tune_backend_cpu(), &m.cfg, lora[embed], TB, TT, 0, &ws, &err),
                             TUNE_OK);
            ck_assert_int_eq(tune_llama_forward(&m, lora[embed], &b, NULL, 0.125f, ws, &loss, &n, &err), TUNE_OK);
            ck_assert_int_eq(tune_llama_backward(&m, lora[embed], &b, NULL, ws, &err), TUNE_OK);
            tune_workspace_free(ws);
        }
        const size_t n_ab = lora[1]->embed_offset; /* the A and B matrices come first in both */
        ck_assert_uint_eq(n_ab, lora[0]->n_params);
        ck_assert_mem_eq(lora[0]->grads, lora[1]->grads, n_ab * sizeof(float));
        size_t nonzero = 0;
        for (size_t i = lora[1]->embed_offset; i < lora[1]->n_params; i++) nonzero += lora[1]->grads[i] != 0.0f;
        ck_assert_uint_gt(nonzero, 0); /* the embedding's gradient was made */
        tune_lora_free(lora[0]);
        tune_lora_free(lora[1]);
        tiny_free(&m);
    }
}
END_TEST

/* Freshly initialised LoRA (B = 0) leaves the base model's logits unchanged. */
START_TEST(fresh_lora_keeps_base_logits)
{
    tune_model m;
    tiny_model(&m, 0, TUNE_ROPE_DEFAULT);
    const tune_lora_config lc = {.r = 4, .alpha = 8.0f, .dropout = 0.5f, .target_mask = 0x7f};
    tune_lora *lora;
    tune_workspace *wb, *wl;
    tune_error err;
    ck_assert_int_eq(tune_lora_create(&m.cfg, &lc, NULL, 5, &lora, &err), TUNE_OK);
    ck_assert_int_eq(tune_workspace_create(tune_backend_cpu(), &m.cfg, NULL, TB, TT, 0, &wb, &err), TUNE_OK);
    ck_assert_int_eq(tune_workspace_create(tune_backend_cpu(), &m.cfg, lora, TB, TT, 0, &wl, &err), TUNE_OK);
    const tune_batch b = tiny_batch(0, TB);
    const tune_dropout dp = {0.5f, 1, 0};
    const double lb = loss_of(&m, NULL, &b, NULL, 0.0f, wb), ll = loss_of(&m, lora, &b, &dp, 0.0f, wl);
    ck_assert_double_eq(lb, ll);
    float *logits_b = malloc(sizeof(float) * TB * TT * 31), *logits_l = malloc(sizeof(float) * TB * TT * 31);
    ck_assert_int_eq(tune_llama_logits(&m, NULL, &b, wb, logits_b, &err), TUNE_OK);
    ck_assert_int_eq(tune_llama_logits(&m, lora, &b, wl, logits_l, &err), TUNE_OK);
    ck_assert_mem_eq(logits_b, logits_l, sizeof(float) * TB * TT * 31);
    free(logits_b);
    free(logits_l);
    tune_workspace_free(wb);
    tune_workspace_free(wl);
    tune_lora_free(lora);
    tiny_free(&m);
}
END_TEST

START_TEST(bad_batches_are_input_errors)
{
    tune_model m;
    tiny_model(&m, 0, TUNE_ROPE_DEFAULT);
    tune_lora *lora = tiny_lora(&m, 0.1f);
    tune_workspace *ws;
    tune_error err;
    ck_assert_int_eq(tune_workspace_create(tune_backend_cpu(), &m.cfg, lora, 1, TT, 0, &ws, &err), TUNE_OK);
    tune_batch b = tiny_batch(0, 1);
    ck_assert_int_eq(tune_llama_backward(&m, lora, &b, NULL, ws, &err), TUNE_ERR_INPUT);
    int32_t ids[TT];
    memcpy(ids, t_ids, sizeof ids);
    ids[3] = 31;
    b.input_ids = ids;
    double loss;
    long n;
    ck_assert_int_eq(tune_llama_forward(&m, lora, &b, NULL, 0.0f, ws, &loss, &n, &err), TUNE_ERR_INPUT);
    ck_assert_ptr_nonnull(strstr(err.message, "position 3"));
    b = tiny_batch(0, 2); /* more rows than the workspace holds */
    ck_assert_int_eq(tune_llama_forward(&m, lora, &b, NULL, 0.0f, ws, &loss, &n, &err), TUNE_ERR_INPUT);
    /* an evaluation forward leaves nothing to go backward from */
    b = tiny_batch(0, 1);
    ck_assert_int_eq(tune_llama_forward(&m, lora, &b, NULL, 0.0f, ws, &loss, &n, &err), TUNE_OK);
    ck_assert_int_eq(tune_llama_backward(&m, lora, &b, NULL, ws, &err), TUNE_ERR_INPUT);
    ck_assert_int_eq(tune_llama_forward(&m, NULL, &b, NULL, 1.0f, ws, &loss, &n, &err), TUNE_ERR_INPUT);
    ck_assert_int_eq(tune_llama_forward(&m, lora, &b, NULL, -1.0f, ws, &loss, &n, &err), TUNE_ERR_INPUT);
    /* the backward must see the forward's adapters and dropout */
    ck_assert_int_eq(tune_llama_forward(&m, lora, &b, NULL, 1.0f, ws, &loss, &n, &err), TUNE_OK);
    const tune_dropout dp = {0.1f, 1, 0};
    ck_assert_int_eq(tune_llama_backward(&m, lora, &b, &dp, ws, &err), TUNE_ERR_INPUT);
    ck_assert_ptr_nonnull(strstr(err.message, "dropout of the last forward"));
    ck_assert_int_eq(tune_llama_backward(&m, lora, &b, NULL, ws, &err), TUNE_OK);
    ck_assert_int_eq(tune_llama_backward(&m, lora, &b, NULL, ws, &err), TUNE_ERR_INPUT); /* once per forward */
    /* a model of another shape */
    m.cfg.intermediate_size = 25;
    ck_assert_int_eq(tune_llama_forward(&m, lora, &b, NULL, 0.0f, ws, &loss, &n, &err), TUNE_ERR_INPUT);
    m.cfg.intermediate_size = 24;
    tune_workspace_free(ws);
    tune_lora_free(lora);
    tiny_free(&m);
}
END_TEST

/* ---- PyTorch + PEFT goldens (tests/data/tiny/<model>, tools/reference) ---- */

typedef struct golden {
    tune_model model;
    tune_lora *lora;
    tune_st_file *st;
    cJSON *json;
    int B, T, V;
} golden;

static const tune_st_tensor *tensor(const golden *g, const char *name)
{
    const tune_st_tensor *t = tune_st_find(g->st, name);
    ck_assert_msg(t != NULL, "golden tensor %s missing", name);
    return t;
}

static float *read_f32(const golden *g, const char *name, size_t expect)
{
    const tune_st_tensor *t = tensor(g, name);
    ck_assert_uint_eq(t->numel, expect);
    float *x = malloc(t->numel * sizeof *x);
    tune_error err;
    ck_assert_int_eq(tune_st_read_f32(t, x, &err), TUNE_OK);
    return x;
}

static int32_t *read_i32(const golden *g, const char *name, size_t expect)
{
    const tune_st_tensor *t = tensor(g, name);
    ck_assert_uint_eq(t->numel, expect);
    int32_t *x = malloc(t->numel * sizeof *x);
    tune_error err;
    ck_assert_int_eq(tune_st_read_i32(t, x, &err), TUNE_OK);
    return x;
}

static double json_num(const golden *g, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(g->json, key);
    ck_assert_msg(cJSON_IsNumber(v), "golden.json: %s", key);
    return v->valuedouble;
}

/* PEFT's saved name of a module's A or B. */
static void peft_name(const tune_lora_module *m, const char *ab, char *buf, size_t size)
{
    char path[96];
    tune_linear_module_path(m->layer, m->kind, path, sizeof path);
    snprintf(buf, size, "base_model.model.%s.lora_%s.weight", path, ab);
}

/* Loads the model, the golden tensors and the adapter (targets, r, alpha from golden.json). */
static void golden_open(golden *g, const char *name)
{
    char dir[512], path[600];
    snprintf(dir, sizeof dir, "%s/tiny/%s", test_data_dir(), name);
    tune_error err;
    ck_assert_msg(tune_model_load(dir, &g->model, &err) == TUNE_OK, "%s", err.message);
    snprintf(path, sizeof path, "%s/golden.safetensors", dir);
    ck_assert_msg(tune_st_open(path, &g->st, &err) == TUNE_OK, "%s", err.message);
    snprintf(path, sizeof path, "%s/golden.json", dir);
    char *text;
    size_t len;
    ck_assert_int_eq(tune_read_file(path, &text, &len, &err), TUNE_OK);
    g->json = cJSON_Parse(text);
    free(text);
    ck_assert_ptr_nonnull(g->json);
    g->B = (int)json_num(g, "B");
    g->T = (int)json_num(g, "T");
    g->V = g->model.cfg.vocab_size;
    const cJSON *targets = cJSON_GetObjectItemCaseSensitive(g->json, "target_modules");
    const char *names[TUNE_N_LINEAR];
    int n = 0;
    const cJSON *t;
    cJSON_ArrayForEach(t, targets)
    {
        ck_assert(n < TUNE_N_LINEAR && cJSON_IsString(t));
        names[n++] = t->valuestring;
    }
    const int L = g->model.cfg.num_hidden_layers;
    unsigned char *sel = malloc((size_t)L * TUNE_N_LINEAR);
    ck_assert_int_eq(tune_lora_select_names(&g->model.cfg, names, n, sel, &err), TUNE_OK);
    const tune_lora_config lc = {.r = (int)json_num(g, "lora_r"),
                                 .alpha = (float)json_num(g, "lora_alpha"),
                                 .use_rslora = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(g->json, "use_rslora"))};
    ck_assert_int_eq(tune_lora_create(&g->model.cfg, &lc, sel, 1, &g->lora, &err), TUNE_OK);
    free(sel);
    ck_assert_float_eq_tol(g->lora->scaling, (float)json_num(g, "scaling"), 1e-6f);
    for (int m = 0; m < g->lora->n_modules; m++) {
        const tune_lora_module *mod = &g->lora->modules[m];
        char tn[160];
        const char *ab[2] = {"A", "B"};
        for (int i = 0; i < 2; i++) {
            peft_name(mod, ab[i], tn, sizeof tn);
            const tune_st_tensor *st = tensor(g, tn);
            ck_assert_uint_eq(st->numel, (size_t)g->lora->cfg.r * (i ? mod->out : mod->in));
            ck_assert_int_eq(tune_st_read_f32(st, g->lora->params + (i ? mod->b_offset : mod->a_offset), &err), TUNE_OK);
        }
    }
}

static void golden_close(golden *g)
{
    tune_lora_free(g->lora);
    tune_st_close(g->st);
    cJSON_Delete(g->json);
    tune_model_free(&g->model);
}

/* |got − want| ≤ atol + rtol·|want| for every element. */
static void assert_golden(const float *got, const float *want, size_t n, float atol, float rtol, const char *what)
{
    assert_close(got, want, n, atol, rtol, what);
}

/* Every LoRA gradient against grad.<PEFT name>. */
static void assert_golden_grads(const golden *g, const char *what)
{
    for (int m = 0; m < g->lora->n_modules; m++) {
        const tune_lora_module *mod = &g->lora->modules[m];
        const char *ab[2] = {"A", "B"};
        for (int i = 0; i < 2; i++) {
            char tn[160], gn[170];
            peft_name(mod, ab[i], tn, sizeof tn);
            snprintf(gn, sizeof gn, "grad.%s", tn);
            const size_t n = (size_t)g->lora->cfg.r * (i ? mod->out : mod->in);
            float *want = read_f32(g, gn, n);
            char label[200];
            snprintf(label, sizeof label, "%s %s", what, gn);
            assert_golden(g->lora->grads + (i ? mod->b_offset : mod->a_offset), want, n, 1e-6f, 1e-4f, label);
            free(want);
        }
    }
}

static void check_golden_model(const char *name)
{
    golden g;
    golden_open(&g, name);
    const int B = g.B, T = g.T, V = g.V;
    const size_t NV = (size_t)B * T * V;
    int32_t *ids = read_i32(&g, "input_ids", (size_t)B * T), *labels = read_i32(&g, "labels", (size_t)B * T);
    float *base = read_f32(&g, "base_logits", NV), *logits = read_f32(&g, "logits", NV);
    float *loss_t = read_f32(&g, "loss", 1);
    const long n_targets = (long)json_num(&g, "n_targets");
    tune_workspace *ws, *wb;
    tune_error err;
    ck_assert_int_eq(tune_workspace_create(tune_backend_cpu(), &g.model.cfg, g.lora, B, T, 0, &ws, &err), TUNE_OK);
    ck_assert_int_eq(tune_workspace_create(tune_backend_cpu(), &g.model.cfg, NULL, B, T, 0, &wb, &err), TUNE_OK);
    double loss;
    long n;
    /* base model */
    const tune_batch batch = {B, T, ids, labels, NULL, NULL};
    float *got = malloc(NV * sizeof *got);
    ck_assert_int_eq(tune_llama_logits(&g.model, NULL, &batch, wb, got, &err), TUNE_OK);
    assert_golden(got, base, NV, 1e-5f, 1e-5f, "base logits");
    /* with the adapter: logits, loss, gradients of the mean loss */
    ck_assert_int_eq(tune_llama_logits(&g.model, g.lora, &batch, ws, got, &err), TUNE_OK);
    assert_golden(got, logits, NV, 1e-5f, 1e-5f, "logits");
    ck_assert_int_eq(tune_llama_forward(&g.model, g.lora, &batch, NULL, 1.0f / n_targets, ws, &loss, &n, &err), TUNE_OK);
    ck_assert_int_eq(n, n_targets);
    ck_assert_double_eq_tol(loss / n, loss_t[0], 1e-5 * fmax(1.0, fabs(loss_t[0])));
    ck_assert_int_eq(tune_llama_backward(&g.model, g.lora, &batch, NULL, ws, &err), TUNE_OK);
    assert_golden_grads(&g, "full batch");
    /* two half batches accumulated with grad_scale 1/N_total */
    memset(g.lora->grads, 0, g.lora->n_params * sizeof(float));
    for (int b = 0; b < B; b++) {
        const tune_batch row = {1, T, ids + (size_t)b * T, labels + (size_t)b * T, NULL, NULL};
        long nr;
        ck_assert_int_eq(tune_llama_forward(&g.model, g.lora, &row, NULL, 1.0f / n_targets, ws, &loss, &nr, &err),
                         TUNE_OK);
        ck_assert_int_eq(tune_llama_backward(&g.model, g.lora, &row, NULL, ws, &err), TUNE_OK);
    }
    assert_golden_grads(&g, "accumulated");
    tune_workspace_free(ws);
    tune_workspace_free(wb);
    /* the packed row: both examples in one row of 2T */
    const size_t P = (size_t)2 * T;
    int32_t *pids = read_i32(&g, "packed_input_ids", P), *plab = read_i32(&g, "packed_labels", P);
    int32_t *ppos = read_i32(&g, "packed_position_ids", P), *pseg = read_i32(&g, "packed_segment_ids", P);
    float *ploss = read_f32(&g, "packed_loss", 1);
    ck_assert_int_eq(tune_workspace_create(tune_backend_cpu(), &g.model.cfg, g.lora, 1, 2 * T, 0, &ws, &err), TUNE_OK);
    const tune_batch packed = {1, 2 * T, pids, plab, ppos, pseg};
    memset(g.lora->grads, 0, g.lora->n_params * sizeof(float));
    ck_assert_int_eq(tune_llama_logits(&g.model, g.lora, &packed, ws, got, &err), TUNE_OK);
    assert_golden(got, logits, NV, 1e-5f, 1e-5f, "packed logits");
    ck_assert_int_eq(tune_llama_forward(&g.model, g.lora, &packed, NULL, 1.0f / n_targets, ws, &loss, &n, &err),
                     TUNE_OK);
    ck_assert_int_eq(n, n_targets);
    ck_assert_double_eq_tol(loss / n, ploss[0], 1e-5 * fmax(1.0, fabs(ploss[0])));
    ck_assert_int_eq(tune_llama_backward(&g.model, g.lora, &packed, NULL, ws, &err), TUNE_OK);
    assert_golden_grads(&g, "packed");
    tune_workspace_free(ws);
    free(ids); free(labels); free(base); free(logits); free(loss_t); free(got);
    free(pids); free(plab); free(ppos); free(pseg); free(ploss);
    golden_close(&g);
}

START_TEST(golden_gqa) { check_golden_model("gqa"); }
END_TEST

START_TEST(golden_tied) { check_golden_model("tied"); }
END_TEST

START_TEST(golden_llama3rope) { check_golden_model("llama3rope"); }
END_TEST

int main(void)
{
    Suite *s = suite_create("llama");
    /* Timeouts are generous: the suite runs in well under a second, but under ASan on a busy machine it can take seconds. */
    TCase *k = tcase_create("kernels");
    tcase_set_timeout(k, 60);
    tcase_add_test(k, matmul_matches_reference);
    tcase_add_loop_test(k, attention_matches_reference, 0, 3);
    tcase_add_test(k, op_backwards_match_finite_differences);
    tcase_add_test(k, dropout_mask_is_addressed);
    suite_add_tcase(s, k);
    TCase *t = tcase_create("tiny random model");
    tcase_set_timeout(t, 60);
    tcase_add_test(t, lora_gradients_fd_default_rope);
    tcase_add_test(t, lora_gradients_fd_llama3_rope_tied_dropout);
    tcase_add_test(t, lora_gradients_fd_some_modules);
    tcase_add_test(t, reruns_are_bit_identical);
    tcase_add_test(t, packed_row_equals_separate_sequences);
    tcase_add_test(t, accumulated_half_batches_equal_full_batch);
    tcase_add_test(t, checkpointing_gives_identical_gradients);
    tcase_add_test(t, skipped_input_gradient_changes_nothing);
    tcase_add_test(t, fresh_lora_keeps_base_logits);
    tcase_add_test(t, bad_batches_are_input_errors);
    suite_add_tcase(s, t);
    TCase *g = tcase_create("pytorch goldens");
    tcase_set_timeout(g, 60);
    tcase_add_test(g, golden_gqa);
    tcase_add_test(g, golden_tied);
    tcase_add_test(g, golden_llama3rope);
    suite_add_tcase(s, g);
    return run_suite(s);
}
