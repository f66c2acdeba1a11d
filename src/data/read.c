/* Reading dataset files: JSON arrays, JSON Lines and text, with UTF-8
 * validation and errors that name file, line and record. */
#include <cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "tune/data.h"

int tune_utf8_valid(const char *str, size_t n, size_t *bad_offset)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t k;
        unsigned cp, min;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            k = 1, cp = c & 0x1F, min = 0x80;
        } else if ((c & 0xF0) == 0xE0) {
            k = 2, cp = c & 0x0F, min = 0x800;
        } else if ((c & 0xF8) == 0xF0) {
            k = 3, cp = c & 0x07, min = 0x10000;
        } else {
            goto bad;
        }
        for (size_t j = 1; j <= k; j++) {
            if (i + j >= n || (s[i + j] & 0xC0) != 0x80) goto bad;
            cp = (cp << 6) | (s[i + j] & 0x3F);
        }
        /* overlong forms, UTF-16 surrogates, beyond U+10FFFF */
        if (cp < min || (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF) goto bad;
        i += k + 1;
    }
    return 1;
bad:
    if (bad_offset) *bad_offset = i;
    return 0;
}

static int line_of(const char *start, const char *p)
{
    int line = 1;
    for (const char *q = start; q < p; q++)
        if (*q == '\n') line++;
    return line;
}

static tune_status record_error(tune_error *err, const char *path, int line, long index, const char *fmt,
                                const char *detail)
{
    tune_error_set(err, TUNE_ERR_INPUT, path, line, 0, fmt, detail);
    if (err) err->record = index;
    return TUNE_ERR_INPUT;
}

/* A bad record: skipped (kept in the list) or the error. */
static tune_status bad_record(tune_error_list *skipped, tune_error *e, tune_error *err)
{
    if (!skipped) {
        if (err && err != e) *err = *e;
        return TUNE_ERR_INPUT;
    }
    if (tune_error_list_add(skipped, e)) return tune_fail_run(err, NULL, "out of memory");
    return TUNE_OK;
}

static tune_status push(tune_record_list *out, const tune_record *r, tune_error *err)
{
    if (out->count == out->cap) {
        size_t cap = out->cap ? out->cap * 2 : 64;
        tune_record *p = realloc(out->items, cap * sizeof *p);
        if (!p) return tune_fail_run(err, NULL, "out of memory reading records");
        out->items = p;
        out->cap = cap;
    }
    out->items[out->count++] = *r;
    return TUNE_OK;
}

/* Parses one JSON object record s[0..n) found at `line` (1-based). */
static tune_status json_record(const char *path, const char *s, size_t n, int line, long index, tune_record_list *out,
                               tune_error_list *skipped, tune_error *err)
{
    tune_error e;
    tune_error_clear(&e);
    size_t bad;
    if (!tune_utf8_valid(s, n, &bad)) {
        record_error(&e, path, line + line_of(s, s + bad) - 1, index, "%s", "invalid UTF-8 in record");
        return bad_record(skipped, &e, err);
    }
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithLengthOpts(s, n, &end, 0);
    if (!j) {
        int at = line + (end ? line_of(s, end) - 1 : 0);
        record_error(&e, path, at, index, "%s", "invalid JSON in record");
        return bad_record(skipped, &e, err);
    }
    /* Only whitespace may follow the value. */
    for (const char *p = end; p && p < s + n; p++)
        if (!(*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')) {
            cJSON_Delete(j);
            record_error(&e, path, line + line_of(s, p) - 1, index, "%s", "unexpected text after the JSON record");
            return bad_record(skipped, &e, err);
        }
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        record_error(&e, path, line, index, "%s", "record is not a JSON object");
        return bad_record(skipped, &e, err);
    }
    tune_record r = {.json = j, .file = path, .line = line, .index = index};
    tune_status st = push(out, &r, err);
    if (st) cJSON_Delete(j);
    return st;
}

static tune_status read_jsonl(const char *path, const char *data, size_t len, tune_record_list *out,
                              tune_error_list *skipped, tune_error *err)
{
    int line = 1;
    long index = 0;
    for (size_t i = 0; i < len;) {
        size_t e = i;
        while (e < len && data[e] != '\n') e++;
        size_t k = i;
        while (k < e && (data[k] == ' ' || data[k] == '\t' || data[k] == '\r')) k++;
        if (k < e) {
            tune_status st = json_record(path, data + i, e - i, line, index++, out, skipped, err);
            if (st) return st;
        }
        i = e + 1;
        line++;
    }
    return TUNE_OK;
}

static size_t skip_ws(const char *s, size_t i, size_t n)
{
    while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\r' || s[i] == '\n')) i++;
    return i;
}

/* End (exclusive) of the JSON value starting at i: strings and nesting are
 * followed so that commas inside them do not split records. 0 when the
 * value does not end before n. */
static size_t value_end(const char *s, size_t i, size_t n)
{
    int depth = 0;
    for (; i < n; i++) {
        char c = s[i];
        if (c == '"') {
            for (i++; i < n && s[i] != '"'; i++)
                if (s[i] == '\\') i++;
            if (i >= n) return 0;
            if (depth == 0) return i + 1;
        } else if (c == '{' || c == '[') {
            depth++;
        } else if (c == '}' || c == ']') {
            if (depth == 0) return i; /* the enclosing array ends */
            if (--depth == 0) return i + 1;
        } else if (depth == 0 && (c == ',' || c == ' ' || c == '\n' || c == '\t' || c == '\r')) {
            return i; /* a bare scalar */
        }
    }
    return depth == 0 ? n : 0;
}

/* Line numbers of offsets asked for in increasing order, each newline
 * counted once (line_of from the start for every record of an array was
 * quadratic: 80,000 records took 35 s). */
typedef struct line_cursor {
    const char *data;
    size_t at;
    int line;
} line_cursor;

static int line_at(line_cursor *c, size_t offset)
{
    for (; c->at < offset; c->at++)
        if (c->data[c->at] == '\n') c->line++;
    return c->line;
}

static tune_status read_json(const char *path, const char *data, size_t len, tune_record_list *out,
                             tune_error_list *skipped, tune_error *err)
{
    line_cursor lc = {data, 0, 1};
    size_t i = skip_ws(data, 0, len);
    if (i < len && data[i] == '{') return json_record(path, data + i, len - i, line_at(&lc, i), 0, out,
                                                      skipped, err);
    if (i >= len || data[i] != '[')
        return tune_error_set(err, TUNE_ERR_INPUT, path, line_at(&lc, i), 0,
                              "expected a JSON array of records (or one object)");
    i++;
    long index = 0;
    for (;;) {
        i = skip_ws(data, i, len);
        if (i < len && data[i] == ']') break;
        size_t e = value_end(data, i, len);
        if (e == 0 || e <= i)
            return tune_error_set(err, TUNE_ERR_INPUT, path, line_at(&lc, i), 0,
                                  "record %ld: the JSON array is not closed", index);
        tune_status st = json_record(path, data + i, e - i, line_at(&lc, i), index++, out, skipped, err);
        if (st) return st;
        i = skip_ws(data, e, len);
        if (i < len && data[i] == ',') {
            i++;
            continue;
        }
        if (i < len && data[i] == ']') break;
        return tune_error_set(err, TUNE_ERR_INPUT, path, line_at(&lc, i), 0,
                              "after record %ld: expected ',' or ']' in the JSON array", index - 1);
    }
    i = skip_ws(data, i + 1, len);
    if (i < len)
        return tune_error_set(err, TUNE_ERR_INPUT, path, line_at(&lc, i), 0,
                              "unexpected text after the JSON array");
    return TUNE_OK;
}

static tune_status text_record(const char *path, const char *s, size_t n, int line, long index,
                               tune_record_list *out, tune_error_list *skipped, tune_error *err)
{
    size_t bad;
    if (!tune_utf8_valid(s, n, &bad)) {
        tune_error e;
        tune_error_clear(&e);
        record_error(&e, path, line + line_of(s, s + bad) - 1, index, "%s", "invalid UTF-8 in record");
        return bad_record(skipped, &e, err);
    }
    char *t = malloc(n + 1);
    if (!t) return tune_fail_run(err, path, "out of memory");
    memcpy(t, s, n);
    t[n] = 0;
    tune_record r = {.text = t, .text_len = n, .file = path, .line = line, .index = index};
    tune_status st = push(out, &r, err);
    if (st) free(t);
    return st;
}

static int starts_llama2(const char *s, size_t n)
{
    return n >= 9 && !memcmp(s, "<s>[INST]", 9);
}

static tune_status read_text(const char *path, const char *data, size_t len, tune_data_format format,
                             tune_record_list *out, tune_error_list *skipped, tune_error *err)
{
    if (format != TUNE_FORMAT_LLAMA2) return text_record(path, data, len, 1, 0, out, skipped, err);
    long index = 0;
    size_t start = 0;
    int start_line = 1, line = 1;
    int open = 0;
    for (size_t i = 0; i <= len; line++) {
        size_t e = i;
        while (e < len && data[e] != '\n') e++;
        int begins = i < len && starts_llama2(data + i, len - i);
        if (begins || i >= len) {
            if (open) {
                size_t end = i;
                while (end > start && (data[end - 1] == '\n' || data[end - 1] == '\r')) end--;
                tune_status st = text_record(path, data + start, end - start, start_line, index++, out, skipped, err);
                if (st) return st;
            } else if (skip_ws(data, 0, i) < i) {
                return tune_error_set(err, TUNE_ERR_INPUT, path, 1, 0,
                                      "Llama-2-chat text: records must start with '<s>[INST]' at the start of a line");
            }
            open = 1;
            start = i;
            start_line = line;
        }
        if (i >= len) break;
        i = e + 1;
    }
    return TUNE_OK;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !strcmp(s + n - m, suffix);
}

tune_status tune_data_read_buffer(const char *path, const char *data, size_t len, tune_data_format format,
                                  tune_record_list *out, tune_error_list *skipped, tune_error *err)
{
    if (len >= 3 && !memcmp(data, "\xEF\xBB\xBF", 3)) data += 3, len -= 3; /* byte-order mark */
    if (ends_with(path, ".jsonl") || ends_with(path, ".ndjson")) return read_jsonl(path, data, len, out, skipped, err);
    if (ends_with(path, ".json")) return read_json(path, data, len, out, skipped, err);
    return read_text(path, data, len, format, out, skipped, err);
}

tune_status tune_data_read_file(const char *path, tune_data_format format, tune_record_list *out,
                                tune_error_list *skipped, tune_error *err)
{
    char *data;
    size_t len;
    tune_status st = tune_read_file(path, &data, &len, err);
    if (st) return st;
    st = tune_data_read_buffer(path, data, len, format, out, skipped, err);
    free(data);
    return st;
}

void tune_record_list_free(tune_record_list *list)
{
    for (size_t i = 0; i < list->count; i++) {
        cJSON_Delete(list->items[i].json);
        free(list->items[i].text);
    }
    free(list->items);
    list->items = NULL;
    list->count = list->cap = 0;
}
