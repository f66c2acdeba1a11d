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


/* CUDA backend (built with `make CUDA=1`). tune_cuda_probe says whether a
 * usable GPU is present; without one, or in a build without CUDA, it returns
 * 0 and writes the reason into why. */
int tune_cuda_probe(char *why, unsigned long why_size);

#ifdef TUNE_CUDA
/* out (M, N) = a (M, K) · b(N, K)ᵀ on the GPU, all pointers in device memory,
 * row-major as everywhere in tune. Returns 0 on success. */
int tune_cuda_matmul_nt(float *out, const float *a, const float *b, int M, int N, int K);
/* Inverted-dropout mask from the shared Philox stream: mask[i] is 0 or
 * 1/(1-p) for element i of (seed, stream). Device memory. */
int tune_cuda_dropout_mask(float *mask, long n, float p, unsigned long long seed,
                           unsigned long long stream);
#endif

#endif
