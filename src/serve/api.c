/* The OpenAI HTTP API's request and response shapes: parsing and checking
 * a request body, building responses, stream chunks and errors. */
#include "tune/serve.h"

#include <cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Room for a huge request that still fits an int; the context bounds it later. */
#define MAX_TOKENS_LIMIT (1 << 24)

int tune_api_fail(tune_api_error *e, int status, const char *param, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    e->status = status;
    snprintf(e->param, sizeof e->param, "%s", param ? param : "");
    e->type = status == 401   ? "authentication_error"
              : status == 404 ? "invalid_request_error"
              : status < 500  ? "invalid_request_error"
                              : "server_error";
    e->code = status == 401   ? "invalid_api_key"
              : status == 404 ? "model_not_found"
              : status == 413 ? "request_too_large"
              : status == 503 ? "server_busy"
                              : NULL;
    return status;
}

char *tune_api_error_json(const tune_api_error *e)
{
    cJSON *root = cJSON_CreateObject(), *o = cJSON_AddObjectToObject(root, "error");
    cJSON_AddStringToObject(o, "message", e->message);
    cJSON_AddStringToObject(o, "type", e->type);
    if (e->param[0]) cJSON_AddStringToObject(o, "param", e->param);
    else cJSON_AddNullToObject(o, "param");
    if (e->code) cJSON_AddStringToObject(o, "code", e->code);
    else cJSON_AddNullToObject(o, "code");
    char *s = cJSON_PrintUnformatted(root); /* NULL when any step above ran out of memory */
    cJSON_Delete(root);
    return s;
}

void tune_api_request_free(tune_api_request *req)
{
    cJSON_Delete(req->doc);
    free(req->msgs);
    memset(req, 0, sizeof *req);
}

/* A number field in [lo, hi] (absent or null: left as it is). */
static int get_number(const cJSON *root, const char *name, double lo, double hi, int integer, double *out,
                      tune_api_error *e)
{
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(root, name);
    if (!f || cJSON_IsNull(f)) return 0;
    if (!cJSON_IsNumber(f) || !isfinite(f->valuedouble) || (integer && f->valuedouble != floor(f->valuedouble)))
        return tune_api_fail(e, 400, name, "'%s' must be %s", name, integer ? "an integer" : "a number");
    if (f->valuedouble < lo || f->valuedouble > hi)
        return tune_api_fail(e, 400, name, "'%s' is %g; it must be in [%g, %g]", name, f->valuedouble, lo, hi);
    *out = f->valuedouble;
    return 0;
}

static int get_bool(const cJSON *root, const char *name, int *out, tune_api_error *e)
{
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(root, name);
    if (!f || cJSON_IsNull(f)) return 0;
    if (!cJSON_IsBool(f)) return tune_api_fail(e, 400, name, "'%s' must be true or false", name);
    *out = cJSON_IsTrue(f);
    return 0;
}

/* A message's content: a string, null (an assistant turn), or text parts joined. */
static int message_content(cJSON *msg, int i, const char **out, tune_api_error *e)
{
    cJSON *c = cJSON_GetObjectItemCaseSensitive(msg, "content");
    if (cJSON_IsString(c)) {
        *out = c->valuestring;
        return 0;
    }
    if (!c || cJSON_IsNull(c)) {
        *out = "";
        return 0;
    }
    if (!cJSON_IsArray(c))
        return tune_api_fail(e, 400, "messages", "messages[%d].content must be a string or an array of text parts", i);
    tune_strbuf text = {0};
    const cJSON *part;
    cJSON_ArrayForEach(part, c) {
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(part, "type");
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(part, "text");
        if (!cJSON_IsString(type) || strcmp(type->valuestring, "text") || !cJSON_IsString(t)) {
            tune_strbuf_free(&text);
            return tune_api_fail(e, 400, "messages", "messages[%d].content: only text parts are supported", i);
        }
        tune_strbuf_puts(&text, t->valuestring);
    }
    /* Keep the joined text in the document, so it lives as long as the request. */
    cJSON *joined = cJSON_CreateString(text.data ? text.data : "");
    const int oom = text.oom || !joined;
    tune_strbuf_free(&text);
    if (oom || !cJSON_ReplaceItemInObjectCaseSensitive(msg, "content", joined)) {
        cJSON_Delete(joined);
        return tune_api_fail(e, 500, NULL, "out of memory");
    }
    *out = joined->valuestring;
    return 0;
}

static int parse_messages(cJSON *root, tune_api_request *req, tune_api_error *e)
{
    cJSON *msgs = cJSON_GetObjectItemCaseSensitive(root, "messages");
    if (!msgs) return tune_api_fail(e, 400, "messages", "'messages' is required");
    if (!cJSON_IsArray(msgs) || cJSON_GetArraySize(msgs) == 0)
        return tune_api_fail(e, 400, "messages", "'messages' must be a non-empty array");
    const int n = cJSON_GetArraySize(msgs);
    if (!(req->msgs = calloc((size_t)n, sizeof *req->msgs))) return tune_api_fail(e, 500, NULL, "out of memory");
    cJSON *m;
    cJSON_ArrayForEach(m, msgs) {
        const int i = req->n_msgs;
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        if (!cJSON_IsObject(m) || !cJSON_IsString(role))
            return tune_api_fail(e, 400, "messages", "messages[%d] must be an object with a string 'role'", i);
        const char *r = role->valuestring;
        /* OpenAI's newer name for the system role. */
        if (!strcmp(r, "developer")) r = "system";
        if (strcmp(r, "system") && strcmp(r, "user") && strcmp(r, "assistant"))
            return tune_api_fail(e, 400, "messages", "messages[%d].role '%s' is not system, user or assistant", i,
                                 role->valuestring);
        req->msgs[i].role = r;
        const int st = message_content(m, i, &req->msgs[i].content, e);
        if (st) return st;
        req->n_msgs++;
    }
    return 0;
}

/* "stop": a string or an array of up to four strings; empty ones are dropped. */
static int parse_stop(const cJSON *root, tune_api_request *req, tune_api_error *e)
{
    const cJSON *stop = cJSON_GetObjectItemCaseSensitive(root, "stop");
    if (!stop || cJSON_IsNull(stop)) return 0;
    if (cJSON_IsString(stop)) {
        if (stop->valuestring[0]) req->stops[req->n_stops++] = stop->valuestring;
        return 0;
    }
    if (!cJSON_IsArray(stop)) return tune_api_fail(e, 400, "stop", "'stop' must be a string or an array of strings");
    if (cJSON_GetArraySize(stop) > TUNE_API_MAX_STOPS)
        return tune_api_fail(e, 400, "stop", "'stop' has more than %d strings", TUNE_API_MAX_STOPS);
    const cJSON *s;
    cJSON_ArrayForEach(s, stop) {
        if (!cJSON_IsString(s)) return tune_api_fail(e, 400, "stop", "'stop' must hold strings only");
        if (s->valuestring[0]) req->stops[req->n_stops++] = s->valuestring;
    }
    return 0;
}

/* Options tune does not implement: refused rather than silently ignored. */
static int refuse_unsupported(const cJSON *root, tune_api_error *e)
{
    double v = 1;
    int st = get_number(root, "n", 1, 1, 1, &v, e);
    if (st) return tune_api_fail(e, 400, "n", "only n = 1 is supported");
    static const char *const zero[] = {"presence_penalty", "frequency_penalty"};
    for (size_t i = 0; i < sizeof zero / sizeof zero[0]; i++) {
        v = 0;
        if ((st = get_number(root, zero[i], -2, 2, 0, &v, e))) return st;
        if (v != 0) return tune_api_fail(e, 400, zero[i], "'%s' is not supported (use repetition_penalty)", zero[i]);
    }
    static const char *const off[] = {"logprobs", "echo"};
    for (size_t i = 0; i < sizeof off / sizeof off[0]; i++) {
        const cJSON *f = cJSON_GetObjectItemCaseSensitive(root, off[i]);
        if (f && !cJSON_IsNull(f) && !cJSON_IsFalse(f)) return tune_api_fail(e, 400, off[i], "'%s' is not supported", off[i]);
    }
    return 0;
}

static int parse_fields(cJSON *root, tune_api_request *req, tune_api_error *e)
{
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (model && !cJSON_IsNull(model)) {
        if (!cJSON_IsString(model)) return tune_api_fail(e, 400, "model", "'model' must be a string");
        req->model = model->valuestring;
    }
    int st;
    if (req->kind == TUNE_API_CHAT) {
        if ((st = parse_messages(root, req, e))) return st;
    } else {
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(root, "prompt");
        if (!p) return tune_api_fail(e, 400, "prompt", "'prompt' is required");
        if (!cJSON_IsString(p)) return tune_api_fail(e, 400, "prompt", "'prompt' must be a string");
        if (!(req->msgs = calloc(1, sizeof *req->msgs))) return tune_api_fail(e, 500, NULL, "out of memory");
        req->msgs[0] = (tune_chat_message){"user", p->valuestring};
        req->n_msgs = 1;
    }
    /* OpenAI's defaults: temperature 1, top_p 1; top_k and repetition_penalty as vLLM takes them. */
    double temperature = 1, top_p = 1, top_k = 0, penalty = 1, seed = 0, max_tokens = -1;
    if ((st = get_number(root, "temperature", 0, 100, 0, &temperature, e)) ||
        (st = get_number(root, "top_p", 0, 1, 0, &top_p, e)) || (st = get_number(root, "top_k", -1, 1 << 30, 1, &top_k, e)) ||
        (st = get_number(root, "repetition_penalty", 0, 100, 0, &penalty, e)) ||
        (st = get_number(root, "seed", -9.2e18, 9.2e18, 1, &seed, e)) ||
        (st = get_number(root, "max_tokens", 1, MAX_TOKENS_LIMIT, 1, &max_tokens, e)) ||
        (st = get_number(root, "max_completion_tokens", 1, MAX_TOKENS_LIMIT, 1, &max_tokens, e)))
        return st;
    if (top_p <= 0) return tune_api_fail(e, 400, "top_p", "'top_p' must be greater than 0");
    if (penalty <= 0) return tune_api_fail(e, 400, "repetition_penalty", "'repetition_penalty' must be greater than 0");
    req->sampling = (tune_sampling){(float)temperature, top_k < 0 ? 0 : (int)top_k, (float)top_p, (float)penalty,
                                    (uint64_t)(int64_t)seed};
    req->seeded = cJSON_GetObjectItemCaseSensitive(root, "seed") != NULL;
    req->max_tokens = (int)max_tokens;
    if ((st = get_bool(root, "stream", &req->stream, e)) || (st = parse_stop(root, req, e)) ||
        (st = refuse_unsupported(root, e)))
        return st;
    const cJSON *so = cJSON_GetObjectItemCaseSensitive(root, "stream_options");
    if (so && !cJSON_IsNull(so)) {
        if (!cJSON_IsObject(so)) return tune_api_fail(e, 400, "stream_options", "'stream_options' must be an object");
        if ((st = get_bool(so, "include_usage", &req->include_usage, e))) return st;
    }
    return 0;
}

int tune_api_parse(tune_api_kind kind, const char *body, size_t len, tune_api_request *req, tune_api_error *e)
{
    memset(req, 0, sizeof *req);
    req->kind = kind;
    cJSON *root = cJSON_ParseWithLength(body, len);
    req->doc = root;
    int st = 0;
    if (!root) st = tune_api_fail(e, 400, NULL, "the body is not valid JSON");
    else if (!cJSON_IsObject(root)) st = tune_api_fail(e, 400, NULL, "the body must be a JSON object");
    else st = parse_fields(root, req, e);
    if (st) tune_api_request_free(req);
    return st;
}

const char *tune_api_finish_reason(tune_stop_reason r)
{
    return r == TUNE_STOP_EOS || r == TUNE_STOP_STRING ? "stop" : "length";
}

/* The fields every response and chunk starts with. */
static cJSON *response_head(tune_api_kind kind, const char *id, long created, const char *model, int chunk)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", id);
    cJSON_AddStringToObject(o, "object", kind == TUNE_API_COMPLETION ? "text_completion"
                                         : chunk                     ? "chat.completion.chunk"
                                                                     : "chat.completion");
    cJSON_AddNumberToObject(o, "created", (double)created);
    cJSON_AddStringToObject(o, "model", model);
    return o;
}

static void add_usage(cJSON *o, int prompt_tokens, int completion_tokens)
{
    cJSON *u = cJSON_AddObjectToObject(o, "usage");
    cJSON_AddNumberToObject(u, "prompt_tokens", prompt_tokens);
    cJSON_AddNumberToObject(u, "completion_tokens", completion_tokens);
    cJSON_AddNumberToObject(u, "total_tokens", prompt_tokens + completion_tokens);
}

/* A string of n bytes (which may hold NULs only in theory: text is UTF-8 from the tokenizer). */
static cJSON *string_n(const char *s, size_t n)
{
    char *copy = strndup(s ? s : "", n);
    cJSON *j = copy ? cJSON_CreateString(copy) : NULL;
    free(copy);
    return j;
}

/* A choice: the text (as message, delta or text by kind) and the finish reason (NULL: null). */
static cJSON *choice(tune_api_kind kind, int chunk, const char *role, const char *text, size_t n, const char *finish)
{
    cJSON *c = cJSON_CreateObject();
    cJSON_AddNumberToObject(c, "index", 0);
    if (kind == TUNE_API_COMPLETION) {
        cJSON_AddItemToObject(c, "text", string_n(text, n));
        cJSON_AddNullToObject(c, "logprobs");
    } else {
        cJSON *m = cJSON_AddObjectToObject(c, chunk ? "delta" : "message");
        if (role) cJSON_AddStringToObject(m, "role", role);
        if (text) cJSON_AddItemToObject(m, "content", string_n(text, n));
    }
    if (finish) cJSON_AddStringToObject(c, "finish_reason", finish);
    else cJSON_AddNullToObject(c, "finish_reason");
    return c;
}

char *tune_api_response_json(tune_api_kind kind, const char *id, long created, const char *model, const char *text,
                             size_t len, const char *finish, int prompt_tokens, int completion_tokens)
{
    cJSON *o = response_head(kind, id, created, model, 0);
    cJSON_AddItemToArray(cJSON_AddArrayToObject(o, "choices"), choice(kind, 0, "assistant", text ? text : "", len, finish));
    add_usage(o, prompt_tokens, completion_tokens);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

static void sse_json(tune_strbuf *out, cJSON *o)
{
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!s) {
        out->oom = 1;
        return;
    }
    tune_strbuf_printf(out, "data: %s\n\n", s);
    free(s);
}

void tune_api_sse_chunk(tune_strbuf *out, tune_api_kind kind, const char *id, long created, const char *model,
                        const tune_api_chunk *c)
{
    cJSON *o = response_head(kind, id, created, model, 1);
    cJSON *choices = cJSON_AddArrayToObject(o, "choices");
    if (c->usage) {
        add_usage(o, c->prompt_tokens, c->completion_tokens);
    } else if (c->role_only) {
        cJSON_AddItemToArray(choices, choice(kind, 1, "assistant", "", 0, NULL));
    } else if (c->finish) {
        cJSON_AddItemToArray(choices, choice(kind, 1, NULL, kind == TUNE_API_COMPLETION ? "" : NULL, 0, c->finish));
    } else {
        cJSON_AddItemToArray(choices, choice(kind, 1, NULL, c->text, c->n, NULL));
    }
    sse_json(out, o);
}

void tune_api_sse_done(tune_strbuf *out) { tune_strbuf_puts(out, "data: [DONE]\n\n"); }

void tune_api_sse_error(tune_strbuf *out, const tune_api_error *e)
{
    char *s = tune_api_error_json(e);
    if (!s) {
        out->oom = 1;
        return;
    }
    tune_strbuf_printf(out, "data: %s\n\n", s);
    free(s);
}
