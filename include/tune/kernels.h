/* Per-element maths written once: the CPU loops and the CUDA kernels both
 * call these, so the CPU tests cover the GPU's arithmetic. */
#ifndef TUNE_KERNELS_H
#define TUNE_KERNELS_H

#include <math.h>
#include <stdint.h>

#ifdef __CUDACC__
#define TUNE_HD __host__ __device__
#else
#define TUNE_HD
#endif

#endif
