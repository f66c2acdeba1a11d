/* What `tune preprocess` writes and shows: the processed examples, the
 * report, and a token-by-token view of an example. */
#include <cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "tune/data.h"

static const tune_example *example_at(const tune_prepared *p, size_t i, const tune_example_set **set)
{
    *set = i < p->train.count ? &p->train : &p->val;
    return &(*set)->items[i < p->train.count ? i : i - p->train.count];
}

static void put_ints(tune_strbuf *sb, const int32_t *v, int32_t n)
{
    tune_strbuf_puts(sb, "[");
    for (int32_t k = 0; k < n; k++) tune_strbuf_printf(sb, k ? ",%d" : "%d", v[k]);
    tune_strbuf_puts(sb, "]");
}

static void put_json_string(tune_strbuf *sb, const char *s)
{
    cJSON *j = cJSON_CreateString(s ? s : "");
    char *t = j ? cJSON_PrintUnformatted(j) : NULL;
    if (t) tune_strbuf_puts(sb, t);
    else sb->oom = 1;
    free(t);
    cJSON_Delete(j);
}

tune_status tune_data_write_processed(const tune_prepared *p, const char *path, tune_error *err)
{
    /* Written by hand, one example per line: cJSON would hold every id as a node. */
    tune_strbuf sb = {0};
    size_t n = p->train.count + p->val.count;
    tune_strbuf_puts(&sb, "[\n");
    for (size_t i = 0; i < n && !sb.oom; i++) {
        const tune_example_set *set;
        const tune_example *x = example_at(p, i, &set);
        int d = x->dataset;
        const char *name = p->report.datasets && d < p->report.n_datasets ? p->report.datasets[d].name : "";
        tune_strbuf_puts(&sb, " {\"dataset\": ");
        put_json_string(&sb, name);
        tune_strbuf_printf(&sb, ", \"record\": %lld, \"split\": \"%s\"", (long long)x->record,
                           set == &p->train ? "train" : "validation");
        if (p->texts) {
            tune_strbuf_puts(&sb, ", \"text\": ");
            put_json_string(&sb, p->texts[i].data);
        }
        tune_strbuf_puts(&sb, ", \"input_ids\": ");
        put_ints(&sb, set->ids + x->offset, x->n);
        tune_strbuf_puts(&sb, ", \"labels\": ");
        put_ints(&sb, set->labels + x->offset, x->n);
        tune_strbuf_puts(&sb, i + 1 < n ? "},\n" : "}\n");
    }
    tune_strbuf_puts(&sb, "]\n");
    tune_status st = sb.oom ? tune_fail_run(err, path, "out of memory") : tune_write_file_atomic(path, sb.data, sb.len, err);
    tune_strbuf_free(&sb);
    return st;
}

static void add_counts(cJSON *o, const tune_dataset_report *r)
{
    cJSON_AddNumberToObject(o, "records", (double)r->records);
    cJSON_AddNumberToObject(o, "skipped", (double)r->skipped);
    cJSON_AddNumberToObject(o, "examples", (double)r->examples);
    cJSON_AddNumberToObject(o, "tokens", (double)r->tokens);
    cJSON_AddNumberToObject(o, "trained_tokens", (double)r->trained_tokens);
    cJSON_AddNumberToObject(o, "truncated", (double)r->truncated);
    cJSON_AddNumberToObject(o, "dropped_too_long", (double)r->dropped_long);
    cJSON_AddNumberToObject(o, "longest_example_tokens", (double)r->longest);
    cJSON_AddNumberToObject(o, "dropped_nothing_trained", (double)r->dropped_untrained);
    cJSON_AddNumberToObject(o, "piece_boundary_retokenized", (double)r->boundary_mismatch);
}

static tune_dataset_report totals(const tune_prepared *p)
{
    tune_dataset_report t;
    memset(&t, 0, sizeof t);
    for (int d = 0; d < p->report.n_datasets; d++) {
        const tune_dataset_report *r = &p->report.datasets[d];
        t.records += r->records, t.skipped += r->skipped, t.examples += r->examples, t.tokens += r->tokens;
        t.trained_tokens += r->trained_tokens, t.truncated += r->truncated, t.dropped_long += r->dropped_long;
        t.dropped_untrained += r->dropped_untrained, t.boundary_mismatch += r->boundary_mismatch;
        if (r->longest > t.longest) t.longest = r->longest;
    }
    return t;
}

tune_status tune_data_write_report(const tune_prepared *p, const char *path, tune_error *err)
{
    cJSON *root = cJSON_CreateObject();
    if (!root) return tune_fail_run(err, path, "out of memory");
    tune_dataset_report t = totals(p);
    cJSON *tot = cJSON_AddObjectToObject(root, "total");
    if (tot) add_counts(tot, &t);
    cJSON_AddNumberToObject(root, "train_examples", (double)p->report.train_examples);
    cJSON_AddNumberToObject(root, "validation_examples", (double)p->report.val_examples);
    cJSON_AddBoolToObject(root, "from_cache", p->report.from_cache);
    if (p->report.cache_key[0]) cJSON_AddStringToObject(root, "cache_key", p->report.cache_key);
    cJSON *list = cJSON_AddArrayToObject(root, "datasets");
    for (int d = 0; list && d < p->report.n_datasets; d++) {
        cJSON *o = cJSON_CreateObject();
        if (!o || !cJSON_AddItemToArray(list, o)) {
            cJSON_Delete(o);
            break;
        }
        cJSON_AddStringToObject(o, "name", p->report.datasets[d].name);
        add_counts(o, &p->report.datasets[d]);
    }
    cJSON *sk = cJSON_AddArrayToObject(root, "skipped_records");
    for (int i = 0; sk && i < p->report.skipped.count; i++) {
        const tune_error *e = &p->report.skipped.items[i];
        cJSON *o = cJSON_CreateObject();
        if (!o || !cJSON_AddItemToArray(sk, o)) {
            cJSON_Delete(o);
            break;
        }
        cJSON_AddStringToObject(o, "file", e->file);
        cJSON_AddNumberToObject(o, "line", e->line);
        cJSON_AddNumberToObject(o, "record", (double)e->record);
        cJSON_AddStringToObject(o, "reason", e->message);
    }
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    if (!text) return tune_fail_run(err, path, "out of memory");
    tune_status st = tune_write_file_atomic(path, text, strlen(text), err);
    free(text);
    return st;
}

void tune_data_report_text(const tune_prepared *p, tune_strbuf *out)
{
    for (int d = 0; d < p->report.n_datasets; d++) {
        const tune_dataset_report *r = &p->report.datasets[d];
        tune_strbuf_printf(out,
                           "%s: %ld records, %ld skipped, %ld examples, %ld tokens (%ld trained), %ld truncated, "
                           "%ld dropped (too long), %ld dropped (nothing trained)\n",
                           r->name, r->records, r->skipped, r->examples, r->tokens, r->trained_tokens, r->truncated,
                           r->dropped_long, r->dropped_untrained);
    }
    for (int i = 0; i < p->report.skipped.count; i++) {
        char buf[1600];
        tune_error_format(&p->report.skipped.items[i], buf, sizeof buf);
        tune_strbuf_printf(out, "  skipped: %s\n", buf);
    }
    tune_strbuf_printf(out, "train: %ld examples, validation: %ld examples%s\n", p->report.train_examples,
                       p->report.val_examples, p->report.from_cache ? " (from the prepared-data cache)" : "");
}

tune_status tune_data_debug_example(const tune_prepared *p, size_t i, const tune_data_tokenizer *tok, int color,
                                    tune_strbuf *out, tune_error *err)
{
    if (i >= p->train.count + p->val.count) return tune_fail_run(err, NULL, "no example %zu", i);
    const tune_example_set *set;
    const tune_example *x = example_at(p, i, &set);
    tune_strbuf_printf(out, "example %zu (dataset %d, record %lld, %d tokens):\n", i, x->dataset, (long long)x->record,
                       x->n);
    const int32_t *ids = set->ids + x->offset, *labels = set->labels + x->offset;
    for (int32_t k = 0; k < x->n;) {
        int trained = labels[k] != TUNE_IGNORE_INDEX;
        tune_strbuf piece = {0};
        int32_t m = 1;
        if (tok && tok->decode) {
            /* the fewest tokens (up to 4) that decode without a replacement character */
            for (;; m++) {
                piece.len = 0;
                if (piece.data) piece.data[0] = 0;
                tune_status st = tok->decode(tok->ctx, ids + k, (size_t)m, &piece, err);
                if (st) {
                    tune_strbuf_free(&piece);
                    return st;
                }
                if (!piece.data || !strstr(piece.data, "\xEF\xBF\xBD") || m == 4 || k + m == x->n) break;
            }
            if (piece.data && strstr(piece.data, "\xEF\xBF\xBD") && m > 1) {
                m = 1; /* no whole character within reach: show the token alone */
                piece.len = 0;
                if (piece.data) piece.data[0] = 0;
                tune_status st = tok->decode(tok->ctx, ids + k, 1, &piece, err);
                if (st) {
                    tune_strbuf_free(&piece);
                    return st;
                }
            }
        } else {
            tune_strbuf_printf(&piece, "<%d>", ids[k]);
        }
        const char *txt = piece.data ? piece.data : "";
        if (trained) tune_strbuf_printf(out, color ? "\x1b[32m%s\x1b[0m" : "[%s]", txt);
        else tune_strbuf_printf(out, color ? "\x1b[2m%s\x1b[0m" : "%s", txt);
        tune_strbuf_free(&piece);
        k += m;
    }
    tune_strbuf_puts(out, "\n");
    if (out->oom) return tune_fail_run(err, NULL, "out of memory");
    return TUNE_OK;
}
