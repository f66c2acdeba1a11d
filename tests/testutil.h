/* Shared helpers for the Check suites. */
#ifndef TUNE_TESTUTIL_H
#define TUNE_TESTUTIL_H

#include <cJSON.h>
#include <check.h>
#include <stdio.h>
#include <stdlib.h>

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
