/* LoRA adapters on the linear layers of a tune_model, in PEFT's layout:
 * A (r, in), B (out, r), y = W x + scaling · B A dropout(x). */
#ifndef TUNE_LORA_H
#define TUNE_LORA_H

#include <stddef.h>
#include <stdint.h>

#include "tune/error.h"
#include "tune/model.h"

/* PEFT modules_to_save that tune trains: full copies of these matrices. */
#define TUNE_SAVE_EMBED 1u   /* "embed_tokens" */
#define TUNE_SAVE_LM_HEAD 2u /* "lm_head" */

typedef struct tune_lora_config {
    int r;
    float alpha;
    float dropout;
    int use_rslora;        /* scaling alpha/sqrt(r) instead of alpha/r */
    unsigned target_mask;  /* bit (1u << tune_linear_kind) per targeted module */
    unsigned modules_to_save; /* TUNE_SAVE_* bits read from adapter_config.json (tune_lora_create
                                 ignores it: tune_lora_add_saved adds the copies) */
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
    unsigned saved;             /* TUNE_SAVE_* bits: full trainable copies (PEFT modules_to_save) */
    int vocab, hidden;          /* shape (vocab, hidden) of each saved copy */
    size_t embed_offset;        /* embed_tokens copy: (vocab, hidden) at params + embed_offset */
    size_t head_offset;         /* lm_head copy: (vocab, hidden) at params + head_offset */
    float *params;              /* one allocation: every A and B, then the saved copies */
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

/* Appends to lora's parameters trainable copies of the model's embedding
 * and/or lm_head (saved: TUNE_SAVE_* bits), as PEFT's modules_to_save does:
 * each copy starts equal to the model's matrix and the forward uses it in its
 * place. With tied word embeddings the two copies are separate, as PEFT makes
 * them by default (ensure_weight_tying false). Grads of the copies are zeroed.
 * Call once, after tune_lora_create and before creating a workspace. */
tune_status tune_lora_add_saved(tune_lora *lora, const tune_model *model, unsigned saved, tune_error *err);

/* ---- PEFT adapter files (src/model/lora_peft.c) ------------------------
 * A folder with adapter_model.safetensors (fp32 tensors
 * "base_model.model.<module path>.lora_A.weight" / ".lora_B.weight", sorted,
 * {"format":"pt"}) and adapter_config.json, as PEFT writes and loads it.
 * Saved modules (tune_lora_add_saved) are written as PEFT writes
 * modules_to_save: the trained copy under the module's own name,
 * "base_model.model.model.embed_tokens.weight" / "base_model.model.lm_head.weight"
 * ((vocab, hidden)), and "modules_to_save": ["embed_tokens", "lm_head"] in the
 * config. PEFT loads such an adapter onto a base model whose vocabulary was
 * first resized to the adapter's (resize_token_embeddings(len(tokenizer))
 * with the tokenizer.json written next to it). */

/* Writes dir/adapter_model.safetensors and dir/adapter_config.json, each
 * atomically; the same adapter gives the same bytes. base_model may be NULL
 * (written as null). */
tune_status tune_lora_save_peft(const tune_lora *lora, const char *dir, const char *base_model,
                                tune_error *err);

/* Reads dir/adapter_config.json (written by tune or by PEFT) into cfg (r,
 * lora_alpha, lora_dropout, use_rslora) and selected ((n_layers,
 * TUNE_N_LINEAR), target_modules resolved against the model by PEFT's rules),
 * ready for tune_lora_create; cfg->modules_to_save gets the saved modules
 * (only embed_tokens and lm_head are accepted). Options tune cannot honour
 * (DoRA, layers_to_transform, rank or alpha patterns, bias, ...) are errors
 * naming the key. */
tune_status tune_lora_read_peft_config(const char *dir, const tune_model_config *mcfg, tune_lora_config *cfg,
                                       unsigned char *selected, tune_error *err);

/* Loads dir/adapter_model.safetensors into lora, which was created for the
 * model mcfg: checks adapter_config.json against lora (r, alpha, rslora, the
 * adapted modules, the saved modules), then every tensor's name (with or without PEFT's
 * ".default" adapter name) and shape; a missing or unexpected tensor is an
 * error naming the file and tensor. F16/BF16 tensors are widened to fp32. */
tune_status tune_lora_load_peft(tune_lora *lora, const tune_model_config *mcfg, const char *dir,
                                tune_error *err);

/* The PEFT adapter in dir, ready for model: read_peft_config, create, and
 * load_peft in one. An adapter with modules_to_save first grows the model's
 * vocabulary to its copies' rows and unties a tied lm_head (PEFT's copies
 * replace embed_tokens and lm_head separately); its tokenizer is the one
 * written next to it. */
tune_status tune_lora_open_peft(tune_model *model, const char *dir, tune_lora **out, tune_error *err);
/* Where an adapter's tokenizer comes from: adapter_dir when it holds a
 * tokenizer.json (tune writes one next to adapters that added tokens, as
 * Axolotl saves the tokenizer with the adapter), else fallback (the base). */
const char *tune_lora_tokenizer_source(const char *adapter_dir, const char *fallback);

#endif
