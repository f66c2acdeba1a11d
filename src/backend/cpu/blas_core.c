#include "tune/backend.h"

#include <cblas.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

const char *tune_cpu_blas_core(void) { return openblas_get_corename(); }

static int is_avx512_core(const char *name)
{
    static const char *const fast[] = {"skylakex", "cooperlake", "sapphirerapids"};
    for (size_t i = 0; i < sizeof fast / sizeof fast[0]; i++)
        if (!strcasecmp(name, fast[i])) return 1;
    return 0;
}

void tune_cpu_prefer_fast_blas(char **argv)
{
    const char *keep = getenv("TUNE_KEEP_BLAS_CORE");
    if ((keep && *keep && strcmp(keep, "0")) || getenv("TUNE_BLAS_REEXEC")) return;
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx512f") || is_avx512_core(openblas_get_corename())) return;
    setenv("OPENBLAS_CORETYPE", "SkylakeX", 1);
    setenv("TUNE_BLAS_REEXEC", "1", 1); /* never loop */
    execv("/proc/self/exe", argv);
    /* exec failed: carry on with the kernels we have */
}
