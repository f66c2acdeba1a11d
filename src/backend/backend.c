#include "tune/backend.h"

#include <stdio.h>

#ifndef TUNE_CUDA
int tune_cuda_probe(char *why, unsigned long why_size)
{
    snprintf(why, why_size, "this tune was built without CUDA (rebuild with `make CUDA=1`)");
    return 0;
}
#endif
