/* Compute backends: cpu (BLAS + OpenMP) and cuda (cuBLAS + cuRAND + kernels)
 * offer the same small set of operations. */
#ifndef TUNE_BACKEND_H
#define TUNE_BACKEND_H

/* Debian's OpenBLAS 0.3.21 may run its slower Haswell/Prescott kernels on an
 * AVX-512 CPU (it does not recognise the core, or the environment pins it).
 * The library reads OPENBLAS_CORETYPE only when it loads, so when the loaded
 * core is not an AVX-512 one and the CPU has AVX-512, this sets SkylakeX and
 * re-executes the program once. TUNE_KEEP_BLAS_CORE=1 turns it off. */
void tune_cpu_prefer_fast_blas(char **argv);
/* The OpenBLAS core in use, e.g. "SkylakeX". */
const char *tune_cpu_blas_core(void);

#endif
