/* GGUF files (llama.cpp / ggml): metadata, tensor infos, dequantisation of
 * tensors of every type tune/quant.h reads (F32, F16, BF16, Q4_0, Q4_1,
 * Q5_0, Q5_1, Q8_0, Q2_K … Q6_K) to fp32, and LLaMA models read from
 * them. Versions 2 and 3, little-endian. The file is mapped read-only;
 * strings and tensor data are pointers into the mapping, valid until
 * tune_gguf_close. Every count, length and offset is checked against the
 * file's size before it is used: a hostile or truncated file is refused
 * with an error naming the file and the key or tensor. */
#ifndef TUNE_GGUF_H
#define TUNE_GGUF_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "tune/error.h"
#include "tune/kernels.h"
#include "tune/model.h"
#include "tune/quant.h"

/* Metadata value types, numbered as in the file. */
typedef enum {
    TUNE_GGUF_U8 = 0, TUNE_GGUF_I8 = 1, TUNE_GGUF_U16 = 2, TUNE_GGUF_I16 = 3,
    TUNE_GGUF_U32 = 4, TUNE_GGUF_I32 = 5, TUNE_GGUF_F32 = 6, TUNE_GGUF_BOOL = 7,
    TUNE_GGUF_STRING = 8, TUNE_GGUF_ARRAY = 9, TUNE_GGUF_U64 = 10, TUNE_GGUF_I64 = 11,
    TUNE_GGUF_F64 = 12,
    TUNE_GGUF_N_VALUE_TYPES
} tune_gguf_value_type;

/* A string inside the mapping: not NUL-terminated. */
typedef struct tune_gguf_str {
    const char *ptr;
    uint64_t len;
} tune_gguf_str;

typedef struct tune_gguf_kv {
    tune_gguf_str key;
    tune_gguf_value_type type;
    /* Arrays: element type and count. Scalars: elem_type = type, count = 1. */
    tune_gguf_value_type elem_type;
    uint64_t count;
    const uint8_t *data;        /* the value (scalar) or the first element (array) */
    const tune_gguf_str *strs;  /* (count) for string arrays and strings, else NULL */
} tune_gguf_kv;

typedef struct tune_gguf_tensor {
    tune_gguf_str name;
    uint32_t n_dims;            /* 0..4 */
    uint64_t ne[4];             /* ne[0] is the contiguous dimension; unused dims are 1 */
    uint32_t type;              /* ggml type id (tune_qtype for the types tune reads) */
    uint64_t offset;            /* from the start of the data section */
    uint64_t n_elements, n_bytes;
    const uint8_t *data;        /* (n_bytes) inside the mapping */
} tune_gguf_tensor;

typedef struct tune_gguf {
    char *path;                 /* for error messages */
    const uint8_t *base;        /* (size) the whole file */
    size_t size;
    int mapped;                 /* base is an mmap we own */
    uint32_t version;
    uint32_t alignment;
    uint64_t data_offset;       /* start of the tensor data */
    tune_gguf_kv *kvs;          /* (n_kvs) in file order */
    uint64_t n_kvs;
    tune_gguf_tensor *tensors;  /* (n_tensors) in file order */
    uint64_t n_tensors;
    const tune_gguf_kv **kv_sorted;         /* (n_kvs) by key, for lookup */
    const tune_gguf_tensor **tensor_sorted; /* (n_tensors) by name */
} tune_gguf;

/* Maps and parses a file. On failure *g is left empty (safe to close). */
tune_status tune_gguf_open(const char *path, tune_gguf *g, tune_error *err);
/* Parses a buffer the caller keeps alive until tune_gguf_close; name is
 * used in error messages. */
tune_status tune_gguf_open_memory(const void *data, size_t size, const char *name,
                                  tune_gguf *g, tune_error *err);
void tune_gguf_close(tune_gguf *g);

/* "Q6_K", "F32", ...; "unknown" for an id ggml does not define. */
const char *tune_ggml_type_name(uint32_t type);
const char *tune_gguf_value_type_name(tune_gguf_value_type type);

/* Lookup by key / tensor name; NULL when absent. */
const tune_gguf_kv *tune_gguf_find(const tune_gguf *g, const char *key);
const tune_gguf_tensor *tune_gguf_find_tensor(const tune_gguf *g, const char *name);

/* Typed getters. A missing key or a value of the wrong type is
 * TUNE_ERR_INPUT with a message naming the file and the key. Integers
 * accept every integer type (a u64 above INT64_MAX is refused); floats
 * accept f32, f64 and integers. */
tune_status tune_gguf_get_str(const tune_gguf *g, const char *key, tune_gguf_str *out, tune_error *err);
tune_status tune_gguf_get_int(const tune_gguf *g, const char *key, int64_t *out, tune_error *err);
tune_status tune_gguf_get_float(const tune_gguf *g, const char *key, double *out, tune_error *err);
tune_status tune_gguf_get_bool(const tune_gguf *g, const char *key, int *out, tune_error *err);
/* Array of strings: *items points into g (no copy). */
tune_status tune_gguf_get_str_array(const tune_gguf *g, const char *key, const tune_gguf_str **items,
                                    uint64_t *n, tune_error *err);
/* Arrays of numbers, converted into a new allocation the caller frees. */
tune_status tune_gguf_get_int_array(const tune_gguf *g, const char *key, int64_t **items,
                                    uint64_t *n, tune_error *err);
tune_status tune_gguf_get_float_array(const tune_gguf *g, const char *key, float **items,
                                      uint64_t *n, tune_error *err);
/* 1 when s holds exactly the NUL-terminated text. */
static inline int tune_gguf_str_eq(tune_gguf_str s, const char *text)
{
    size_t n = strlen(text);
    return s.len == n && memcmp(s.ptr, text, n) == 0;
}

/* Dequantises a whole tensor into out (n_elements floats). Types
 * tune/quant.h cannot read (the IQ quants, Q8_K, ...) are refused, naming
 * the tensor and type. */
tune_status tune_gguf_tensor_to_f32(const tune_gguf *g, const tune_gguf_tensor *t, float *out,
                                    tune_error *err);

/* ---- LLaMA models -------------------------------------------------------
 * general.architecture must be "llama". Config from llama.* keys (vocab
 * size from llama.vocab_size or the length of tokenizer.ggml.tokens; bos,
 * eos and padding ids from tokenizer.ggml.*); tie_word_embeddings when the
 * file has no output.weight. Weights in the Hugging Face layout, q and k rows
 * un-permuted. */
tune_status tune_gguf_model_config(const char *path, tune_model_config *cfg, tune_error *err);
tune_status tune_gguf_model_load(const char *path, tune_weight_storage storage, tune_model *model,
                                  tune_error *err);
/* The bytes tune_gguf_read_model would keep the weights in, from the
 * tensor infos alone. */
tune_status tune_gguf_stored_bytes(const tune_gguf *g, tune_weight_storage storage, size_t *bytes, tune_error *err);
/* The same from an open file. */
tune_status tune_gguf_read_config(const tune_gguf *g, tune_model_config *cfg, tune_error *err);
tune_status tune_gguf_read_model(const tune_gguf *g, tune_weight_storage storage, tune_model *model,
                                 tune_error *err);

#endif
