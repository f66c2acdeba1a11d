/* Serving: the OpenAI HTTP API over one model and its named adapters
 * (libmicrohttpd underneath), the request and response shapes that API
 * uses, the figures /metrics and tune bench-serve report, and the
 * benchmark client (libcurl). */
#ifndef TUNE_SERVE_H
#define TUNE_SERVE_H

#include <stddef.h>

#include "tune/error.h"
#include "tune/generate.h"
#include "tune/util.h"

/* ---- Requests and responses (src/serve/api.c) ------------------------- */

typedef enum { TUNE_API_CHAT, TUNE_API_COMPLETION } tune_api_kind;

#define TUNE_API_MAX_STOPS 4 /* OpenAI's limit */

/* A validated request. Strings point into the parsed JSON (doc). */
typedef struct tune_api_request {
    tune_api_kind kind;
    void *doc;                  /* the cJSON document the strings belong to */
    const char *model;          /* NULL: the server's base model */
    tune_chat_message *msgs;    /* (n_msgs) chat messages; completion: one user message, the prompt */
    int n_msgs;
    tune_sampling sampling;
    int seeded;                 /* "seed" was given */
    int max_tokens;             /* -1: not given */
    const char *stops[TUNE_API_MAX_STOPS]; /* (n_stops) */
    int n_stops;
    int stream, include_usage;
} tune_api_request;

/* An OpenAI-style error: {"error": {"message", "type", "param", "code"}}. */
typedef struct tune_api_error {
    int status;       /* HTTP status */
    const char *type; /* "invalid_request_error", "server_error", ... */
    const char *code; /* NULL, or e.g. "model_not_found" */
    char param[64];   /* the field at fault; empty when none */
    char message[512];
} tune_api_error;

/* Fills e and returns status. param may be NULL; code is derived from status. */
int tune_api_fail(tune_api_error *e, int status, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* The error's JSON body (malloc'd; NULL when out of memory). */
char *tune_api_error_json(const tune_api_error *e);

/* Parses and checks a request body of the given kind: JSON object, field
 * types and ranges, messages (string content, or text parts), n = 1.
 * Returns 0, or the HTTP status with e filled. Free req with tune_api_request_free. */
int tune_api_parse(tune_api_kind kind, const char *body, size_t len, tune_api_request *req, tune_api_error *e);
void tune_api_request_free(tune_api_request *req);

/* "stop" or "length" (a cancelled reply says "length" too: it is cut short). */
const char *tune_api_finish_reason(tune_stop_reason r);

/* The whole response of a request that did not stream (malloc'd JSON). */
char *tune_api_response_json(tune_api_kind kind, const char *id, long created, const char *model, const char *text,
                             size_t len, const char *finish, int prompt_tokens, int completion_tokens);
/* One server-sent event for a streamed response, appended to out as
 * "data: {json}\n\n": a chunk with the assistant role (role_only), a text
 * piece (text, n), the last chunk (finish set, empty delta), or with usage
 * set the usage chunk (empty choices; prompt/completion tokens). */
typedef struct tune_api_chunk {
    const char *text;
    size_t n;
    int role_only;
    const char *finish;
    int usage, prompt_tokens, completion_tokens;
} tune_api_chunk;
void tune_api_sse_chunk(tune_strbuf *out, tune_api_kind kind, const char *id, long created, const char *model,
                        const tune_api_chunk *c);
/* "data: [DONE]\n\n". */
void tune_api_sse_done(tune_strbuf *out);
/* An error inside a stream, as an event with the error object. */
void tune_api_sse_error(tune_strbuf *out, const tune_api_error *e);

/* ---- Figures (src/serve/stats.c) -------------------------------------- */

/* A Prometheus histogram with fixed bucket bounds (seconds). */
#define TUNE_HIST_BUCKETS 12
typedef struct tune_histogram {
    long count[TUNE_HIST_BUCKETS]; /* observations ≤ bound, per bucket (not cumulative) */
    long total;
    double sum;
} tune_histogram;

extern const double TUNE_HIST_BOUNDS[TUNE_HIST_BUCKETS];
void tune_histogram_add(tune_histogram *h, double v);
/* "# HELP", "# TYPE" and the cumulative _bucket{le=...}, _sum and _count lines. */
void tune_histogram_render(const tune_histogram *h, const char *name, const char *help, tune_strbuf *out);

/* The p-th percentile (0–100) of sorted (n ≥ 1) values, interpolating
 * linearly between the closest ranks (numpy's default). */
double tune_percentile(const double *sorted, size_t n, double p);

/* An SVG histogram of values (n ≥ 1) in `bins` equal-width bins, with axes,
 * the title and the x-axis label, appended to out. */
void tune_svg_histogram(const double *values, size_t n, int bins, const char *title, const char *xlabel,
                        tune_strbuf *out);

/* ---- The server (src/serve/server.c) ---------------------------------- */

/* The chat page GET / serves (src/serve/chat.html; src/serve/page.c). */
extern const unsigned char tune_serve_chat_page[];
extern const size_t tune_serve_chat_page_len;

typedef struct tune_serve_model {
    const char *name; /* what "model" names in requests and /v1/models lists */
    tune_lm *lm;      /* the base first; the others its siblings (tune_lm_open_sibling) */
} tune_serve_model;

typedef struct tune_serve_opts {
    const char *host;     /* IPv4 address to listen on */
    int port;             /* 0: any free port (tune_server_port tells which) */
    const char *api_key;  /* NULL: none; else /v1/ requests need "Authorization: Bearer KEY" */
    int slots;            /* generations at once, each with its own cache */
    int queue;            /* requests that may wait for a slot; more get 503 */
    size_t max_body;      /* bytes; larger bodies get 413 */
    int max_tokens;       /* chat's default max_tokens (completions default to 16, as OpenAI) */
    /* Called for each finished request and for the HTTP library's own
     * messages (from several threads; may be NULL). */
    void (*log)(void *ctx, const char *line);
    void *log_ctx;
} tune_serve_opts;

typedef struct tune_server tune_server;

/* Starts listening and the slots' threads. models: (n_models), kept by the
 * caller until tune_server_stop returns. */
tune_status tune_server_start(const tune_serve_opts *o, const tune_serve_model *models, int n_models,
                              tune_server **out, tune_error *err);
int tune_server_port(const tune_server *s);
/* Stops taking connections, answers new requests on open ones with 503,
 * lets queued and running requests finish for up to wait_s seconds, ends
 * the rest, and frees the server. Returns how many were ended early. */
int tune_server_stop(tune_server *s, double wait_s);

/* ---- The benchmark client (src/serve/bench.c) ------------------------- */

typedef struct tune_bench_opts {
    const char *url;     /* base URL: http://host:port (a trailing /v1 is accepted) */
    const char *model;   /* "model" of each request; NULL: the first of GET /v1/models */
    const char *api_key; /* NULL: none */
    int concurrency;     /* clients at once */
    int max_tokens;
    double timeout_s;    /* per request */
} tune_bench_opts;

/* One request's outcome. */
typedef struct tune_bench_result {
    int ok;
    int http_status;          /* 0: no HTTP answer */
    double start;             /* seconds after the run began */
    double ttft, latency;     /* seconds: to the first text, to the end */
    int prompt_tokens, completion_tokens; /* from the usage chunk; completion: chunks when absent */
    tune_strbuf text;         /* the answer */
    char error[256];          /* why not ok */
} tune_bench_result;

/* Sends each prompt (a user message) to URL/v1/chat/completions, streaming,
 * from `concurrency` threads; results: (n), in prompt order. *model_used
 * gets the model (malloc'd). Fails only when the run cannot start (no
 * model to name, no libcurl); failed requests are results with ok = 0. */
tune_status tune_bench_run(const tune_bench_opts *o, const char *const *prompts, int n, tune_bench_result *results,
                           double *wall_s, char **model_used, tune_error *err);
void tune_bench_results_free(tune_bench_result *results, int n);

/* Incremental parser of a server-sent event stream: feed bytes; each
 * complete "data: ..." payload is passed to on_data (a nonzero return stops
 * the feeding and is returned). */
typedef struct tune_sse_parser {
    tune_strbuf line;
} tune_sse_parser;
int tune_sse_feed(tune_sse_parser *p, const char *bytes, size_t n, int (*on_data)(void *ctx, const char *data),
                  void *ctx);
void tune_sse_parser_free(tune_sse_parser *p);

#endif
