/* BLEU as sacreBLEU computes it by default: its 13a tokenizer (mteval-v13a's
 * punctuation splitting), word n-grams of orders 1–4 with clipped counts, a
 * brevity penalty, and its "exp" smoothing for orders without a match. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "ngram.h"
#include "tune/generate.h"

/* Replaces every `from` in sb by `to` (to is never longer), as Python's str.replace. */
static void replace_all(tune_strbuf *sb, const char *from, const char *to)
{
    const size_t nf = strlen(from), nt = strlen(to);
    size_t w = 0;
    for (size_t r = 0; r < sb->len;) {
        if (r + nf <= sb->len && !memcmp(sb->data + r, from, nf)) {
            memcpy(sb->data + w, to, nt);
            w += nt;
            r += nf;
        } else {
            sb->data[w++] = sb->data[r++];
        }
    }
    sb->len = w;
    sb->data[w] = 0;
}

/* 13a's first rule: ASCII punctuation except ' , - . is set apart by spaces. */
static int apart(unsigned char c)
{
    return (c >= '{' && c <= '~') || (c >= '[' && c <= '`') || (c >= ' ' && c <= '&') || (c >= '(' && c <= '+') ||
           (c >= ':' && c <= '@') || c == '/';
}

static int digit(unsigned char c) { return c >= '0' && c <= '9'; }

/* One pass of a two-character rule, as re.sub scans: left to right, matches never overlapping.
 * rule 2: period or comma after a non-digit; 3: before a non-digit; 4: dash after a digit. */
static void pair_rule(const tune_strbuf *in, tune_strbuf *out, int rule)
{
    out->len = 0;
    for (size_t i = 0; i < in->len; i++) {
        const unsigned char a = (unsigned char)in->data[i], b = i + 1 < in->len ? (unsigned char)in->data[i + 1] : 0;
        const int hit = i + 1 < in->len && (rule == 2   ? !digit(a) && (b == '.' || b == ',')
                                            : rule == 3 ? (a == '.' || a == ',') && !digit(b)
                                                        : digit(a) && b == '-');
        if (!hit) {
            tune_strbuf_append(out, in->data + i, 1);
            continue;
        }
        const char two[2] = {(char)a, (char)b};
        if (rule == 3) tune_strbuf_append(out, " ", 1);
        tune_strbuf_append(out, two, 1);
        tune_strbuf_append(out, " ", 1);
        tune_strbuf_append(out, two + 1, 1);
        if (rule != 3) tune_strbuf_append(out, " ", 1);
        i++;
    }
}

/* sacreBLEU's preprocessing: rstrip, then tokenizer 13a; the tokens as one
 * space-separated string in out. Works on bytes: every rule looks at ASCII
 * characters only, which never occur inside a multi-byte UTF-8 character. */
static void tokenize_13a(const char *s, tune_strbuf *out)
{
    size_t end = 0, len = strlen(s);
    for (size_t at = 0; at < len;) { /* the end of the last non-space character */
        utf8proc_int32_t c;
        const utf8proc_ssize_t k = utf8proc_iterate((const utf8proc_uint8_t *)s + at, (utf8proc_ssize_t)(len - at), &c);
        at += k > 0 ? (size_t)k : 1;
        if (k <= 0 || !tune_python_space(c)) end = at;
    }
    tune_strbuf a = {0}, b = {0};
    tune_strbuf_append(&a, s, end);
    tune_strbuf_append(&a, "", 0);
    if (!a.oom) {
        replace_all(&a, "<skipped>", "");
        replace_all(&a, "-\n", "");
        replace_all(&a, "\n", " ");
        replace_all(&a, "&quot;", "\"");
        replace_all(&a, "&amp;", "&");
        replace_all(&a, "&lt;", "<");
        replace_all(&a, "&gt;", ">");
    }
    tune_strbuf_puts(&b, " ");
    for (size_t i = 0; i < a.len; i++) {
        const unsigned char c = (unsigned char)a.data[i];
        if (apart(c)) tune_strbuf_printf(&b, " %c ", c);
        else tune_strbuf_append(&b, a.data + i, 1);
    }
    tune_strbuf_puts(&b, " ");
    pair_rule(&b, &a, 2);
    pair_rule(&a, &b, 3);
    pair_rule(&b, out, 4);
    if (a.oom || b.oom) out->oom = 1;
    tune_strbuf_free(&a);
    tune_strbuf_free(&b);
}

/* Tokens: spans of text between Python whitespace. */
typedef struct {
    const char *s;
    int len;
} token;

static int split_words(const tune_strbuf *t, token *tokens)
{
    int n = 0;
    for (size_t at = 0, start = 0; at <= t->len;) {
        utf8proc_int32_t c = ' ';
        utf8proc_ssize_t k = 1;
        if (at < t->len) k = utf8proc_iterate((const utf8proc_uint8_t *)t->data + at, (utf8proc_ssize_t)(t->len - at), &c);
        if (k <= 0) k = 1, c = 0xfffd;
        if (tune_python_space(c)) {
            if (at > start) tokens[n++] = (token){t->data + start, (int)(at - start)};
            start = at + (size_t)k;
        }
        at += (size_t)k;
    }
    return n;
}

static int token_cmp(const void *a, const void *b)
{
    const token *x = a, *y = b;
    const int m = x->len < y->len ? x->len : y->len, d = memcmp(x->s, y->s, (size_t)m);
    return d ? d : x->len - y->len;
}

/* The id of each token (n) among the sorted distinct tokens (n_dict). */
static void token_ids(const token *tok, int n, const token *dict, int n_dict, int32_t *ids)
{
    for (int i = 0; i < n; i++) {
        const token *hit = bsearch(&tok[i], dict, (size_t)n_dict, sizeof *dict, token_cmp);
        ids[i] = (int32_t)(hit - dict);
    }
}

tune_status tune_bleu_add(tune_bleu_stats *acc, const char *hyp, const char *ref, tune_error *err)
{
    tune_strbuf th = {0}, tr = {0};
    tokenize_13a(hyp, &th);
    tokenize_13a(ref, &tr);
    tune_strbuf_append(&th, "", 0);
    tune_strbuf_append(&tr, "", 0);
    const size_t cap = th.len + tr.len + 2; /* more than the number of tokens */
    token *tokens = malloc(cap * sizeof *tokens), *dict = malloc(cap * sizeof *dict);
    int32_t *ids = malloc(cap * sizeof *ids);
    long *hs = malloc(cap * sizeof *hs), *rs = malloc(cap * sizeof *rs);
    tune_status st = tokens && dict && ids && hs && rs && !th.oom && !tr.oom ? TUNE_OK
                                                                           : tune_fail_run(err, "BLEU", "out of memory");
    if (st == TUNE_OK) {
        const int nh = split_words(&th, tokens), nr = split_words(&tr, tokens + nh);
        memcpy(dict, tokens, (size_t)(nh + nr) * sizeof *dict);
        qsort(dict, (size_t)(nh + nr), sizeof *dict, token_cmp);
        int n_dict = 0;
        for (int i = 0; i < nh + nr; i++)
            if (!n_dict || token_cmp(&dict[n_dict - 1], &dict[i])) dict[n_dict++] = dict[i];
        token_ids(tokens, nh + nr, dict, n_dict, ids);
        const int32_t *h = ids, *r = ids + nh;
        for (int n = 1; n <= TUNE_BLEU_ORDER; n++) {
            long kh, kr;
            tune_ngrams_sorted(h, nh, n, hs, &kh);
            tune_ngrams_sorted(r, nr, n, rs, &kr);
            acc->total[n - 1] += kh;
            acc->correct[n - 1] += tune_ngrams_clipped(h, hs, kh, r, rs, kr, n);
        }
        acc->sys_len += nh;
        acc->ref_len += nr;
    }
    tune_strbuf_free(&th);
    tune_strbuf_free(&tr);
    free(tokens);
    free(dict);
    free(ids);
    free(hs);
    free(rs);
    return st;
}

double tune_bleu_score(const tune_bleu_stats *s, int effective_order)
{
    int any = 0;
    for (int n = 0; n < TUNE_BLEU_ORDER; n++) any |= s->correct[n] > 0;
    if (!any) return 0.0;
    const double bp = s->sys_len >= s->ref_len ? 1.0 : exp(1.0 - (double)s->ref_len / (double)s->sys_len);
    double precisions[TUNE_BLEU_ORDER] = {0}, smooth = 1.0, log_sum = 0.0;
    int orders = TUNE_BLEU_ORDER;
    for (int n = 0; n < TUNE_BLEU_ORDER; n++) {
        if (s->total[n] == 0) break;
        if (effective_order) orders = n + 1;
        if (s->correct[n] == 0) {
            smooth *= 2;
            precisions[n] = 100.0 / (smooth * (double)s->total[n]);
        } else {
            precisions[n] = 100.0 * (double)s->correct[n] / (double)s->total[n];
        }
    }
    /* sacreBLEU's my_log: log(0) is floored at -9999999999. */
    for (int n = 0; n < orders; n++) log_sum += precisions[n] > 0 ? log(precisions[n]) : -9999999999.0;
    return bp * exp(log_sum / orders);
}
