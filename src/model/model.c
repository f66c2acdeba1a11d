/* LLaMA model: linear-layer shapes and names, Hugging Face config.json, and
 * loading every weight into one fp32 allocation. */
#include "tune/model.h"

#include <cJSON.h>
#include <dirent.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tune/gguf.h"
#include "tune/safetensors.h"
#include "tune/util.h"

const char *const tune_linear_names[TUNE_N_LINEAR] = {
    "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
};

void tune_linear_shape(const tune_model_config *cfg, tune_linear_kind kind, int *out, int *in)
{
    int C = cfg->hidden_size, I = cfg->intermediate_size;
    int q = cfg->num_attention_heads * cfg->head_dim, kv = cfg->num_key_value_heads * cfg->head_dim;
    switch (kind) {
    case TUNE_Q_PROJ: *out = q; *in = C; break;
    case TUNE_K_PROJ:
    case TUNE_V_PROJ: *out = kv; *in = C; break;
    case TUNE_O_PROJ: *out = C; *in = q; break;
    case TUNE_GATE_PROJ:
    case TUNE_UP_PROJ: *out = I; *in = C; break;
    default: *out = C; *in = I; break; /* down_proj */
    }
}

void tune_linear_module_path(int layer, tune_linear_kind kind, char *buf, size_t size)
{
    const char *block = kind <= TUNE_O_PROJ ? "self_attn" : "mlp";
    snprintf(buf, size, "model.layers.%d.%s.%s", layer, block, tune_linear_names[kind]);
}

/* ------------------------------------------------------------ config.json */

/* Upper bounds keep every product of two dimensions inside an int. */
#define MAX_DIM (1 << 20)
#define MAX_VOCAB (1 << 24)

typedef struct {
    const char *path; /* config.json, for errors */
    const cJSON *root;
    tune_error *err;
} cfg_reader;

static tune_status bad_key(cfg_reader *r, const char *key, const char *what)
{
    return tune_fail_input(r->err, r->path, "'%s' %s", key, what);
}

static int json_int(const cJSON *v, double lo, double hi, int *out)
{
    if (!cJSON_IsNumber(v)) return 0;
    double d = v->valuedouble;
    if (!(d >= lo && d <= hi) || d != floor(d)) return 0;
    *out = (int)d;
    return 1;
}

/* Absent or null → def (when not required). */
static tune_status get_int(cfg_reader *r, const cJSON *obj, const char *key, int required, int def,
                           int lo, int hi, int *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v || cJSON_IsNull(v)) {
        if (required) return bad_key(r, key, "is missing");
        *out = def;
        return TUNE_OK;
    }
    if (!json_int(v, lo, hi, out)) {
        char what[96];
        snprintf(what, sizeof what, "must be an integer in [%d, %d]", lo, hi);
        return bad_key(r, key, what);
    }
    return TUNE_OK;
}

static tune_status get_num(cfg_reader *r, const cJSON *obj, const char *key, double def, double *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v || cJSON_IsNull(v)) { *out = def; return TUNE_OK; }
    if (!cJSON_IsNumber(v) || !(v->valuedouble > 0.0)) return bad_key(r, key, "must be a positive number");
    *out = v->valuedouble;
    return TUNE_OK;
}

static tune_status get_bool(cfg_reader *r, const char *key, int def, int *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(r->root, key);
    if (!v || cJSON_IsNull(v)) { *out = def; return TUNE_OK; }
    if (!cJSON_IsBool(v)) return bad_key(r, key, "must be true or false");
    *out = cJSON_IsTrue(v);
    return TUNE_OK;
}

static int has_string(const cJSON *arr, const char *s)
{
    const cJSON *it;
    cJSON_ArrayForEach(it, arr)
        if (cJSON_IsString(it) && strcmp(it->valuestring, s) == 0) return 1;
    return 0;
}

/* model_type "llama", or a Llama/Mistral architecture without sliding window. */
static tune_status check_family(cfg_reader *r)
{
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(r->root, "model_type");
    const cJSON *arch = cJSON_GetObjectItemCaseSensitive(r->root, "architectures");
    const char *t = cJSON_IsString(type) ? type->valuestring : NULL;
    int llama = (t && strcmp(t, "llama") == 0) || (!t && has_string(arch, "LlamaForCausalLM"));
    int mistral = (t && strcmp(t, "mistral") == 0) || (!t && has_string(arch, "MistralForCausalLM"));
    if (mistral) {
        const cJSON *sw = cJSON_GetObjectItemCaseSensitive(r->root, "sliding_window");
        if (sw && !cJSON_IsNull(sw))
            return bad_key(r, "sliding_window", "is set: sliding-window attention is not supported");
        return TUNE_OK;
    }
    if (llama) return TUNE_OK;
    if (t) return tune_fail_input(r->err, r->path, "'model_type' is '%s': only LLaMA-family models (llama) are supported", t);
    return tune_fail_input(r->err, r->path, "'model_type' is missing and 'architectures' names no LlamaForCausalLM");
}

static tune_status check_unsupported(cfg_reader *r)
{
    static const char *const bias_keys[] = {"attention_bias", "mlp_bias"};
    for (size_t i = 0; i < sizeof bias_keys / sizeof *bias_keys; i++) {
        int on;
        tune_status st = get_bool(r, bias_keys[i], 0, &on);
        if (st != TUNE_OK) return st;
        if (on) return bad_key(r, bias_keys[i], "is true: bias in linear layers is not supported");
    }
    const cJSON *act = cJSON_GetObjectItemCaseSensitive(r->root, "hidden_act");
    if (act && (!cJSON_IsString(act) || strcmp(act->valuestring, "silu") != 0))
        return bad_key(r, "hidden_act", "must be \"silu\": other activations are not supported");
    return TUNE_OK;
}

/* rope_theta and rope_scaling, at the top level (older files) or nested in
 * rope_parameters (newer files). */
static tune_status parse_rope(cfg_reader *r, tune_model_config *cfg)
{
    const cJSON *params = cJSON_GetObjectItemCaseSensitive(r->root, "rope_parameters");
    const cJSON *scaling = cJSON_GetObjectItemCaseSensitive(r->root, "rope_scaling");
    if (params && !cJSON_IsNull(params) && !cJSON_IsObject(params))
        return bad_key(r, "rope_parameters", "must be an object");
    if (scaling && !cJSON_IsNull(scaling) && !cJSON_IsObject(scaling))
        return bad_key(r, "rope_scaling", "must be an object or null");
    const cJSON *theta_in = cJSON_IsObject(params) && cJSON_GetObjectItemCaseSensitive(params, "rope_theta")
                                ? params : r->root;
    tune_status st = get_num(r, theta_in, "rope_theta", 10000.0, &cfg->rope_theta);
    if (st != TUNE_OK) return st;
    const cJSON *s = cJSON_IsObject(params) ? params : cJSON_IsObject(scaling) ? scaling : NULL;
    const char *where = s == params ? "rope_parameters" : "rope_scaling";
    cfg->rope_type = TUNE_ROPE_DEFAULT;
    if (!s) return TUNE_OK;
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(s, "rope_type");
    if (!type) type = cJSON_GetObjectItemCaseSensitive(s, "type");
    if (!type || cJSON_IsNull(type) || (cJSON_IsString(type) && strcmp(type->valuestring, "default") == 0))
        return TUNE_OK;
    if (!cJSON_IsString(type))
        return tune_fail_input(r->err, r->path, "'%s.rope_type' must be a string", where);
    if (strcmp(type->valuestring, "llama3") != 0)
        return tune_fail_input(r->err, r->path, "'%s.rope_type' is '%s': only default and llama3 RoPE are supported",
                               where, type->valuestring);
    cfg->rope_type = TUNE_ROPE_LLAMA3;
    static const char *const keys[] = {"factor", "low_freq_factor", "high_freq_factor"};
    double *dst[] = {&cfg->rope_factor, &cfg->rope_low_freq_factor, &cfg->rope_high_freq_factor};
    char key[64];
    for (int i = 0; i < 3; i++) {
        snprintf(key, sizeof key, "%s.%s", where, keys[i]);
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(s, keys[i]);
        if (!v) return bad_key(r, key, "is missing (needed by llama3 RoPE)");
        if (!cJSON_IsNumber(v) || !(v->valuedouble > 0.0)) return bad_key(r, key, "must be a positive number");
        *dst[i] = v->valuedouble;
    }
    if (!(cfg->rope_high_freq_factor > cfg->rope_low_freq_factor))
        return tune_fail_input(r->err, r->path, "'%s.high_freq_factor' must be greater than low_freq_factor", where);
    const cJSON *orig = cJSON_GetObjectItemCaseSensitive(s, "original_max_position_embeddings");
    snprintf(key, sizeof key, "%s.original_max_position_embeddings", where);
    if (!json_int(orig, 1, INT_MAX, &cfg->rope_original_max_position_embeddings))
        return bad_key(r, key, "must be a positive integer (needed by llama3 RoPE)");
    return TUNE_OK;
}

/* bos/eos/pad: absent → LlamaConfig's defaults (1, 2, none); null → none. */
static tune_status parse_special_ids(cfg_reader *r, tune_model_config *cfg)
{
    tune_status st = get_int(r, r->root, "bos_token_id", 0, 1, 0, INT_MAX, &cfg->bos_token_id);
    if (st == TUNE_OK && cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(r->root, "bos_token_id")))
        cfg->bos_token_id = -1;
    if (st == TUNE_OK) st = get_int(r, r->root, "pad_token_id", 0, -1, 0, INT_MAX, &cfg->pad_token_id);
    if (st != TUNE_OK) return st;
    const cJSON *eos = cJSON_GetObjectItemCaseSensitive(r->root, "eos_token_id");
    cfg->n_eos_token_ids = 0;
    if (!eos) {
        cfg->eos_token_ids[cfg->n_eos_token_ids++] = 2;
    } else if (cJSON_IsArray(eos)) {
        if (cJSON_GetArraySize(eos) > TUNE_MAX_EOS) return bad_key(r, "eos_token_id", "lists more than 8 ids");
        const cJSON *it;
        cJSON_ArrayForEach(it, eos) {
            if (!json_int(it, 0, INT_MAX, &cfg->eos_token_ids[cfg->n_eos_token_ids++]))
                return bad_key(r, "eos_token_id", "must be an integer or a list of integers");
        }
    } else if (!cJSON_IsNull(eos)) {
        int id;
        if ((st = get_int(r, r->root, "eos_token_id", 1, 0, 0, INT_MAX, &id)) != TUNE_OK) return st;
        cfg->eos_token_ids[cfg->n_eos_token_ids++] = id;
    }
    return TUNE_OK;
}

static tune_status parse_config(cfg_reader *r, tune_model_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    if (!cJSON_IsObject(r->root)) return tune_fail_input(r->err, r->path, "not a JSON object");
    tune_status st = check_family(r);
    if (st == TUNE_OK) st = check_unsupported(r);
    const cJSON *root = r->root;
    if (st == TUNE_OK) st = get_int(r, root, "vocab_size", 1, 0, 1, MAX_VOCAB, &cfg->vocab_size);
    if (st == TUNE_OK) st = get_int(r, root, "hidden_size", 1, 0, 1, MAX_DIM, &cfg->hidden_size);
    if (st == TUNE_OK) st = get_int(r, root, "intermediate_size", 1, 0, 1, MAX_DIM, &cfg->intermediate_size);
    if (st == TUNE_OK) st = get_int(r, root, "num_hidden_layers", 1, 0, 1, 4096, &cfg->num_hidden_layers);
    if (st == TUNE_OK) st = get_int(r, root, "num_attention_heads", 1, 0, 1, 4096, &cfg->num_attention_heads);
    if (st != TUNE_OK) return st;
    int H = cfg->num_attention_heads;
    if ((st = get_int(r, root, "num_key_value_heads", 0, H, 1, H, &cfg->num_key_value_heads)) != TUNE_OK)
        return st;
    if (H % cfg->num_key_value_heads != 0)
        return bad_key(r, "num_key_value_heads", "must divide num_attention_heads");
    const cJSON *hd = cJSON_GetObjectItemCaseSensitive(root, "head_dim");
    if ((!hd || cJSON_IsNull(hd)) && cfg->hidden_size % H != 0)
        return bad_key(r, "num_attention_heads", "must divide hidden_size when head_dim is not given");
    if ((st = get_int(r, root, "head_dim", 0, cfg->hidden_size / H, 2, MAX_DIM / H, &cfg->head_dim)) != TUNE_OK)
        return st;
    if (cfg->head_dim % 2 != 0) return bad_key(r, "head_dim", "must be even (RoPE rotates pairs)");
    st = get_int(r, root, "max_position_embeddings", 0, 2048, 1, INT_MAX, &cfg->max_position_embeddings);
    double eps = 0;
    if (st == TUNE_OK) st = get_num(r, root, "rms_norm_eps", 1e-6, &eps);
    cfg->rms_norm_eps = (float)eps;
    if (st == TUNE_OK) st = parse_rope(r, cfg);
    if (st == TUNE_OK) st = get_bool(r, "tie_word_embeddings", 0, &cfg->tie_word_embeddings);
    if (st == TUNE_OK) st = parse_special_ids(r, cfg);
    if (st != TUNE_OK) return st;
    /* transformers 5 writes "dtype", older versions "torch_dtype". */
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(root, "dtype");
    if (!cJSON_IsString(dt)) dt = cJSON_GetObjectItemCaseSensitive(root, "torch_dtype");
    if (cJSON_IsString(dt)) snprintf(cfg->torch_dtype, sizeof cfg->torch_dtype, "%s", dt->valuestring);
    return TUNE_OK;
}

static tune_status hf_config_load(const char *dir, tune_model_config *cfg, tune_error *err)
{
    char path[4096];
    if (snprintf(path, sizeof path, "%s/config.json", dir) >= (int)sizeof path)
        return tune_fail_input(err, dir, "path too long");
    if (!tune_path_exists(path))
        return tune_fail_input(err, dir, "not a Hugging Face model folder: config.json is missing");
    char *text;
    size_t len;
    tune_status st = tune_read_file(path, &text, &len, err);
    if (st != TUNE_OK) return st;
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    if (!root) return tune_fail_input(err, path, "not valid JSON");
    cfg_reader r = {path, root, err};
    st = parse_config(&r, cfg);
    cJSON_Delete(root);
    return st;
}

/* ---------------------------------------------------------------- weights */

/* One weight: its Hugging Face name, shape, and where it goes in the model:
 * a vector (norm) or a matrix. The table's order is the layout of the
 * model's storage. */
typedef struct {
    char name[96];
    int ndim, is_linear;
    int64_t shape[2];
    float **vec;
    tune_weight *mat;
} weight_spec;

static void spec_vec(weight_spec *w, const char *name, int64_t d0, float **slot)
{
    *w = (weight_spec){.ndim = 1, .shape = {d0, 0}, .vec = slot};
    snprintf(w->name, sizeof w->name, "%s", name);
}

static void spec_mat(weight_spec *w, const char *name, int64_t rows, int64_t cols, int is_linear, tune_weight *slot)
{
    *w = (weight_spec){.ndim = 2, .is_linear = is_linear, .shape = {rows, cols}, .mat = slot};
    snprintf(w->name, sizeof w->name, "%s", name);
}

/* Fills specs (room for 3 + 9·L) and returns how many there are. */
static int weight_specs(tune_model *m, weight_spec *specs)
{
    const tune_model_config *cfg = &m->cfg;
    int64_t C = cfg->hidden_size, V = cfg->vocab_size;
    int n = 0;
    char name[96], module[80];
    spec_mat(&specs[n++], "model.embed_tokens.weight", V, C, 0, &m->embed);
    for (int l = 0; l < cfg->num_hidden_layers; l++) {
        tune_layer *layer = &m->layers[l];
        snprintf(name, sizeof name, "model.layers.%d.input_layernorm.weight", l);
        spec_vec(&specs[n++], name, C, &layer->attn_norm);
        for (int k = 0; k < TUNE_N_LINEAR; k++) {
            int out, in;
            tune_linear_shape(cfg, (tune_linear_kind)k, &out, &in);
            tune_linear_module_path(l, (tune_linear_kind)k, module, sizeof module);
            snprintf(name, sizeof name, "%s.weight", module);
            spec_mat(&specs[n++], name, out, in, 1, &layer->w[k]);
        }
        snprintf(name, sizeof name, "model.layers.%d.post_attention_layernorm.weight", l);
        spec_vec(&specs[n++], name, C, &layer->ffn_norm);
    }
    spec_vec(&specs[n++], "model.norm.weight", C, &m->final_norm);
    /* Tied: lm_head is the embedding; a stored lm_head.weight is ignored, as Transformers does. */
    if (!cfg->tie_word_embeddings) spec_mat(&specs[n++], "lm_head.weight", V, C, 0, &m->lm_head);
    return n;
}

const char *tune_storage_name(tune_weight_storage storage)
{
    switch (storage) {
    case TUNE_STORE_F32: return "fp32";
    case TUNE_STORE_INT8: return "load_in_8bit: full-precision linear weights in int8 (Q8_0)";
    case TUNE_STORE_NF4: return "load_in_4bit: full-precision linear weights in NF4";
    case TUNE_STORE_NF4_DQ: return "load_in_4bit: full-precision linear weights in NF4, absmax in 8 bits (double quant)";
    default: return "quantised matrices kept in the file's blocks";
    }
}

uint32_t tune_storage_type(tune_weight_storage storage, int is_linear, uint32_t file_type, int cols)
{
    const int full = file_type == TUNE_Q_F32 || file_type == TUNE_Q_F16 || file_type == TUNE_Q_BF16;
    if (storage == TUNE_STORE_F32 || (full && !is_linear)) return TUNE_Q_F32;
    if (!full) return file_type;
    const uint32_t want = storage == TUNE_STORE_INT8     ? TUNE_Q8_0
                          : storage == TUNE_STORE_NF4    ? TUNE_Q_NF4
                          : storage == TUNE_STORE_NF4_DQ ? TUNE_Q_NF4_DQ
                                                         : TUNE_Q_F32;
    return want != TUNE_Q_F32 && tune_qtype_row_bytes(want, cols) ? want : TUNE_Q_F32;
}

/* Checks every tensor's presence and shape (before allocating anything),
 * then converts each into its place: fp32 storage, or blocks quantised
 * from an fp32 copy of that one tensor. */
static tune_status hf_load_weights(const tune_st_set *set, tune_model *m, tune_weight_storage storage,
                                   const char *dir, tune_error *err)
{
    int max = 3 + 9 * m->cfg.num_hidden_layers;
    weight_spec *specs = malloc((size_t)max * sizeof *specs);
    const tune_st_tensor **tensors = malloc((size_t)max * sizeof *tensors);
    tune_status st = TUNE_OK;
    if (!specs || !tensors) st = tune_fail_run(err, dir, "out of memory");
    int n = st == TUNE_OK ? weight_specs(m, specs) : 0;
    size_t biggest_quantised = 0;
    m->n_floats = m->n_block_bytes = 0;
    for (int i = 0; i < n && st == TUNE_OK; i++) {
        tensors[i] = tune_st_set_find(set, specs[i].name);
        if (!tensors[i] && strcmp(specs[i].name, "lm_head.weight") == 0)
            st = tune_fail_input(err, set->source, "tensor 'lm_head.weight' is missing and tie_word_embeddings is false");
        else if (!tensors[i])
            st = tune_fail_input(err, set->source, "tensor '%s' is missing", specs[i].name);
        else
            st = tune_st_expect_shape(tensors[i], specs[i].ndim, specs[i].shape, err);
        if (st != TUNE_OK) break;
        tune_weight *w = specs[i].mat;
        if (!w) {
            m->n_floats += tensors[i]->numel;
            continue;
        }
        *w = (tune_weight){.type = tune_storage_type(storage, specs[i].is_linear, TUNE_Q_F32, (int)specs[i].shape[1]),
                           .rows = (int)specs[i].shape[0], .cols = (int)specs[i].shape[1]};
        if (w->type == TUNE_Q_F32) {
            m->n_floats += tensors[i]->numel;
        } else {
            m->n_block_bytes += tune_weight_bytes(w);
            if ((size_t)tensors[i]->numel > biggest_quantised) biggest_quantised = tensors[i]->numel;
        }
    }
    float *tmp = NULL; /* one tensor in fp32 before it is quantised */
    if (st == TUNE_OK) {
        if (posix_memalign((void **)&m->storage, 64, (m->n_floats ? m->n_floats : 1) * sizeof(float))) m->storage = NULL;
        m->blocks = tune_alloc_weights(m->n_block_bytes);
        tmp = malloc((biggest_quantised ? biggest_quantised : 1) * sizeof *tmp);
        if (!m->storage || !m->blocks || !tmp)
            st = tune_fail_run(err, dir, "out of memory: %zu MB of weights", tune_model_bytes(m) >> 20);
    }
    float *p = m->storage;
    uint8_t *b = m->blocks;
    for (int i = 0; i < n && st == TUNE_OK; i++) {
        tune_weight *w = specs[i].mat;
        if (!w || w->type == TUNE_Q_F32) {
            st = tune_st_read_f32(tensors[i], p, err);
            if (w) w->f32 = p;
            else *specs[i].vec = p;
            p += tensors[i]->numel;
            tune_drop_mapped(tensors[i]->data, tensors[i]->nbytes);
            continue;
        }
        if ((st = tune_st_read_f32(tensors[i], tmp, err)) != TUNE_OK) break;
        tune_drop_mapped(tensors[i]->data, tensors[i]->nbytes);
        w->blocks = b;
        tune_quantize_rows(w->type, tmp, b, w->rows, w->cols);
        b += tune_weight_bytes(w);
    }
    if (st == TUNE_OK && m->cfg.tie_word_embeddings) m->lm_head = m->embed;
    free(tmp);
    free(specs);
    free(tensors);
    return st;
}

static tune_status hf_model_load(const char *dir, tune_weight_storage storage, tune_model *m, tune_error *err)
{
    tune_status st = hf_config_load(dir, &m->cfg, err);
    if (st != TUNE_OK) return st;
    tune_st_set *set;
    if ((st = tune_st_set_open(dir, &set, err)) != TUNE_OK) return st;
    m->layers = calloc((size_t)m->cfg.num_hidden_layers, sizeof *m->layers);
    if (!m->layers) st = tune_fail_run(err, dir, "out of memory");
    if (st == TUNE_OK) st = hf_load_weights(set, m, storage, dir, err);
    tune_st_set_close(set);
    return st;
}

/* --------------------------------------------------------------- dispatch */

/* Which loader reads a model path: a folder is a Hugging Face model, a
 * .gguf file goes to the GGUF loader. */
typedef enum { SRC_HF, SRC_GGUF, SRC_NONE } model_source;

static model_source model_source_of(const char *path, tune_error *err)
{
    size_t n = strlen(path);
    if (tune_is_dir(path)) return SRC_HF;
    if (!tune_path_exists(path)) {
        tune_fail_input(err, path, "model path does not exist");
        return SRC_NONE;
    }
    if (n >= 5 && strcmp(path + n - 5, ".gguf") == 0) return SRC_GGUF;
    tune_fail_input(err, path, "not a model: expected a Hugging Face folder (config.json + safetensors) or a .gguf file");
    return SRC_NONE;
}

tune_status tune_model_config_load(const char *path, tune_model_config *cfg, tune_error *err)
{
    memset(cfg, 0, sizeof *cfg);
    switch (model_source_of(path, err)) {
    case SRC_HF: return hf_config_load(path, cfg, err);
    case SRC_GGUF: return tune_gguf_model_config(path, cfg, err);
    default: return TUNE_ERR_INPUT;
    }
}

tune_status tune_model_load(const char *path, tune_model *model, tune_error *err)
{
    return tune_model_load_stored(path, TUNE_STORE_F32, model, err);
}

tune_status tune_model_load_stored(const char *path, tune_weight_storage storage, tune_model *model,
                                   tune_error *err)
{
    memset(model, 0, sizeof *model);
    tune_status st;
    switch (model_source_of(path, err)) {
    case SRC_HF: st = hf_model_load(path, storage, model, err); break;
    case SRC_GGUF: st = tune_gguf_model_load(path, storage, model, err); break;
    default: st = TUNE_ERR_INPUT; break;
    }
    if (st != TUNE_OK) tune_model_free(model);
    return st;
}

/* A Hugging Face folder's weights are full precision: fp32, or linear weights quantised at load. */
static tune_status hf_stored_bytes(const char *dir, tune_weight_storage storage, size_t *bytes, tune_error *err)
{
    tune_model m = {0};
    tune_status st = hf_config_load(dir, &m.cfg, err);
    if (st != TUNE_OK) return st;
    m.layers = calloc((size_t)m.cfg.num_hidden_layers, sizeof *m.layers);
    weight_spec *specs = malloc((size_t)(3 + 9 * m.cfg.num_hidden_layers) * sizeof *specs);
    if (!m.layers || !specs) st = tune_fail_run(err, dir, "out of memory");
    const int n = st == TUNE_OK ? weight_specs(&m, specs) : 0;
    *bytes = 0;
    for (int i = 0; i < n; i++) {
        if (!specs[i].mat) {
            *bytes += (size_t)specs[i].shape[0] * sizeof(float);
            continue;
        }
        const tune_weight w = {tune_storage_type(storage, specs[i].is_linear, TUNE_Q_F32, (int)specs[i].shape[1]),
                               (int)specs[i].shape[0], (int)specs[i].shape[1], NULL, NULL};
        *bytes += tune_weight_bytes(&w);
    }
    free(specs);
    free(m.layers);
    return st;
}

tune_status tune_model_stored_bytes(const char *path, tune_weight_storage storage, size_t *bytes, tune_error *err)
{
    *bytes = 0;
    switch (model_source_of(path, err)) {
    case SRC_HF: return hf_stored_bytes(path, storage, bytes, err);
    case SRC_GGUF: {
        tune_gguf g;
        tune_status st = tune_gguf_open(path, &g, err);
        if (st != TUNE_OK) return st;
        st = tune_gguf_stored_bytes(&g, storage, bytes, err);
        tune_gguf_close(&g);
        return st;
    }
    default: return TUNE_ERR_INPUT;
    }
}

static int by_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* A folder's config.json, model.safetensors, or shard index and shards
 * (model-00001-of-00002.safetensors). */
static int is_model_file(const char *name)
{
    size_t n = strlen(name);
    return !strcmp(name, "config.json") || !strcmp(name, "model.safetensors.index.json") ||
           !strcmp(name, "model.safetensors") ||
           (!strncmp(name, "model-", 6) && n > 12 && !strcmp(name + n - 12, ".safetensors"));
}

tune_status tune_model_files(const char *path, char ***files, int *n_files, tune_error *err)
{
    *files = NULL;
    *n_files = 0;
    model_source src = model_source_of(path, err);
    if (src == SRC_NONE) return TUNE_ERR_INPUT;
    DIR *dir = NULL;
    if (src == SRC_HF && !(dir = opendir(path))) return tune_fail_input(err, path, "cannot read the folder");
    int cap = 8, n = 0;
    char **list = malloc((size_t)cap * sizeof *list);
    tune_status st = list ? TUNE_OK : tune_fail_run(err, path, "out of memory");
    if (st == TUNE_OK && src == SRC_GGUF && !(list[n++] = strdup(path))) st = tune_fail_run(err, path, "out of memory");
    for (struct dirent *e; st == TUNE_OK && dir && (e = readdir(dir));) {
        if (!is_model_file(e->d_name)) continue;
        if (n == cap) {
            char **grown = realloc(list, (size_t)(cap *= 2) * sizeof *list);
            if (!grown) { st = tune_fail_run(err, path, "out of memory"); break; }
            list = grown;
        }
        size_t len = strlen(path) + strlen(e->d_name) + 2;
        if (!(list[n] = malloc(len))) { st = tune_fail_run(err, path, "out of memory"); break; }
        snprintf(list[n++], len, "%s/%s", path, e->d_name);
    }
    if (dir) closedir(dir);
    if (st != TUNE_OK) {
        for (int i = 0; i < n; i++) free(list[i]);
        free(list);
        return st;
    }
    qsort(list, (size_t)n, sizeof *list, by_name);
    *files = list;
    *n_files = n;
    return TUNE_OK;
}

void tune_model_free(tune_model *model)
{
    if (!model) return;
    free(model->storage);
    free(model->blocks);
    free(model->layers);
    memset(model, 0, sizeof *model);
}

size_t tune_model_bytes(const tune_model *model)
{
    return model->n_floats * sizeof(float) + model->n_block_bytes;
}

/* New rows are the mean of the old rows. Transformers' resize_token_embeddings
 * (mean_resizing=True) samples them from a normal with that mean and 1e-9 times
 * the old rows' covariance: the same rows up to noise of about 3e-5 standard
 * deviations, which its torch RNG makes irreproducible here.
 * dst: (new_V, C), its first V rows already the old ones */
static void grow_rows(float *dst, int64_t V, int64_t new_V, int64_t C)
{
    for (int64_t c = 0; c < C; c++) {
        double sum = 0.0;
        for (int64_t v = 0; v < V; v++) sum += dst[v * C + c];
        const float mean = (float)(sum / (double)V);
        for (int64_t v = V; v < new_V; v++) dst[v * C + c] = mean;
    }
}

/* Moves the fp32 weights into a new allocation where the embedding and an
 * untied lm_head have new_vocab rows (new ones from grow_rows; a matrix in
 * blocks becomes fp32 and its blocks stay unused in model->blocks) and,
 * with untie set, lm_head gets a matrix of its own (a copy of the
 * embedding) where it was tied. */
static tune_status relayout(tune_model *m, int new_vocab, int untie, tune_error *err)
{
    const int64_t V = m->cfg.vocab_size, C = m->cfg.hidden_size;
    const int tied = m->cfg.tie_word_embeddings, split = tied && untie;
    const int max = 3 + 9 * m->cfg.num_hidden_layers;
    weight_spec *specs = malloc((size_t)max * sizeof *specs);
    if (!specs) return tune_fail_run(err, NULL, "out of memory resizing the vocabulary");
    const int n = weight_specs(m, specs);
    size_t total = split ? (size_t)(new_vocab * C) : 0;
    for (int i = 0; i < n; i++) {
        const tune_weight *w = specs[i].mat;
        if (!w) total += (size_t)specs[i].shape[0];
        else if (w == &m->embed || w == &m->lm_head) total += (size_t)(new_vocab * C);
        else if (w->type == TUNE_Q_F32) total += (size_t)w->rows * w->cols;
    }
    float *storage;
    if (posix_memalign((void **)&storage, 64, total * sizeof(float)) != 0) {
        free(specs);
        return tune_fail_run(err, NULL, "out of memory: %zu MB of weights after resizing the vocabulary",
                             total * sizeof(float) >> 20);
    }
    float *p = storage;
    for (int i = 0; i < n; i++) {
        tune_weight *w = specs[i].mat;
        if (!w) {
            memcpy(p, *specs[i].vec, (size_t)specs[i].shape[0] * sizeof *p);
            *specs[i].vec = p;
            p += specs[i].shape[0];
        } else if (w == &m->embed || w == &m->lm_head) {
            tune_weight_dequantize(w, p);
            grow_rows(p, V, new_vocab, C);
            *w = (tune_weight){.type = TUNE_Q_F32, .rows = new_vocab, .cols = (int)C, .f32 = p};
            p += (size_t)new_vocab * C;
        } else if (w->type == TUNE_Q_F32) {
            memcpy(p, w->f32, (size_t)w->rows * w->cols * sizeof *p);
            w->f32 = p;
            p += (size_t)w->rows * w->cols;
        }
    }
    if (split) {
        memcpy(p, m->embed.f32, (size_t)(new_vocab * C) * sizeof *p);
        m->lm_head = (tune_weight){.type = TUNE_Q_F32, .rows = new_vocab, .cols = (int)C, .f32 = p};
    } else if (tied) {
        m->lm_head = m->embed;
    }
    free(specs);
    free(m->storage);
    m->storage = storage;
    m->n_floats = total;
    m->cfg.vocab_size = new_vocab;
    m->cfg.tie_word_embeddings = tied && !untie;
    return TUNE_OK;
}

tune_status tune_model_resize_vocab(tune_model *m, int new_vocab, tune_error *err)
{
    if (new_vocab < m->cfg.vocab_size)
        return tune_fail_input(err, NULL, "vocabulary of %d tokens cannot shrink to %d", m->cfg.vocab_size,
                               new_vocab);
    return new_vocab == m->cfg.vocab_size ? TUNE_OK : relayout(m, new_vocab, 0, err);
}

tune_status tune_model_untie_embeddings(tune_model *m, tune_error *err)
{
    return m->cfg.tie_word_embeddings ? relayout(m, m->cfg.vocab_size, 1, err) : TUNE_OK;
}
