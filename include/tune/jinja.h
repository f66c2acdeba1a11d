/* A Jinja2 interpreter for chat templates: renders a model's own template
 * exactly as Transformers' apply_chat_template does (jinja2's
 * ImmutableSandboxedEnvironment with trim_blocks and lstrip_blocks, the
 * loopcontrols extension, {% generation %} blocks, and Transformers' globals
 * raise_exception, strftime_now, namespace and dict, and its tojson).
 *
 * Values follow Python: printing a list or dict gives its Python repr,
 * True/None print as "True"/"None", strings index and measure by code point.
 * A template is parsed once and may be rendered many times (and from several
 * threads: rendering never modifies the parsed template). */
#ifndef TUNE_JINJA_H
#define TUNE_JINJA_H

#include <cJSON.h>
#include <stddef.h>

#include "tune/error.h"
#include "tune/util.h"

typedef struct tune_jinja tune_jinja;

/* Bounds against hostile templates; a zero field takes the default. Going
 * past one stops the render with TUNE_ERR_INPUT naming the bound. */
typedef struct tune_jinja_limits {
    int max_depth;       /* nested macro calls / callers (default 64) */
    long max_iterations; /* loop iterations over the whole render (default 1,000,000) */
    size_t max_output;   /* bytes of rendered text (default 16 MiB) */
    /* Work beyond the loops, over the whole render: each byte of a string
     * made or searched, and 16 for each item of a list made and each item or
     * dict entry searched (default 1 GiB). A string or list grown by concatenation in a
     * loop is copied whole each time, and a dict grown by one key is searched
     * whole: their time would grow with the square of the loop. */
    size_t max_work;
} tune_jinja_limits;

/* Parses source (len bytes, need not be NUL-terminated). name is what errors
 * call the template (a file path, or e.g. "the model's chat template"); it is
 * copied. Syntax errors, unclosed blocks, unknown filters and unknown tests
 * fail with TUNE_ERR_INPUT, err->file = name and err->line/col where the
 * problem is (1-based). */
tune_status tune_jinja_parse(const char *source, size_t len, const char *name, tune_jinja **out,
                             tune_error *err);
void tune_jinja_free(tune_jinja *t);

/* [start, end) byte offsets of one {% generation %} ... {% endgeneration %}
 * block's output in the rendered text (counted from the start of this
 * render's text, whatever out held before). */
typedef struct tune_jinja_span {
    size_t start, end;
} tune_jinja_span;

typedef struct tune_jinja_render_options {
    /* The template's variables: a JSON object whose members become globals
     * (messages, add_generation_prompt, bos_token, eos_token, tools, documents,
     * and any others the caller passes). JSON true/false/null are Python's
     * True/False/None; numbers without a fraction or exponent are ints. */
    const cJSON *context;
    /* The time strftime_now formats, seconds since the epoch, in UTC. */
    long long now;
    tune_jinja_limits limits;
} tune_jinja_render_options;

/* Renders into out (appended). When spans is not NULL it receives a malloc'd
 * array of the generation blocks' spans in output order (*n_spans of them;
 * NULL and 0 when none). On failure out keeps what was rendered so far (the
 * caller discards it) and nothing is returned in spans.
 * A template that calls raise_exception(msg) fails with TUNE_ERR_INPUT,
 * err->message exactly msg, err->file the template's name and line/col of
 * the call, and *raised (when not NULL) set to 1; every other failure leaves
 * *raised 0. */
tune_status tune_jinja_render(const tune_jinja *t, const tune_jinja_render_options *opt, tune_strbuf *out,
                              tune_jinja_span **spans, int *n_spans, int *raised, tune_error *err);

#endif
