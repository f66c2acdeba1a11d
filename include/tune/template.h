/* Chat templates. Built-in ones are rendered in C: each produces exactly the
 * text Transformers' apply_chat_template renders with the model's published
 * Jinja template (tests/data/data/templates_golden.json). Any other template
 * runs in tune's Jinja engine (tune/jinja.h). Either way the renderer reports
 * where every message's content and end-of-turn marker sit in the text, so
 * the data stage can train on exactly those characters. */
#ifndef TUNE_TEMPLATE_H
#define TUNE_TEMPLATE_H

#include <stddef.h>

#include "tune/error.h"
#include "tune/jinja.h"
#include "tune/util.h"

typedef enum {
    TUNE_TEMPLATE_LLAMA3,   /* Llama 3.0 instruct */
    TUNE_TEMPLATE_LLAMA3_1, /* Llama 3.1 / 3.2 instruct: system block with a fixed date */
    TUNE_TEMPLATE_LLAMA2,   /* Llama-2-chat */
    TUNE_TEMPLATE_CHATML,   /* ChatML, no default system message */
    TUNE_TEMPLATE_SMOLLM2,  /* ChatML with SmolLM2's default system message */
    TUNE_TEMPLATE_VICUNA,   /* Vicuna v1.1 (FastChat) */
    TUNE_TEMPLATE_ZEPHYR,   /* Zephyr / TinyLlama-chat */
    TUNE_TEMPLATE_ALPACA,   /* Axolotl's alpaca chat template */
    TUNE_N_TEMPLATES,
    /* Not a built-in: a Jinja template (the model's own, or chat_template_jinja)
     * run by the engine of tune/jinja.h. */
    TUNE_TEMPLATE_JINJA = TUNE_N_TEMPLATES
} tune_template_id;

/* The date Llama 3.1/3.2 templates fall back to ("Today Date: ..."). */
#define TUNE_TEMPLATE_DEFAULT_DATE "26 Jul 2024"

/* Roles are "system" (first message only), "user" and "assistant". */
typedef struct tune_chat_message {
    const char *role;
    const char *content;
} tune_chat_message;

/* Byte offsets into the rendered text. [start, end) is the message's content
 * as rendered (after the template's trimming); [eot_start, eot_end) is the
 * end-of-turn marker the template writes right after it (EOS / <|eot_id|> /
 * <|im_end|>), empty (eot_start == eot_end) when there is none. */
typedef struct tune_message_span {
    size_t start, end;
    size_t eot_start, eot_end;
} tune_message_span;

typedef struct tune_template_options {
    const char *bos;  /* the tokenizer's BOS text, e.g. "<|begin_of_text|>" */
    const char *eos;  /* the tokenizer's EOS text, e.g. "</s>" */
    const char *date; /* Llama 3.1: "Today Date: {date}" */
} tune_template_options;

/* "llama3", "llama3_1", ... (the name a config's chat_template: uses). */
const char *tune_template_name(tune_template_id id);
/* Accepts the names above plus aliases "llama3_2", "vicuna", "smollm2".
 * Returns 0 when the name is unknown. */
int tune_template_from_name(const char *name, tune_template_id *id);
/* BOS/EOS texts of the model family the template belongs to, and the default date. */
tune_template_options tune_template_default_options(tune_template_id id);

/* Renders msgs (n > 0) into out (appended). spans (n entries) may be NULL.
 * Fails with TUNE_ERR_INPUT when the template rejects the conversation
 * (Llama-2: roles must alternate user/assistant; a system message that is not
 * first; an unknown role). */
tune_status tune_template_render(tune_template_id id, const tune_template_options *opt,
                                 const tune_chat_message *msgs, int n, int add_generation_prompt,
                                 tune_strbuf *out, tune_message_span *spans, tune_error *err);

/* A template ready to render: a built-in, or a parsed Jinja template with
 * the source it came from. Filled by tune_template_open (or, for a
 * built-in, by setting id and opt); freed by tune_template_close. */
typedef struct tune_template {
    tune_template_id id;
    tune_template_options opt; /* BOS/EOS texts (bos_token/eos_token for Jinja), the date */
    tune_jinja *jinja;         /* TUNE_TEMPLATE_JINJA: the parsed template (owned) */
    char sha256[65];           /* TUNE_TEMPLATE_JINJA: fingerprint of the source, for the data cache */
} tune_template;

/* The template a config's chat_template: value means (tune_template_resolve),
 * parsed when it is Jinja: the model's own template when tune_template_resolve
 * says so, or jinja_source (named jinja_name in errors) for "jinja". opt gets
 * the template's default BOS/EOS texts and date; callers set the tokenizer's. */
tune_status tune_template_open(const char *name, const char *model_source, const char *jinja_source,
                                    const char *jinja_name, tune_template *t, tune_error *err);
void tune_template_close(tune_template *t);
/* Whether a chat_template value names a template file ("....jinja") rather
 * than a built-in. */
int tune_template_is_file(const char *name);

/* Renders msgs (n > 0) with t into out (appended), spans as for
 * tune_template_render. For a Jinja template the spans are found the way
 * Axolotl's chat_template strategy finds turns: the conversation up to each
 * message is rendered with the message's content replaced by two different
 * placeholders, and the content sits where those renders differ; its
 * end-of-turn marker is the EOS text among what the template writes right
 * after it. {% generation %} blocks, where a template has them, give the
 * assistant messages' spans instead. A template that calls raise_exception
 * fails with TUNE_ERR_INPUT quoting its message; one that renders a message
 * differently once later messages follow (so its span cannot be found) fails
 * too, saying so. */
tune_status tune_chat_render(const tune_template *t, const tune_chat_message *msgs, int n,
                             int add_generation_prompt, tune_strbuf *out, tune_message_span *spans, tune_error *err);

/* Maps a model's Jinja template text (tokenizer_config.json's chat_template,
 * GGUF tokenizer.chat_template) to the built-in that renders it, by
 * fingerprint: SHA-256 of the source with Jinja's whitespace-control dashes
 * and all ASCII whitespace removed. Unknown templates fail with
 * TUNE_ERR_INPUT and an error quoting the template's start. */
tune_status tune_template_recognize(const char *source, tune_template_id *id, tune_error *err);
/* The template a config's chat_template: value means for a model whose own
 * template text is model_source (NULL when the model has none):
 * "tokenizer_default" (or NULL/empty) is the built-in model_source is
 * recognised as, else TUNE_TEMPLATE_JINJA (the model's own, run as Jinja);
 * "tokenizer_default_fallback_NAME" is the same when the model has a
 * template and NAME when it has none; "jinja" is TUNE_TEMPLATE_JINJA (the
 * caller's chat_template_jinja); any other value is a built-in name. A family name picks the model's own
 * member: "chatml" on a SmolLM2 model gives the SmolLM2 variant (with its
 * default system message), "llama3" on a Llama 3.1/3.2 model gives llama3_1.
 * Errors (TUNE_ERR_INPUT) name the value and list the built-ins. */
tune_status tune_template_resolve(const char *name, const char *model_source, tune_template_id *id,
                                  tune_error *err);

/* The fingerprint used above (hex has 65 bytes). */
void tune_template_fingerprint(const char *source, char hex[65]);

/* Python's str.strip() (Jinja's trim): Unicode whitespace at both ends.
 * Returns the start; *len is the stripped length. */
const char *tune_text_strip(const char *s, size_t n, size_t *len);

#endif
