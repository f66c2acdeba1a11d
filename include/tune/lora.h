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

#endif
