/* chrF (Popović 2015) as sacreBLEU computes it by default: character
 * n-grams of orders 1–6 over Unicode code points with whitespace removed,
 * clipped matches, precision and recall averaged over the orders that both
 * sides have, F-beta with beta 2. */
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "tune/generate.h"

/* Python's str.isspace (what str.split() removes). */
static int python_space(int32_t c)
{
    return (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f ||
           c == 0x3000;
}

/* Code points of s without whitespace; an invalid byte becomes U+FFFD. */
static int32_t *code_points(const char *s, long *n_out)
{
    const size_t len = strlen(s);
    int32_t *cp = malloc((len + 1) * sizeof *cp);
    if (!cp) return NULL;
    long n = 0;
    for (size_t at = 0; at < len;) {
        utf8proc_int32_t c;
        const utf8proc_ssize_t k =
            utf8proc_iterate((const utf8proc_uint8_t *)s + at, (utf8proc_ssize_t)(len - at), &c);
        at += k > 0 ? (size_t)k : 1;
        if (k <= 0) c = 0xfffd;
        if (!python_space(c)) cp[n++] = c;
    }
    *n_out = n;
    return cp;
}

static int ngram_cmp(const int32_t *x, const int32_t *y, int order)
{
    for (int i = 0; i < order; i++)
        if (x[i] != y[i]) return x[i] < y[i] ? -1 : 1;
    return 0;
}

typedef struct {
    const int32_t *text;
    int order;
} ngram_key;

static int compare_starts(const void *a, const void *b, void *ctx)
{
    const ngram_key *k = ctx;
    return ngram_cmp(k->text + *(const long *)a, k->text + *(const long *)b, k->order);
}

/* Start positions of the order-n n-grams of text (n_text code points), sorted by content. */
static void sorted_ngrams(const int32_t *text, long n_text, int order, long *starts, long *n_out)
{
    const long n = n_text >= order ? n_text - order + 1 : 0;
    for (long i = 0; i < n; i++) starts[i] = i;
    ngram_key key = {text, order};
    qsort_r(starts, (size_t)n, sizeof *starts, compare_starts, &key);
    *n_out = n;
}

/* Σ over distinct n-grams of the smaller of its two counts; both lists sorted by content. */
static long clipped_matches(const int32_t *h, const long *hs, long nh, const int32_t *r, const long *rs, long nr,
                            int order)
{
    long match = 0, i = 0, j = 0;
    while (i < nh && j < nr) {
        const int d = ngram_cmp(h + hs[i], r + rs[j], order);
        if (d) {
            i += d < 0;
            j += d > 0;
            continue;
        }
        long ci = 1, cj = 1;
        while (i + ci < nh && !ngram_cmp(h + hs[i + ci], h + hs[i], order)) ci++;
        while (j + cj < nr && !ngram_cmp(r + rs[j + cj], r + rs[j], order)) cj++;
        match += ci < cj ? ci : cj;
        i += ci;
        j += cj;
    }
    return match;
}

tune_status tune_chrf_add(tune_chrf_stats *acc, const char *hyp, const char *ref, tune_error *err)
{
    long nh, nr;
    int32_t *h = code_points(hyp, &nh), *r = code_points(ref, &nr);
    long *hs = malloc((size_t)(nh + 1) * sizeof *hs), *rs = malloc((size_t)(nr + 1) * sizeof *rs);
    tune_status st = h && r && hs && rs ? TUNE_OK : tune_fail_run(err, "chrF", "out of memory");
    for (int n = 1; n <= TUNE_CHRF_ORDER && st == TUNE_OK; n++) {
        long kh, kr;
        sorted_ngrams(h, nh, n, hs, &kh);
        sorted_ngrams(r, nr, n, rs, &kr);
        acc->hyp[n - 1] += kr ? kh : 0; /* sacreBLEU counts no hypothesis n-grams against a reference without any */
        acc->ref[n - 1] += kr;
        acc->match[n - 1] += clipped_matches(h, hs, kh, r, rs, kr, n);
    }
    free(h);
    free(r);
    free(hs);
    free(rs);
    return st;
}

double tune_chrf_score(const tune_chrf_stats *s)
{
    const double beta2 = 4.0;
    double prec = 0, rec = 0;
    int orders = 0;
    for (int n = 0; n < TUNE_CHRF_ORDER; n++) {
        if (s->hyp[n] <= 0 || s->ref[n] <= 0) continue;
        prec += (double)s->match[n] / (double)s->hyp[n];
        rec += (double)s->match[n] / (double)s->ref[n];
        orders++;
    }
    if (!orders) return 0.0;
    prec /= orders;
    rec /= orders;
    return prec + rec > 0 ? 100.0 * (1 + beta2) * prec * rec / (beta2 * prec + rec) : 0.0;
}
