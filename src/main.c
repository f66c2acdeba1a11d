#include <signal.h>

#include "tune/backend.h"
#include "tune/cli.h"

int main(int argc, char **argv)
{
    tune_cpu_prefer_fast_blas(argv);
    /* A file-size limit (ulimit -f) then fails the write with EFBIG, which
     * tune reports naming the file, instead of killing the process. */
    signal(SIGXFSZ, SIG_IGN);
    return tune_cli_main(argc, argv);
}
