/* Names and shapes of the seven linear layers of a decoder block. */
#include "tune/model.h"

#include <stdio.h>

const char *const tune_linear_names[TUNE_N_LINEAR] = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                                      "gate_proj", "up_proj", "down_proj"};

void tune_linear_shape(const tune_model_config *cfg, tune_linear_kind kind, int *out, int *in)
{
    const int C = cfg->hidden_size, q = cfg->num_attention_heads * cfg->head_dim,
              kv = cfg->num_key_value_heads * cfg->head_dim, I = cfg->intermediate_size;
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
