/* chrF (Popović 2015) as sacreBLEU computes it by default: character
 * n-grams of orders 1–6 over Unicode code points with whitespace removed,
 * clipped matches, precision and recall averaged over the orders that both
 * sides have, F-beta with beta 2. */
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "tune/generate.h"
#include "ngram.h"

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
        if (!tune_python_space(c)) cp[n++] = c;
    }
    *n_out = n;
    return cp;
}

tune_status tune_chrf_add(tune_chrf_stats *acc, const char *hyp, const char *ref, tune_error *err)
{
    long nh, nr;
    int32_t *h = code_points(hyp, &nh), *r = code_points(ref, &nr);
    long *hs = malloc((size_t)(nh + 1) * sizeof *hs), *rs = malloc((size_t)(nr + 1) * sizeof *rs);
    tune_status st = h && r && hs && rs ? TUNE_OK : tune_fail_run(err, "chrF", "out of memory");
    for (int n = 1; n <= TUNE_CHRF_ORDER && st == TUNE_OK; n++) {
        long kh, kr;
        tune_ngrams_sorted(h, nh, n, hs, &kh);
        tune_ngrams_sorted(r, nr, n, rs, &kr);
        acc->hyp[n - 1] += kr ? kh : 0; /* sacreBLEU counts no hypothesis n-grams against a reference without any */
        acc->ref[n - 1] += kr;
        acc->match[n - 1] += tune_ngrams_clipped(h, hs, kh, r, rs, kr, n);
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
