/* CUDA backend: cuBLAS for matrix products, kernels that call the same
 * TUNE_HD per-element maths as the CPU loops. */
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <stdio.h>

extern "C" {
#include "tune/backend.h"
#include "tune/kernels.h"
#include "tune/rng.h"
}

extern "C" int tune_cuda_probe(char *why, unsigned long why_size)
{
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) {
        snprintf(why, why_size, "no usable CUDA device: %s", cudaGetErrorString(e));
        return 0;
    }
    if (count == 0) {
        snprintf(why, why_size, "no CUDA device present");
        return 0;
    }
    cudaDeviceProp prop;
    cudaGetDeviceProperties(&prop, 0);
    snprintf(why, why_size, "%s (compute %d.%d)", prop.name, prop.major, prop.minor);
    return 1;
}

static cublasHandle_t cublas_handle(void)
{
    static cublasHandle_t handle = NULL;
    if (!handle && cublasCreate(&handle) != CUBLAS_STATUS_SUCCESS) handle = NULL;
    return handle;
}

extern "C" int tune_cuda_matmul_nt(float *out, const float *a, const float *b, int M, int N, int K)
{
    cublasHandle_t h = cublas_handle();
    if (!h) return -1;
    const float one = 1.0f, zero = 0.0f;
    /* Row-major out = a·bᵀ is column-major outᵀ = b·aᵀ. */
    cublasStatus_t s = cublasSgemm(h, CUBLAS_OP_T, CUBLAS_OP_N, N, M, K, &one, b, K, a, K, &zero, out, N);
    return s == CUBLAS_STATUS_SUCCESS ? 0 : -1;
}

__global__ static void dropout_mask_kernel(float *mask, long n, float p, unsigned long long seed,
                                           unsigned long long stream, unsigned long long base)
{
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const float u = tune_rng_uniform(seed, stream, base + (uint64_t)i);
    mask[i] = tune_dropout_keep(u, p) ? 1.0f / (1.0f - p) : 0.0f;
}

extern "C" int tune_cuda_dropout_mask(float *mask, long n, float p, unsigned long long seed,
                                      unsigned long long stream, unsigned long long base)
{
    const int threads = 256;
    dropout_mask_kernel<<<(unsigned)((n + threads - 1) / threads), threads>>>(mask, n, p, seed, stream, base);
    return cudaGetLastError() == cudaSuccess ? 0 : -1;
}
