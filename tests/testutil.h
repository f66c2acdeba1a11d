/* Shared helpers for the Check suites. */
#ifndef TUNE_TESTUTIL_H
#define TUNE_TESTUTIL_H

#include <check.h>
#include <stdio.h>
#include <stdlib.h>

/* Directory of fixtures; `make unit` sets TUNE_TEST_DATA. */
static inline const char *test_data_dir(void)
{
    const char *d = getenv("TUNE_TEST_DATA");
    return d && *d ? d : "tests/data";
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
