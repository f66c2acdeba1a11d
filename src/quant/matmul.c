/* Products with weights kept in blocks (CPU). */
#include "internal.h"

#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "tune/backend.h"

size_t tune_weight_bytes(const tune_weight *w)
{
    if (w->type == TUNE_Q_F32) return (size_t)w->rows * w->cols * sizeof(float);
    return (size_t)w->rows * tune_qtype_row_bytes(w->type, w->cols) + tune_qtype_stats_bytes(w->type, w->rows, w->cols);
}

/* Scratch for rows of W. The CPU operations have no error path (they
 * cannot fail but for this): a process that cannot get a few hundred KB
 * stops here rather than compute with rows it never filled. */
static float *scratch(size_t floats)
{
    float *p = malloc(floats * sizeof *p);
    if (!p) {
        fputs("tune: out of memory for a weight tile\n", stderr);
        abort();
    }
    return p;
}

/* A thread's own scratch, kept for its next product: a training step and a
 * decoding step allocate nothing once each thread has held its largest
 * tile. Slot 0 is for the parallel region's buffers, slot 1 for the calling
 * thread's before it (that thread also works in the region). Held through
 * a pthread key, so a thread that ends (a server's slot, its OpenMP team)
 * frees its own. */
typedef struct thread_tiles {
    float *buf[2];
    size_t cap[2];
} thread_tiles;

static pthread_key_t tiles_key;
static pthread_once_t tiles_once = PTHREAD_ONCE_INIT;

static void tiles_free(void *p)
{
    thread_tiles *t = p;
    free(t->buf[0]);
    free(t->buf[1]);
    free(t);
}

static void tiles_key_create(void)
{
    if (pthread_key_create(&tiles_key, tiles_free)) {
        fputs("tune: cannot create a thread key for weight tiles\n", stderr);
        abort();
    }
}

static float *thread_scratch(int slot, size_t floats)
{
    pthread_once(&tiles_once, tiles_key_create);
    thread_tiles *t = pthread_getspecific(tiles_key);
    if (!t) {
        t = calloc(1, sizeof *t);
        if (!t || pthread_setspecific(tiles_key, t)) {
            fputs("tune: out of memory for a weight tile\n", stderr);
            abort();
        }
    }
    if (floats > t->cap[slot]) {
        free(t->buf[slot]);
        t->buf[slot] = scratch(floats);
        t->cap[slot] = floats;
    }
    return t->buf[slot];
}

/* Rows of W dequantised at a time: about 4 MB of fp32, whole 16-row
 * groups. Fewer, larger products: with 1 MB tiles the forward products of
 * SmolLM2's layers ran 10% below the fp32 sgemm rate (x repacked for each
 * tile), with 4 MB within a few percent of it; the tile stays in the
 * second-level cache's neighbourhood (L2 + L3), each thread has its own. */
static int tile_rows(int cols)
{
    int r = (4 * 1024 * 1024 / 4) / (cols > 0 ? cols : 1);
    r = r < 16 ? 16 : r > 2048 ? 2048 : r;
    return r / 16 * 16;
}

/* y(N, rows) = beta·y + x(N, cols)·Wᵀ, one weight row at a time, N ≤
 * TUNE_QUANT_DOT_ROWS: the fused kernel of the type where there is one,
 * else the row dequantised and a plain dot product per x row. */
static void dot_rows(float *y, const float *x, const tune_weight *w, int N, float beta)
{
    const int cols = w->cols;
    const int n_threads = (size_t)w->rows * cols < TUNE_CPU_PARALLEL_MIN ? 1 : omp_get_max_threads();
    float *xsum = NULL; /* (cols / 32): the block sums of a single x row */
    if (N == 1 && cols % 32 == 0) {
        xsum = thread_scratch(1, (size_t)cols / 32);
        for (int b = 0; b < cols / 32; b++) {
            float s = 0.0f;
            for (int i = 0; i < 32; i++) s += x[32 * b + i];
            xsum[b] = s;
        }
    }
    const tune_quant_dot1_fn dot1 = xsum ? tune_quant_dot1_kernel(w->type) : NULL;
    const size_t rb = tune_qtype_row_bytes(w->type, cols);
#pragma omp parallel num_threads(n_threads)
    {
        float *row = thread_scratch(0, (size_t)cols), sums[TUNE_QUANT_DOT_ROWS];
#pragma omp for schedule(static)
        for (int r = 0; r < w->rows; r++) {
            if (dot1)
                sums[0] = dot1(w->blocks + (size_t)r * rb, cols, x, xsum);
            else if (!tune_quant_weight_dot(w, r, x, N, sums)) {
                tune_weight_row(w, r, row);
                for (int n = 0; n < N; n++) {
                    const float *xn = x + (size_t)n * cols;
                    double sum = 0.0;
                    for (int i = 0; i < cols; i++) sum += (double)row[i] * xn[i];
                    sums[n] = (float)sum;
                }
            }
            for (int n = 0; n < N; n++) {
                float *out = y + (size_t)n * w->rows + r;
                *out = sums[n] + (beta == 0.0f ? 0.0f : beta * *out);
            }
        }
    }
}

/* Rows of x from which a product splits x between threads
 * (tiled_by_x_rows) rather than W's rows (tiled_xwt_by_weight_rows,
 * tiled_x_w_by_halves). */
enum { X_ROWS_MIN = 512 };

/* Dequantises rows r0 .. r0 + n − 1 of w into tile (n, cols). */
static void dequant_tile(float *tile, const tune_weight *w, int r0, int n)
{
    for (int r = 0; r < n; r++) tune_quant_weight_row(w, r0 + r, tile + (size_t)r * w->cols);
}

/* trans 0 with few rows of x (the lm_head's tokens): each thread owns a
 * slice of W's rows (columns of y) and walks it a tile at a time, so W is
 * dequantised once. */
static void tiled_xwt_by_weight_rows(float *y, const float *x, const tune_weight *w, int N, float beta)
{
    const int R = tile_rows(w->cols), n_threads = omp_get_max_threads();
    const int slice = ((w->rows + n_threads - 1) / n_threads + 15) / 16 * 16;
    openblas_set_num_threads(1);
#pragma omp parallel num_threads(n_threads)
    {
        float *tile = thread_scratch(0, (size_t)R * w->cols);
        const int lo = omp_get_thread_num() * slice, hi = lo + slice < w->rows ? lo + slice : w->rows;
        for (int r0 = lo; r0 < hi; r0 += R) {
            const int n = hi - r0 < R ? hi - r0 : R;
            dequant_tile(tile, w, r0, n);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, n, w->cols, 1.0f, x, w->cols, tile, w->cols,
                        beta, y + r0, w->rows);
        }
    }
}

/* Rows r0 .. r1 − 1 of W (a multiple of 16 apart but for the last) times
 * the same columns of x, a tile at a time: y = beta·y + x[:, r0 .. r1)·W[r0 .. r1). */
static void rows_x_w(float *y, const float *x, const tune_weight *w, int N, int r0, int r1, float beta, float *tile)
{
    const int R = tile_rows(w->cols);
    for (int a = r0; a < r1; a += R) {
        const int n = r1 - a < R ? r1 - a : R;
        dequant_tile(tile, w, a, n);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, w->cols, n, 1.0f, x + a, w->rows, tile, w->cols,
                    a == r0 ? beta : 1.0f, y, w->cols);
    }
}

/* Each thread owns a slice of x's rows and takes W's tiles in row order:
 * y = x·Wᵀ (trans 0) or x·W (trans 1). Every thread dequantises all of W,
 * which costs a few percent of a product with hundreds of rows of x and
 * runs each thread's sgemm over half the tokens and whole tiles, faster
 * than a slice of W's rows against all of them (measured 330 against 300
 * GFLOP/s for down_proj's forward on 2 cores). */
static void tiled_by_x_rows(float *y, const float *x, const tune_weight *w, int N, int trans, float beta)
{
    const int R = tile_rows(w->cols);
    const int n_threads = (double)N * w->rows * w->cols < 64.0 * TUNE_CPU_PARALLEL_MIN ? 1 : omp_get_max_threads();
    const int slice = ((N + n_threads - 1) / n_threads + 15) / 16 * 16;
    const int ldx = trans ? w->rows : w->cols, ldy = trans ? w->cols : w->rows;
    openblas_set_num_threads(1);
#pragma omp parallel num_threads(n_threads)
    {
        float *tile = thread_scratch(0, (size_t)R * w->cols);
        const int lo = omp_get_thread_num() * slice, hi = lo + slice < N ? lo + slice : N;
        if (trans && lo < hi) /* y (rows of x, cols) = beta·y + x · W */
            rows_x_w(y + (size_t)lo * ldy, x + (size_t)lo * ldx, w, hi - lo, 0, w->rows, beta, tile);
        for (int r0 = 0; !trans && lo < hi && r0 < w->rows; r0 += R) {
            const int n = w->rows - r0 < R ? w->rows - r0 : R;
            dequant_tile(tile, w, r0, n); /* y[:, r0 .. r0 + n) = x · tileᵀ */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, hi - lo, n, w->cols, 1.0f, x + (size_t)lo * ldx, ldx,
                        tile, w->cols, beta, y + (size_t)lo * ldy + r0, ldy);
        }
    }
}

/* trans 1 with few rows of x (the head's backward on a chunk of targets):
 * W's rows go in two halves, the second's product into scratch and then
 * added, so each of two threads dequantises and packs half of W rather
 * than all of it (the split by rows of x would have both walk all of W).
 * Two halves whatever the thread count: the sum's order, and so its bits,
 * stay those of one thread. */
static void tiled_x_w_by_halves(float *y, const float *x, const tune_weight *w, int N, float beta)
{
    int half = ((w->rows + 1) / 2 + 15) / 16 * 16;
    if (half > w->rows) half = w->rows;
    const size_t ny = (size_t)N * w->cols;
    float *second = thread_scratch(1, ny);
    const int n_threads = (double)N * w->rows * w->cols < 64.0 * TUNE_CPU_PARALLEL_MIN ? 1 : 2;
    openblas_set_num_threads(1);
#pragma omp parallel num_threads(n_threads)
    {
        float *tile = thread_scratch(0, (size_t)tile_rows(w->cols) * w->cols);
        const int t = omp_get_thread_num(), nt = omp_get_num_threads();
        if (t == 0) rows_x_w(y, x, w, N, 0, half, beta, tile);
        if (t == nt - 1) rows_x_w(second, x, w, N, half, w->rows, 0.0f, tile);
    }
    if (half == w->rows) return;
#pragma omp parallel for simd if (ny >= TUNE_CPU_PARALLEL_MIN)
    for (size_t i = 0; i < ny; i++) y[i] += second[i];
}

void tune_weight_matmul(float *y, const float *x, const tune_weight *w, int N, int trans, float beta)
{
    if (w->type == TUNE_Q_F32) {
        if (trans) tune_cpu_matmul(y, x, w->f32, N, w->cols, w->rows, 0, 0, 1.0f, beta);
        else tune_cpu_matmul(y, x, w->f32, N, w->rows, w->cols, 0, 1, 1.0f, beta);
        return;
    }
    if (N == 0) return;
    if (!trans && N <= TUNE_QUANT_DOT_ROWS) dot_rows(y, x, w, N, beta);
    else if (!trans && N < X_ROWS_MIN) tiled_xwt_by_weight_rows(y, x, w, N, beta);
    else if (trans && N < X_ROWS_MIN) tiled_x_w_by_halves(y, x, w, N, beta);
    else tiled_by_x_rows(y, x, w, N, trans, beta);
}

void tune_weight_matmul_ref(float *y, const float *x, const tune_weight *w, int N, int trans, float beta)
{
    float *full = w->f32;
    if (w->type != TUNE_Q_F32) {
        full = scratch((size_t)w->rows * w->cols);
        for (int r = 0; r < w->rows; r++) tune_weight_row(w, r, full + (size_t)r * w->cols);
    }
    if (trans) tune_cpu_matmul_ref(y, x, full, N, w->cols, w->rows, 0, 0, 1.0f, beta);
    else tune_cpu_matmul_ref(y, x, full, N, w->rows, w->cols, 0, 1, 1.0f, beta);
    if (full != w->f32) free(full);
}

void tune_weight_dequantize(const tune_weight *w, float *out)
{
    if (w->type == TUNE_Q_F32) memcpy(out, w->f32, (size_t)w->rows * w->cols * sizeof *out);
    else dequant_tile(out, w, 0, w->rows);
}

void tune_weight_rows(float *out, const tune_weight *w, const int32_t *ids, int N)
{
    if (w->type == TUNE_Q_F32) {
        tune_cpu_embedding(out, w->f32, ids, N, w->cols);
        return;
    }
#pragma omp parallel for if ((size_t)N * w->cols >= TUNE_CPU_PARALLEL_MIN)
    for (int n = 0; n < N; n++) tune_quant_weight_row(w, ids[n], out + (size_t)n * w->cols);
}
