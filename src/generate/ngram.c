/* Clipped n-gram matches, shared by chrF and BLEU. */
#include "ngram.h"

#include <stdlib.h>

int tune_python_space(int32_t c)
{
    return (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f ||
           c == 0x3000;
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

void tune_ngrams_sorted(const int32_t *text, long n_text, int order, long *starts, long *n_out)
{
    const long n = n_text >= order ? n_text - order + 1 : 0;
    for (long i = 0; i < n; i++) starts[i] = i;
    ngram_key key = {text, order};
    qsort_r(starts, (size_t)n, sizeof *starts, compare_starts, &key);
    *n_out = n;
}

long tune_ngrams_clipped(const int32_t *h, const long *hs, long nh, const int32_t *r, const long *rs, long nr,
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

