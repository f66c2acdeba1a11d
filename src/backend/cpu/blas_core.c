#include "tune/backend.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* Who picked the kernels in use, for the log and `tune --version`. */
static const char *blas_origin = "OpenBLAS's own choice for this CPU";

void tune_cpu_blas_describe(char *buf, size_t size)
{
    snprintf(buf, size, "%s, %s kernels (%s)", openblas_get_config(), openblas_get_corename(), blas_origin);
}

static int is_avx512_core(const char *name)
{
    static const char *const fast[] = {"skylakex", "cooperlake", "sapphirerapids"};
    for (size_t i = 0; i < sizeof fast / sizeof fast[0]; i++)
        if (!strcasecmp(name, fast[i])) return 1;
    return 0;
}

void tune_cpu_prefer_fast_blas(char **argv)
{
    if (getenv("TUNE_BLAS_REEXEC")) { /* this process is the re-execution below */
        unsetenv("TUNE_BLAS_REEXEC");
        blas_origin = "OPENBLAS_CORETYPE=SkylakeX, set by tune for this AVX-512 CPU";
        return;
    }
    /* A setting of the user's own (say, a workaround for kernels that
     * misbehave on their processor) is theirs to keep. It also ends the
     * re-execution: the second process finds it set. */
    const char *user = getenv("OPENBLAS_CORETYPE");
    if (user && *user) {
        blas_origin = "OPENBLAS_CORETYPE from the environment";
        return;
    }
    const char *keep = getenv("TUNE_KEEP_BLAS_CORE");
    if (keep && *keep && strcmp(keep, "0")) return;
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx512f") || is_avx512_core(openblas_get_corename())) return;
    setenv("OPENBLAS_CORETYPE", "SkylakeX", 1);
    setenv("TUNE_BLAS_REEXEC", "1", 1);
    execv("/proc/self/exe", argv);
    /* exec failed: carry on with the kernels we have */
    unsetenv("OPENBLAS_CORETYPE");
    unsetenv("TUNE_BLAS_REEXEC");
}
