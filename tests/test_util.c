#include <string.h>
#include <unistd.h>

#include "testutil.h"
#include "tune/error.h"
#include "tune/util.h"

START_TEST(sha256_matches_fips_vectors)
{
    char hex[65];
    tune_sha256_hex("", 0, hex);
    ck_assert_str_eq(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    tune_sha256_hex("abc", 3, hex);
    ck_assert_str_eq(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const char *two_blocks = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    tune_sha256_hex(two_blocks, strlen(two_blocks), hex);
    ck_assert_str_eq(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}
END_TEST

START_TEST(atomic_write_replaces_whole_file)
{
    char dir[] = "/tmp/tune-test-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof path, "%s/a/b/file.txt", dir);
    char sub[256];
    snprintf(sub, sizeof sub, "%s/a/b", dir);
    tune_error err;
    ck_assert_int_eq(tune_mkdir_p(sub, &err), TUNE_OK);
    ck_assert_int_eq(tune_write_file_atomic(path, "first", 5, &err), TUNE_OK);
    ck_assert_int_eq(tune_write_file_atomic(path, "second!", 7, &err), TUNE_OK);
    char *data;
    size_t len;
    ck_assert_int_eq(tune_read_file(path, &data, &len, &err), TUNE_OK);
    ck_assert_uint_eq(len, 7);
    ck_assert_str_eq(data, "second!");
    free(data);
    char tmp[300];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    ck_assert(!tune_path_exists(tmp));
}
END_TEST

START_TEST(missing_file_is_input_error_with_name)
{
    tune_error err;
    char *data;
    size_t len;
    ck_assert_int_eq(tune_read_file("/nonexistent/x.yml", &data, &len, &err), TUNE_ERR_INPUT);
    char buf[2048];
    tune_error_format(&err, buf, sizeof buf);
    ck_assert_ptr_nonnull(strstr(buf, "/nonexistent/x.yml: cannot open"));
}
END_TEST

START_TEST(error_format_positions)
{
    tune_error err;
    char buf[2048];
    tune_error_set(&err, TUNE_ERR_INPUT, "a.yml", 3, 7, "unknown key '%s'", "lr");
    tune_error_format(&err, buf, sizeof buf);
    ck_assert_str_eq(buf, "a.yml:3:7: unknown key 'lr'");
    tune_error_set(&err, TUNE_ERR_INPUT, "d.jsonl", 0, 0, "missing field");
    err.record = 4;
    tune_error_format(&err, buf, sizeof buf);
    ck_assert_str_eq(buf, "d.jsonl: record 4: missing field");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("util");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, sha256_matches_fips_vectors);
    tcase_add_test(tc, atomic_write_replaces_whole_file);
    tcase_add_test(tc, missing_file_is_input_error_with_name);
    tcase_add_test(tc, error_format_positions);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
