/* LLaMA models from GGUF: llama.* keys → tune_model_config, tensors →
 * tune_model in the Hugging Face layout (q/k rows un-permuted). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tune/gguf.h"
#include "tune/util.h"

/* Bound on every size read from the file, and on heads × head size, so that
 * products of two of them fit in size_t and one alone in an int. */
#define MAX_DIM (1 << 24)

/* A positive int from an integer key; dflt when absent and dflt > 0. */
static tune_status get_pos_int(const tune_gguf *g, const char *key, int dflt, int *out, tune_error *err)
{
    if (!tune_gguf_find(g, key) && dflt > 0) {
        *out = dflt;
        return TUNE_OK;
    }
    int64_t v;
    tune_status st = tune_gguf_get_int(g, key, &v, err);
    if (st) return st;
    if (v <= 0 || v > MAX_DIM)
        return tune_fail_input(err, g->path, "metadata key '%s' is %lld, out of range", key, (long long)v);
    *out = (int)v;
    return TUNE_OK;
}

/* An optional token id; -1 when absent. */
static tune_status get_token_id(const tune_gguf *g, const char *key, int *out, tune_error *err)
{
    *out = -1;
    if (!tune_gguf_find(g, key)) return TUNE_OK;
    int64_t v;
    tune_status st = tune_gguf_get_int(g, key, &v, err);
    if (st) return st;
    if (v < 0 || v > INT32_MAX)
        return tune_fail_input(err, g->path, "metadata key '%s' is %lld, not a token id", key, (long long)v);
    *out = (int)v;
    return TUNE_OK;
}

/* Llama 3.1/3.2 files carry their RoPE scaling as a rope_freqs tensor of
 * per-frequency divisors rather than as keys. Recognise the llama3 scheme
 * (factor = the largest divisor, low 1, high 4, original context 8192, the
 * converter's constants) and check every divisor against it, so a file with
 * some other scheme is refused rather than run with the wrong positions. */
static tune_status read_rope_freqs(const tune_gguf *g, const tune_gguf_tensor *t, tune_model_config *cfg,
                                   tune_error *err)
{
    int half = cfg->head_dim / 2;
    if (t->n_dims != 1 || t->ne[0] != (uint64_t)half || t->type != TUNE_Q_F32)
        return tune_fail_input(err, g->path, "tensor 'rope_freqs.weight' must be %d F32 values", half);
    float f[512]; /* (head_dim / 2); head_dim is checked to be at most 1024 */
    tune_status st = tune_gguf_tensor_to_f32(g, t, f, err);
    if (st) return st;
    double factor = 1.0;
    for (int i = 0; i < half; i++) factor = f[i] > factor ? f[i] : factor;
    const double low = 1.0, high = 4.0, orig = 8192.0;
    for (int i = 0; i < half; i++) {
        double inv = pow(cfg->rope_theta, -2.0 * i / cfg->head_dim);
        double wavelen = 2.0 * M_PI / inv, want;
        if (wavelen < orig / high) want = 1.0;
        else if (wavelen > orig / low) want = factor;
        else {
            double s = (orig / wavelen - low) / (high - low);
            want = 1.0 / ((1.0 - s) / factor + s);
        }
        if (fabs(f[i] - want) > 1e-4 * want)
            return tune_fail_input(err, g->path,
                                   "tensor 'rope_freqs.weight' is not llama3 RoPE scaling "
                                   "(entry %d is %g, llama3 with factor %g gives %g); tune cannot run it",
                                   i, f[i], factor, want);
    }
    cfg->rope_type = TUNE_ROPE_LLAMA3;
    cfg->rope_factor = factor;
    cfg->rope_low_freq_factor = low;
    cfg->rope_high_freq_factor = high;
    cfg->rope_original_max_position_embeddings = (int)orig;
    return TUNE_OK;
}

static tune_status read_rope_scaling(const tune_gguf *g, tune_model_config *cfg, tune_error *err)
{
    cfg->rope_type = TUNE_ROPE_DEFAULT;
    cfg->rope_factor = 1.0;
    if (tune_gguf_find(g, "llama.rope.scaling.type")) {
        tune_gguf_str type;
        tune_status st = tune_gguf_get_str(g, "llama.rope.scaling.type", &type, err);
        if (st) return st;
        if (!tune_gguf_str_eq(type, "none"))
            return tune_fail_input(err, g->path, "RoPE scaling '%.*s' (llama.rope.scaling.type) is not supported",
                                   (int)(type.len > 40 ? 40 : type.len), type.ptr);
    }
    const tune_gguf_tensor *t = tune_gguf_find_tensor(g, "rope_freqs.weight");
    return t ? read_rope_freqs(g, t, cfg, err) : TUNE_OK;
}

tune_status tune_gguf_read_config(const tune_gguf *g, tune_model_config *cfg, tune_error *err)
{
    memset(cfg, 0, sizeof *cfg);
    tune_gguf_str arch;
    tune_status st = tune_gguf_get_str(g, "general.architecture", &arch, err);
    if (st) return st;
    if (!tune_gguf_str_eq(arch, "llama"))
        return tune_fail_input(err, g->path, "general.architecture is '%.*s'; tune reads 'llama' models only",
                               (int)(arch.len > 40 ? 40 : arch.len), arch.ptr);
    if ((st = get_pos_int(g, "llama.block_count", 0, &cfg->num_hidden_layers, err)) ||
        (st = get_pos_int(g, "llama.embedding_length", 0, &cfg->hidden_size, err)) ||
        (st = get_pos_int(g, "llama.feed_forward_length", 0, &cfg->intermediate_size, err)) ||
        (st = get_pos_int(g, "llama.attention.head_count", 0, &cfg->num_attention_heads, err)) ||
        (st = get_pos_int(g, "llama.attention.head_count_kv", cfg->num_attention_heads,
                          &cfg->num_key_value_heads, err)) ||
        (st = get_pos_int(g, "llama.context_length", 0, &cfg->max_position_embeddings, err)))
        return st;
    if (cfg->num_attention_heads % cfg->num_key_value_heads)
        return tune_fail_input(err, g->path, "%d attention heads do not divide into %d key/value heads",
                               cfg->num_attention_heads, cfg->num_key_value_heads);
    int head_dim = cfg->hidden_size / cfg->num_attention_heads;
    if ((st = get_pos_int(g, "llama.attention.key_length", head_dim, &cfg->head_dim, err))) return st;
    int rot = 0;
    if ((st = get_pos_int(g, "llama.rope.dimension_count", cfg->head_dim, &rot, err))) return st;
    if (rot != cfg->head_dim || cfg->head_dim % 2 || cfg->head_dim > 1024)
        return tune_fail_input(err, g->path, "head size %d with %d rotary dimensions is not supported",
                               cfg->head_dim, rot);
    if ((int64_t)cfg->num_attention_heads * cfg->head_dim > MAX_DIM)
        return tune_fail_input(err, g->path, "%d heads of size %d are out of range", cfg->num_attention_heads,
                               cfg->head_dim);

    /* The vocabulary: llama.vocab_size, else the length of the token list. */
    if (tune_gguf_find(g, "llama.vocab_size")) {
        if ((st = get_pos_int(g, "llama.vocab_size", 0, &cfg->vocab_size, err))) return st;
    } else {
        const tune_gguf_str *tokens;
        uint64_t n;
        if ((st = tune_gguf_get_str_array(g, "tokenizer.ggml.tokens", &tokens, &n, err)))
            return tune_fail_input(err, g->path, "neither llama.vocab_size nor tokenizer.ggml.tokens gives the "
                                                 "vocabulary size");
        if (n == 0 || n > MAX_DIM) return tune_fail_input(err, g->path, "tokenizer.ggml.tokens has %llu entries",
                                                             (unsigned long long)n);
        cfg->vocab_size = (int)n;
    }

    double v;
    if ((st = tune_gguf_get_float(g, "llama.attention.layer_norm_rms_epsilon", &v, err))) return st;
    if (!(v > 0 && v < 1))
        return tune_fail_input(err, g->path, "llama.attention.layer_norm_rms_epsilon is %g, out of range", v);
    cfg->rms_norm_eps = (float)v;
    cfg->rope_theta = 10000.0; /* llama.cpp's default */
    if (tune_gguf_find(g, "llama.rope.freq_base")) {
        if ((st = tune_gguf_get_float(g, "llama.rope.freq_base", &cfg->rope_theta, err))) return st;
        if (!(cfg->rope_theta > 1))
            return tune_fail_input(err, g->path, "llama.rope.freq_base is %g, out of range", cfg->rope_theta);
    }
    if ((st = read_rope_scaling(g, cfg, err))) return st;

    cfg->tie_word_embeddings = tune_gguf_find_tensor(g, "output.weight") == NULL;
    int eos;
    if ((st = get_token_id(g, "tokenizer.ggml.bos_token_id", &cfg->bos_token_id, err)) ||
        (st = get_token_id(g, "tokenizer.ggml.eos_token_id", &eos, err)) ||
        (st = get_token_id(g, "tokenizer.ggml.padding_token_id", &cfg->pad_token_id, err)))
        return st;
    if (eos >= 0) {
        cfg->eos_token_ids[0] = eos;
        cfg->n_eos_token_ids = 1;
    }
    /* GGUF declares no torch dtype: torch_dtype stays empty. */
    return TUNE_OK;
}

tune_status tune_gguf_model_config(const char *path, tune_model_config *cfg, tune_error *err)
{
    tune_gguf g;
    tune_status st = tune_gguf_open(path, &g, err);
    if (st) return st;
    st = tune_gguf_read_config(&g, cfg, err);
    tune_gguf_close(&g);
    return st;
}

/* ---- weights ---------------------------------------------------------------- */

/* GGUF names of the seven linear layers, in tune_linear_kind order. */
static const char *const gguf_linear_names[TUNE_N_LINEAR] = {
    "attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down",
};

/* One weight to fill: its GGUF name, HF shape (rows, cols; cols = 0 for a
 * vector), and the model's vector pointer or matrix to set. heads > 0 marks
 * q/k, whose rows are un-permuted. */
typedef struct weight {
    char name[64];
    int rows, cols, heads, is_linear;
    float **vec;
    tune_weight *mat;
} weight;

static size_t weight_floats(const weight *w) { return (size_t)w->rows * (w->cols ? (size_t)w->cols : 1); }

/* The tensor for w, checked for presence, shape and a readable type. */
static const tune_gguf_tensor *find_weight(const tune_gguf *g, const weight *w, tune_error *err)
{
    const tune_gguf_tensor *t = tune_gguf_find_tensor(g, w->name);
    if (!t) {
        tune_fail_input(err, g->path, "tensor '%s' is missing", w->name);
        return NULL;
    }
    uint32_t dims = w->cols ? 2 : 1;
    uint64_t want0 = (uint64_t)(w->cols ? w->cols : w->rows), want1 = w->cols ? (uint64_t)w->rows : 1;
    if (t->n_dims != dims || t->ne[0] != want0 || t->ne[1] != want1) {
        tune_fail_input(err, g->path, "tensor '%s' has shape [%llu, %llu, %llu, %llu] (%u dims), expected [%llu, %llu] (%u dims)",
                        w->name, (unsigned long long)t->ne[0], (unsigned long long)t->ne[1],
                        (unsigned long long)t->ne[2], (unsigned long long)t->ne[3], t->n_dims,
                        (unsigned long long)want0, (unsigned long long)want1, dims);
        return NULL;
    }
    if (!tune_qtype_block_values(t->type) || tune_qtype_is_own(t->type)) {
        tune_fail_input(err, g->path, "tensor '%s' has type %s, which tune cannot read yet", w->name,
                        tune_ggml_type_name(t->type));
        return NULL;
    }
    if (!w->cols && t->type != TUNE_Q_F32) { /* llama.cpp keeps norms in F32 */
        tune_fail_input(err, g->path, "tensor '%s' (a norm) has type %s; tune reads norms in F32 only", w->name,
                        tune_ggml_type_name(t->type));
        return NULL;
    }
    return t;
}

/* GGUF row h·d + 2i + a holds HF row h·d + a·(d/2) + i (llama.cpp's converter
 * interleaves the RoPE halves for ggml's adjacent-pair rotation). Rows of
 * any type move whole. src, dst: (heads·d, row_bytes) */
static void unpermute_rows(uint8_t *dst, const uint8_t *src, int heads, int d, size_t row_bytes)
{
    for (int h = 0; h < heads; h++)
        for (int i = 0; i < d / 2; i++)
            for (int a = 0; a < 2; a++)
                memcpy(dst + ((size_t)h * d + (size_t)a * (d / 2) + i) * row_bytes,
                       src + ((size_t)h * d + 2 * i + a) * row_bytes, row_bytes);
}

/* The table of every weight in storage order. */
static weight *weight_table(tune_model *m, int *count)
{
    const tune_model_config *c = &m->cfg;
    int per_layer = 2 + TUNE_N_LINEAR, n = 3 + c->num_hidden_layers * per_layer;
    weight *ws = calloc((size_t)n, sizeof *ws);
    if (!ws) return NULL;
    int k = 0;
#define ADD(vec_, mat_, r, c_, hd, lin, ...)                                            \
    do {                                                                                \
        snprintf(ws[k].name, sizeof ws[k].name, __VA_ARGS__);                           \
        ws[k].rows = (r), ws[k].cols = (c_), ws[k].heads = (hd), ws[k].is_linear = (lin); \
        ws[k].vec = (vec_), ws[k++].mat = (mat_);                                       \
    } while (0)
    ADD(NULL, &m->embed, c->vocab_size, c->hidden_size, 0, 0, "token_embd.weight");
    for (int L = 0; L < c->num_hidden_layers; L++) {
        tune_layer *ly = &m->layers[L];
        ADD(&ly->attn_norm, NULL, c->hidden_size, 0, 0, 0, "blk.%d.attn_norm.weight", L);
        for (int kind = 0; kind < TUNE_N_LINEAR; kind++) {
            int out, in;
            tune_linear_shape(c, (tune_linear_kind)kind, &out, &in);
            int heads = kind == TUNE_Q_PROJ ? c->num_attention_heads
                        : kind == TUNE_K_PROJ ? c->num_key_value_heads : 0;
            ADD(NULL, &ly->w[kind], out, in, heads, 1, "blk.%d.%s.weight", L, gguf_linear_names[kind]);
        }
        ADD(&ly->ffn_norm, NULL, c->hidden_size, 0, 0, 0, "blk.%d.ffn_norm.weight", L);
    }
    ADD(&m->final_norm, NULL, c->hidden_size, 0, 0, 0, "output_norm.weight");
    if (!c->tie_word_embeddings) ADD(NULL, &m->lm_head, c->vocab_size, c->hidden_size, 0, 0, "output.weight");
#undef ADD
    *count = k;
    return ws;
}

/* Fills one weight from its tensor t. Blocks kept as they are move row by
 * row; blocks made at load are quantised from tmp, an fp32 copy of t, in
 * the model's row order (q/k un-permuted first, into perm): NF4_DQ's
 * statistics span rows, so its rows cannot be moved once quantised. */
static tune_status fill_weight(const tune_gguf *g, const tune_gguf_tensor *t, const weight *w, float **fp,
                               uint8_t **bp, float *tmp, float *perm, tune_error *err)
{
    const int d = w->heads ? w->rows / w->heads : 0;
    if (!w->mat || w->mat->type == TUNE_Q_F32) {
        float *dst = *fp;
        *fp += weight_floats(w);
        if (w->mat) w->mat->f32 = dst;
        else *w->vec = dst;
        if (!w->heads) return tune_gguf_tensor_to_f32(g, t, dst, err);
        tune_status st = tune_gguf_tensor_to_f32(g, t, tmp, err);
        if (!st) unpermute_rows((uint8_t *)dst, (const uint8_t *)tmp, w->heads, d, (size_t)w->cols * sizeof(float));
        return st;
    }
    tune_weight *m = w->mat;
    const size_t rb = tune_qtype_row_bytes(m->type, m->cols);
    m->blocks = *bp;
    *bp += tune_weight_bytes(m);
    if (m->type != t->type) { /* quantised at load */
        tune_status st = tune_gguf_tensor_to_f32(g, t, tmp, err);
        if (st) return st;
        if (w->heads)
            unpermute_rows((uint8_t *)perm, (const uint8_t *)tmp, w->heads, d, (size_t)m->cols * sizeof(float));
        tune_quantize_rows(m->type, w->heads ? perm : tmp, m->blocks, m->rows, m->cols);
    } else if (w->heads) {
        unpermute_rows(m->blocks, t->data, w->heads, d, rb);
    } else {
        memcpy(m->blocks, t->data, (size_t)m->rows * rb);
    }
    return TUNE_OK;
}

/* Checks every tensor and chooses its storage, before any big allocation:
 * the model's matrices get their type and shape, n_floats and
 * n_block_bytes their totals; ts[i] the tensor of ws[i]; *scratch and
 * *perm_floats the fp32 floats a fill_weight may need. */
static tune_status choose_storage(const tune_gguf *g, tune_weight_storage storage, tune_model *model, const weight *ws,
                                  int n, const tune_gguf_tensor **ts, size_t *scratch, size_t *perm_floats,
                                  tune_error *err)
{
    for (int i = 0; i < n; i++) {
        if (!(ts[i] = find_weight(g, &ws[i], err))) return TUNE_ERR_INPUT;
        tune_weight *m = ws[i].mat;
        if (!m) {
            model->n_floats += weight_floats(&ws[i]);
            continue;
        }
        *m = (tune_weight){.type = tune_storage_type(storage, ws[i].is_linear, ts[i]->type, ws[i].cols),
                           .rows = ws[i].rows, .cols = ws[i].cols};
        if (m->type == TUNE_Q_F32) model->n_floats += weight_floats(&ws[i]);
        else model->n_block_bytes += tune_weight_bytes(m);
        /* fp32 scratch for q/k before un-permuting, and for tensors quantised at load */
        if ((ws[i].heads || (m->type != TUNE_Q_F32 && m->type != ts[i]->type)) && weight_floats(&ws[i]) > *scratch)
            *scratch = weight_floats(&ws[i]);
        if (ws[i].heads && m->type != TUNE_Q_F32 && m->type != ts[i]->type && weight_floats(&ws[i]) > *perm_floats)
            *perm_floats = weight_floats(&ws[i]);
    }
    return TUNE_OK;
}

/* What reading the model and sizing it share: model->cfg and the layer
 * table, the weight table (*ws, *n) with each weight's tensor (*ts) and
 * storage (choose_storage). The caller frees *ws, *ts and model->layers,
 * whatever the status. */
static tune_status plan_weights(const tune_gguf *g, tune_weight_storage storage, tune_model *model, weight **ws,
                                const tune_gguf_tensor ***ts, int *n, size_t *scratch, size_t *perm_floats,
                                tune_error *err)
{
    *ws = NULL;
    *ts = NULL;
    *n = 0;
    *scratch = *perm_floats = 0;
    tune_status st = tune_gguf_read_config(g, &model->cfg, err);
    if (st) return st;
    /* Nine tensors a layer: a hostile block count fails here, before the
     * tables below are sized by it. */
    if ((uint64_t)model->cfg.num_hidden_layers * (2 + TUNE_N_LINEAR) > g->n_tensors)
        return tune_fail_input(err, g->path, "llama.block_count is %d, more layers than the file's %llu tensors can hold",
                               model->cfg.num_hidden_layers, (unsigned long long)g->n_tensors);
    model->layers = calloc((size_t)model->cfg.num_hidden_layers, sizeof *model->layers);
    if (model->layers) *ws = weight_table(model, n);
    if (*ws) *ts = calloc((size_t)*n, sizeof **ts);
    if (!*ts) return tune_fail_run(err, g->path, "out of memory");
    return choose_storage(g, storage, model, *ws, *n, *ts, scratch, perm_floats, err);
}

tune_status tune_gguf_stored_bytes(const tune_gguf *g, tune_weight_storage storage, size_t *bytes, tune_error *err)
{
    tune_model model = {0};
    weight *ws;
    const tune_gguf_tensor **ts;
    int n;
    size_t scratch, perm_floats;
    const tune_status st = plan_weights(g, storage, &model, &ws, &ts, &n, &scratch, &perm_floats, err);
    *bytes = tune_model_bytes(&model);
    free(ts);
    free(ws);
    free(model.layers);
    return st;
}

tune_status tune_gguf_read_model(const tune_gguf *g, tune_weight_storage storage, tune_model *model,
                                 tune_error *err)
{
    memset(model, 0, sizeof *model);
    weight *ws;
    const tune_gguf_tensor **ts;
    int n;
    size_t scratch, perm_floats;
    tune_status st = plan_weights(g, storage, model, &ws, &ts, &n, &scratch, &perm_floats, err);
    float *tmp = NULL;
    float *perm = NULL; /* q/k quantised at load, un-permuted before quantising */
    if (!st) {
        model->storage = malloc((model->n_floats ? model->n_floats : 1) * sizeof(float));
        model->blocks = tune_alloc_weights(model->n_block_bytes);
        tmp = malloc((scratch ? scratch : 1) * sizeof(float));
        perm = malloc((perm_floats ? perm_floats : 1) * sizeof(float));
        if (!model->storage || !model->blocks || !tmp || !perm)
            st = tune_fail_run(err, g->path, "out of memory for %zu MB of weights", tune_model_bytes(model) >> 20);
    }
    float *fp = model->storage;
    uint8_t *bp = model->blocks;
    for (int i = 0; !st && i < n; i++) {
        st = fill_weight(g, ts[i], &ws[i], &fp, &bp, tmp, perm, err);
        if (g->mapped) tune_drop_mapped(ts[i]->data, ts[i]->n_bytes);
    }
    if (!st && model->cfg.tie_word_embeddings) model->lm_head = model->embed;
    free(ws);
    free(ts);
    free(tmp);
    free(perm);
    if (st) tune_model_free(model);
    return st;
}

tune_status tune_gguf_model_load(const char *path, tune_weight_storage storage, tune_model *model, tune_error *err)
{
    tune_gguf g;
    tune_status st = tune_gguf_open(path, &g, err);
    if (st) {
        memset(model, 0, sizeof *model);
        return st;
    }
    st = tune_gguf_read_model(&g, storage, model, err);
    tune_gguf_close(&g);
    return st;
}
