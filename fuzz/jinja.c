/* The Jinja engine: the input parsed as a template and, when it parses,
 * rendered (with the engine's default limits, as tune renders) over a fixed
 * conversation with a system prompt, tool calls and a tool reply, a tool
 * list, the BOS/EOS texts and a few values of every JSON kind. */
#include <cJSON.h>
#include <stdlib.h>

#include "targets.h"
#include "tune/jinja.h"

static const char CONTEXT[] =
    "{\"messages\": ["
    "{\"role\": \"system\", \"content\": \"You are an Excel expert. 한국어로 답하세요.\"},"
    "{\"role\": \"user\", \"content\": \"Sum column A?\"},"
    "{\"role\": \"assistant\", \"content\": \"=SUM(A:A)\"},"
    "{\"role\": \"user\", \"content\": \"  And {{ B }} with \\\"quotes\\\" and \\\\ ? \"},"
    "{\"role\": \"assistant\", \"content\": null, \"tool_calls\": [{\"type\": \"function\", \"function\": "
    "{\"name\": \"lookup\", \"arguments\": {\"cell\": \"B2\", \"n\": 3}}}]},"
    "{\"role\": \"tool\", \"name\": \"lookup\", \"content\": \"42\"},"
    "{\"role\": \"assistant\", \"content\": \"B2 is 42.\"}],"
    "\"add_generation_prompt\": true, \"bos_token\": \"<s>\", \"eos_token\": \"</s>\","
    "\"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"lookup\", \"description\": \"Reads a cell\","
    "\"parameters\": {\"type\": \"object\", \"properties\": {\"cell\": {\"type\": \"string\"}}}}}],"
    "\"documents\": null, \"values\": [0, -7, 2.5, 1e300, true, false, null, \"\", \"é🙂\", [], {}, [[1, 2], {\"k\": "
    "\"v\"}]]}";

void tune_fuzz_jinja(const uint8_t *data, size_t size)
{
    static cJSON *context;
    if (!context) tune_fuzz_check((context = cJSON_Parse(CONTEXT)) != NULL, "bad context");
    tune_jinja *t;
    tune_error e;
    if (tune_jinja_parse((const char *)data, size, "fuzz.jinja", &t, &e) != TUNE_OK) return;
    const tune_jinja_render_options opt = {.context = context, .now = 1721952000};
    tune_strbuf out = {0};
    tune_jinja_span *spans = NULL;
    int n_spans = 0, raised = 0;
    if (tune_jinja_render(t, &opt, &out, &spans, &n_spans, &raised, &e) == TUNE_OK) {
        for (int i = 0; i < n_spans; i++)
            tune_fuzz_check(spans[i].start <= spans[i].end && spans[i].end <= out.len,
                            "a generation span lies outside the text");
        free(spans);
    }
    tune_strbuf_free(&out);
    tune_jinja_free(t);
}
