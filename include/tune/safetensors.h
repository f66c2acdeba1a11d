/* safetensors: reading (strictly validated, memory-mapped) and writing
 * (deterministic bytes, atomic), plus Hugging Face sharded folders
 * (model.safetensors.index.json). */
#ifndef TUNE_SAFETENSORS_H
#define TUNE_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "tune/error.h"

typedef enum {
    TUNE_DT_BOOL, TUNE_DT_U8, TUNE_DT_I8, TUNE_DT_I16, TUNE_DT_F16,
    TUNE_DT_BF16, TUNE_DT_I32, TUNE_DT_F32, TUNE_DT_F64, TUNE_DT_I64,
    TUNE_N_DTYPES
} tune_dtype;

/* "F32", "BF16", ... as written in the header. */
const char *tune_dtype_name(tune_dtype dt);
size_t tune_dtype_size(tune_dtype dt);

#define TUNE_ST_MAX_DIMS 8
#define TUNE_ST_MAX_HEADER 100000000u

typedef struct tune_st_file tune_st_file;

typedef struct tune_st_tensor {
    const char *name;
    tune_dtype dtype;
    int ndim;
    int64_t shape[TUNE_ST_MAX_DIMS];
    size_t numel;
    size_t nbytes;
    const uint8_t *data;       /* nbytes, little-endian, not necessarily aligned */
    const tune_st_file *file;  /* the file it lives in */
} tune_st_tensor;

struct tune_st_file {
    char *path;
    int n_tensors;
    tune_st_tensor *tensors;   /* sorted by name */
    int n_meta;
    char **meta_keys, **meta_values;  /* __metadata__, in header order */
    void *map;                 /* the whole file, mapped read-only (or the caller's buffer) */
    size_t map_size;
    int mapped;                /* map is an mmap this file owns */
};

/* Opens and validates a file: header size and JSON, dtypes, shapes,
 * offsets tiling the data buffer exactly, unique names. */
tune_status tune_st_open(const char *path, tune_st_file **out, tune_error *err);
/* The same over a buffer the caller keeps alive until tune_st_close; name
 * is used in error messages. */
tune_status tune_st_open_memory(const void *data, size_t size, const char *name, tune_st_file **out,
                                tune_error *err);
void tune_st_close(tune_st_file *f);
const tune_st_tensor *tune_st_find(const tune_st_file *f, const char *name);
/* A __metadata__ value, or NULL. */
const char *tune_st_metadata(const tune_st_file *f, const char *key);

/* Converts a F32/F16/BF16/F64 tensor to fp32: dst holds t->numel floats. */
tune_status tune_st_read_f32(const tune_st_tensor *t, float *dst, tune_error *err);
/* Converts an integer or BOOL tensor to int32 (I64 values must fit). */
tune_status tune_st_read_i32(const tune_st_tensor *t, int32_t *dst, tune_error *err);
/* Fails with "tensor 'x': expected shape (a, b), found (c)" unless t has this shape. */
tune_status tune_st_expect_shape(const tune_st_tensor *t, int ndim, const int64_t *shape,
                                 tune_error *err);

/* The tensors of a model folder: model.safetensors, or the shards named by
 * model.safetensors.index.json. A path to a .safetensors file also works. */
typedef struct tune_st_set {
    char *source;              /* the file or index that was opened */
    int n_files;
    tune_st_file **files;
    int n_entries;             /* sharded: weight_map, sorted by name */
    char **entry_names;
    const tune_st_tensor **entry_tensors;
} tune_st_set;

tune_status tune_st_set_open(const char *path, tune_st_set **out, tune_error *err);
void tune_st_set_close(tune_st_set *set);
const tune_st_tensor *tune_st_set_find(const tune_st_set *set, const char *name);

/* One tensor to write. Exactly one of data / f32 is set. */
typedef struct tune_st_entry {
    const char *name;
    tune_dtype dtype;          /* dtype stored in the file */
    int ndim;
    int64_t shape[TUNE_ST_MAX_DIMS];
    const void *data;          /* numel elements already in dtype, little-endian */
    const float *f32;          /* or fp32 values, converted to dtype (F32, F16, BF16) */
} tune_st_entry;

/* The bytes of a safetensors file with __metadata__ {"format":"pt"},
 * laid out as the reference writer does (by dtype size, then name) so the
 * same tensors give the same bytes as safetensors' save_file. */
tune_status tune_st_serialize(const tune_st_entry *tensors, int n, uint8_t **buf, size_t *len,
                              tune_error *err);
/* tune_st_serialize, then written atomically (tmp + fsync + rename). */
tune_status tune_st_write(const char *path, const tune_st_entry *tensors, int n, tune_error *err);

#endif
