/* Text helpers of the tokenizer: a string hash map, UTF-8 decoding with
 * U+FFFD replacement, lists of pieces, and literal/regex patterns. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

uint64_t tk_hash(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t)s[i];
        h *= 1099511628211ull;
    }
    return h ^ (h >> 29);
}

static int strmap_grow(tk_strmap *m)
{
    size_t cap = m->cap ? m->cap * 2 : 64;
    tk_strmap g = {calloc(cap, sizeof(char *)), calloc(cap, sizeof(uint32_t)), calloc(cap, sizeof(int32_t)), cap, 0};
    if (!g.keys || !g.lens || !g.vals) {
        free(g.keys);
        free(g.lens);
        free(g.vals);
        return -1;
    }
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->keys[i]) continue;
        size_t j = tk_hash(m->keys[i], m->lens[i]) & (cap - 1);
        while (g.keys[j]) j = (j + 1) & (cap - 1);
        g.keys[j] = m->keys[i];
        g.lens[j] = m->lens[i];
        g.vals[j] = m->vals[i];
        g.n++;
    }
    free(m->keys);
    free(m->lens);
    free(m->vals);
    *m = g;
    return 0;
}

int tk_strmap_put(tk_strmap *m, const char *s, size_t n, int32_t v)
{
    if ((m->n + 1) * 2 > m->cap && strmap_grow(m)) return -1;
    size_t j = tk_hash(s, n) & (m->cap - 1);
    while (m->keys[j]) {
        if (m->lens[j] == n && !memcmp(m->keys[j], s, n)) {
            m->vals[j] = v;
            return 0;
        }
        j = (j + 1) & (m->cap - 1);
    }
    char *k = malloc(n + 1);
    if (!k) return -1;
    memcpy(k, s, n);
    k[n] = 0;
    m->keys[j] = k;
    m->lens[j] = (uint32_t)n;
    m->vals[j] = v;
    m->n++;
    return 0;
}

int32_t tk_strmap_get(const tk_strmap *m, const char *s, size_t n)
{
    if (!m->cap) return -1;
    size_t j = tk_hash(s, n) & (m->cap - 1);
    while (m->keys[j]) {
        if (m->lens[j] == n && !memcmp(m->keys[j], s, n)) return m->vals[j];
        j = (j + 1) & (m->cap - 1);
    }
    return -1;
}

void tk_strmap_free(tk_strmap *m)
{
    for (size_t i = 0; i < m->cap; i++) free(m->keys[i]);
    free(m->keys);
    free(m->lens);
    free(m->vals);
    memset(m, 0, sizeof *m);
}

/* Unicode's "maximal subpart" rule: a lead byte followed by a valid but
 * incomplete tail is one invalid unit; any other bad byte is one unit. */
int tk_utf8_next(const uint8_t *s, size_t n, int32_t *cp, size_t *len_bad)
{
    uint8_t b = s[0];
    if (b < 0x80) {
        *cp = b;
        return 1;
    }
    int need;
    uint8_t lo = 0x80, hi = 0xBF;
    int32_t c;
    if (b >= 0xC2 && b <= 0xDF) {
        need = 1;
        c = b & 0x1F;
    } else if (b >= 0xE0 && b <= 0xEF) {
        need = 2;
        c = b & 0x0F;
        if (b == 0xE0) lo = 0xA0;
        if (b == 0xED) hi = 0x9F;
    } else if (b >= 0xF0 && b <= 0xF4) {
        need = 3;
        c = b & 0x07;
        if (b == 0xF0) lo = 0x90;
        if (b == 0xF4) hi = 0x8F;
    } else {
        *len_bad = 1;
        return 0;
    }
    size_t i = 1;
    for (; i <= (size_t)need; i++) {
        if (i >= n || s[i] < lo || s[i] > hi) {
            *len_bad = i;
            return 0;
        }
        c = (c << 6) | (s[i] & 0x3F);
        lo = 0x80;
        hi = 0xBF;
    }
    *cp = c;
    return need + 1;
}

int tk_utf8_encode(int32_t cp, char out[4])
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

char *tk_utf8_sanitize(const char *s, size_t n, size_t *out_len)
{
    tune_strbuf sb = {0};
    size_t i = 0, done = 0;
    while (i < n) {
        int32_t cp;
        size_t bad;
        int k = tk_utf8_next((const uint8_t *)s + i, n - i, &cp, &bad);
        if (k) {
            i += (size_t)k;
            continue;
        }
        tune_strbuf_append(&sb, s + done, i - done);
        tune_strbuf_append(&sb, "\xEF\xBF\xBD", 3);
        i += bad;
        done = i;
    }
    tune_strbuf_append(&sb, s + done, n - done);
    if (!sb.data) tune_strbuf_append(&sb, "", 0);
    if (sb.oom || !sb.data) {
        tune_strbuf_free(&sb);
        return NULL;
    }
    *out_len = sb.len;
    return sb.data;
}

int tk_pieces_push(tk_pieces *p, const char *s, size_t len, int at_start)
{
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 16;
        tk_span *v = realloc(p->v, cap * sizeof *v);
        if (!v) return -1;
        p->v = v;
        p->cap = cap;
    }
    size_t off = p->buf.len;
    tune_strbuf_append(&p->buf, s, len);
    if (p->buf.oom) return -1;
    p->v[p->n++] = (tk_span){off, len, at_start};
    return 0;
}

void tk_pieces_reset(tk_pieces *p)
{
    p->n = 0;
    p->buf.len = 0;
}

void tk_pieces_free(tk_pieces *p)
{
    tune_strbuf_free(&p->buf);
    free(p->v);
    memset(p, 0, sizeof *p);
}

tune_status tk_pattern_regex(tk_pattern *p, const char *re, const char *where, tune_error *err)
{
    int code;
    PCRE2_SIZE at;
    memset(p, 0, sizeof *p);
    p->re = pcre2_compile((PCRE2_SPTR)re, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &code, &at, NULL);
    if (!p->re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(code, msg, sizeof msg);
        return tune_fail_input(err, where, "regex /%s/ at offset %zu: %s", re, (size_t)at, (char *)msg);
    }
    pcre2_jit_compile(p->re, PCRE2_JIT_COMPLETE); /* falls back to the interpreter when JIT is absent */
    p->md = pcre2_match_data_create_from_pattern(p->re, NULL);
    if (!p->md) return tune_fail_run(err, where, "out of memory");
    return TUNE_OK;
}

tune_status tk_pattern_parse(tk_pattern *p, const cJSON *j, const char *where, tune_error *err)
{
    memset(p, 0, sizeof *p);
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(j, "String");
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(j, "Regex");
    if (cJSON_IsString(s)) {
        p->literal_len = strlen(s->valuestring);
        p->literal = strdup(s->valuestring);
        if (!p->literal) return tune_fail_run(err, where, "out of memory");
        return TUNE_OK;
    }
    if (cJSON_IsString(r)) return tk_pattern_regex(p, r->valuestring, where, err);
    return tune_fail_input(err, where, "pattern must be {\"String\": ...} or {\"Regex\": ...}");
}

void tk_pattern_free(tk_pattern *p)
{
    free(p->literal);
    if (p->md) pcre2_match_data_free(p->md);
    if (p->re) pcre2_code_free(p->re);
    memset(p, 0, sizeof *p);
}

int tk_pattern_find(tk_pattern *p, const char *s, size_t n, size_t start, size_t *ms, size_t *me)
{
    if (start > n) return 0;
    if (p->literal) {
        if (!p->literal_len) return 0; /* an empty literal matches nothing in HF */
        const char *f = memmem(s + start, n - start, p->literal, p->literal_len);
        if (!f) return 0;
        *ms = (size_t)(f - s);
        *me = *ms + p->literal_len;
        return 1;
    }
    int rc = pcre2_match(p->re, (PCRE2_SPTR)s, n, start, PCRE2_NO_UTF_CHECK, p->md, NULL);
    if (rc == PCRE2_ERROR_NOMATCH) return 0;
    if (rc < 0) return -1;
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(p->md);
    *ms = ov[0];
    *me = ov[1];
    return 1;
}

static int hex4(const char *s, int32_t *v)
{
    *v = 0;
    for (int i = 0; i < 4; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0) return -1;
        *v = *v * 16 + d;
    }
    return 0;
}

tune_status tune_json_string_decode(const char *s, size_t n, char **out, size_t *len, tune_error *err)
{
    *out = NULL;
    if (!n || s[0] != '"') return tune_fail_input(err, NULL, "expected a JSON string");
    tune_strbuf sb = {0};
    size_t i = 1;
    while (i < n && s[i] != '"') {
        char c = s[i];
        if (c != '\\') {
            if ((uint8_t)c < 0x20) break;
            tune_strbuf_append(&sb, s + i, 1);
            i++;
            continue;
        }
        if (i + 1 >= n) break;
        char e = s[i + 1], u[4];
        i += 2;
        const char *simple = strchr("\"\\/bfnrt", e);
        if (simple && e) {
            static const char map[] = "\"\\/\b\f\n\r\t";
            tune_strbuf_append(&sb, &map[simple - "\"\\/bfnrt"], 1);
            continue;
        }
        int32_t cp, lo;
        if (e != 'u' || i + 4 > n || hex4(s + i, &cp)) goto bad;
        i += 4;
        if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (i + 6 <= n && s[i] == '\\' && s[i + 1] == 'u' && !hex4(s + i + 2, &lo) && lo >= 0xDC00 && lo <= 0xDFFF) {
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                i += 6;
            } else
                cp = 0xFFFD; /* lone surrogate: what Python's "replace" gives */
        } else if (cp >= 0xDC00 && cp <= 0xDFFF)
            cp = 0xFFFD;
        tune_strbuf_append(&sb, u, (size_t)tk_utf8_encode(cp, u));
    }
    if (i >= n || s[i] != '"') goto bad;
    if (!sb.data) tune_strbuf_append(&sb, "", 0);
    if (sb.oom) {
        tune_strbuf_free(&sb);
        return tune_fail_run(err, NULL, "out of memory");
    }
    *out = sb.data;
    *len = sb.len;
    return TUNE_OK;
bad:
    tune_strbuf_free(&sb);
    return tune_fail_input(err, NULL, "not a valid JSON string (at byte %zu)", i);
}
