/* Text generation: sampling as Transformers does it (its logits processors,
 * in its order) with Philox draws, and streaming of the generated text
 * (complete UTF-8 characters only, stop strings held back and cut). */
#ifndef TUNE_GENERATE_H
#define TUNE_GENERATE_H

#include <stddef.h>
#include <stdint.h>

#include "tune/error.h"
#include "tune/util.h"

/* ---- Sampling ---------------------------------------------------------- */

typedef struct tune_sampling {
    float temperature;        /* 0: greedy (argmax, deterministic) */
    int top_k;                /* 0: off */
    float top_p;              /* 1: off */
    float repetition_penalty; /* 1: off */
    uint64_t seed;            /* draw of step s: Philox (seed, TUNE_STREAM_SAMPLING, s) */
} tune_sampling;

/* Greedy, no penalty, seed 0. */
tune_sampling tune_sampling_greedy(void);
/* Input error unless temperature ≥ 0, top_k ≥ 0, 0 < top_p ≤ 1, repetition_penalty > 0. */
tune_status tune_sampling_check(const tune_sampling *s, tune_error *err);

typedef struct tune_sampler tune_sampler;

/* Scratch for a vocabulary of V tokens. */
tune_status tune_sampler_create(const tune_sampling *s, int V, tune_sampler **out, tune_error *err);
void tune_sampler_free(tune_sampler *sm);

/* Transformers' processors in place, in its order: repetition penalty over
 * the distinct tokens of history (logit / penalty when positive, · penalty
 * when negative), then, when sampling (temperature > 0): temperature, top-k
 * (ties with the k-th value kept), top-p (smallest set of the largest
 * probabilities whose mass exceeds top_p, at least one). Filtered tokens
 * become -INFINITY. Ids outside [0, V) in history are ignored.
 * logits: (V)   history: (n_history) */
void tune_sampler_process(tune_sampler *sm, float *logits, const int32_t *history, int n_history);

/* The next token: tune_sampler_process, then the first argmax when greedy,
 * otherwise the inverse CDF of softmax(logits) in token order at the uniform
 * Philox (seed, TUNE_STREAM_SAMPLING, step). logits is overwritten. */
int32_t tune_sampler_next(tune_sampler *sm, float *logits, const int32_t *history, int n_history,
                          uint64_t step);

/* ---- Streaming text ---------------------------------------------------- */

/* Hands out generated text as it grows: only complete UTF-8 characters,
 * never a possible beginning of a stop string, and nothing from the first
 * stop string on. Invalid UTF-8 bytes come out as U+FFFD. */
typedef struct tune_text_stream {
    const char *const *stops; /* (n_stops), kept by the caller; empty ones are ignored */
    int n_stops;
    size_t done;              /* bytes of the text consumed so far */
    int stopped;              /* a stop string was found (at byte stop_at of the text) */
    size_t stop_at;
} tune_text_stream;

void tune_text_stream_init(tune_text_stream *ts, const char *const *stops, int n_stops);
/* text (len bytes) is the whole generated text so far; it only ever grows
 * at its end. Appends what may be shown now to out. With final set, the
 * generation is over: everything up to a stop string is appended. */
void tune_text_stream_push(tune_text_stream *ts, const char *text, size_t len, int final, tune_strbuf *out);

#endif
