/* What the n-gram scores (chrF, BLEU) share: Python's idea of whitespace,
 * and clipped n-gram matches of two sequences of int32 symbols. */
#ifndef TUNE_GENERATE_NGRAM_H
#define TUNE_GENERATE_NGRAM_H

#include <stdint.h>

/* Python's str.isspace (what str.split() splits at). */
int tune_python_space(int32_t c);
/* Start positions of the order-n n-grams of text (n_text symbols), sorted by
 * content. starts: room for n_text + 1. */
void tune_ngrams_sorted(const int32_t *text, long n_text, int order, long *starts, long *n_out);
/* Σ over distinct n-grams of the smaller of its two counts; both lists from tune_ngrams_sorted. */
long tune_ngrams_clipped(const int32_t *h, const long *hs, long nh, const int32_t *r, const long *rs, long nr,
                         int order);

#endif
