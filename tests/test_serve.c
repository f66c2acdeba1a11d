/* The serving module's pure parts: request checks, response and stream
 * shapes, the SSE parser, histograms and percentiles. */
#include <math.h>

#include "testutil.h"
#include "tune/serve.h"

static int parse(tune_api_kind kind, const char *body, tune_api_request *req, tune_api_error *e)
{
    return tune_api_parse(kind, body, strlen(body), req, e);
}

START_TEST(chat_request_fields_and_defaults)
{
    tune_api_request r;
    tune_api_error e;
    ck_assert_int_eq(parse(TUNE_API_CHAT,
                           "{\"model\": \"excel\", \"messages\": [{\"role\": \"developer\", \"content\": \"be brief\"},"
                           " {\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": \"a\"},"
                           " {\"type\": \"text\", \"text\": \"b\"}]}, {\"role\": \"assistant\", \"content\": null}],"
                           " \"stop\": [\"x\", \"\"], \"stream\": true, \"stream_options\": {\"include_usage\": true},"
                           " \"max_tokens\": 7, \"top_k\": -1, \"seed\": 3}",
                           &r, &e),
                     0);
    ck_assert_str_eq(r.model, "excel");
    ck_assert_int_eq(r.n_msgs, 3);
    ck_assert_str_eq(r.msgs[0].role, "system"); /* OpenAI's "developer" is the system role */
    ck_assert_str_eq(r.msgs[1].content, "ab");  /* text parts joined */
    ck_assert_str_eq(r.msgs[2].content, "");
    ck_assert_int_eq(r.n_stops, 1); /* empty stop strings are dropped */
    ck_assert(r.stream && r.include_usage && r.seeded);
    ck_assert_int_eq(r.max_tokens, 7);
    ck_assert_int_eq(r.sampling.top_k, 0);
    ck_assert_int_eq((int)r.sampling.seed, 3);
    ck_assert_float_eq(r.sampling.temperature, 1.0f); /* OpenAI's default */
    tune_api_request_free(&r);
    ck_assert_int_eq(parse(TUNE_API_COMPLETION, "{\"prompt\": \"hi\"}", &r, &e), 0);
    ck_assert_ptr_null(r.model);
    ck_assert_int_eq(r.max_tokens, -1);
    ck_assert_str_eq(r.msgs[0].content, "hi");
    tune_api_request_free(&r);
}
END_TEST

START_TEST(bad_requests_get_400_naming_the_field)
{
    static const struct {
        tune_api_kind kind;
        const char *body, *param;
    } cases[] = {
        {TUNE_API_CHAT, "{\"messages\": [", ""},
        {TUNE_API_CHAT, "\"text\"", ""},
        {TUNE_API_CHAT, "{}", "messages"},
        {TUNE_API_CHAT, "{\"messages\": []}", "messages"},
        {TUNE_API_CHAT, "{\"messages\": [3]}", "messages"},
        {TUNE_API_CHAT, "{\"messages\": [{\"role\": \"tool\", \"content\": \"x\"}]}", "messages"},
        {TUNE_API_CHAT, "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"image_url\"}]}]}", "messages"},
        {TUNE_API_COMPLETION, "{\"prompt\": [1, 2]}", "prompt"},
        {TUNE_API_COMPLETION, "{\"prompt\": \"x\", \"model\": 1}", "model"},
        {TUNE_API_COMPLETION, "{\"prompt\": \"x\", \"max_tokens\": 0}", "max_tokens"},
        {TUNE_API_COMPLETION, "{\"prompt\": \"x\", \"max_tokens\": 2.5}", "max_tokens"},
        {TUNE_API_COMPLETION, "{\"prompt\": \"x\", \"max_tokens\": 1e30}", "max_tokens"},
        {TUNE_API_COMPLETION, "{\"prompt\": \"x\", \"temperature\": -1}", "temperature"},
        {TUNE_API_COMPLETION, "{\"prompt\": \"x\", \"top_p\": 1.5}", "top_p"},
        {TUNE_API_COMPLETION, "{\"prompt\": \"x\", \"stream\": 1}", "stream"},
        {TUNE_API_COMPLETION, "{\"prompt\": \"x\", \"stop\": 5}", "stop"},
        {TUNE_API_COMPLETION, "{\"prompt\": \"x\", \"n\": 2}", "n"},
        {TUNE_API_COMPLETION, "{\"prompt\": \"x\", \"logprobs\": 3}", "logprobs"},
        {TUNE_API_COMPLETION, "{\"prompt\": \"x\", \"presence_penalty\": 0.5}", "presence_penalty"},
        {TUNE_API_COMPLETION, "{\"prompt\": \"x\", \"stream_options\": []}", "stream_options"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tune_api_request r;
        tune_api_error e;
        ck_assert_msg(parse(cases[i].kind, cases[i].body, &r, &e) == 400, "%s", cases[i].body);
        ck_assert_msg(!strcmp(e.param, cases[i].param), "%s: param '%s'", cases[i].body, e.param);
        char *json = tune_api_error_json(&e);
        cJSON *j = cJSON_Parse(json);
        const cJSON *err = cJSON_GetObjectItem(j, "error");
        ck_assert(cJSON_IsString(cJSON_GetObjectItem(err, "message")));
        ck_assert_str_eq(cJSON_GetObjectItem(err, "type")->valuestring, "invalid_request_error");
        ck_assert(cJSON_HasObjectItem(err, "code") && cJSON_HasObjectItem(err, "param"));
        cJSON_Delete(j);
        free(json);
    }
}
END_TEST

/* The events of a stream in buf, parsed back. */
static cJSON *event(const tune_strbuf *buf, int i)
{
    const char *p = buf->data;
    for (int k = 0; k < i; k++) p = strstr(p, "\n\n") + 2;
    ck_assert(!strncmp(p, "data: ", 6));
    const char *end = strstr(p, "\n\n");
    ck_assert_ptr_nonnull(end);
    return cJSON_ParseWithLength(p + 6, (size_t)(end - p - 6));
}

START_TEST(stream_chunks_have_openai_shapes)
{
    tune_strbuf b = {0};
    const tune_api_chunk role = {NULL, 0, 1, NULL, 0, 0, 0}, text = {"h\"i\n", 4, 0, NULL, 0, 0, 0},
                         fin = {NULL, 0, 0, "stop", 0, 0, 0}, usage = {NULL, 0, 0, NULL, 1, 5, 2};
    tune_api_sse_chunk(&b, TUNE_API_CHAT, "c1", 9, "m", &role);
    tune_api_sse_chunk(&b, TUNE_API_CHAT, "c1", 9, "m", &text);
    tune_api_sse_chunk(&b, TUNE_API_CHAT, "c1", 9, "m", &fin);
    tune_api_sse_chunk(&b, TUNE_API_CHAT, "c1", 9, "m", &usage);
    tune_api_sse_done(&b);
    cJSON *e0 = event(&b, 0), *e1 = event(&b, 1), *e2 = event(&b, 2), *e3 = event(&b, 3);
    ck_assert_str_eq(cJSON_GetObjectItem(e0, "object")->valuestring, "chat.completion.chunk");
    const cJSON *c0 = cJSON_GetArrayItem(cJSON_GetObjectItem(e0, "choices"), 0);
    ck_assert_str_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(c0, "delta"), "role")->valuestring, "assistant");
    ck_assert(cJSON_IsNull(cJSON_GetObjectItem(c0, "finish_reason")));
    const cJSON *c1 = cJSON_GetArrayItem(cJSON_GetObjectItem(e1, "choices"), 0);
    ck_assert_str_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(c1, "delta"), "content")->valuestring, "h\"i\n");
    const cJSON *c2 = cJSON_GetArrayItem(cJSON_GetObjectItem(e2, "choices"), 0);
    ck_assert_str_eq(cJSON_GetObjectItem(c2, "finish_reason")->valuestring, "stop");
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItem(c2, "delta")), 0);
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItem(e3, "choices")), 0);
    ck_assert_int_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(e3, "usage"), "total_tokens")->valueint, 7);
    ck_assert(strstr(b.data, "\n\ndata: [DONE]\n\n") && !strcmp(b.data + b.len - 14, "data: [DONE]\n\n"));
    cJSON_Delete(e0);
    cJSON_Delete(e1);
    cJSON_Delete(e2);
    cJSON_Delete(e3);
    tune_strbuf_free(&b);

    char *full = tune_api_response_json(TUNE_API_COMPLETION, "x", 1, "m", "ab", 2, "length", 3, 2);
    cJSON *j = cJSON_Parse(full);
    ck_assert_str_eq(cJSON_GetObjectItem(j, "object")->valuestring, "text_completion");
    const cJSON *c = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0);
    ck_assert_str_eq(cJSON_GetObjectItem(c, "text")->valuestring, "ab");
    ck_assert_str_eq(cJSON_GetObjectItem(c, "finish_reason")->valuestring, "length");
    ck_assert_int_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "usage"), "prompt_tokens")->valueint, 3);
    cJSON_Delete(j);
    free(full);
    ck_assert_str_eq(tune_api_finish_reason(TUNE_STOP_EOS), "stop");
    ck_assert_str_eq(tune_api_finish_reason(TUNE_STOP_STRING), "stop");
    ck_assert_str_eq(tune_api_finish_reason(TUNE_STOP_LENGTH), "length");
}
END_TEST

typedef struct {
    char got[8][64];
    int n;
} collected;

static int collect(void *ctx, const char *data)
{
    collected *c = ctx;
    snprintf(c->got[c->n++], sizeof c->got[0], "%s", data);
    return !strcmp(data, "stop");
}

START_TEST(sse_parser_splits_events_across_reads)
{
    static const char stream[] = ": comment\r\ndata: {\"a\":1}\r\n\r\nevent: x\ndata:[DONE]\n\ndata: stop\n\ndata: after\n\n";
    for (size_t step = 1; step <= sizeof stream; step++) { /* every way of cutting it into reads */
        tune_sse_parser p = {{0}};
        collected c = {.n = 0};
        int r = 0;
        for (size_t at = 0; at < sizeof stream - 1 && !r; at += step)
            r = tune_sse_feed(&p, stream + at, at + step < sizeof stream - 1 ? step : sizeof stream - 1 - at, collect, &c);
        ck_assert_int_eq(r, 1); /* "stop" stopped the feeding */
        ck_assert_int_eq(c.n, 3);
        ck_assert_str_eq(c.got[0], "{\"a\":1}");
        ck_assert_str_eq(c.got[1], "[DONE]");
        tune_sse_parser_free(&p);
    }
}
END_TEST

START_TEST(percentiles_interpolate_as_numpy)
{
    const double v[] = {1, 2, 3, 4, 10};
    ck_assert_double_eq_tol(tune_percentile(v, 5, 50), 3, 1e-12);
    ck_assert_double_eq_tol(tune_percentile(v, 5, 95), 8.8, 1e-12); /* numpy.percentile(v, 95) */
    ck_assert_double_eq_tol(tune_percentile(v, 5, 99), 9.76, 1e-12);
    ck_assert_double_eq_tol(tune_percentile(v, 5, 0), 1, 1e-12);
    ck_assert_double_eq_tol(tune_percentile(v, 5, 100), 10, 1e-12);
    ck_assert_double_eq_tol(tune_percentile(v, 1, 99), 1, 1e-12);
}
END_TEST

START_TEST(histogram_renders_cumulative_prometheus_buckets)
{
    tune_histogram h;
    memset(&h, 0, sizeof h);
    tune_histogram_add(&h, 0.01);
    tune_histogram_add(&h, 0.05); /* on a bound: counted in that bucket (le) */
    tune_histogram_add(&h, 3);
    tune_histogram_add(&h, 1e6);
    tune_strbuf out = {0};
    tune_histogram_render(&h, "lat", "help text", &out);
    ck_assert(strstr(out.data, "# TYPE lat histogram\n"));
    ck_assert(strstr(out.data, "lat_bucket{le=\"0.025\"} 1\n"));
    ck_assert(strstr(out.data, "lat_bucket{le=\"0.05\"} 2\n"));
    ck_assert(strstr(out.data, "lat_bucket{le=\"2.5\"} 2\n"));
    ck_assert(strstr(out.data, "lat_bucket{le=\"5\"} 3\n"));
    ck_assert(strstr(out.data, "lat_bucket{le=\"+Inf\"} 4\n"));
    ck_assert(strstr(out.data, "lat_count 4\n"));
    tune_strbuf_free(&out);
    const double v[] = {1, 1.5, 2, 9};
    tune_svg_histogram(v, 4, 8, "t", "s", &out);
    ck_assert(!strncmp(out.data, "<svg", 4) && strstr(out.data, "</svg>\n"));
    tune_strbuf_free(&out);
}
END_TEST

static Suite *serve_suite(void)
{
    Suite *s = suite_create("serve");
    TCase *tc = tcase_create("api");
    tcase_add_test(tc, chat_request_fields_and_defaults);
    tcase_add_test(tc, bad_requests_get_400_naming_the_field);
    tcase_add_test(tc, stream_chunks_have_openai_shapes);
    tcase_add_test(tc, sse_parser_splits_events_across_reads);
    suite_add_tcase(s, tc);
    tc = tcase_create("figures");
    tcase_add_test(tc, percentiles_interpolate_as_numpy);
    tcase_add_test(tc, histogram_renders_cumulative_prometheus_buckets);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return run_suite(serve_suite()); }
