/* What the quant module's files share: the fast row dequantisation and dot
 * product of simd.c (AVX-512 where the CPU has it). */
#ifndef TUNE_QUANT_INTERNAL_H
#define TUNE_QUANT_INTERNAL_H

#include <string.h>

#include "tune/quant.h"

/* 1 when this CPU runs the AVX-512 kernels. */
int tune_quant_have_avx512(void);
/* tune_dequant_row, bit for bit, with AVX-512 for the common types. */
void tune_quant_dequant_row(uint32_t type, const uint8_t *row, float *y, int cols);
/* Up to this many rows of x, a product reads each weight row once and
 * takes its dot products with every x row (decoding, short prompts). */
#define TUNE_QUANT_DOT_ROWS 8

/* out[n] = Σ_i row[i]·x[n·cols + i] for n < N ≤ TUNE_QUANT_DOT_ROWS, straight
 * from the blocks (AVX-512, common types): 1, or 0 when there is no such
 * kernel (the caller dequantises the row and takes the dots itself). */
int tune_quant_dot_rows(uint32_t type, const uint8_t *row, int cols, const float *x, int N, float *out);

/* The single-row kernel of a type (decoding: N = 1): returns Σ row·x, given
 * xsum (cols / 32), the sums of x's 32-value blocks, which lets the types
 * with an offset skip forming the values; NULL where this CPU or this type
 * has none. Chosen once per product rather than per row: per-row dispatch
 * cost a decoding step 5%. */
typedef float (*tune_quant_dot1_fn)(const uint8_t *row, int cols, const float *x, const float *xsum);
tune_quant_dot1_fn tune_quant_dot1_kernel(uint32_t type);

/* tune_quant_dequant_row and tune_quant_dot_rows for row r of a weight in
 * blocks, NF4_DQ included (whose rows need the statistics after the
 * matrix): the row bit for bit as tune_weight_row makes it, and its dot
 * products (1, or 0 where the caller dequantises the row itself). */
void tune_quant_weight_row(const tune_weight *w, int r, float *y);
int tune_quant_weight_dot(const tune_weight *w, int r, const float *x, int N, float *out);

#endif
