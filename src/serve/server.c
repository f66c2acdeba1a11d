/* tune serve's HTTP side: libmicrohttpd with a thread per connection
 * parses HTTP; requests are checked, their prompts tokenised, and queued;
 * a fixed number of slot threads, each with a decoder (its own key/value
 * cache) over the shared weights, take them in order and generate. A
 * streamed answer's events are written into its job and sent by the
 * connection's thread as they come; a dropped connection cancels its job. */
#include "tune/serve.h"

#include <arpa/inet.h>
#include <cJSON.h>
#include <errno.h>
#include <microhttpd.h>
#include <omp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct job job;
struct job {
    tune_server *srv;
    int refs; /* the connection and the queue/slot; under the server's lock */
    tune_api_request req;
    const tune_serve_model *model;
    tune_ids prompt;
    int max_tokens;
    char id[48];
    long created;
    atomic_int cancel;
    /* written by the slot under the server's lock */
    tune_strbuf events; /* stream: server-sent events; [sent, len) are still to go out */
    size_t sent;
    tune_strbuf reply;  /* the answer's text (the slot's own until done) */
    int done;
    tune_status st;
    tune_error err;
    tune_reply_stats stats;
    double queued_at, first_text_at;
    job *next;
};

typedef enum { EP_CHAT, EP_COMPLETIONS, EP_MODELS, EP_HEALTH, EP_METRICS, EP_PAGE, EP_OTHER, N_EP } endpoint;
static const char *const EP_NAMES[N_EP] = {"chat_completions", "completions", "models", "health", "metrics", "page",
                                           "other"};
/* HTTP statuses counted per endpoint in /metrics. */
static const int STATUSES[] = {200, 400, 401, 404, 405, 413, 500, 503};
#define N_STATUS (int)(sizeof STATUSES / sizeof STATUSES[0])

typedef struct {
    tune_server *srv;
    tune_decoder *dec;
    job *job; /* the one it is generating; under the server's lock */
    pthread_t thread;
    int started;
} slot;

struct tune_server {
    tune_serve_opts o;
    const tune_serve_model *models; /* (n_models) */
    int n_models;
    struct MHD_Daemon *mhd;
    int port, omp_threads; /* OpenMP threads per slot */
    pthread_mutex_t mu;
    pthread_cond_t work;     /* a job was queued, or the server stops */
    pthread_cond_t progress; /* a job wrote events or finished */
    job *head, *tail;        /* the queue */
    int queued, running, draining, stopping;
    slot *slots;             /* (o.slots) */
    pthread_mutex_t *encode_mu; /* (n_models): a tokenizer encodes one text at a time */
    pthread_mutex_t bind_mu;    /* tune_lm_bind: one adapter attached at a time */
    unsigned long next_id;
    /* /metrics, under mu */
    long requests[N_EP][N_STATUS];
    long prompt_tokens, completion_tokens;
    tune_histogram latency, ttft, queue_wait;
};

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + t.tv_nsec * 1e-9;
}

static void log_line(tune_server *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void log_line(tune_server *s, const char *fmt, ...)
{
    if (!s->o.log) return;
    char line[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    s->o.log(s->o.log_ctx, line);
}

static void mhd_logger(void *cls, const char *fmt, va_list ap)
{
    tune_server *s = cls;
    if (!s->o.log) return;
    char line[768];
    vsnprintf(line, sizeof line, fmt, ap);
    line[strcspn(line, "\n")] = 0;
    log_line(s, "http: %s", line);
}

/* ---- jobs ---------------------------------------------------------------- */

static void job_unref(tune_server *s, job *j)
{
    pthread_mutex_lock(&s->mu);
    const int last = --j->refs == 0;
    pthread_mutex_unlock(&s->mu);
    if (!last) return;
    tune_api_request_free(&j->req);
    tune_ids_free(&j->prompt);
    tune_strbuf_free(&j->events);
    tune_strbuf_free(&j->reply);
    free(j);
}

static void count_request(tune_server *s, endpoint ep, int status)
{
    for (int i = 0; i < N_STATUS; i++)
        if (STATUSES[i] == status) s->requests[ep][i]++;
}

typedef struct {
    tune_server *srv;
    job *job;
} text_ctx;

/* Text the generation made final: the time to the first, and a chunk when streaming. */
static void stream_text(void *ctx, const char *text, size_t n)
{
    text_ctx *t = ctx;
    tune_server *s = t->srv;
    job *j = t->job;
    pthread_mutex_lock(&s->mu);
    if (!j->first_text_at) j->first_text_at = now();
    if (j->req.stream) {
        const tune_api_chunk c = {text, n, 0, NULL, 0, 0, 0};
        tune_api_sse_chunk(&j->events, j->req.kind, j->id, j->created, j->model->name, &c);
        pthread_cond_broadcast(&s->progress);
    }
    pthread_mutex_unlock(&s->mu);
}

/* The events that close a stream: the finish chunk, usage when asked, [DONE]; or an error. */
static void close_stream(job *j)
{
    if (j->st != TUNE_OK) {
        tune_api_error e;
        tune_api_fail(&e, 500, NULL, "%s", j->err.message);
        tune_api_sse_error(&j->events, &e);
    } else {
        const tune_api_chunk fin = {NULL, 0, 0, tune_api_finish_reason(j->stats.stop), 0, 0, 0};
        tune_api_sse_chunk(&j->events, j->req.kind, j->id, j->created, j->model->name, &fin);
        if (j->req.include_usage) {
            const tune_api_chunk u = {NULL, 0, 0, NULL, 1, j->stats.prompt_tokens, j->stats.new_tokens};
            tune_api_sse_chunk(&j->events, j->req.kind, j->id, j->created, j->model->name, &u);
        }
    }
    tune_api_sse_done(&j->events);
}

static void run_job(slot *sl, job *j)
{
    tune_server *s = sl->srv;
    tune_lm *lm = j->model->lm;
    if (atomic_load(&j->cancel)) {
        j->stats.stop = TUNE_STOP_CANCELLED;
        return;
    }
    pthread_mutex_lock(&s->bind_mu);
    j->st = tune_lm_bind(lm, sl->dec, &j->err);
    pthread_mutex_unlock(&s->bind_mu);
    /* Every answer starts from an empty cache: it then does not depend on
     * what the slot answered before, and equals tune generate's bit for bit. */
    tune_decoder_rewind(sl->dec, 0);
    if (j->st != TUNE_OK) return;
    if (j->req.stream && j->req.kind == TUNE_API_CHAT) {
        pthread_mutex_lock(&s->mu);
        const tune_api_chunk role = {NULL, 0, 1, NULL, 0, 0, 0};
        tune_api_sse_chunk(&j->events, j->req.kind, j->id, j->created, j->model->name, &role);
        pthread_cond_broadcast(&s->progress);
        pthread_mutex_unlock(&s->mu);
    }
    const tune_reply_opts ro = {j->req.sampling, j->max_tokens, j->req.stops, j->req.n_stops, 0, &j->cancel};
    text_ctx t = {s, j};
    j->st = tune_lm_generate_on(lm, sl->dec, j->prompt.ids, (int)j->prompt.n, &ro, stream_text, &t, &j->reply,
                                &j->stats, &j->err);
}

static void *slot_main(void *arg)
{
    slot *sl = arg;
    tune_server *s = sl->srv;
    omp_set_num_threads(s->omp_threads);
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (!s->head && !s->stopping) pthread_cond_wait(&s->work, &s->mu);
        if (!s->head) break;
        job *j = s->head;
        s->head = j->next;
        if (!s->head) s->tail = NULL;
        s->queued--;
        s->running++;
        sl->job = j;
        tune_histogram_add(&s->queue_wait, now() - j->queued_at);
        pthread_mutex_unlock(&s->mu);

        run_job(sl, j);

        pthread_mutex_lock(&s->mu);
        if (j->req.stream) close_stream(j);
        if (j->st == TUNE_OK && j->stats.stop != TUNE_STOP_CANCELLED) {
            s->prompt_tokens += j->stats.prompt_tokens;
            s->completion_tokens += j->stats.new_tokens;
            tune_histogram_add(&s->latency, now() - j->queued_at);
            if (j->first_text_at) tune_histogram_add(&s->ttft, j->first_text_at - j->queued_at);
        }
        if (j->st == TUNE_OK)
            log_line(s, "%s %s: %d prompt + %d new tokens in %.2f s, %s%s", j->req.kind == TUNE_API_CHAT ? "chat" : "completion",
                     j->model->name, j->stats.prompt_tokens, j->stats.new_tokens, j->stats.seconds,
                     tune_api_finish_reason(j->stats.stop), j->stats.stop == TUNE_STOP_CANCELLED ? " (cancelled)" : "");
        else log_line(s, "%s: failed: %s", j->model->name, j->err.message);
        j->done = 1;
        sl->job = NULL;
        s->running--;
        pthread_cond_broadcast(&s->progress);
        pthread_mutex_unlock(&s->mu);
        job_unref(s, j);
        pthread_mutex_lock(&s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* ---- HTTP ---------------------------------------------------------------- */

/* What a connection keeps between the calls MHD makes for one request. */
typedef struct {
    tune_strbuf body;
    int too_big;
} request_ctx;

static enum MHD_Result send_body(struct MHD_Connection *c, int status, const char *type, char *body, size_t len)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    const enum MHD_Result ok = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    return ok;
}

static enum MHD_Result send_json(struct MHD_Connection *c, int status, char *json)
{
    if (!json) return MHD_NO; /* out of memory: drop the connection */
    return send_body(c, status, "application/json", json, strlen(json));
}

static enum MHD_Result send_error(tune_server *s, struct MHD_Connection *c, endpoint ep, const tune_api_error *e)
{
    pthread_mutex_lock(&s->mu);
    count_request(s, ep, e->status);
    pthread_mutex_unlock(&s->mu);
    log_line(s, "%s %d %s", EP_NAMES[ep], e->status, e->message);
    return send_json(c, e->status, tune_api_error_json(e));
}

static const tune_serve_model *find_model(const tune_server *s, const char *name)
{
    if (!name) return &s->models[0];
    for (int i = 0; i < s->n_models; i++)
        if (!strcmp(s->models[i].name, name)) return &s->models[i];
    return NULL;
}

static int authorized(const tune_server *s, struct MHD_Connection *c)
{
    if (!s->o.api_key) return 1;
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!h || strncmp(h, "Bearer ", 7)) return 0;
    const char *key = h + 7, *want = s->o.api_key;
    const size_t n = strlen(key), m = strlen(want);
    unsigned diff = n != m; /* compared in full: the time taken does not tell how much matched */
    for (size_t i = 0; i < n; i++) diff |= (unsigned)(key[i] ^ want[i % (m ? m : 1)]);
    return !diff;
}

static enum MHD_Result list_models(tune_server *s, struct MHD_Connection *c)
{
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "object", "list");
    cJSON *data = cJSON_AddArrayToObject(root, "data");
    for (int i = 0; i < s->n_models; i++) {
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "id", s->models[i].name);
        cJSON_AddStringToObject(m, "object", "model");
        cJSON_AddNumberToObject(m, "created", 0);
        cJSON_AddStringToObject(m, "owned_by", "tune");
        /* vLLM names an adapter's base as its parent. */
        if (i) cJSON_AddStringToObject(m, "parent", s->models[0].name);
        else cJSON_AddNullToObject(m, "parent");
        cJSON_AddItemToArray(data, m);
    }
    char *json = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    pthread_mutex_lock(&s->mu);
    count_request(s, EP_MODELS, 200);
    pthread_mutex_unlock(&s->mu);
    return send_json(c, 200, json);
}

static enum MHD_Result send_metrics(tune_server *s, struct MHD_Connection *c)
{
    tune_strbuf out = {0};
    pthread_mutex_lock(&s->mu);
    count_request(s, EP_METRICS, 200);
    tune_strbuf_puts(&out, "# HELP tune_requests_total HTTP requests by endpoint and status.\n"
                           "# TYPE tune_requests_total counter\n");
    for (int e = 0; e < N_EP; e++)
        for (int i = 0; i < N_STATUS; i++)
            if (s->requests[e][i])
                tune_strbuf_printf(&out, "tune_requests_total{endpoint=\"%s\",status=\"%d\"} %ld\n", EP_NAMES[e],
                                   STATUSES[i], s->requests[e][i]);
    tune_strbuf_printf(&out,
                       "# HELP tune_prompt_tokens_total Prompt tokens of finished requests.\n"
                       "# TYPE tune_prompt_tokens_total counter\ntune_prompt_tokens_total %ld\n"
                       "# HELP tune_generation_tokens_total Tokens generated for finished requests.\n"
                       "# TYPE tune_generation_tokens_total counter\ntune_generation_tokens_total %ld\n"
                       "# HELP tune_requests_waiting Requests queued for a slot.\n"
                       "# TYPE tune_requests_waiting gauge\ntune_requests_waiting %d\n"
                       "# HELP tune_requests_running Requests generating.\n"
                       "# TYPE tune_requests_running gauge\ntune_requests_running %d\n"
                       "# HELP tune_slots Decoding slots.\n# TYPE tune_slots gauge\ntune_slots %d\n",
                       s->prompt_tokens, s->completion_tokens, s->queued, s->running, s->o.slots);
    tune_histogram_render(&s->latency, "tune_request_duration_seconds",
                          "Seconds from a request's arrival (queued) to its last token.", &out);
    tune_histogram_render(&s->ttft, "tune_time_to_first_token_seconds",
                          "Seconds from a request's arrival to its first text.", &out);
    tune_histogram_render(&s->queue_wait, "tune_queue_wait_seconds", "Seconds a request waited for a slot.", &out);
    pthread_mutex_unlock(&s->mu);
    if (out.oom) {
        tune_strbuf_free(&out);
        return MHD_NO;
    }
    return send_body(c, 200, "text/plain; version=0.0.4", out.data, out.len);
}

/* The stream's bytes as the slot writes them; blocks until there are some or the job is done. */
static ssize_t read_events(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    job *j = cls;
    tune_server *s = j->srv;
    pthread_mutex_lock(&s->mu);
    while (j->sent == j->events.len && !j->done) pthread_cond_wait(&s->progress, &s->mu);
    ssize_t n = MHD_CONTENT_READER_END_OF_STREAM;
    if (j->events.oom) {
        n = MHD_CONTENT_READER_END_WITH_ERROR;
    } else if (j->sent < j->events.len) {
        n = (ssize_t)(j->events.len - j->sent < max ? j->events.len - j->sent : max);
        memcpy(buf, j->events.data + j->sent, (size_t)n);
        j->sent += (size_t)n;
    }
    pthread_mutex_unlock(&s->mu);
    return n;
}

/* The response is gone: sent whole, or the client left (then the job stops at its next token). */
static void stream_gone(void *cls)
{
    job *j = cls;
    atomic_store(&j->cancel, 1);
    job_unref(j->srv, j);
}

/* The prompt's ids and the reply's length limit; an HTTP status when they do not fit. */
static int prepare(tune_server *s, job *j, tune_api_error *e)
{
    const tune_api_request *r = &j->req;
    tune_lm *lm = j->model->lm;
    const int chat = r->kind == TUNE_API_CHAT;
    if (chat && tune_lm_template_missing(lm))
        return tune_api_fail(e, 400, "messages", "model '%s' cannot take chat messages: %s; use /v1/completions",
                             j->model->name, tune_lm_template_missing(lm));
    tune_error err;
    const int mi = (int)(j->model - s->models);
    pthread_mutex_lock(&s->encode_mu[mi]);
    const tune_status st = tune_lm_prompt(lm, r->msgs, r->n_msgs, !chat, &j->prompt, &err);
    pthread_mutex_unlock(&s->encode_mu[mi]);
    if (st != TUNE_OK) return tune_api_fail(e, st == TUNE_ERR_INPUT ? 400 : 500, chat ? "messages" : "prompt", "%s",
                                            err.message);
    if (j->prompt.n == 0) return tune_api_fail(e, 400, "prompt", "the prompt is empty");
    const int ctx = tune_lm_context_length(lm), n_prompt = (int)j->prompt.n, room = ctx - n_prompt;
    if (r->max_tokens > room || room < 1)
        return tune_api_fail(e, 400, "max_tokens",
                             "this model's maximum context length is %d tokens; the request asks for %d "
                             "(%d in the prompt, %d to generate)", ctx, n_prompt + (r->max_tokens > 0 ? r->max_tokens : 1),
                             n_prompt, r->max_tokens > 0 ? r->max_tokens : 1);
    const int dflt = chat ? s->o.max_tokens : 16; /* OpenAI's completions default to 16 */
    j->max_tokens = r->max_tokens > 0 ? r->max_tokens : dflt < room ? dflt : room;
    if (!r->seeded && r->sampling.temperature > 0) /* an unseeded sampled reply differs from call to call */
        j->req.sampling.seed = (uint64_t)(now() * 1e9) ^ (uint64_t)(uintptr_t)j;
    return 0;
}

static int enqueue(tune_server *s, job *j, tune_api_error *e)
{
    pthread_mutex_lock(&s->mu);
    int st = 0;
    if (s->draining) st = tune_api_fail(e, 503, NULL, "the server is shutting down");
    else if (s->queued >= s->o.queue) st = tune_api_fail(e, 503, NULL, "all %d slots are busy and %d requests wait; "
                                                          "try again later", s->o.slots, s->queued);
    if (!st) {
        j->refs++;
        j->queued_at = now();
        if (s->tail) s->tail->next = j;
        else s->head = j;
        s->tail = j;
        s->queued++;
        pthread_cond_signal(&s->work);
    }
    pthread_mutex_unlock(&s->mu);
    return st;
}

static enum MHD_Result complete(tune_server *s, struct MHD_Connection *c, endpoint ep, tune_api_kind kind,
                                const request_ctx *rc)
{
    tune_api_error e;
    job *j = calloc(1, sizeof *j);
    if (!j) return MHD_NO;
    j->srv = s;
    j->refs = 1;
    j->created = (long)time(NULL);
    pthread_mutex_lock(&s->mu);
    snprintf(j->id, sizeof j->id, "%s-%lx%04lx", kind == TUNE_API_CHAT ? "chatcmpl" : "cmpl", (unsigned long)j->created,
             ++s->next_id);
    pthread_mutex_unlock(&s->mu);
    int status = tune_api_parse(kind, rc->body.data ? rc->body.data : "", rc->body.len, &j->req, &e);
    if (!status && !(j->model = find_model(s, j->req.model)))
        status = tune_api_fail(&e, 404, "model", "the model '%s' does not exist (GET /v1/models lists them)",
                               j->req.model);
    if (!status) status = prepare(s, j, &e);
    if (!status) status = enqueue(s, j, &e);
    if (status) {
        job_unref(s, j);
        return send_error(s, c, ep, &e);
    }
    if (j->req.stream) {
        struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, read_events, j, stream_gone);
        if (!r) {
            atomic_store(&j->cancel, 1);
            job_unref(s, j);
            return MHD_NO;
        }
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
        MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
        const enum MHD_Result ok = MHD_queue_response(c, MHD_HTTP_OK, r);
        MHD_destroy_response(r);
        pthread_mutex_lock(&s->mu);
        count_request(s, ep, 200);
        pthread_mutex_unlock(&s->mu);
        return ok;
    }
    pthread_mutex_lock(&s->mu);
    while (!j->done) pthread_cond_wait(&s->progress, &s->mu);
    pthread_mutex_unlock(&s->mu);
    enum MHD_Result ok;
    if (j->st != TUNE_OK) {
        tune_api_fail(&e, 500, NULL, "%s", j->err.message);
        ok = send_error(s, c, ep, &e);
    } else {
        char *json = tune_api_response_json(kind, j->id, j->created, j->model->name, j->reply.data, j->reply.len,
                                            tune_api_finish_reason(j->stats.stop), j->stats.prompt_tokens,
                                            j->stats.new_tokens);
        pthread_mutex_lock(&s->mu);
        count_request(s, ep, 200);
        pthread_mutex_unlock(&s->mu);
        ok = send_json(c, 200, json);
    }
    job_unref(s, j);
    return ok;
}

static endpoint route(const char *url, int *post)
{
    *post = 1;
    if (!strcmp(url, "/v1/chat/completions")) return EP_CHAT;
    if (!strcmp(url, "/v1/completions")) return EP_COMPLETIONS;
    *post = 0;
    if (!strcmp(url, "/v1/models")) return EP_MODELS;
    if (!strcmp(url, "/health")) return EP_HEALTH;
    if (!strcmp(url, "/metrics")) return EP_METRICS;
    if (!strcmp(url, "/")) return EP_PAGE;
    return EP_OTHER;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                              const char *version, const char *upload, size_t *upload_size, void **con_cls)
{
    (void)version;
    tune_server *s = cls;
    int post;
    const endpoint ep = route(url, &post);
    tune_api_error e;
    request_ctx *rc = *con_cls;
    if (!rc) { /* the headers are in; the body (if any) comes in the next calls */
        if (!(rc = calloc(1, sizeof *rc))) return MHD_NO;
        *con_cls = rc;
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl && strtoull(cl, NULL, 10) > s->o.max_body) { /* refused before a byte of it is read */
            tune_api_fail(&e, 413, NULL, "the body of %s bytes is over the limit of %zu", cl, s->o.max_body);
            return send_error(s, c, ep, &e);
        }
        return MHD_YES;
    }
    if (*upload_size) {
        if (rc->body.len + *upload_size > s->o.max_body) rc->too_big = 1;
        if (!rc->too_big) tune_strbuf_append(&rc->body, upload, *upload_size);
        *upload_size = 0;
        return rc->body.oom ? MHD_NO : MHD_YES;
    }
    const int is_post = !strcmp(method, MHD_HTTP_METHOD_POST), is_get = !strcmp(method, MHD_HTTP_METHOD_GET);
    if (ep == EP_OTHER) {
        tune_api_fail(&e, 404, NULL, "no route %s %s", method, url);
        e.code = NULL;
        return send_error(s, c, ep, &e);
    }
    if (post ? !is_post : !is_get) {
        tune_api_fail(&e, 405, NULL, "%s takes %s, not %s", url, post ? "POST" : "GET", method);
        return send_error(s, c, ep, &e);
    }
    if ((ep == EP_CHAT || ep == EP_COMPLETIONS || ep == EP_MODELS) && !authorized(s, c)) {
        tune_api_fail(&e, 401, NULL, "a valid API key is required (Authorization: Bearer KEY)");
        return send_error(s, c, ep, &e);
    }
    if (rc->too_big) {
        tune_api_fail(&e, 413, NULL, "the body is over the limit of %zu bytes", s->o.max_body);
        return send_error(s, c, ep, &e);
    }
    switch (ep) {
    case EP_CHAT: return complete(s, c, ep, TUNE_API_CHAT, rc);
    case EP_COMPLETIONS: return complete(s, c, ep, TUNE_API_COMPLETION, rc);
    case EP_MODELS: return list_models(s, c);
    case EP_METRICS: return send_metrics(s, c);
    case EP_PAGE: {
        char *page = malloc(tune_serve_chat_page_len);
        if (!page) return MHD_NO;
        memcpy(page, tune_serve_chat_page, tune_serve_chat_page_len);
        pthread_mutex_lock(&s->mu);
        count_request(s, ep, 200);
        pthread_mutex_unlock(&s->mu);
        return send_body(c, 200, "text/html; charset=utf-8", page, tune_serve_chat_page_len);
    }
    default: { /* EP_HEALTH */
        pthread_mutex_lock(&s->mu);
        const int draining = s->draining;
        count_request(s, ep, draining ? 503 : 200);
        pthread_mutex_unlock(&s->mu);
        return send_json(c, draining ? 503 : 200, strdup(draining ? "{\"status\":\"shutting down\"}" : "{\"status\":\"ok\"}"));
    }
    }
}

static void request_done(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)c;
    (void)toe;
    request_ctx *rc = *con_cls;
    if (!rc) return;
    tune_strbuf_free(&rc->body);
    free(rc);
    *con_cls = NULL;
}

/* ---- start and stop ------------------------------------------------------ */

static void server_free(tune_server *s)
{
    if (s->mhd) MHD_stop_daemon(s->mhd);
    for (int i = 0; s->slots && i < s->o.slots; i++) tune_decoder_free(s->slots[i].dec);
    free(s->slots);
    if (s->encode_mu)
        for (int i = 0; i < s->n_models; i++) pthread_mutex_destroy(&s->encode_mu[i]);
    free(s->encode_mu);
    pthread_mutex_destroy(&s->bind_mu);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->work);
    pthread_cond_destroy(&s->progress);
    free(s);
}

static void stop_slots(tune_server *s)
{
    pthread_mutex_lock(&s->mu);
    s->stopping = 1;
    pthread_cond_broadcast(&s->work);
    pthread_mutex_unlock(&s->mu);
    for (int i = 0; i < s->o.slots; i++)
        if (s->slots[i].started) pthread_join(s->slots[i].thread, NULL);
}

tune_status tune_server_start(const tune_serve_opts *o, const tune_serve_model *models, int n_models,
                              tune_server **out, tune_error *err)
{
    *out = NULL;
    if (n_models < 1 || o->slots < 1 || o->queue < 0 || o->max_tokens < 1)
        return tune_fail_input(err, NULL, "serve: needs a model, at least one slot and max_tokens of at least 1");
    struct sockaddr_in addr = {0};
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)o->port);
    if (inet_pton(AF_INET, o->host, &addr.sin_addr) != 1)
        return tune_fail_input(err, NULL, "serve: '%s' is not an IPv4 address", o->host);
    tune_server *s = calloc(1, sizeof *s);
    if (!s) return tune_fail_run(err, NULL, "out of memory");
    s->o = *o;
    s->models = models;
    s->n_models = n_models;
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->bind_mu, NULL);
    pthread_cond_init(&s->work, NULL);
    pthread_cond_init(&s->progress, NULL);
    const int threads = omp_get_max_threads();
    s->omp_threads = threads / o->slots > 1 ? threads / o->slots : 1;
    s->slots = calloc((size_t)o->slots, sizeof *s->slots);
    s->encode_mu = calloc((size_t)n_models, sizeof *s->encode_mu);
    tune_status st = s->slots && s->encode_mu ? TUNE_OK : tune_fail_run(err, NULL, "out of memory");
    if (s->encode_mu)
        for (int i = 0; i < n_models; i++) pthread_mutex_init(&s->encode_mu[i], NULL);
    for (int i = 0; st == TUNE_OK && i < o->slots; i++) {
        s->slots[i].srv = s;
        st = tune_lm_decoder_create(models[0].lm, &s->slots[i].dec, err);
    }
    for (int i = 0; st == TUNE_OK && i < o->slots; i++) {
        if (pthread_create(&s->slots[i].thread, NULL, slot_main, &s->slots[i]))
            st = tune_fail_run(err, NULL, "serve: cannot start a slot thread: %s", strerror(errno));
        else s->slots[i].started = 1;
    }
    if (st == TUNE_OK) {
        /* ITC lets tune_server_stop close the listening socket while connections finish. */
        s->mhd = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_ITC |
                                      MHD_USE_ERROR_LOG,
                                  (uint16_t)o->port, NULL, NULL, handle, s, MHD_OPTION_EXTERNAL_LOGGER, mhd_logger,
                                  s, MHD_OPTION_SOCK_ADDR, &addr, MHD_OPTION_NOTIFY_COMPLETED, request_done, s,
                                  MHD_OPTION_CONNECTION_LIMIT, (unsigned)(o->slots + o->queue + 16),
                                  MHD_OPTION_CONNECTION_TIMEOUT, 300u, MHD_OPTION_END);
        if (!s->mhd) st = tune_fail_run(err, NULL, "serve: cannot listen on %s:%d (in use, or not an address of this "
                                        "machine)", o->host, o->port);
    }
    if (st == TUNE_OK) {
        const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_BIND_PORT);
        s->port = info ? info->port : o->port;
        *out = s;
        return TUNE_OK;
    }
    stop_slots(s);
    server_free(s);
    return st;
}

int tune_server_port(const tune_server *s) { return s->port; }

int tune_server_stop(tune_server *s, double wait_s)
{
    const MHD_socket listener = MHD_quiesce_daemon(s->mhd);
    if (listener != MHD_INVALID_SOCKET) close(listener);
    pthread_mutex_lock(&s->mu);
    s->draining = 1;
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += (time_t)wait_s;
    while ((s->queued || s->running) && pthread_cond_timedwait(&s->progress, &s->mu, &deadline) != ETIMEDOUT) {}
    int ended = 0;
    for (job *j = s->head; j; j = j->next, ended++) atomic_store(&j->cancel, 1);
    for (int i = 0; i < s->o.slots; i++)
        if (s->slots[i].job) atomic_store(&s->slots[i].job->cancel, 1), ended++;
    pthread_mutex_unlock(&s->mu);
    stop_slots(s); /* the queue is worked off first: cancelled jobs finish at once */
    server_free(s);
    return ended;
}
