/* Shared helpers for the Check suites. */
#ifndef TUNE_TESTUTIL_H
#define TUNE_TESTUTIL_H

#include <cJSON.h>
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tune/backend.h"
#include "tune/util.h"

/* Directory of fixtures; `make unit` sets TUNE_TEST_DATA. */
static inline const char *test_data_dir(void)
{
    const char *d = getenv("TUNE_TEST_DATA");
    return d && *d ? d : "tests/data";
}

/* The JSON file rel (under the fixtures directory), parsed; the test fails when it cannot be. */
static inline cJSON *test_read_json(const char *rel)
{
    char path[1024], *text;
    size_t len;
    tune_error err;
    snprintf(path, sizeof path, "%s/%s", test_data_dir(), rel);
    ck_assert_msg(tune_read_file(path, &text, &len, &err) == TUNE_OK, "%s", err.message);
    cJSON *doc = cJSON_ParseWithLength(text, len);
    free(text);
    ck_assert_msg(doc != NULL, "%s is not JSON", path);
    return doc;
}

/* Memory of the device emulation: NaN bytes at first, as a GPU's fresh
 * memory holds anything, so nothing may count on zeroed buffers. */
static inline void *test_emulated_alloc(size_t bytes)
{
    const size_t rounded = (bytes + 63) & ~(size_t)63;
    void *p = aligned_alloc(64, rounded ? rounded : 64);
    if (p) memset(p, 0xff, rounded);
    return p;
}

/* The CPU's kernels behind a device's bookkeeping: its buffers are memory
 * of their own, reached only by upload and download. A run on it must give
 * the CPU backend's bytes, which proves without a GPU that the passes, the
 * training loop, evaluation and decoding keep their state on the backend and
 * move every value to and from it where a GPU needs that. */
static inline const tune_backend *test_device_emulation(void)
{
    static tune_backend emu;
    if (!emu.name) {
        emu = *tune_backend_cpu();
        emu.name = "device emulation";
        emu.device = 1;
        emu.alloc = test_emulated_alloc;
    }
    return &emu;
}

/* Runs one suite and returns the process exit status. */
static inline int run_suite(Suite *s)
{
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

#endif
