/* Text generation: incremental decoding with a key/value cache, sampling as
 * Transformers does it (its logits processors, in its order) with Philox
 * draws, streaming of the generated text (complete UTF-8 characters only,
 * stop strings held back and cut), and a model session for the inference
 * verbs (generate, chat, compare). */
#ifndef TUNE_GENERATE_H
#define TUNE_GENERATE_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "tune/backend.h"
#include "tune/error.h"
#include "tune/model.h"
#include "tune/template.h"
#include "tune/tokenizer.h"
#include "tune/util.h"

/* ---- Incremental decoding ---------------------------------------------- */

/* A key/value cache over a model (fp32 or blocks), on backend be, which
 * holds its own copy of the weights (on the CPU: the model's). With lora
 * (NULL: none), every adapted product adds scaling·(x·Aᵀ)·Bᵀ, unmerged, so a
 * base kept in blocks stays in them; the adapters' saved embed_tokens /
 * lm_head copies replace the model's. lora was made for this model (e.g.
 * tune_lora_open_peft). The model and lora must outlive the decoder. */
typedef struct tune_decoder tune_decoder;

tune_status tune_decoder_create(const tune_backend *be, const tune_model *model, const tune_lora *lora,
                                tune_decoder **out, tune_error *err);
void tune_decoder_free(tune_decoder *d);
/* Makes every product add lora's updates instead (NULL: none); a change of
 * adapter forgets the cache. On the CPU this clears lora's gradients, so two
 * decoders must not take the same adapter at the same moment. */
tune_status tune_decoder_set_lora(tune_decoder *d, const tune_lora *lora, tune_error *err);
const tune_lora *tune_decoder_lora(const tune_decoder *d);
/* Tokens held in the cache, and the cache's token ids: (length). */
int tune_decoder_length(const tune_decoder *d);
int tune_decoder_vocab_size(const tune_decoder *d);
const int32_t *tune_decoder_tokens(const tune_decoder *d);
/* Forgets every position from n on (n < length). */
void tune_decoder_rewind(tune_decoder *d, int n);
/* Runs n tokens at the positions after the cached ones and caches them.
 * logits: (n, V) with all_logits, else (V) for the last token. Fails when
 * the context would pass max_position_embeddings. ids: (n) */
tune_status tune_decoder_feed(tune_decoder *d, const int32_t *ids, int n, float *logits, int all_logits,
                              tune_error *err);
/* Makes the cache hold ids: keeps the longest prefix it already holds
 * (at most n − 1 tokens) and feeds the rest. logits: (V) of the last token. */
tune_status tune_decoder_prefill(tune_decoder *d, const int32_t *ids, int n, float *logits, tune_error *err);

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

/* ---- The generation loop --------------------------------------------- */

typedef struct tune_generate_opts {
    int max_new_tokens;
    const int32_t *eos_ids; /* (n_eos): generation ends at any of them (not returned) */
    int n_eos;
    uint64_t first_step;    /* sampling step of the first new token (chat counts on across turns) */
} tune_generate_opts;

/* Called after each new token; a nonzero return ends the generation (a stop string). */
typedef int (*tune_token_fn)(void *ctx, int32_t id);

/* Prefills prompt (reusing the cached prefix) and generates up to
 * max_new_tokens, each picked by tune_sampler_next with the prompt and the
 * tokens so far as history. out: (max_new_tokens) the new tokens, *n_out of
 * them; *hit_eos tells whether an EOS id ended the generation. on_token may be NULL. */
tune_status tune_generate(tune_decoder *d, tune_sampler *sm, const int32_t *prompt, int n_prompt,
                          const tune_generate_opts *opts, tune_token_fn on_token, void *ctx, int32_t *out,
                          int *n_out, int *hit_eos, tune_error *err);

/* ---- Streaming text ---------------------------------------------------- */

/* Hands out generated text as it grows: only complete UTF-8 characters,
 * never a possible beginning of a stop string, and nothing from the first
 * stop string on. Invalid UTF-8 bytes come out as U+FFFD. The text is the
 * decoding of every token generated so far; it grows at its end, except
 * that a lossy decoder's trailing U+FFFD (a character whose remaining bytes
 * are still to come) may turn into that character, so trailing U+FFFDs wait
 * for the next token or the end. */
typedef struct tune_text_stream {
    const char *const *stops; /* (n_stops), kept by the caller; empty ones are ignored */
    int n_stops;
    size_t done;              /* bytes of the text consumed so far */
    int stopped;              /* a stop string was found (at byte stop_at of the text) */
    size_t stop_at;
} tune_text_stream;

void tune_text_stream_init(tune_text_stream *ts, const char *const *stops, int n_stops);
/* text (len bytes) is the whole generated text so far. Appends what may be
 * shown now to out. With final set, the generation is over: everything up
 * to a stop string is appended. */
void tune_text_stream_push(tune_text_stream *ts, const char *text, size_t len, int final, tune_strbuf *out);

/* ---- A model ready to answer ------------------------------------------ */

/* Weights (an adapter merged in), tokenizer, chat template, EOS ids and a
 * decoder whose cache is reused across generations (a chat's earlier turns
 * are not computed again). */
typedef struct tune_lm tune_lm;

/* model_path: Hugging Face folder or GGUF file; adapter_dir: a PEFT LoRA
 * adapter folder or NULL. EOS ids: the config's, the tokenizer's, and
 * whichever of <|eot_id|>, <|im_end|>, <|end_of_text|>, <|eom_id|>,
 * <|endoftext|>, </s> the vocabulary has. */
tune_status tune_lm_open(const tune_backend *be, const char *model_path, const char *adapter_dir, tune_lm **out,
                         tune_error *err);
void tune_lm_close(tune_lm *lm);
/* NULL when prompts can be rendered with a chat template (the model has
 * one that parses, or one was set); otherwise why not. */
const char *tune_lm_template_missing(const tune_lm *lm);
/* Renders prompts with the template a config's chat_template: NAME means
 * for this model (tune_template_resolve: "chatml", "llama3", ...,
 * "tokenizer_default_fallback_chatml"), or with the Jinja template in the
 * file NAME when it ends in ".jinja". */
tune_status tune_lm_set_template(tune_lm *lm, const char *name, tune_error *err);
/* The EOS ids generation stops at; returns their count. */
int tune_lm_eos_ids(const tune_lm *lm, const int32_t **ids);

/* Prompt ids: msgs rendered with the chat template and the generation
 * prompt (encoded without adding special tokens again), or with raw set the
 * last message's content encoded as it is (the tokenizer adds BOS where the
 * model expects it). An input error when the template is missing. */
tune_status tune_lm_prompt(tune_lm *lm, const tune_chat_message *msgs, int n, int raw, tune_ids *ids,
                           tune_error *err);

typedef struct tune_reply_opts {
    tune_sampling sampling;
    int max_new_tokens;
    const char *const *stops; /* (n_stops) stop strings: the reply ends before the first */
    int n_stops;
    uint64_t first_step;      /* sampling step of the first token */
    const atomic_int *cancel; /* NULL, or set by another thread to end the reply after the current token */
} tune_reply_opts;

typedef enum { TUNE_STOP_LENGTH, TUNE_STOP_EOS, TUNE_STOP_STRING, TUNE_STOP_CANCELLED } tune_stop_reason;

typedef struct tune_reply_stats {
    int prompt_tokens, new_tokens;
    double seconds; /* prefill and generation */
    tune_stop_reason stop;
} tune_reply_stats;

/* Receives reply text as soon as it is final (complete UTF-8, no stop string). */
typedef void (*tune_text_fn)(void *ctx, const char *s, size_t n);

/* Generates after prompt; the reply (special tokens left out, cut before a
 * stop string) is appended to reply and streamed through write (may be NULL). */
tune_status tune_lm_generate(tune_lm *lm, const int32_t *prompt, int n_prompt, const tune_reply_opts *o,
                             tune_text_fn write, void *ctx, tune_strbuf *reply, tune_reply_stats *stats,
                             tune_error *err);

/* ---- Several adapters and generations on one copy of the weights -------
 * (the server's slots): siblings share an lm's weights, each with its own
 * adapter, tokenizer and template; decoders give each concurrent
 * generation its own cache. */

/* The weights of base (which must outlive it) with the PEFT adapter in
 * adapter_dir, and the tokenizer tune_lm_open would pick for it. Adapters
 * with modules_to_save are refused: their copies change the shared
 * vocabulary (merge such an adapter, or serve it alone). */
tune_status tune_lm_open_sibling(tune_lm *base, const char *adapter_dir, tune_lm **out, tune_error *err);
/* A decoder over lm's weights, with lm's adapter and a cache of its own. */
tune_status tune_lm_decoder_create(const tune_lm *lm, tune_decoder **out, tune_error *err);
/* Makes d (made for lm or one of its siblings) decode with lm's adapter
 * (tune_decoder_set_lora: callers serialise binds of one adapter). */
tune_status tune_lm_bind(const tune_lm *lm, tune_decoder *d, tune_error *err);
/* tune_lm_generate on d, which must be bound to lm (tune_lm_bind). */
tune_status tune_lm_generate_on(tune_lm *lm, tune_decoder *d, const int32_t *prompt, int n_prompt,
                                const tune_reply_opts *o, tune_text_fn write, void *ctx, tune_strbuf *reply,
                                tune_reply_stats *stats, tune_error *err);
/* The most positions a prompt and its reply may take together. */
int tune_lm_context_length(const tune_lm *lm);

/* ---- Scoring answers against references ------------------------------- */

/* chrF as sacreBLEU's default CHRF() computes it (character n-grams of
 * orders 1–6, whitespace removed, beta 2). Statistics add up over
 * sentences: one sentence's give its sentence score, all of them the
 * corpus score. */
#define TUNE_CHRF_ORDER 6

typedef struct tune_chrf_stats {
    long hyp[TUNE_CHRF_ORDER], ref[TUNE_CHRF_ORDER], match[TUNE_CHRF_ORDER]; /* n-gram counts per order */
} tune_chrf_stats;

/* Adds the n-gram counts of hyp against ref (UTF-8; invalid bytes count as
 * U+FFFD). Like sacreBLEU, an order the reference has no n-grams of adds no
 * hypothesis n-grams either. */
tune_status tune_chrf_add(tune_chrf_stats *acc, const char *hyp, const char *ref, tune_error *err);
/* 0–100. */
double tune_chrf_score(const tune_chrf_stats *s);

/* BLEU as sacreBLEU's default BLEU() computes it: tokenizer 13a, word
 * n-grams of orders 1–4, clipped counts, brevity penalty, "exp" smoothing.
 * Statistics add up over sentences. */
#define TUNE_BLEU_ORDER 4

typedef struct tune_bleu_stats {
    long sys_len, ref_len;                                    /* tokens */
    long correct[TUNE_BLEU_ORDER], total[TUNE_BLEU_ORDER];    /* n-gram counts per order */
} tune_bleu_stats;

tune_status tune_bleu_add(tune_bleu_stats *acc, const char *hyp, const char *ref, tune_error *err);
/* 0–100. effective_order: as BLEU(effective_order=True), sacreBLEU's advice
 * for one sentence (orders without any hypothesis n-gram are left out). */
double tune_bleu_score(const tune_bleu_stats *s, int effective_order);

/* Excel task accuracy of answers against references: the worksheet
 * functions a reference calls (upper-case names before "(": SUMIFS(,
 * T.TEST() and the formulas it writes ("=" and a call or reference up to
 * where its parentheses close). An answer names the functions when each one
 * occurs in it as a word (any case); a reference formula is matched when the
 * answer writes the same formula once spaces are removed and letters
 * upper-cased. */
typedef struct tune_excel_stats {
    long fn_answers, fn_named;       /* answers whose reference calls functions; those naming all of them */
    long formulas, formulas_matched; /* reference formulas; those the answer writes too */
} tune_excel_stats;

tune_status tune_excel_add(tune_excel_stats *acc, const char *hyp, const char *ref, tune_error *err);

#endif
