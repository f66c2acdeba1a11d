/* Replays every input the fuzzers found a bug with (tests/data/fuzz_regressions/
 * <target>/) through the same target function the libFuzzer harness calls
 * (fuzz/targets.h): each must now be handled (accepted or refused) without a
 * crash, an abort of the target's own checks, or (under `make check`) a
 * sanitizer report. */
#include <dirent.h>
#include <sys/stat.h>

#include "targets.h"
#include "testutil.h"

static const struct {
    const char *name;
    void (*run)(const uint8_t *data, size_t size);
} TARGETS[] = {
#define TUNE_FUZZ_ENTRY(name) {#name, tune_fuzz_##name},
    TUNE_FUZZ_TARGETS(TUNE_FUZZ_ENTRY)
#undef TUNE_FUZZ_ENTRY
};
#define N_TARGETS (int)(sizeof TARGETS / sizeof TARGETS[0])

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

START_TEST(saved_inputs_are_handled)
{
    char dir[512];
    snprintf(dir, sizeof dir, "%s/fuzz_regressions/%s", test_data_dir(), TARGETS[_i].name);
    DIR *d = opendir(dir);
    if (!d) return; /* no bug found in this target yet */
    char *names[1024];
    int n = 0;
    for (struct dirent *e; (e = readdir(d)) && n < 1024;)
        if (e->d_name[0] != '.') ck_assert_ptr_nonnull(names[n++] = strdup(e->d_name));
    closedir(d);
    qsort(names, (size_t)n, sizeof *names, by_name);
    for (int i = 0; i < n; i++) {
        char path[1024], *data;
        size_t len;
        tune_error err;
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        ck_assert_msg(tune_read_file(path, &data, &len, &err) == TUNE_OK, "%s", err.message);
        /* an exact-size copy, as libFuzzer passes it: a read past the end is caught under ASan */
        uint8_t *input = malloc(len ? len : 1);
        ck_assert_ptr_nonnull(input);
        memcpy(input, data, len);
        free(data);
        TARGETS[_i].run(input, len);
        free(input);
        free(names[i]);
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("fuzz_regressions");
    TCase *tc = tcase_create("core");
    tcase_add_loop_test(tc, saved_inputs_are_handled, 0, N_TARGETS);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
