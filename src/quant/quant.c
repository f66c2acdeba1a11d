/* Storage types: the table of block shapes, and rows dequantised through the
 * per-block maths of tune/quant.h. */
#include "tune/quant.h"

#include <string.h>

typedef struct qtype_info {
    const char *name;
    int values, bytes; /* per block */
} qtype_info;

/* Indexed by ggml's type number; NF4 (tune's own number) apart. */
static const qtype_info qtypes[] = {
    [TUNE_Q_F32] = {"F32", 1, 4},     [TUNE_Q_F16] = {"F16", 1, 2},     [TUNE_Q4_0] = {"Q4_0", 32, 18},
    [TUNE_Q4_1] = {"Q4_1", 32, 20},   [TUNE_Q5_0] = {"Q5_0", 32, 22},   [TUNE_Q5_1] = {"Q5_1", 32, 24},
    [TUNE_Q8_0] = {"Q8_0", 32, 34},   [TUNE_Q2_K] = {"Q2_K", 256, 84},  [TUNE_Q3_K] = {"Q3_K", 256, 110},
    [TUNE_Q4_K] = {"Q4_K", 256, 144}, [TUNE_Q5_K] = {"Q5_K", 256, 176}, [TUNE_Q6_K] = {"Q6_K", 256, 210},
    [TUNE_Q_BF16] = {"BF16", 1, 2},
};
#define N_QTYPES (sizeof qtypes / sizeof qtypes[0])

/* NF4: 64 values, {f32 absmax; u8 codes[32]} (tune_dequant_nf4); NF4_DQ:
 * {u8 q; u8 codes[32]}, the absmax from the statistics (tune_dequant_nf4_dq). */
static const qtype_info nf4 = {"NF4", 64, 36}, nf4_dq = {"NF4_DQ", 64, 33};

const float tune_nf4_dq_code[256] = TUNE_NF4_DQ_CODE_VALUES;

static const qtype_info *info(uint32_t type)
{
    if (type == TUNE_Q_NF4) return &nf4;
    if (type == TUNE_Q_NF4_DQ) return &nf4_dq;
    return type < N_QTYPES && qtypes[type].name ? &qtypes[type] : NULL;
}

int tune_qtype_block_values(uint32_t type)
{
    const qtype_info *q = info(type);
    return q ? q->values : 0;
}

int tune_qtype_block_bytes(uint32_t type)
{
    const qtype_info *q = info(type);
    return q ? q->bytes : 0;
}

const char *tune_qtype_name(uint32_t type)
{
    const qtype_info *q = info(type);
    return q ? q->name : NULL;
}

size_t tune_qtype_row_bytes(uint32_t type, int cols)
{
    const qtype_info *q = info(type);
    if (!q || cols < 0 || cols % q->values) return 0;
    return (size_t)(cols / q->values) * (size_t)q->bytes;
}

size_t tune_qtype_stats_bytes(uint32_t type, int rows, int cols)
{
    if (type != TUNE_Q_NF4_DQ || rows <= 0 || cols < 64) return 0;
    const size_t blocks = (size_t)rows * (size_t)(cols / 64);
    return 4 * (1 + (blocks + 255) / 256); /* offset, absmax2 per 256 blocks */
}

void tune_dequant_row(uint32_t type, const uint8_t *row, float *y, int cols)
{
    switch (type) {
    case TUNE_Q_F32:
        memcpy(y, row, (size_t)cols * sizeof(float));
        return;
    case TUNE_Q_F16:
        for (int i = 0; i < cols; i++) y[i] = tune_f16_to_f32(tune_load_u16(row + 2 * i));
        return;
    case TUNE_Q_BF16:
        for (int i = 0; i < cols; i++) y[i] = tune_bf16_to_f32(tune_load_u16(row + 2 * i));
        return;
    default:
        break;
    }
    const qtype_info *q = info(type);
    /* not a readable type (callers check tune_qtype_name first), or rows that need their matrix */
    if (!q || type == TUNE_Q_NF4_DQ) return;
    for (int b = 0; b < cols / q->values; b++) tune_dequant_block(type, row + (size_t)b * q->bytes, y + (size_t)b * q->values);
}

void tune_weight_row(const tune_weight *w, int r, float *y)
{
    if (w->type == TUNE_Q_F32) {
        memcpy(y, w->f32 + (size_t)r * w->cols, (size_t)w->cols * sizeof *y);
        return;
    }
    const size_t rb = tune_qtype_row_bytes(w->type, w->cols);
    const uint8_t *row = w->blocks + (size_t)r * rb;
    if (w->type != TUNE_Q_NF4_DQ) {
        tune_dequant_row(w->type, row, y, w->cols);
        return;
    }
    const uint8_t *stats = w->blocks + (size_t)w->rows * rb;
    const int nb = w->cols / 64;
    for (int b = 0; b < nb; b++)
        tune_dequant_nf4_dq(tune_nf4_dq_code, stats, (size_t)r * nb + b, row + (size_t)b * 33, y + (size_t)b * 64);
}
