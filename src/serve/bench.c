/* tune bench-serve's client: streamed chat completions against any
 * OpenAI-compatible endpoint from several threads (libcurl), timing the
 * first text and the end of each answer. */
#include "tune/serve.h"

#include <cJSON.h>
#include <curl/curl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int tune_sse_feed(tune_sse_parser *p, const char *bytes, size_t n, int (*on_data)(void *ctx, const char *data),
                  void *ctx)
{
    for (size_t i = 0; i < n; i++) {
        if (bytes[i] != '\n') {
            tune_strbuf_append(&p->line, bytes + i, 1);
            continue;
        }
        size_t len = p->line.len;
        if (len && p->line.data[len - 1] == '\r') len--;
        const char *line = p->line.data ? p->line.data : "";
        int r = 0;
        if (len >= 5 && !strncmp(line, "data:", 5)) {
            p->line.data[len] = 0;
            r = on_data(ctx, line + 5 + (len > 5 && line[5] == ' '));
        }
        p->line.len = 0; /* other fields (event:, id:, comments) and blank lines carry nothing we use */
        if (r) return r;
    }
    return p->line.oom ? -1 : 0;
}

void tune_sse_parser_free(tune_sse_parser *p) { tune_strbuf_free(&p->line); }

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + t.tv_nsec * 1e-9;
}

typedef struct {
    const tune_bench_opts *o;
    const char *chat_url, *model;
    const char *const *prompts;
    tune_bench_result *results;
    int n, next;
    double t0;
    pthread_mutex_t mu;
} run_state;

/* One request being received. */
typedef struct {
    tune_bench_result *r;
    double sent;
    tune_sse_parser sse;
    tune_strbuf raw; /* a body that is not a stream (an error) */
    int chunks, done;
} request;

static int on_event(void *ctx, const char *data)
{
    request *q = ctx;
    if (!strcmp(data, "[DONE]")) {
        q->done = 1;
        return 0;
    }
    cJSON *j = cJSON_Parse(data);
    const cJSON *err = cJSON_GetObjectItemCaseSensitive(j, "error");
    const cJSON *choice = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "choices"), 0);
    const cJSON *delta = cJSON_GetObjectItemCaseSensitive(choice, "delta");
    const cJSON *content = cJSON_GetObjectItemCaseSensitive(delta, "content");
    const cJSON *usage = cJSON_GetObjectItemCaseSensitive(j, "usage");
    if (!j) {
        snprintf(q->r->error, sizeof q->r->error, "an event is not JSON");
    } else if (err) {
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(err, "message");
        snprintf(q->r->error, sizeof q->r->error, "%s", cJSON_IsString(m) ? m->valuestring : "error event");
    } else if (cJSON_IsString(content) && content->valuestring[0]) {
        if (!q->r->ttft) q->r->ttft = now() - q->sent;
        tune_strbuf_puts(&q->r->text, content->valuestring);
        q->chunks++;
    }
    const cJSON *pt = cJSON_GetObjectItemCaseSensitive(usage, "prompt_tokens");
    const cJSON *ct = cJSON_GetObjectItemCaseSensitive(usage, "completion_tokens");
    if (cJSON_IsNumber(pt)) q->r->prompt_tokens = pt->valueint;
    if (cJSON_IsNumber(ct)) q->r->completion_tokens = ct->valueint;
    cJSON_Delete(j);
    return 0;
}

static size_t on_bytes(char *data, size_t size, size_t nmemb, void *ctx)
{
    request *q = ctx;
    const size_t n = size * nmemb;
    if (q->raw.len < 4096) tune_strbuf_append(&q->raw, data, n);
    return tune_sse_feed(&q->sse, data, n, on_event, q) ? 0 : n;
}

/* A POST or GET of url with the API key; body NULL: GET. The answer streams into q. */
static CURLcode perform(CURL *h, const char *url, const char *api_key, const char *body, request *q, double timeout_s,
                        long *status)
{
    struct curl_slist *headers = curl_slist_append(NULL, "Content-Type: application/json");
    char auth[512];
    if (api_key) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", api_key);
        headers = curl_slist_append(headers, auth);
    }
    curl_easy_reset(h);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
    if (body) curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_bytes);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, q);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)(timeout_s * 1000));
    const CURLcode rc = headers ? curl_easy_perform(h) : CURLE_OUT_OF_MEMORY;
    *status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, status);
    curl_slist_free_all(headers);
    return rc;
}

/* The error message of an OpenAI-style error body, or the body's start. */
static void body_error(const tune_strbuf *raw, long status, char *out, size_t size)
{
    cJSON *j = cJSON_ParseWithLength(raw->data ? raw->data : "", raw->len);
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "error"), "message");
    if (cJSON_IsString(m)) snprintf(out, size, "HTTP %ld: %s", status, m->valuestring);
    else snprintf(out, size, "HTTP %ld: %.120s", status, raw->data ? raw->data : "");
    cJSON_Delete(j);
}

static void run_one(run_state *s, CURL *h, int i)
{
    tune_bench_result *r = &s->results[i];
    cJSON *body = cJSON_CreateObject();
    cJSON_AddStringToObject(body, "model", s->model);
    cJSON *msg = cJSON_CreateObject();
    cJSON_AddStringToObject(msg, "role", "user");
    cJSON_AddStringToObject(msg, "content", s->prompts[i]);
    cJSON_AddItemToArray(cJSON_AddArrayToObject(body, "messages"), msg);
    cJSON_AddNumberToObject(body, "max_tokens", s->o->max_tokens);
    cJSON_AddNumberToObject(body, "temperature", 0);
    cJSON_AddTrueToObject(body, "stream");
    cJSON_AddTrueToObject(cJSON_AddObjectToObject(body, "stream_options"), "include_usage");
    char *json = cJSON_PrintUnformatted(body);
    cJSON_Delete(body);
    request q = {r, now(), {{0}}, {0}, 0, 0};
    r->start = q.sent - s->t0;
    long status = 0;
    const CURLcode rc = json ? perform(h, s->chat_url, s->o->api_key, json, &q, s->o->timeout_s, &status)
                             : CURLE_OUT_OF_MEMORY;
    r->latency = now() - q.sent;
    r->http_status = (int)status;
    if (rc != CURLE_OK && !r->error[0]) snprintf(r->error, sizeof r->error, "%s", curl_easy_strerror(rc));
    else if (status != 200) body_error(&q.raw, status, r->error, sizeof r->error);
    else if (!q.done && !r->error[0]) snprintf(r->error, sizeof r->error, "the stream ended without [DONE]");
    if (!r->completion_tokens) r->completion_tokens = q.chunks; /* no usage chunk: one token a chunk */
    r->ok = !r->error[0];
    free(json);
    tune_sse_parser_free(&q.sse);
    tune_strbuf_free(&q.raw);
}

static void *worker(void *arg)
{
    run_state *s = arg;
    CURL *h = curl_easy_init();
    for (;;) {
        pthread_mutex_lock(&s->mu);
        const int i = s->next < s->n ? s->next++ : -1;
        pthread_mutex_unlock(&s->mu);
        if (i < 0) break;
        if (h) run_one(s, h, i);
        else snprintf(s->results[i].error, sizeof s->results[i].error, "libcurl could not start");
    }
    curl_easy_cleanup(h);
    return NULL;
}

/* The first model GET /v1/models lists. */
static tune_status first_model(const tune_bench_opts *o, const char *models_url, char **out, tune_error *err)
{
    CURL *h = curl_easy_init();
    if (!h) return tune_fail_run(err, NULL, "libcurl could not start");
    tune_bench_result r = {0};
    request q = {&r, now(), {{0}}, {0}, 0, 0};
    long status;
    const CURLcode rc = perform(h, models_url, o->api_key, NULL, &q, o->timeout_s, &status);
    curl_easy_cleanup(h);
    cJSON *j = rc == CURLE_OK && status == 200 ? cJSON_ParseWithLength(q.raw.data, q.raw.len) : NULL;
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "data"), 0), "id");
    tune_status st = TUNE_OK;
    if (rc != CURLE_OK) st = tune_fail_run(err, models_url, "%s", curl_easy_strerror(rc));
    else if (status != 200) st = tune_fail_run(err, models_url, "HTTP %ld", status);
    else if (!cJSON_IsString(id)) st = tune_fail_run(err, models_url, "no model listed; name one with --model");
    else if (!(*out = strdup(id->valuestring))) st = tune_fail_run(err, NULL, "out of memory");
    cJSON_Delete(j);
    tune_sse_parser_free(&q.sse);
    tune_strbuf_free(&q.raw);
    return st;
}

tune_status tune_bench_run(const tune_bench_opts *o, const char *const *prompts, int n, tune_bench_result *results,
                           double *wall_s, char **model_used, tune_error *err)
{
    *model_used = NULL;
    if (curl_global_init(CURL_GLOBAL_DEFAULT)) return tune_fail_run(err, NULL, "libcurl could not start");
    size_t base = strlen(o->url);
    while (base && o->url[base - 1] == '/') base--;
    if (base >= 3 && !strncmp(o->url + base - 3, "/v1", 3)) base -= 3;
    char chat_url[2048], models_url[2048];
    snprintf(chat_url, sizeof chat_url, "%.*s/v1/chat/completions", (int)base, o->url);
    snprintf(models_url, sizeof models_url, "%.*s/v1/models", (int)base, o->url);
    tune_status st = o->model ? ((*model_used = strdup(o->model)) ? TUNE_OK : tune_fail_run(err, NULL, "out of memory"))
                              : first_model(o, models_url, model_used, err);
    const int threads = o->concurrency < n ? o->concurrency : n;
    pthread_t *tid = calloc((size_t)threads, sizeof *tid);
    if (st == TUNE_OK && !tid) st = tune_fail_run(err, NULL, "out of memory");
    if (st == TUNE_OK) {
        memset(results, 0, (size_t)n * sizeof *results);
        run_state s = {o, chat_url, *model_used, prompts, results, n, 0, now(), PTHREAD_MUTEX_INITIALIZER};
        int started = 0;
        for (; started < threads; started++)
            if (pthread_create(&tid[started], NULL, worker, &s)) break;
        if (!started) st = tune_fail_run(err, NULL, "cannot start a client thread");
        for (int t = 0; t < started; t++) pthread_join(tid[t], NULL);
        *wall_s = now() - s.t0;
        pthread_mutex_destroy(&s.mu);
    }
    free(tid);
    curl_global_cleanup();
    return st;
}

void tune_bench_results_free(tune_bench_result *results, int n)
{
    for (int i = 0; i < n; i++) tune_strbuf_free(&results[i].text);
}
