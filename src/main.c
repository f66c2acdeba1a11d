#include "tune/backend.h"
#include "tune/cli.h"

int main(int argc, char **argv)
{
    tune_cpu_prefer_fast_blas(argv);
    return tune_cli_main(argc, argv);
}
