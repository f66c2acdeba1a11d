#include <cJSON.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tune/cli.h"
#include "tune/serve.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: tune bench-serve URL --prompts FILE [--model M] [--concurrency N] [--limit N]\n"
            "                        [--max_tokens N] [--cost-per-hour USD] [--compare-price USD]\n"
            "                        [--api-key KEY] [--out PREFIX]\n\n"
            "Sends each prompt as a user message to URL's /v1/chat/completions (tune serve, vLLM,\n"
            "llama.cpp's server, a hosted API), streaming, greedy, from N clients at once, and\n"
            "reports time to first token, latency p50/p95/p99, output tokens/s, requests/s and\n"
            "errors. With reference answers in the prompts (an Alpaca eval file works as it is) it\n"
            "scores the answers: chrF, BLEU (sacreBLEU's) and Excel task accuracy. Writes PREFIX.csv\n"
            "(one row per request), PREFIX.json (the summary) and PREFIX.svg (the latency histogram).\n\n"
            "  URL                    the server, e.g. http://127.0.0.1:8000 (a trailing /v1 is fine)\n"
            "  --prompts FILE         as tune compare reads them: a prompt per line, or JSONL with\n"
            "                         \"prompt\" or \"instruction\" (+ \"input\"), and \"reference\"/\"output\"\n"
            "  --model M              the request's model (default: the first of GET /v1/models)\n"
            "  --concurrency N        clients at once (default 4)\n"
            "  --limit N              only the first N prompts\n"
            "  --max_tokens N         max_tokens of each request (default 128)\n"
            "  --cost-per-hour USD    what the server costs an hour: gives the cost per 1,000 output tokens\n"
            "  --compare-price USD    a hosted API's price per 1,000 output tokens, shown beside it\n"
            "  --api-key KEY          sent as a bearer token (also $OPENAI_API_KEY)\n"
            "  --timeout S            seconds a request may take (default 600)\n"
            "  --out PREFIX           output files' prefix (default bench_serve)\n");
}

static int parse_num(const char *opt, const char *v, double lo, double hi, double *out)
{
    char *end;
    const double x = strtod(v, &end);
    if (end == v || *end || !isfinite(x) || x < lo || x > hi)
        return tune_cli_usage_error("bench-serve", "%s: '%s' is not a number in [%g, %g]", opt, v, lo, hi);
    *out = x;
    return 0;
}

static int cmp_double(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Percentiles of the ok results' field (offset into tune_bench_result); NAN when none. */
typedef struct {
    double p50, p95, p99, mean;
} spread;

static spread spread_of(const tune_bench_result *r, int n, size_t offset, double *sorted)
{
    int k = 0;
    double sum = 0;
    for (int i = 0; i < n; i++)
        if (r[i].ok) sum += sorted[k++] = *(const double *)((const char *)&r[i] + offset);
    if (!k) return (spread){NAN, NAN, NAN, NAN};
    qsort(sorted, (size_t)k, sizeof *sorted, cmp_double);
    return (spread){tune_percentile(sorted, (size_t)k, 50), tune_percentile(sorted, (size_t)k, 95),
                    tune_percentile(sorted, (size_t)k, 99), sum / k};
}

/* "  \"key\": \"value\",\n" with the value escaped as JSON. */
static void json_string(tune_strbuf *j, const char *key, const char *value)
{
    cJSON *s = cJSON_CreateString(value);
    char *text = s ? cJSON_PrintUnformatted(s) : NULL;
    cJSON_Delete(s);
    if (!text) j->oom = 1;
    else tune_strbuf_printf(j, "  \"%s\": %s,\n", key, text);
    free(text);
}

static void json_spread(tune_strbuf *j, const char *name, spread s)
{
    if (isnan(s.p50)) tune_strbuf_printf(j, "  \"%s\": null,\n", name);
    else tune_strbuf_printf(j, "  \"%s\": {\"p50\": %.6f, \"p95\": %.6f, \"p99\": %.6f, \"mean\": %.6f},\n", name, s.p50,
                            s.p95, s.p99, s.mean);
}

int tune_cli_bench_serve(int argc, char **argv)
{
    if (tune_cli_wants_help(argc, argv)) {
        usage(stdout);
        return 0;
    }
    tune_bench_opts o = {NULL, NULL, getenv("OPENAI_API_KEY"), 4, 128, 600};
    const char *prompts_path = NULL, *out = "bench_serve";
    double limit = 0, cost_per_hour = -1, compare_price = -1, v;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        static const char *const valued[] = {"--prompts", "--model", "--concurrency", "--limit", "--max_tokens",
                                             "--max-tokens", "--cost-per-hour", "--compare-price", "--api-key",
                                             "--timeout", "--out"};
        int takes_value = 0;
        for (size_t k = 0; k < sizeof valued / sizeof valued[0]; k++) takes_value |= !strcmp(a, valued[k]);
        if (!takes_value && a[0] == '-' && a[1])
            return tune_cli_usage_error("bench-serve", "unknown option '%s' (try 'tune bench-serve --help')", a);
        if (takes_value && i + 1 >= argc) return tune_cli_usage_error("bench-serve", "%s needs a value", a);
        const char *val = takes_value ? argv[++i] : NULL;
        if (!strcmp(a, "--prompts")) prompts_path = val;
        else if (!strcmp(a, "--model")) o.model = val;
        else if (!strcmp(a, "--api-key")) o.api_key = val;
        else if (!strcmp(a, "--out")) out = val;
        else if (!strcmp(a, "--concurrency")) {
            if (parse_num(a, val, 1, 1024, &v)) return 2;
            o.concurrency = (int)v;
        } else if (!strcmp(a, "--limit")) {
            if (parse_num(a, val, 1, 1e9, &limit)) return 2;
        } else if (!strcmp(a, "--max_tokens") || !strcmp(a, "--max-tokens")) {
            if (parse_num(a, val, 1, 1 << 24, &v)) return 2;
            o.max_tokens = (int)v;
        } else if (!strcmp(a, "--cost-per-hour")) {
            if (parse_num(a, val, 0, 1e9, &cost_per_hour)) return 2;
        } else if (!strcmp(a, "--compare-price")) {
            if (parse_num(a, val, 0, 1e9, &compare_price)) return 2;
        } else if (!strcmp(a, "--timeout")) {
            if (parse_num(a, val, 0.001, 1e6, &o.timeout_s)) return 2;
        } else if (!o.url) {
            o.url = a;
        } else {
            return tune_cli_usage_error("bench-serve", "unexpected argument '%s'", a);
        }
    }
    if (!o.url) return tune_cli_usage_error("bench-serve", "expected URL (try 'tune bench-serve --help')");
    if (!prompts_path) return tune_cli_usage_error("bench-serve", "--prompts FILE is required");
    if (o.api_key && !*o.api_key) o.api_key = NULL;

    tune_error err;
    tune_cli_prompt_list prompts = {0};
    tune_status st = tune_cli_read_prompts(prompts_path, &prompts, &err);
    const int n = st == TUNE_OK ? (limit > 0 && limit < prompts.n ? (int)limit : prompts.n) : 0;
    char **texts = calloc((size_t)n + 1, sizeof *texts);
    tune_bench_result *res = calloc((size_t)n + 1, sizeof *res);
    double *sorted = calloc((size_t)n + 1, sizeof *sorted);
    if (st == TUNE_OK && (!texts || !res || !sorted)) st = tune_fail_run(&err, NULL, "out of memory");
    for (int i = 0; i < n && st == TUNE_OK; i++) { /* the instruction, then its input after a blank line */
        const tune_cli_prompt *p = &prompts.items[i];
        if (asprintf(&texts[i], "%s%s%s", p->instruction, p->input ? "\n\n" : "", p->input ? p->input : "") < 0) {
            texts[i] = NULL;
            st = tune_fail_run(&err, NULL, "out of memory");
        }
    }
    double wall = 0;
    char *model = NULL;
    if (st == TUNE_OK) {
        fprintf(stderr, "tune bench-serve: %d prompts to %s, %d at once, max_tokens %d\n", n, o.url, o.concurrency,
                o.max_tokens);
        st = tune_bench_run(&o, (const char *const *)texts, n, res, &wall, &model, &err);
    }
    if (st != TUNE_OK) tune_error_print(stderr, &err);

    tune_strbuf csv = {0}, js = {0}, svg = {0};
    tune_cli_scores scores;
    memset(&scores, 0, sizeof scores);
    int ok = 0;
    long tokens = 0;
    if (st == TUNE_OK) {
        tune_strbuf_puts(&csv, "index,ok,http_status,start_s,ttft_s,latency_s,prompt_tokens,completion_tokens,"
                               "tokens_per_s,error,prompt,answer");
        tune_strbuf_puts(&csv, prompts.n_refs ? ",reference,chrf,bleu\r\n" : "\r\n");
        for (int i = 0; i < n && st == TUNE_OK; i++) {
            const tune_bench_result *r = &res[i];
            ok += r->ok;
            tokens += r->ok ? r->completion_tokens : 0;
            const double gen = r->latency - r->ttft;
            tune_strbuf_printf(&csv, "%d,%d,%d,%.6f,%.6f,%.6f,%d,%d,%.2f,", i, r->ok, r->http_status, r->start, r->ttft,
                               r->latency, r->prompt_tokens, r->completion_tokens,
                               r->ok && gen > 0 && r->completion_tokens > 1 ? (r->completion_tokens - 1) / gen : 0.0);
            tune_strbuf_csv_field(&csv, r->error, strlen(r->error));
            tune_strbuf_puts(&csv, ",");
            tune_strbuf_csv_field(&csv, texts[i], strlen(texts[i]));
            tune_strbuf_puts(&csv, ",");
            const char *answer = r->text.data ? r->text.data : "";
            tune_strbuf_csv_field(&csv, answer, strlen(answer));
            const char *ref = prompts.items[i].ref;
            double chrf, bleu;
            if (ref && r->ok && (st = tune_cli_score(&scores, answer, ref, &chrf, &bleu, &err)) == TUNE_OK) {
                tune_strbuf_puts(&csv, ",");
                tune_strbuf_csv_field(&csv, ref, strlen(ref));
                tune_strbuf_printf(&csv, ",%.2f,%.2f", chrf, bleu);
            } else if (prompts.n_refs) {
                tune_strbuf_puts(&csv, ",,,");
            }
            tune_strbuf_puts(&csv, "\r\n");
            if (!r->ok) fprintf(stderr, "tune bench-serve: request %d failed: %s\n", i, r->error);
        }
    }
    if (st == TUNE_OK) {
        const spread ttft = spread_of(res, n, offsetof(tune_bench_result, ttft), sorted);
        const spread lat = spread_of(res, n, offsetof(tune_bench_result, latency), sorted);
        const double tps = wall > 0 ? tokens / wall : 0, rps = wall > 0 ? ok / wall : 0;
        const double cost_1k = cost_per_hour >= 0 && tokens > 0 ? cost_per_hour / 3600.0 * wall / (tokens / 1000.0) : NAN;
        tune_strbuf_puts(&js, "{\n");
        json_string(&js, "url", o.url);
        json_string(&js, "model", model);
        tune_strbuf_printf(&js, "  \"requests\": %d,\n  \"ok\": %d,\n"
                                "  \"errors\": %d,\n  \"concurrency\": %d,\n  \"max_tokens\": %d,\n"
                                "  \"wall_s\": %.6f,\n  \"output_tokens\": %ld,\n  \"output_tokens_per_s\": %.3f,\n"
                                "  \"requests_per_s\": %.4f,\n",
                           n, ok, n - ok, o.concurrency, o.max_tokens, wall, tokens, tps, rps);
        json_spread(&js, "ttft_s", ttft);
        json_spread(&js, "latency_s", lat);
        if (!isnan(cost_1k)) tune_strbuf_printf(&js, "  \"cost_per_hour_usd\": %.6f,\n  \"cost_per_1k_tokens_usd\": %.8f,\n",
                                                cost_per_hour, cost_1k);
        if (compare_price >= 0) tune_strbuf_printf(&js, "  \"compare_price_per_1k_tokens_usd\": %.8f,\n", compare_price);
        if (scores.n) tune_cli_scores_json(&scores, &js, "  ", ",\n");
        tune_strbuf_puts(&js, "  \"tool\": \"tune bench-serve\"\n}\n");
        int k = 0;
        for (int i = 0; i < n; i++)
            if (res[i].ok) sorted[k++] = res[i].latency;
        if (k) tune_svg_histogram(sorted, (size_t)k, 20, "tune bench-serve: request latency", "seconds", &svg);

        printf("requests        %d ok, %d errors, %d at once, %.2f s\n", ok, n - ok, o.concurrency, wall);
        if (ok) {
            printf("time to first   p50 %.3f s  p95 %.3f s  p99 %.3f s\n", ttft.p50, ttft.p95, ttft.p99);
            printf("latency         p50 %.3f s  p95 %.3f s  p99 %.3f s\n", lat.p50, lat.p95, lat.p99);
        }
        printf("throughput      %.1f output tokens/s, %.3f requests/s (%ld tokens)\n", tps, rps, tokens);
        if (!isnan(cost_1k)) {
            printf("cost            $%.6f per 1,000 output tokens at $%.2f an hour", cost_1k, cost_per_hour);
            if (compare_price >= 0)
                printf("; hosted $%.6f, so this endpoint costs %.2fx the hosted price", compare_price,
                       compare_price > 0 ? cost_1k / compare_price : INFINITY);
            printf("\n");
        }
        if (scores.n) {
            char line[256];
            tune_cli_scores_format(&scores, line, sizeof line);
            printf("scores          %s (%d answers)\n", line, scores.n);
        }
        char path[4096];
        const tune_strbuf *files[3] = {&csv, &js, &svg};
        const char *ext[3] = {"csv", "json", "svg"};
        for (int f = 0; f < 3 && st == TUNE_OK; f++) {
            if (!files[f]->len) continue;
            snprintf(path, sizeof path, "%s.%s", out, ext[f]);
            st = files[f]->oom ? tune_fail_run(&err, path, "out of memory")
                               : tune_write_file_atomic(path, files[f]->data, files[f]->len, &err);
        }
        if (st == TUNE_OK) fprintf(stderr, "tune bench-serve: wrote %s.csv, %s.json%s%s%s\n", out, out,
                                   svg.len ? ", " : "", svg.len ? out : "", svg.len ? ".svg" : "");
        else tune_error_print(stderr, &err);
    }
    tune_strbuf_free(&csv);
    tune_strbuf_free(&js);
    tune_strbuf_free(&svg);
    if (res) tune_bench_results_free(res, n);
    for (int i = 0; texts && i < n; i++) free(texts[i]);
    free(texts);
    free(res);
    free(sorted);
    free(model);
    tune_cli_prompts_free(&prompts);
    if (st == TUNE_OK && ok < n) return 1; /* the figures are written, but some requests failed */
    return st;
}
