/* Micro-batches: rows built once (optional first-fit-decreasing packing),
 * a per-epoch Philox shuffle of the rows, padding. */
#include <stdlib.h>
#include <string.h>

#include "tune/data.h"
#include "tune/rng.h"

struct tune_batcher {
    const tune_example_set *set;
    tune_batch_options o;
    int epoch;           /* epoch row_order belongs to; -1 none */
    size_t *row_start;   /* (n_rows + 1) into row_items */
    size_t *row_items;   /* (count) example indices, row by row */
    size_t n_rows;
    size_t *row_order;   /* (n_rows) rows in this epoch's order */
    int32_t *ids, *labels, *pos, *seg; /* (B, T) of the last get */
    size_t buf_cap;
};

static int by_length_desc(const void *a, const void *b, void *set_arg)
{
    const tune_example_set *set = set_arg;
    const size_t i = *(const size_t *)a, j = *(const size_t *)b;
    if (set->items[i].n != set->items[j].n) return set->items[i].n > set->items[j].n ? -1 : 1;
    return i < j ? -1 : i > j;
}

/* Rows, built once so that every epoch has the same number of steps: one
 * example a row, or with packing first-fit decreasing (longest examples
 * first, each into the first row it fits), rows in the order they open. */
static tune_status build_rows(tune_batcher *b, tune_error *err)
{
    const size_t n = b->set->count;
    size_t *order = malloc((n ? n : 1) * sizeof *order);
    size_t *row_of = malloc((n ? n : 1) * sizeof *row_of);
    int32_t *room = malloc((n ? n : 1) * sizeof *room);
    tune_status st = TUNE_OK;
    if (!order || !row_of || !room) {
        st = tune_fail_run(err, NULL, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < n; i++) order[i] = i;
    if (!b->o.sample_packing) {
        for (size_t i = 0; i <= n; i++) b->row_start[i] = i;
        memcpy(b->row_items, order, n * sizeof *order);
        b->n_rows = n;
        goto done;
    }
    qsort_r(order, n, sizeof *order, by_length_desc, (void *)b->set);
    size_t rows = 0, first_open = 0;
    for (size_t k = 0; k < n; k++) {
        int32_t len = b->set->items[order[k]].n;
        size_t r = first_open;
        while (r < rows && room[r] < len) r++;
        if (r == rows) room[rows++] = b->o.sequence_len;
        room[r] -= len;
        row_of[k] = r;
        while (first_open < rows && room[first_open] == 0) first_open++;
    }
    /* counting sort by row, stable in packing order */
    memset(b->row_start, 0, (rows + 1) * sizeof *b->row_start);
    for (size_t k = 0; k < n; k++) b->row_start[row_of[k] + 1]++;
    for (size_t r = 0; r < rows; r++) b->row_start[r + 1] += b->row_start[r];
    for (size_t r = 0; r < rows; r++) room[r] = 0; /* reused as fill counters */
    for (size_t k = 0; k < n; k++) {
        size_t r = row_of[k];
        b->row_items[b->row_start[r] + (size_t)room[r]++] = order[k];
    }
    b->n_rows = rows;
done:
    free(order);
    free(row_of);
    free(room);
    return st;
}

tune_status tune_batcher_create(const tune_example_set *set, const tune_batch_options *opt, tune_batcher **out,
                                tune_error *err)
{
    *out = NULL;
    if (opt->micro_batch_size <= 0 || opt->sequence_len <= 0)
        return tune_fail_input(err, NULL, "micro_batch_size and sequence_len must be positive");
    for (size_t i = 0; i < set->count; i++)
        if (set->items[i].n > opt->sequence_len)
            return tune_fail_input(err, NULL, "example %zu has %d tokens, more than sequence_len %d", i,
                                   set->items[i].n, opt->sequence_len);
    tune_batcher *b = calloc(1, sizeof *b);
    size_t n = set->count ? set->count : 1;
    if (b) {
        b->row_start = malloc((n + 1) * sizeof *b->row_start);
        b->row_items = malloc(n * sizeof *b->row_items);
        b->row_order = malloc(n * sizeof *b->row_order);
    }
    if (!b || !b->row_start || !b->row_items || !b->row_order) {
        tune_batcher_free(b);
        return tune_fail_run(err, NULL, "out of memory");
    }
    b->set = set;
    b->o = *opt;
    b->epoch = -1;
    tune_status st = build_rows(b, err);
    if (st) {
        tune_batcher_free(b);
        return st;
    }
    *out = b;
    return TUNE_OK;
}

void tune_batcher_free(tune_batcher *b)
{
    if (!b) return;
    free(b->row_start);
    free(b->row_items);
    free(b->row_order);
    free(b->ids);
    free(b->labels);
    free(b->pos);
    free(b->seg);
    free(b);
}

/* The order of the rows in an epoch: a Philox shuffle of (seed, epoch). */
static tune_status build_epoch(tune_batcher *b, int epoch, tune_error *err)
{
    if (b->epoch == epoch) return TUNE_OK;
    if (epoch < 0) return tune_fail_run(err, NULL, "negative epoch %d", epoch);
    if (b->o.shuffle)
        tune_data_permutation(b->o.seed, TUNE_STREAM_SHUFFLE, (uint64_t)epoch, b->row_order, b->n_rows);
    else
        for (size_t i = 0; i < b->n_rows; i++) b->row_order[i] = i;
    b->epoch = epoch;
    return TUNE_OK;
}

long tune_batcher_rows(tune_batcher *b, int epoch, tune_error *err)
{
    if (build_epoch(b, epoch, err)) return -1;
    return (long)b->n_rows;
}

long tune_batcher_count(tune_batcher *b, int epoch, tune_error *err)
{
    if (build_epoch(b, epoch, err)) return -1;
    size_t m = (size_t)b->o.micro_batch_size;
    return (long)((b->n_rows + m - 1) / m);
}

tune_status tune_batcher_get(tune_batcher *b, int epoch, long index, tune_batch *out, tune_error *err)
{
    tune_status st = build_epoch(b, epoch, err);
    if (st) return st;
    size_t m = (size_t)b->o.micro_batch_size;
    size_t first = (size_t)index * m;
    if (index < 0 || first >= b->n_rows)
        return tune_fail_run(err, NULL, "micro-batch %ld is past the end of epoch %d (%zu rows)", index, epoch,
                             b->n_rows);
    size_t B = b->n_rows - first < m ? b->n_rows - first : m;
    size_t T = 0;
    for (size_t r = first; r < first + B; r++) {
        const size_t row = b->row_order[r];
        size_t len = 0;
        for (size_t k = b->row_start[row]; k < b->row_start[row + 1]; k++)
            len += (size_t)b->set->items[b->row_items[k]].n;
        if (len > T) T = len;
    }
    if (b->o.pad_to_sequence_len) T = (size_t)b->o.sequence_len;
    if (B * T > b->buf_cap) {
        size_t cap = B * T;
        int32_t *p[4];
        for (int i = 0; i < 4; i++) p[i] = malloc(cap * sizeof(int32_t));
        if (!p[0] || !p[1] || !p[2] || !p[3]) {
            for (int i = 0; i < 4; i++) free(p[i]);
            return tune_fail_run(err, NULL, "out of memory");
        }
        free(b->ids), free(b->labels), free(b->pos), free(b->seg);
        b->ids = p[0], b->labels = p[1], b->pos = p[2], b->seg = p[3];
        b->buf_cap = cap;
    }
    const tune_example_set *s = b->set;
    for (size_t r = 0; r < B; r++) {
        int32_t *ids = b->ids + r * T, *lab = b->labels + r * T, *pos = b->pos + r * T, *seg = b->seg + r * T;
        size_t t = 0;
        int32_t segment = 0;
        const size_t row = b->row_order[first + r];
        for (size_t k = b->row_start[row]; k < b->row_start[row + 1]; k++) {
            const tune_example *x = &s->items[b->row_items[k]];
            segment++;
            for (int32_t i = 0; i < x->n; i++, t++) {
                ids[t] = s->ids[x->offset + (size_t)i];
                lab[t] = s->labels[x->offset + (size_t)i];
                pos[t] = i;
                seg[t] = segment;
            }
        }
        /* padding: its own segment 0, never trained */
        for (int32_t i = 0; t < T; t++, i++) {
            ids[t] = b->o.pad_id;
            lab[t] = TUNE_IGNORE_INDEX;
            pos[t] = i;
            seg[t] = 0;
        }
    }
    out->B = (int)B;
    out->T = (int)T;
    out->input_ids = b->ids;
    out->labels = b->labels;
    out->position_ids = b->pos;
    out->segment_ids = b->seg;
    return TUNE_OK;
}
