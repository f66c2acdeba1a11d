/* LoRA merge (W' = W + scaling·B·A, as PEFT's merge_and_unload) and the
 * merged model written as a Hugging Face folder that Transformers loads. */
#include "tune/merge.h"
#include "tune/tokenizer.h"

#include <cJSON.h>
#include <cblas.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ------------------------------------------------------------ the adapter */

void tune_lora_merge(tune_model *model, const tune_lora *lora)
{
    const int r = lora->cfg.r;
    for (int i = 0; i < lora->n_modules; i++) {
        const tune_lora_module *m = &lora->modules[i];
        float *w = model->layers[m->layer].w[m->kind].f32; /* (out, in) */
        /* W += scaling · B (out, r) · A (r, in) */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m->out, m->in, r, lora->scaling,
                    lora->params + m->b_offset, r, lora->params + m->a_offset, m->in, 1.0f, w, m->in);
    }
    /* modules_to_save: the trained copies replace the matrices (the model has their shape:
     * tune_lora_open_peft grew and untied it). */
    const size_t VC = (size_t)lora->vocab * (size_t)lora->hidden;
    if (lora->saved & TUNE_SAVE_EMBED) memcpy(model->embed.f32, lora->params + lora->embed_offset, VC * sizeof(float));
    if (lora->saved & TUNE_SAVE_LM_HEAD)
        memcpy(model->lm_head.f32, lora->params + lora->head_offset, VC * sizeof(float));
}

tune_status tune_merge_peft_adapter(tune_model *model, const char *adapter_dir, tune_error *err)
{
    tune_lora *lora;
    tune_status st = tune_lora_open_peft(model, adapter_dir, &lora, err);
    if (st == TUNE_OK) tune_lora_merge(model, lora);
    tune_lora_free(lora);
    return st;
}

/* ------------------------------------------------------ the output folder */

/* buf = dir/name; 0 when it does not fit (paths are checked against this before use). */
static int join(char *buf, size_t size, const char *dir, const char *name)
{
    const size_t a = strlen(dir), b = strlen(name);
    if (a + 1 + b >= size) return 0;
    memcpy(buf, dir, a);
    buf[a] = '/';
    memcpy(buf + a + 1, name, b + 1);
    return 1;
}

static const char *dtype_torch_name(tune_dtype dt) { return dt == TUNE_DT_BF16 ? "bfloat16" : "float32"; }

/* A float hyperparameter as the shortest decimal that reads back as it (1e-06, not 9.99999997e-07). */
static double short_decimal(float f)
{
    char buf[32];
    for (int prec = 1; prec <= 9; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, f);
        if (strtof(buf, NULL) == f) break;
    }
    return strtod(buf, NULL);
}

/* The merged weights under their Hugging Face names. names: (n) strings to free. */
static int weight_entries(const tune_model *m, tune_dtype dt, tune_st_entry *e, char **names)
{
    const tune_model_config *c = &m->cfg;
    const int64_t C = c->hidden_size, V = c->vocab_size;
    int n = 0;
    char module[96], buf[160];
#define ENTRY(nm, d0, d1, ptr)                                                                 \
    do {                                                                                       \
        names[n] = strdup(nm);                                                                 \
        e[n] = (tune_st_entry){.name = names[n], .dtype = dt, .ndim = (d1) ? 2 : 1, .f32 = (ptr)}; \
        e[n].shape[0] = (d0);                                                                  \
        e[n].shape[1] = (d1);                                                                  \
        n++;                                                                                   \
    } while (0)
    ENTRY("model.embed_tokens.weight", V, C, m->embed.f32);
    for (int l = 0; l < c->num_hidden_layers; l++) {
        snprintf(buf, sizeof buf, "model.layers.%d.input_layernorm.weight", l);
        ENTRY(buf, C, 0, m->layers[l].attn_norm);
        snprintf(buf, sizeof buf, "model.layers.%d.post_attention_layernorm.weight", l);
        ENTRY(buf, C, 0, m->layers[l].ffn_norm);
        for (int k = 0; k < TUNE_N_LINEAR; k++) {
            int out, in;
            tune_linear_shape(c, (tune_linear_kind)k, &out, &in);
            tune_linear_module_path(l, (tune_linear_kind)k, module, sizeof module);
            snprintf(buf, sizeof buf, "%s.weight", module);
            ENTRY(buf, out, in, m->layers[l].w[k].f32);
        }
    }
    ENTRY("model.norm.weight", C, 0, m->final_norm);
    if (!c->tie_word_embeddings) ENTRY("lm_head.weight", V, C, m->lm_head.f32);
#undef ENTRY
    return n;
}

static tune_status write_weights(const tune_model *m, const char *path, tune_dtype dt, tune_error *err)
{
    const int max = 3 + 9 * m->cfg.num_hidden_layers;
    tune_st_entry *e = calloc((size_t)max, sizeof *e);
    char **names = calloc((size_t)max, sizeof *names);
    tune_status st = TUNE_OK;
    int n = 0;
    if (!e || !names) st = tune_fail_run(err, path, "out of memory");
    if (st == TUNE_OK) n = weight_entries(m, dt, e, names);
    for (int i = 0; st == TUNE_OK && i < n; i++)
        if (!names[i]) st = tune_fail_run(err, path, "out of memory");
    if (st == TUNE_OK) st = tune_st_write(path, e, n, err);
    for (int i = 0; names && i < n; i++) free(names[i]);
    free(names);
    free(e);
    return st;
}

static tune_status write_json(const char *path, cJSON *root, tune_error *err)
{
    char *text = root ? cJSON_Print(root) : NULL;
    if (!text) return tune_fail_run(err, path, "out of memory");
    tune_strbuf sb = {0};
    tune_strbuf_puts(&sb, text);
    tune_strbuf_puts(&sb, "\n");
    cJSON_free(text);
    tune_status st = sb.oom ? tune_fail_run(err, path, "out of memory")
                            : tune_write_file_atomic(path, sb.data, sb.len, err);
    tune_strbuf_free(&sb);
    return st;
}

static void add_eos(cJSON *root, const tune_model_config *c)
{
    if (c->n_eos_token_ids == 1) {
        cJSON_AddNumberToObject(root, "eos_token_id", c->eos_token_ids[0]);
    } else if (c->n_eos_token_ids > 1) {
        cJSON *arr = cJSON_AddArrayToObject(root, "eos_token_id");
        for (int i = 0; arr && i < c->n_eos_token_ids; i++)
            cJSON_AddItemToArray(arr, cJSON_CreateNumber(c->eos_token_ids[i]));
    }
}

/* LlamaForCausalLM's config.json from the hyperparameters (for a GGUF base). */
static cJSON *config_from_hparams(const tune_model_config *c, tune_dtype dt)
{
    cJSON *root = cJSON_CreateObject(), *arch = cJSON_AddArrayToObject(root, "architectures");
    if (arch) cJSON_AddItemToArray(arch, cJSON_CreateString("LlamaForCausalLM"));
    cJSON_AddStringToObject(root, "model_type", "llama");
    cJSON_AddStringToObject(root, "hidden_act", "silu");
    cJSON_AddBoolToObject(root, "attention_bias", 0);
    cJSON_AddBoolToObject(root, "mlp_bias", 0);
    cJSON_AddNumberToObject(root, "vocab_size", c->vocab_size);
    cJSON_AddNumberToObject(root, "hidden_size", c->hidden_size);
    cJSON_AddNumberToObject(root, "intermediate_size", c->intermediate_size);
    cJSON_AddNumberToObject(root, "num_hidden_layers", c->num_hidden_layers);
    cJSON_AddNumberToObject(root, "num_attention_heads", c->num_attention_heads);
    cJSON_AddNumberToObject(root, "num_key_value_heads", c->num_key_value_heads);
    cJSON_AddNumberToObject(root, "head_dim", c->head_dim);
    cJSON_AddNumberToObject(root, "max_position_embeddings", c->max_position_embeddings);
    cJSON_AddNumberToObject(root, "rms_norm_eps", short_decimal(c->rms_norm_eps));
    cJSON_AddNumberToObject(root, "rope_theta", c->rope_theta);
    if (c->rope_type == TUNE_ROPE_LLAMA3) {
        cJSON *rs = cJSON_AddObjectToObject(root, "rope_scaling");
        cJSON_AddStringToObject(rs, "rope_type", "llama3");
        cJSON_AddNumberToObject(rs, "factor", c->rope_factor);
        cJSON_AddNumberToObject(rs, "low_freq_factor", c->rope_low_freq_factor);
        cJSON_AddNumberToObject(rs, "high_freq_factor", c->rope_high_freq_factor);
        cJSON_AddNumberToObject(rs, "original_max_position_embeddings", c->rope_original_max_position_embeddings);
    } else {
        cJSON_AddNullToObject(root, "rope_scaling");
    }
    cJSON_AddBoolToObject(root, "tie_word_embeddings", c->tie_word_embeddings);
    if (c->bos_token_id >= 0) cJSON_AddNumberToObject(root, "bos_token_id", c->bos_token_id);
    add_eos(root, c);
    if (c->pad_token_id >= 0) cJSON_AddNumberToObject(root, "pad_token_id", c->pad_token_id);
    cJSON_AddStringToObject(root, "torch_dtype", dtype_torch_name(dt));
    return root;
}

/* The base folder's config.json with its dtype set to what is stored now. */
static tune_status write_config(const tune_model *m, const char *base, int base_is_dir, const char *path,
                                tune_dtype dt, tune_error *err)
{
    cJSON *root;
    if (base_is_dir) {
        char src[4096], *text;
        size_t len;
        join(src, sizeof src, base, "config.json");
        tune_status st = tune_read_file(src, &text, &len, err);
        if (st != TUNE_OK) return st;
        root = cJSON_ParseWithLength(text, len);
        free(text);
        if (!cJSON_IsObject(root)) {
            cJSON_Delete(root);
            return tune_fail_input(err, src, "not a JSON object");
        }
        int had = 0;
        static const char *const keys[] = {"dtype", "torch_dtype"}; /* transformers 5 / older */
        for (int i = 0; i < 2; i++)
            if (cJSON_GetObjectItemCaseSensitive(root, keys[i])) {
                cJSON_ReplaceItemInObjectCaseSensitive(root, keys[i], cJSON_CreateString(dtype_torch_name(dt)));
                had = 1;
            }
        if (!had) cJSON_AddStringToObject(root, "dtype", dtype_torch_name(dt));
        /* An adapter with modules_to_save may have grown the vocabulary and untied lm_head. */
        cJSON_DeleteItemFromObjectCaseSensitive(root, "vocab_size");
        cJSON_DeleteItemFromObjectCaseSensitive(root, "tie_word_embeddings");
        cJSON_AddNumberToObject(root, "vocab_size", m->cfg.vocab_size);
        cJSON_AddBoolToObject(root, "tie_word_embeddings", m->cfg.tie_word_embeddings);
    } else {
        root = config_from_hparams(&m->cfg, dt);
    }
    tune_status st = write_json(path, root, err);
    cJSON_Delete(root);
    return st;
}

static tune_status copy_file(const char *src, const char *dst, tune_error *err)
{
    char *data;
    size_t len;
    tune_status st = tune_read_file(src, &data, &len, err);
    if (st == TUNE_OK) st = tune_write_file_atomic(dst, data, len, err);
    free(data);
    return st;
}

/* Files a Hugging Face tokenizer may consist of. */
static const char *const TOKENIZER_FILES[] = {
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
    "tokenizer.model", "vocab.json", "merges.txt", "added_tokens.json",
};
#define N_TOKENIZER_FILES (int)(sizeof TOKENIZER_FILES / sizeof TOKENIZER_FILES[0])
/* Everything this module may put into the folder (to clean a stale OUT.tmp). */
static const char *const OUTPUT_FILES[] = {"config.json", "model.safetensors", "generation_config.json"};

/* A GGUF base's vocabulary as tokenizer.json + tokenizer_config.json. */
static tune_status write_gguf_tokenizer(const char *gguf, const char *tmp, tune_error *err)
{
    char dst[4096];
    tune_tokenizer *tok;
    tune_status st = tune_tokenizer_load(gguf, &tok, err);
    if (st != TUNE_OK) return st;
    join(dst, sizeof dst, tmp, "tokenizer.json");
    st = tune_tokenizer_save_json(tok, dst, err);
    join(dst, sizeof dst, tmp, "tokenizer_config.json");
    if (st == TUNE_OK) st = tune_tokenizer_save_config(tok, dst, err);
    tune_tokenizer_free(tok);
    return st;
}

/* generation_config.json, and the tokenizer: the adapter's own when it has one (added tokens),
 * else the base folder's files or a GGUF base's vocabulary. */
static tune_status write_side_files(const tune_model *m, const char *base, int base_is_dir, const char *adapter_dir,
                                    const char *tmp, tune_strbuf *notes, tune_error *err)
{
    char src[4096], dst[4096];
    tune_status st = TUNE_OK;
    join(src, sizeof src, base, "generation_config.json");
    join(dst, sizeof dst, tmp, "generation_config.json");
    if (base_is_dir && tune_path_exists(src)) {
        st = copy_file(src, dst, err);
    } else {
        cJSON *g = cJSON_CreateObject();
        if (m->cfg.bos_token_id >= 0) cJSON_AddNumberToObject(g, "bos_token_id", m->cfg.bos_token_id);
        add_eos(g, &m->cfg);
        if (m->cfg.pad_token_id >= 0) cJSON_AddNumberToObject(g, "pad_token_id", m->cfg.pad_token_id);
        st = write_json(dst, g, err);
        cJSON_Delete(g);
    }
    const char *tok_dir = tune_lora_tokenizer_source(adapter_dir, base_is_dir ? base : NULL);
    int copied = 0;
    for (int i = 0; tok_dir && st == TUNE_OK && i < N_TOKENIZER_FILES; i++) {
        join(src, sizeof src, tok_dir, TOKENIZER_FILES[i]);
        join(dst, sizeof dst, tmp, TOKENIZER_FILES[i]);
        if (!tune_path_exists(src)) continue;
        st = copy_file(src, dst, err);
        copied++;
    }
    if (st == TUNE_OK && tok_dir && !copied)
        tune_strbuf_printf(notes, "no tokenizer files in %s: the merged folder has none\n", base);
    if (st == TUNE_OK && !tok_dir) st = write_gguf_tokenizer(base, tmp, err);
    return st;
}

/* Removes what an interrupted run may have left in tmp, then tmp itself. */
static tune_status remove_stale(const char *tmp, tune_error *err)
{
    char p[4096];
    for (size_t i = 0; i < sizeof OUTPUT_FILES / sizeof OUTPUT_FILES[0] + N_TOKENIZER_FILES; i++) {
        const char *name = i < 3 ? OUTPUT_FILES[i] : TOKENIZER_FILES[i - 3];
        char tmp_name[64];
        snprintf(tmp_name, sizeof tmp_name, "%s.tmp", name);
        if (join(p, sizeof p, tmp, name)) unlink(p);
        if (join(p, sizeof p, tmp, tmp_name)) unlink(p);
    }
    if (rmdir(tmp) != 0)
        return tune_fail_input(err, tmp, "a previous merge left this folder with other files in it; remove it");
    return TUNE_OK;
}

tune_status tune_merge_save_hf(const tune_model *model, const char *base_path, const char *adapter_dir,
                               const char *out_dir, tune_dtype dtype, tune_strbuf *notes, tune_error *err)
{
    if (dtype != TUNE_DT_BF16 && dtype != TUNE_DT_F32)
        return tune_fail_input(err, NULL, "merged weights are written as bf16 or f32");
    char tmp[4096], path[4096];
    if (strlen(out_dir) + strlen(base_path) > 3800) return tune_fail_input(err, out_dir, "path too long");
    snprintf(tmp, sizeof tmp, "%s.tmp", out_dir);
    if (tune_path_exists(out_dir)) return tune_fail_input(err, out_dir, "already exists; choose a new folder");
    if (tune_path_exists(tmp) && remove_stale(tmp, err) != TUNE_OK) return TUNE_ERR_INPUT;
    tune_status st = tune_mkdir_p(tmp, err);
    if (st != TUNE_OK) return st;
    const int base_is_dir = tune_is_dir(base_path);
    join(path, sizeof path, tmp, "model.safetensors");
    st = write_weights(model, path, dtype, err);
    join(path, sizeof path, tmp, "config.json");
    if (st == TUNE_OK) st = write_config(model, base_path, base_is_dir, path, dtype, err);
    if (st == TUNE_OK) st = write_side_files(model, base_path, base_is_dir, adapter_dir, tmp, notes, err);
    if (st == TUNE_OK && rename(tmp, out_dir) != 0)
        st = tune_fail_run(err, out_dir, "cannot rename %s to it: %s", tmp, strerror(errno));
    if (st != TUNE_OK) remove_stale(tmp, NULL);
    return st;
}
