/* LoRA adapters on the linear layers of a tune_model, in PEFT's layout:
 * A (r, in), B (out, r), y = W x + scaling · B A dropout(x). */
#ifndef TUNE_LORA_H
#define TUNE_LORA_H

#include <stddef.h>
#include <stdint.h>

#include "tune/error.h"
#include "tune/model.h"

typedef struct tune_lora_config {
    int r;
    float alpha;
    float dropout;
    int use_rslora;        /* scaling alpha/sqrt(r) instead of alpha/r */
    unsigned target_mask;  /* bit (1u << tune_linear_kind) per targeted module */
} tune_lora_config;

typedef struct tune_lora_module {
    int layer;
    tune_linear_kind kind;
    int in, out;
    size_t a_offset;  /* A: (r, in) at params + a_offset */
    size_t b_offset;  /* B: (out, r) at params + b_offset */
} tune_lora_module;

typedef struct tune_lora {
    tune_lora_config cfg;
    float scaling;
    int n_layers;
    int n_modules;
    tune_lora_module *modules;  /* layer-major, kind order within a layer */
    int *index;                 /* (n_layers, TUNE_N_LINEAR): module index or -1 */
    float *params;              /* one allocation: every A and B */
    float *grads;               /* same layout as params */
    size_t n_params;
} tune_lora;

/* Selection of adapted modules: (n_layers, TUNE_N_LINEAR) bytes, 1 = adapted. */

/* PEFT's rule for a list of target names: a module is adapted when its path
 * ("model.layers.3.self_attn.q_proj") equals a name or ends with "." + name.
 * A name that matches no linear layer of the decoder is an input error. */
tune_status tune_lora_select_names(const tune_model_config *cfg, const char *const *names, int n_names,
                                   unsigned char *selected, tune_error *err);
/* PEFT's rule for a single string: a regex (PCRE2) that must match a whole
 * module path; "all-linear" selects every linear layer of the decoder. An
 * invalid pattern, or one that selects nothing, is an input error. */
tune_status tune_lora_select_regex(const tune_model_config *cfg, const char *pattern,
                                   unsigned char *selected, tune_error *err);

/* Adapters for the selected modules (selected NULL: the kinds of
 * cfg->target_mask in every layer), initialised as PEFT does by default:
 * A ~ U(−1/√in, 1/√in) from Philox (seed, TUNE_STREAM_LORA_INIT, i) with i
 * running over every A element in module order; B = 0; grads zeroed.
 * lora->cfg.target_mask becomes the set of kinds adapted somewhere. */
tune_status tune_lora_create(const tune_model_config *mcfg, const tune_lora_config *cfg,
                             const unsigned char *selected, uint64_t seed, tune_lora **out,
                             tune_error *err);
void tune_lora_free(tune_lora *lora);

#endif
