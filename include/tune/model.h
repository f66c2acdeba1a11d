/* LLaMA-family model: hyperparameters, weights in the Hugging Face layout
 * (linear W stored (out, in), y = x·Wᵀ), loading from a Hugging Face folder
 * (config.json + safetensors) or a GGUF file. Norms are fp32; the matrices
 * are fp32 or kept in blocks (tune/quant.h): a quantised GGUF's as the file
 * has them, or quantised at load for load_in_8bit / load_in_4bit. */
#ifndef TUNE_MODEL_H
#define TUNE_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "tune/error.h"
#include "tune/quant.h"

typedef enum { TUNE_ROPE_DEFAULT = 0, TUNE_ROPE_LLAMA3 = 1 } tune_rope_type;

#define TUNE_MAX_EOS 8

typedef struct tune_model_config {
    int vocab_size, hidden_size, intermediate_size, num_hidden_layers;
    int num_attention_heads, num_key_value_heads, head_dim;
    int max_position_embeddings;
    float rms_norm_eps;
    double rope_theta;
    tune_rope_type rope_type;
    double rope_factor, rope_low_freq_factor, rope_high_freq_factor;
    int rope_original_max_position_embeddings;
    int tie_word_embeddings;
    int bos_token_id;                 /* -1 when none */
    int eos_token_ids[TUNE_MAX_EOS];  /* config.json may give an int or a list */
    int n_eos_token_ids;
    int pad_token_id;                 /* -1 when none */
    char torch_dtype[16];             /* as declared by the source ("bfloat16", ...) */
} tune_model_config;

/* The seven linear layers of a decoder block, in PEFT's module names. */
typedef enum {
    TUNE_Q_PROJ, TUNE_K_PROJ, TUNE_V_PROJ, TUNE_O_PROJ,
    TUNE_GATE_PROJ, TUNE_UP_PROJ, TUNE_DOWN_PROJ,
    TUNE_N_LINEAR
} tune_linear_kind;

extern const char *const tune_linear_names[TUNE_N_LINEAR]; /* "q_proj", ... */

typedef struct tune_layer {
    float *attn_norm;              /* (C) */
    tune_weight w[TUNE_N_LINEAR];  /* (out, in), see tune_linear_shape */
    float *ffn_norm;               /* (C) */
} tune_layer;

typedef struct tune_model {
    tune_model_config cfg;
    tune_weight embed;   /* (V, C) */
    tune_layer *layers;  /* (L) */
    float *final_norm;   /* (C) */
    tune_weight lm_head; /* (V, C); the embedding's own storage when tied */
    float *storage;      /* one allocation holds every fp32 weight */
    size_t n_floats;
    uint8_t *blocks;     /* and one every weight kept in blocks */
    size_t n_block_bytes;
} tune_model;

/* How the matrices are stored in memory. */
typedef enum {
    TUNE_STORE_F32 = 0, /* everything dequantised to fp32 */
    TUNE_STORE_FILE,    /* a GGUF's quantised matrices stay in their blocks; the rest fp32 */
    TUNE_STORE_INT8,    /* as FILE, and full-precision linear weights become Q8_0 (load_in_8bit) */
    TUNE_STORE_NF4,     /* as FILE, and full-precision linear weights become NF4 (load_in_4bit) */
    TUNE_STORE_NF4_DQ,  /* as NF4, with the absmax values in 8 bits (bnb_4bit_use_double_quant) */
} tune_weight_storage;

/* "int8 (Q8_0) linear weights", ... for plans and logs. */
const char *tune_storage_name(tune_weight_storage storage);
/* The type a matrix gets under storage: file_type is its type in the source
 * (TUNE_Q_F32 for any full-precision safetensors dtype). Linear weights
 * whose rows are not whole blocks of the wanted type stay fp32. */
uint32_t tune_storage_type(tune_weight_storage storage, int is_linear, uint32_t file_type, int cols);

/* out/in features of a linear layer: q (H·hd, C), k/v (Hkv·hd, C),
 * o (C, H·hd), gate/up (I, C), down (C, I). */
void tune_linear_shape(const tune_model_config *cfg, tune_linear_kind kind, int *out, int *in);
/* Hugging Face module path of a linear layer: "model.layers.3.self_attn.q_proj". */
void tune_linear_module_path(int layer, tune_linear_kind kind, char *buf, size_t size);

/* Hyperparameters only (no weights): a Hugging Face folder's config.json,
 * or a GGUF file's header. */
tune_status tune_model_config_load(const char *path, tune_model_config *cfg, tune_error *err);
/* Every weight, converted to fp32 (from F32/F16/BF16 safetensors, or any
 * GGUF type tune reads, with q/k rows un-permuted). */
tune_status tune_model_load(const char *path, tune_model *model, tune_error *err);
/* The same with the matrices stored as storage says; each tensor is
 * converted on its own, so the fp32 model never exists whole. */
tune_status tune_model_load_stored(const char *path, tune_weight_storage storage, tune_model *model,
                                   tune_error *err);
/* Bytes of the model's weights in memory (fp32 and blocks). */
size_t tune_model_bytes(const tune_model *model);
/* The bytes tune_model_load_stored would hold, from the headers alone. */
tune_status tune_model_stored_bytes(const char *path, tune_weight_storage storage, size_t *bytes, tune_error *err);
void tune_model_free(tune_model *model);
/* Grows the vocabulary to new_vocab rows (added tokens): the embedding and an
 * untied lm_head get new rows equal to the mean of their old rows (a tied
 * matrix grows once; a matrix in blocks becomes fp32); cfg.vocab_size
 * follows. Shrinking is an input error. */
tune_status tune_model_resize_vocab(tune_model *model, int new_vocab, tune_error *err);
/* Gives a tied lm_head its own matrix (a copy of the embedding), so the two
 * can differ; cfg.tie_word_embeddings becomes 0. Untied models are left alone. */
tune_status tune_model_untie_embeddings(tune_model *model, tune_error *err);
/* The files a model is made of, sorted, as malloc'd paths (free each and the
 * array): the .gguf file itself, or a folder's config.json, safetensors
 * files and shard index. For the run manifest's checksums. */
tune_status tune_model_files(const char *path, char ***files, int *n_files, tune_error *err);

#endif
