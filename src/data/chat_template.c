/* Chat templates as the rest of tune uses them: a built-in renderer, or a
 * Jinja template run by the engine, behind one render call that also finds
 * where each message sits in the text. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tune/template.h"

/* The two contents a message is rendered with to find where its content
 * goes: they differ in their first and their last byte, so the renders
 * differ exactly where the content is. */
static const char PLACEHOLDER_A[] = "A", PLACEHOLDER_B[] = "B";

static const char MODEL_TEMPLATE[] = "the model's chat template";

tune_status tune_template_open(const char *name, const char *model_source, const char *jinja_source,
                                    const char *jinja_name, tune_template *t, tune_error *err)
{
    memset(t, 0, sizeof *t);
    tune_status st = tune_template_resolve(name, model_source, &t->id, err);
    if (st) return st;
    t->opt = tune_template_default_options(t->id);
    if (t->id != TUNE_TEMPLATE_JINJA) return TUNE_OK;
    int own = !name || strcmp(name, "jinja");
    const char *source = own ? model_source : jinja_source;
    if (!source)
        return tune_fail_input(err, NULL, "chat_template: jinja needs the template in chat_template_jinja: (its "
                                          "text, or the path of a .jinja file)");
    tune_sha256_hex(source, strlen(source), t->sha256);
    return tune_jinja_parse(source, strlen(source), own ? MODEL_TEMPLATE : (jinja_name ? jinja_name : "chat_template_jinja"),
                            &t->jinja, err);
}

int tune_template_is_file(const char *name)
{
    const size_t n = name ? strlen(name) : 0;
    return n > 6 && !strcmp(name + n - 6, ".jinja");
}

void tune_template_close(tune_template *t)
{
    tune_jinja_free(t->jinja);
    t->jinja = NULL;
}

/* strftime_now's time: the date option ("26 Jul 2024") at midnight UTC, so
 * the rendered data never depends on the day it is made. */
static tune_status template_time(const tune_template_options *o, long long *now, tune_error *err)
{
    struct tm tm = {0};
    const char *end = o->date ? strptime(o->date, "%d %b %Y", &tm) : NULL;
    if (!end || *end)
        return tune_fail_input(err, NULL, "chat_template_date '%s' is not a date like \"26 Jul 2024\"",
                               o->date ? o->date : "");
    *now = (long long)timegm(&tm);
    return TUNE_OK;
}

/* The template's variables, as apply_chat_template passes them. content
 * replaces the last message's content when not NULL. */
static cJSON *context(const tune_template *t, const tune_chat_message *msgs, int n, int add_generation_prompt,
                      const char *content)
{
    cJSON *ctx = cJSON_CreateObject(), *list = cJSON_AddArrayToObject(ctx, "messages");
    int ok = list != NULL;
    for (int i = 0; ok && i < n; i++) {
        cJSON *m = cJSON_CreateObject();
        ok = m && cJSON_AddItemToArray(list, m) && cJSON_AddStringToObject(m, "role", msgs[i].role) &&
             cJSON_AddStringToObject(m, "content", content && i == n - 1 ? content : msgs[i].content);
    }
    ok = ok && cJSON_AddBoolToObject(ctx, "add_generation_prompt", add_generation_prompt) &&
         cJSON_AddStringToObject(ctx, "bos_token", t->opt.bos ? t->opt.bos : "") &&
         cJSON_AddStringToObject(ctx, "eos_token", t->opt.eos ? t->opt.eos : "") && cJSON_AddNullToObject(ctx, "tools") &&
         cJSON_AddNullToObject(ctx, "documents");
    if (!ok) {
        cJSON_Delete(ctx);
        return NULL;
    }
    return ctx;
}

/* One render of msgs[0, n) (the last content replaced when content is set). */
static tune_status render_once(const tune_template *t, long long now, const tune_chat_message *msgs, int n,
                               int add_generation_prompt, const char *content, tune_strbuf *out,
                               tune_jinja_span **gen, int *n_gen, tune_error *err)
{
    cJSON *ctx = context(t, msgs, n, add_generation_prompt, content);
    if (!ctx) return tune_fail_run(err, NULL, "out of memory");
    const tune_jinja_render_options ro = {.context = ctx, .now = now};
    int raised = 0;
    tune_status st = tune_jinja_render(t->jinja, &ro, out, gen, n_gen, &raised, err);
    cJSON_Delete(ctx);
    if (st == TUNE_OK && out->oom) st = tune_fail_run(err, NULL, "out of memory");
    if (st && raised && err) {
        /* Quote the template's own words, then say where it said them. */
        char msg[sizeof err->message];
        snprintf(msg, sizeof msg, "%s", err->message);
        tune_strbuf sb = {0};
        tune_strbuf_printf(&sb, "the chat template refused the conversation: \"%s\" (raise_exception at %s:%d:%d)",
                           msg, err->file, err->line, err->col);
        if (sb.data) snprintf(err->message, sizeof err->message, "%s", sb.data);
        tune_strbuf_free(&sb);
        err->file[0] = 0;
        err->line = err->col = 0;
    }
    return st;
}

/* memcmp of two prefixes, from buffers that are NULL when empty (a template may render nothing). */
static int same_bytes(const char *a, const char *b, size_t n)
{
    return !n || !memcmp(a, b, n);
}

/* Where message i's content sits in full (the whole conversation's text),
 * from renders of msgs[0, i]: with two placeholders, and with the real
 * content (Axolotl's find_turn, on text). */
static tune_status find_content(const tune_template *t, long long now, const tune_chat_message *msgs, int i,
                                const tune_strbuf *full, tune_message_span *sp, tune_error *err)
{
    tune_strbuf a = {0}, b = {0}, r = {0};
    tune_status st = render_once(t, now, msgs, i + 1, 0, PLACEHOLDER_A, &a, NULL, NULL, err);
    if (!st) st = render_once(t, now, msgs, i + 1, 0, PLACEHOLDER_B, &b, NULL, NULL, err);
    if (!st) st = render_once(t, now, msgs, i + 1, 0, NULL, &r, NULL, NULL, err);
    if (st) goto done;
    size_t p = 0, s = 0, shorter = a.len < b.len ? a.len : b.len;
    while (p < shorter && a.data[p] == b.data[p]) p++;
    while (s < shorter - p && a.data[a.len - 1 - s] == b.data[b.len - 1 - s]) s++;
    /* The real render must be the placeholder render with the content in
     * place, and the whole conversation must begin with it. */
    int same = r.len >= p + s && same_bytes(r.data, a.data, p) &&
               (!s || !memcmp(r.data + r.len - s, a.data + a.len - s, s));
    sp->start = p;
    sp->end = same ? r.len - s : p;
    if (!same || full->len < sp->end || !same_bytes(full->data, r.data, sp->end))
        st = tune_fail_input(err, NULL,
                             "the chat template renders message %d (%s) differently once later messages follow, so "
                             "tune cannot tell which text is that message's to train on",
                             i, msgs[i].role);
done:
    tune_strbuf_free(&a);
    tune_strbuf_free(&b);
    tune_strbuf_free(&r);
    return st;
}

/* Message i's end-of-turn marker: the first EOS text the template writes
 * after its content, before the next message's content starts. */
static void find_end_of_turn(const tune_template *t, const tune_strbuf *full, tune_message_span *spans, int n, int i)
{
    tune_message_span *sp = &spans[i];
    sp->eot_start = sp->eot_end = sp->end;
    const char *eos = t->opt.eos;
    size_t eos_len = eos ? strlen(eos) : 0, limit = i + 1 < n ? spans[i + 1].start : full->len;
    for (size_t k = sp->end; eos_len && k + eos_len <= limit; k++)
        if (!memcmp(full->data + k, eos, eos_len)) {
            sp->eot_start = k;
            sp->eot_end = k + eos_len;
            return;
        }
}

/* Spans from {% generation %} blocks: the k-th block is the k-th assistant
 * message's; EOS text at its end is its end-of-turn marker. */
static tune_status generation_spans(const tune_template *t, const tune_chat_message *msgs, int n,
                                    const tune_strbuf *full, const tune_jinja_span *gen, int n_gen,
                                    tune_message_span *spans, char *is_gen, tune_error *err)
{
    int k = 0, assistants = 0;
    const char *eos = t->opt.eos;
    size_t eos_len = eos ? strlen(eos) : 0;
    for (int i = 0; i < n; i++) {
        if (strcmp(msgs[i].role, "assistant")) continue;
        if (assistants++ >= n_gen) continue;
        tune_message_span *sp = &spans[i];
        sp->start = gen[k].start;
        sp->end = sp->eot_start = sp->eot_end = gen[k].end;
        if (eos_len && sp->end - sp->start >= eos_len && !memcmp(full->data + sp->end - eos_len, eos, eos_len))
            sp->end = sp->eot_start = sp->end - eos_len;
        is_gen[i] = 1;
        k++;
    }
    if (assistants != n_gen)
        return tune_fail_input(err, NULL,
                               "the chat template has %d {%% generation %%} blocks for %d assistant messages", n_gen,
                               assistants);
    return TUNE_OK;
}

tune_status tune_chat_render(const tune_template *t, const tune_chat_message *msgs, int n,
                             int add_generation_prompt, tune_strbuf *out, tune_message_span *spans, tune_error *err)
{
    if (t->id != TUNE_TEMPLATE_JINJA)
        return tune_template_render(t->id, &t->opt, msgs, n, add_generation_prompt, out, spans, err);
    if (n <= 0) return tune_fail_input(err, NULL, "empty conversation");
    long long now = 0;
    tune_status st = template_time(&t->opt, &now, err);
    if (st) return st;
    /* Render into a buffer of its own: spans are offsets into it. */
    tune_strbuf full = {0};
    tune_jinja_span *gen = NULL;
    int n_gen = 0;
    char *is_gen = NULL;
    st = render_once(t, now, msgs, n, add_generation_prompt, NULL, &full, spans ? &gen : NULL, &n_gen, err);
    if (!st && spans) {
        memset(spans, 0, (size_t)n * sizeof *spans);
        is_gen = calloc((size_t)n, 1);
        if (!is_gen) st = tune_fail_run(err, NULL, "out of memory");
        if (!st && n_gen > 0) st = generation_spans(t, msgs, n, &full, gen, n_gen, spans, is_gen, err);
        for (int i = 0; !st && i < n; i++)
            if (!is_gen[i]) st = find_content(t, now, msgs, i, &full, &spans[i], err);
        for (int i = 0; !st && i < n; i++)
            if (!is_gen[i]) find_end_of_turn(t, &full, spans, n, i);
    }
    if (!st) {
        size_t base = out->len;
        tune_strbuf_append(out, full.data ? full.data : "", full.len);
        if (out->oom) st = tune_fail_run(err, NULL, "out of memory");
        for (int i = 0; !st && spans && i < n; i++) {
            spans[i].start += base;
            spans[i].end += base;
            spans[i].eot_start += base;
            spans[i].eot_end += base;
        }
    }
    free(is_gen);
    free(gen);
    tune_strbuf_free(&full);
    return st;
}
