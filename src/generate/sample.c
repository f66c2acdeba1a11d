/* Sampling with Transformers' logits processors (RepetitionPenalty,
 * Temperature, TopK, TopP, in the order GenerationMixin applies them) and
 * draws from the shared Philox generator, so a seed gives the same tokens on
 * every machine and thread count. */
#include "tune/generate.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tune/rng.h"

struct tune_sampler {
    tune_sampling s;
    int V;
    unsigned char *seen; /* (V): token already penalised in this call */
    float *heap;         /* (V): top-k min-heap */
    struct scored { float logit; int32_t id; } *order; /* (V): tokens being sorted */
};

tune_sampling tune_sampling_greedy(void)
{
    tune_sampling s = {0.0f, 0, 1.0f, 1.0f, 0};
    return s;
}

tune_status tune_sampling_check(const tune_sampling *s, tune_error *err)
{
    if (!(s->temperature >= 0.0f) || !isfinite(s->temperature))
        return tune_fail_input(err, NULL, "temperature must be a number >= 0 (0 is greedy), not %g",
                               s->temperature);
    if (s->top_k < 0) return tune_fail_input(err, NULL, "top_k must be >= 0 (0 is off), not %d", s->top_k);
    if (!(s->top_p > 0.0f && s->top_p <= 1.0f))
        return tune_fail_input(err, NULL, "top_p must lie in (0, 1] (1 is off), not %g", s->top_p);
    if (!(s->repetition_penalty > 0.0f) || !isfinite(s->repetition_penalty))
        return tune_fail_input(err, NULL, "repetition_penalty must be > 0 (1 is off), not %g",
                               s->repetition_penalty);
    return TUNE_OK;
}

tune_status tune_sampler_create(const tune_sampling *s, int V, tune_sampler **out, tune_error *err)
{
    *out = NULL;
    if (tune_sampling_check(s, err)) return TUNE_ERR_INPUT;
    if (V < 1) return tune_fail_input(err, NULL, "sampler: empty vocabulary");
    tune_sampler *sm = calloc(1, sizeof *sm);
    if (sm) {
        sm->seen = calloc((size_t)V, 1);
        sm->heap = malloc((size_t)V * sizeof *sm->heap);
        sm->order = malloc((size_t)V * sizeof *sm->order);
    }
    if (!sm || !sm->seen || !sm->heap || !sm->order) {
        tune_sampler_free(sm);
        return tune_fail_run(err, NULL, "out of memory creating the sampler");
    }
    sm->s = *s;
    sm->V = V;
    *out = sm;
    return TUNE_OK;
}

void tune_sampler_free(tune_sampler *sm)
{
    if (!sm) return;
    free(sm->seen);
    free(sm->heap);
    free(sm->order);
    free(sm);
}

/* Each distinct token of history once (Transformers gathers, then scatters). */
static void repetition_penalty(tune_sampler *sm, float *logits, const int32_t *history, int n)
{
    const float p = sm->s.repetition_penalty;
    for (int i = 0; i < n; i++) {
        const int32_t t = history[i];
        if (t < 0 || t >= sm->V || sm->seen[t]) continue;
        sm->seen[t] = 1;
        logits[t] = logits[t] < 0.0f ? logits[t] * p : logits[t] / p;
    }
    for (int i = 0; i < n; i++)
        if (history[i] >= 0 && history[i] < sm->V) sm->seen[history[i]] = 0;
}

/* Sift-down of a min-heap of k values. heap: (k) */
static void heap_down(float *heap, int k, int i)
{
    for (;;) {
        int m = i;
        const int l = 2 * i + 1, r = l + 1;
        if (l < k && heap[l] < heap[m]) m = l;
        if (r < k && heap[r] < heap[m]) m = r;
        if (m == i) return;
        const float t = heap[i];
        heap[i] = heap[m];
        heap[m] = t;
        i = m;
    }
}

/* Keeps the logits ≥ the k-th largest (ties kept, as torch.topk + '<'). The
 * k largest are found with a min-heap of k values. */
static void top_k(tune_sampler *sm, float *logits)
{
    const int V = sm->V, k = sm->s.top_k < V ? sm->s.top_k : V;
    float *heap = sm->heap; /* (k) */
    for (int i = 0; i < k; i++) heap[i] = logits[i];
    for (int i = k / 2 - 1; i >= 0; i--) heap_down(heap, k, i);
    for (int i = k; i < V; i++)
        if (logits[i] > heap[0]) {
            heap[0] = logits[i];
            heap_down(heap, k, 0);
        }
    const float kth = heap[0];
    for (int i = 0; i < V; i++)
        if (logits[i] < kth) logits[i] = -INFINITY;
}

/* Ascending by logit, then by id: a fixed order for ties. */
static int cmp_ascending(const void *a, const void *b)
{
    const struct scored *x = a, *y = b;
    if (x->logit != y->logit) return x->logit < y->logit ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

/* TopPLogitsWarper: sort ascending, cumulative softmax, remove the tokens
 * whose cumulative probability is ≤ 1 − top_p; the largest always stays. */
static void top_p(tune_sampler *sm, float *logits)
{
    int n = 0;
    float mx = -INFINITY;
    for (int i = 0; i < sm->V; i++)
        if (logits[i] > -INFINITY) {
            sm->order[n].logit = logits[i];
            sm->order[n++].id = i;
            mx = logits[i] > mx ? logits[i] : mx;
        }
    if (n <= 1) return;
    qsort(sm->order, (size_t)n, sizeof *sm->order, cmp_ascending);
    double total = 0.0;
    for (int j = 0; j < n; j++) total += exp((double)sm->order[j].logit - mx);
    double cum = 0.0;
    const double cut = 1.0 - (double)sm->s.top_p;
    for (int j = 0; j < n - 1; j++) {
        cum += exp((double)sm->order[j].logit - mx) / total;
        if (cum > cut) break;
        logits[sm->order[j].id] = -INFINITY;
    }
}

void tune_sampler_process(tune_sampler *sm, float *logits, const int32_t *history, int n_history)
{
    if (sm->s.repetition_penalty != 1.0f) repetition_penalty(sm, logits, history, n_history);
    if (sm->s.temperature == 0.0f) return;
    if (sm->s.temperature != 1.0f)
        for (int i = 0; i < sm->V; i++) logits[i] /= sm->s.temperature;
    if (sm->s.top_k > 0) top_k(sm, logits);
    if (sm->s.top_p < 1.0f) top_p(sm, logits);
}

int32_t tune_sampler_next(tune_sampler *sm, float *logits, const int32_t *history, int n_history,
                          uint64_t step)
{
    tune_sampler_process(sm, logits, history, n_history);
    int32_t best = 0;
    for (int i = 1; i < sm->V; i++)
        if (logits[i] > logits[best]) best = i;
    if (sm->s.temperature == 0.0f || !(logits[best] > -INFINITY)) return best;
    /* Inverse CDF in token order; u ∈ (0, 1] so a token of zero mass is never drawn. */
    const double mx = logits[best];
    double total = 0.0;
    for (int i = 0; i < sm->V; i++) total += exp((double)logits[i] - mx);
    const double target = (double)tune_rng_uniform(sm->s.seed, TUNE_STREAM_SAMPLING, step) * total;
    double cum = 0.0;
    int32_t last = best;
    for (int i = 0; i < sm->V; i++) {
        const double p = exp((double)logits[i] - mx);
        if (p == 0.0) continue;
        cum += p;
        last = i;
        if (cum >= target) return i;
    }
    return last; /* rounding left the total a hair above the sum */
}
