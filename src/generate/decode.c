/* Incremental LLaMA decoding with a key/value cache: the prompt is fed in
 * chunks (one product per weight per chunk), then one token at a time.
 * Every layer step is the training forward's own backend operation, on the
 * backend the decoder was made for, except attention, which here reads the
 * cache: queries at positions [len, len + n) against keys [0, position]. */
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

struct tune_decoder {
    const tune_backend *be; /* the float buffers, pos and the cache are its buffers */
    tune_model m;      /* the weights where be computes */
    const tune_model *host;
    tune_lora lora;    /* the adapters where be computes (has_lora) */
    const tune_lora *lora_host;
    tune_weight embed, lm_head; /* the model's, or the adapters' saved copies */
    int L, C, H, Hkv, hd, I, V, qd, kvd, max_pos;
    int cap, len;      /* positions the cache can hold / holds */
    int32_t *ids;      /* host (cap): the tokens in the cache */
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
    int32_t *pos;      /* (2, CHUNK): positions, then ids of the chunk */
    float *scores;     /* (n_threads, max_pos): scratch of attention_cached (the CPU's probabilities) */
    float *logits;     /* (CHUNK, V) on a device; NULL on the CPU, which writes the caller's array */
    float *lora_u;     /* (CHUNK, r): x·Aᵀ of the adapter being applied */
    int has_model, has_lora;
};

void tune_decoder_free(tune_decoder *d)
{
    if (!d) return;
    void *bufs[] = {d->inv_freq, d->x, d->xn, d->rstd, d->q, d->att, d->gate, d->up, d->cos_t, d->sin_t,
                    d->scores, d->k, d->v, d->pos, d->logits, d->lora_u};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        if (bufs[i]) d->be->release(bufs[i]);
    if (d->has_model) tune_backend_model_free(d->be, &d->m, d->host);
    if (d->has_lora) tune_backend_lora_free(d->be, &d->lora, d->lora_host);
    free(d->ids);
    free(d);
}

tune_status tune_decoder_set_lora(tune_decoder *d, const tune_lora *lora, tune_error *err)
{
    if (lora == d->lora_host) return TUNE_OK;
    if (d->has_lora) tune_backend_lora_free(d->be, &d->lora, d->lora_host);
    if (d->lora_u) d->be->release(d->lora_u);
    d->has_lora = 0;
    d->lora_host = NULL;
    d->lora_u = NULL;
    d->len = 0; /* keys and values computed with the old adapter */
    d->embed = d->m.embed;
    d->lm_head = d->m.lm_head;
    if (!lora) return TUNE_OK;
    if (lora->n_layers != d->L || (lora->saved && (lora->vocab != d->V || lora->hidden != d->C)))
        return tune_fail_input(err, NULL, "the adapters do not match the model they decode with");
    tune_status st = tune_backend_lora(d->be, (tune_lora *)lora, &d->lora, err);
    if (st) return st;
    d->has_lora = 1;
    d->lora_host = lora;
    if (!(d->lora_u = d->be->alloc((size_t)CHUNK * lora->cfg.r * sizeof(float)))) {
        tune_decoder_set_lora(d, NULL, err);
        return tune_fail_run(err, NULL, "out of %s memory for the adapter's scratch", d->be->name);
    }
    const tune_weight copy = {TUNE_Q_F32, d->V, d->C, NULL, NULL};
    if (lora->saved & TUNE_SAVE_EMBED) d->embed = copy, d->embed.f32 = d->lora.params + lora->embed_offset;
    if (lora->saved & TUNE_SAVE_LM_HEAD) d->lm_head = copy, d->lm_head.f32 = d->lora.params + lora->head_offset;
    return TUNE_OK;
}

const tune_lora *tune_decoder_lora(const tune_decoder *d) { return d->lora_host; }

tune_status tune_decoder_create(const tune_backend *be, const tune_model *model, const tune_lora *lora,
                                tune_decoder **out, tune_error *err)
{
    *out = NULL;
    const tune_model_config *c = &model->cfg;
    if (c->max_position_embeddings < 1)
        return tune_fail_input(err, NULL, "model config: max_position_embeddings must be positive");
    tune_decoder *d = calloc(1, sizeof *d);
    if (!d) return tune_fail_run(err, NULL, "out of memory creating the decoder");
    d->be = be;
    d->host = model;
    tune_status st = tune_backend_model(be, model, &d->m, err);
    if (st) {
        free(d);
        return st;
    }
    d->has_model = 1;
    d->embed = d->m.embed;
    d->lm_head = d->m.lm_head;
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
        {&d->logits, be->device ? n * d->V : 0},
    };
    int ok = 1;
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        ok = ok && (!bufs[i].count || (*bufs[i].p = be->alloc(bufs[i].count * sizeof(float))));
    ok = ok && (d->pos = be->alloc(2 * n * sizeof *d->pos));
    if (!ok) {
        tune_decoder_free(d);
        return tune_fail_run(err, NULL, "out of %s memory creating the decoder", be->name);
    }
    float inv_freq[d->hd / 2];
    tune_rope_inv_freq(c, inv_freq);
    if (be->upload(d->inv_freq, inv_freq, sizeof inv_freq)) st = tune_backend_failed(d->be, "creating the decoder", err);
    if (st == TUNE_OK) st = tune_decoder_set_lora(d, lora, err);
    if (st != TUNE_OK) {
        tune_decoder_free(d);
        return st;
    }
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
    float *k = d->be->alloc((size_t)d->L * layer_new * sizeof *k), *v = d->be->alloc((size_t)d->L * layer_new * sizeof *v);
    int32_t *ids = realloc(d->ids, (size_t)cap * sizeof *ids);
    if (ids) d->ids = ids;
    if (!k || !v || !ids) {
        if (k) d->be->release(k);
        if (v) d->be->release(v);
        return tune_fail_run(err, NULL, "out of %s memory: a key/value cache of %d positions", d->be->name, cap);
    }
    for (int l = 0; l < d->L && d->len > 0; l++) {
        d->be->copy(k + l * layer_new, d->k + l * layer_old, (size_t)d->len * row * sizeof *k);
        d->be->copy(v + l * layer_new, d->v + l * layer_old, (size_t)d->len * row * sizeof *v);
    }
    if (d->k) d->be->release(d->k);
    if (d->v) d->be->release(d->v);
    d->k = k;
    d->v = v;
    d->cap = cap;
    return TUNE_OK;
}

/* y = beta·y + x·Wᵀ (+ scaling·(x·Aᵀ)·Bᵀ where the layer is adapted) for the
 * n rows of a chunk.  x: (n, in)   y: (n, out) */
static void linear(tune_decoder *d, const tune_layer *ly, int layer, tune_linear_kind kind, const float *x, float *y,
                   int n, float beta)
{
    const tune_weight *w = &ly->w[kind];
    d->be->weight_matmul(y, x, w, n, 0, beta);
    const int mi = d->has_lora ? d->lora.index[(size_t)layer * TUNE_N_LINEAR + kind] : -1;
    if (mi < 0) return;
    const tune_lora_module *mod = &d->lora.modules[mi];
    const int r = d->lora.cfg.r;
    d->be->matmul(d->lora_u, x, d->lora.params + mod->a_offset, n, r, w->cols, 0, 1, 1.0f, 0.0f);
    d->be->matmul(y, d->lora_u, d->lora.params + mod->b_offset, n, w->rows, r, 0, 1, d->lora.scaling, 1.0f);
}

/* One chunk of n ≤ CHUNK tokens; logits of rows [first_logit, n) into logits (host). */
static tune_status feed_chunk(tune_decoder *d, const int32_t *ids, int n, float *logits, int first_logit,
                              tune_error *err)
{
    const tune_backend *be = d->be;
    const tune_model *m = &d->m;
    const int C = d->C, p0 = d->len;
    const float eps = m->cfg.rms_norm_eps;
    const size_t layer = (size_t)d->cap * d->kvd;
    const tune_attention_shape cache = {1, d->max_pos, d->H, d->Hkv, d->hd};
    int32_t staged[2 * CHUNK]; /* positions, then the ids: one upload */
    for (int t = 0; t < n; t++) staged[t] = p0 + t;
    memcpy(staged + n, ids, (size_t)n * sizeof *ids);
    if (be->upload(d->pos, staged, 2 * (size_t)n * sizeof *staged)) return tune_backend_failed(be, "while decoding", err);
    memcpy(d->ids + p0, ids, (size_t)n * sizeof *ids);
    be->rope_tables(d->cos_t, d->sin_t, d->pos, d->inv_freq, n, d->hd / 2);
    be->weight_rows(d->x, &d->embed, d->pos + n, n);
    for (int l = 0; l < d->L; l++) {
        const tune_layer *ly = &m->layers[l];
        float *kc = d->k + l * layer, *vc = d->v + l * layer;
        float *k_new = kc + (size_t)p0 * d->kvd, *v_new = vc + (size_t)p0 * d->kvd; /* (n, kvd) */
        be->rmsnorm_forward(d->xn, d->rstd, d->x, ly->attn_norm, n, C, eps);
        linear(d, ly, l, TUNE_Q_PROJ, d->xn, d->q, n, 0.0f);
        linear(d, ly, l, TUNE_K_PROJ, d->xn, k_new, n, 0.0f);
        linear(d, ly, l, TUNE_V_PROJ, d->xn, v_new, n, 0.0f);
        be->rope_forward(d->q, d->cos_t, d->sin_t, n, d->H, d->hd);
        be->rope_forward(k_new, d->cos_t, d->sin_t, n, d->Hkv, d->hd);
        be->attention_cached(d->att, d->q, kc, vc, p0, n, &cache, d->scores, omp_get_max_threads());
        linear(d, ly, l, TUNE_O_PROJ, d->att, d->x, n, 1.0f);
        be->rmsnorm_forward(d->xn, d->rstd, d->x, ly->ffn_norm, n, C, eps);
        linear(d, ly, l, TUNE_GATE_PROJ, d->xn, d->gate, n, 0.0f);
        linear(d, ly, l, TUNE_UP_PROJ, d->xn, d->up, n, 0.0f);
        be->swiglu_forward(d->gate, d->gate, d->up, (size_t)n * d->I);
        linear(d, ly, l, TUNE_DOWN_PROJ, d->gate, d->x, n, 1.0f);
    }
    d->len += n;
    const int rows = n - first_logit;
    if (rows <= 0) return TUNE_OK;
    const float *x = d->x + (size_t)first_logit * C;
    float *out = d->logits ? d->logits : logits; /* the CPU writes the caller's array directly */
    be->rmsnorm_forward(d->xn, d->rstd, x, m->final_norm, rows, C, eps);
    be->weight_matmul(out, d->xn, &d->lm_head, rows, 0, 0.0f);
    if (d->logits && be->download(logits, d->logits, (size_t)rows * d->V * sizeof *logits))
        return tune_backend_failed(d->be, "while decoding", err);
    return TUNE_OK;
}

tune_status tune_decoder_feed(tune_decoder *d, const int32_t *ids, int n, float *logits, int all_logits,
                              tune_error *err)
{
    if (n < 1) return tune_fail_input(err, NULL, "decoder: nothing to feed");
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= d->V)
            return tune_fail_input(err, NULL, "token id %d is outside the vocabulary (%d)", ids[i], d->V);
    tune_status st = reserve(d, d->len + n, err);
    if (st != TUNE_OK) return st;
    /* Every step uses the thread team (OMP_NUM_THREADS): the products on
     * blocks are compute-bound enough to gain 1.8x from a second core on a
     * quiet machine. Like llama.cpp's, the team stalls where other work takes
     * the cores; OMP_NUM_THREADS=1 avoids that. */
    for (int done = 0; done < n && !st; done += CHUNK) {
        const int c = n - done < CHUNK ? n - done : CHUNK;
        const int last_chunk = done + c == n;
        if (all_logits)
            st = feed_chunk(d, ids + done, c, logits + (size_t)done * d->V, 0, err);
        else
            st = feed_chunk(d, ids + done, c, logits, last_chunk ? c - 1 : c, err);
    }
    return st;
}

tune_status tune_decoder_prefill(tune_decoder *d, const int32_t *ids, int n, float *logits, tune_error *err)
{
    if (n < 1) return tune_fail_input(err, NULL, "decoder: empty prompt");
    int keep = 0;
    while (keep < d->len && keep < n - 1 && d->ids[keep] == ids[keep]) keep++;
    d->len = keep;
    return tune_decoder_feed(d, ids + keep, n - keep, logits, 0, err);
}
