/* A model ready to answer: weights (kept as the file stores them) and an
 * adapter applied unmerged, tokenizer,
 * chat template, EOS ids and a decoder whose cache survives between
 * generations, so a conversation only computes what is new. */
#include "tune/generate.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tune/lora.h"

struct tune_lm {
    const tune_backend *be;
    tune_model own;     /* the weights, unless shared */
    tune_model *model;  /* &own, or the weights of the lm this one is a sibling of */
    tune_lora *lora;    /* NULL without an adapter */
    tune_tokenizer *tok;
    int has_template;
    char no_template[sizeof(((tune_error *)0)->message)]; /* why there is none */
    tune_template tpl;
    int32_t eos[TUNE_MAX_EOS + 8]; /* (n_eos) */
    int n_eos;
    tune_decoder *dec;
    char *path; /* the weights' file or folder: the tokenizer's fallback source */
};

/* Ends of a turn or a document, whatever the model's config lists. */
static const char *const EOS_TOKENS[] = {"<|eot_id|>", "<|im_end|>", "<|end_of_text|>", "<|eom_id|>",
                                         "<|endoftext|>", "</s>"};

static void add_eos(tune_lm *lm, int32_t id)
{
    if (id < 0 || id >= lm->model->cfg.vocab_size) return;
    for (int i = 0; i < lm->n_eos; i++)
        if (lm->eos[i] == id) return;
    if (lm->n_eos < (int)(sizeof lm->eos / sizeof lm->eos[0])) lm->eos[lm->n_eos++] = id;
}

/* Opens the template chat_template: NAME means for this model (NULL: its
 * own; "jinja": jinja, the text of the file jinja_file); its BOS/EOS texts
 * are the tokenizer's own where it has them. */
static tune_status open_template(tune_lm *lm, const char *name, const char *jinja, const char *jinja_file,
                                 tune_error *err)
{
    tune_template t;
    tune_status st = tune_template_open(name, tune_tokenizer_chat_template(lm->tok), jinja, jinja_file, &t, err);
    if (st) return st;
    tune_tokenizer_bos_eos_texts(lm->tok, &t.opt.bos, &t.opt.eos);
    tune_template_close(&lm->tpl);
    lm->tpl = t;
    lm->has_template = 1;
    return TUNE_OK;
}

/* The rest of opening lm, whose weights (and adapter) are in place: the
 * tokenizer, a decoder, the template and the EOS ids. Closes lm on failure. */
static tune_status finish_open(tune_lm *lm, const char *adapter_dir, tune_lm **out, tune_error *err)
{
    const char *tok_path = tune_lora_tokenizer_source(adapter_dir, lm->path);
    tune_status st = tune_tokenizer_load(tok_path, &lm->tok, err);
    if (st == TUNE_OK && tune_tokenizer_vocab_size(lm->tok) > lm->model->cfg.vocab_size)
        st = tune_fail_input(err, tok_path, "the tokenizer has %d ids but the model only %d",
                             (int)tune_tokenizer_vocab_size(lm->tok), lm->model->cfg.vocab_size);
    if (st == TUNE_OK) st = tune_lm_decoder_create(lm, &lm->dec, err);
    if (st != TUNE_OK) {
        tune_lm_close(lm);
        return st;
    }
    tune_error why;
    if (!tune_tokenizer_chat_template(lm->tok))
        snprintf(lm->no_template, sizeof lm->no_template, "the model has no chat template");
    else if (open_template(lm, NULL, NULL, NULL, &why) != TUNE_OK)
        tune_error_format(&why, lm->no_template, sizeof lm->no_template);
    for (int i = 0; i < lm->model->cfg.n_eos_token_ids; i++) add_eos(lm, lm->model->cfg.eos_token_ids[i]);
    add_eos(lm, tune_tokenizer_specials(lm->tok)->eos);
    for (size_t i = 0; i < sizeof EOS_TOKENS / sizeof EOS_TOKENS[0]; i++)
        add_eos(lm, tune_tokenizer_token_to_id(lm->tok, EOS_TOKENS[i]));
    *out = lm;
    return TUNE_OK;
}

/* An lm with no parts yet, for the weights at path. */
static tune_lm *new_lm(const tune_backend *be, const char *path, tune_error *err)
{
    tune_lm *lm = calloc(1, sizeof *lm);
    char *p = strdup(path);
    if (!lm || !p) {
        free(lm);
        free(p);
        tune_fail_run(err, NULL, "out of memory");
        return NULL;
    }
    lm->be = be;
    lm->path = p;
    lm->model = &lm->own;
    return lm;
}

tune_status tune_lm_open(const tune_backend *be, const char *model_path, const char *adapter_dir, tune_lm **out,
                         tune_error *err)
{
    *out = NULL;
    tune_lm *lm = new_lm(be, model_path, err);
    if (!lm) return TUNE_ERR_RUN;
    tune_status st = tune_model_load_stored(model_path, TUNE_STORE_FILE, &lm->own, err);
    if (st == TUNE_OK && adapter_dir) st = tune_lora_open_peft(&lm->own, adapter_dir, &lm->lora, err);
    if (st != TUNE_OK) {
        tune_lm_close(lm);
        return st;
    }
    return finish_open(lm, adapter_dir, out, err);
}

tune_status tune_lm_open_sibling(tune_lm *base, const char *adapter_dir, tune_lm **out, tune_error *err)
{
    *out = NULL;
    const tune_model_config *mc = &base->model->cfg;
    unsigned char *selected = calloc((size_t)mc->num_hidden_layers * TUNE_N_LINEAR, 1);
    if (!selected) return tune_fail_run(err, adapter_dir, "out of memory");
    tune_lora_config lc;
    tune_status st = tune_lora_read_peft_config(adapter_dir, mc, &lc, selected, err);
    free(selected);
    if (st == TUNE_OK && lc.modules_to_save)
        st = tune_fail_input(err, adapter_dir, "the adapter has modules_to_save (its own embed_tokens/lm_head), "
                             "which cannot share the base's weights; merge it (tune merge) or open it alone");
    if (st != TUNE_OK) return st;
    tune_lm *lm = new_lm(base->be, base->path, err);
    if (!lm) return TUNE_ERR_RUN;
    lm->model = base->model;
    if ((st = tune_lora_open_peft(lm->model, adapter_dir, &lm->lora, err)) != TUNE_OK) {
        tune_lm_close(lm);
        return st;
    }
    return finish_open(lm, adapter_dir, out, err);
}

tune_status tune_lm_decoder_create(const tune_lm *lm, tune_decoder **out, tune_error *err)
{
    return tune_decoder_create(lm->be, lm->model, lm->lora, out, err);
}

tune_status tune_lm_bind(const tune_lm *lm, tune_decoder *d, tune_error *err)
{
    return tune_decoder_set_lora(d, lm->lora, err);
}

int tune_lm_context_length(const tune_lm *lm) { return lm->model->cfg.max_position_embeddings; }

void tune_lm_close(tune_lm *lm)
{
    if (!lm) return;
    tune_template_close(&lm->tpl);
    tune_decoder_free(lm->dec);
    tune_lora_free(lm->lora);
    tune_tokenizer_free(lm->tok);
    if (lm->model == &lm->own) tune_model_free(&lm->own);
    free(lm->path);
    free(lm);
}

const char *tune_lm_template_missing(const tune_lm *lm) { return lm->has_template ? NULL : lm->no_template; }

tune_status tune_lm_set_template(tune_lm *lm, const char *name, tune_error *err)
{
    if (!tune_template_is_file(name)) return open_template(lm, name, NULL, NULL, err);
    char *text = NULL;
    size_t len;
    tune_status st = tune_read_file(name, &text, &len, err);
    if (st == TUNE_OK) st = open_template(lm, "jinja", text, name, err);
    free(text);
    return st;
}

int tune_lm_eos_ids(const tune_lm *lm, const int32_t **ids)
{
    *ids = lm->eos;
    return lm->n_eos;
}

tune_status tune_lm_prompt(tune_lm *lm, const tune_chat_message *msgs, int n, int raw, tune_ids *ids,
                           tune_error *err)
{
    if (raw) {
        const char *text = n > 0 ? msgs[n - 1].content : "";
        return tune_tokenizer_encode(lm->tok, text, strlen(text), 1, ids, err);
    }
    if (!lm->has_template)
        return tune_fail_input(err, NULL, "%s; use --raw to feed the prompt as it is", lm->no_template);
    tune_strbuf text = {0};
    /* Rendered templates already hold BOS: no special tokens are added again. */
    tune_status st = tune_chat_render(&lm->tpl, msgs, n, 1, &text, NULL, err);
    if (st == TUNE_OK && text.oom) st = tune_fail_run(err, NULL, "out of memory");
    if (st == TUNE_OK) st = tune_tokenizer_encode(lm->tok, text.data, text.len, 0, ids, err);
    tune_strbuf_free(&text);
    return st;
}

/* Per-token state of a reply: the generated ids, their decoding streamed out. */
typedef struct {
    tune_lm *lm;
    int32_t *ids; /* (n) */
    int n;
    tune_text_stream ts;
    tune_strbuf *reply;
    tune_text_fn write;
    void *ctx;
    const atomic_int *cancel;
    int cancelled;
    tune_status st;
    tune_error *err;
} reply_state;

static void emit(reply_state *r, int final)
{
    char *text;
    size_t len;
    r->st = tune_tokenizer_decode(r->lm->tok, r->ids, (size_t)r->n, 1, &text, &len, r->err);
    if (r->st != TUNE_OK) return;
    const size_t before = r->reply->len;
    tune_text_stream_push(&r->ts, text, len, final, r->reply);
    free(text);
    if (r->reply->oom) r->st = tune_fail_run(r->err, NULL, "out of memory");
    else if (r->write && r->reply->len > before) r->write(r->ctx, r->reply->data + before, r->reply->len - before);
}

static int on_token(void *ctx, int32_t id)
{
    reply_state *r = ctx;
    r->ids[r->n++] = id;
    emit(r, 0);
    r->cancelled = r->cancel && atomic_load(r->cancel);
    return r->st != TUNE_OK || r->ts.stopped || r->cancelled;
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + t.tv_nsec * 1e-9;
}

tune_status tune_lm_generate(tune_lm *lm, const int32_t *prompt, int n_prompt, const tune_reply_opts *o,
                             tune_text_fn write, void *ctx, tune_strbuf *reply, tune_reply_stats *stats,
                             tune_error *err)
{
    return tune_lm_generate_on(lm, lm->dec, prompt, n_prompt, o, write, ctx, reply, stats, err);
}

tune_status tune_lm_generate_on(tune_lm *lm, tune_decoder *d, const int32_t *prompt, int n_prompt,
                                const tune_reply_opts *o, tune_text_fn write, void *ctx, tune_strbuf *reply,
                                tune_reply_stats *stats, tune_error *err)
{
    memset(stats, 0, sizeof *stats);
    if (o->max_new_tokens < 0) return tune_fail_input(err, NULL, "max_new_tokens must be >= 0");
    if (tune_decoder_lora(d) != lm->lora) return tune_fail_run(err, NULL, "the decoder is bound to another adapter");
    tune_sampler *sm;
    tune_status st = tune_sampler_create(&o->sampling, lm->model->cfg.vocab_size, &sm, err);
    if (st != TUNE_OK) return st;
    reply_state r = {lm, malloc(((size_t)o->max_new_tokens + 1) * sizeof(int32_t)), 0, {0}, reply, write, ctx,
                     o->cancel, 0, TUNE_OK, err};
    int32_t *out = malloc(((size_t)o->max_new_tokens + 1) * sizeof *out);
    if (!r.ids || !out) st = tune_fail_run(err, NULL, "out of memory");
    tune_text_stream_init(&r.ts, o->stops, o->n_stops);
    const double t0 = now();
    int n_out = 0, hit_eos = 0;
    if (st == TUNE_OK) {
        const tune_generate_opts g = {o->max_new_tokens, lm->eos, lm->n_eos, o->first_step};
        st = tune_generate(d, sm, prompt, n_prompt, &g, on_token, &r, out, &n_out, &hit_eos, err);
    }
    if (st == TUNE_OK) st = r.st;
    if (st == TUNE_OK) emit(&r, 1);
    if (st == TUNE_OK) st = r.st;
    stats->prompt_tokens = n_prompt;
    stats->new_tokens = n_out;
    stats->seconds = now() - t0;
    stats->stop = hit_eos        ? TUNE_STOP_EOS
                  : r.ts.stopped ? TUNE_STOP_STRING
                  : r.cancelled  ? TUNE_STOP_CANCELLED
                                 : TUNE_STOP_LENGTH;
    free(r.ids);
    free(out);
    tune_sampler_free(sm);
    return st;
}
