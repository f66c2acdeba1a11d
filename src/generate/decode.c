/* Incremental LLaMA decoding with a key/value cache: the prompt is fed in
 * chunks (one sgemm per weight per chunk), then one token at a time. Every
 * layer step is the training forward's own CPU operation (backend.h) except
 * attention, which here reads the cache: queries at positions
 * [len, len + n) against keys [0, position]. */
#include "tune/generate.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "tune/backend.h"
#include "tune/kernels.h"
#include "tune/llama.h"

/* Tokens per prefill chunk: bounds the scratch memory for long prompts. */
#define CHUNK 128
/* Steps of fewer tokens run on one thread. Their products are matrix-vector
 * ones bound by memory; a thread team per step (the vocabulary projection is
 * big enough to get one) made decoding 2x slower on the busy 2-core machine. */
#define STEP_PARALLEL_MIN 16

struct tune_decoder {
    const tune_model *m;
    int L, C, H, Hkv, hd, I, V, qd, kvd, max_pos;
    int cap, len;      /* positions the cache can hold / holds */
    int32_t *ids;      /* (cap): the tokens in the cache */
    float *k, *v;      /* (L, cap, kvd): keys after RoPE, values */
    int n_threads;
    float *inv_freq;   /* (hd/2) */
    /* scratch for one chunk of up to CHUNK tokens */
    float *x;          /* (CHUNK, C) residual stream */
    float *xn;         /* (CHUNK, C) normed input of a block */
    float *rstd;       /* (CHUNK) */
    float *q, *att;    /* (CHUNK, qd) */
    float *gate, *up;  /* (CHUNK, I) */
    float *cos_t, *sin_t; /* (CHUNK, hd/2) */
    int32_t *pos;      /* (CHUNK) */
    float *scores;     /* (n_threads, max_pos) attention probabilities */
};

static void free_scratch(tune_decoder *d)
{
    float **bufs[] = {&d->inv_freq, &d->x, &d->xn, &d->rstd, &d->q, &d->att, &d->gate, &d->up,
                      &d->cos_t, &d->sin_t, &d->scores, &d->k, &d->v};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) {
        free(*bufs[i]);
        *bufs[i] = NULL;
    }
    free(d->pos);
    free(d->ids);
}

void tune_decoder_free(tune_decoder *d)
{
    if (!d) return;
    free_scratch(d);
    free(d);
}

tune_status tune_decoder_create(const tune_model *model, tune_decoder **out, tune_error *err)
{
    *out = NULL;
    const tune_model_config *c = &model->cfg;
    if (c->max_position_embeddings < 1)
        return tune_fail_input(err, NULL, "model config: max_position_embeddings must be positive");
    tune_decoder *d = calloc(1, sizeof *d);
    if (!d) return tune_fail_run(err, NULL, "out of memory creating the decoder");
    d->m = model;
    d->L = c->num_hidden_layers;
    d->C = c->hidden_size;
    d->H = c->num_attention_heads;
    d->Hkv = c->num_key_value_heads;
    d->hd = c->head_dim;
    d->I = c->intermediate_size;
    d->V = c->vocab_size;
    d->qd = d->H * d->hd;
    d->kvd = d->Hkv * d->hd;
    d->max_pos = c->max_position_embeddings;
    d->n_threads = omp_get_max_threads();
    const size_t n = CHUNK;
    struct { float **p; size_t count; } bufs[] = {
        {&d->inv_freq, (size_t)d->hd / 2}, {&d->x, n * d->C}, {&d->xn, n * d->C}, {&d->rstd, n},
        {&d->q, n * d->qd}, {&d->att, n * d->qd}, {&d->gate, n * d->I}, {&d->up, n * d->I},
        {&d->cos_t, n * (d->hd / 2)}, {&d->sin_t, n * (d->hd / 2)},
        {&d->scores, (size_t)d->n_threads * d->max_pos},
    };
    int ok = 1;
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) ok = ok && (*bufs[i].p = malloc(bufs[i].count * sizeof(float)));
    ok = ok && (d->pos = malloc(n * sizeof *d->pos));
    if (!ok) {
        tune_decoder_free(d);
        return tune_fail_run(err, NULL, "out of memory creating the decoder");
    }
    tune_rope_inv_freq(c, d->inv_freq);
    *out = d;
    return TUNE_OK;
}

int tune_decoder_length(const tune_decoder *d) { return d->len; }

int tune_decoder_vocab_size(const tune_decoder *d) { return d->V; }

const int32_t *tune_decoder_tokens(const tune_decoder *d) { return d->ids; }

void tune_decoder_rewind(tune_decoder *d, int n)
{
    if (n >= 0 && n < d->len) d->len = n;
}

/* Room for need positions: the cache grows by doubling, up to max_pos. */
static tune_status reserve(tune_decoder *d, int need, tune_error *err)
{
    if (need > d->max_pos)
        return tune_fail_input(err, NULL, "the context of %d tokens exceeds the model's %d positions "
                               "(max_position_embeddings)", need, d->max_pos);
    if (need <= d->cap) return TUNE_OK;
    int cap = d->cap ? d->cap : 256;
    while (cap < need) cap = cap > d->max_pos / 2 ? d->max_pos : cap * 2;
    if (cap > d->max_pos) cap = d->max_pos;
    const size_t row = (size_t)d->kvd, layer_new = (size_t)cap * row, layer_old = (size_t)d->cap * row;
    float *k = malloc((size_t)d->L * layer_new * sizeof *k), *v = malloc((size_t)d->L * layer_new * sizeof *v);
    int32_t *ids = realloc(d->ids, (size_t)cap * sizeof *ids);
    if (ids) d->ids = ids;
    if (!k || !v || !ids) {
        free(k);
        free(v);
        return tune_fail_run(err, NULL, "out of memory: a key/value cache of %d positions", cap);
    }
    for (int l = 0; l < d->L && d->len > 0; l++) {
        memcpy(k + l * layer_new, d->k + l * layer_old, (size_t)d->len * row * sizeof *k);
        memcpy(v + l * layer_new, d->v + l * layer_old, (size_t)d->len * row * sizeof *v);
    }
    free(d->k);
    free(d->v);
    d->k = k;
    d->v = v;
    d->cap = cap;
    return TUNE_OK;
}

/* Causal attention of n queries at positions p0.. against the cached keys.
 * att, q: (n, H, hd)   kc, vc: (cap, Hkv, hd) of one layer */
static void attend(tune_decoder *d, float *att, const float *q, const float *kc, const float *vc, int p0, int n)
{
    const int H = d->H, hd = d->hd, group = d->H / d->Hkv, kvd = d->kvd;
    const float scale = 1.0f / sqrtf((float)hd);
    /* one thread for a single token: a team's barrier costs more than the work (backend.h) */
#pragma omp parallel for collapse(2) schedule(static) if ((size_t)n * H * (p0 + n) * hd >= TUNE_CPU_PARALLEL_MIN)
    for (int t = 0; t < n; t++)
        for (int h = 0; h < H; h++) {
            float *p = d->scores + (size_t)omp_get_thread_num() * d->max_pos;
            const float *qv = q + ((size_t)t * H + h) * hd;
            const size_t off = (size_t)(h / group) * hd;
            const int T = p0 + t + 1; /* keys 0 .. p0 + t */
            for (int j = 0; j < T; j++) {
                const float *kv = kc + (size_t)j * kvd + off;
                float dot = 0.0f;
                for (int i = 0; i < hd; i++) dot += qv[i] * kv[i];
                p[j] = dot * scale;
            }
            tune_softmax_row(p, T);
            float *o = att + ((size_t)t * H + h) * hd;
            for (int i = 0; i < hd; i++) o[i] = 0.0f;
            for (int j = 0; j < T; j++) {
                const float *vv = vc + (size_t)j * kvd + off;
                for (int i = 0; i < hd; i++) o[i] += p[j] * vv[i];
            }
        }
}

/* One chunk of n ≤ CHUNK tokens; logits of rows [first_logit, n) into logits. */
static void feed_chunk(tune_decoder *d, const int32_t *ids, int n, float *logits, int first_logit)
{
    const tune_model *m = d->m;
    const int C = d->C, p0 = d->len;
    const float eps = m->cfg.rms_norm_eps;
    const size_t layer = (size_t)d->cap * d->kvd;
    for (int t = 0; t < n; t++) d->pos[t] = p0 + t;
    memcpy(d->ids + p0, ids, (size_t)n * sizeof *ids);
    tune_cpu_rope_tables(d->cos_t, d->sin_t, d->pos, d->inv_freq, n, d->hd / 2);
    tune_cpu_embedding(d->x, m->embed, ids, n, C);
    for (int l = 0; l < d->L; l++) {
        const tune_layer *ly = &m->layers[l];
        float *kc = d->k + l * layer, *vc = d->v + l * layer;
        float *k_new = kc + (size_t)p0 * d->kvd, *v_new = vc + (size_t)p0 * d->kvd; /* (n, kvd) */
        tune_cpu_rmsnorm_forward(d->xn, d->rstd, d->x, ly->attn_norm, n, C, eps);
        tune_cpu_matmul(d->q, d->xn, ly->w[TUNE_Q_PROJ], n, d->qd, C, 0, 1, 1.0f, 0.0f);
        tune_cpu_matmul(k_new, d->xn, ly->w[TUNE_K_PROJ], n, d->kvd, C, 0, 1, 1.0f, 0.0f);
        tune_cpu_matmul(v_new, d->xn, ly->w[TUNE_V_PROJ], n, d->kvd, C, 0, 1, 1.0f, 0.0f);
        tune_cpu_rope_forward(d->q, d->cos_t, d->sin_t, n, d->H, d->hd);
        tune_cpu_rope_forward(k_new, d->cos_t, d->sin_t, n, d->Hkv, d->hd);
        attend(d, d->att, d->q, kc, vc, p0, n);
        tune_cpu_matmul(d->x, d->att, ly->w[TUNE_O_PROJ], n, C, d->qd, 0, 1, 1.0f, 1.0f);
        tune_cpu_rmsnorm_forward(d->xn, d->rstd, d->x, ly->ffn_norm, n, C, eps);
        tune_cpu_matmul(d->gate, d->xn, ly->w[TUNE_GATE_PROJ], n, d->I, C, 0, 1, 1.0f, 0.0f);
        tune_cpu_matmul(d->up, d->xn, ly->w[TUNE_UP_PROJ], n, d->I, C, 0, 1, 1.0f, 0.0f);
        tune_cpu_swiglu_forward(d->gate, d->gate, d->up, (size_t)n * d->I);
        tune_cpu_matmul(d->x, d->gate, ly->w[TUNE_DOWN_PROJ], n, C, d->I, 0, 1, 1.0f, 1.0f);
    }
    d->len += n;
    const int rows = n - first_logit;
    if (rows <= 0) return;
    const float *x = d->x + (size_t)first_logit * C;
    tune_cpu_rmsnorm_forward(d->xn, d->rstd, x, m->final_norm, rows, C, eps);
    tune_cpu_matmul(logits, d->xn, m->lm_head, rows, d->V, C, 0, 1, 1.0f, 0.0f);
}

tune_status tune_decoder_feed(tune_decoder *d, const int32_t *ids, int n, float *logits, int all_logits,
                              tune_error *err)
{
    if (n < 1) return tune_fail_input(err, NULL, "decoder: nothing to feed");
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= d->V)
            return tune_fail_input(err, NULL, "token id %d is outside the vocabulary (%d)", ids[i], d->V);
    const tune_status st = reserve(d, d->len + n, err);
    if (st != TUNE_OK) return st;
    const int threads = omp_get_max_threads(), small = n < STEP_PARALLEL_MIN;
    if (small) omp_set_num_threads(1);
    for (int done = 0; done < n; done += CHUNK) {
        const int c = n - done < CHUNK ? n - done : CHUNK;
        const int last_chunk = done + c == n;
        if (all_logits)
            feed_chunk(d, ids + done, c, logits + (size_t)done * d->V, 0);
        else
            feed_chunk(d, ids + done, c, logits, last_chunk ? c - 1 : c);
    }
    if (small) omp_set_num_threads(threads);
    return TUNE_OK;
}

tune_status tune_decoder_prefill(tune_decoder *d, const int32_t *ids, int n, float *logits, tune_error *err)
{
    if (n < 1) return tune_fail_input(err, NULL, "decoder: empty prompt");
    int keep = 0;
    while (keep < d->len && keep < n - 1 && d->ids[keep] == ids[keep]) keep++;
    d->len = keep;
    return tune_decoder_feed(d, ids + keep, n - keep, logits, 0, err);
}
