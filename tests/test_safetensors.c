#include <ftw.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"
#include "tune/kernels.h"
#include "tune/safetensors.h"
#include "tune/util.h"

static char tmpdir[64];

static void make_tmpdir(void)
{
    snprintf(tmpdir, sizeof tmpdir, "%s/tune-st-XXXXXX", P_tmpdir);
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static void remove_tmpdir(void)
{
    if (tmpdir[0]) nftw(tmpdir, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
    tmpdir[0] = '\0';
}

/* Writes a raw safetensors file: declared header length, header text, data. */
static void write_raw(const char *path, uint64_t hlen, const char *header, size_t data_len)
{
    size_t n = strlen(header);
    size_t total = 8 + n + data_len;
    uint8_t *buf = calloc(total, 1);
    ck_assert_ptr_nonnull(buf);
    memcpy(buf, &hlen, 8);
    memcpy(buf + 8, header, n);
    for (size_t i = 0; i < data_len; i++) buf[8 + n + i] = (uint8_t)i;
    tune_error err;
    ck_assert_int_eq(tune_write_file_atomic(path, buf, total, &err), TUNE_OK);
    free(buf);
}

/* The file must be refused as bad input, naming the file and containing
 * each of the given fragments (tensor name, reason). */
static void expect_refused(const char *header, long hlen, size_t data_len, const char *frag1,
                           const char *frag2)
{
    char path[128];
    snprintf(path, sizeof path, "%s/bad.safetensors", tmpdir);
    write_raw(path, hlen >= 0 ? (uint64_t)hlen : strlen(header), header, data_len);
    tune_st_file *f = (tune_st_file *)1;
    tune_error err;
    tune_status st = tune_st_open(path, &f, &err);
    ck_assert_msg(st == TUNE_ERR_INPUT, "accepted: %s", header);
    ck_assert_ptr_null(f);
    ck_assert_str_eq(err.file, path);
    ck_assert_msg(strstr(err.message, frag1), "'%s' lacks '%s'", err.message, frag1);
    if (frag2) ck_assert_msg(strstr(err.message, frag2), "'%s' lacks '%s'", err.message, frag2);
}

#define F32(name, shape, b, e) "\"" name "\":{\"dtype\":\"F32\",\"shape\":" shape ",\"data_offsets\":[" #b "," #e "]}"

START_TEST(hostile_headers_are_refused)
{
    make_tmpdir();
    expect_refused("{}", 1000, 0, "runs past the end of the file", NULL);
    expect_refused("{}", 100000001, 0, "exceeds the limit", NULL);
    expect_refused("{not json", -1, 0, "not valid JSON", NULL);
    expect_refused("{\"a\\", -1, 0, "not valid JSON", NULL); /* ends in a backslash */
    expect_refused("[1,2]", -1, 0, "not a JSON object", NULL);
    expect_refused("{} x", -1, 0, "unexpected bytes after the header", NULL);
    expect_refused("{\"w\":{\"dtype\":\"F8_E4M3\",\"shape\":[1],\"data_offsets\":[0,1]}}", -1, 1, "'w'", "unknown dtype 'F8_E4M3'");
    expect_refused("{\"w\":{\"shape\":[1],\"data_offsets\":[0,4]}}", -1, 4, "'w'", "missing \"dtype\"");
    expect_refused("{\"w\":[1]}", -1, 0, "'w'", "not an object");
    expect_refused("{" F32("w", "[2,2]", 0, 12) "}", -1, 12, "'w'", "needs 16 bytes");
    expect_refused("{" F32("a", "[2]", 0, 8) "," F32("b", "[2]", 4, 12) "}", -1, 12, "'b'", "overlap tensor 'a'");
    expect_refused("{" F32("a", "[1]", 0, 4) "," F32("b", "[1]", 8, 12) "}", -1, 12, "'b'", "gap");
    expect_refused("{" F32("a", "[1]", 4, 8) "}", -1, 8, "'a'", "start at 4");
    expect_refused("{" F32("a", "[2]", 0, 8) "}", -1, 4, "'a'", "run past the end of the file");
    expect_refused("{" F32("a", "[1]", 0, 4) "}", -1, 8, "4 trailing bytes after the last tensor 'a'", NULL);
    expect_refused("{}", -1, 3, "3 bytes of data but no tensors", NULL);
    expect_refused("{" F32("a", "[1]", 0, 4) "," F32("a", "[1]", 4, 8) "}", -1, 8, "'a' appears twice", NULL);
    expect_refused("{" F32("w", "[-1]", 0, 4) "}", -1, 4, "'w'", "non-negative integers");
    expect_refused("{" F32("w", "[1.5]", 0, 4) "}", -1, 4, "'w'", "non-negative integers");
    expect_refused("{" F32("w", "[1e300]", 0, 4) "}", -1, 4, "'w'", "non-negative integers");
    expect_refused("{" F32("w", "[4294967296,4294967296,16]", 0, 4) "}", -1, 4, "'w'", "overflows");
    expect_refused("{" F32("w", "[1,1,1,1,1,1,1,1,1]", 0, 4) "}", -1, 4, "'w'", "9 dimensions");
    expect_refused("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4]}}", -1, 4, "'w'", "data_offsets");
    expect_refused("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[\"0\",\"4\"]}}", -1, 4, "'w'", "data_offsets");
    expect_refused("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}", -1, 8, "'w'", "before begin");
    expect_refused("{\"__metadata__\":{\"format\":1}}", -1, 0, "__metadata__ 'format' must be a string", NULL);
    expect_refused("{\"__metadata__\":[]}", -1, 0, "__metadata__ must be an object", NULL);

    char path[128];
    snprintf(path, sizeof path, "%s/short.safetensors", tmpdir);
    tune_error err;
    ck_assert_int_eq(tune_write_file_atomic(path, "abc", 3, &err), TUNE_OK);
    tune_st_file *f;
    ck_assert_int_eq(tune_st_open(path, &f, &err), TUNE_ERR_INPUT);
    ck_assert_ptr_nonnull(strstr(err.message, "too short"));
    ck_assert_int_eq(tune_st_open(tmpdir, &f, &err), TUNE_ERR_INPUT);
    ck_assert_ptr_nonnull(strstr(err.message, "not a regular file"));
    snprintf(path, sizeof path, "%s/missing.safetensors", tmpdir);
    ck_assert_int_eq(tune_st_open(path, &f, &err), TUNE_ERR_INPUT);
    ck_assert_str_eq(err.file, path);
}
END_TEST

START_TEST(zero_sized_tensors_and_empty_files_are_valid)
{
    make_tmpdir();
    char path[128];
    snprintf(path, sizeof path, "%s/ok.safetensors", tmpdir);
    write_raw(path, 2, "{}", 0);
    tune_st_file *f;
    tune_error err;
    ck_assert_int_eq(tune_st_open(path, &f, &err), TUNE_OK);
    ck_assert_int_eq(f->n_tensors, 0);
    tune_st_close(f);
    const char *h = "{" F32("e", "[0,3]", 0, 0) "," F32("s", "[]", 0, 4) "}";
    write_raw(path, strlen(h), h, 4);
    ck_assert_int_eq(tune_st_open(path, &f, &err), TUNE_OK);
    ck_assert_uint_eq(tune_st_find(f, "e")->numel, 0);
    ck_assert_uint_eq(tune_st_find(f, "s")->numel, 1);
    ck_assert_int_eq(tune_st_find(f, "s")->ndim, 0);
    tune_st_close(f);
}
END_TEST

static const float VALUES[6] = {1.0f, -2.5f, 3.14159265f, 1e-3f, 65504.0f, -0.0f};
static const int64_t IDS[4] = {1, -100, 7, 2147483647};

static void fill_entries(tune_st_entry *e)
{
    memset(e, 0, 4 * sizeof *e);
    e[0] = (tune_st_entry){.name = "w.f32", .dtype = TUNE_DT_F32, .ndim = 2, .shape = {2, 3}, .f32 = VALUES};
    e[1] = (tune_st_entry){.name = "w.bf16", .dtype = TUNE_DT_BF16, .ndim = 1, .shape = {6}, .f32 = VALUES};
    e[2] = (tune_st_entry){.name = "ids", .dtype = TUNE_DT_I64, .ndim = 2, .shape = {1, 4}, .data = IDS};
    e[3] = (tune_st_entry){.name = "a.f16", .dtype = TUNE_DT_F16, .ndim = 1, .shape = {5}, .f32 = VALUES};
}

START_TEST(round_trip_is_exact_and_byte_stable)
{
    make_tmpdir();
    tune_st_entry e[4];
    fill_entries(e);
    char p1[128], p2[128];
    snprintf(p1, sizeof p1, "%s/one.safetensors", tmpdir);
    snprintf(p2, sizeof p2, "%s/two.safetensors", tmpdir);
    tune_error err;
    ck_assert_int_eq(tune_st_write(p1, e, 4, &err), TUNE_OK);
    tune_st_entry rev[4] = {e[3], e[2], e[1], e[0]}; /* input order does not matter */
    ck_assert_int_eq(tune_st_write(p2, rev, 4, &err), TUNE_OK);
    char *b1, *b2;
    size_t n1, n2;
    ck_assert_int_eq(tune_read_file(p1, &b1, &n1, &err), TUNE_OK);
    ck_assert_int_eq(tune_read_file(p2, &b2, &n2, &err), TUNE_OK);
    ck_assert_uint_eq(n1, n2);
    ck_assert(memcmp(b1, b2, n1) == 0);
    uint64_t hlen;
    memcpy(&hlen, b1, 8);
    ck_assert_uint_eq(hlen % 8, 0);
    ck_assert_uint_eq(n1, 8 + hlen + 6 * 4 + 6 * 2 + 4 * 8 + 5 * 2); /* the tensors tile the buffer */
    free(b1);
    free(b2);

    tune_st_file *f;
    ck_assert_int_eq(tune_st_open(p1, &f, &err), TUNE_OK);
    ck_assert_str_eq(tune_st_metadata(f, "format"), "pt");
    ck_assert_int_eq(f->n_tensors, 4);
    float out[6];
    const tune_st_tensor *t = tune_st_find(f, "w.f32");
    ck_assert_int_eq(t->ndim, 2);
    ck_assert_int_eq(t->shape[1], 3);
    ck_assert_int_eq(tune_st_read_f32(t, out, &err), TUNE_OK);
    ck_assert(memcmp(out, VALUES, sizeof VALUES) == 0);
    ck_assert_int_eq(tune_st_read_f32(tune_st_find(f, "w.bf16"), out, &err), TUNE_OK);
    for (int i = 0; i < 6; i++) ck_assert_float_eq(out[i], tune_bf16_to_f32(tune_f32_to_bf16(VALUES[i])));
    ck_assert_int_eq(tune_st_read_f32(tune_st_find(f, "a.f16"), out, &err), TUNE_OK);
    for (int i = 0; i < 5; i++) ck_assert_float_eq(out[i], tune_f16_to_f32(tune_f32_to_f16(VALUES[i])));
    int32_t ids[4];
    ck_assert_int_eq(tune_st_read_i32(tune_st_find(f, "ids"), ids, &err), TUNE_OK);
    for (int i = 0; i < 4; i++) ck_assert_int_eq(ids[i], IDS[i]);
    ck_assert_ptr_null(tune_st_find(f, "nope"));

    /* Type and shape errors name the file and the tensor. */
    ck_assert_int_eq(tune_st_read_f32(tune_st_find(f, "ids"), out, &err), TUNE_ERR_INPUT);
    ck_assert_str_eq(err.file, p1);
    ck_assert_ptr_nonnull(strstr(err.message, "'ids'"));
    ck_assert_int_eq(tune_st_read_i32(tune_st_find(f, "w.f32"), ids, &err), TUNE_ERR_INPUT);
    int64_t want[2] = {3, 2};
    ck_assert_int_eq(tune_st_expect_shape(tune_st_find(f, "w.f32"), 2, want, &err), TUNE_ERR_INPUT);
    ck_assert_str_eq(err.message, "tensor 'w.f32': expected shape (3, 2), found (2, 3)");
    tune_st_close(f);

    /* Writer input errors. */
    e[1].name = "w.f32";
    ck_assert_int_eq(tune_st_write(p2, e, 4, &err), TUNE_ERR_INPUT);
    ck_assert_ptr_nonnull(strstr(err.message, "'w.f32' given twice"));
    ck_assert_str_eq(err.file, p2);
    fill_entries(e);
    e[2].f32 = VALUES;
    ck_assert_int_eq(tune_st_write(p2, e, 4, &err), TUNE_ERR_INPUT);
    ck_assert_ptr_nonnull(strstr(err.message, "'ids'"));
}
END_TEST

static tune_st_file *open_fixture(const char *name)
{
    char path[512];
    snprintf(path, sizeof path, "%s/model_load/%s", test_data_dir(), name);
    tune_st_file *f;
    tune_error err;
    ck_assert_msg(tune_st_open(path, &f, &err) == TUNE_OK, "%s", err.message);
    return f;
}

/* Re-serialising the reference writer's tensors gives its exact bytes. */
START_TEST(writer_matches_reference_bytes)
{
    tune_st_file *ref = open_fixture("writer_ref.safetensors");
    ck_assert_int_eq(ref->n_tensors, 13);
    tune_st_entry e[16];
    memset(e, 0, sizeof e);
    for (int i = 0; i < ref->n_tensors; i++) {
        const tune_st_tensor *t = &ref->tensors[i];
        e[i].name = t->name;
        e[i].dtype = t->dtype;
        e[i].ndim = t->ndim;
        memcpy(e[i].shape, t->shape, sizeof t->shape);
        e[i].data = t->numel ? (const void *)t->data : (const void *)"";
    }
    uint8_t *buf;
    size_t len;
    tune_error err;
    ck_assert_int_eq(tune_st_serialize(e, ref->n_tensors, &buf, &len, &err), TUNE_OK);
    ck_assert_uint_eq(len, ref->map_size);
    ck_assert(memcmp(buf, ref->map, len) == 0);
    free(buf);

    /* I64 ids that do not fit 32 bits are refused, by name. */
    int32_t ids[6];
    ck_assert_int_eq(tune_st_read_i32(tune_st_find(ref, "input_ids"), ids, &err), TUNE_ERR_INPUT);
    ck_assert_ptr_nonnull(strstr(err.message, "tensor 'input_ids': element 4"));
    int32_t small[2];
    ck_assert_int_eq(tune_st_read_i32(tune_st_find(ref, "i8"), small, &err), TUNE_OK);
    ck_assert_int_eq(small[0], -128);
    ck_assert_int_eq(tune_st_read_i32(tune_st_find(ref, "u8"), small, &err), TUNE_OK);
    ck_assert_int_eq(small[1], 255);
    float third;
    ck_assert_int_eq(tune_st_read_f32(tune_st_find(ref, "f64"), &third, &err), TUNE_OK);
    ck_assert_float_eq(third, 1.0f / 3.0f);
    tune_st_close(ref);
}
END_TEST

/* fp32 → bf16/fp16 rounds exactly as torch does, including ties, subnormals,
 * overflow and NaN. */
START_TEST(conversions_match_torch)
{
    tune_st_file *f = open_fixture("convert.safetensors");
    const tune_st_tensor *x = tune_st_find(f, "f32"), *bf = tune_st_find(f, "bf16"), *h = tune_st_find(f, "f16");
    ck_assert_uint_eq(x->numel, bf->numel);
    float *v = malloc(x->numel * sizeof *v);
    tune_error err;
    ck_assert_int_eq(tune_st_read_f32(x, v, &err), TUNE_OK);
    for (size_t i = 0; i < x->numel; i++) {
        uint16_t want_bf, want_h;
        memcpy(&want_bf, bf->data + 2 * i, 2);
        memcpy(&want_h, h->data + 2 * i, 2);
        ck_assert_msg(tune_f32_to_bf16(v[i]) == want_bf, "bf16 of %a: %04x, torch %04x", v[i], tune_f32_to_bf16(v[i]), want_bf);
        ck_assert_msg(tune_f32_to_f16(v[i]) == want_h, "f16 of %a: %04x, torch %04x", v[i], tune_f32_to_f16(v[i]), want_h);
    }
    /* Writing through the converter gives torch's bytes. */
    tune_st_entry e = {.name = "bf16", .dtype = TUNE_DT_BF16, .ndim = 1, .shape = {(int64_t)x->numel}, .f32 = v};
    uint8_t *buf;
    size_t len;
    ck_assert_int_eq(tune_st_serialize(&e, 1, &buf, &len, &err), TUNE_OK);
    ck_assert(memcmp(buf + len - bf->nbytes, bf->data, bf->nbytes) == 0);
    free(buf);
    free(v);
    tune_st_close(f);

    /* Every non-NaN half and bfloat16 survives a trip through fp32. */
    for (uint32_t i = 0; i < 65536; i++) {
        uint16_t b = (uint16_t)i;
        if ((b & 0x7c00) != 0x7c00 || (b & 0x3ff) == 0) ck_assert_uint_eq(tune_f32_to_f16(tune_f16_to_f32(b)), b);
        if ((b & 0x7f80) != 0x7f80 || (b & 0x7f) == 0) ck_assert_uint_eq(tune_f32_to_bf16(tune_bf16_to_f32(b)), b);
    }
    ck_assert_float_eq(tune_f16_to_f32(0x0001), 5.9604644775390625e-8f);
    ck_assert_float_eq(tune_f16_to_f32(0x7bff), 65504.0f);
}
END_TEST

/* Every truncation and many single-byte corruptions of a valid file are
 * either read or refused as bad input: never a crash (this runs under ASan). */
START_TEST(corrupted_files_never_crash)
{
    make_tmpdir();
    tune_st_entry e[4];
    fill_entries(e);
    uint8_t *good;
    size_t len;
    tune_error err;
    ck_assert_int_eq(tune_st_serialize(e, 4, &good, &len, &err), TUNE_OK);
    char path[128];
    snprintf(path, sizeof path, "%s/fuzz.safetensors", tmpdir);
    static const uint8_t repl[] = {0x00, '"', '0', '9', '-', ',', '[', '}', 0xff};
    uint64_t hlen;
    memcpy(&hlen, good, 8);
    int refused = 0, runs = 0;
    for (size_t pos = 0; pos < 8 + hlen + 4; pos++) {
        for (size_t r = 0; r <= sizeof repl; r++) {
            uint8_t *bad = malloc(len);
            memcpy(bad, good, len);
            size_t n = len;
            if (r == sizeof repl) n = pos;   /* truncated */
            else bad[pos] = repl[r];
            FILE *out = fopen(path, "wb"); /* no fsync: thousands of files */
            ck_assert_ptr_nonnull(out);
            ck_assert_uint_eq(fwrite(bad, 1, n, out), n);
            ck_assert_int_eq(fclose(out), 0);
            free(bad);
            tune_st_file *f;
            tune_status st = tune_st_open(path, &f, &err);
            ck_assert(st == TUNE_OK || st == TUNE_ERR_INPUT);
            if (st == TUNE_OK) {
                float buf[6];
                for (int i = 0; i < f->n_tensors; i++)
                    if (f->tensors[i].numel <= 6) tune_st_read_f32(&f->tensors[i], buf, &err);
                tune_st_close(f);
            } else {
                ck_assert_str_eq(err.file, path);
                refused++;
            }
            runs++;
        }
    }
    ck_assert_int_gt(refused, runs / 2);
    free(good);
}
END_TEST

static void write_shard(const char *name, const char *tensor, float value)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    float v[2] = {value, value};
    tune_st_entry e = {.name = tensor, .dtype = TUNE_DT_F32, .ndim = 1, .shape = {2}, .f32 = v};
    tune_error err;
    ck_assert_int_eq(tune_st_write(path, &e, 1, &err), TUNE_OK);
}

static tune_status open_index(const char *json, tune_st_set **set, tune_error *err)
{
    char path[256];
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", tmpdir);
    ck_assert_int_eq(tune_write_file_atomic(path, json, strlen(json), err), TUNE_OK);
    return tune_st_set_open(tmpdir, set, err);
}

START_TEST(sharded_sets)
{
    make_tmpdir();
    write_shard("s1.safetensors", "a", 1.0f);
    write_shard("s2.safetensors", "b", 2.0f);
    tune_st_set *set;
    tune_error err;
    ck_assert_int_eq(open_index("{\"metadata\":{},\"weight_map\":{\"b\":\"s2.safetensors\",\"a\":\"s1.safetensors\"}}",
                                &set, &err), TUNE_OK);
    ck_assert_int_eq(set->n_files, 2);
    float v[2];
    ck_assert_int_eq(tune_st_read_f32(tune_st_set_find(set, "b"), v, &err), TUNE_OK);
    ck_assert_float_eq(v[0], 2.0f);
    ck_assert_int_eq(tune_st_read_f32(tune_st_set_find(set, "a"), v, &err), TUNE_OK);
    ck_assert_float_eq(v[1], 1.0f);
    ck_assert_ptr_null(tune_st_set_find(set, "c"));
    tune_st_set_close(set);

    ck_assert_int_eq(open_index("{\"weight_map\":{\"a\":\"s1.safetensors\",\"b\":\"s3.safetensors\"}}", &set, &err),
                     TUNE_ERR_INPUT);
    ck_assert_ptr_nonnull(strstr(err.file, "model.safetensors.index.json"));
    ck_assert_ptr_nonnull(strstr(err.message, "shard 's3.safetensors' (for tensor 'b'), which does not exist"));
    ck_assert_int_eq(open_index("{\"weight_map\":{\"a\":\"s1.safetensors\",\"b\":\"s1.safetensors\"}}", &set, &err),
                     TUNE_ERR_INPUT);
    ck_assert_ptr_nonnull(strstr(err.message, "tensor 'b' is mapped to 's1.safetensors', which does not contain it"));
    ck_assert_int_eq(open_index("{\"weight_map\":{\"a\":\"../s1.safetensors\"}}", &set, &err), TUNE_ERR_INPUT);
    ck_assert_ptr_nonnull(strstr(err.message, "'a' must map to a file name"));
    ck_assert_int_eq(open_index("{\"weight_map\":{\"a\":\"s1.safetensors\",\"a\":\"s1.safetensors\"}}", &set, &err),
                     TUNE_ERR_INPUT);
    ck_assert_ptr_nonnull(strstr(err.message, "'a' appears twice"));
    ck_assert_int_eq(open_index("{\"weight_map\":[]}", &set, &err), TUNE_ERR_INPUT);
    ck_assert_ptr_nonnull(strstr(err.message, "weight_map"));
    ck_assert_int_eq(open_index("{\"weight_map\":", &set, &err), TUNE_ERR_INPUT);
    ck_assert_ptr_nonnull(strstr(err.message, "not valid JSON"));

    /* A broken shard reports its own name. */
    char path[256];
    snprintf(path, sizeof path, "%s/s2.safetensors", tmpdir);
    ck_assert_int_eq(tune_write_file_atomic(path, "\x04\0\0\0\0\0\0\0{}", 10, &err), TUNE_OK);
    ck_assert_int_eq(open_index("{\"weight_map\":{\"b\":\"s2.safetensors\"}}", &set, &err), TUNE_ERR_INPUT);
    ck_assert_str_eq(err.file, path);

    /* A single file opens as a set of one. */
    ck_assert_int_eq(tune_st_set_open(tmpdir, &set, &err), TUNE_ERR_INPUT); /* index still broken */
    snprintf(path, sizeof path, "%s/s1.safetensors", tmpdir);
    ck_assert_int_eq(tune_st_set_open(path, &set, &err), TUNE_OK);
    ck_assert_ptr_nonnull(tune_st_set_find(set, "a"));
    tune_st_set_close(set);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("safetensors");
    TCase *tc = tcase_create("core");
    tcase_add_checked_fixture(tc, NULL, remove_tmpdir);
    tcase_add_test(tc, hostile_headers_are_refused);
    tcase_add_test(tc, zero_sized_tensors_and_empty_files_are_valid);
    tcase_add_test(tc, round_trip_is_exact_and_byte_stable);
    tcase_add_test(tc, writer_matches_reference_bytes);
    tcase_add_test(tc, conversions_match_torch);
    tcase_add_test(tc, corrupted_files_never_crash);
    tcase_add_test(tc, sharded_sets);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
