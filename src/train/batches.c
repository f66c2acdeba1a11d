/* Which micro-batches each optimizer step trains on, shared by the loop and
 * by the file of a run's batches (tune preprocess --batches), so the two
 * cannot disagree. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "tune/safetensors.h"

tune_status step_layout_build(step_layout *l, const tune_batch_source *src, long total_steps, int accum,
                              tune_error *err)
{
    memset(l, 0, sizeof *l);
    l->accum = accum;
    int cap = 0;
    long start = 0;
    while (start < total_steps) {
        if (l->n_epochs + 1 >= cap) {
            cap = cap ? 2 * cap : 8;
            long *f = realloc(l->epoch_first, (size_t)cap * sizeof *f);
            if (f) l->epoch_first = f;
            long *m = realloc(l->epoch_mb, (size_t)cap * sizeof *m);
            if (m) l->epoch_mb = m;
            if (!f || !m) return tune_fail_run(err, NULL, "out of memory");
        }
        const long n = src->count(src->ctx, l->n_epochs, err);
        if (n < 0) return err ? err->code : TUNE_ERR_RUN;
        if (n == 0) return tune_fail_input(err, NULL, "epoch %d of the training set has no micro-batches", l->n_epochs);
        l->epoch_first[l->n_epochs] = start;
        l->epoch_mb[l->n_epochs] = n;
        l->n_epochs++;
        start += (n + accum - 1) / accum;
    }
    if (!l->epoch_first && !(l->epoch_first = malloc(sizeof *l->epoch_first)))
        return tune_fail_run(err, NULL, "out of memory");
    l->epoch_first[l->n_epochs] = total_steps;
    return TUNE_OK;
}

void step_layout_free(step_layout *l)
{
    free(l->epoch_first);
    free(l->epoch_mb);
}

step_slice step_layout_find(const step_layout *l, long s)
{
    step_slice x = {0};
    while (l->epoch_first[x.epoch + 1] <= s) x.epoch++;
    x.k = s - l->epoch_first[x.epoch];
    x.first = x.k * l->accum;
    const long left = l->epoch_mb[x.epoch] - x.first;
    x.n = (int)(left < l->accum ? left : l->accum); /* the last step of an epoch may be short */
    x.epoch_steps = (l->epoch_mb[x.epoch] + l->accum - 1) / l->accum;
    return x;
}

long train_count_targets(const tune_batch *b)
{
    long n = 0;
    for (int r = 0; r < b->B; r++)
        for (int t = 0; t + 1 < b->T; t++) {
            const size_t i = (size_t)r * b->T + t;
            if (b->labels[i + 1] == TUNE_IGNORE_INDEX) continue;
            if (b->segment_ids && b->segment_ids[i] != b->segment_ids[i + 1]) continue;
            n++;
        }
    return n;
}

/* The file's tensors as they grow: four (B, T) arrays a micro-batch, kept
 * in one buffer, and six numbers a micro-batch. */
enum { META_STEP, META_EPOCH, META_INDEX, META_TARGETS, META_B, META_T, N_META };
typedef struct batch_file {
    int32_t *data; /* the micro-batches' arrays, one after another */
    size_t len, cap;
    int32_t *meta; /* (n, N_META) */
    size_t n, meta_cap;
} batch_file;

static int grow(void **p, size_t *cap, size_t need, size_t size)
{
    if (need <= *cap) return 1;
    size_t c = *cap ? *cap : 64;
    while (c < need) c *= 2;
    void *q = realloc(*p, c * size);
    if (!q) return 0;
    *p = q;
    *cap = c;
    return 1;
}

/* Appends b, with the positions and segments the forward pass uses when
 * the source gives none (0, 1, ... a row; one segment). */
static tune_status add_batch(batch_file *f, long step, int epoch, long index, const tune_batch *b, tune_error *err)
{
    const size_t bt = (size_t)b->B * b->T;
    if (!grow((void **)&f->data, &f->cap, f->len + 4 * bt, sizeof *f->data) ||
        !grow((void **)&f->meta, &f->meta_cap, f->n + 1, N_META * sizeof *f->meta))
        return tune_fail_run(err, NULL, "out of memory for the micro-batches");
    int32_t *d = f->data + f->len;
    memcpy(d, b->input_ids, bt * sizeof *d);
    memcpy(d + bt, b->labels, bt * sizeof *d);
    for (size_t i = 0; i < bt; i++) {
        d[2 * bt + i] = b->position_ids ? b->position_ids[i] : (int32_t)(i % (size_t)b->T);
        d[3 * bt + i] = b->segment_ids ? b->segment_ids[i] : 1;
    }
    f->len += 4 * bt;
    int32_t *m = f->meta + N_META * f->n++;
    m[META_STEP] = (int32_t)step, m[META_EPOCH] = epoch, m[META_INDEX] = (int32_t)index;
    m[META_TARGETS] = (int32_t)train_count_targets(b), m[META_B] = b->B, m[META_T] = b->T;
    return TUNE_OK;
}

#define NAME_MAX_LEN 48 /* "position_ids." and a size_t */

static tune_status write_file(const batch_file *f, const char *path, tune_error *err)
{
    static const char *const arrays[4] = {"input_ids", "labels", "position_ids", "segment_ids"};
    static const char *const numbers[META_B] = {"step", "epoch", "index", "targets"};
    const size_t n_entries = 4 * f->n + META_B;
    tune_st_entry *e = calloc(n_entries, sizeof *e);
    char *names = malloc((f->n ? f->n : 1) * 4 * NAME_MAX_LEN);
    int32_t *columns = malloc((f->n ? f->n : 1) * META_B * sizeof *columns); /* meta transposed */
    tune_status st = TUNE_OK;
    if (!e || !names || !columns) {
        st = tune_fail_run(err, NULL, "out of memory for the micro-batches");
        goto done;
    }
    size_t off = 0, k = 0;
    for (size_t i = 0; i < f->n; i++) {
        const int B = f->meta[N_META * i + META_B], T = f->meta[N_META * i + META_T];
        for (int a = 0; a < 4; a++, k++) {
            char *name = names + NAME_MAX_LEN * k;
            snprintf(name, NAME_MAX_LEN, "%s.%zu", arrays[a], i);
            e[k] = (tune_st_entry){.name = name, .dtype = TUNE_DT_I32, .ndim = 2, .shape = {B, T},
                                   .data = f->data + off};
            off += (size_t)B * T;
        }
    }
    for (int c = 0; c < META_B; c++, k++) {
        for (size_t i = 0; i < f->n; i++) columns[(size_t)c * f->n + i] = f->meta[N_META * i + c];
        e[k] = (tune_st_entry){.name = numbers[c], .dtype = TUNE_DT_I32, .ndim = 1, .shape = {(int64_t)f->n},
                               .data = columns + (size_t)c * f->n};
    }
    st = tune_st_write(path, e, (int)n_entries, err);
done:
    free(e);
    free(names);
    free(columns);
    return st;
}

tune_status tune_train_write_batches(const tune_batch_source *train, long total_steps, int accum, long steps,
                                     const char *path, tune_error *err)
{
    if (total_steps < 1) return tune_fail_input(err, NULL, "the run has no optimizer steps");
    if (accum < 1) return tune_fail_input(err, NULL, "gradient_accumulation_steps must be at least 1");
    if (steps < 1 || steps > total_steps) steps = total_steps;
    step_layout l;
    batch_file f = {0};
    tune_status st = step_layout_build(&l, train, total_steps, accum, err);
    for (long s = 0; s < steps && !st; s++) {
        const step_slice x = step_layout_find(&l, s);
        for (int j = 0; j < x.n && !st; j++) {
            tune_batch b;
            st = train_get_batch(train, "training", x.epoch, x.first + j, &b, err);
            if (!st) st = add_batch(&f, s, x.epoch, x.first + j, &b, err);
        }
    }
    if (!st) st = write_file(&f, path, err);
    step_layout_free(&l);
    free(f.data);
    free(f.meta);
    return st;
}
