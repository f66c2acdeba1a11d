/* The data pipeline up to prepared examples: read → format → tokenize →
 * length rule → split, with a cache keyed by everything that changes tokens. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tune/data.h"
#include "tune/rng.h"

/* ---- example sets ---- */

static tune_status set_add(tune_example_set *s, const int32_t *ids, const int32_t *labels, size_t n, int dataset,
                           long record, tune_error *err)
{
    if (s->count == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 256;
        tune_example *p = realloc(s->items, cap * sizeof *p);
        if (!p) return tune_fail_run(err, NULL, "out of memory");
        s->items = p;
        s->cap = cap;
    }
    if (s->n_tokens + n > s->tok_cap) {
        size_t cap = s->tok_cap ? s->tok_cap : 4096;
        while (cap < s->n_tokens + n) cap *= 2;
        int32_t *a = realloc(s->ids, cap * sizeof *a);
        if (!a) return tune_fail_run(err, NULL, "out of memory");
        s->ids = a;
        int32_t *b = realloc(s->labels, cap * sizeof *b);
        if (!b) return tune_fail_run(err, NULL, "out of memory");
        s->labels = b;
        s->tok_cap = cap;
    }
    if (n) {
        memcpy(s->ids + s->n_tokens, ids, n * sizeof *ids);
        memcpy(s->labels + s->n_tokens, labels, n * sizeof *labels);
    }
    s->items[s->count++] = (tune_example){s->n_tokens, (int32_t)n, dataset, record};
    s->n_tokens += n;
    return TUNE_OK;
}

static void set_free(tune_example_set *s)
{
    free(s->items);
    free(s->ids);
    free(s->labels);
    memset(s, 0, sizeof *s);
}

void tune_data_permutation(uint64_t seed, uint64_t stream, uint64_t epoch, size_t *perm, size_t n)
{
    for (size_t i = 0; i < n; i++) perm[i] = i;
    /* Two 32-bit words per draw; epoch e uses the counter range starting at e << 40. */
    const uint64_t base = epoch << 40;
    for (size_t i = n; i > 1; i--) {
        uint64_t k = base + 2 * (uint64_t)(i - 1);
        uint64_t r = ((uint64_t)tune_rng_u32(seed, stream, k) << 32) | tune_rng_u32(seed, stream, k + 1);
        size_t j = (size_t)(r % i);
        size_t t = perm[i - 1];
        perm[i - 1] = perm[j];
        perm[j] = t;
    }
}

/* ---- one dataset ---- */

typedef struct {
    tune_strbuf *texts;
    size_t n, cap;
} text_list;

static tune_status keep(text_list *tl, const tune_strbuf *text, tune_error *err)
{
    if (tl->n == tl->cap) {
        size_t cap = tl->cap ? tl->cap * 2 : 64;
        tune_strbuf *p = realloc(tl->texts, cap * sizeof *p);
        if (!p) return tune_fail_run(err, NULL, "out of memory");
        tl->texts = p;
        tl->cap = cap;
    }
    tune_strbuf copy = {0};
    tune_strbuf_append(&copy, text->data ? text->data : "", text->len);
    if (copy.oom) return tune_fail_run(err, NULL, "out of memory");
    tl->texts[tl->n++] = copy;
    return TUNE_OK;
}

/* A bad record that stops the stage also says how to go on without it. */
static tune_status stop_at_record(tune_error *e)
{
    if (e->code == TUNE_ERR_INPUT && e->record >= 0) {
        const size_t n = strlen(e->message);
        snprintf(e->message + n, sizeof e->message - n,
                 "; fix or remove the record, or set skip_bad_records: true to skip such records");
    }
    return e->code;
}

/* A record the stage rejects: skipped and listed, or the error. */
static tune_status reject(const tune_data_options *opt, tune_data_report *rep, tune_dataset_report *dr,
                          tune_error *e, tune_error *err)
{
    if (!opt->skip_bad_records || e->code != TUNE_ERR_INPUT) {
        if (err && err != e) *err = *e;
        return err ? stop_at_record(err) : e->code;
    }
    dr->skipped++;
    if (tune_error_list_add(&rep->skipped, e)) return tune_fail_run(err, NULL, "out of memory");
    return TUNE_OK;
}

static tune_status add_example(tune_example_set *set, tune_dataset_report *dr, int d, long record, int32_t *ids, int32_t *labels, size_t n,
                               const tune_strbuf *text, text_list *tl, tune_error *err)
{
    long trained = 0;
    for (size_t i = 0; i < n; i++) trained += labels[i] != TUNE_IGNORE_INDEX;
    if (trained == 0) {
        dr->dropped_untrained++;
        return TUNE_OK;
    }
    tune_status st = set_add(set, ids, labels, n, d, record, err);
    if (!st && tl) st = keep(tl, text, err);
    if (st) return st;
    dr->examples++;
    dr->tokens += (long)n;
    dr->trained_tokens += trained;
    return TUNE_OK;
}

/* shortest_drop: the fewest tokens of an example dropped as too long so far (0: none). */
static tune_status prepare_record(const tune_data_options *opt, const tune_dataset_options *ds,
                                  const tune_data_tokenizer *tok, const tune_record *rec, int d, long record,
                                  tune_example_set *set, tune_dataset_report *dr, long *shortest_drop, text_list *tl,
                                  tune_error *e)
{
    tune_formatted f;
    tune_status st = tune_data_format_record(rec, ds, opt, &f, e);
    if (st) {
        tune_formatted_free(&f);
        return st;
    }
    int32_t *ids = NULL, *labels = NULL;
    size_t n = 0;
    int mismatch = 0;
    st = tune_data_tokenize(&f, tok, &ids, &labels, &n, &mismatch, e);
    if (st) goto done;
    dr->boundary_mismatch += mismatch;
    size_t L = (size_t)opt->sequence_len;
    if (ds->format == TUNE_FORMAT_COMPLETION) {
        /* Long texts become several examples of sequence_len tokens. */
        for (size_t at = 0; at < n && !st; at += L) {
            size_t m = n - at < L ? n - at : L;
            st = add_example(set, dr, d, record, ids + at, labels + at, m, &f.text, tl, e);
        }
        goto done;
    }
    if ((long)n > dr->longest) dr->longest = (long)n;
    if (n > L) {
        if (opt->excess == TUNE_DATA_EXCESS_DROP) {
            dr->dropped_long++;
            if (*shortest_drop == 0 || (long)n < *shortest_drop) *shortest_drop = (long)n;
            goto done;
        }
        if (opt->excess == TUNE_DATA_EXCESS_RAISE) {
            st = tune_error_set(e, TUNE_ERR_INPUT, rec->file, rec->line, 0,
                                "example has %zu tokens, more than sequence_len %d (excess_length_strategy: raise): "
                                "set sequence_len to %zu, or excess_length_strategy to truncate or drop",
                                n, opt->sequence_len, n);
            e->record = rec->index;
            goto done;
        }
        dr->truncated++;
        n = L;
    }
    st = add_example(set, dr, d, record, ids, labels, n, &f.text, tl, e);
done:
    free(ids);
    free(labels);
    tune_formatted_free(&f);
    return st;
}

static tune_status prepare_dataset(const tune_data_options *opt, const tune_dataset_options *ds,
                                   const tune_data_tokenizer *tok, int d, tune_example_set *set,
                                   tune_data_report *rep, long *shortest_drop, text_list *tl, tune_error *err)
{
    tune_dataset_report *dr = &rep->datasets[d];
    snprintf(dr->name, sizeof dr->name, "%s", ds->name ? ds->name : (ds->n_files ? ds->files[0] : "?"));
    long record = 0;
    for (int fi = 0; fi < ds->n_files; fi++) {
        tune_record_list recs = {0};
        int before = rep->skipped.count;
        tune_status st = tune_data_read_file(ds->files[fi], ds->format, &recs,
                                             opt->skip_bad_records ? &rep->skipped : NULL, err);
        if (st && err) stop_at_record(err);
        dr->skipped += rep->skipped.count - before;
        dr->records += rep->skipped.count - before;
        long in_file = rep->skipped.count - before + (long)recs.count;
        for (size_t i = 0; i < recs.count && !st; i++) {
            tune_error e;
            tune_error_clear(&e);
            dr->records++;
            /* the record's number in the dataset counts skipped records too */
            tune_status rs = prepare_record(opt, ds, tok, &recs.items[i], d, record + recs.items[i].index, set, dr,
                                            shortest_drop, tl, &e);
            if (rs) st = reject(opt, rep, dr, &e, err);
        }
        record += in_file;
        tune_record_list_free(&recs);
        if (st) return st;
        /* This file's skipped records in line order (reading and formatting report separately). */
        tune_error *sk = rep->skipped.items;
        for (int i = before + 1; i < rep->skipped.count; i++)
            for (int j = i; j > before && sk[j - 1].line > sk[j].line; j--) {
                tune_error t = sk[j];
                sk[j] = sk[j - 1];
                sk[j - 1] = t;
            }
    }
    return TUNE_OK;
}

/* ---- split ---- */

static tune_status split(const tune_data_options *opt, tune_example_set *all, tune_example_set *train,
                         tune_example_set *val, text_list *tl, tune_error *err)
{
    size_t n = all->count, n_val = 0;
    if (opt->val_set_size > 1)
        n_val = (size_t)opt->val_set_size;
    else if (opt->val_set_size > 0)
        n_val = (size_t)ceil(opt->val_set_size * (double)n);
    if (n_val == 0) {
        *train = *all;
        memset(all, 0, sizeof *all);
        return TUNE_OK;
    }
    if (n_val >= n)
        return tune_fail_input(err, NULL,
                               "val_set_size %g takes %zu of %zu examples and leaves none to train on: set it below "
                               "%zu (a count) or below 1 (a fraction), or add data",
                               opt->val_set_size, n_val, n, n);
    size_t *perm = malloc(n * sizeof *perm);
    unsigned char *is_val = calloc(n, 1);
    tune_strbuf *texts = tl ? malloc(n * sizeof *texts) : NULL;
    tune_status st = TUNE_OK;
    if (!perm || !is_val || (tl && !texts)) st = tune_fail_run(err, NULL, "out of memory");
    if (!st) {
        tune_data_permutation(opt->seed, TUNE_STREAM_SPLIT, 0, perm, n);
        for (size_t i = 0; i < n_val; i++) is_val[perm[i]] = 1;
        size_t t = 0;
        /* Both parts keep the original order; texts follow (train then val). */
        for (int pass = 0; pass < 2 && !st; pass++)
            for (size_t i = 0; i < n && !st; i++) {
                if (is_val[i] != pass) continue;
                const tune_example *x = &all->items[i];
                st = set_add(pass ? val : train, all->ids + x->offset, all->labels + x->offset, (size_t)x->n,
                             x->dataset, x->record, err);
                if (tl) texts[t++] = tl->texts[i];
            }
    }
    if (!st && tl) {
        free(tl->texts);
        tl->texts = texts;
        texts = NULL;
    }
    free(texts);
    free(perm);
    free(is_val);
    set_free(all);
    return st;
}

/* ---- cache ---- */

static void key_str(tune_sha256 *h, const char *tag, const char *s)
{
    tune_sha256_update(h, tag, strlen(tag));
    tune_sha256_update(h, "=", 1);
    if (s) tune_sha256_update(h, s, strlen(s) + 1); /* the NUL separates; NULL hashes differently from "" */
    tune_sha256_update(h, "\n", 1);
}

static void key_num(tune_sha256 *h, const char *tag, double v)
{
    char buf[64];
    snprintf(buf, sizeof buf, "%.17g", v);
    key_str(h, tag, buf);
}

/* A template is its built-in id, or its Jinja source's fingerprint, and the texts it writes. */
static void key_template(tune_sha256 *h, const tune_template *t)
{
    key_num(h, "chat_template", t->id);
    if (t->id == TUNE_TEMPLATE_JINJA) key_str(h, "jinja", t->sha256);
    key_str(h, "bos", t->opt.bos);
    key_str(h, "eos", t->opt.eos);
    key_str(h, "date", t->opt.date);
}

static tune_status key_dataset(tune_sha256 *h, const tune_dataset_options *ds, tune_error *err)
{
    key_num(h, "format", ds->format);
    key_str(h, "field_instruction", ds->field_instruction);
    key_str(h, "field_input", ds->field_input);
    key_str(h, "field_output", ds->field_output);
    key_str(h, "field_messages", ds->field_messages);
    key_str(h, "field_role", ds->field_role);
    key_str(h, "field_content", ds->field_content);
    key_str(h, "field_system", ds->field_system);
    key_str(h, "field", ds->field);
    for (int i = 0; i < ds->n_roles; i++) {
        key_str(h, "role_from", ds->roles[i].from);
        key_str(h, "role_to", ds->roles[i].to);
    }
    for (int i = 0; i < ds->n_roles_to_train; i++) key_str(h, "train_role", ds->roles_to_train[i]);
    key_num(h, "train_on_eos", ds->train_on_eos);
    if (ds->chat_template) key_template(h, ds->chat_template);
    for (int i = 0; i < ds->n_files; i++) {
        char hex[65];
        tune_status st = tune_sha256_file_hex(ds->files[i], hex, err);
        if (st) return st;
        key_str(h, "file", ds->files[i]);
        key_str(h, "sha256", hex);
    }
    return TUNE_OK;
}

tune_status tune_data_cache_key(const tune_data_options *opt, const tune_data_tokenizer *tok, char hex[65],
                                tune_error *err)
{
    tune_sha256 h;
    tune_sha256_init(&h);
    key_str(&h, "tune-data", "3"); /* 3: Jinja templates */
    for (int i = 0; i < opt->n_datasets; i++) {
        key_str(&h, "dataset", "train");
        tune_status st = key_dataset(&h, &opt->datasets[i], err);
        if (st) return st;
    }
    for (int i = 0; i < opt->n_test_datasets; i++) {
        key_str(&h, "dataset", "test");
        tune_status st = key_dataset(&h, &opt->test_datasets[i], err);
        if (st) return st;
    }
    key_template(&h, &opt->chat_template);
    key_str(&h, "default_system_message", opt->default_system_message);
    key_num(&h, "sequence_len", opt->sequence_len);
    key_num(&h, "excess", opt->excess);
    key_num(&h, "train_on_inputs", opt->train_on_inputs);
    key_num(&h, "skip_bad_records", opt->skip_bad_records);
    key_num(&h, "val_set_size", opt->val_set_size);
    key_num(&h, "seed", (double)opt->seed);
    key_str(&h, "tokenizer", tok->fingerprint);
    key_num(&h, "eos_id", tok->eos_id);
    uint8_t d[32];
    tune_sha256_final(&h, d);
    for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", d[i]);
    return TUNE_OK;
}

#define CACHE_MAGIC "TUNEDAT1"

typedef struct {
    char magic[8];
    uint32_t sizeof_example, sizeof_report, sizeof_error, n_reports;
    uint64_t n_train, train_tokens, n_val, val_tokens, n_skipped;
} cache_header;

/* Appends n bytes (none, and no pointer use, when n is 0). */
static void put_bytes(tune_strbuf *sb, const void *p, size_t n)
{
    if (n) tune_strbuf_append(sb, (const char *)p, n);
}

static void put_set(tune_strbuf *sb, const tune_example_set *s)
{
    put_bytes(sb, s->items, s->count * sizeof *s->items);
    put_bytes(sb, s->ids, s->n_tokens * sizeof *s->ids);
    put_bytes(sb, s->labels, s->n_tokens * sizeof *s->labels);
}

static tune_status cache_save(const char *path, const tune_prepared *p, tune_error *err)
{
    cache_header h = {CACHE_MAGIC, sizeof(tune_example), sizeof(tune_dataset_report), sizeof(tune_error),
                      (uint32_t)p->report.n_datasets, p->train.count, p->train.n_tokens, p->val.count,
                      p->val.n_tokens, (uint64_t)p->report.skipped.count};
    tune_strbuf sb = {0};
    put_bytes(&sb, &h, sizeof h);
    put_set(&sb, &p->train);
    put_set(&sb, &p->val);
    put_bytes(&sb, p->report.datasets, h.n_reports * sizeof *p->report.datasets);
    put_bytes(&sb, p->report.skipped.items, h.n_skipped * sizeof(tune_error));
    tune_status st = sb.oom ? tune_fail_run(err, path, "out of memory") : tune_write_file_atomic(path, sb.data, sb.len, err);
    tune_strbuf_free(&sb);
    return st;
}

static int take(const char **p, const char *end, void *dst, size_t n)
{
    if ((size_t)(end - *p) < n) return 0;
    if (n) memcpy(dst, *p, n);
    *p += n;
    return 1;
}

static int load_set(const char **p, const char *end, tune_example_set *s, uint64_t count, uint64_t tokens)
{
    if (count > (uint64_t)(end - *p) / sizeof(tune_example) || tokens > (uint64_t)(end - *p) / 8) return 0;
    s->items = malloc((count ? count : 1) * sizeof *s->items);
    s->ids = malloc((tokens ? tokens : 1) * sizeof *s->ids);
    s->labels = malloc((tokens ? tokens : 1) * sizeof *s->labels);
    s->count = s->cap = count;
    s->n_tokens = s->tok_cap = tokens;
    if (!s->items || !s->ids || !s->labels) return 0;
    if (!take(p, end, s->items, count * sizeof *s->items) || !take(p, end, s->ids, tokens * sizeof *s->ids) ||
        !take(p, end, s->labels, tokens * sizeof *s->labels))
        return 0;
    /* Every example must lie inside the token arrays. */
    for (uint64_t i = 0; i < count; i++)
        if (s->items[i].n < 0 || s->items[i].offset > tokens || (uint64_t)s->items[i].n > tokens - s->items[i].offset)
            return 0;
    return 1;
}

/* 1 when the cache file was loaded; 0 when absent or unusable (rebuilt). */
static int cache_load(const char *path, int n_reports, tune_prepared *p)
{
    char *data;
    size_t len;
    tune_error e;
    if (!tune_path_exists(path) || tune_read_file(path, &data, &len, &e)) return 0;
    const char *q = data, *end = data + len;
    cache_header h;
    int ok = take(&q, end, &h, sizeof h) && !memcmp(h.magic, CACHE_MAGIC, 8) &&
             h.sizeof_example == sizeof(tune_example) && h.sizeof_report == sizeof(tune_dataset_report) &&
             h.sizeof_error == sizeof(tune_error) && h.n_reports == (uint32_t)n_reports &&
             h.n_skipped < (uint64_t)len / sizeof(tune_error) + 1;
    ok = ok && load_set(&q, end, &p->train, h.n_train, h.train_tokens) &&
         load_set(&q, end, &p->val, h.n_val, h.val_tokens);
    if (ok) {
        p->report.datasets = calloc((size_t)n_reports + 1, sizeof *p->report.datasets);
        ok = p->report.datasets && take(&q, end, p->report.datasets, (size_t)n_reports * sizeof *p->report.datasets);
    }
    if (ok && h.n_skipped) {
        p->report.skipped.items = malloc(h.n_skipped * sizeof(tune_error));
        ok = p->report.skipped.items != NULL && take(&q, end, p->report.skipped.items, h.n_skipped * sizeof(tune_error));
        if (ok) p->report.skipped.count = p->report.skipped.cap = (int)h.n_skipped;
    }
    ok = ok && q == end;
    free(data);
    if (!ok) {
        tune_prepared_free(p);
        return 0;
    }
    p->report.n_datasets = n_reports;
    return 1;
}

/* ---- the whole stage ---- */

/* Why datasets [first, end) of the report (the config's `key`) gave no
 * `what` example, and what to change. shortest: the shortest example dropped
 * as too long. */
static tune_status no_examples(const tune_data_options *opt, const tune_data_report *rep, int first, int end,
                               const char *key, const char *what, long shortest, tune_error *err)
{
    long records = 0, skipped = 0, too_long = 0, untrained = 0, longest = 0;
    for (int d = first; d < end; d++) {
        const tune_dataset_report *dr = &rep->datasets[d];
        records += dr->records;
        skipped += dr->skipped;
        too_long += dr->dropped_long;
        untrained += dr->dropped_untrained;
        if (dr->longest > longest) longest = dr->longest;
    }
    char why[900] = "";
    size_t n = 0;
#define WHY(...) n += (size_t)snprintf(why + n, n < sizeof why ? sizeof why - n : 0, __VA_ARGS__)
    if (records == 0) WHY("; the files have no records");
    if (too_long == 1)
        WHY("; 1 example, of %ld tokens, is longer than sequence_len %d and excess_length_strategy: drop drops it: "
            "set sequence_len to %ld, or excess_length_strategy: truncate to cut it to %d tokens",
            longest, opt->sequence_len, longest, opt->sequence_len);
    else if (too_long)
        WHY("; %ld examples are longer than sequence_len %d (the shortest %ld tokens, the longest %ld) and "
            "excess_length_strategy: drop drops them: set sequence_len to %ld to keep them all (%ld keeps the "
            "shortest), or excess_length_strategy: truncate to cut them to %d tokens",
            too_long, opt->sequence_len, shortest, longest, longest, shortest, opt->sequence_len);
    if (untrained)
        WHY("; %ld example%s no trained token (every label is -100): check train_on_inputs, roles_to_train and "
            "that the outputs are not empty",
            untrained, untrained == 1 ? " has" : "s have");
    if (skipped)
        WHY("; %ld unreadable record%s skipped (skip_bad_records; tune preprocess lists why)", skipped,
            skipped == 1 ? " was" : "s were");
#undef WHY
    return tune_fail_input(err, NULL, "the %s gave no %s examples%s%s", key, what, why[0] ? ":" : "",
                           why[0] ? why + 1 : "");
}

tune_status tune_data_prepare(const tune_data_options *opt, const tune_data_tokenizer *tok, const char *cache_dir,
                              int keep_text, tune_prepared *out, tune_error *err)
{
    memset(out, 0, sizeof *out);
    if (opt->sequence_len <= 0) return tune_fail_input(err, NULL, "sequence_len must be positive");
    if (opt->n_datasets <= 0) return tune_fail_input(err, NULL, "no datasets given");
    if (opt->n_test_datasets > 0 && opt->val_set_size > 0)
        return tune_fail_input(err, NULL, "val_set_size and test_datasets are both given; use one of them");
    int n_reports = opt->n_datasets + opt->n_test_datasets;
    char cache_path[4096] = "";
    tune_status st;
    if (cache_dir) {
        char key[65];
        if ((st = tune_data_cache_key(opt, tok, key, err))) return st;
        snprintf(cache_path, sizeof cache_path, "%s/%s.tunedata", cache_dir, key);
        if (!keep_text && cache_load(cache_path, n_reports, out)) {
            out->report.from_cache = 1;
            memcpy(out->report.cache_key, key, sizeof key);
            out->report.train_examples = (long)out->train.count;
            out->report.val_examples = (long)out->val.count;
            return TUNE_OK;
        }
        memcpy(out->report.cache_key, key, sizeof key);
    }
    out->report.datasets = calloc((size_t)n_reports, sizeof *out->report.datasets);
    if (!out->report.datasets) return tune_fail_run(err, NULL, "out of memory");
    out->report.n_datasets = n_reports;
    tune_example_set all = {0};
    text_list tl = {0}, tl_val = {0};
    long shortest_drop = 0, shortest_drop_val = 0;
    st = TUNE_OK;
    for (int d = 0; d < opt->n_datasets && !st; d++)
        st = prepare_dataset(opt, &opt->datasets[d], tok, d, &all, &out->report, &shortest_drop,
                             keep_text ? &tl : NULL, err);
    for (int d = 0; d < opt->n_test_datasets && !st; d++)
        st = prepare_dataset(opt, &opt->test_datasets[d], tok, opt->n_datasets + d, &out->val, &out->report,
                             &shortest_drop_val, keep_text ? &tl_val : NULL, err);
    if (!st && all.count == 0) st = no_examples(opt, &out->report, 0, opt->n_datasets, "datasets", "training", shortest_drop,
                                                    err);
    if (!st && opt->n_test_datasets > 0 && out->val.count == 0)
        st = no_examples(opt, &out->report, opt->n_datasets, n_reports, "test_datasets", "evaluation",
                         shortest_drop_val, err);
    if (!st) {
        if (opt->n_test_datasets > 0) {
            out->train = all;
            memset(&all, 0, sizeof all);
        } else {
            st = split(opt, &all, &out->train, &out->val, keep_text ? &tl : NULL, err);
        }
    }
    if (!st && keep_text) {
        /* texts: train examples, then validation examples */
        out->texts = malloc((tl.n + tl_val.n + 1) * sizeof *out->texts);
        if (!out->texts) st = tune_fail_run(err, NULL, "out of memory");
        else {
            if (tl.n) memcpy(out->texts, tl.texts, tl.n * sizeof *tl.texts);
            if (tl_val.n) memcpy(out->texts + tl.n, tl_val.texts, tl_val.n * sizeof *tl_val.texts);
            tl.n = tl_val.n = 0;
        }
    }
    for (size_t i = 0; i < tl.n; i++) tune_strbuf_free(&tl.texts[i]);
    for (size_t i = 0; i < tl_val.n; i++) tune_strbuf_free(&tl_val.texts[i]);
    free(tl.texts);
    free(tl_val.texts);
    set_free(&all);
    out->report.train_examples = (long)out->train.count;
    out->report.val_examples = (long)out->val.count;
    if (!st && cache_path[0]) {
        if (!(st = tune_mkdir_p(cache_dir, err))) st = cache_save(cache_path, out, err);
    }
    if (st) tune_prepared_free(out);
    return st;
}

void tune_prepared_free(tune_prepared *p)
{
    if (p->texts) {
        size_t n = p->train.count + p->val.count;
        for (size_t i = 0; i < n; i++) tune_strbuf_free(&p->texts[i]);
        free(p->texts);
    }
    set_free(&p->train);
    set_free(&p->val);
    free(p->report.datasets);
    tune_error_list_free(&p->report.skipped);
    memset(p, 0, sizeof *p);
}
