/* jinja2's lexer as Transformers configures it (trim_blocks, lstrip_blocks,
 * no trailing newline kept), rule for rule: the whitespace a template keeps
 * or drops here is the whole of its byte-exactness. */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "tune/template.h"

/* ---- arena ---- */

typedef struct arena_block {
    struct arena_block *next;
    size_t used, cap;
    max_align_t data[];
} arena_block;

struct arena {
    arena_block *head;
};

arena *arena_new(void)
{
    return calloc(1, sizeof(arena));
}

void *arena_alloc(arena *a, size_t n)
{
    n = (n + sizeof(max_align_t) - 1) / sizeof(max_align_t) * sizeof(max_align_t);
    arena_block *b = a->head;
    if (!b || b->cap - b->used < n) {
        size_t cap = n > 65536 ? n : 65536;
        b = malloc(sizeof *b + cap);
        if (!b) return NULL;
        b->next = a->head;
        b->used = 0;
        b->cap = cap;
        a->head = b;
    }
    void *p = (char *)b->data + b->used;
    b->used += n;
    memset(p, 0, n);
    return p;
}

void arena_free(arena *a)
{
    if (!a) return;
    for (arena_block *b = a->head, *next; b; b = next) {
        next = b->next;
        free(b);
    }
    free(a);
}

/* ---- lexer ---- */

typedef struct lexer {
    const char *src; /* normalised: every line break is \n, one trailing \n dropped */
    size_t n;
    size_t lpos; /* line/col are those of byte lpos */
    int line, col;
    const char *name;
    arena *a;
    token *toks;
    int ntoks, cap;
    tune_error *err;
    tune_status status;
} lexer;

static void locate(lexer *L, size_t pos, int *line, int *col)
{
    if (pos < L->lpos) L->lpos = 0, L->line = 1, L->col = 1;
    for (; L->lpos < pos; L->lpos++) {
        unsigned char ch = (unsigned char)L->src[L->lpos];
        if (ch == '\n') L->line++, L->col = 1;
        else if ((ch & 0xC0) != 0x80) L->col++;
    }
    *line = L->line;
    *col = L->col;
}

static int lex_fail(lexer *L, size_t pos, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int lex_fail(lexer *L, size_t pos, const char *fmt, ...)
{
    int line, col;
    locate(L, pos, &line, &col);
    va_list ap;
    va_start(ap, fmt);
    L->status = tune_error_vset(L->err, TUNE_ERR_INPUT, L->name, line, col, fmt, ap);
    va_end(ap);
    return -1;
}

static int lex_oom(lexer *L)
{
    L->status = tune_error_set(L->err, TUNE_ERR_RUN, L->name, 0, 0, "out of memory parsing the template");
    return -1;
}

static token *push(lexer *L, tk_type type, size_t pos, const char *s, size_t n)
{
    if (L->ntoks == L->cap) {
        int cap = L->cap ? 2 * L->cap : 256;
        token *t = realloc(L->toks, (size_t)cap * sizeof *t);
        if (!t) return lex_oom(L), NULL;
        L->toks = t;
        L->cap = cap;
    }
    token *t = &L->toks[L->ntoks++];
    memset(t, 0, sizeof *t);
    t->type = type;
    locate(L, pos, &t->line, &t->col);
    t->s = s;
    t->n = n;
    return t;
}

/* A NUL-terminated arena copy. */
static char *dup(lexer *L, const char *s, size_t n)
{
    char *d = arena_alloc(L->a, n + 1);
    if (!d) return lex_oom(L), NULL;
    memcpy(d, s, n);
    return d;
}

static int is_space_at(const char *s, size_t n, size_t p, size_t *next)
{
    size_t i = p;
    uint32_t cp = utf8_next(s, n, &i);
    if (!py_isspace(cp)) return 0;
    *next = i;
    return 1;
}

/* End of the whitespace run starting at p (regex \s*). */
static size_t skip_space(const char *s, size_t n, size_t p)
{
    size_t next;
    while (p < n && is_space_at(s, n, p, &next)) p = next;
    return p;
}

/* Python's str.rstrip() end of s[a, b). */
static size_t rstrip_end(const char *s, size_t a, size_t b)
{
    size_t len;
    const char *start = tune_text_strip(s + a, b - a, &len);
    return len ? (size_t)(start - s) + len : a;
}

/* Data before a tag, after the tag's whitespace control: `-` strips all
 * whitespace before it; otherwise lstrip_blocks drops the spaces between a
 * line start and a block or comment tag (not `{{`, not `{%+`). */
static int emit_data(lexer *L, size_t a, size_t b, char sign, int lstrip, int line_starting)
{
    if (sign == '-') {
        b = rstrip_end(L->src, a, b);
    } else if (sign != '+' && lstrip) {
        size_t l = b;
        while (l > a && L->src[l - 1] != '\n') l--;
        if ((l > a || line_starting) && l < b && skip_space(L->src, b, l) == b) b = l;
    }
    if (b > a && !push(L, TK_DATA, a, L->src + a, b - a)) return -1;
    return 0;
}

static int at(const lexer *L, size_t p, const char *s)
{
    size_t k = strlen(s);
    return p + k <= L->n && !memcmp(L->src + p, s, k);
}

/* The end of a block tag at p (`+%}`, `-%}` and following whitespace, or
 * `%}` and one newline): its end, or 0 when none is at p. */
static size_t block_end_at(const lexer *L, size_t p)
{
    if (at(L, p, "+%}")) return p + 3;
    if (at(L, p, "-%}")) return skip_space(L->src, L->n, p + 3);
    if (at(L, p, "%}")) return p + 2 + (p + 2 < L->n && L->src[p + 2] == '\n');
    return 0;
}

/* `{%[-+]?\s*WORD\s*` at p: the position after it, or 0. */
static size_t word_tag_at(const lexer *L, size_t p, const char *word)
{
    if (!at(L, p, "{%")) return 0;
    p += 2;
    if (p < L->n && (L->src[p] == '-' || L->src[p] == '+')) p++;
    p = skip_space(L->src, L->n, p);
    if (!at(L, p, word)) return 0;
    return skip_space(L->src, L->n, p + strlen(word));
}

static int is_digit(int c) { return c >= '0' && c <= '9'; }
static int is_name_start(int c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
static int is_name_char(int c) { return is_name_start(c) || is_digit(c); }

static int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* (\d+_)*\d+ from p: its end, p when none. */
static size_t digit_run(const lexer *L, size_t p)
{
    size_t q = p;
    while (q < L->n && is_digit(L->src[q])) {
        while (q < L->n && is_digit(L->src[q])) q++;
        if (q + 1 < L->n && L->src[q] == '_' && is_digit(L->src[q + 1])) q++;
    }
    return q;
}

/* Digits of a base with single underscores between them: (_?D)+ */
static size_t based_run(const lexer *L, size_t p, int base)
{
    size_t q = p;
    for (;;) {
        size_t d = q < L->n && L->src[q] == '_' ? q + 1 : q;
        int v = d < L->n ? hexval(L->src[d]) : -1;
        if (v < 0 || v >= base) break;
        q = d + 1;
    }
    return q;
}

/* Copies s[a, b) without underscores. */
static int number_text(lexer *L, size_t a, size_t b, char *buf, size_t size)
{
    size_t k = 0;
    for (size_t i = a; i < b; i++)
        if (L->src[i] != '_') {
            if (k + 1 >= size) return lex_fail(L, a, "number literal too long");
            buf[k++] = L->src[i];
        }
    buf[k] = 0;
    return 0;
}

/* A float (jinja2's float_re, tried first) or an integer at p. */
static int lex_number(lexer *L, size_t *pp)
{
    size_t p = *pp, e = digit_run(L, p), end = 0;
    char buf[128];
    if (e > p && (p == 0 || L->src[p - 1] != '.')) {
        size_t f = e;
        if (f + 1 < L->n && L->src[f] == '.' && digit_run(L, f + 1) > f + 1) f = digit_run(L, f + 1);
        size_t x = f;
        if (x < L->n && (L->src[x] == 'e' || L->src[x] == 'E')) {
            size_t s = x + 1 + (x + 1 < L->n && (L->src[x + 1] == '+' || L->src[x + 1] == '-'));
            if (digit_run(L, s) > s) end = digit_run(L, s);
        }
        if (!end && f > e) end = f;
    }
    if (end) {
        if (number_text(L, p, end, buf, sizeof buf)) return -1;
        token *t = push(L, TK_FLOAT, p, NULL, 0);
        if (!t) return -1;
        t->f = strtod(buf, NULL);
        *pp = end;
        return 0;
    }
    int base = 10;
    size_t digits = p;
    if (L->src[p] == '0' && p + 1 < L->n) {
        char k = (char)(L->src[p + 1] | 0x20);
        base = k == 'b' ? 2 : k == 'o' ? 8 : k == 'x' ? 16 : 10;
        if (base != 10 && based_run(L, p + 2, base) > p + 2) {
            digits = p + 2;
            end = based_run(L, p + 2, base);
        } else {
            base = 10;
        }
    }
    if (!end) {
        if (L->src[p] == '0') { /* 0(_?0)* */
            end = p + 1;
            while (end < L->n && (L->src[end] == '0' || (L->src[end] == '_' && end + 1 < L->n &&
                                                          L->src[end + 1] == '0')))
                end += L->src[end] == '_' ? 2 : 1;
        } else {
            end = based_run(L, p, 10);
        }
    }
    if (number_text(L, digits, end, buf, sizeof buf)) return -1;
    errno = 0;
    long long v = strtoll(buf, NULL, base);
    if (errno == ERANGE) return lex_fail(L, p, "integer literal too large");
    token *t = push(L, TK_INT, p, NULL, 0);
    if (!t) return -1;
    t->i = v;
    *pp = end;
    return 0;
}

/* A string literal at p: Python's escapes (jinja2 decodes with
 * unicode-escape); an unknown escape keeps its backslash. */
static int lex_string(lexer *L, size_t *pp)
{
    size_t p = *pp, q = p + 1;
    char quote = L->src[p];
    while (q < L->n && L->src[q] != quote) q += L->src[q] == '\\' ? 2 : 1;
    if (q >= L->n) return lex_fail(L, p, "unterminated string literal");
    char *out = arena_alloc(L->a, q - p + 1), *o = out;
    if (!out) return lex_oom(L);
    for (size_t i = p + 1; i < q;) {
        char ch = L->src[i++];
        if (ch != '\\') {
            *o++ = ch;
            continue;
        }
        char e = L->src[i++], simple = 0;
        switch (e) {
        case '\\': case '\'': case '"': simple = e; break;
        case 'a': simple = '\a'; break;
        case 'b': simple = '\b'; break;
        case 'f': simple = '\f'; break;
        case 'n': simple = '\n'; break;
        case 'r': simple = '\r'; break;
        case 't': simple = '\t'; break;
        case 'v': simple = '\v'; break;
        default: break;
        }
        if (simple) {
            *o++ = simple;
        } else if (e == '\n') {
            /* a backslash before a line break continues the line */
        } else if (e >= '0' && e <= '7') {
            uint32_t v = (uint32_t)(e - '0');
            for (int k = 0; k < 2 && i < q && L->src[i] >= '0' && L->src[i] <= '7'; k++)
                v = v * 8 + (uint32_t)(L->src[i++] - '0');
            o += utf8_put(v, o);
        } else if (e == 'x' || e == 'u' || e == 'U') {
            int digits = e == 'x' ? 2 : e == 'u' ? 4 : 8;
            uint32_t v = 0;
            for (int k = 0; k < digits; k++) {
                int h = i < q ? hexval(L->src[i]) : -1;
                if (h < 0) return lex_fail(L, i - 2 - (size_t)k, "truncated \\%c escape in a string", e);
                v = v * 16 + (uint32_t)h;
                i++;
            }
            if (v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
                return lex_fail(L, i - 2 - (size_t)digits, "escape \\%c gives an invalid code point", e);
            o += utf8_put(v, o);
        } else if (e == 'N') {
            return lex_fail(L, i - 2, "\\N{...} escapes are not supported");
        } else {
            *o++ = '\\';
            *o++ = e;
        }
    }
    if (!push(L, TK_STRING, p, out, (size_t)(o - out))) return -1;
    *pp = q + 1;
    return 0;
}

static const char *const two_char_ops[] = {"//", "**", "==", "!=", ">=", "<="};

/* The inside of a {{ }} or {% %} tag from p, up to and including its end
 * (found only where brackets balance). Returns the position after it. */
static int lex_tag(lexer *L, size_t *pp, int block, size_t tag_pos, int *line_starting)
{
    char stack[256];
    int depth = 0;
    size_t p = *pp;
    for (;;) {
        if (p >= L->n) return lex_fail(L, tag_pos, "'%s' is never closed", block ? "{%" : "{{");
        size_t end = 0;
        if (!depth) {
            if (block) end = block_end_at(L, p);
            else if (at(L, p, "-}}")) end = skip_space(L->src, L->n, p + 3);
            else if (at(L, p, "}}")) end = p + 2;
        }
        if (end) {
            if (!push(L, block ? TK_BLOCK_END : TK_VAR_END, p, NULL, 0)) return -1;
            *line_starting = L->src[end - 1] == '\n';
            *pp = end;
            return 0;
        }
        unsigned char ch = (unsigned char)L->src[p];
        size_t next;
        if (is_space_at(L->src, L->n, p, &next)) {
            p = next;
        } else if (is_digit(ch)) {
            if (lex_number(L, &p)) return -1;
        } else if (is_name_start(ch)) {
            size_t q = p;
            while (q < L->n && is_name_char(L->src[q])) q++;
            char *s = dup(L, L->src + p, q - p);
            if (!s || !push(L, TK_NAME, p, s, q - p)) return -1;
            p = q;
        } else if (ch == '\'' || ch == '"') {
            if (lex_string(L, &p)) return -1;
        } else {
            size_t k = 0;
            for (size_t i = 0; i < sizeof two_char_ops / sizeof *two_char_ops; i++)
                if (at(L, p, two_char_ops[i])) k = 2;
            if (!k && ch && strchr("+-/*%~[](){}<>=.:|,;", ch)) k = 1;
            if (!k) {
                size_t i = p;
                uint32_t cp = utf8_next(L->src, L->n, &i);
                char u[8] = {0};
                utf8_put(cp, u);
                return lex_fail(L, p, "unexpected character '%s' in a tag", u);
            }
            if (ch == '(' || ch == '[' || ch == '{') {
                if (depth == (int)sizeof stack) return lex_fail(L, p, "brackets nested too deeply");
                stack[depth++] = ch == '(' ? ')' : ch == '[' ? ']' : '}';
            } else if (ch == ')' || ch == ']' || ch == '}') {
                if (!depth) return lex_fail(L, p, "unexpected '%c'", ch);
                if (stack[--depth] != (char)ch)
                    return lex_fail(L, p, "unexpected '%c', expected '%c'", ch, stack[depth]);
            }
            char *s = dup(L, L->src + p, k);
            if (!s || !push(L, TK_OP, p, s, k)) return -1;
            p += k;
        }
    }
}

/* jinja2's newline handling: \r\n and \r become \n; one trailing newline goes. */
static char *normalise(arena *a, const char *s, size_t len, size_t *n)
{
    char *d = arena_alloc(a, len + 1);
    if (!d) return NULL;
    size_t k = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '\r') {
            d[k++] = '\n';
            if (i + 1 < len && s[i + 1] == '\n') i++;
        } else {
            d[k++] = s[i];
        }
    }
    if (k && d[k - 1] == '\n') k--;
    d[k] = 0;
    *n = k;
    return d;
}

static int lex_all(lexer *L)
{
    int line_starting = 1;
    size_t pos = 0;
    while (pos < L->n) {
        size_t t = pos;
        while (t + 1 < L->n && !(L->src[t] == '{' && strchr("{%#", L->src[t + 1]))) t++;
        if (t + 1 >= L->n) return emit_data(L, pos, L->n, 0, 0, 0);
        char kind = L->src[t + 1];
        char sign = t + 2 < L->n && (L->src[t + 2] == '-' || L->src[t + 2] == '+') ? L->src[t + 2] : 0;
        if (emit_data(L, pos, t, sign, kind != '{', line_starting)) return -1;
        size_t body = t + 2 + (sign != 0);
        size_t raw = kind == '%' ? word_tag_at(L, t, "raw") : 0;
        if (raw && (at(L, raw, "-%}") || at(L, raw, "%}"))) {
            /* {% raw %}: no newline trimming after it; the text up to
             * {% endraw %} is data, lstripped by the endraw tag's rules. */
            raw = L->src[raw] == '-' ? skip_space(L->src, L->n, raw + 3) : raw + 2;
            int raw_line_start = L->src[raw - 1] == '\n';
            size_t q = raw, after = 0;
            for (; q < L->n; q++) {
                size_t w = word_tag_at(L, q, "endraw");
                if (w && (after = block_end_at(L, w))) break;
            }
            if (!after) return lex_fail(L, t, "missing end of raw directive ({%% endraw %%})");
            char esign = L->src[q + 2] == '-' || L->src[q + 2] == '+' ? L->src[q + 2] : 0;
            if (emit_data(L, raw, q, esign, 1, raw_line_start)) return -1;
            line_starting = L->src[after - 1] == '\n';
            pos = after;
        } else if (kind == '#') {
            size_t q = body;
            while (q + 1 < L->n && !(L->src[q] == '#' && L->src[q + 1] == '}')) q++;
            if (q + 1 >= L->n) return lex_fail(L, t, "missing end of comment tag ('#}')");
            char esign = q > body && (L->src[q - 1] == '-' || L->src[q - 1] == '+') ? L->src[q - 1] : 0;
            size_t after = q + 2;
            if (esign == '-') after = skip_space(L->src, L->n, after);
            else if (!esign && after < L->n && L->src[after] == '\n') after++;
            line_starting = L->src[after - 1] == '\n';
            pos = after;
        } else {
            int block = kind == '%';
            if (!push(L, block ? TK_BLOCK_BEGIN : TK_VAR_BEGIN, t, NULL, 0)) return -1;
            pos = body;
            if (lex_tag(L, &pos, block, t, &line_starting)) return -1;
        }
    }
    return 0;
}

tune_status jinja_lex(const char *source, size_t len, const char *name, arena *a, token **toks, int *ntoks,
                      tune_error *err)
{
    lexer L = {.name = name, .a = a, .err = err, .line = 1, .col = 1};
    L.src = normalise(a, source, len, &L.n);
    if (!L.src) return lex_oom(&L), L.status;
    if (lex_all(&L) == 0 && push(&L, TK_EOF, L.n, NULL, 0)) {
        *toks = L.toks;
        *ntoks = L.ntoks;
        return TUNE_OK;
    }
    free(L.toks);
    return L.status;
}
