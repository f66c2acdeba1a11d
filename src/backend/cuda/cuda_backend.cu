/* The CUDA backend's table: device buffers (cudaMalloc, never managed
 * memory), cuBLAS for the products, the kernels of kernels.cu and
 * attention.cu. Work is queued on the default stream; the first failure of
 * any call or launch is kept and reported by finish, upload and download. */
#include <cublas_v2.h>
#include <stdio.h>
#include <string.h>

#include "cuda_internal.h"

static char first_error[256];
static int failed;

void tune_cuda_fail(const char *what, const char *reason)
{
    if (failed) return;
    failed = 1;
    snprintf(first_error, sizeof first_error, "%s: %s", what, reason);
}

int tune_cuda_check(cudaError_t e, const char *what)
{
    if (e == cudaSuccess) return 0;
    tune_cuda_fail(what, cudaGetErrorString(e));
    return -1;
}

void tune_cuda_launched(const char *what) { tune_cuda_check(cudaGetLastError(), what); }

void *tune_cuda_scratch(void **buf, size_t *have, size_t bytes, const char *what)
{
    if (*have >= bytes) return *buf;
    if (*buf) cudaFree(*buf); /* waits for the work that used it */
    *buf = NULL;
    *have = 0;
    if (tune_cuda_check(cudaMalloc(buf, bytes), what)) return NULL;
    *have = bytes;
    return *buf;
}

static cublasHandle_t blas;

static const char *blas_reason(cublasStatus_t st)
{
    static char text[32];
    snprintf(text, sizeof text, "cuBLAS status %d", (int)st);
    return text;
}

static void *cuda_alloc(size_t bytes)
{
    void *p = NULL;
    if (cudaMalloc(&p, bytes ? bytes : 1) != cudaSuccess) {
        cudaGetLastError(); /* out of memory is the caller's to handle, not sticky */
        return NULL;
    }
    return p;
}

static void cuda_release(void *buf)
{
    if (buf) tune_cuda_check(cudaFree(buf), "cudaFree");
}

static int cuda_upload(void *dst, const void *host_src, size_t bytes)
{
    if (bytes) tune_cuda_check(cudaMemcpy(dst, host_src, bytes, cudaMemcpyHostToDevice), "upload");
    return failed ? -1 : 0;
}

static int cuda_download(void *host_dst, const void *src, size_t bytes)
{
    if (bytes) tune_cuda_check(cudaMemcpy(host_dst, src, bytes, cudaMemcpyDeviceToHost), "download");
    return failed ? -1 : 0;
}

static void cuda_copy(void *dst, const void *src, size_t bytes)
{
    if (bytes && dst != src) tune_cuda_check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, 0), "copy");
}

static void cuda_zero(void *dst, size_t bytes)
{
    if (bytes) tune_cuda_check(cudaMemsetAsync(dst, 0, bytes, 0), "zero");
}

static int cuda_finish(char *why, size_t why_size)
{
    tune_cuda_check(cudaDeviceSynchronize(), "device work");
    if (why_size) snprintf(why, why_size, "%s", failed ? first_error : "");
    return failed ? -1 : 0;
}

static void cuda_memory(size_t *free_bytes, size_t *total_bytes)
{
    if (tune_cuda_check(cudaMemGetInfo(free_bytes, total_bytes), "cudaMemGetInfo")) *free_bytes = *total_bytes = 0;
}

/* Row-major c = op(a)·op(b) is column-major cᵀ = op(b)ᵀ·op(a)ᵀ: the
 * operands swap, and each row-major array is its column-major transpose. */
void tune_cuda_matmul(float *c, const float *a, const float *b, int M, int N, int K, int trans_a, int trans_b,
                      float alpha, float beta)
{
    if (M == 0 || N == 0) return;
    if (K == 0) { /* cuBLAS rejects lda = 0; the product is empty */
        tune_cuda_scale(c, (size_t)M * N, beta);
        return;
    }
    const int lda = trans_a ? M : K, ldb = trans_b ? K : N;
    const cublasStatus_t st = cublasSgemm(blas, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N,
                                          N, M, K, &alpha, b, ldb, a, lda, &beta, c, N);
    if (st != CUBLAS_STATUS_SUCCESS) tune_cuda_fail("cublasSgemm", blas_reason(st));
}

void tune_cuda_sgemm_cm(int trans_a, int trans_b, int m, int n, int k, const float *a, int lda, const float *b,
                        int ldb, float beta, float *c, int ldc)
{
    const float one = 1.0f;
    const cublasStatus_t st = cublasSgemm(blas, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N,
                                          m, n, k, &one, a, lda, b, ldb, &beta, c, ldc);
    if (st != CUBLAS_STATUS_SUCCESS) tune_cuda_fail("cublasSgemm", blas_reason(st));
}

static const tune_backend table = {
    "cuda",
    1,
    cuda_alloc,
    cuda_release,
    cuda_upload,
    cuda_download,
    cuda_copy,
    cuda_zero,
    cuda_finish,
    cuda_memory,
    tune_cuda_matmul,
    tune_cuda_embedding,
    tune_cuda_weight_matmul,
    tune_cuda_weight_rows,
    tune_cuda_embedding_backward,
    tune_cuda_rmsnorm_forward,
    tune_cuda_rmsnorm_backward,
    tune_cuda_rope_tables,
    tune_cuda_rope_forward,
    tune_cuda_rope_backward,
    tune_cuda_attention_scratch,
    tune_cuda_attention_probs,
    tune_cuda_attention_forward,
    tune_cuda_attention_backward,
    tune_cuda_attention_cached,
    tune_cuda_swiglu_forward,
    tune_cuda_swiglu_backward,
    tune_cuda_cross_entropy_forward,
    tune_cuda_add_sum,
    tune_cuda_cross_entropy_backward,
    tune_cuda_dropout_mask,
    tune_cuda_dropout_apply,
    tune_cuda_adamw_update,
    tune_cuda_clip_grad_norm,
    tune_cuda_add,
};

static int usable = -1;   /* -1: not tried yet */
static char description[256];
static int ordinal;       /* the GPU to open (tune_backend_cuda_pick) */

extern "C" void tune_backend_cuda_pick(int index) { ordinal = index; }

/* The picked device, its context and a cuBLAS handle, once. */
static void init(void)
{
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e == cudaSuccess && count == 0) e = cudaErrorNoDevice;
    if (e == cudaSuccess && ordinal >= count) {
        snprintf(description, sizeof description, "no usable CUDA device: GPU %d was asked for (one per rank, by "
                 "node-local rank) but this node has %d", ordinal, count);
        usable = 0;
        return;
    }
    if (e == cudaSuccess) e = cudaSetDevice(ordinal);
    if (e == cudaSuccess) e = cudaFree(0); /* creates the context */
    if (e != cudaSuccess) {
        snprintf(description, sizeof description, "no usable CUDA device: %s", cudaGetErrorString(e));
        usable = 0;
        return;
    }
    cublasStatus_t st = cublasCreate(&blas);
    /* Plain fp32 products: the default mode never rounds sgemm's inputs to
     * TF32 (the CPU's results are the reference); atomics stay off, so
     * reruns are bit-identical. */
    if (st == CUBLAS_STATUS_SUCCESS) st = cublasSetMathMode(blas, CUBLAS_DEFAULT_MATH);
    if (st != CUBLAS_STATUS_SUCCESS) {
        snprintf(description, sizeof description, "no usable CUDA device: cuBLAS could not start (status %d)",
                 (int)st);
        usable = 0;
        return;
    }
    cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, ordinal) != cudaSuccess) {
        snprintf(description, sizeof description, "no usable CUDA device: cannot read device %d's properties", ordinal);
        usable = 0;
        return;
    }
    snprintf(description, sizeof description, "%.200s (compute %d.%d, %.1f GiB)", prop.name, prop.major, prop.minor,
             (double)prop.totalGlobalMem / (1024.0 * 1024.0 * 1024.0));
    usable = 1;
}

extern "C" const tune_backend *tune_backend_cuda(char *why, size_t why_size)
{
    if (usable < 0) init();
    if (why_size) snprintf(why, why_size, "%s", description);
    return usable ? &table : NULL;
}

extern "C" void tune_backend_cuda_describe(char *buf, size_t size) { tune_backend_cuda(buf, size); }
