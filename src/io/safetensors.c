/* safetensors reader and writer. The reader trusts nothing in the file: every
 * size, offset and name is checked before a byte of tensor data is touched. */
#include "tune/safetensors.h"

#include <cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tune/kernels.h"
#include "tune/util.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors data is little-endian; this reader assumes a little-endian host"
#endif

/* Indexed by tune_dtype. The enum order is the reference writer's dtype
 * order, which decides where tensors go in the data buffer. */
static const struct { const char *name; size_t size; } DTYPES[TUNE_N_DTYPES] = {
    [TUNE_DT_BOOL] = {"BOOL", 1}, [TUNE_DT_U8] = {"U8", 1},    [TUNE_DT_I8] = {"I8", 1},
    [TUNE_DT_I16] = {"I16", 2},   [TUNE_DT_F16] = {"F16", 2},  [TUNE_DT_BF16] = {"BF16", 2},
    [TUNE_DT_I32] = {"I32", 4},   [TUNE_DT_F32] = {"F32", 4},  [TUNE_DT_F64] = {"F64", 8},
    [TUNE_DT_I64] = {"I64", 8},
};

const char *tune_dtype_name(tune_dtype dt)
{
    return (unsigned)dt < TUNE_N_DTYPES ? DTYPES[dt].name : "?";
}

size_t tune_dtype_size(tune_dtype dt)
{
    return (unsigned)dt < TUNE_N_DTYPES ? DTYPES[dt].size : 0;
}

static int dtype_from_name(const char *s, tune_dtype *out)
{
    for (int i = 0; i < TUNE_N_DTYPES; i++)
        if (strcmp(s, DTYPES[i].name) == 0) { *out = (tune_dtype)i; return 1; }
    return 0;
}

/* Element count of a shape; 0 on overflow of count × element size. */
static int shape_numel(const int64_t *shape, int ndim, size_t elem, size_t *numel)
{
    size_t n = 1, bytes;
    for (int i = 0; i < ndim; i++)
        if (__builtin_mul_overflow(n, (size_t)shape[i], &n)) return 0;
    if (__builtin_mul_overflow(n, elem, &bytes)) return 0;
    *numel = n;
    return 1;
}

static void shape_str(const int64_t *shape, int ndim, char *buf, size_t size)
{
    size_t used = (size_t)snprintf(buf, size, "(");
    for (int i = 0; i < ndim && used < size; i++)
        used += (size_t)snprintf(buf + used, size - used, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (used < size) snprintf(buf + used, size - used, ")");
}

/* ------------------------------------------------------------------ reader */

/* A JSON number that is a whole number in [0, 2^53]: exact as a double. */
static int json_count(const cJSON *v, uint64_t *out)
{
    if (!cJSON_IsNumber(v)) return 0;
    double d = v->valuedouble;
    if (!(d >= 0.0 && d <= 9007199254740992.0) || (double)(uint64_t)d != d) return 0;
    *out = (uint64_t)d;
    return 1;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(((const tune_st_tensor *)a)->name, ((const tune_st_tensor *)b)->name);
}

typedef struct { size_t begin, end; int index; } span;

static int by_offset(const void *a, const void *b)
{
    const span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return x->index - y->index;
}

void tune_st_close(tune_st_file *f)
{
    if (!f) return;
    for (int i = 0; i < f->n_tensors; i++) free((char *)f->tensors[i].name);
    free(f->tensors);
    for (int i = 0; i < f->n_meta; i++) { free(f->meta_keys[i]); free(f->meta_values[i]); }
    free(f->meta_keys);
    free(f->meta_values);
    if (f->mapped) munmap(f->map, f->map_size);
    free(f->path);
    free(f);
}

static tune_status map_file(tune_st_file *f, tune_error *err)
{
    int fd = open(f->path, O_RDONLY);
    if (fd < 0) return tune_fail_input(err, f->path, "cannot open: %s", strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return tune_fail_input(err, f->path, "cannot stat: %s", strerror(e));
    }
    if (!S_ISREG(st.st_mode)) { close(fd); return tune_fail_input(err, f->path, "not a regular file"); }
    if (st.st_size < 8) { /* parse_header says so; an empty file cannot be mapped */
        close(fd);
        f->map_size = (size_t)st.st_size;
        return TUNE_OK;
    }
    void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (map == MAP_FAILED) return tune_fail_run(err, f->path, "cannot map: %s", strerror(e));
    f->map = map;
    f->map_size = (size_t)st.st_size;
    f->mapped = 1;
    return TUNE_OK;
}

static tune_status parse_metadata(tune_st_file *f, const cJSON *meta, tune_error *err)
{
    if (!cJSON_IsObject(meta))
        return tune_fail_input(err, f->path, "__metadata__ must be an object of strings");
    int n = cJSON_GetArraySize(meta);
    f->meta_keys = calloc((size_t)n + 1, sizeof *f->meta_keys);
    f->meta_values = calloc((size_t)n + 1, sizeof *f->meta_values);
    if (!f->meta_keys || !f->meta_values) return tune_fail_run(err, f->path, "out of memory");
    for (const cJSON *kv = meta->child; kv; kv = kv->next) {
        if (!cJSON_IsString(kv))
            return tune_fail_input(err, f->path, "__metadata__ '%s' must be a string", kv->string);
        f->meta_keys[f->n_meta] = strdup(kv->string);
        f->meta_values[f->n_meta] = strdup(kv->valuestring);
        f->n_meta++;
        if (!f->meta_keys[f->n_meta - 1] || !f->meta_values[f->n_meta - 1])
            return tune_fail_run(err, f->path, "out of memory");
    }
    return TUNE_OK;
}

/* One header entry → t (name already set); begin/end relative to the buffer. */
static tune_status parse_entry(const tune_st_file *f, const cJSON *info, tune_st_tensor *t,
                               span *sp, tune_error *err)
{
    const char *name = t->name;
    if (!cJSON_IsObject(info))
        return tune_fail_input(err, f->path, "tensor '%s': entry is not an object", name);
    const cJSON *dtype = cJSON_GetObjectItemCaseSensitive(info, "dtype");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(info, "shape");
    const cJSON *offs = cJSON_GetObjectItemCaseSensitive(info, "data_offsets");
    if (!cJSON_IsString(dtype))
        return tune_fail_input(err, f->path, "tensor '%s': missing \"dtype\"", name);
    if (!dtype_from_name(dtype->valuestring, &t->dtype))
        return tune_fail_input(err, f->path, "tensor '%s': unknown dtype '%s'", name, dtype->valuestring);
    if (!cJSON_IsArray(shape))
        return tune_fail_input(err, f->path, "tensor '%s': \"shape\" must be an array", name);
    int ndim = cJSON_GetArraySize(shape);
    if (ndim > TUNE_ST_MAX_DIMS)
        return tune_fail_input(err, f->path, "tensor '%s': %d dimensions, at most %d supported",
                               name, ndim, TUNE_ST_MAX_DIMS);
    t->ndim = 0;
    for (const cJSON *d = shape->child; d; d = d->next) {
        uint64_t v;
        if (!json_count(d, &v) || v > INT64_MAX)
            return tune_fail_input(err, f->path, "tensor '%s': shape entries must be non-negative integers", name);
        t->shape[t->ndim++] = (int64_t)v;
    }
    size_t elem = tune_dtype_size(t->dtype);
    if (!shape_numel(t->shape, t->ndim, elem, &t->numel))
        return tune_fail_input(err, f->path, "tensor '%s': element count overflows", name);
    t->nbytes = t->numel * elem;
    uint64_t begin, end;
    if (!cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2 ||
        !json_count(cJSON_GetArrayItem(offs, 0), &begin) || !json_count(cJSON_GetArrayItem(offs, 1), &end))
        return tune_fail_input(err, f->path, "tensor '%s': \"data_offsets\" must be two non-negative integers", name);
    if (end < begin)
        return tune_fail_input(err, f->path, "tensor '%s': data_offsets end %llu before begin %llu",
                               name, (unsigned long long)end, (unsigned long long)begin);
    if (end - begin != t->nbytes) {
        char s[160];
        shape_str(t->shape, t->ndim, s, sizeof s);
        return tune_fail_input(err, f->path, "tensor '%s': %s %s needs %zu bytes, data_offsets give %llu",
                               name, tune_dtype_name(t->dtype), s, t->nbytes,
                               (unsigned long long)(end - begin));
    }
    sp->begin = (size_t)begin;
    sp->end = (size_t)end;
    return TUNE_OK;
}

/* Tensors must tile [0, buffer_size) exactly: no overlap, gap or tail. */
static tune_status check_tiling(const tune_st_file *f, span *spans, int n, size_t buffer_size,
                                tune_error *err)
{
    qsort(spans, (size_t)n, sizeof *spans, by_offset);
    size_t pos = 0;
    for (int i = 0; i < n; i++) {
        const char *name = f->tensors[spans[i].index].name;
        if (spans[i].end > buffer_size)
            return tune_fail_input(err, f->path, "tensor '%s': data_offsets [%zu, %zu) run past the end of the file (data buffer is %zu bytes)",
                                   name, spans[i].begin, spans[i].end, buffer_size);
        if (spans[i].begin < pos)
            return tune_fail_input(err, f->path, "tensor '%s': data_offsets [%zu, %zu) overlap tensor '%s'",
                                   name, spans[i].begin, spans[i].end, f->tensors[spans[i - 1].index].name);
        if (spans[i].begin > pos)
            return tune_fail_input(err, f->path, "tensor '%s': data_offsets start at %zu, leaving a gap after byte %zu",
                                   name, spans[i].begin, pos);
        pos = spans[i].end;
    }
    if (pos != buffer_size) {
        if (n == 0) return tune_fail_input(err, f->path, "%zu bytes of data but no tensors", buffer_size);
        return tune_fail_input(err, f->path, "%zu trailing bytes after the last tensor '%s'",
                               buffer_size - pos, f->tensors[spans[n - 1].index].name);
    }
    return TUNE_OK;
}

static tune_status parse_header(tune_st_file *f, tune_error *err)
{
    const uint8_t *base = f->map;
    if (f->map_size < 8)
        return tune_fail_input(err, f->path, "%zu bytes: too short for a safetensors header", f->map_size);
    uint64_t hlen;
    memcpy(&hlen, base, 8);
    if (hlen > TUNE_ST_MAX_HEADER)
        return tune_fail_input(err, f->path, "header length %llu exceeds the limit of %u bytes",
                               (unsigned long long)hlen, TUNE_ST_MAX_HEADER);
    if (hlen > f->map_size - 8)
        return tune_fail_input(err, f->path, "header length %llu runs past the end of the file (%zu bytes)",
                               (unsigned long long)hlen, f->map_size);
    /* cJSON may look one byte past a string that ends in a backslash:
     * parse a NUL-terminated copy, never the mapping itself. */
    char *json = malloc((size_t)hlen + 1);
    if (!json) return tune_fail_run(err, f->path, "out of memory for a %llu-byte header", (unsigned long long)hlen);
    memcpy(json, base + 8, (size_t)hlen);
    json[hlen] = '\0';
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(json, (size_t)hlen, &end, 0);
    if (!root) { free(json); return tune_fail_input(err, f->path, "header is not valid JSON"); }
    tune_status st = TUNE_OK;
    for (const char *p = end; p < json + hlen; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            st = tune_fail_input(err, f->path, "unexpected bytes after the header JSON");
            goto done;
        }
    if (!cJSON_IsObject(root)) { st = tune_fail_input(err, f->path, "header is not a JSON object"); goto done; }

    int n = 0;
    for (const cJSON *it = root->child; it; it = it->next)
        if (strcmp(it->string, "__metadata__") != 0) n++;
    f->tensors = calloc((size_t)n + 1, sizeof *f->tensors);
    span *spans = calloc((size_t)n + 1, sizeof *spans);
    if (!f->tensors || !spans) { free(spans); st = tune_fail_run(err, f->path, "out of memory"); goto done; }
    const uint8_t *buffer = base + 8 + hlen;
    for (const cJSON *it = root->child; it && st == TUNE_OK; it = it->next) {
        if (strcmp(it->string, "__metadata__") == 0) {
            if (f->meta_keys) st = tune_fail_input(err, f->path, "__metadata__ appears twice");
            else st = parse_metadata(f, it, err);
            continue;
        }
        tune_st_tensor *t = &f->tensors[f->n_tensors];
        t->name = strdup(it->string);
        if (!t->name) { st = tune_fail_run(err, f->path, "out of memory"); break; }
        f->n_tensors++;
        t->file = f;
        spans[f->n_tensors - 1].index = f->n_tensors - 1;
        st = parse_entry(f, it, t, &spans[f->n_tensors - 1], err);
    }
    if (st == TUNE_OK) st = check_tiling(f, spans, f->n_tensors, f->map_size - 8 - (size_t)hlen, err);
    for (int i = 0; i < f->n_tensors && st == TUNE_OK; i++) /* only now are the offsets known to be inside */
        f->tensors[spans[i].index].data = buffer + spans[i].begin;
    free(spans);
    if (st != TUNE_OK) goto done;
    qsort(f->tensors, (size_t)f->n_tensors, sizeof *f->tensors, by_name);
    for (int i = 1; i < f->n_tensors; i++)
        if (strcmp(f->tensors[i - 1].name, f->tensors[i].name) == 0) {
            st = tune_fail_input(err, f->path, "tensor '%s' appears twice in the header", f->tensors[i].name);
            goto done;
        }
done:
    cJSON_Delete(root);
    free(json);
    return st;
}

/* Opens path's mapping, or (path NULL) the buffer data[0, size) named name. */
static tune_status open_file(const char *path, const void *data, size_t size, const char *name,
                             tune_st_file **out, tune_error *err)
{
    *out = NULL;
    tune_st_file *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(path ? path : name))) { free(f); return tune_fail_run(err, name, "out of memory"); }
    tune_status st = TUNE_OK;
    if (path) {
        st = map_file(f, err);
    } else {
        f->map = (void *)data; /* never written: the header is parsed from a copy */
        f->map_size = size;
    }
    if (st == TUNE_OK) st = parse_header(f, err);
    if (st != TUNE_OK) { tune_st_close(f); return st; }
    *out = f;
    return TUNE_OK;
}

tune_status tune_st_open(const char *path, tune_st_file **out, tune_error *err)
{
    return open_file(path, NULL, 0, path, out, err);
}

tune_status tune_st_open_memory(const void *data, size_t size, const char *name, tune_st_file **out,
                                tune_error *err)
{
    return open_file(NULL, data, size, name, out, err);
}

const tune_st_tensor *tune_st_find(const tune_st_file *f, const char *name)
{
    tune_st_tensor key = {.name = name};
    return bsearch(&key, f->tensors, (size_t)f->n_tensors, sizeof key, by_name);
}

const char *tune_st_metadata(const tune_st_file *f, const char *key)
{
    for (int i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta_keys[i], key) == 0) return f->meta_values[i];
    return NULL;
}

tune_status tune_st_read_f32(const tune_st_tensor *t, float *dst, tune_error *err)
{
    const uint8_t *p = t->data;
    long n = (long)t->numel;
    switch (t->dtype) {
    case TUNE_DT_F32:
        memcpy(dst, p, t->nbytes);
        return TUNE_OK;
    case TUNE_DT_BF16:
    case TUNE_DT_F16: {
        int bf = t->dtype == TUNE_DT_BF16;
        #pragma omp parallel for schedule(static) if (n > (1L << 16))
        for (long i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            dst[i] = bf ? tune_bf16_to_f32(h) : tune_f16_to_f32(h);
        }
        return TUNE_OK;
    }
    case TUNE_DT_F64:
        for (long i = 0; i < n; i++) {
            double d;
            memcpy(&d, p + 8 * i, 8);
            dst[i] = (float)d;
        }
        return TUNE_OK;
    default:
        return tune_fail_input(err, t->file->path, "tensor '%s': dtype %s is not a floating-point type",
                               t->name, tune_dtype_name(t->dtype));
    }
}

tune_status tune_st_read_i32(const tune_st_tensor *t, int32_t *dst, tune_error *err)
{
    const uint8_t *p = t->data;
    for (size_t i = 0; i < t->numel; i++) {
        int64_t v;
        switch (t->dtype) {
        case TUNE_DT_I64: memcpy(&v, p + 8 * i, 8); break;
        case TUNE_DT_I32: { int32_t x; memcpy(&x, p + 4 * i, 4); v = x; break; }
        case TUNE_DT_I16: { int16_t x; memcpy(&x, p + 2 * i, 2); v = x; break; }
        case TUNE_DT_I8: v = (int8_t)p[i]; break;
        case TUNE_DT_U8:
        case TUNE_DT_BOOL: v = p[i]; break;
        default:
            return tune_fail_input(err, t->file->path, "tensor '%s': dtype %s is not an integer type",
                                   t->name, tune_dtype_name(t->dtype));
        }
        if (v < INT32_MIN || v > INT32_MAX)
            return tune_fail_input(err, t->file->path, "tensor '%s': element %zu (%lld) does not fit in 32 bits",
                                   t->name, i, (long long)v);
        dst[i] = (int32_t)v;
    }
    return TUNE_OK;
}

tune_status tune_st_expect_shape(const tune_st_tensor *t, int ndim, const int64_t *shape,
                                 tune_error *err)
{
    int same = t->ndim == ndim;
    for (int i = 0; same && i < ndim; i++) same = t->shape[i] == shape[i];
    if (same) return TUNE_OK;
    char want[160], got[160];
    shape_str(shape, ndim, want, sizeof want);
    shape_str(t->shape, t->ndim, got, sizeof got);
    return tune_fail_input(err, t->file->path, "tensor '%s': expected shape %s, found %s",
                           t->name, want, got);
}

/* ------------------------------------------------------------ sharded sets */

void tune_st_set_close(tune_st_set *set)
{
    if (!set) return;
    for (int i = 0; i < set->n_files; i++) tune_st_close(set->files[i]);
    free(set->files);
    for (int i = 0; i < set->n_entries; i++) free(set->entry_names[i]);
    free(set->entry_names);
    free(set->entry_tensors);
    free(set->source);
    free(set);
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

static char *join_path(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

typedef struct { const char *name; int entry; } map_item;

static int by_item_name(const void *a, const void *b)
{
    return strcmp(((const map_item *)a)->name, ((const map_item *)b)->name);
}

/* Opens each shard the weight_map names (once) and resolves every entry. */
static tune_status open_shards(tune_st_set *set, const char *dir, const cJSON *map, tune_error *err)
{
    int n = cJSON_GetArraySize(map);
    map_item *items = calloc((size_t)n + 1, sizeof *items);
    set->files = calloc((size_t)n + 1, sizeof *set->files);
    set->entry_names = calloc((size_t)n + 1, sizeof *set->entry_names);
    set->entry_tensors = calloc((size_t)n + 1, sizeof *set->entry_tensors);
    if (!items || !set->files || !set->entry_names || !set->entry_tensors) {
        free(items);
        return tune_fail_run(err, set->source, "out of memory");
    }
    tune_status st = TUNE_OK;
    int i = 0;
    for (const cJSON *kv = map->child; kv && st == TUNE_OK; kv = kv->next, i++) {
        items[i] = (map_item){kv->string, i};
        const char *shard = cJSON_IsString(kv) ? kv->valuestring : NULL;
        if (!shard || !*shard || strchr(shard, '/') || strchr(shard, '\\') || shard[0] == '.') {
            st = tune_fail_input(err, set->source, "weight_map: tensor '%s' must map to a file name in the same folder",
                                 kv->string);
            break;
        }
        tune_st_file *file = NULL;
        for (int k = 0; k < set->n_files && !file; k++)
            if (strcmp(strrchr(set->files[k]->path, '/') + 1, shard) == 0) file = set->files[k];
        if (!file) {
            char *path = join_path(dir, shard);
            if (!path) { st = tune_fail_run(err, set->source, "out of memory"); break; }
            if (!tune_path_exists(path))
                st = tune_fail_input(err, set->source, "weight_map names shard '%s' (for tensor '%s'), which does not exist",
                                     shard, kv->string);
            else if ((st = tune_st_open(path, &file, err)) == TUNE_OK)
                set->files[set->n_files++] = file;
            free(path);
            if (st != TUNE_OK) break;
        }
        if (!(set->entry_names[i] = strdup(kv->string))) { st = tune_fail_run(err, set->source, "out of memory"); break; }
        set->n_entries = i + 1;
        set->entry_tensors[i] = tune_st_find(file, kv->string);
        if (!set->entry_tensors[i])
            st = tune_fail_input(err, set->source, "weight_map: tensor '%s' is mapped to '%s', which does not contain it",
                                 kv->string, shard);
    }
    if (st == TUNE_OK) {
        /* Sort the entries by name for lookup; equal neighbours are duplicates. */
        qsort(items, (size_t)n, sizeof *items, by_item_name);
        char **names = malloc(((size_t)n + 1) * sizeof *names);
        const tune_st_tensor **tensors = malloc(((size_t)n + 1) * sizeof *tensors);
        if (!names || !tensors) st = tune_fail_run(err, set->source, "out of memory");
        for (int k = 0; st == TUNE_OK && k < n; k++) {
            if (k > 0 && strcmp(items[k - 1].name, items[k].name) == 0)
                st = tune_fail_input(err, set->source, "weight_map: tensor '%s' appears twice", items[k].name);
            names[k] = set->entry_names[items[k].entry];
            tensors[k] = set->entry_tensors[items[k].entry];
        }
        if (st == TUNE_OK) {
            free(set->entry_names);
            free(set->entry_tensors);
            set->entry_names = names;
            set->entry_tensors = tensors;
        } else {
            free(names);
            free(tensors);
        }
    }
    free(items);
    return st;
}

static tune_status open_index(tune_st_set *set, tune_error *err)
{
    char *text;
    size_t len;
    tune_status st = tune_read_file(set->source, &text, &len, err);
    if (st != TUNE_OK) return st;
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    if (!root) return tune_fail_input(err, set->source, "not valid JSON");
    const cJSON *map = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    if (!cJSON_IsObject(map)) {
        st = tune_fail_input(err, set->source, "\"weight_map\" must be an object of tensor name to file name");
    } else {
        char *dir = strdup(set->source);
        if (!dir) st = tune_fail_run(err, set->source, "out of memory");
        else {
            char *slash = strrchr(dir, '/');
            if (slash) *slash = '\0';
            st = open_shards(set, slash ? dir : ".", map, err);
            free(dir);
        }
    }
    cJSON_Delete(root);
    return st;
}

tune_status tune_st_set_open(const char *path, tune_st_set **out, tune_error *err)
{
    *out = NULL;
    tune_st_set *set = calloc(1, sizeof *set);
    if (!set) return tune_fail_run(err, path, "out of memory");
    tune_status st = TUNE_OK;
    if (tune_is_dir(path)) {
        set->source = join_path(path, "model.safetensors");
        if (set->source && !tune_path_exists(set->source)) {
            free(set->source);
            set->source = join_path(path, "model.safetensors.index.json");
            if (set->source && !tune_path_exists(set->source))
                st = tune_fail_input(err, path, "no model.safetensors or model.safetensors.index.json in this folder");
        }
    } else {
        set->source = strdup(path);
    }
    if (!set->source && st == TUNE_OK) st = tune_fail_run(err, path, "out of memory");
    if (st == TUNE_OK && ends_with(set->source, ".index.json")) {
        st = open_index(set, err);
    } else if (st == TUNE_OK) {
        set->files = calloc(1, sizeof *set->files);
        if (!set->files) st = tune_fail_run(err, path, "out of memory");
        else if ((st = tune_st_open(set->source, &set->files[0], err)) == TUNE_OK) set->n_files = 1;
    }
    if (st != TUNE_OK) { tune_st_set_close(set); return st; }
    *out = set;
    return TUNE_OK;
}

static int by_entry_name(const void *key, const void *elem)
{
    return strcmp(key, *(char *const *)elem);
}

const tune_st_tensor *tune_st_set_find(const tune_st_set *set, const char *name)
{
    if (!set->entry_names) return set->n_files == 1 ? tune_st_find(set->files[0], name) : NULL;
    char *const *hit = bsearch(name, set->entry_names, (size_t)set->n_entries, sizeof *set->entry_names,
                               by_entry_name);
    return hit ? set->entry_tensors[hit - set->entry_names] : NULL;
}

/* ------------------------------------------------------------------ writer */

/* A JSON string the way serde_json writes it (what the reference writer uses). */
static void json_string(tune_strbuf *sb, const char *s)
{
    tune_strbuf_puts(sb, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"': tune_strbuf_puts(sb, "\\\""); break;
        case '\\': tune_strbuf_puts(sb, "\\\\"); break;
        case '\b': tune_strbuf_puts(sb, "\\b"); break;
        case '\f': tune_strbuf_puts(sb, "\\f"); break;
        case '\n': tune_strbuf_puts(sb, "\\n"); break;
        case '\r': tune_strbuf_puts(sb, "\\r"); break;
        case '\t': tune_strbuf_puts(sb, "\\t"); break;
        default:
            if (*p < 0x20) tune_strbuf_printf(sb, "\\u%04x", *p);
            else tune_strbuf_append(sb, (const char *)p, 1);
        }
    }
    tune_strbuf_puts(sb, "\"");
}

/* The reference writer's order: larger dtypes first, then by name. */
static int by_layout(const void *a, const void *b, void *base)
{
    const tune_st_entry *tensors = base;
    const tune_st_entry *x = &tensors[*(const int *)a], *y = &tensors[*(const int *)b];
    if (x->dtype != y->dtype) return x->dtype > y->dtype ? -1 : 1;
    return strcmp(x->name, y->name);
}

static tune_status check_entry(const tune_st_entry *e, int i, size_t *nbytes, tune_error *err)
{
    if (!e->name) return tune_fail_input(err, NULL, "safetensors writer: tensor %d has no name", i);
    if ((unsigned)e->dtype >= TUNE_N_DTYPES)
        return tune_fail_input(err, NULL, "safetensors writer: tensor '%s': bad dtype", e->name);
    if (e->ndim < 0 || e->ndim > TUNE_ST_MAX_DIMS)
        return tune_fail_input(err, NULL, "safetensors writer: tensor '%s': %d dimensions", e->name, e->ndim);
    if (!e->data == !e->f32)
        return tune_fail_input(err, NULL, "safetensors writer: tensor '%s': give exactly one of data and f32", e->name);
    if (e->f32 && e->dtype != TUNE_DT_F32 && e->dtype != TUNE_DT_F16 && e->dtype != TUNE_DT_BF16)
        return tune_fail_input(err, NULL, "safetensors writer: tensor '%s': fp32 input converts only to F32, F16 or BF16",
                               e->name);
    for (int d = 0; d < e->ndim; d++)
        if (e->shape[d] < 0)
            return tune_fail_input(err, NULL, "safetensors writer: tensor '%s': negative dimension", e->name);
    size_t numel;
    if (!shape_numel(e->shape, e->ndim, tune_dtype_size(e->dtype), &numel))
        return tune_fail_input(err, NULL, "safetensors writer: tensor '%s': size overflows", e->name);
    *nbytes = numel * tune_dtype_size(e->dtype);
    return TUNE_OK;
}

static void put_data(uint8_t *dst, const tune_st_entry *e, size_t nbytes)
{
    if (e->data || e->dtype == TUNE_DT_F32) {
        memcpy(dst, e->data ? e->data : (const void *)e->f32, nbytes);
        return;
    }
    for (size_t i = 0; i < nbytes / 2; i++) {
        uint16_t h = e->dtype == TUNE_DT_BF16 ? tune_f32_to_bf16(e->f32[i]) : tune_f32_to_f16(e->f32[i]);
        memcpy(dst + 2 * i, &h, 2);
    }
}

tune_status tune_st_serialize(const tune_st_entry *tensors, int n, uint8_t **buf, size_t *len,
                              tune_error *err)
{
    *buf = NULL;
    *len = 0;
    if (n < 0) return tune_fail_input(err, NULL, "safetensors writer: negative tensor count");
    int *order = malloc(((size_t)n + 1) * sizeof *order);
    size_t *nbytes = malloc(((size_t)n + 1) * sizeof *nbytes);
    tune_strbuf sb = {0};
    tune_status st = TUNE_OK;
    if (!order || !nbytes) { st = tune_fail_run(err, NULL, "out of memory"); goto done; }
    for (int i = 0; i < n && st == TUNE_OK; i++) {
        order[i] = i;
        st = check_entry(&tensors[i], i, &nbytes[i], err);
    }
    if (st != TUNE_OK) goto done;
    qsort_r(order, (size_t)n, sizeof *order, by_layout, (void *)tensors);
    for (int i = 1; i < n; i++)
        if (strcmp(tensors[order[i - 1]].name, tensors[order[i]].name) == 0) {
            st = tune_fail_input(err, NULL, "safetensors writer: tensor '%s' given twice", tensors[order[i]].name);
            goto done;
        }

    tune_strbuf_puts(&sb, "{\"__metadata__\":{\"format\":\"pt\"}");
    size_t offset = 0;
    for (int i = 0; i < n; i++) {
        const tune_st_entry *e = &tensors[order[i]];
        tune_strbuf_puts(&sb, ",");
        json_string(&sb, e->name);
        tune_strbuf_printf(&sb, ":{\"dtype\":\"%s\",\"shape\":[", tune_dtype_name(e->dtype));
        for (int d = 0; d < e->ndim; d++) tune_strbuf_printf(&sb, "%s%lld", d ? "," : "", (long long)e->shape[d]);
        tune_strbuf_printf(&sb, "],\"data_offsets\":[%zu,%zu]}", offset, offset + nbytes[order[i]]);
        if (__builtin_add_overflow(offset, nbytes[order[i]], &offset)) {
            st = tune_fail_input(err, NULL, "safetensors writer: total size overflows");
            goto done;
        }
    }
    tune_strbuf_puts(&sb, "}");
    while (sb.len % 8) tune_strbuf_puts(&sb, " ");
    if (sb.oom) { st = tune_fail_run(err, NULL, "out of memory"); goto done; }

    uint64_t hlen = sb.len;
    size_t total = 8 + sb.len + offset;
    uint8_t *out = malloc(total ? total : 1);
    if (!out) { st = tune_fail_run(err, NULL, "out of memory: %zu bytes for a safetensors file", total); goto done; }
    memcpy(out, &hlen, 8);
    memcpy(out + 8, sb.data, sb.len);
    uint8_t *dst = out + 8 + sb.len;
    for (int i = 0; i < n; i++) {
        put_data(dst, &tensors[order[i]], nbytes[order[i]]);
        dst += nbytes[order[i]];
    }
    *buf = out;
    *len = total;
done:
    tune_strbuf_free(&sb);
    free(order);
    free(nbytes);
    return st;
}

tune_status tune_st_write(const char *path, const tune_st_entry *tensors, int n, tune_error *err)
{
    uint8_t *buf;
    size_t len;
    tune_status st = tune_st_serialize(tensors, n, &buf, &len, err);
    if (st != TUNE_OK) {
        /* Name the file being written; the message already names the tensor. */
        if (err) snprintf(err->file, sizeof err->file, "%s", path);
        return st;
    }
    st = tune_write_file_atomic(path, buf, len, err);
    free(buf);
    return st;
}
