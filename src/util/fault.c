/* The fault-injection hook of the end-to-end tests (tune/util.h). */
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tune/util.h"

void tune_test_fault_point(const char *fmt, ...)
{
    const char *spec = getenv("TUNE_TEST_FAULT");
    if (!spec) return;
    int sig;
    if (!strncmp(spec, "kill@", 5)) sig = SIGKILL;
    else if (!strncmp(spec, "stop@", 5)) sig = SIGSTOP;
    else return;
    const char *want = spec + 5;
    char point[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(point, sizeof point, fmt, ap);
    va_end(ap);
    const size_t n = strlen(point), m = strlen(want);
    if (m > 0 && m <= n && !strcmp(point + n - m, want)) raise(sig);
}
