#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
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

/* A write the file system refuses (here a file-size limit: EFBIG, as a
 * full disk gives ENOSPC) names the file and the reason, and leaves the old
 * file whole and no temporary behind. In a child: the limit is per process. */
START_TEST(failed_atomic_write_keeps_the_old_file)
{
    char dir[] = "/tmp/tune-test-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char path[256], tmp[300];
    snprintf(path, sizeof path, "%s/state.json", dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    tune_error err;
    ck_assert_int_eq(tune_write_file_atomic(path, "old", 3, &err), TUNE_OK);
    const pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        signal(SIGXFSZ, SIG_IGN);
        const struct rlimit lim = {4096, 4096};
        static char big[3 * 4096];
        if (setrlimit(RLIMIT_FSIZE, &lim) != 0) _exit(3);
        const tune_status st = tune_write_file_atomic(path, big, sizeof big, &err);
        _exit(st == TUNE_ERR_RUN && !strcmp(err.file, tmp) && strstr(err.message, "write failed: File too large") ? 0 : 4);
    }
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %d", status);
    char *data;
    size_t len;
    ck_assert_int_eq(tune_read_file(path, &data, &len, &err), TUNE_OK);
    ck_assert_str_eq(data, "old");
    free(data);
    ck_assert(!tune_path_exists(tmp));
    unlink(path);
    rmdir(dir);
}
END_TEST

/* One writer per output_dir: a second lock on the folder is refused naming
 * the holder's pid (flock treats two opens as two holders, even in one
 * process); once released, or when the file is a dead run's, it is taken. */
START_TEST(output_dir_lock_is_exclusive)
{
    char dir[] = "/tmp/tune-test-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char out[256], lock[300], want[64];
    snprintf(out, sizeof out, "%s/run", dir);
    snprintf(lock, sizeof lock, "%s/" TUNE_LOCK_FILE, out);
    snprintf(want, sizeof want, "(pid %ld holds", (long)getpid());
    tune_error err;
    int a, b;
    ck_assert_int_eq(tune_lock_output_dir(out, &a, &err), TUNE_OK);
    ck_assert_int_eq(tune_lock_output_dir(out, &b, &err), TUNE_ERR_INPUT);
    ck_assert_int_eq(b, -1);
    ck_assert_str_eq(err.file, out);
    ck_assert_msg(strstr(err.message, want) && strstr(err.message, lock), "%s", err.message);
    tune_unlock_output_dir(a);
    /* A killed run's file: its pid stays, its lock went with it. */
    ck_assert_int_eq(tune_write_file_atomic(lock, "999999999\n", 10, &err), TUNE_OK);
    ck_assert_int_eq(tune_lock_output_dir(out, &b, &err), TUNE_OK);
    char *data;
    size_t len;
    ck_assert_int_eq(tune_read_file(lock, &data, &len, &err), TUNE_OK);
    ck_assert_int_eq(atol(data), (long)getpid());
    ck_assert_uint_eq(len, strlen(data));
    ck_assert_ptr_nonnull(strchr(data, '\n'));
    free(data);
    tune_unlock_output_dir(b);
    /* A folder that cannot be made: the path and the system's reason. */
    char under_file[320];
    snprintf(under_file, sizeof under_file, "%s/out", lock);
    ck_assert_int_eq(tune_lock_output_dir(under_file, &b, &err), TUNE_ERR_RUN);
    ck_assert_msg(strstr(err.message, "Not a directory") != NULL, "%s", err.message);
    unlink(lock);
    rmdir(out);
    rmdir(dir);
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
    tcase_add_test(tc, failed_atomic_write_keeps_the_old_file);
    tcase_add_test(tc, output_dir_lock_is_exclusive);
    tcase_add_test(tc, missing_file_is_input_error_with_name);
    tcase_add_test(tc, error_format_positions);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
