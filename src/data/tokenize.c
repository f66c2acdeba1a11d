/* Formatted pieces → token ids and labels.
 *
 * Why pieces: the trained region of a chat example is a set of character
 * spans; encoding piece by piece gives each token an unambiguous owner. A
 * merge across a piece boundary would make the pieces' ids differ from the
 * whole text's (what apply_chat_template(tokenize=True) gives), so chat and
 * Llama-2 examples are also encoded whole and compared; on a difference the
 * whole text's ids win and labels follow prefix encodings (counted in the
 * report as boundary_mismatch). Alpaca pieces are the truth by definition:
 * Axolotl encodes prompt and response separately. */
#include <stdlib.h>
#include <string.h>

#include "tune/data.h"

static tune_status push_id(int32_t **ids, size_t *n, size_t *cap, int32_t id, tune_error *err)
{
    if (*n == *cap) {
        size_t c = *cap ? *cap * 2 : 64;
        int32_t *p = realloc(*ids, c * sizeof *p);
        if (!p) return tune_fail_run(err, NULL, "out of memory");
        *ids = p;
        *cap = c;
    }
    (*ids)[(*n)++] = id;
    return TUNE_OK;
}

static tune_status encode(const tune_data_tokenizer *tok, const char *s, size_t len, int add_special, int32_t **ids,
                          size_t *n, size_t *cap, tune_error *err)
{
    if (len == 0 && !add_special) return TUNE_OK;
    return tok->encode(tok->ctx, s, len, add_special, ids, n, cap, err);
}

/* Labels from prefix encodings: token j of whole belongs to the first piece
 * whose end-prefix encoding shares more than j leading tokens with whole. */
static tune_status labels_by_prefix(const tune_formatted *f, const tune_data_tokenizer *tok, const int32_t *whole,
                                    size_t n, int32_t *labels, tune_error *err)
{
    int32_t *pre = NULL;
    size_t from = 0;
    tune_status st = TUNE_OK;
    for (int k = 0; k < f->n_pieces && !st; k++) {
        const tune_text_piece *p = &f->pieces[k];
        size_t upto = n;
        if (k + 1 < f->n_pieces) {
            size_t m = 0, cap = 0;
            free(pre);
            pre = NULL;
            st = encode(tok, f->text.data, p->end, 0, &pre, &m, &cap, err);
            if (st) break;
            upto = 0;
            while (upto < m && upto < n && pre[upto] == whole[upto]) upto++;
        }
        for (size_t j = from; j < upto; j++) labels[j] = p->train ? whole[j] : TUNE_IGNORE_INDEX;
        if (upto > from) from = upto;
    }
    free(pre);
    return st;
}

tune_status tune_data_tokenize(const tune_formatted *f, const tune_data_tokenizer *tok, int32_t **ids_out,
                               int32_t **labels_out, size_t *n_out, int *boundary_mismatch, tune_error *err)
{
    int32_t *ids = NULL, *labels = NULL;
    size_t n = 0, cap = 0;
    tune_status st = TUNE_OK;
    *boundary_mismatch = 0;
    /* labels_mark[i]: the train flag of ids[i], filled per piece */
    unsigned char *mark = NULL;
    size_t mark_cap = 0;
    for (int k = 0; k < f->n_pieces && !st; k++) {
        const tune_text_piece *p = &f->pieces[k];
        size_t before = n;
        if (p->kind == TUNE_PIECE_EOS) {
            if (tok->eos_id < 0) st = tune_fail_input(err, NULL, "the tokenizer has no EOS token to end an example");
            else st = push_id(&ids, &n, &cap, tok->eos_id, err);
        } else {
            st = encode(tok, f->text.data + p->start, p->end - p->start, p->add_special, &ids, &n, &cap, err);
        }
        if (st) break;
        if (n > mark_cap) {
            size_t c = cap > n ? cap : n;
            unsigned char *m = realloc(mark, c);
            if (!m) {
                st = tune_fail_run(err, NULL, "out of memory");
                break;
            }
            mark = m;
            mark_cap = c;
        }
        memset(mark + before, p->train ? 1 : 0, n - before);
    }
    if (!st && f->tokenize_whole) {
        int32_t *whole = NULL;
        size_t wn = 0, wcap = 0;
        st = encode(tok, f->text.data, f->text.len, 0, &whole, &wn, &wcap, err);
        if (!st && (wn != n || (n && memcmp(whole, ids, n * sizeof *ids)))) {
            *boundary_mismatch = 1;
            free(ids);
            ids = whole;
            n = wn;
            whole = NULL;
            labels = malloc((n ? n : 1) * sizeof *labels);
            if (!labels) st = tune_fail_run(err, NULL, "out of memory");
            else st = labels_by_prefix(f, tok, ids, n, labels, err);
        }
        free(whole);
    }
    if (!st && !labels) {
        labels = malloc((n ? n : 1) * sizeof *labels);
        if (!labels) st = tune_fail_run(err, NULL, "out of memory");
        else
            for (size_t i = 0; i < n; i++) labels[i] = mark[i] ? ids[i] : TUNE_IGNORE_INDEX;
    }
    free(mark);
    if (st) {
        free(ids);
        free(labels);
        return st;
    }
    if (!ids) {
        ids = malloc(sizeof *ids);
        if (!ids) {
            free(labels);
            return tune_fail_run(err, NULL, "out of memory");
        }
    }
    *ids_out = ids;
    *labels_out = labels;
    *n_out = n;
    return TUNE_OK;
}
