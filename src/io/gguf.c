/* GGUF reader: header, metadata, tensor infos, dequantisation. Layout per
 * ggml's docs/gguf.md; every read is bounds-checked against the file size. */
#include "tune/gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the GGUF reader assumes a little-endian host"
#endif

#define MAX_DIMS 4
#define MAX_ARRAY_DEPTH 4     /* arrays of arrays deeper than this are refused */
#define MAX_KEY_LEN 65535     /* the spec's limit on key length */
#define MIN_KV_BYTES 13       /* empty key (8) + type (4) + 1-byte value */
#define MIN_TENSOR_BYTES 24   /* empty name (8) + n_dims (4) + type (4) + offset (8) */

/* The ggml types tune does not read (tune/quant.h has the others): names and
 * block shapes, so a file holding them still opens and its errors name them. */
static const struct { const char *name; uint32_t block, size; } ggml_types[] = {
    [9] = {"Q8_1", 32, 36},       [15] = {"Q8_K", 256, 292},  [16] = {"IQ2_XXS", 256, 66},
    [17] = {"IQ2_XS", 256, 74},   [18] = {"IQ3_XXS", 256, 98}, [19] = {"IQ1_S", 256, 50},
    [20] = {"IQ4_NL", 32, 18},    [21] = {"IQ3_S", 256, 110}, [22] = {"IQ2_S", 256, 82},
    [23] = {"IQ4_XS", 256, 136},  [24] = {"I8", 1, 1},        [25] = {"I16", 1, 2},
    [26] = {"I32", 1, 4},         [27] = {"I64", 1, 8},       [28] = {"F64", 1, 8},
    [29] = {"IQ1_M", 256, 56},    [34] = {"TQ1_0", 256, 54},  [35] = {"TQ2_0", 256, 66},
    [39] = {"MXFP4", 32, 17},
};
#define N_GGML_TYPES (sizeof ggml_types / sizeof ggml_types[0])

/* Bytes of one scalar metadata value; 0 for string and array. */
static const uint32_t value_size[TUNE_GGUF_N_VALUE_TYPES] = {
    [TUNE_GGUF_U8] = 1, [TUNE_GGUF_I8] = 1, [TUNE_GGUF_U16] = 2, [TUNE_GGUF_I16] = 2,
    [TUNE_GGUF_U32] = 4, [TUNE_GGUF_I32] = 4, [TUNE_GGUF_F32] = 4, [TUNE_GGUF_BOOL] = 1,
    [TUNE_GGUF_U64] = 8, [TUNE_GGUF_I64] = 8, [TUNE_GGUF_F64] = 8,
};

/* 1 when tune/quant.h reads the ggml type (NF4 and NF4_DQ are tune's own, never in a file). */
static int readable(uint32_t type)
{
    return !tune_qtype_is_own(type) && tune_qtype_name(type) != NULL;
}

const char *tune_ggml_type_name(uint32_t type)
{
    if (readable(type)) return tune_qtype_name(type);
    return type < N_GGML_TYPES && ggml_types[type].name ? ggml_types[type].name : "unknown";
}

const char *tune_gguf_value_type_name(tune_gguf_value_type type)
{
    static const char *const names[TUNE_GGUF_N_VALUE_TYPES] = {
        "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64",
    };
    return (unsigned)type < TUNE_GGUF_N_VALUE_TYPES ? names[type] : "unknown";
}

/* Names from the file go into messages shortened, so a hostile 1 GB name
 * cannot flood them. */
#define SHOWN(s) (int)((s).len > 120 ? 120 : (s).len), (s).ptr

typedef struct parser {
    tune_gguf *g;
    size_t pos;
    tune_error *err;
    char where[200]; /* "metadata key 'x'" / "tensor 'y'": the thing being read */
} parser;

static tune_status fail(parser *ps, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static tune_status fail(parser *ps, const char *fmt, ...)
{
    char msg[800];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (ps->where[0])
        return tune_fail_input(ps->err, ps->g->path, "%s: %s", ps->where, msg);
    return tune_fail_input(ps->err, ps->g->path, "%s", msg);
}

static size_t remaining(const parser *ps) { return ps->g->size - ps->pos; }

/* Consumes n bytes; NULL (after an error) when the file is shorter. */
static const uint8_t *take(parser *ps, uint64_t n, const char *what)
{
    if (n > remaining(ps)) {
        fail(ps, "file ends inside %s (needs %llu bytes at offset %zu, file has %zu)", what,
             (unsigned long long)n, ps->pos, ps->g->size);
        return NULL;
    }
    const uint8_t *p = ps->g->base + ps->pos;
    ps->pos += n;
    return p;
}

static int read_u32(parser *ps, uint32_t *v, const char *what)
{
    const uint8_t *p = take(ps, 4, what);
    if (p) memcpy(v, p, 4);
    return p != NULL;
}

static int read_u64(parser *ps, uint64_t *v, const char *what)
{
    const uint8_t *p = take(ps, 8, what);
    if (p) memcpy(v, p, 8);
    return p != NULL;
}

static int read_str(parser *ps, tune_gguf_str *s, const char *what)
{
    uint64_t len;
    if (!read_u64(ps, &len, what)) return 0;
    if (len > remaining(ps)) {
        fail(ps, "%s has length %llu, past the end of the file", what, (unsigned long long)len);
        return 0;
    }
    s->ptr = (const char *)take(ps, len, what);
    s->len = len;
    return 1;
}

/* Smallest encoding of one array element, for bounding counts. */
static uint64_t min_elem_bytes(tune_gguf_value_type t)
{
    if (t == TUNE_GGUF_STRING) return 8;
    if (t == TUNE_GGUF_ARRAY) return 12;
    return value_size[t];
}

static int valid_value_type(uint32_t t) { return t < TUNE_GGUF_N_VALUE_TYPES; }

/* Walks and checks count elements of type t;
 * strs, when not NULL, receives each string. depth counts array nesting. */
static int parse_elems(parser *ps, tune_gguf_value_type t, uint64_t count, tune_gguf_str *strs, int depth)
{
    if (count > remaining(ps) / min_elem_bytes(t)) {
        fail(ps, "array of %llu %s values does not fit in the rest of the file", (unsigned long long)count,
             tune_gguf_value_type_name(t));
        return 0;
    }
    if (t == TUNE_GGUF_STRING) {
        for (uint64_t i = 0; i < count; i++) {
            tune_gguf_str s;
            if (!read_str(ps, &s, "a string")) return 0;
            if (strs) strs[i] = s;
        }
        return 1;
    }
    if (t == TUNE_GGUF_ARRAY) {
        if (depth >= MAX_ARRAY_DEPTH) {
            fail(ps, "arrays nested deeper than %d levels", MAX_ARRAY_DEPTH);
            return 0;
        }
        for (uint64_t i = 0; i < count; i++) {
            uint32_t et;
            uint64_t n;
            if (!read_u32(ps, &et, "an array's element type") || !read_u64(ps, &n, "an array's length")) return 0;
            if (!valid_value_type(et)) {
                fail(ps, "unknown array element type %u", et);
                return 0;
            }
            if (!parse_elems(ps, (tune_gguf_value_type)et, n, NULL, depth + 1)) return 0;
        }
        return 1;
    }
    if (t == TUNE_GGUF_BOOL) {
        const uint8_t *p = take(ps, count, "a bool array");
        for (uint64_t i = 0; p && i < count; i++)
            if (p[i] > 1) {
                fail(ps, "bool value %u (must be 0 or 1)", p[i]);
                return 0;
            }
        return p != NULL;
    }
    return take(ps, count * value_size[t], "a value") != NULL;
}

static int parse_kv(parser *ps, tune_gguf_kv *kv, uint64_t index)
{
    snprintf(ps->where, sizeof ps->where, "metadata pair #%llu", (unsigned long long)index);
    if (!read_str(ps, &kv->key, "a metadata key")) return 0;
    if (kv->key.len > MAX_KEY_LEN) {
        fail(ps, "key longer than %d bytes", MAX_KEY_LEN);
        return 0;
    }
    snprintf(ps->where, sizeof ps->where, "metadata key '%.*s'", SHOWN(kv->key));
    uint32_t t;
    if (!read_u32(ps, &t, "a value type")) return 0;
    if (!valid_value_type(t)) {
        fail(ps, "unknown value type %u", t);
        return 0;
    }
    kv->type = kv->elem_type = (tune_gguf_value_type)t;
    kv->count = 1;
    if (t == TUNE_GGUF_ARRAY) {
        uint32_t et;
        if (!read_u32(ps, &et, "an array's element type") || !read_u64(ps, &kv->count, "an array's length"))
            return 0;
        if (!valid_value_type(et)) {
            fail(ps, "unknown array element type %u", et);
            return 0;
        }
        kv->elem_type = (tune_gguf_value_type)et;
    }
    kv->data = ps->g->base + ps->pos;
    if (kv->elem_type == TUNE_GGUF_STRING && kv->count <= remaining(ps) / 8) {
        tune_gguf_str *strs = malloc((kv->count ? kv->count : 1) * sizeof *strs);
        if (!strs) {
            tune_fail_run(ps->err, ps->g->path, "%s: out of memory", ps->where);
            return 0;
        }
        kv->strs = strs;
        if (t == TUNE_GGUF_STRING) return read_str(ps, strs, "a string");
        return parse_elems(ps, TUNE_GGUF_STRING, kv->count, strs, 1);
    }
    if (t == TUNE_GGUF_ARRAY) return parse_elems(ps, kv->elem_type, kv->count, NULL, 1);
    const uint8_t *p = take(ps, value_size[t], "a value");
    if (p && t == TUNE_GGUF_BOOL && p[0] > 1) {
        fail(ps, "bool value %u (must be 0 or 1)", p[0]);
        return 0;
    }
    return p != NULL;
}

static int cmp_str(tune_gguf_str a, tune_gguf_str b)
{
    int c = memcmp(a.ptr, b.ptr, a.len < b.len ? a.len : b.len);
    if (c) return c;
    return (a.len > b.len) - (a.len < b.len);
}

static int cmp_kv(const void *a, const void *b)
{
    return cmp_str((*(const tune_gguf_kv *const *)a)->key, (*(const tune_gguf_kv *const *)b)->key);
}

static int cmp_tensor(const void *a, const void *b)
{
    return cmp_str((*(const tune_gguf_tensor *const *)a)->name, (*(const tune_gguf_tensor *const *)b)->name);
}

static int parse_tensor(parser *ps, tune_gguf_tensor *t, uint64_t index)
{
    snprintf(ps->where, sizeof ps->where, "tensor #%llu", (unsigned long long)index);
    if (!read_str(ps, &t->name, "a tensor name")) return 0;
    snprintf(ps->where, sizeof ps->where, "tensor '%.*s'", SHOWN(t->name));
    if (!read_u32(ps, &t->n_dims, "a tensor's dimension count")) return 0;
    if (t->n_dims > MAX_DIMS) {
        fail(ps, "%u dimensions (at most %d)", t->n_dims, MAX_DIMS);
        return 0;
    }
    t->n_elements = 1;
    for (int i = 0; i < MAX_DIMS; i++) {
        t->ne[i] = 1;
        if ((uint32_t)i >= t->n_dims) continue;
        if (!read_u64(ps, &t->ne[i], "a tensor's shape")) return 0;
        if (t->ne[i] > INT64_MAX || __builtin_mul_overflow(t->n_elements, t->ne[i], &t->n_elements) ||
            t->n_elements > INT64_MAX) {
            fail(ps, "element count overflows");
            return 0;
        }
    }
    if (!read_u32(ps, &t->type, "a tensor's type") || !read_u64(ps, &t->offset, "a tensor's offset")) return 0;
    uint64_t block, size;
    if (readable(t->type)) {
        block = (uint64_t)tune_qtype_block_values(t->type);
        size = (uint64_t)tune_qtype_block_bytes(t->type);
    } else if (t->type < N_GGML_TYPES && ggml_types[t->type].name) {
        block = ggml_types[t->type].block;
        size = ggml_types[t->type].size;
    } else {
        fail(ps, "unknown ggml type id %u", t->type);
        return 0;
    }
    /* Every row (ne[0] values) is a whole number of blocks, so n_elements is too. */
    if (t->ne[0] % block) {
        fail(ps, "first dimension %llu is not a multiple of the %s block size %llu", (unsigned long long)t->ne[0],
             tune_ggml_type_name(t->type), (unsigned long long)block);
        return 0;
    }
    if (__builtin_mul_overflow(t->n_elements / block, size, &t->n_bytes)) {
        fail(ps, "byte size overflows");
        return 0;
    }
    if (t->offset % ps->g->alignment) {
        fail(ps, "data offset %llu is not a multiple of the alignment %u", (unsigned long long)t->offset,
             ps->g->alignment);
        return 0;
    }
    return 1;
}

static tune_status read_alignment(parser *ps)
{
    tune_gguf *g = ps->g;
    g->alignment = 32;
    const tune_gguf_kv *kv = tune_gguf_find(g, "general.alignment");
    if (!kv) return TUNE_OK;
    snprintf(ps->where, sizeof ps->where, "metadata key 'general.alignment'");
    if (kv->type != TUNE_GGUF_U32) return fail(ps, "must be a u32, not %s", tune_gguf_value_type_name(kv->type));
    memcpy(&g->alignment, kv->data, 4);
    if (g->alignment == 0 || (g->alignment & (g->alignment - 1)))
        return fail(ps, "%u is not a power of two", g->alignment);
    return TUNE_OK;
}

static tune_status parse(parser *ps)
{
    tune_gguf *g = ps->g;
    const uint8_t *magic = take(ps, 4, "the header");
    if (!magic) return TUNE_ERR_INPUT;
    if (memcmp(magic, "GGUF", 4) != 0) return fail(ps, "not a GGUF file (bad magic)");
    if (!read_u32(ps, &g->version, "the header")) return TUNE_ERR_INPUT;
    if (g->version != 2 && g->version != 3) {
        uint32_t swapped = __builtin_bswap32(g->version);
        if (swapped == 2 || swapped == 3) return fail(ps, "big-endian GGUF files are not supported");
        if (g->version == 1) return fail(ps, "GGUF version 1 is obsolete; tune reads versions 2 and 3");
        return fail(ps, "unsupported GGUF version %u; tune reads versions 2 and 3", g->version);
    }
    if (!read_u64(ps, &g->n_tensors, "the header") || !read_u64(ps, &g->n_kvs, "the header")) return TUNE_ERR_INPUT;
    if (g->n_kvs > remaining(ps) / MIN_KV_BYTES)
        return fail(ps, "claims %llu metadata pairs, more than its %zu bytes could hold",
                    (unsigned long long)g->n_kvs, g->size);
    if (g->n_tensors > remaining(ps) / MIN_TENSOR_BYTES)
        return fail(ps, "claims %llu tensors, more than its %zu bytes could hold",
                    (unsigned long long)g->n_tensors, g->size);

    g->kvs = calloc(g->n_kvs ? g->n_kvs : 1, sizeof *g->kvs);
    g->kv_sorted = malloc((g->n_kvs ? g->n_kvs : 1) * sizeof *g->kv_sorted);
    if (!g->kvs || !g->kv_sorted) return tune_fail_run(ps->err, g->path, "out of memory");
    for (uint64_t i = 0; i < g->n_kvs; i++) {
        if (!parse_kv(ps, &g->kvs[i], i)) return ps->err ? ps->err->code : TUNE_ERR_INPUT;
        g->kv_sorted[i] = &g->kvs[i];
    }
    ps->where[0] = '\0';
    qsort(g->kv_sorted, g->n_kvs, sizeof *g->kv_sorted, cmp_kv);
    for (uint64_t i = 1; i < g->n_kvs; i++)
        if (cmp_str(g->kv_sorted[i - 1]->key, g->kv_sorted[i]->key) == 0)
            return fail(ps, "metadata key '%.*s' appears twice", SHOWN(g->kv_sorted[i]->key));
    tune_status st = read_alignment(ps);
    if (st) return st;

    g->tensors = calloc(g->n_tensors ? g->n_tensors : 1, sizeof *g->tensors);
    g->tensor_sorted = malloc((g->n_tensors ? g->n_tensors : 1) * sizeof *g->tensor_sorted);
    if (!g->tensors || !g->tensor_sorted) return tune_fail_run(ps->err, g->path, "out of memory");
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        if (!parse_tensor(ps, &g->tensors[i], i)) return TUNE_ERR_INPUT;
        g->tensor_sorted[i] = &g->tensors[i];
    }
    ps->where[0] = '\0';
    qsort(g->tensor_sorted, g->n_tensors, sizeof *g->tensor_sorted, cmp_tensor);
    for (uint64_t i = 1; i < g->n_tensors; i++)
        if (cmp_str(g->tensor_sorted[i - 1]->name, g->tensor_sorted[i]->name) == 0)
            return fail(ps, "tensor '%.*s' appears twice", SHOWN(g->tensor_sorted[i]->name));

    /* The data section starts at the next multiple of the alignment. */
    uint64_t pad = (g->alignment - ps->pos % g->alignment) % g->alignment;
    g->data_offset = ps->pos + pad;
    if (g->n_tensors == 0) return TUNE_OK;
    if (g->data_offset > g->size) return fail(ps, "file ends before its tensor data");
    uint64_t data_size = g->size - g->data_offset;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        tune_gguf_tensor *t = &g->tensors[i];
        if (t->offset > data_size || t->n_bytes > data_size - t->offset)
            return fail(ps, "tensor '%.*s': data (%llu bytes at offset %llu) runs past the end of the file",
                        SHOWN(t->name), (unsigned long long)t->n_bytes, (unsigned long long)t->offset);
        t->data = g->base + g->data_offset + t->offset;
    }
    return TUNE_OK;
}

static tune_status open_parsed(tune_gguf *g, tune_error *err)
{
    parser ps = {.g = g, .pos = 0, .err = err, .where = ""};
    tune_status st = parse(&ps);
    if (st) tune_gguf_close(g);
    return st;
}

static tune_status set_path(tune_gguf *g, const char *path, tune_error *err)
{
    memset(g, 0, sizeof *g);
    g->path = strdup(path ? path : "(memory)");
    if (!g->path) return tune_fail_run(err, path, "out of memory");
    return TUNE_OK;
}

tune_status tune_gguf_open_memory(const void *data, size_t size, const char *name, tune_gguf *g, tune_error *err)
{
    tune_status st = set_path(g, name, err);
    if (st) return st;
    g->base = data;
    g->size = size;
    return open_parsed(g, err);
}

tune_status tune_gguf_open(const char *path, tune_gguf *g, tune_error *err)
{
    tune_status st = set_path(g, path, err);
    if (st) return st;
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        st = tune_fail_input(err, path, "cannot open: %s", strerror(errno));
        tune_gguf_close(g);
        return st;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        st = tune_fail_input(err, path, "not a regular file");
        tune_gguf_close(g);
        return st;
    }
    if (sb.st_size == 0) {
        close(fd);
        st = tune_fail_input(err, path, "empty file (not GGUF)");
        tune_gguf_close(g);
        return st;
    }
    void *map = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    int map_errno = errno;
    close(fd);
    if (map == MAP_FAILED) {
        st = tune_fail_run(err, path, "cannot map: %s", strerror(map_errno));
        tune_gguf_close(g);
        return st;
    }
    g->base = map;
    g->size = (size_t)sb.st_size;
    g->mapped = 1;
    return open_parsed(g, err);
}

void tune_gguf_close(tune_gguf *g)
{
    if (g->kvs)
        for (uint64_t i = 0; i < g->n_kvs; i++) free((void *)g->kvs[i].strs);
    free(g->kvs);
    free(g->kv_sorted);
    free(g->tensors);
    free(g->tensor_sorted);
    if (g->mapped) munmap((void *)g->base, g->size);
    free(g->path);
    memset(g, 0, sizeof *g);
}

/* ---- lookup --------------------------------------------------------------- */

static int cmp_name_kv(const void *key, const void *elem)
{
    tune_gguf_str k = {key, strlen(key)};
    return cmp_str(k, (*(const tune_gguf_kv *const *)elem)->key);
}

static int cmp_name_tensor(const void *key, const void *elem)
{
    tune_gguf_str k = {key, strlen(key)};
    return cmp_str(k, (*(const tune_gguf_tensor *const *)elem)->name);
}

const tune_gguf_kv *tune_gguf_find(const tune_gguf *g, const char *key)
{
    if (!g->n_kvs) return NULL;
    const tune_gguf_kv *const *hit = bsearch(key, g->kv_sorted, g->n_kvs, sizeof *g->kv_sorted, cmp_name_kv);
    return hit ? *hit : NULL;
}

const tune_gguf_tensor *tune_gguf_find_tensor(const tune_gguf *g, const char *name)
{
    if (!g->n_tensors) return NULL;
    const tune_gguf_tensor *const *hit =
        bsearch(name, g->tensor_sorted, g->n_tensors, sizeof *g->tensor_sorted, cmp_name_tensor);
    return hit ? *hit : NULL;
}

/* ---- typed getters -------------------------------------------------------- */

static int is_int_type(tune_gguf_value_type t)
{
    return t == TUNE_GGUF_U8 || t == TUNE_GGUF_I8 || t == TUNE_GGUF_U16 || t == TUNE_GGUF_I16 ||
           t == TUNE_GGUF_U32 || t == TUNE_GGUF_I32 || t == TUNE_GGUF_U64 || t == TUNE_GGUF_I64;
}

/* One integer element at p; 0 when a u64 does not fit in int64. */
static int load_int(tune_gguf_value_type t, const uint8_t *p, int64_t *out)
{
    switch (t) {
    case TUNE_GGUF_U8: *out = p[0]; return 1;
    case TUNE_GGUF_I8: *out = (int8_t)p[0]; return 1;
    case TUNE_GGUF_U16: { uint16_t v; memcpy(&v, p, 2); *out = v; return 1; }
    case TUNE_GGUF_I16: { int16_t v; memcpy(&v, p, 2); *out = v; return 1; }
    case TUNE_GGUF_U32: { uint32_t v; memcpy(&v, p, 4); *out = v; return 1; }
    case TUNE_GGUF_I32: { int32_t v; memcpy(&v, p, 4); *out = v; return 1; }
    case TUNE_GGUF_I64: { int64_t v; memcpy(&v, p, 8); *out = v; return 1; }
    case TUNE_GGUF_U64: {
        uint64_t v;
        memcpy(&v, p, 8);
        *out = (int64_t)v;
        return v <= INT64_MAX;
    }
    default: return 0;
    }
}

static int load_float(tune_gguf_value_type t, const uint8_t *p, double *out)
{
    if (t == TUNE_GGUF_F32) {
        float v;
        memcpy(&v, p, 4);
        *out = v;
        return 1;
    }
    if (t == TUNE_GGUF_F64) {
        memcpy(out, p, 8);
        return 1;
    }
    int64_t i;
    if (!load_int(t, p, &i)) return 0;
    *out = (double)i;
    return 1;
}

static int is_number_type(tune_gguf_value_type t)
{
    return is_int_type(t) || t == TUNE_GGUF_F32 || t == TUNE_GGUF_F64;
}

/* The kv for key with the given shape, or NULL after an error. */
static const tune_gguf_kv *lookup(const tune_gguf *g, const char *key, int want_array, const char *want,
                                  int (*elem_ok)(tune_gguf_value_type), tune_error *err)
{
    const tune_gguf_kv *kv = tune_gguf_find(g, key);
    if (!kv) {
        tune_fail_input(err, g->path, "metadata key '%s' is missing", key);
        return NULL;
    }
    if ((kv->type == TUNE_GGUF_ARRAY) != want_array || !elem_ok(kv->elem_type)) {
        if (kv->type == TUNE_GGUF_ARRAY)
            tune_fail_input(err, g->path, "metadata key '%s' is an array of %s, expected %s", key,
                            tune_gguf_value_type_name(kv->elem_type), want);
        else
            tune_fail_input(err, g->path, "metadata key '%s' is a %s, expected %s", key,
                            tune_gguf_value_type_name(kv->type), want);
        return NULL;
    }
    return kv;
}

static int is_string_type(tune_gguf_value_type t) { return t == TUNE_GGUF_STRING; }
static int is_bool_type(tune_gguf_value_type t) { return t == TUNE_GGUF_BOOL; }

tune_status tune_gguf_get_str(const tune_gguf *g, const char *key, tune_gguf_str *out, tune_error *err)
{
    const tune_gguf_kv *kv = lookup(g, key, 0, "a string", is_string_type, err);
    if (!kv) return TUNE_ERR_INPUT;
    *out = kv->strs[0];
    return TUNE_OK;
}

tune_status tune_gguf_get_int(const tune_gguf *g, const char *key, int64_t *out, tune_error *err)
{
    const tune_gguf_kv *kv = lookup(g, key, 0, "an integer", is_int_type, err);
    if (!kv) return TUNE_ERR_INPUT;
    if (!load_int(kv->type, kv->data, out))
        return tune_fail_input(err, g->path, "metadata key '%s': value out of range", key);
    return TUNE_OK;
}

tune_status tune_gguf_get_float(const tune_gguf *g, const char *key, double *out, tune_error *err)
{
    const tune_gguf_kv *kv = lookup(g, key, 0, "a number", is_number_type, err);
    if (!kv) return TUNE_ERR_INPUT;
    if (!load_float(kv->type, kv->data, out))
        return tune_fail_input(err, g->path, "metadata key '%s': value out of range", key);
    return TUNE_OK;
}

tune_status tune_gguf_get_bool(const tune_gguf *g, const char *key, int *out, tune_error *err)
{
    const tune_gguf_kv *kv = lookup(g, key, 0, "a bool", is_bool_type, err);
    if (!kv) return TUNE_ERR_INPUT;
    *out = kv->data[0];
    return TUNE_OK;
}

tune_status tune_gguf_get_str_array(const tune_gguf *g, const char *key, const tune_gguf_str **items,
                                    uint64_t *n, tune_error *err)
{
    const tune_gguf_kv *kv = lookup(g, key, 1, "an array of strings", is_string_type, err);
    if (!kv) return TUNE_ERR_INPUT;
    *items = kv->strs;
    *n = kv->count;
    return TUNE_OK;
}

tune_status tune_gguf_get_int_array(const tune_gguf *g, const char *key, int64_t **items, uint64_t *n,
                                    tune_error *err)
{
    const tune_gguf_kv *kv = lookup(g, key, 1, "an array of integers", is_int_type, err);
    if (!kv) return TUNE_ERR_INPUT;
    int64_t *v = malloc((kv->count ? kv->count : 1) * sizeof *v);
    if (!v) return tune_fail_run(err, g->path, "metadata key '%s': out of memory", key);
    uint32_t size = value_size[kv->elem_type];
    for (uint64_t i = 0; i < kv->count; i++)
        if (!load_int(kv->elem_type, kv->data + i * size, &v[i])) {
            free(v);
            return tune_fail_input(err, g->path, "metadata key '%s': element %llu out of range", key,
                                   (unsigned long long)i);
        }
    *items = v;
    *n = kv->count;
    return TUNE_OK;
}

tune_status tune_gguf_get_float_array(const tune_gguf *g, const char *key, float **items, uint64_t *n,
                                      tune_error *err)
{
    const tune_gguf_kv *kv = lookup(g, key, 1, "an array of numbers", is_number_type, err);
    if (!kv) return TUNE_ERR_INPUT;
    float *v = malloc((kv->count ? kv->count : 1) * sizeof *v);
    if (!v) return tune_fail_run(err, g->path, "metadata key '%s': out of memory", key);
    uint32_t size = value_size[kv->elem_type];
    for (uint64_t i = 0; i < kv->count; i++) {
        double d;
        if (!load_float(kv->elem_type, kv->data + i * size, &d)) {
            free(v);
            return tune_fail_input(err, g->path, "metadata key '%s': element %llu out of range", key,
                                   (unsigned long long)i);
        }
        v[i] = (float)d;
    }
    *items = v;
    *n = kv->count;
    return TUNE_OK;
}

/* ---- dequantisation ------------------------------------------------------- */

/* Tensors smaller than this are not worth waking the thread team for. */
#define PARALLEL_MIN (1 << 16)

tune_status tune_gguf_tensor_to_f32(const tune_gguf *g, const tune_gguf_tensor *t, float *out, tune_error *err)
{
    if (!readable(t->type))
        return tune_fail_input(err, g->path,
                               "tensor '%.*s' has type %s, which tune cannot read yet "
                               "(it reads F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, "
                               "Q5_K and Q6_K)",
                               SHOWN(t->name), tune_ggml_type_name(t->type));
    const uint8_t *src = t->data; /* (rows, row_bytes) */
    const int64_t cols = (int64_t)t->ne[0];
    const int64_t rows = cols ? (int64_t)(t->n_elements / t->ne[0]) : 0;
    if (cols > INT_MAX)
        return tune_fail_input(err, g->path, "tensor '%.*s': rows of %lld values are too long", SHOWN(t->name),
                               (long long)cols);
    const size_t row_bytes = tune_qtype_row_bytes(t->type, (int)cols);
    #pragma omp parallel for schedule(static) if ((int64_t)t->n_elements >= PARALLEL_MIN)
    for (int64_t r = 0; r < rows; r++)
        tune_dequant_row(t->type, src + (size_t)r * row_bytes, out + (size_t)r * (size_t)cols, (int)cols);
    return TUNE_OK;
}
