/* Products with, and rows of, model matrices kept in blocks: a bounded
 * tile of rows is dequantised (tune/quant.h's block maths, as on the CPU)
 * into a scratch buffer and multiplied with cuBLAS. */
#include "cuda_internal.h"

/* At most this many fp32 values of a matrix exist at once (64 MB). */
#define TILE_VALUES ((size_t)16 << 20)

/* NF4_DQ's code table (tune/quant.h), in the GPU's memory. */
__device__ static const float nf4_dq_code[256] = TUNE_NF4_DQ_CODE_VALUES;

/* One thread per block: rows r0 .. r0 + n − 1 of the blocks into tile (n, cols),
 * or, with ids, rows ids[0 .. n − 1]. stats: NF4_DQ's statistics after the
 * matrix's rows (NULL for other types). */
__global__ static void dequant_rows_kernel(float *tile, const uint8_t *blocks, uint32_t type, size_t row_bytes,
                                           int cols, int bv, int bb, int r0, const int32_t *ids, int n,
                                           const uint8_t *stats)
{
    const size_t per_row = (size_t)(cols / bv), total = (size_t)n * per_row;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        const size_t r = i / per_row, b = i % per_row;
        const size_t src = ids ? (size_t)ids[r] : (size_t)r0 + r;
        const uint8_t *blk = blocks + src * row_bytes + b * bb;
        if (stats) tune_dequant_nf4_dq(nf4_dq_code, stats, src * per_row + b, blk, tile + r * cols + b * bv);
        else tune_dequant_block(type, blk, tile + r * cols + b * bv);
    }
}

static void dequant_rows(float *tile, const tune_weight *w, int r0, const int32_t *ids, int n)
{
    const int bv = tune_qtype_block_values(w->type), bb = tune_qtype_block_bytes(w->type);
    const size_t blocks = (size_t)n * (w->cols / bv), row_bytes = tune_qtype_row_bytes(w->type, w->cols);
    if (!blocks) return;
    const uint8_t *stats = w->type == TUNE_Q_NF4_DQ ? w->blocks + (size_t)w->rows * row_bytes : NULL;
    dequant_rows_kernel<<<tune_cuda_blocks(blocks), TUNE_CUDA_THREADS>>>(tile, w->blocks, w->type, row_bytes, w->cols,
                                                                         bv, bb, r0, ids, n, stats);
    tune_cuda_launched("dequantisation kernel");
}

void tune_cuda_weight_matmul(float *y, const float *x, const tune_weight *w, int N, int trans, float beta)
{
    if (w->type == TUNE_Q_F32) {
        if (trans) tune_cuda_matmul(y, x, w->f32, N, w->cols, w->rows, 0, 0, 1.0f, beta);
        else tune_cuda_matmul(y, x, w->f32, N, w->rows, w->cols, 0, 1, 1.0f, beta);
        return;
    }
    if (N == 0 || w->rows == 0) return;
    static void *scratch;
    static size_t have;
    size_t R = TILE_VALUES / (size_t)w->cols;
    R = R < 1 ? 1 : R > (size_t)w->rows ? (size_t)w->rows : R;
    float *tile = (float *)tune_cuda_scratch(&scratch, &have, R * w->cols * sizeof(float), "weight tile");
    if (!tile) return;
    for (int r0 = 0; r0 < w->rows; r0 += (int)R) {
        const int n = w->rows - r0 < (int)R ? w->rows - r0 : (int)R;
        dequant_rows(tile, w, r0, NULL, n);
        /* Row-major arrays are column-major transposes (see tune_cuda_matmul). */
        if (trans) /* y (N, cols) += x[:, r0 .. r0 + n) · tile */
            tune_cuda_sgemm_cm(0, 0, w->cols, N, n, tile, w->cols, x + r0, w->rows, r0 == 0 ? beta : 1.0f, y,
                               w->cols);
        else /* y[:, r0 .. r0 + n) = x · tileᵀ */
            tune_cuda_sgemm_cm(1, 0, n, N, w->cols, tile, w->cols, x, w->cols, beta, y + r0, w->rows);
    }
}

void tune_cuda_weight_rows(float *out, const tune_weight *w, const int32_t *ids, int N)
{
    if (w->type == TUNE_Q_F32) tune_cuda_embedding(out, w->f32, ids, N, w->cols);
    else dequant_rows(out, w, 0, ids, N);
}
