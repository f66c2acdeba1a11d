/* LoRA adapters: module table, one allocation for parameters and one for
 * gradients, PEFT's default initialisation, and PEFT's target matching. */
#include "tune/lora.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <math.h>
#include <pcre2.h>
#include <stdlib.h>
#include <string.h>

#include "tune/rng.h"

#define PATH_MAX_LEN 96

static int ends_with_component(const char *path, const char *name)
{
    const size_t lp = strlen(path), ln = strlen(name);
    if (lp == ln) return !strcmp(path, name);
    return lp > ln && path[lp - ln - 1] == '.' && !strcmp(path + lp - ln, name);
}

tune_status tune_lora_select_names(const tune_model_config *cfg, const char *const *names, int n_names,
                                   unsigned char *selected, tune_error *err)
{
    const int L = cfg->num_hidden_layers;
    memset(selected, 0, (size_t)L * TUNE_N_LINEAR);
    if (n_names <= 0) return tune_fail_input(err, NULL, "lora target modules: the list is empty");
    for (int t = 0; t < n_names; t++) {
        int hits = 0;
        for (int l = 0; l < L; l++)
            for (int k = 0; k < TUNE_N_LINEAR; k++) {
                char path[PATH_MAX_LEN];
                tune_linear_module_path(l, (tune_linear_kind)k, path, sizeof path);
                if (ends_with_component(path, names[t])) {
                    selected[(size_t)l * TUNE_N_LINEAR + k] = 1;
                    hits++;
                }
            }
        if (!hits)
            return tune_fail_input(err, NULL,
                                   "lora target module '%s' matches no linear layer of the model "
                                   "(q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj)",
                                   names[t]);
    }
    return TUNE_OK;
}

tune_status tune_lora_select_regex(const tune_model_config *cfg, const char *pattern,
                                   unsigned char *selected, tune_error *err)
{
    const int L = cfg->num_hidden_layers;
    const int all = !strcmp(pattern, "all-linear");
    memset(selected, all ? 1 : 0, (size_t)L * TUNE_N_LINEAR);
    if (all) return TUNE_OK;
    int code;
    PCRE2_SIZE at;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, PCRE2_ANCHORED | PCRE2_ENDANCHORED,
                                   &code, &at, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(code, msg, sizeof msg);
        return tune_fail_input(err, NULL, "lora target modules: invalid regex '%s' at offset %zu: %s", pattern,
                               (size_t)at, (const char *)msg);
    }
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
    if (!md) {
        pcre2_code_free(re);
        return tune_fail_run(err, NULL, "out of memory matching lora target modules");
    }
    int hits = 0, failed = 0;
    for (int l = 0; l < L && !failed; l++)
        for (int k = 0; k < TUNE_N_LINEAR; k++) {
            char path[PATH_MAX_LEN];
            tune_linear_module_path(l, (tune_linear_kind)k, path, sizeof path);
            const int rc = pcre2_match(re, (PCRE2_SPTR)path, strlen(path), 0, 0, md, NULL);
            if (rc >= 0) {
                selected[(size_t)l * TUNE_N_LINEAR + k] = 1;
                hits++;
            } else if (rc != PCRE2_ERROR_NOMATCH) {
                failed = 1;
                break;
            }
        }
    pcre2_match_data_free(md);
    pcre2_code_free(re);
    if (failed) return tune_fail_input(err, NULL, "lora target modules: regex '%s' failed to run", pattern);
    if (!hits) return tune_fail_input(err, NULL, "lora target modules: regex '%s' matches no linear layer", pattern);
    return TUNE_OK;
}

tune_status tune_lora_create(const tune_model_config *mcfg, const tune_lora_config *cfg,
                             const unsigned char *selected, uint64_t seed, tune_lora **out, tune_error *err)
{
    *out = NULL;
    if (cfg->r < 1) return tune_fail_input(err, NULL, "lora_r must be at least 1 (got %d)", cfg->r);
    if (!isfinite(cfg->alpha)) return tune_fail_input(err, NULL, "lora_alpha must be a finite number");
    if (!(cfg->dropout >= 0.0f && cfg->dropout < 1.0f))
        return tune_fail_input(err, NULL, "lora_dropout must lie in [0, 1) (got %g)", cfg->dropout);
    const int L = mcfg->num_hidden_layers;
    if (L < 1) return tune_fail_input(err, NULL, "the model has no layers");
    tune_lora *lora = calloc(1, sizeof *lora);
    if (!lora) return tune_fail_run(err, NULL, "out of memory creating LoRA adapters");
    lora->cfg = *cfg;
    lora->cfg.target_mask = 0;
    lora->scaling = cfg->use_rslora ? cfg->alpha / sqrtf((float)cfg->r) : cfg->alpha / (float)cfg->r;
    lora->n_layers = L;
    lora->index = malloc((size_t)L * TUNE_N_LINEAR * sizeof *lora->index);
    lora->modules = malloc((size_t)L * TUNE_N_LINEAR * sizeof *lora->modules);
    if (!lora->index || !lora->modules) goto oom;
    /* Table: every A of a module, then its B, modules layer-major in kind order. */
    size_t off = 0;
    for (int l = 0; l < L; l++)
        for (int k = 0; k < TUNE_N_LINEAR; k++) {
            const size_t at = (size_t)l * TUNE_N_LINEAR + k;
            const int on = selected ? selected[at] != 0 : (cfg->target_mask >> k) & 1u;
            lora->index[at] = -1;
            if (!on) continue;
            tune_lora_module *m = &lora->modules[lora->n_modules];
            m->layer = l;
            m->kind = (tune_linear_kind)k;
            tune_linear_shape(mcfg, m->kind, &m->out, &m->in);
            m->a_offset = off;
            off += (size_t)cfg->r * m->in;
            m->b_offset = off;
            off += (size_t)m->out * cfg->r;
            lora->index[at] = lora->n_modules++;
            lora->cfg.target_mask |= 1u << k;
        }
    if (!lora->n_modules) {
        tune_lora_free(lora);
        return tune_fail_input(err, NULL, "no module selected for LoRA");
    }
    lora->n_params = off;
    lora->params = calloc(off, sizeof *lora->params);
    lora->grads = calloc(off, sizeof *lora->grads);
    if (!lora->params || !lora->grads) goto oom;
    uint64_t i = 0;
    for (int mi = 0; mi < lora->n_modules; mi++) {
        const tune_lora_module *m = &lora->modules[mi];
        const float bound = 1.0f / sqrtf((float)m->in); /* kaiming_uniform(a=√5) */
        float *A = lora->params + m->a_offset;
        for (size_t e = 0; e < (size_t)cfg->r * m->in; e++, i++)
            A[e] = (2.0f * tune_rng_uniform(seed, TUNE_STREAM_LORA_INIT, i) - 1.0f) * bound;
    }
    *out = lora;
    return TUNE_OK;
oom:
    tune_lora_free(lora);
    return tune_fail_run(err, NULL, "out of memory creating LoRA adapters");
}

void tune_lora_free(tune_lora *lora)
{
    if (!lora) return;
    free(lora->modules);
    free(lora->index);
    free(lora->params);
    free(lora->grads);
    free(lora);
}

tune_status tune_lora_add_saved(tune_lora *lora, const tune_model *model, unsigned saved, tune_error *err)
{
    if (lora->saved) return tune_fail_input(err, NULL, "the adapters already have their saved modules");
    if (!saved || saved & ~(TUNE_SAVE_EMBED | TUNE_SAVE_LM_HEAD))
        return tune_fail_input(err, NULL, "saved modules: only embed_tokens and lm_head can be trained in full");
    const size_t VC = (size_t)model->cfg.vocab_size * model->cfg.hidden_size;
    const int n_copies = (saved & TUNE_SAVE_EMBED ? 1 : 0) + (saved & TUNE_SAVE_LM_HEAD ? 1 : 0);
    const size_t n = lora->n_params + (size_t)n_copies * VC;
    float *params = realloc(lora->params, n * sizeof *params);
    if (!params) return tune_fail_run(err, NULL, "out of memory for the saved modules (%zu MB)", n * 4 >> 20);
    lora->params = params;
    float *grads = realloc(lora->grads, n * sizeof *grads);
    if (!grads) return tune_fail_run(err, NULL, "out of memory for the saved modules' gradients");
    lora->grads = grads;
    size_t off = lora->n_params;
    memset(grads + off, 0, (n - off) * sizeof *grads);
    if (saved & TUNE_SAVE_EMBED) {
        lora->embed_offset = off;
        tune_weight_dequantize(&model->embed, params + off);
        off += VC;
    }
    if (saved & TUNE_SAVE_LM_HEAD) {
        lora->head_offset = off;
        tune_weight_dequantize(&model->lm_head, params + off);
        off += VC;
    }
    lora->n_params = n;
    lora->saved = saved;
    lora->vocab = model->cfg.vocab_size;
    lora->hidden = model->cfg.hidden_size;
    return TUNE_OK;
}
