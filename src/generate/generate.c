/* The generation loop: prefill, then sample and feed one token at a time. */
#include "tune/generate.h"

#include <stdlib.h>
#include <string.h>

static int is_eos(const tune_generate_opts *o, int32_t id)
{
    for (int i = 0; i < o->n_eos; i++)
        if (o->eos_ids[i] == id) return 1;
    return 0;
}

tune_status tune_generate(tune_decoder *d, tune_sampler *sm, const int32_t *prompt, int n_prompt,
                          const tune_generate_opts *opts, tune_token_fn on_token, void *ctx, int32_t *out,
                          int *n_out, int *hit_eos, tune_error *err)
{
    *n_out = 0;
    *hit_eos = 0;
    const int max_new = opts->max_new_tokens;
    if (max_new < 0) return tune_fail_input(err, NULL, "max_new_tokens must be >= 0, not %d", max_new);
    if (n_prompt < 1) return tune_fail_input(err, NULL, "the prompt is empty");
    const int V = tune_decoder_vocab_size(d);
    float *logits = malloc((size_t)V * sizeof *logits);
    int32_t *history = malloc(((size_t)n_prompt + max_new) * sizeof *history); /* prompt, then new tokens */
    tune_status st = TUNE_OK;
    if (!logits || !history) st = tune_fail_run(err, NULL, "out of memory");
    if (st == TUNE_OK && max_new > 0) {
        memcpy(history, prompt, (size_t)n_prompt * sizeof *prompt);
        st = tune_decoder_prefill(d, prompt, n_prompt, logits, err);
    }
    for (int s = 0; st == TUNE_OK && s < max_new; s++) {
        const int32_t id = tune_sampler_next(sm, logits, history, n_prompt + s, opts->first_step + (uint64_t)s);
        if (is_eos(opts, id)) {
            *hit_eos = 1;
            break;
        }
        out[(*n_out)++] = id;
        history[n_prompt + s] = id;
        if ((on_token && on_token(ctx, id)) || s + 1 == max_new) break;
        st = tune_decoder_feed(d, &id, 1, logits, 0, err);
    }
    free(logits);
    free(history);
    return st;
}
