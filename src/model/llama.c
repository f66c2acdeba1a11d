/* LLaMA forward and backward in fp32 with LoRA, layer by layer; every big
 * product is an sgemm. Base weights are frozen: the backward carries dx
 * through them and produces gradients for the LoRA A and B and for the
 * adapters' trainable embed_tokens/lm_head copies (modules_to_save).
 *
 * The head (lm_head and cross-entropy) runs only on the rows that have a
 * target, a chunk of rows at a time: their logits exist one chunk at a time
 * and never for the whole batch. A training forward (grad_scale > 0) turns
 * each chunk's logits into their gradient at once and carries it to the
 * final hidden state, so the backward starts from there.
 *
 * Dropout address layout (LoRA branch only): the mask of element e of the
 * input x (N, in) of module m in micro-batch mb is Philox word
 *   (seed, stream = TUNE_STREAM_DROPOUT + (mb << 32), index = (m << 40) + e),
 * e = (b·T + t)·in + i. The forward keeps the masks as bits for the
 * backward; nothing depends on thread count or backend.
 *
 * Gradient checkpointing keeps only each layer's input (resid) between the
 * passes: the per-layer buffers below hold one layer, and the backward runs
 * each layer's forward again, with the same kernels on the same inputs, so
 * the gradients are bit for bit those of a run without it. */
#include "tune/llama.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "tune/backend.h"
#include "tune/rng.h"
#include "tune/util.h"

/* Floats of logits per head chunk: bounds the head's memory (64 MB). */
#define HEAD_CHUNK_FLOATS ((size_t)1 << 24)

struct tune_workspace {
    const tune_backend *be; /* every buffer below, except the host staging ones, is this backend's */
    int B, T;       /* capacity */
    int cur_B, cur_T; /* shape of the last training forward; 0 before one and after its backward */
    tune_pass pass;   /* the pass running, for the labels a tracing backend reads */
    int chunk;        /* rows of the head per chunk */
    const tune_lora *cur_lora; /* adapters and dropout of the last forward */
    tune_dropout cur_dropout;
    int L, C, V, H, Hkv, hd, I, qd, kvd, max_in;
    int n_modules, r; /* LoRA shape the workspace was sized for (0 without LoRA) */
    int n_threads;
    int checkpoint;   /* gradient checkpointing: the per-layer buffers hold one layer */
    size_t NC, NQ, NKV, NI; /* per-layer strides at capacity: N·C, N·qd, N·kvd, N·I */
    float *inv_freq;  /* (hd/2) */
    /* kept for backward; Lk = L, or 1 with checkpointing (slot()) */
    float *resid;     /* (L + 1, N, C): input of each layer; [L] is the final hidden state */
    float *resid2;    /* (Lk, N, C): after the attention block */
    float *rstd1, *rstd2; /* (Lk, N) */
    float *q, *att;   /* (Lk, N, H·hd): q after RoPE; attention output */
    float *k, *v;     /* (Lk, N, Hkv·hd): k after RoPE */
    float *lse_att;   /* (Lk, B, H, T) */
    float *probs;     /* (L, be->attention_probs) or nothing: attention's probabilities (keep_probs) */
    float *gate, *up; /* (Lk, N, I) */
    float *lora_u;    /* (n_modules, N, r): A·dropout(x); with checkpointing (TUNE_N_LINEAR, N, r) */
    float *xf, *rstd_f; /* (N, C), (N): final norm */
    float *xc;        /* (chunk, C): the chunk's rows of xf, then their gradient */
    float *logits;    /* (chunk, V): the chunk's logits, then their gradient */
    float *lse_ce;    /* (N): of the target rows, in order */
    double *row_loss; /* (N): loss of each target row */
    float *cos_t, *sin_t; /* (N, hd/2) */
    double *loss;     /* (1): summed loss since the last reset */
    /* The batch as the passes read it; staged on the host in hbatch, same layout, one upload */
    int32_t *ids;     /* (N): input ids */
    int32_t *start;   /* (N): where each token's segment begins */
    int32_t *pos;     /* (N): position ids */
    int32_t *rows;    /* (n_targets): the rows that have a target, in order */
    int32_t *target;  /* (n_targets): their targets (the label of the next token) */
    int32_t *hbatch;  /* host (5, N): ids, start, pos, rows, target */
    long n_targets;   /* trained targets of the last forward */
    float grad_scale; /* of the last forward: > 0 when it prepared a backward */
    /* scratch; the backward recomputes the normed inputs and the SwiGLU
     * output where a LoRA module needs them instead of keeping them */
    float *xn;        /* (N, C): normed input of the attention or MLP block */
    float *act;       /* (N, I) */
    float *lora_x;    /* (N, max_in): dropped-out LoRA input, then its gradient */
    float *du;        /* (N, r) */
    float *attn_scratch; /* be->attention_scratch */
    float *dh, *dxn;  /* (N, C) */
    float *dq, *datt; /* (N, H·hd) */
    float *dk, *dv;   /* (N, Hkv·hd) */
    float *dact, *dgate, *dup; /* (N, I) */
    uint32_t *drop_bits; /* dropout keep-bits of every module's input; NULL without dropout */
    size_t *bits_off;    /* (n_modules): where module m's bits start in drop_bits */
    float *mem;       /* one allocation holds every float buffer */
    int32_t *imem;    /* (5, N): ids, start, pos, rows, target */
};

/* inv_freq as Transformers computes it in fp32, llama3 rescaling included
 * (scalar / tensor is reciprocal() * scalar there). */
void tune_rope_inv_freq(const tune_model_config *c, float *inv)
{
    const int d = c->head_dim;
    for (int i = 0; i < d / 2; i++) {
        const float e = (float)(2 * i) / (float)d;
        inv[i] = 1.0f / (float)pow((double)(float)c->rope_theta, (double)e);
    }
    if (c->rope_type != TUNE_ROPE_LLAMA3) return;
    const float factor = (float)c->rope_factor, lo = (float)c->rope_low_freq_factor;
    const double old = c->rope_original_max_position_embeddings;
    const float low_wl = (float)(old / c->rope_low_freq_factor), high_wl = (float)(old / c->rope_high_freq_factor);
    const float two_pi = (float)(2.0 * M_PI), span = (float)(c->rope_high_freq_factor - c->rope_low_freq_factor);
    for (int i = 0; i < d / 2; i++) {
        const float wavelen = (1.0f / inv[i]) * two_pi;
        const float llama = wavelen > low_wl ? inv[i] / factor : inv[i];
        const float smooth = ((1.0f / wavelen) * (float)old - lo) / span;
        const float smoothed = (1.0f - smooth) * llama / factor + smooth * llama;
        inv[i] = !(wavelen < high_wl) && !(wavelen > low_wl) ? smoothed : llama;
    }
}

static tune_status check_config(const tune_model_config *c, tune_error *err)
{
    if (c->vocab_size < 1 || c->hidden_size < 1 || c->intermediate_size < 1 || c->num_hidden_layers < 1 ||
        c->num_attention_heads < 1 || c->num_key_value_heads < 1 || c->head_dim < 2 || c->head_dim % 2 ||
        c->num_attention_heads % c->num_key_value_heads)
        return tune_fail_input(err, NULL,
                               "model config: sizes must be positive, head_dim even and the heads a multiple "
                               "of the key/value heads");
    return TUNE_OK;
}

/* The dimensions of a workspace for batches up to B x T and n_modules adapters of rank r. */
static void set_dims(tune_workspace *ws, const tune_backend *be, const tune_model_config *cfg, int n_modules, int r,
                     int B, int T, int checkpoint)
{
    ws->be = be;
    ws->checkpoint = checkpoint;
    ws->B = B;
    ws->T = T;
    ws->L = cfg->num_hidden_layers;
    ws->C = cfg->hidden_size;
    ws->V = cfg->vocab_size;
    ws->H = cfg->num_attention_heads;
    ws->Hkv = cfg->num_key_value_heads;
    ws->hd = cfg->head_dim;
    ws->I = cfg->intermediate_size;
    ws->qd = ws->H * ws->hd;
    ws->kvd = ws->Hkv * ws->hd;
    ws->max_in = ws->C > ws->qd ? ws->C : ws->qd;
    ws->max_in = ws->max_in > ws->I ? ws->max_in : ws->I;
    ws->n_modules = n_modules;
    ws->r = r;
    ws->n_threads = omp_get_max_threads();
    const size_t N = (size_t)B * T, per_chunk = HEAD_CHUNK_FLOATS / (size_t)ws->V;
    ws->chunk = (int)(per_chunk < 1 ? 1 : per_chunk < N ? per_chunk : N);
    ws->NC = N * ws->C;
    ws->NQ = N * ws->qd;
    ws->NKV = N * ws->kvd;
    ws->NI = N * ws->I;
}

/* Whether the forward keeps every layer's attention probabilities for the
 * backward, which then skips recomputing them (QKᵀ and its exps: a quarter
 * of attention's backward at T 256). They grow with T², so only where they
 * take at most KEEP_PROBS_RATIO times a layer's queries (T up to about
 * 8·head_dim), where the backend keeps any, and never with checkpointing,
 * whose point is memory. */
#define KEEP_PROBS_RATIO 4
static int keep_probs(const tune_workspace *ws)
{
    const tune_attention_shape as = {ws->B, ws->T, ws->H, ws->Hkv, ws->hd};
    const size_t n = ws->be->attention_probs(&as);
    return !ws->checkpoint && n && n <= KEEP_PROBS_RATIO * ws->NQ;
}

/* Floats of the one allocation that holds every float buffer (64-byte
 * aligned starts); with base, points each buffer into it; with list, names
 * each and its bytes there (N_FLOAT_BUFFERS of them). */
#define N_FLOAT_BUFFERS 37
static size_t place_buffers(tune_workspace *ws, float *base, tune_buffer_bytes *list)
{
    const size_t N = (size_t)ws->B * ws->T, L = (size_t)ws->L, Lk = ws->checkpoint ? 1 : L;
    const size_t n_u = ws->checkpoint && ws->n_modules ? TUNE_N_LINEAR : (size_t)ws->n_modules;
    const tune_attention_shape as = {ws->B, ws->T, ws->H, ws->Hkv, ws->hd};
    float *loss_mem = NULL, *row_loss_mem = NULL;
#define BUF(field, n) {#field, &ws->field, n}
    struct { const char *name; float **p; size_t n; } bufs[] = {
        BUF(inv_freq, (size_t)ws->hd / 2),
        BUF(resid, (L + 1) * ws->NC), BUF(resid2, Lk * ws->NC),
        BUF(rstd1, Lk * N), BUF(rstd2, Lk * N),
        BUF(q, Lk * ws->NQ), BUF(att, Lk * ws->NQ),
        BUF(k, Lk * ws->NKV), BUF(v, Lk * ws->NKV),
        BUF(lse_att, Lk * N * ws->H), BUF(probs, keep_probs(ws) ? L * ws->be->attention_probs(&as) : 0),
        BUF(gate, Lk * ws->NI), BUF(up, Lk * ws->NI),
        BUF(lora_u, n_u * N * ws->r),
        BUF(xf, ws->NC), BUF(rstd_f, N),
        BUF(xc, (size_t)ws->chunk * ws->C), BUF(logits, (size_t)ws->chunk * ws->V),
        BUF(lse_ce, N), {"row_loss", &row_loss_mem, 2 * N}, /* N doubles */
        BUF(cos_t, N * (ws->hd / 2)), BUF(sin_t, N * (ws->hd / 2)),
        BUF(xn, ws->NC), BUF(act, ws->NI),
        BUF(lora_x, ws->n_modules ? N * ws->max_in : 0),
        BUF(du, N * ws->r),
        BUF(attn_scratch, ws->be->attention_scratch(&as, ws->n_threads)),
        {"loss", &loss_mem, 2}, /* one double */
        BUF(dh, ws->NC), BUF(dxn, ws->NC),
        BUF(dq, ws->NQ), BUF(datt, ws->NQ),
        BUF(dk, ws->NKV), BUF(dv, ws->NKV),
        BUF(dact, ws->NI), BUF(dgate, ws->NI), BUF(dup, ws->NI),
    };
#undef BUF
    _Static_assert(sizeof bufs / sizeof bufs[0] == N_FLOAT_BUFFERS, "N_FLOAT_BUFFERS counts the table");
    size_t total = 0;
    for (size_t i = 0; i < N_FLOAT_BUFFERS; i++) {
        const size_t n = (bufs[i].n + 15) & ~(size_t)15;
        if (base) *bufs[i].p = base + total;
        if (list) list[i] = (tune_buffer_bytes){bufs[i].name, n * sizeof(float)};
        total += n;
    }
    ws->loss = (double *)(void *)loss_mem;
    ws->row_loss = (double *)(void *)row_loss_mem;
    return total;
}

void tune_workspace_buffers(const tune_backend *be, const tune_model_config *cfg, int n_modules, int r,
                            size_t dropout_in, int B, int T, int checkpoint,
                            tune_buffer_bytes list[TUNE_WORKSPACE_BUFFERS])
{
    tune_workspace ws = {0};
    set_dims(&ws, be, cfg, n_modules, r, B, T, checkpoint);
    const size_t N = (size_t)B * T;
    place_buffers(&ws, NULL, list);
    list[N_FLOAT_BUFFERS] = (tune_buffer_bytes){"batch", 5 * N * sizeof(int32_t)}; /* ids, start, pos, rows, target */
    list[N_FLOAT_BUFFERS + 1] = (tune_buffer_bytes){
        "dropout_masks", (N * dropout_in + 31 * (size_t)n_modules) / 32 * sizeof(uint32_t)};
}

_Static_assert(TUNE_WORKSPACE_BUFFERS == N_FLOAT_BUFFERS + 2, "the float buffers, the batch and the dropout masks");

size_t tune_workspace_bytes(const tune_backend *be, const tune_model_config *cfg, int n_modules, int r,
                            size_t dropout_in, int B, int T, int checkpoint)
{
    tune_buffer_bytes list[TUNE_WORKSPACE_BUFFERS];
    tune_workspace_buffers(be, cfg, n_modules, r, dropout_in, B, T, checkpoint, list);
    size_t total = 0;
    for (int i = 0; i < TUNE_WORKSPACE_BUFFERS; i++) total += list[i].bytes;
    return total;
}

tune_status tune_workspace_create(const tune_backend *be, const tune_model_config *cfg, const tune_lora *lora,
                                  int B, int T, int checkpoint, tune_workspace **out, tune_error *err)
{
    *out = NULL;
    if (check_config(cfg, err)) return TUNE_ERR_INPUT;
    if (B < 1 || T < 1) return tune_fail_input(err, NULL, "workspace: batch %d x %d is empty", B, T);
    tune_workspace *ws = calloc(1, sizeof *ws);
    if (!ws) return tune_fail_run(err, NULL, "out of memory creating the workspace");
    set_dims(ws, be, cfg, lora ? lora->n_modules : 0, lora ? lora->cfg.r : 0, B, T, checkpoint);
    const size_t N = (size_t)B * T, total = place_buffers(ws, NULL, NULL);
    ws->mem = be->alloc(total * sizeof(float));
    ws->imem = be->alloc(5 * N * sizeof(int32_t));
    ws->hbatch = malloc(5 * N * sizeof(int32_t));
    if (!ws->mem || !ws->imem || !ws->hbatch) {
        tune_workspace_free(ws);
        return tune_fail_run(err, NULL, "out of %s memory: the workspace for batch %d x %d needs %.2f GB", be->name,
                             B, T, (double)total * sizeof(float) / 1e9);
    }
    place_buffers(ws, ws->mem, NULL);
    if (!be->device) tune_populate(ws->mem, total * sizeof(float)); /* the passes write it all */
    if (lora && lora->cfg.dropout > 0.0f) {
        /* (N·in rounded up to 32) bits per module */
        ws->bits_off = malloc((size_t)lora->n_modules * sizeof *ws->bits_off);
        size_t words = 0;
        for (int m = 0; ws->bits_off && m < lora->n_modules; m++) {
            ws->bits_off[m] = words;
            words += (N * lora->modules[m].in + 31) / 32;
        }
        ws->drop_bits = be->alloc(words * sizeof *ws->drop_bits);
        if (!ws->bits_off || !ws->drop_bits) {
            tune_workspace_free(ws);
            return tune_fail_run(err, NULL, "out of %s memory: dropout masks for batch %d x %d", be->name, B, T);
        }
    }
    float inv_freq[ws->hd / 2];
    tune_rope_inv_freq(cfg, inv_freq);
    if (be->upload(ws->inv_freq, inv_freq, sizeof inv_freq)) {
        tune_workspace_free(ws);
        return tune_backend_failed(be, "creating the workspace", err);
    }
    *out = ws;
    return TUNE_OK;
}

void tune_workspace_free(tune_workspace *ws)
{
    if (!ws) return;
    if (ws->mem) ws->be->release(ws->mem);
    if (ws->imem) ws->be->release(ws->imem);
    if (ws->drop_bits) ws->be->release(ws->drop_bits);
    free(ws->hbatch);
    free(ws->bits_off);
    free(ws);
}

void tune_workspace_reset_loss(tune_workspace *ws) { ws->be->zero(ws->loss, sizeof *ws->loss); }

tune_status tune_workspace_loss(const tune_workspace *ws, double *loss_sum, tune_error *err)
{
    if (ws->be->download(loss_sum, ws->loss, sizeof *loss_sum))
        return tune_backend_failed(ws->be, "reading the loss", err);
    return TUNE_OK;
}

/* Checks the batch against the model and workspace; stages ids, segment
 * starts, positions and the rows that have a target with their targets on
 * the host, and uploads the lot. */
static tune_status prepare_batch(const tune_model_config *cfg, const tune_batch *bt, tune_workspace *ws,
                                 tune_error *err)
{
    if (bt->B < 1 || bt->T < 1 || bt->B > ws->B || bt->T > ws->T)
        return tune_fail_input(err, NULL, "batch %d x %d does not fit the workspace (%d x %d)", bt->B, bt->T,
                               ws->B, ws->T);
    const int B = bt->B, T = bt->T, V = cfg->vocab_size;
    const size_t N = (size_t)B * T;
    int32_t *ids = ws->hbatch, *start = ids + N, *pos = ids + 2 * N, *rows = ids + 3 * N;
    int32_t m = 0; /* target rows so far */
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            const size_t n = (size_t)b * T + t;
            const int32_t id = bt->input_ids[n], lab = bt->labels[n];
            if (id < 0 || id >= V)
                return tune_fail_input(err, NULL, "batch row %d position %d: token id %d is outside the vocabulary "
                                       "(%d)", b, t, id, V);
            if (lab != TUNE_IGNORE_INDEX && (lab < 0 || lab >= V))
                return tune_fail_input(err, NULL, "batch row %d position %d: label %d is outside the vocabulary (%d)",
                                       b, t, lab, V);
            if (bt->position_ids && bt->position_ids[n] < 0)
                return tune_fail_input(err, NULL, "batch row %d position %d: negative position id %d", b, t,
                                       bt->position_ids[n]);
            const int same_seg = !bt->segment_ids || t == 0 || bt->segment_ids[n] == bt->segment_ids[n - 1];
            start[n] = t == 0 ? 0 : same_seg ? start[n - 1] : t;
        }
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            const size_t n = (size_t)b * T + t;
            const int crosses = bt->segment_ids && t + 1 < T && bt->segment_ids[n + 1] != bt->segment_ids[n];
            const int32_t next = t + 1 < T && !crosses ? bt->labels[n + 1] : TUNE_IGNORE_INDEX;
            pos[n] = bt->position_ids ? bt->position_ids[n] : t;
            if (next != TUNE_IGNORE_INDEX) rows[m++] = (int32_t)n;
        }
    int32_t *target = rows + m; /* (m), right after the rows */
    for (int32_t i = 0; i < m; i++) target[i] = bt->labels[rows[i] + 1];
    memcpy(ids, bt->input_ids, N * sizeof *ids);
    ws->n_targets = m;
    /* The staged arrays sit at the same offsets in imem: one upload. */
    ws->ids = ws->imem;
    ws->start = ws->imem + N;
    ws->pos = ws->imem + 2 * N;
    ws->rows = ws->imem + 3 * N;
    ws->target = ws->rows + m;
    if (ws->be->upload(ws->imem, ws->hbatch, (3 * N + 2 * (size_t)m) * sizeof *ids))
        return tune_backend_failed(ws->be, "uploading the batch", err);
    return TUNE_OK;
}

/* The model, adapters and dropout against the shapes the workspace was sized for. */
static tune_status check_inputs(const tune_model *m, const tune_lora *lora, const tune_workspace *ws,
                                const tune_dropout *dp, tune_error *err)
{
    const tune_model_config *c = &m->cfg;
    if (c->num_hidden_layers != ws->L || c->hidden_size != ws->C || c->vocab_size != ws->V ||
        c->num_attention_heads != ws->H || c->num_key_value_heads != ws->Hkv || c->head_dim != ws->hd ||
        c->intermediate_size != ws->I)
        return tune_fail_input(err, NULL, "the model does not match the workspace it was sized for");
    if (lora && (lora->n_modules != ws->n_modules || lora->cfg.r != ws->r ||
                 lora->n_layers != m->cfg.num_hidden_layers))
        return tune_fail_input(err, NULL, "the LoRA adapters do not match the workspace they were sized for");
    if (lora && lora->saved && (lora->vocab != c->vocab_size || lora->hidden != c->hidden_size))
        return tune_fail_input(err, NULL, "the adapters' saved embed_tokens/lm_head (%d x %d) do not match the "
                               "model (%d x %d)", lora->vocab, lora->hidden, c->vocab_size, c->hidden_size);
    if (dp && !(dp->p >= 0.0f && dp->p < 1.0f))
        return tune_fail_input(err, NULL, "dropout %g is outside [0, 1)", dp->p);
    if (dp && dp->p > 0.0f && lora && !ws->drop_bits)
        return tune_fail_input(err, NULL, "dropout %g on adapters whose workspace was sized without dropout", dp->p);
    if (dp && dp->micro_batch >> 32)
        return tune_fail_input(err, NULL, "micro-batch index %llu is beyond the dropout address space",
                               (unsigned long long)dp->micro_batch);
    return TUNE_OK;
}

/* The LoRA input of module mi: x itself, or x ⊙ its dropout mask in
 * ws->lora_x. The forward draws the mask (draw = 1), the backward reuses it.
 * x: (N, in) */
static const float *lora_input(tune_workspace *ws, const tune_dropout *dp, int mi, const float *x, size_t N,
                               int in, int draw)
{
    if (!dp || dp->p == 0.0f) return x;
    uint32_t *bits = ws->drop_bits + ws->bits_off[mi];
    if (draw)
        ws->be->dropout_mask(bits, N * in, dp->p, dp->seed, TUNE_STREAM_DROPOUT + (dp->micro_batch << 32),
                              (uint64_t)mi << 40);
    ws->be->dropout_apply(ws->lora_x, x, bits, N * in, dp->p, 0);
    return ws->lora_x;
}

/* The embedding and lm_head the passes use: the adapters' trainable copies
 * where they have them (PEFT modules_to_save), else the model's.  (V, C) */
static tune_weight embed_of(const tune_model *m, const tune_lora *lora)
{
    if (!(lora && lora->saved & TUNE_SAVE_EMBED)) return m->embed;
    return (tune_weight){TUNE_Q_F32, m->cfg.vocab_size, m->cfg.hidden_size, lora->params + lora->embed_offset, NULL};
}

static tune_weight lm_head_of(const tune_model *m, const tune_lora *lora)
{
    if (!(lora && lora->saved & TUNE_SAVE_LM_HEAD)) return m->lm_head;
    return (tune_weight){TUNE_Q_F32, m->cfg.vocab_size, m->cfg.hidden_size, lora->params + lora->head_offset, NULL};
}

static int module_of(const tune_lora *lora, int layer, tune_linear_kind kind)
{
    return lora ? lora->index[(size_t)layer * TUNE_N_LINEAR + kind] : -1;
}

/* Whether layer l adapts any module of kinds first..last. */
static int has_module(const tune_lora *lora, int layer, tune_linear_kind first, tune_linear_kind last)
{
    for (int k = (int)first; k <= (int)last; k++)
        if (module_of(lora, layer, (tune_linear_kind)k) >= 0) return 1;
    return 0;
}

/* Where module mi (of kind) keeps u = A·dropout(x).  (N, r) */
static float *lora_u_of(const tune_workspace *ws, int mi, tune_linear_kind kind)
{
    return ws->lora_u + (size_t)(ws->checkpoint ? (int)kind : mi) * ws->B * ws->T * ws->r;
}

/* The slot of layer l in the per-layer buffers. */
static size_t slot(const tune_workspace *ws, int l) { return ws->checkpoint ? 0 : (size_t)l; }

/* Where layer l's attention probabilities are kept; NULL: not kept. */
static float *probs_of(const tune_workspace *ws, int l)
{
    if (!keep_probs(ws)) return NULL;
    const tune_attention_shape as = {ws->B, ws->T, ws->H, ws->Hkv, ws->hd};
    return ws->probs + (size_t)l * ws->be->attention_probs(&as);
}

/* Names the operations that follow for a tracing backend (nothing otherwise). */
static void label(const tune_workspace *ws, int layer, const char *what)
{
    tune_backend_label(ws->be, ws->pass, layer, what);
}

/* y = beta·y + x·Wᵀ + scaling · (dropout(x)·Aᵀ)·Bᵀ.  x: (N, in)   y: (N, out) */
static void linear_forward(tune_workspace *ws, const tune_model *m, const tune_lora *lora,
                           const tune_dropout *dp, int layer, tune_linear_kind kind, const float *x, float *y,
                           float beta)
{
    const int N = ws->cur_B * ws->cur_T;
    int out, in;
    tune_linear_shape(&m->cfg, kind, &out, &in);
    label(ws, layer, tune_linear_names[kind]);
    ws->be->weight_matmul(y, x, &m->layers[layer].w[kind], N, 0, beta);
    const int mi = module_of(lora, layer, kind);
    if (mi < 0) return;
    const tune_lora_module *mod = &lora->modules[mi];
    const int r = lora->cfg.r;
    float *u = lora_u_of(ws, mi, kind); /* (N, r) */
    ws->be->matmul(u, lora_input(ws, dp, mi, x, N, in, 1), lora->params + mod->a_offset, N, r, in, 0, 1, 1.0f, 0.0f);
    ws->be->matmul(y, u, lora->params + mod->b_offset, N, out, r, 0, 1, lora->scaling, 1.0f);
}

/* dA += duᵀ·x of the module of (layer, kind), from the du its
 * linear_backward left in ws->du. */
static void lora_backward_a(tune_workspace *ws, const tune_model *m, tune_lora *lora, const tune_dropout *dp,
                            int layer, tune_linear_kind kind, const float *x)
{
    const int mi = module_of(lora, layer, kind);
    if (mi < 0) return;
    const int N = ws->cur_B * ws->cur_T;
    int out, in;
    tune_linear_shape(&m->cfg, kind, &out, &in);
    label(ws, layer, tune_linear_names[kind]);
    const float *xd = lora_input(ws, dp, mi, x, N, in, 0);
    ws->be->matmul(lora->grads + lora->modules[mi].a_offset, ws->du, xd, lora->cfg.r, in, N, 1, 0, 1.0f, 1.0f);
}

/* dx = beta·dx + dy·W (+ the LoRA path); dA, dB += their gradients.
 * x: (N, in) the forward input   dy: (N, out)   dx: (N, in), or NULL where
 * nothing needs it (the lowest trained layer's input).
 * With x NULL the caller takes dA itself (lora_backward_a) before the next
 * linear_backward: down_proj's input is made again by the SwiGLU backward,
 * which needs dx first. */
static void linear_backward(tune_workspace *ws, const tune_model *m, tune_lora *lora, const tune_dropout *dp,
                            int layer, tune_linear_kind kind, const float *x, const float *dy, float *dx,
                            float beta)
{
    const int N = ws->cur_B * ws->cur_T;
    int out, in;
    tune_linear_shape(&m->cfg, kind, &out, &in);
    label(ws, layer, tune_linear_names[kind]);
    if (dx) ws->be->weight_matmul(dx, dy, &m->layers[layer].w[kind], N, 1, beta);
    const int mi = module_of(lora, layer, kind);
    if (mi < 0) return;
    const tune_lora_module *mod = &lora->modules[mi];
    const int r = lora->cfg.r;
    const float s = lora->scaling, *A = lora->params + mod->a_offset, *Bm = lora->params + mod->b_offset;
    float *gB = lora->grads + mod->b_offset;
    const float *u = lora_u_of(ws, mi, kind); /* (N, r) */
    ws->be->matmul(gB, dy, u, out, r, N, 1, 0, s, 1.0f);        /* dB += s·dyᵀ·u */
    ws->be->matmul(ws->du, dy, Bm, N, r, out, 0, 0, s, 0.0f);   /* du = s·dy·B */
    if (x) lora_backward_a(ws, m, lora, dp, layer, kind, x);
    if (!dx) return;
    if (!dp || dp->p == 0.0f) {
        ws->be->matmul(dx, ws->du, A, N, in, r, 0, 0, 1.0f, 1.0f); /* dx += du·A */
        return;
    }
    /* dx += mask ⊙ (du·A) */
    ws->be->matmul(ws->lora_x, ws->du, A, N, in, r, 0, 0, 1.0f, 0.0f);
    ws->be->dropout_apply(dx, ws->lora_x, ws->drop_bits + ws->bits_off[mi], (size_t)N * in, dp->p, 1);
}

/* Layer l on its input ws->resid[l]: its output into ws->resid[l + 1], and
 * what its backward needs into its slot of the per-layer buffers. */
static void layer_forward(tune_workspace *ws, const tune_model *model, const tune_lora *lora,
                          const tune_dropout *dropout, int l)
{
    const tune_model_config *cfg = &model->cfg;
    const int N = ws->cur_B * ws->cur_T, C = ws->C, hd = ws->hd;
    const tune_attention_shape as = {ws->cur_B, ws->cur_T, ws->H, ws->Hkv, hd};
    const tune_layer *ly = &model->layers[l];
    const size_t s = slot(ws, l), BT = (size_t)ws->B * ws->T;
    float *h = ws->resid + l * ws->NC, *h2 = ws->resid2 + s * ws->NC, *hn = h + ws->NC;
    float *q = ws->q + s * ws->NQ, *k = ws->k + s * ws->NKV, *v = ws->v + s * ws->NKV;
    float *att = ws->att + s * ws->NQ, *gate = ws->gate + s * ws->NI, *up = ws->up + s * ws->NI;
    /* attention block: h2 = h + o(attn(rope(q), rope(k), v)) */
    label(ws, l, "attention");
    ws->be->rmsnorm_forward(ws->xn, ws->rstd1 + s * BT, h, ly->attn_norm, N, C, cfg->rms_norm_eps);
    linear_forward(ws, model, lora, dropout, l, TUNE_Q_PROJ, ws->xn, q, 0.0f);
    linear_forward(ws, model, lora, dropout, l, TUNE_K_PROJ, ws->xn, k, 0.0f);
    linear_forward(ws, model, lora, dropout, l, TUNE_V_PROJ, ws->xn, v, 0.0f);
    label(ws, l, "attention");
    ws->be->rope_forward(q, ws->cos_t, ws->sin_t, N, ws->H, hd);
    ws->be->rope_forward(k, ws->cos_t, ws->sin_t, N, ws->Hkv, hd);
    ws->be->attention_forward(att, ws->lse_att + s * BT * ws->H, probs_of(ws, l), q, k, v, ws->start, &as,
                              ws->attn_scratch, ws->n_threads);
    ws->be->copy(h2, h, (size_t)N * C * sizeof *h);
    linear_forward(ws, model, lora, dropout, l, TUNE_O_PROJ, att, h2, 1.0f);
    /* MLP block: hn = h2 + down(silu(gate(x)) · up(x)) */
    label(ws, l, "mlp");
    ws->be->rmsnorm_forward(ws->xn, ws->rstd2 + s * BT, h2, ly->ffn_norm, N, C, cfg->rms_norm_eps);
    linear_forward(ws, model, lora, dropout, l, TUNE_GATE_PROJ, ws->xn, gate, 0.0f);
    linear_forward(ws, model, lora, dropout, l, TUNE_UP_PROJ, ws->xn, up, 0.0f);
    label(ws, l, "mlp");
    ws->be->swiglu_forward(ws->act, gate, up, (size_t)N * ws->I);
    ws->be->copy(hn, h2, (size_t)N * C * sizeof *h);
    linear_forward(ws, model, lora, dropout, l, TUNE_DOWN_PROJ, ws->act, hn, 1.0f);
}

/* Checks and uploads the batch and runs every layer and the final norm:
 * ws->xf. grad_scale > 0 marks a training forward, which the backward may follow. */
static tune_status forward_layers(const tune_model *model, const tune_lora *lora, const tune_batch *batch,
                                  const tune_dropout *dropout, tune_workspace *ws, float grad_scale, tune_error *err)
{
    const tune_model_config *cfg = &model->cfg;
    ws->cur_B = ws->cur_T = 0;
    ws->pass = TUNE_PASS_FORWARD;
    label(ws, -1, "input");
    if (check_inputs(model, lora, ws, dropout, err) || prepare_batch(cfg, batch, ws, err)) return TUNE_ERR_INPUT;
    if (grad_scale > 0.0f && !lora) return tune_fail_input(err, NULL, "a training forward needs LoRA adapters");
    const int N = batch->B * batch->T, C = ws->C, hd = ws->hd;
    ws->cur_B = batch->B;
    ws->cur_T = batch->T;
    ws->cur_lora = lora;
    ws->cur_dropout = dropout && dropout->p > 0.0f ? *dropout : (tune_dropout){0};
    ws->grad_scale = grad_scale;
    ws->be->rope_tables(ws->cos_t, ws->sin_t, ws->pos, ws->inv_freq, N, hd / 2);
    const tune_weight embed = embed_of(model, lora);
    ws->be->weight_rows(ws->resid, &embed, ws->ids, N);
    for (int l = 0; l < ws->L; l++) layer_forward(ws, model, lora, dropout, l);
    label(ws, -1, "final norm");
    ws->be->rmsnorm_forward(ws->xf, ws->rstd_f, ws->resid + ws->L * ws->NC, model->final_norm, N, C,
                            cfg->rms_norm_eps);
    return TUNE_OK;
}

/* The head on the target rows, a chunk at a time: each row's loss into
 * ws->row_loss, their sum into the running loss. A training forward also
 * turns each chunk's logits into grad_scale · d(loss)/d(logits), adds the
 * lm_head copy's gradient, and scatters d(xf) of its rows into ws->dxn
 * (the other rows' stay 0). */
static void head(const tune_model *model, const tune_lora *lora, tune_workspace *ws)
{
    const tune_backend *be = ws->be;
    const int M = (int)ws->n_targets, C = ws->C, V = ws->V, train = ws->grad_scale > 0.0f;
    const tune_weight W = lm_head_of(model, lora);
    if (train) {
        ws->pass = TUNE_PASS_BACKWARD;
        label(ws, -1, "head");
        be->zero(ws->dxn, (size_t)ws->cur_B * ws->cur_T * C * sizeof *ws->dxn);
    }
    for (int r0 = 0; r0 < M; r0 += ws->chunk) {
        const int m = M - r0 < ws->chunk ? M - r0 : ws->chunk;
        ws->pass = TUNE_PASS_FORWARD;
        label(ws, -1, "head");
        be->embedding(ws->xc, ws->xf, ws->rows + r0, m, C); /* gathers the chunk's rows of xf */
        be->weight_matmul(ws->logits, ws->xc, &W, m, 0, 0.0f);
        be->cross_entropy_forward(ws->lse_ce + r0, ws->row_loss + r0, ws->logits, ws->target + r0, m, V);
        if (!train) continue;
        ws->pass = TUNE_PASS_BACKWARD; /* the chunk's gradient, while its logits exist */
        label(ws, -1, "head");
        be->cross_entropy_backward(ws->logits, ws->lse_ce + r0, ws->target + r0, m, V, ws->grad_scale);
        if (lora->saved & TUNE_SAVE_LM_HEAD) /* d(lm_head) += d(logits)ᵀ·xf */
            be->matmul(lora->grads + lora->head_offset, ws->logits, ws->xc, V, C, m, 1, 0, 1.0f, 1.0f);
        be->weight_matmul(ws->xc, ws->logits, &W, m, 1, 0.0f);
        be->embedding_backward(ws->dxn, ws->xc, ws->rows + r0, m, C); /* the rows differ: a scatter */
    }
    ws->pass = TUNE_PASS_FORWARD;
    label(ws, -1, "loss");
    be->add_sum(ws->loss, ws->row_loss, (size_t)M);
}

tune_status tune_llama_forward(const tune_model *model, const tune_lora *lora, const tune_batch *batch,
                               const tune_dropout *dropout, float grad_scale, tune_workspace *ws, double *loss_sum,
                               long *n_targets, tune_error *err)
{
    if (!(grad_scale >= 0.0f)) return tune_fail_input(err, NULL, "forward: grad_scale %g is negative", grad_scale);
    tune_status st = forward_layers(model, lora, batch, dropout, ws, grad_scale, err);
    if (st) return st;
    label(ws, -1, "loss");
    if (loss_sum) tune_workspace_reset_loss(ws);
    head(model, lora, ws);
    *n_targets = ws->n_targets;
    if (grad_scale == 0.0f) ws->cur_B = ws->cur_T = 0; /* nothing for a backward to start from */
    return loss_sum ? tune_workspace_loss(ws, loss_sum, err) : TUNE_OK;
}

tune_status tune_llama_logits(const tune_model *model, const tune_lora *lora, const tune_batch *batch,
                              tune_workspace *ws, float *logits, tune_error *err)
{
    tune_status st = forward_layers(model, lora, batch, NULL, ws, 0.0f, err);
    if (st) return st;
    ws->cur_B = ws->cur_T = 0;
    const tune_weight W = lm_head_of(model, lora);
    ws->be->weight_matmul(logits, ws->xf, &W, batch->B * batch->T, 0, 0.0f);
    if (ws->be->finish(NULL, 0)) return tune_backend_failed(ws->be, "computing logits", err);
    return TUNE_OK;
}

tune_status tune_llama_backward(const tune_model *model, tune_lora *lora, const tune_batch *batch,
                                const tune_dropout *dropout, tune_workspace *ws, tune_error *err)
{
    if (!lora) return tune_fail_input(err, NULL, "backward: no LoRA adapters to train");
    if (check_inputs(model, lora, ws, dropout, err)) return TUNE_ERR_INPUT;
    if (!ws->cur_B || batch->B != ws->cur_B || batch->T != ws->cur_T)
        return tune_fail_input(err, NULL, "backward: the workspace holds no training forward pass of this batch");
    const tune_dropout none = {0}, *d = dropout && dropout->p > 0.0f ? dropout : &none;
    if (lora != ws->cur_lora || d->p != ws->cur_dropout.p || d->seed != ws->cur_dropout.seed ||
        d->micro_batch != ws->cur_dropout.micro_batch)
        return tune_fail_input(err, NULL, "backward: not the adapters or dropout of the last forward pass");
    const int B = ws->cur_B, T = ws->cur_T, N = B * T, C = ws->C, hd = ws->hd;
    const tune_attention_shape as = {B, T, ws->H, ws->Hkv, hd};
    ws->pass = TUNE_PASS_BACKWARD;
    label(ws, -1, "final norm");
    ws->be->zero(ws->dh, (size_t)N * C * sizeof *ws->dh);
    ws->be->rmsnorm_backward(ws->dh, ws->dxn, ws->resid + ws->L * ws->NC, model->final_norm, ws->rstd_f, N, C);
    /* Layers below the lowest adapted one need no gradient, unless the embedding trains. */
    const int lowest = lora->saved & TUNE_SAVE_EMBED ? 0 : lora->modules[0].layer;
    for (int l = ws->L - 1; l >= lowest; l--) {
        if (ws->checkpoint) { /* its activations, again */
            ws->pass = TUNE_PASS_RECOMPUTE;
            layer_forward(ws, model, lora, dropout, l);
            ws->pass = TUNE_PASS_BACKWARD;
        }
        const tune_layer *ly = &model->layers[l];
        const size_t s = slot(ws, l), BT = (size_t)ws->B * ws->T;
        const float *h = ws->resid + l * ws->NC, *h2 = ws->resid2 + s * ws->NC;
        const float *q = ws->q + s * ws->NQ, *k = ws->k + s * ws->NKV, *v = ws->v + s * ws->NKV;
        const float *att = ws->att + s * ws->NQ, *gate = ws->gate + s * ws->NI, *up = ws->up + s * ws->NI;
        /* MLP block; ws->dh holds d(hn) and becomes d(h2) */
        label(ws, l, "mlp");
        linear_backward(ws, model, lora, dropout, l, TUNE_DOWN_PROJ, NULL, ws->dh, ws->dact, 0.0f);
        label(ws, l, "mlp");
        const int down_lora = has_module(lora, l, TUNE_DOWN_PROJ, TUNE_DOWN_PROJ); /* its input again, for dA */
        ws->be->swiglu_backward(ws->dgate, ws->dup, down_lora ? ws->act : NULL, ws->dact, gate, up,
                                (size_t)N * ws->I);
        lora_backward_a(ws, model, lora, dropout, l, TUNE_DOWN_PROJ, ws->act);
        if (has_module(lora, l, TUNE_GATE_PROJ, TUNE_UP_PROJ)) /* their LoRA input, as the forward made it */
            ws->be->rmsnorm_forward(ws->xn, ws->rstd2 + s * BT, h2, ly->ffn_norm, N, C,
                                     model->cfg.rms_norm_eps);
        linear_backward(ws, model, lora, dropout, l, TUNE_GATE_PROJ, ws->xn, ws->dgate, ws->dxn, 0.0f);
        linear_backward(ws, model, lora, dropout, l, TUNE_UP_PROJ, ws->xn, ws->dup, ws->dxn, 1.0f);
        label(ws, l, "mlp");
        ws->be->rmsnorm_backward(ws->dh, ws->dxn, h2, ly->ffn_norm, ws->rstd2 + s * BT, N, C);
        /* attention block; ws->dh becomes d(h). Below the lowest trained
         * layer nothing reads d(h) (unless the embedding trains): there its
         * q/k/v input gradients are not made, nor the attention's backward
         * when no q/k/v adapter needs it. */
        const int feeds_below = l > lowest || lora->saved & TUNE_SAVE_EMBED;
        const int qkv = module_of(lora, l, TUNE_Q_PROJ) >= 0 || module_of(lora, l, TUNE_K_PROJ) >= 0 ||
                        module_of(lora, l, TUNE_V_PROJ) >= 0;
        float *dxn = feeds_below ? ws->dxn : NULL;
        linear_backward(ws, model, lora, dropout, l, TUNE_O_PROJ, att, ws->dh, feeds_below || qkv ? ws->datt : NULL,
                        0.0f);
        if (!feeds_below && !qkv) continue;
        label(ws, l, "attention");
        ws->be->attention_backward(ws->dq, ws->dk, ws->dv, ws->datt, q, k, v, att,
                                   ws->lse_att + s * BT * ws->H, probs_of(ws, l), ws->start, &as,
                                   ws->attn_scratch, ws->n_threads);
        ws->be->rope_backward(ws->dq, ws->cos_t, ws->sin_t, N, ws->H, hd);
        ws->be->rope_backward(ws->dk, ws->cos_t, ws->sin_t, N, ws->Hkv, hd);
        if (has_module(lora, l, TUNE_Q_PROJ, TUNE_V_PROJ))
            ws->be->rmsnorm_forward(ws->xn, ws->rstd1 + s * BT, h, ly->attn_norm, N, C,
                                     model->cfg.rms_norm_eps);
        linear_backward(ws, model, lora, dropout, l, TUNE_Q_PROJ, ws->xn, ws->dq, dxn, 0.0f);
        linear_backward(ws, model, lora, dropout, l, TUNE_K_PROJ, ws->xn, ws->dk, dxn, 1.0f);
        linear_backward(ws, model, lora, dropout, l, TUNE_V_PROJ, ws->xn, ws->dv, dxn, 1.0f);
        if (!feeds_below) continue;
        label(ws, l, "attention");
        ws->be->rmsnorm_backward(ws->dh, ws->dxn, h, ly->attn_norm, ws->rstd1 + s * BT, N, C);
    }
    label(ws, -1, "input");
    if (lora->saved & TUNE_SAVE_EMBED) /* scatter-add d(h) of the input into the rows of its ids */
        ws->be->embedding_backward(lora->grads + lora->embed_offset, ws->dh, ws->ids, N, C);
    /* The gradients are added: a second backward needs a new forward. */
    ws->cur_B = ws->cur_T = 0;
    return TUNE_OK;
}
