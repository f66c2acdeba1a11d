#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tune/cli.h"
#include "tune/serve.h"

#define MAX_ADAPTERS 32

static void usage(FILE *out)
{
    fprintf(out,
            "usage: tune serve MODEL [--adapter NAME=DIR ...] [--host 127.0.0.1] [--port 8000] [options]\n\n"
            "Serves MODEL and its LoRA adapters over the OpenAI HTTP API: GET /v1/models, POST\n"
            "/v1/chat/completions (the model's chat template) and /v1/completions (the prompt as it is),\n"
            "streamed as server-sent events or not; GET /health, GET /metrics (Prometheus text) and a\n"
            "chat page at GET /. A request's \"model\" picks the base (by --name) or an adapter (by NAME),\n"
            "applied to the one copy of the weights. SIGTERM or SIGINT lets running requests finish\n"
            "(up to --shutdown-wait seconds) and exits 0.\n\n"
            "  MODEL                  Hugging Face folder or .gguf file\n"
            "  --adapter NAME=DIR     a PEFT LoRA adapter served as model NAME (repeatable)\n"
            "  --name NAME            the base model's name in requests (default: MODEL's file name)\n"
            "  --host ADDR            IPv4 address to listen on (default 127.0.0.1: this machine only;\n"
            "                         0.0.0.0 listens on every interface)\n"
            "  --port N               TCP port (default 8000; 0 picks a free one, printed at start)\n"
            "  --api-key KEY          require \"Authorization: Bearer KEY\" on /v1/ (also $TUNE_API_KEY)\n"
            "  --slots N              requests generated at once, each with its own cache (default 2)\n"
            "  --queue N              requests that may wait for a slot; more get 503 (default 64)\n"
            "  --max-body BYTES       largest request body; larger ones get 413 (default 1048576)\n"
            "  --max_tokens N         chat's max_tokens when a request gives none (default 256; completions\n"
            "                         default to 16, as OpenAI's); never more than the context has room for\n"
            "  --shutdown-wait S      seconds running requests get to finish on SIGTERM (default 30)\n"
            "  --chat_template NAME   a built-in template or FILE.jinja instead of the model's own\n"
            "  --backend B            auto, cpu or cuda\n");
}

static void log_stderr(void *ctx, const char *line)
{
    (void)ctx;
    fprintf(stderr, "tune serve: %s\n", line);
}

static int parse_int(const char *verb, const char *opt, const char *v, long lo, long hi, long *out)
{
    char *end;
    const long n = strtol(v, &end, 10);
    if (end == v || *end || n < lo || n > hi)
        return tune_cli_usage_error(verb, "%s: '%s' is not a number in [%ld, %ld]", opt, v, lo, hi);
    *out = n;
    return 0;
}

/* The file name of a path, without trailing slashes. */
static void base_name(const char *path, char *out, size_t size)
{
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/') n--;
    size_t b = n;
    while (b > 0 && path[b - 1] != '/') b--;
    snprintf(out, size, "%.*s", (int)(n - b), path + b);
}

int tune_cli_serve(int argc, char **argv)
{
    if (tune_cli_wants_help(argc, argv)) {
        usage(stdout);
        return 0;
    }
    const char *model = NULL, *name = NULL, *adapters[MAX_ADAPTERS];
    int n_adapters = 0;
    tune_serve_opts o = {"127.0.0.1", 8000, getenv("TUNE_API_KEY"), 2, 64, 1 << 20, 256, log_stderr, NULL};
    double wait_s = 30;
    tune_cli_gen_args g;
    tune_cli_gen_defaults(&g, 0);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--backend") || !strcmp(a, "--chat_template") || !strcmp(a, "--chat-template")) {
            if (tune_cli_gen_option("serve", argc, argv, &i, &g) < 0) return 2;
            continue;
        }
        static const char *const valued[] = {"--adapter", "--name", "--host", "--api-key", "--port", "--slots",
                                             "--queue", "--max-body", "--max_tokens", "--max-tokens",
                                             "--shutdown-wait"};
        int takes_value = 0;
        for (size_t k = 0; k < sizeof valued / sizeof valued[0]; k++) takes_value |= !strcmp(a, valued[k]);
        if (!takes_value && a[0] == '-' && a[1])
            return tune_cli_usage_error("serve", "unknown option '%s' (try 'tune serve --help')", a);
        if (takes_value && i + 1 >= argc) return tune_cli_usage_error("serve", "%s needs a value", a);
        long n;
        if (!strcmp(a, "--adapter")) {
            if (n_adapters == MAX_ADAPTERS) return tune_cli_usage_error("serve", "at most %d adapters", MAX_ADAPTERS);
            const char *v = argv[++i], *eq = strchr(v, '=');
            if (!eq || eq == v || !eq[1]) return tune_cli_usage_error("serve", "--adapter takes NAME=DIR, not '%s'", v);
            adapters[n_adapters++] = v;
        } else if (!strcmp(a, "--name")) {
            name = argv[++i];
        } else if (!strcmp(a, "--host")) {
            o.host = argv[++i];
        } else if (!strcmp(a, "--api-key")) {
            o.api_key = argv[++i];
        } else if (!strcmp(a, "--port")) {
            if (parse_int("serve", a, argv[++i], 0, 65535, &n)) return 2;
            o.port = (int)n;
        } else if (!strcmp(a, "--slots")) {
            if (parse_int("serve", a, argv[++i], 1, 256, &n)) return 2;
            o.slots = (int)n;
        } else if (!strcmp(a, "--queue")) {
            if (parse_int("serve", a, argv[++i], 0, 100000, &n)) return 2;
            o.queue = (int)n;
        } else if (!strcmp(a, "--max-body")) {
            if (parse_int("serve", a, argv[++i], 1024, 1L << 30, &n)) return 2;
            o.max_body = (size_t)n;
        } else if (!strcmp(a, "--max_tokens") || !strcmp(a, "--max-tokens")) {
            if (parse_int("serve", a, argv[++i], 1, 1 << 24, &n)) return 2;
            o.max_tokens = (int)n;
        } else if (!strcmp(a, "--shutdown-wait")) {
            if (parse_int("serve", a, argv[++i], 0, 86400, &n)) return 2;
            wait_s = (double)n;
        } else if (!model) {
            model = a;
        } else {
            return tune_cli_usage_error("serve", "unexpected argument '%s'", a);
        }
    }
    if (!model) return tune_cli_usage_error("serve", "expected MODEL (try 'tune serve --help')");
    if (o.api_key && !*o.api_key) o.api_key = NULL;

    char base[256], names[MAX_ADAPTERS][256];
    base_name(model, base, sizeof base);
    tune_serve_model models[MAX_ADAPTERS + 1] = {{name ? name : base, NULL}};
    for (int k = 0; k < n_adapters; k++) {
        const char *eq = strchr(adapters[k], '=');
        snprintf(names[k], sizeof names[k], "%.*s", (int)(eq - adapters[k]), adapters[k]);
        models[k + 1].name = names[k];
        for (int m = 0; m <= k; m++)
            if (!strcmp(models[m].name, names[k]))
                return tune_cli_usage_error("serve", "two models are named '%s' (see --name)", names[k]);
    }
    tune_error err;
    tune_status st = tune_cli_open_lm(model, NULL, &g, &models[0].lm);
    const int n_models = 1 + n_adapters;
    for (int k = 0; k < n_adapters && st == TUNE_OK; k++) {
        st = tune_lm_open_sibling(models[0].lm, strchr(adapters[k], '=') + 1, &models[k + 1].lm, &err);
        if (st == TUNE_OK && g.chat_template) st = tune_lm_set_template(models[k + 1].lm, g.chat_template, &err);
        if (st != TUNE_OK) tune_error_print(stderr, &err);
    }
    /* Signals wait for sigwait below; every thread started from here on inherits the mask. */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
    signal(SIGPIPE, SIG_IGN);
    tune_server *srv = NULL;
    if (st == TUNE_OK && (st = tune_server_start(&o, models, n_models, &srv, &err)) != TUNE_OK)
        tune_error_print(stderr, &err);
    if (st == TUNE_OK) {
        fprintf(stderr, "tune serve: listening on http://%s:%d (%d slot%s; models:", o.host, tune_server_port(srv),
                o.slots, o.slots == 1 ? "" : "s");
        for (int m = 0; m < n_models; m++) fprintf(stderr, " %s%s", models[m].name, m ? " (adapter)" : "");
        fprintf(stderr, ")%s\n", o.api_key ? "; API key required" : "");
        int sig = 0;
        sigwait(&stop, &sig);
        fprintf(stderr, "tune serve: %s: finishing the requests in flight (up to %.0f s)\n",
                sig == SIGTERM ? "SIGTERM" : "SIGINT", wait_s);
        const int ended = tune_server_stop(srv, wait_s);
        fprintf(stderr, "tune serve: stopped%s", ended ? "" : "\n");
        if (ended) fprintf(stderr, "; %d request%s ended early\n", ended, ended == 1 ? "" : "s");
    }
    for (int m = n_models - 1; m >= 0; m--) tune_lm_close(models[m].lm); /* siblings before their base */
    return st;
}
