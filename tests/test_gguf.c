/* GGUF reader: synthetic files written by the gguf Python package, hostile
 * and truncated files, a tiny LLaMA against Transformers' GGUF loader, and
 * (when present) the real SmolLM2-135M-Instruct Q4_1 file. Goldens come from
 * tools/reference/make_gguf_golden.py. */
#include <cJSON.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "testutil.h"
#include "tune/gguf.h"
#include "tune/util.h"

#define REAL_MODEL "models/SmolLM2-135M-Instruct.Q4_1.gguf"

static void data_path(char *buf, size_t size, const char *name)
{
    snprintf(buf, size, "%s/gguf/%s", test_data_dir(), name);
}

static cJSON *load_json(const char *name)
{
    char path[512];
    data_path(path, sizeof path, name);
    char *text;
    size_t len;
    tune_error err;
    ck_assert_msg(tune_read_file(path, &text, &len, &err) == TUNE_OK, "%s", err.message);
    cJSON *j = cJSON_Parse(text);
    free(text);
    ck_assert_msg(j != NULL, "bad JSON in %s", path);
    return j;
}

static void open_data(const char *name, tune_gguf *g)
{
    char path[512];
    data_path(path, sizeof path, name);
    tune_error err;
    ck_assert_msg(tune_gguf_open(path, g, &err) == TUNE_OK, "%s", err.message);
}

static int same_bits(float a, float b) { return memcmp(&a, &b, sizeof a) == 0; }

/* ---- synthetic files: every metadata type, every readable tensor type ----- */

static void check_metadata(const tune_gguf *g, const cJSON *meta)
{
    tune_error err;
    const cJSON *m;
    cJSON_ArrayForEach(m, meta) {
        const char *key = m->string;
        const cJSON *value = cJSON_GetObjectItem(m, "value");
        const char *type = cJSON_GetObjectItem(m, "type")->valuestring;
        const cJSON *et = cJSON_GetObjectItem(m, "elem_type");
        const tune_gguf_kv *kv = tune_gguf_find(g, key);
        ck_assert_msg(kv != NULL, "key %s missing", key);
        if (!strcmp(type, "ARRAY") && !strcmp(et->valuestring, "ARRAY")) {
            /* Nested arrays are kept (walked and checked) but have no getter. */
            ck_assert_int_eq(kv->elem_type, TUNE_GGUF_ARRAY);
            ck_assert_uint_eq(kv->count, (uint64_t)cJSON_GetArraySize(value));
            int64_t *ints;
            uint64_t n;
            ck_assert_int_eq(tune_gguf_get_int_array(g, key, &ints, &n, &err), TUNE_ERR_INPUT);
            continue;
        }
        if (!strcmp(type, "ARRAY")) {
            const char *e = et->valuestring;
            uint64_t n = 0;
            if (!strcmp(e, "STRING")) {
                const tune_gguf_str *items;
                ck_assert_int_eq(tune_gguf_get_str_array(g, key, &items, &n, &err), TUNE_OK);
                ck_assert_uint_eq(n, (uint64_t)cJSON_GetArraySize(value));
                for (uint64_t i = 0; i < n; i++)
                    ck_assert(tune_gguf_str_eq(items[i], cJSON_GetArrayItem(value, (int)i)->valuestring));
            } else if (!strcmp(e, "FLOAT32") || !strcmp(e, "FLOAT64")) {
                float *f;
                ck_assert_int_eq(tune_gguf_get_float_array(g, key, &f, &n, &err), TUNE_OK);
                ck_assert_uint_eq(n, (uint64_t)cJSON_GetArraySize(value));
                for (uint64_t i = 0; i < n; i++)
                    ck_assert(same_bits(f[i], (float)cJSON_GetArrayItem(value, (int)i)->valuedouble));
                free(f);
            } else if (!strcmp(e, "BOOL")) {
                ck_assert_uint_eq(kv->count, (uint64_t)cJSON_GetArraySize(value));
                for (uint64_t i = 0; i < kv->count; i++)
                    ck_assert_int_eq(kv->data[i], cJSON_IsTrue(cJSON_GetArrayItem(value, (int)i)));
            } else {
                int64_t *v;
                ck_assert_int_eq(tune_gguf_get_int_array(g, key, &v, &n, &err), TUNE_OK);
                ck_assert_uint_eq(n, (uint64_t)cJSON_GetArraySize(value));
                /* cJSON holds numbers as doubles, rounded as the cast rounds. */
                for (uint64_t i = 0; i < n; i++)
                    ck_assert_msg((double)v[i] == cJSON_GetArrayItem(value, (int)i)->valuedouble, "%s[%llu]", key,
                                  (unsigned long long)i);
                free(v);
            }
            continue;
        }
        if (!strcmp(type, "STRING")) {
            tune_gguf_str s;
            ck_assert_int_eq(tune_gguf_get_str(g, key, &s, &err), TUNE_OK);
            ck_assert(tune_gguf_str_eq(s, value->valuestring));
        } else if (!strcmp(type, "BOOL")) {
            int b;
            ck_assert_int_eq(tune_gguf_get_bool(g, key, &b, &err), TUNE_OK);
            ck_assert_int_eq(b, cJSON_IsTrue(value));
        } else if (!strcmp(type, "FLOAT32") || !strcmp(type, "FLOAT64")) {
            double d;
            ck_assert_int_eq(tune_gguf_get_float(g, key, &d, &err), TUNE_OK);
            ck_assert(d == value->valuedouble);
        } else {
            int64_t v;
            ck_assert_int_eq(tune_gguf_get_int(g, key, &v, &err), TUNE_OK);
            ck_assert_msg((double)v == value->valuedouble, "%s", key);
        }
    }
    /* The exact 64-bit extremes, which a double cannot show. */
    int64_t v;
    ck_assert_int_eq(tune_gguf_get_int(g, "test.i64", &v, &err), TUNE_OK);
    ck_assert_int_eq(v, -9000000000000000000LL);
    int64_t *arr;
    uint64_t n;
    ck_assert_int_eq(tune_gguf_get_int_array(g, "test.arr_i64", &arr, &n, &err), TUNE_OK);
    ck_assert(arr[0] == INT64_MIN);
    free(arr);
    ck_assert_int_eq(tune_gguf_get_int_array(g, "test.arr_u64", &arr, &n, &err), TUNE_OK);
    ck_assert(arr[1] == INT64_MAX);
    free(arr);
}

static void check_types_file(const char *file, const char *version)
{
    cJSON *all = load_json("types_expected.json");
    const cJSON *exp = cJSON_GetObjectItem(all, version);
    tune_gguf g;
    open_data(file, &g);
    ck_assert_uint_eq(g.version, (uint32_t)atoi(version + 1));
    ck_assert_uint_eq(g.alignment, (uint32_t)cJSON_GetObjectItem(exp, "alignment")->valueint);
    ck_assert_uint_eq(g.data_offset % g.alignment, 0);
    check_metadata(&g, cJSON_GetObjectItem(exp, "metadata"));

    tune_error err;
    const cJSON *t;
    int n_checked = 0;
    cJSON_ArrayForEach(t, cJSON_GetObjectItem(exp, "tensors")) {
        const tune_gguf_tensor *ti = tune_gguf_find_tensor(&g, t->string);
        ck_assert_msg(ti != NULL, "tensor %s missing", t->string);
        ck_assert_str_eq(tune_ggml_type_name(ti->type), cJSON_GetObjectItem(t, "type")->valuestring);
        const cJSON *ne = cJSON_GetObjectItem(t, "ne");
        ck_assert_uint_eq(ti->n_dims, (uint32_t)cJSON_GetArraySize(ne));
        for (uint32_t d = 0; d < ti->n_dims; d++)
            ck_assert_uint_eq(ti->ne[d], (uint64_t)cJSON_GetArrayItem(ne, (int)d)->valueint);
        const cJSON *values = cJSON_GetObjectItem(t, "values");
        ck_assert_uint_eq(ti->n_elements, (uint64_t)cJSON_GetArraySize(values));
        float *out = malloc(ti->n_elements * sizeof *out);
        ck_assert_int_eq(tune_gguf_tensor_to_f32(&g, ti, out, &err), TUNE_OK);
        for (uint64_t i = 0; i < ti->n_elements; i++) {
            float want = (float)cJSON_GetArrayItem(values, (int)i)->valuedouble;
            ck_assert_msg(same_bits(out[i], want), "%s[%llu]: %.9g, expected %.9g", t->string,
                          (unsigned long long)i, out[i], want);
        }
        free(out);
        n_checked++;
    }
    ck_assert_int_eq(n_checked, 7);

    /* A ggml type tune does not dequantise opens (sized by ggml's block
     * of 256 in 66 bytes) and is named in the error. */
    const tune_gguf_tensor *iq = tune_gguf_find_tensor(&g, "t_iq2_xxs");
    ck_assert_ptr_nonnull(iq);
    ck_assert_uint_eq(iq->n_elements, 256);
    ck_assert_uint_eq(iq->n_bytes, 66);
    float buf[256];
    ck_assert_int_eq(tune_gguf_tensor_to_f32(&g, iq, buf, &err), TUNE_ERR_INPUT);
    ck_assert_ptr_nonnull(strstr(err.message, "tensor 't_iq2_xxs' has type IQ2_XXS, which tune cannot read yet"));
    ck_assert_ptr_nonnull(strstr(err.file, file));

    /* Getter errors name the key. */
    int64_t v;
    ck_assert_int_eq(tune_gguf_get_int(&g, "test.string", &v, &err), TUNE_ERR_INPUT);
    ck_assert_ptr_nonnull(strstr(err.message, "'test.string' is a string, expected an integer"));
    ck_assert_int_eq(tune_gguf_get_int(&g, "no.such.key", &v, &err), TUNE_ERR_INPUT);
    ck_assert_ptr_nonnull(strstr(err.message, "'no.such.key' is missing"));
    ck_assert_ptr_null(tune_gguf_find_tensor(&g, "t_f3"));
    tune_gguf_close(&g);
    cJSON_Delete(all);
}

START_TEST(reads_every_type_v3) { check_types_file("types_v3.gguf", "v3"); }
END_TEST

START_TEST(reads_every_type_v2) { check_types_file("types_v2.gguf", "v2"); }
END_TEST

START_TEST(f16_conversion_is_exact)
{
    /* Every half value against a rebuild from sign, exponent and mantissa. */
    for (uint32_t h = 0; h < 65536; h++) {
        float f = tune_f16_to_f32((uint16_t)h);
        int sign = h >> 15, exp = (h >> 10) & 31, man = h & 1023;
        if (exp == 31) {
            ck_assert(man ? isnan(f) : isinf(f));
            continue;
        }
        double want = exp ? ldexp(1024 + man, exp - 25) : ldexp(man, -24);
        if (sign) want = -want;
        ck_assert_msg((double)f == want && !!signbit(f) == sign, "half %04x", h);
    }
    ck_assert(tune_bf16_to_f32(0x3f80) == 1.0f);
    ck_assert(tune_bf16_to_f32(0xc049) == -3.140625f);
}
END_TEST

/* ---- hostile files ------------------------------------------------------- */

typedef struct buf {
    uint8_t data[4096];
    size_t len;
} buf;

static void put(buf *b, const void *p, size_t n)
{
    ck_assert(b->len + n <= sizeof b->data);
    memcpy(b->data + b->len, p, n);
    b->len += n;
}
static void put_u32(buf *b, uint32_t v) { put(b, &v, 4); }
static void put_u64(buf *b, uint64_t v) { put(b, &v, 8); }
static void put_str(buf *b, const char *s)
{
    put_u64(b, strlen(s));
    put(b, s, strlen(s));
}
static void header(buf *b, uint32_t version, uint64_t n_tensors, uint64_t n_kvs)
{
    b->len = 0;
    put(b, "GGUF", 4);
    put_u32(b, version);
    put_u64(b, n_tensors);
    put_u64(b, n_kvs);
}
static void kv_u32(buf *b, const char *key, uint32_t v)
{
    put_str(b, key);
    put_u32(b, TUNE_GGUF_U32);
    put_u32(b, v);
}
/* A tensor info with n_dims dims from ne. */
static void tensor_info(buf *b, const char *name, uint32_t n_dims, const uint64_t *ne, uint32_t type, uint64_t off)
{
    put_str(b, name);
    put_u32(b, n_dims);
    for (uint32_t i = 0; i < n_dims; i++) put_u64(b, ne[i]);
    put_u32(b, type);
    put_u64(b, off);
}
static void pad_to(buf *b, size_t align)
{
    while (b->len % align) b->data[b->len++] = 0;
}

/* Parses b from an exact-size heap copy (so ASan sees any over-read) and
 * expects refusal with want in the message. */
static void expect_refused(const buf *b, const char *want)
{
    uint8_t *copy = malloc(b->len ? b->len : 1);
    memcpy(copy, b->data, b->len);
    tune_gguf g;
    tune_error err;
    tune_status st = tune_gguf_open_memory(copy, b->len, "hostile.gguf", &g, &err);
    ck_assert_msg(st == TUNE_ERR_INPUT, "accepted; expected '%s'", want);
    ck_assert_str_eq(err.file, "hostile.gguf");
    ck_assert_msg(strstr(err.message, want) != NULL, "message '%s' lacks '%s'", err.message, want);
    free(copy);
}

START_TEST(hostile_headers_refused)
{
    buf b;
    header(&b, 3, 0, 0);
    memcpy(b.data, "GGML", 4);
    expect_refused(&b, "not a GGUF file (bad magic)");
    header(&b, 1, 0, 0);
    expect_refused(&b, "GGUF version 1 is obsolete");
    header(&b, 4, 0, 0);
    expect_refused(&b, "unsupported GGUF version 4");
    header(&b, 0x03000000u, 0, 0);
    expect_refused(&b, "big-endian");
    header(&b, 3, 0, 0);
    b.len = 20;
    expect_refused(&b, "file ends inside the header");
    header(&b, 3, 0, 1000);
    expect_refused(&b, "claims 1000 metadata pairs");
    header(&b, 3, UINT64_MAX, 0);
    expect_refused(&b, "claims 18446744073709551615 tensors");
}
END_TEST

START_TEST(hostile_metadata_refused)
{
    buf b;
    header(&b, 3, 0, 1); /* key length past the end */
    put_u64(&b, 1u << 20);
    put(&b, "abcdefghijklmnop", 16);
    expect_refused(&b, "metadata pair #0: a metadata key has length 1048576, past the end");

    header(&b, 3, 0, 1);
    put_str(&b, "k");
    put_u32(&b, 13);
    put_u32(&b, 0);
    expect_refused(&b, "metadata key 'k': unknown value type 13");

    header(&b, 3, 0, 1);
    put_str(&b, "k");
    put_u32(&b, TUNE_GGUF_ARRAY);
    put_u32(&b, 77);
    put_u64(&b, 1);
    expect_refused(&b, "unknown array element type 77");

    header(&b, 3, 0, 1); /* an array count larger than the file */
    put_str(&b, "k");
    put_u32(&b, TUNE_GGUF_ARRAY);
    put_u32(&b, TUNE_GGUF_STRING);
    put_u64(&b, UINT64_MAX / 2);
    put_u64(&b, 0);
    expect_refused(&b, "does not fit in the rest of the file");

    header(&b, 3, 0, 1); /* a string inside an array runs past the end */
    put_str(&b, "k");
    put_u32(&b, TUNE_GGUF_ARRAY);
    put_u32(&b, TUNE_GGUF_STRING);
    put_u64(&b, 2);
    put_str(&b, "ok");
    put_u64(&b, 5);
    put(&b, "abc", 3);
    expect_refused(&b, "metadata key 'k': a string has length 5, past the end");

    header(&b, 3, 0, 1); /* arrays nested too deep */
    put_str(&b, "k");
    put_u32(&b, TUNE_GGUF_ARRAY);
    for (int i = 0; i < 6; i++) {
        put_u32(&b, TUNE_GGUF_ARRAY);
        put_u64(&b, 1);
    }
    put_u32(&b, TUNE_GGUF_U8);
    put_u64(&b, 0);
    put_u64(&b, 0);
    expect_refused(&b, "nested deeper than");

    header(&b, 3, 0, 1);
    put_str(&b, "flag");
    put_u32(&b, TUNE_GGUF_BOOL);
    put(&b, "\x02", 1);
    expect_refused(&b, "bool value 2");

    header(&b, 3, 0, 2);
    kv_u32(&b, "a.b", 1);
    kv_u32(&b, "a.b", 2);
    expect_refused(&b, "metadata key 'a.b' appears twice");

    header(&b, 3, 0, 1);
    kv_u32(&b, "general.alignment", 48);
    expect_refused(&b, "general.alignment': 48 is not a power of two");

    header(&b, 3, 0, 1);
    put_str(&b, "general.alignment");
    put_u32(&b, TUNE_GGUF_U64);
    put_u64(&b, 64);
    expect_refused(&b, "general.alignment': must be a u32");

    header(&b, 3, 0, 1);
    put_str(&b, "k");
    put_u32(&b, TUNE_GGUF_U64);
    put(&b, "\x01\x02", 2);
    expect_refused(&b, "metadata key 'k': file ends inside a value");
}
END_TEST

START_TEST(hostile_tensors_refused)
{
    buf b;
    uint64_t ne[5] = {32, 2, 1, 1, 1};
    header(&b, 3, 1, 0);
    tensor_info(&b, "w", 5, ne, TUNE_Q_F32, 0);
    expect_refused(&b, "tensor 'w': 5 dimensions (at most 4)");

    uint64_t big[2] = {1ull << 40, 1ull << 40};
    header(&b, 3, 1, 0);
    tensor_info(&b, "w", 2, big, TUNE_Q_F32, 0);
    expect_refused(&b, "tensor 'w': element count overflows");

    uint64_t neg[1] = {UINT64_MAX};
    header(&b, 3, 1, 0);
    tensor_info(&b, "w", 1, neg, TUNE_Q_F32, 0);
    expect_refused(&b, "element count overflows");

    header(&b, 3, 1, 0);
    tensor_info(&b, "w", 2, ne, 4, 0);
    expect_refused(&b, "tensor 'w': unknown ggml type id 4");

    uint64_t odd[2] = {48, 2};
    header(&b, 3, 1, 0);
    tensor_info(&b, "w", 2, odd, TUNE_Q4_1, 0);
    expect_refused(&b, "first dimension 48 is not a multiple of the Q4_1 block size 32");

    uint64_t smol[2] = {576, 2}; /* SmolLM2's width: 18 blocks of 32, not whole blocks of 256 */
    header(&b, 3, 1, 0);
    tensor_info(&b, "w", 2, smol, TUNE_Q4_K, 0);
    expect_refused(&b, "first dimension 576 is not a multiple of the Q4_K block size 256");
    header(&b, 3, 1, 0);
    tensor_info(&b, "w", 2, smol, TUNE_Q5_0, 0); /* 36 blocks of 22 bytes */
    pad_to(&b, 32);
    b.len += 791;
    expect_refused(&b, "tensor 'w': data (792 bytes at offset 0) runs past the end of the file");
    uint64_t k6[2] = {512, 2}; /* 4 Q6_K blocks of 210 bytes */
    header(&b, 3, 1, 0);
    tensor_info(&b, "w", 2, k6, TUNE_Q6_K, 0);
    pad_to(&b, 32);
    b.len += 839;
    expect_refused(&b, "tensor 'w': data (840 bytes at offset 0) runs past the end of the file");
    header(&b, 3, 1, 0); /* NF4 is tune's own number, never a ggml type */
    tensor_info(&b, "w", 2, k6, TUNE_Q_NF4, 0);
    expect_refused(&b, "tensor 'w': unknown ggml type id 1024");
    header(&b, 3, 1, 0);
    tensor_info(&b, "w", 2, k6, TUNE_Q_NF4_DQ, 0);
    expect_refused(&b, "tensor 'w': unknown ggml type id 1025");

    header(&b, 3, 1, 0);
    tensor_info(&b, "w", 2, ne, TUNE_Q_F32, 16);
    expect_refused(&b, "tensor 'w': data offset 16 is not a multiple of the alignment 32");

    header(&b, 3, 1, 0); /* 256 bytes of data announced, 100 present */
    tensor_info(&b, "w", 2, ne, TUNE_Q_F32, 0);
    pad_to(&b, 32);
    b.len += 100;
    expect_refused(&b, "tensor 'w': data (256 bytes at offset 0) runs past the end of the file");

    header(&b, 3, 1, 0); /* an offset near 2^64 must not wrap */
    tensor_info(&b, "w", 2, ne, TUNE_Q_F32, UINT64_MAX - 31);
    pad_to(&b, 32);
    b.len += 256;
    expect_refused(&b, "runs past the end of the file");

    header(&b, 3, 1, 0); /* the infos end, the data section does not begin */
    tensor_info(&b, "w", 2, ne, TUNE_Q_F32, 0);
    b.data[b.len++] = 0;
    expect_refused(&b, "file ends before its tensor data");

    header(&b, 3, 2, 0);
    tensor_info(&b, "w", 2, ne, TUNE_Q_F32, 0);
    tensor_info(&b, "w", 2, ne, TUNE_Q_F32, 256);
    pad_to(&b, 32);
    b.len += 512;
    expect_refused(&b, "tensor 'w' appears twice");

    /* The same two tensors with distinct names are fine, and an empty
     * file of metadata only (no data section) too. */
    header(&b, 3, 2, 0);
    tensor_info(&b, "w", 2, ne, TUNE_Q_F32, 0);
    tensor_info(&b, "v", 2, ne, TUNE_Q_F32, 256);
    pad_to(&b, 32);
    memset(b.data + b.len, 0, 512);
    b.len += 512;
    tune_gguf g;
    tune_error err;
    ck_assert_int_eq(tune_gguf_open_memory(b.data, b.len, "ok.gguf", &g, &err), TUNE_OK);
    ck_assert_uint_eq(g.n_tensors, 2);
    ck_assert_ptr_nonnull(tune_gguf_find_tensor(&g, "v"));
    tune_gguf_close(&g);
    header(&b, 2, 0, 1);
    kv_u32(&b, "x", 7);
    ck_assert_int_eq(tune_gguf_open_memory(b.data, b.len, "ok.gguf", &g, &err), TUNE_OK);
    int64_t v;
    ck_assert_int_eq(tune_gguf_get_int(&g, "x", &v, &err), TUNE_OK);
    ck_assert_int_eq(v, 7);
    tune_gguf_close(&g);

    header(&b, 3, 0, 1); /* a u64 beyond int64 is refused by the getter */
    put_str(&b, "big");
    put_u32(&b, TUNE_GGUF_U64);
    put_u64(&b, UINT64_MAX);
    ck_assert_int_eq(tune_gguf_open_memory(b.data, b.len, "ok.gguf", &g, &err), TUNE_OK);
    ck_assert_int_eq(tune_gguf_get_int(&g, "big", &v, &err), TUNE_ERR_INPUT);
    ck_assert_ptr_nonnull(strstr(err.message, "out of range"));
    tune_gguf_close(&g);
}
END_TEST

/* Every type tune reads, as a (4, cols) tensor of a file built here from the
 * golden blocks of tests/data/quant (tools/reference/make_quant_golden.py):
 * the reader sizes it by the type's block and dequantises it row by row to
 * gguf's values, bit for bit. */
START_TEST(reads_every_quant_type)
{
    static const struct { uint32_t type; const char *name; } qt[] = {
        {TUNE_Q_F32, "F32"}, {TUNE_Q_F16, "F16"},   {TUNE_Q_BF16, "BF16"}, {TUNE_Q4_0, "Q4_0"},
        {TUNE_Q4_1, "Q4_1"}, {TUNE_Q5_0, "Q5_0"},   {TUNE_Q5_1, "Q5_1"},   {TUNE_Q8_0, "Q8_0"},
        {TUNE_Q2_K, "Q2_K"}, {TUNE_Q3_K, "Q3_K"},   {TUNE_Q4_K, "Q4_K"},   {TUNE_Q5_K, "Q5_K"},
        {TUNE_Q6_K, "Q6_K"},
    };
    for (size_t k = 0; k < sizeof qt / sizeof qt[0]; k++) {
        char path[512];
        char *raw, *want;
        size_t n_raw, n_want;
        tune_error err;
        snprintf(path, sizeof path, "%s/quant/blocks_%s.bin", test_data_dir(), qt[k].name);
        ck_assert_msg(tune_read_file(path, &raw, &n_raw, &err) == TUNE_OK, "%s", err.message);
        snprintf(path, sizeof path, "%s/quant/expected_%s.f32", test_data_dir(), qt[k].name);
        ck_assert_msg(tune_read_file(path, &want, &n_want, &err) == TUNE_OK, "%s", err.message);
        const uint64_t n = n_want / 4, ne[2] = {n / 4, 4};
        buf b;
        header(&b, 3, 1, 0);
        tensor_info(&b, "t", 2, ne, qt[k].type, 0);
        pad_to(&b, 32);
        put(&b, raw, n_raw);
        tune_gguf g;
        ck_assert_msg(tune_gguf_open_memory(b.data, b.len, "q.gguf", &g, &err) == TUNE_OK, "%s", err.message);
        ck_assert_uint_eq(g.tensors[0].n_bytes, n_raw);
        ck_assert_str_eq(tune_ggml_type_name(g.tensors[0].type), qt[k].name);
        float *out = malloc(n * sizeof *out);
        ck_assert_int_eq(tune_gguf_tensor_to_f32(&g, &g.tensors[0], out, &err), TUNE_OK);
        for (uint64_t i = 0; i < n; i++) {
            float w;
            memcpy(&w, want + 4 * i, 4);
            ck_assert_msg(same_bits(out[i], w), "%s[%llu]: %.9g, expected %.9g", qt[k].name,
                          (unsigned long long)i, out[i], w);
        }
        free(out);
        tune_gguf_close(&g);
        free(raw);
        free(want);
    }
}
END_TEST

START_TEST(missing_and_odd_files_refused)
{
    tune_gguf g;
    tune_error err;
    ck_assert_int_eq(tune_gguf_open("/nonexistent/m.gguf", &g, &err), TUNE_ERR_INPUT);
    ck_assert_str_eq(err.file, "/nonexistent/m.gguf");
    ck_assert_int_eq(tune_gguf_open(test_data_dir(), &g, &err), TUNE_ERR_INPUT);
    ck_assert_ptr_nonnull(strstr(err.message, "not a regular file"));
}
END_TEST

/* Opens a heap copy of data[0..len) and, when it parses, reads every value
 * and dequantises every readable tensor: nothing may crash or over-read. */
static int parse_and_walk(const uint8_t *data, size_t len)
{
    uint8_t *copy = malloc(len ? len : 1);
    memcpy(copy, data, len);
    tune_gguf g;
    tune_error err;
    int ok = tune_gguf_open_memory(copy, len, "fuzz.gguf", &g, &err) == TUNE_OK;
    if (ok) {
        for (uint64_t i = 0; i < g.n_kvs; i++) {
            char key[256];
            snprintf(key, sizeof key, "%.*s", (int)(g.kvs[i].key.len < 255 ? g.kvs[i].key.len : 255),
                     g.kvs[i].key.ptr);
            int64_t v, *iv;
            double d;
            float *fv;
            const tune_gguf_str *sv;
            uint64_t n;
            tune_gguf_get_int(&g, key, &v, &err);
            tune_gguf_get_float(&g, key, &d, &err);
            if (tune_gguf_get_int_array(&g, key, &iv, &n, &err) == TUNE_OK) free(iv);
            if (tune_gguf_get_float_array(&g, key, &fv, &n, &err) == TUNE_OK) free(fv);
            if (tune_gguf_get_str_array(&g, key, &sv, &n, &err) == TUNE_OK && n)
                ck_assert(sv[n - 1].ptr + sv[n - 1].len <= (const char *)copy + len);
        }
        for (uint64_t i = 0; i < g.n_tensors; i++) {
            const tune_gguf_tensor *t = &g.tensors[i];
            if (t->n_elements > (1u << 20)) continue;
            float *out = malloc((t->n_elements ? t->n_elements : 1) * sizeof *out);
            tune_gguf_tensor_to_f32(&g, t, out, &err);
            free(out);
        }
        tune_gguf_close(&g);
    }
    free(copy);
    return ok;
}

START_TEST(truncated_and_flipped_files_never_crash)
{
    char path[512];
    data_path(path, sizeof path, "types_v3.gguf");
    char *data;
    size_t len;
    tune_error err;
    ck_assert_int_eq(tune_read_file(path, &data, &len, &err), TUNE_OK);
    const uint8_t *bytes = (const uint8_t *)data;
    ck_assert(parse_and_walk(bytes, len));
    /* Truncations: only cuts inside the last tensor's trailing padding may parse. */
    tune_gguf full;
    ck_assert_int_eq(tune_gguf_open_memory(bytes, len, "full", &full, &err), TUNE_OK);
    size_t data_end = 0;
    for (uint64_t i = 0; i < full.n_tensors; i++) {
        size_t end = (size_t)(full.data_offset + full.tensors[i].offset + full.tensors[i].n_bytes);
        data_end = end > data_end ? end : data_end;
    }
    size_t data_offset = (size_t)full.data_offset;
    tune_gguf_close(&full);
    for (size_t cut = 0; cut < len; cut++) ck_assert_int_eq(parse_and_walk(bytes, cut), cut >= data_end);
    /* Byte flips across the header, metadata and tensor infos. */
    uint8_t *mut = malloc(len);
    static const uint8_t flips[] = {0xff, 0x80, 0x01, 0x7f};
    for (size_t pos = 0; pos < len && pos < data_offset; pos++)
        for (size_t f = 0; f < sizeof flips; f++) {
            memcpy(mut, bytes, len);
            mut[pos] ^= flips[f];
            parse_and_walk(mut, len);
        }
    free(mut);
    free(data);
}
END_TEST

/* ---- models --------------------------------------------------------------- */

START_TEST(flipped_model_metadata_refused_cleanly)
{
    /* Every byte of the tiny model's metadata and tensor infos, flipped: the
     * model reader either loads a model or reports an input error. */
    char path[512];
    data_path(path, sizeof path, "tiny_llama.gguf");
    char *data;
    size_t len;
    tune_error err;
    ck_assert_int_eq(tune_read_file(path, &data, &len, &err), TUNE_OK);
    tune_gguf g;
    ck_assert_int_eq(tune_gguf_open_memory(data, len, "tiny", &g, &err), TUNE_OK);
    size_t header_end = (size_t)g.data_offset;
    tune_gguf_close(&g);
    int loaded = 0, refused = 0;
    for (size_t pos = 0; pos < header_end; pos++) {
        uint8_t *mut = malloc(len);
        memcpy(mut, data, len);
        mut[pos] ^= 0x55;
        if (tune_gguf_open_memory(mut, len, "flip.gguf", &g, &err) == TUNE_OK) {
            tune_model m;
            tune_status st = tune_gguf_read_model(&g, TUNE_STORE_F32, &m, &err);
            ck_assert_msg(st == TUNE_OK || st == TUNE_ERR_INPUT, "byte %zu: status %d: %s", pos, st, err.message);
            if (st == TUNE_OK) {
                loaded++;
                tune_model_free(&m);
            } else {
                refused++;
            }
            tune_gguf_close(&g);
        }
        free(mut);
    }
    ck_assert_int_gt(refused, 0);
    ck_assert_int_gt(loaded, 0); /* e.g. flips inside general.name */
    free(data);
}
END_TEST

/* The HF-named weight of a loaded model. */
static const float *model_tensor(const tune_model *m, const char *hf_name)
{
    if (!strcmp(hf_name, "model.embed_tokens.weight")) return m->embed.f32;
    if (!strcmp(hf_name, "model.norm.weight")) return m->final_norm;
    if (!strcmp(hf_name, "lm_head.weight")) return m->lm_head.f32;
    int layer;
    char rest[64];
    ck_assert(sscanf(hf_name, "model.layers.%d.%63s", &layer, rest) == 2);
    ck_assert(layer >= 0 && layer < m->cfg.num_hidden_layers);
    const tune_layer *ly = &m->layers[layer];
    if (!strcmp(rest, "input_layernorm.weight")) return ly->attn_norm;
    if (!strcmp(rest, "post_attention_layernorm.weight")) return ly->ffn_norm;
    static const char *const paths[TUNE_N_LINEAR] = {
        "self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
        "self_attn.o_proj.weight", "mlp.gate_proj.weight",    "mlp.up_proj.weight",
        "mlp.down_proj.weight",
    };
    for (int k = 0; k < TUNE_N_LINEAR; k++)
        if (!strcmp(rest, paths[k])) return ly->w[k].f32;
    ck_abort_msg("unknown tensor %s", hf_name);
    return NULL;
}

static int json_int(const cJSON *o, const char *key) { return cJSON_GetObjectItem(o, key)->valueint; }

static void check_config(const tune_model_config *c, const cJSON *want)
{
    ck_assert_int_eq(c->vocab_size, json_int(want, "vocab_size"));
    ck_assert_int_eq(c->hidden_size, json_int(want, "hidden_size"));
    ck_assert_int_eq(c->intermediate_size, json_int(want, "intermediate_size"));
    ck_assert_int_eq(c->num_hidden_layers, json_int(want, "num_hidden_layers"));
    ck_assert_int_eq(c->num_attention_heads, json_int(want, "num_attention_heads"));
    ck_assert_int_eq(c->num_key_value_heads, json_int(want, "num_key_value_heads"));
    ck_assert_int_eq(c->head_dim, json_int(want, "head_dim"));
    ck_assert_int_eq(c->max_position_embeddings, json_int(want, "max_position_embeddings"));
    ck_assert(c->rms_norm_eps == (float)cJSON_GetObjectItem(want, "rms_norm_eps")->valuedouble);
    ck_assert(c->rope_theta == cJSON_GetObjectItem(want, "rope_theta")->valuedouble);
    ck_assert_int_eq(c->rope_type, TUNE_ROPE_DEFAULT);
    ck_assert_int_eq(c->tie_word_embeddings, cJSON_IsTrue(cJSON_GetObjectItem(want, "tie_word_embeddings")));
    ck_assert_int_eq(c->bos_token_id, json_int(want, "bos_token_id"));
    ck_assert_int_eq(c->n_eos_token_ids, 1);
    ck_assert_int_eq(c->eos_token_ids[0], json_int(want, "eos_token_id"));
    const cJSON *pad = cJSON_GetObjectItem(want, "pad_token_id");
    ck_assert_int_eq(c->pad_token_id, cJSON_IsNull(pad) ? -1 : pad->valueint);
}

/* Checks a tensor against the golden summary: first/last values within tol,
 * sums (a permutation of rows changes the weighted sum) to 1e-9 of the sum
 * of absolute values (numpy sums pairwise, this loop in order). */
static void check_tensor(const tune_model *m, const char *name, const cJSON *want, double tol)
{
    const float *v = model_tensor(m, name);
    const cJSON *shape = cJSON_GetObjectItem(want, "shape");
    size_t n = 1;
    const cJSON *d;
    cJSON_ArrayForEach(d, shape) n *= (size_t)d->valueint;
    const cJSON *first = cJSON_GetObjectItem(want, "first"), *last = cJSON_GetObjectItem(want, "last");
    for (int i = 0; i < 8; i++) {
        ck_assert_msg(fabs(v[i] - cJSON_GetArrayItem(first, i)->valuedouble) <= tol, "%s first[%d]", name, i);
        ck_assert_msg(fabs(v[n - 8 + i] - cJSON_GetArrayItem(last, i)->valuedouble) <= tol, "%s last[%d]", name, i);
    }
    double sum = 0, sum_abs = 0, wsum = 0;
    for (size_t i = 0; i < n; i++) {
        sum += v[i];
        sum_abs += fabs(v[i]);
        wsum += v[i] * (double)(i % 97 + 1);
    }
    double scale = cJSON_GetObjectItem(want, "sum_abs")->valuedouble;
    const double rel = 1e-9;
    ck_assert_msg(fabs(sum_abs - scale) <= rel * scale, "%s sum_abs %.17g vs %.17g", name, sum_abs, scale);
    ck_assert_msg(fabs(sum - cJSON_GetObjectItem(want, "sum")->valuedouble) <= rel * scale, "%s sum", name);
    ck_assert_msg(fabs(wsum - cJSON_GetObjectItem(want, "weighted_sum")->valuedouble) <= rel * scale * 97,
                  "%s weighted sum %.17g vs %.17g", name, wsum,
                  cJSON_GetObjectItem(want, "weighted_sum")->valuedouble);
}

static void check_model_file(const char *path, const cJSON *exp, double tol, int expect_all)
{
    tune_error err;
    tune_model_config cfg;
    ck_assert_msg(tune_gguf_model_config(path, &cfg, &err) == TUNE_OK, "%s", err.message);
    check_config(&cfg, cJSON_GetObjectItem(exp, "config"));
    tune_model m;
    ck_assert_msg(tune_gguf_model_load(path, TUNE_STORE_F32, &m, &err) == TUNE_OK, "%s", err.message);
    check_config(&m.cfg, cJSON_GetObjectItem(exp, "config"));
    ck_assert(m.cfg.tie_word_embeddings ? m.lm_head.f32 == m.embed.f32 : m.lm_head.f32 != m.embed.f32);
    const cJSON *t;
    int n = 0;
    cJSON_ArrayForEach(t, cJSON_GetObjectItem(exp, "tensors")) {
        check_tensor(&m, t->string, t, tol);
        n++;
    }
    if (expect_all) ck_assert_int_eq(n, 3 + 9 * m.cfg.num_hidden_layers);
    tune_model_free(&m);
}

START_TEST(tiny_llama_matches_transformers)
{
    char path[512];
    data_path(path, sizeof path, "tiny_llama.gguf");
    cJSON *exp = load_json("tiny_llama_expected.json");
    check_model_file(path, exp, 0.0, 1);
    cJSON_Delete(exp);
}
END_TEST

START_TEST(model_dispatch_reads_gguf)
{
    /* tune_model_config_load / tune_model_load send .gguf paths here. */
    char path[512];
    data_path(path, sizeof path, "tiny_llama.gguf");
    tune_error err;
    tune_model_config cfg;
    ck_assert_msg(tune_model_config_load(path, &cfg, &err) == TUNE_OK, "%s", err.message);
    ck_assert_int_eq(cfg.vocab_size, 64);
    tune_model m;
    ck_assert_msg(tune_model_load(path, &m, &err) == TUNE_OK, "%s", err.message);
    ck_assert_int_eq(m.cfg.num_hidden_layers, 2);
    ck_assert_ptr_nonnull(m.layers[1].w[TUNE_DOWN_PROJ].f32);
    tune_model_free(&m);
    data_path(path, sizeof path, "types_v3.gguf");
    ck_assert_int_eq(tune_model_load(path, &m, &err), TUNE_ERR_INPUT);
    ck_assert_ptr_nonnull(strstr(err.message, "tune reads 'llama' models only"));
}
END_TEST

START_TEST(llama3_rope_freqs_recognised)
{
    char path[512];
    data_path(path, sizeof path, "llama3_rope.gguf");
    tune_model_config cfg;
    tune_error err;
    ck_assert_msg(tune_gguf_model_config(path, &cfg, &err) == TUNE_OK, "%s", err.message);
    ck_assert_int_eq(cfg.rope_type, TUNE_ROPE_LLAMA3);
    ck_assert(cfg.rope_factor == 32.0);
    ck_assert(cfg.rope_low_freq_factor == 1.0 && cfg.rope_high_freq_factor == 4.0);
    ck_assert_int_eq(cfg.rope_original_max_position_embeddings, 8192);
    ck_assert(cfg.rope_theta == 500000.0);
    ck_assert_int_eq(cfg.vocab_size, 32);
    ck_assert_int_eq(cfg.n_eos_token_ids, 0);
    ck_assert_int_eq(cfg.bos_token_id, -1);

    /* Another scheme in the same tensor is refused, naming it. */
    char *data;
    size_t len;
    ck_assert_int_eq(tune_read_file(path, &data, &len, &err), TUNE_OK);
    tune_gguf g;
    ck_assert_int_eq(tune_gguf_open_memory(data, len, path, &g, &err), TUNE_OK);
    const tune_gguf_tensor *t = tune_gguf_find_tensor(&g, "rope_freqs.weight");
    ck_assert_ptr_nonnull(t);
    float f;
    memcpy(&f, t->data + 4 * 16, 4);
    f *= 1.5f;
    memcpy(data + (t->data - (const uint8_t *)data) + 4 * 16, &f, 4);
    ck_assert_int_eq(tune_gguf_read_config(&g, &cfg, &err), TUNE_ERR_INPUT);
    ck_assert_ptr_nonnull(strstr(err.message, "is not llama3 RoPE scaling (entry 16"));
    tune_gguf_close(&g);
    free(data);
}
END_TEST

START_TEST(model_errors_name_the_problem)
{
    char path[512];
    tune_error err;
    tune_model m;
    tune_model_config cfg;
    data_path(path, sizeof path, "types_v3.gguf");
    ck_assert_int_eq(tune_gguf_model_load(path, TUNE_STORE_F32, &m, &err), TUNE_ERR_INPUT);
    ck_assert_ptr_nonnull(strstr(err.message, "general.architecture is 'test'; tune reads 'llama' models only"));
    ck_assert_ptr_null(m.storage);

    /* The llama3 file has metadata but no weights. */
    data_path(path, sizeof path, "llama3_rope.gguf");
    ck_assert_int_eq(tune_gguf_model_load(path, TUNE_STORE_F32, &m, &err), TUNE_ERR_INPUT);
    ck_assert_ptr_nonnull(strstr(err.message, "llama.block_count is 1, more layers than the file's 1 tensors can hold"));
    ck_assert_str_eq(err.file, path);

    /* A wrong shape is reported with both shapes. */
    buf b;
    header(&b, 3, 11, 9);
    put_str(&b, "general.architecture");
    put_u32(&b, TUNE_GGUF_STRING);
    put_str(&b, "llama");
    kv_u32(&b, "llama.block_count", 1);
    kv_u32(&b, "llama.embedding_length", 64);
    kv_u32(&b, "llama.feed_forward_length", 64);
    kv_u32(&b, "llama.attention.head_count", 2);
    kv_u32(&b, "llama.context_length", 64);
    kv_u32(&b, "llama.vocab_size", 32);
    put_str(&b, "llama.attention.layer_norm_rms_epsilon");
    put_u32(&b, TUNE_GGUF_F32);
    float eps = 1e-5f;
    put(&b, &eps, 4);
    put_str(&b, "llama.rope.scaling.type");
    put_u32(&b, TUNE_GGUF_STRING);
    put_str(&b, "none");
    uint64_t ne[2] = {64, 16};
    tensor_info(&b, "token_embd.weight", 2, ne, TUNE_Q_F32, 0);
    for (int i = 0; i < 10; i++) { /* enough tensors for one layer; their names do not matter here */
        char name[16];
        snprintf(name, sizeof name, "pad.%d", i);
        tensor_info(&b, name, 1, ne, TUNE_Q_F32, 0);
    }
    pad_to(&b, 32);
    size_t len = b.len + 64 * 16 * 4;
    uint8_t *file = calloc(1, len);
    memcpy(file, b.data, b.len);
    tune_gguf g;
    ck_assert_int_eq(tune_gguf_open_memory(file, len, "shape.gguf", &g, &err), TUNE_OK);
    ck_assert_int_eq(tune_gguf_read_config(&g, &cfg, &err), TUNE_OK);
    ck_assert_int_eq(cfg.num_key_value_heads, 2);
    ck_assert_int_eq(cfg.head_dim, 32);
    ck_assert(cfg.rope_theta == 10000.0);
    ck_assert_int_eq(tune_gguf_read_model(&g, TUNE_STORE_F32, &m, &err), TUNE_ERR_INPUT);
    ck_assert_ptr_nonnull(strstr(err.message, "tensor 'token_embd.weight' has shape [64, 16, 1, 1] (2 dims), "
                                              "expected [64, 32] (2 dims)"));
    tune_gguf_close(&g);
    free(file);
}
END_TEST

START_TEST(real_smollm2_matches_transformers)
{
    if (!tune_path_exists(REAL_MODEL)) {
        printf("test_gguf: SKIPPED the real-model check: %s is absent (run `make model`)\n", REAL_MODEL);
        return;
    }
    cJSON *exp = load_json("smollm2_expected.json");
    char hex[65];
    tune_error err;
    ck_assert_int_eq(tune_sha256_file_hex(REAL_MODEL, hex, &err), TUNE_OK);
    ck_assert_str_eq(hex, cJSON_GetObjectItem(exp, "sha256")->valuestring);
    check_model_file(REAL_MODEL, exp, 1e-6, 0);
    cJSON_Delete(exp);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("gguf");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, reads_every_type_v3);
    tcase_add_test(tc, reads_every_type_v2);
    tcase_add_test(tc, f16_conversion_is_exact);
    tcase_add_test(tc, hostile_headers_refused);
    tcase_add_test(tc, hostile_metadata_refused);
    tcase_add_test(tc, hostile_tensors_refused);
    tcase_add_test(tc, reads_every_quant_type);
    tcase_add_test(tc, missing_and_odd_files_refused);
    tcase_add_test(tc, truncated_and_flipped_files_never_crash);
    tcase_add_test(tc, tiny_llama_matches_transformers);
    tcase_add_test(tc, flipped_model_metadata_refused_cleanly);
    tcase_add_test(tc, model_dispatch_reads_gguf);
    tcase_add_test(tc, llama3_rope_freqs_recognised);
    tcase_add_test(tc, model_errors_name_the_problem);
    tcase_add_test(tc, real_smollm2_matches_transformers);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
