/* LoRA adapters in PEFT's folder format: adapter_model.safetensors and
 * adapter_config.json. */
#include <cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tune/lora.h"
#include "tune/safetensors.h"
#include "tune/util.h"

#define PEFT_PREFIX "base_model.model."
#define NAME_MAX_LEN 256

/* modules_to_save as PEFT names and saves them: the trained copy of a
 * wrapped module is written under the module's own name. */
static const struct {
    unsigned bit;
    const char *module;  /* in modules_to_save */
    const char *tensor;  /* in adapter_model.safetensors */
} saved_modules[2] = {
    {TUNE_SAVE_EMBED, "embed_tokens", PEFT_PREFIX "model.embed_tokens.weight"},
    {TUNE_SAVE_LM_HEAD, "lm_head", PEFT_PREFIX "lm_head.weight"},
};

/* The trained copy of saved module i: (vocab, hidden). */
static float *saved_copy(const tune_lora *lora, int i)
{
    return lora->params + (saved_modules[i].bit == TUNE_SAVE_EMBED ? lora->embed_offset : lora->head_offset);
}

static tune_status join_path(char *buf, size_t size, const char *dir, const char *file, tune_error *err)
{
    if (snprintf(buf, size, "%s/%s", dir, file) >= (int)size)
        return tune_fail_input(err, dir, "path too long");
    return TUNE_OK;
}

/* "base_model.model.model.layers.3.self_attn.q_proj.lora_A[.default].weight" */
static void tensor_name(char *buf, size_t size, const tune_lora_module *m, char which, int with_default)
{
    char path[128]; /* "model.layers.N.self_attn.q_proj" */
    tune_linear_module_path(m->layer, m->kind, path, sizeof path);
    snprintf(buf, size, PEFT_PREFIX "%s.lora_%c%s.weight", path, which, with_default ? ".default" : "");
}

/* A float as Python writes the value the user gave: the shortest decimal
 * that reads back as the same float ("0.05", not "0.05000000074505806"),
 * integers as "8" when as_int, else "8.0". */
static void format_float(tune_strbuf *sb, float x, int as_int)
{
    if (x == truncf(x) && fabsf(x) < 1e9f) {
        tune_strbuf_printf(sb, as_int ? "%.0f" : "%.1f", (double)x);
        return;
    }
    char tmp[40];
    for (int digits = 6; digits <= 9; digits++) {
        snprintf(tmp, sizeof tmp, "%.*g", digits, (double)x);
        if ((float)strtod(tmp, NULL) == x) break;
    }
    tune_strbuf_puts(sb, tmp);
}

/* A JSON string literal (the names and paths written here need little
 * escaping, but a base model path may hold anything). */
static void json_string(tune_strbuf *sb, const char *s)
{
    cJSON *item = cJSON_CreateString(s);
    char *q = item ? cJSON_PrintUnformatted(item) : NULL;
    if (q) tune_strbuf_puts(sb, q);
    else sb->oom = 1;
    cJSON_free(q);
    cJSON_Delete(item);
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp(a, b);
}

/* adapter_config.json: the key set every PEFT version accepts, keys sorted
 * and indented as PEFT's json.dumps(indent=2, sort_keys=True) writes them. */
static tune_status config_json(const tune_lora *lora, const char *base_model, tune_strbuf *sb)
{
    tune_strbuf_puts(sb, "{\n  \"alpha_pattern\": {},\n  \"auto_mapping\": null,\n  \"base_model_name_or_path\": ");
    if (base_model) json_string(sb, base_model);
    else tune_strbuf_puts(sb, "null");
    tune_strbuf_puts(sb, ",\n  \"bias\": \"none\",\n  \"fan_in_fan_out\": false,\n  \"inference_mode\": true,\n"
                         "  \"init_lora_weights\": true,\n  \"layer_replication\": null,\n"
                         "  \"layers_pattern\": null,\n  \"layers_to_transform\": null,\n"
                         "  \"loftq_config\": {},\n  \"lora_alpha\": ");
    format_float(sb, lora->cfg.alpha, 1); /* PEFT users give alpha as an integer */
    tune_strbuf_puts(sb, ",\n  \"lora_dropout\": ");
    format_float(sb, lora->cfg.dropout, 0);
    tune_strbuf_puts(sb, ",\n  \"megatron_config\": null,\n  \"megatron_core\": \"megatron.core\",\n"
                         "  \"modules_to_save\": ");
    if (!lora->saved) tune_strbuf_puts(sb, "null");
    for (int i = 0, n = 0; i < 2; i++) /* sorted: embed_tokens, lm_head */
        if (lora->saved & saved_modules[i].bit)
            tune_strbuf_printf(sb, "%s\n    \"%s\"", n++ ? "," : "[", saved_modules[i].module);
    if (lora->saved) tune_strbuf_puts(sb, "\n  ]");
    tune_strbuf_printf(sb, ",\n  \"peft_type\": \"LORA\",\n  \"r\": %d,\n"
                           "  \"rank_pattern\": {},\n  \"revision\": null,\n  \"target_modules\": [",
                       lora->cfg.r);
    /* Short names when every layer adapts the same kinds (PEFT matches a
     * name against the end of each module path), else every module's full
     * path; sorted, so the bytes do not depend on the enum's order. */
    int uniform = 1;
    for (int l = 0; l < lora->n_layers; l++)
        for (int k = 0; k < TUNE_N_LINEAR; k++)
            if (((lora->cfg.target_mask >> k) & 1u) && lora->index[(size_t)l * TUNE_N_LINEAR + k] < 0) uniform = 0;
    const int cap = uniform ? TUNE_N_LINEAR : lora->n_modules;
    char(*names)[128] = calloc((size_t)cap + 1, sizeof *names);
    if (!names) return TUNE_ERR_RUN;
    int n = 0;
    if (uniform) {
        for (int k = 0; k < TUNE_N_LINEAR; k++)
            if (lora->cfg.target_mask & (1u << k)) snprintf(names[n++], sizeof *names, "%s", tune_linear_names[k]);
    } else {
        for (int i = 0; i < lora->n_modules; i++)
            tune_linear_module_path(lora->modules[i].layer, lora->modules[i].kind, names[n++], sizeof *names);
    }
    qsort(names, (size_t)n, sizeof *names, cmp_name);
    for (int i = 0; i < n; i++) tune_strbuf_printf(sb, "%s\n    \"%s\"", i ? "," : "", names[i]);
    free(names);
    tune_strbuf_printf(sb, "%s],\n  \"task_type\": \"CAUSAL_LM\",\n  \"use_dora\": false,\n  \"use_rslora\": %s\n}",
                       n ? "\n  " : "", lora->cfg.use_rslora ? "true" : "false");
    return sb->oom ? TUNE_ERR_RUN : TUNE_OK;
}

tune_status tune_lora_save_peft(const tune_lora *lora, const char *dir, const char *base_model,
                                tune_error *err)
{
    char path[4096];
    tune_status st = tune_mkdir_p(dir, err);
    if (st) return st;

    int n = 2 * lora->n_modules;
    tune_st_entry *entries = calloc((size_t)n + 3, sizeof *entries);
    char *names = malloc(((size_t)n + 1) * NAME_MAX_LEN);
    if (!entries || !names) {
        free(entries);
        free(names);
        return tune_fail_run(err, dir, "out of memory writing the adapter");
    }
    const int r = lora->cfg.r;
    for (int i = 0; i < lora->n_modules; i++) {
        const tune_lora_module *m = &lora->modules[i];
        for (int ab = 0; ab < 2; ab++) {
            tune_st_entry *e = &entries[2 * i + ab];
            char *name = names + (size_t)(2 * i + ab) * NAME_MAX_LEN;
            tensor_name(name, NAME_MAX_LEN, m, ab ? 'B' : 'A', 0);
            e->name = name;
            e->dtype = TUNE_DT_F32;
            e->ndim = 2;
            e->shape[0] = ab ? m->out : r;
            e->shape[1] = ab ? r : m->in;
            e->f32 = lora->params + (ab ? m->b_offset : m->a_offset);
        }
    }
    for (int i = 0; i < 2; i++)
        if (lora->saved & saved_modules[i].bit)
            entries[n++] = (tune_st_entry){.name = saved_modules[i].tensor, .dtype = TUNE_DT_F32, .ndim = 2,
                                           .shape = {lora->vocab, lora->hidden}, .f32 = saved_copy(lora, i)};
    st = join_path(path, sizeof path, dir, "adapter_model.safetensors", err);
    if (!st) st = tune_st_write(path, entries, n, err);
    free(entries);
    free(names);
    if (st) return st;

    tune_strbuf sb = {0};
    if (config_json(lora, base_model, &sb) != TUNE_OK) {
        tune_strbuf_free(&sb);
        return tune_fail_run(err, dir, "out of memory writing adapter_config.json");
    }
    st = join_path(path, sizeof path, dir, "adapter_config.json", err);
    if (!st) st = tune_write_file_atomic(path, sb.data, sb.len, err);
    tune_strbuf_free(&sb);
    return st;
}

/* ---- reading ----------------------------------------------------------- */

static int is_null_or_empty(const cJSON *x)
{
    return !x || cJSON_IsNull(x) || cJSON_IsFalse(x) ||
           ((cJSON_IsArray(x) || cJSON_IsObject(x)) && cJSON_GetArraySize(x) == 0) ||
           (cJSON_IsString(x) && x->valuestring[0] == '\0');
}

/* PEFT's target_modules: a list of names (each matching the end of module
 * paths) or one regex string, resolved against the model's layers. */
static tune_status select_targets(const char *path, const cJSON *targets, const tune_model_config *mcfg,
                                  unsigned char *selected, tune_error *err)
{
    tune_status st;
    if (cJSON_IsString(targets)) {
        st = tune_lora_select_regex(mcfg, targets->valuestring, selected, err);
    } else if (cJSON_IsArray(targets)) {
        const int n = cJSON_GetArraySize(targets);
        const char **names = calloc((size_t)n + 1, sizeof *names);
        if (!names) return tune_fail_run(err, path, "out of memory");
        int i = 0;
        const cJSON *t;
        cJSON_ArrayForEach(t, targets) names[i++] = cJSON_IsString(t) ? t->valuestring : NULL;
        for (i = 0; i < n && names[i]; i++) {}
        st = i < n ? tune_fail_input(err, path, "target_modules must list strings")
                   : tune_lora_select_names(mcfg, names, n, selected, err);
        free(names);
    } else {
        return tune_fail_input(err, path, "target_modules must be a list of module names or a regex string");
    }
    if (st && err && !err->file[0]) { /* name the file the targets came from */
        char msg[sizeof err->message];
        memcpy(msg, err->message, sizeof msg);
        tune_error_set(err, st, path, 0, 0, "%s", msg);
    }
    return st;
}

static tune_status parse_config(const char *path, const cJSON *root, const tune_model_config *mcfg,
                                tune_lora_config *cfg, unsigned char *selected, tune_error *err)
{
    if (!cJSON_IsObject(root)) return tune_fail_input(err, path, "not a JSON object");
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(root, "peft_type");
    if (!cJSON_IsString(type) || strcmp(type->valuestring, "LORA") != 0)
        return tune_fail_input(err, path, "peft_type must be \"LORA\"");
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(root, "r");
    if (!cJSON_IsNumber(r) || r->valuedouble != floor(r->valuedouble) || r->valuedouble < 1 ||
        r->valuedouble > 65536)
        return tune_fail_input(err, path, "r must be a positive integer");
    const cJSON *alpha = cJSON_GetObjectItemCaseSensitive(root, "lora_alpha");
    if (!cJSON_IsNumber(alpha) || !(alpha->valuedouble > 0) || !isfinite(alpha->valuedouble))
        return tune_fail_input(err, path, "lora_alpha must be a positive number");
    const cJSON *dropout = cJSON_GetObjectItemCaseSensitive(root, "lora_dropout");
    if (dropout && !cJSON_IsNull(dropout) &&
        (!cJSON_IsNumber(dropout) || !(dropout->valuedouble >= 0 && dropout->valuedouble < 1)))
        return tune_fail_input(err, path, "lora_dropout must be in [0, 1)");
    const cJSON *rslora = cJSON_GetObjectItemCaseSensitive(root, "use_rslora");
    if (rslora && !cJSON_IsBool(rslora)) return tune_fail_input(err, path, "use_rslora must be true or false");

    /* Options that change the adapter's maths or layout, which tune does not implement. */
    static const char *const unsupported[] = {
        "use_dora",          "layers_to_transform", "layers_pattern",
        "rank_pattern",      "alpha_pattern",     "layer_replication",   "fan_in_fan_out",
        "lora_bias",         "exclude_modules",   "target_parameters",   "trainable_token_indices",
        "use_qalora",        "alora_invocation_tokens"};
    for (size_t i = 0; i < sizeof unsupported / sizeof *unsupported; i++)
        if (!is_null_or_empty(cJSON_GetObjectItemCaseSensitive(root, unsupported[i])))
            return tune_fail_input(err, path, "%s is set; tune does not support it", unsupported[i]);
    const cJSON *bias = cJSON_GetObjectItemCaseSensitive(root, "bias");
    if (bias && !(cJSON_IsString(bias) && strcmp(bias->valuestring, "none") == 0))
        return tune_fail_input(err, path, "bias must be \"none\"; tune does not train biases");

    unsigned saved = 0;
    const cJSON *to_save = cJSON_GetObjectItemCaseSensitive(root, "modules_to_save"), *item;
    if (!is_null_or_empty(to_save)) {
        if (!cJSON_IsArray(to_save)) return tune_fail_input(err, path, "modules_to_save must be a list of names");
        cJSON_ArrayForEach(item, to_save)
        {
            int i = 0;
            while (i < 2 && !(cJSON_IsString(item) && strcmp(item->valuestring, saved_modules[i].module) == 0)) i++;
            if (i == 2)
                return tune_fail_input(err, path, "modules_to_save: tune trains only embed_tokens and lm_head in "
                                       "full");
            saved |= saved_modules[i].bit;
        }
    }
    tune_status st = select_targets(path, cJSON_GetObjectItemCaseSensitive(root, "target_modules"), mcfg,
                                    selected, err);
    if (st) return st;
    unsigned mask = 0;
    for (size_t i = 0; i < (size_t)mcfg->num_hidden_layers * TUNE_N_LINEAR; i++)
        if (selected[i]) mask |= 1u << (i % TUNE_N_LINEAR);

    memset(cfg, 0, sizeof *cfg);
    cfg->r = (int)r->valuedouble;
    cfg->alpha = (float)alpha->valuedouble;
    cfg->dropout = cJSON_IsNumber(dropout) ? (float)dropout->valuedouble : 0.0f;
    cfg->use_rslora = cJSON_IsTrue(rslora);
    cfg->target_mask = mask;
    cfg->modules_to_save = saved;
    return TUNE_OK;
}

tune_status tune_lora_read_peft_config(const char *dir, const tune_model_config *mcfg, tune_lora_config *cfg,
                                       unsigned char *selected, tune_error *err)
{
    char path[4096];
    tune_status st = join_path(path, sizeof path, dir, "adapter_config.json", err);
    if (st) return st;
    char *text;
    size_t len;
    st = tune_read_file(path, &text, &len, err);
    if (st) return st;
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    if (!root) return tune_fail_input(err, path, "not valid JSON");
    st = parse_config(path, root, mcfg, cfg, selected, err);
    cJSON_Delete(root);
    return st;
}

/* The tensor of module m, named with or without PEFT's ".default". */
static const tune_st_tensor *find_module_tensor(const tune_st_file *f, const tune_lora_module *m, char which,
                                                char *name, size_t size)
{
    char alt[NAME_MAX_LEN];
    tensor_name(alt, sizeof alt, m, which, 1);
    const tune_st_tensor *t = tune_st_find(f, alt);
    tensor_name(name, size, m, which, 0);
    return t ? t : tune_st_find(f, name);
}

static tune_status load_tensors(tune_lora *lora, const char *path, const tune_st_file *f, tune_error *err)
{
    unsigned char *used = calloc((size_t)f->n_tensors + 1, 1);
    if (!used) return tune_fail_run(err, path, "out of memory");
    tune_status st = TUNE_OK;
    for (int i = 0; i < lora->n_modules && !st; i++) {
        const tune_lora_module *m = &lora->modules[i];
        for (int ab = 0; ab < 2 && !st; ab++) {
            char name[NAME_MAX_LEN];
            const tune_st_tensor *t = find_module_tensor(f, m, ab ? 'B' : 'A', name, sizeof name);
            if (!t) {
                st = tune_fail_input(err, path, "tensor '%s' is missing", name);
                break;
            }
            const int64_t shape[2] = {ab ? m->out : lora->cfg.r, ab ? lora->cfg.r : m->in};
            st = tune_st_expect_shape(t, 2, shape, err);
            if (!st) st = tune_st_read_f32(t, lora->params + (ab ? m->b_offset : m->a_offset), err);
            used[t - f->tensors] = 1;
        }
    }
    for (int i = 0; i < 2 && !st; i++) {
        if (!(lora->saved & saved_modules[i].bit)) continue;
        const tune_st_tensor *t = tune_st_find(f, saved_modules[i].tensor);
        if (!t) {
            st = tune_fail_input(err, path, "tensor '%s' (modules_to_save) is missing", saved_modules[i].tensor);
            break;
        }
        const int64_t shape[2] = {lora->vocab, lora->hidden};
        st = tune_st_expect_shape(t, 2, shape, err);
        if (!st) st = tune_st_read_f32(t, saved_copy(lora, i), err);
        used[t - f->tensors] = 1;
        /* PEFT also writes the wrapper's inner tensors when the vocabulary was
         * resized: the copy again and the resized base matrix, unused here. */
        const char *extra[2] = {"modules_to_save", "original_module"};
        for (int e = 0; e < 2; e++) {
            char name[NAME_MAX_LEN];
            const size_t stem = strlen(saved_modules[i].tensor) - strlen("weight");
            snprintf(name, sizeof name, "%.*s%s.weight", (int)stem, saved_modules[i].tensor, extra[e]);
            const tune_st_tensor *x = tune_st_find(f, name);
            if (x) used[x - f->tensors] = 1;
        }
    }
    for (int i = 0; i < f->n_tensors && !st; i++)
        if (!used[i])
            st = tune_fail_input(err, path, "tensor '%s' is not a LoRA weight of the configured target modules",
                                 f->tensors[i].name);
    free(used);
    return st;
}

/* The adapter must adapt exactly the modules lora has. */
static tune_status check_selection(const tune_lora *lora, const unsigned char *selected, const char *path,
                                   tune_error *err)
{
    for (int l = 0; l < lora->n_layers; l++)
        for (int k = 0; k < TUNE_N_LINEAR; k++) {
            const size_t at = (size_t)l * TUNE_N_LINEAR + k;
            if (!selected[at] == (lora->index[at] < 0)) continue;
            char module[128];
            tune_linear_module_path(l, (tune_linear_kind)k, module, sizeof module);
            return tune_fail_input(err, path, "target_modules %s %s, the configuration %s", 
                                   selected[at] ? "adapt" : "do not adapt", module,
                                   selected[at] ? "does not" : "does");
        }
    return TUNE_OK;
}

tune_status tune_lora_load_peft(tune_lora *lora, const tune_model_config *mcfg, const char *dir, tune_error *err)
{
    char path[4096];
    tune_lora_config cfg;
    if (mcfg->num_hidden_layers != lora->n_layers)
        return tune_fail_input(err, dir, "the adapter object has %d layers, the model %d", lora->n_layers,
                               mcfg->num_hidden_layers);
    unsigned char *selected = malloc((size_t)lora->n_layers * TUNE_N_LINEAR);
    if (!selected) return tune_fail_run(err, dir, "out of memory");
    tune_status st = tune_lora_read_peft_config(dir, mcfg, &cfg, selected, err);
    if (!st) st = join_path(path, sizeof path, dir, "adapter_config.json", err);
    if (!st) st = check_selection(lora, selected, path, err);
    free(selected);
    if (st) return st;
    if (cfg.r != lora->cfg.r)
        return tune_fail_input(err, path, "r is %d, the configuration says %d", cfg.r, lora->cfg.r);
    if (cfg.alpha != lora->cfg.alpha)
        return tune_fail_input(err, path, "lora_alpha is %g, the configuration says %g", (double)cfg.alpha,
                               (double)lora->cfg.alpha);
    if (cfg.modules_to_save != lora->saved)
        return tune_fail_input(err, path, "modules_to_save is [%s%s], the configuration's is [%s%s]",
                               cfg.modules_to_save & TUNE_SAVE_EMBED ? " embed_tokens" : "",
                               cfg.modules_to_save & TUNE_SAVE_LM_HEAD ? " lm_head" : "",
                               lora->saved & TUNE_SAVE_EMBED ? " embed_tokens" : "",
                               lora->saved & TUNE_SAVE_LM_HEAD ? " lm_head" : "");
    if (cfg.use_rslora != lora->cfg.use_rslora)
        return tune_fail_input(err, path, "use_rslora is %s, the configuration says %s",
                               cfg.use_rslora ? "true" : "false", lora->cfg.use_rslora ? "true" : "false");

    st = join_path(path, sizeof path, dir, "adapter_model.safetensors", err);
    if (st) return st;
    if (!tune_path_exists(path)) {
        char bin[4096];
        if (!join_path(bin, sizeof bin, dir, "adapter_model.bin", err) && tune_path_exists(bin))
            return tune_fail_input(err, bin, "PyTorch pickle adapters are not supported; save the adapter "
                                             "with safe_serialization=True (adapter_model.safetensors)");
    }
    tune_st_file *f;
    st = tune_st_open(path, &f, err);
    if (st) return st;
    st = load_tensors(lora, path, f, err);
    tune_st_close(f);
    return st;
}

/* Rows of the saved copies in dir's adapter_model.safetensors (the vocabulary it was trained with). */
static tune_status saved_vocab(const char *dir, unsigned saved, int *vocab, tune_error *err)
{
    char path[4096];
    tune_st_file *f;
    tune_status st = join_path(path, sizeof path, dir, "adapter_model.safetensors", err);
    if (!st) st = tune_st_open(path, &f, err);
    if (st) return st;
    const tune_st_tensor *t = NULL;
    for (int i = 0; i < 2 && !t; i++)
        if (saved & saved_modules[i].bit) t = tune_st_find(f, saved_modules[i].tensor);
    if (!t || t->ndim != 2 || t->shape[0] <= 0 || t->shape[0] > INT32_MAX)
        st = tune_fail_input(err, path, "modules_to_save: the saved embed_tokens / lm_head tensor is missing or "
                                        "not (vocab, hidden)");
    else
        *vocab = (int)t->shape[0];
    tune_st_close(f);
    return st;
}

tune_status tune_lora_open_peft(tune_model *model, const char *dir, tune_lora **out, tune_error *err)
{
    const tune_model_config *mc = &model->cfg;
    *out = NULL;
    if (!tune_is_dir(dir)) return tune_fail_input(err, dir, "adapter folder does not exist");
    unsigned char *selected = calloc((size_t)mc->num_hidden_layers * TUNE_N_LINEAR, 1);
    if (!selected) return tune_fail_run(err, dir, "out of memory");
    tune_lora_config lc;
    int vocab = 0;
    tune_status st = tune_lora_read_peft_config(dir, mc, &lc, selected, err);
    if (!st && lc.modules_to_save) {
        st = saved_vocab(dir, lc.modules_to_save, &vocab, err);
        if (!st && vocab < mc->vocab_size)
            st = tune_fail_input(err, dir, "modules_to_save hold %d rows, fewer than the model's vocabulary of %d",
                                 vocab, mc->vocab_size);
        if (!st) st = tune_model_resize_vocab(model, vocab, err);
        if (!st) st = tune_model_untie_embeddings(model, err);
    }
    if (!st) st = tune_lora_create(mc, &lc, selected, 0, out, err);
    if (!st && lc.modules_to_save) st = tune_lora_add_saved(*out, model, lc.modules_to_save, err);
    if (!st) st = tune_lora_load_peft(*out, mc, dir, err);
    free(selected);
    if (st) {
        tune_lora_free(*out);
        *out = NULL;
    }
    return st;
}

const char *tune_lora_tokenizer_source(const char *adapter_dir, const char *fallback)
{
    char path[4096];
    tune_error ignore;
    if (adapter_dir && join_path(path, sizeof path, adapter_dir, "tokenizer.json", &ignore) == TUNE_OK &&
        tune_path_exists(path))
        return adapter_dir;
    return fallback;
}
