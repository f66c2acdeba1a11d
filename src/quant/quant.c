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

/* NF4: 64 values, {f32 absmax; u8 codes[32]} (tune_dequant_nf4). */
static const qtype_info nf4 = {"NF4", 64, 36};

static const qtype_info *info(uint32_t type)
{
    if (type == TUNE_Q_NF4) return &nf4;
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
    if (!q) return; /* not a readable type: callers check tune_qtype_name first */
    for (int b = 0; b < cols / q->values; b++) tune_dequant_block(type, row + (size_t)b * q->bytes, y + (size_t)b * q->values);
}
