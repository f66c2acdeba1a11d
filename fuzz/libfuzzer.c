/* libFuzzer's entry point for one target, named when compiled:
 * -DTUNE_FUZZ_TARGET=tune_fuzz_<name> (see the Makefile's fuzz rules). */
#include "targets.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    TUNE_FUZZ_TARGET(data, size);
    return 0;
}
