/* Python's values as a chat template sees them: reference counting,
 * equality and ordering, str() and repr(), json.dumps, and UTF-8 by code
 * point (Python strings index, measure and slice by code point). */
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "internal.h"

int jfail(rctx *c, tune_status code, const char *fmt, ...)
{
    if (c->failed) return -1;
    c->failed = 1;
    c->status = code;
    va_list ap;
    va_start(ap, fmt);
    tune_error_vset(c->err, code, c->t->name, c->at ? c->at->line : 0, c->at ? c->at->col : 0, fmt, ap);
    va_end(ap);
    return -1;
}

int joom(rctx *c)
{
    return jfail(c, TUNE_ERR_RUN, "out of memory rendering the template");
}

int jwork(rctx *c, size_t n)
{
    if (n <= c->lim.max_work - c->work) {
        c->work += n;
        return 0;
    }
    return jfail(c, TUNE_ERR_INPUT, "more than max_work (%zu) of strings, lists and dict lookups: the template grows "
                                    "a value by repeated concatenation or lookups in a long loop", c->lim.max_work);
}

int sbput(rctx *c, tune_strbuf *sb, const char *s, size_t n)
{
    if (sb->len + n > c->lim.max_output)
        return jfail(c, TUNE_ERR_INPUT, "text longer than max_output (%zu bytes)", c->lim.max_output);
    tune_strbuf_append(sb, s, n);
    return sb->oom ? joom(c) : 0;
}

int sbputs(rctx *c, tune_strbuf *sb, const char *s)
{
    return sbput(c, sb, s, strlen(s));
}

/* ---- UTF-8 ---- */

uint32_t utf8_next(const char *s, size_t n, size_t *i)
{
    utf8proc_int32_t cp;
    utf8proc_ssize_t k = utf8proc_iterate((const utf8proc_uint8_t *)s + *i, (utf8proc_ssize_t)(n - *i), &cp);
    if (k <= 0) { /* a stray byte counts as one code point of its own */
        cp = 0xDC00 | (unsigned char)s[*i];
        k = 1;
    }
    *i += (size_t)k;
    return (uint32_t)cp;
}

size_t utf8_put(uint32_t cp, char *out)
{
    if (cp >= 0xDC80 && cp <= 0xDCFF) { /* a stray byte, back as it was */
        out[0] = (char)(cp & 0xFF);
        return 1;
    }
    return (size_t)utf8proc_encode_char((utf8proc_int32_t)cp, (utf8proc_uint8_t *)out);
}

size_t utf8_count(const char *s, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n;) utf8_next(s, n, &i), k++;
    return k;
}

size_t utf8_offset(const jstr *s, size_t k)
{
    if (s->ascii) return k;
    size_t i = 0;
    while (k-- && i < s->len) utf8_next(s->s, s->len, &i);
    return i;
}

/* Python's str.isspace() for one code point. */
int py_isspace(uint32_t cp)
{
    return cp == ' ' || (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x1F) || cp == 0x85 || cp == 0xA0 ||
           cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
           cp == 0x205F || cp == 0x3000;
}

/* ---- reference counting ---- */

static jobj *heap(jv v)
{
    switch (v.t) {
    case JV_UNDEF:
    case JV_STR:
    case JV_LIST:
    case JV_DICT:
    case JV_NS:
    case JV_FUNC:
    case JV_LOOP: return v.u.o;
    default: return NULL;
    }
}

jv jv_ref(jv v)
{
    jobj *o = heap(v);
    if (o && o->rc >= 0) o->rc++;
    return v;
}

void dict_clear(jdict *d)
{
    for (size_t i = 0; i < d->n; i++) {
        jv_unref(d->k[i]);
        jv_unref(d->v[i]);
    }
    d->n = 0;
}

void frame_clear(frame *f)
{
    for (size_t i = 0; i < f->n; i++) jv_unref(f->vals[i]);
    f->n = 0;
}

void frame_unref(frame *f)
{
    while (f && --f->rc == 0) {
        frame *parent = f->parent;
        frame_clear(f);
        free(f->names);
        free(f->vals);
        free(f);
        f = parent;
    }
}

void jv_unref(jv v)
{
    jobj *o = heap(v);
    if (!o || o->rc < 0 || --o->rc > 0) return;
    if (v.t == JV_LIST) {
        jlist *l = (jlist *)o;
        for (size_t i = 0; i < l->n; i++) jv_unref(l->v[i]);
        free(l->v);
    } else if (v.t == JV_DICT || v.t == JV_NS) {
        jdict *d = (jdict *)o;
        dict_clear(d);
        free(d->k);
        free(d->v);
    } else if (v.t == JV_FUNC) {
        jfunc *f = (jfunc *)o;
        jv_unref(f->self);
        frame_unref(f->closure);
    } else if (v.t == JV_LOOP) {
        jv_unref((jv){.t = JV_LIST, .u.o = ((jloop *)o)->items});
    }
    free(o);
}

/* ---- constructors ---- */

int jv_str(rctx *c, const char *s, size_t n, jv *out)
{
    if (n > c->lim.max_output)
        return jfail(c, TUNE_ERR_INPUT, "text longer than max_output (%zu bytes)", c->lim.max_output);
    if (jwork(c, n)) return -1;
    jstr *str = malloc(sizeof *str + n + 1);
    if (!str) return joom(c);
    str->h.rc = 1;
    str->markup = 0;
    str->ascii = 1;
    str->len = n;
    if (n) memcpy(str->s, s, n);
    str->s[n] = 0;
    for (size_t i = 0; i < n && str->ascii; i++)
        if ((unsigned char)s[i] >= 0x80) str->ascii = 0;
    *out = (jv){.t = JV_STR, .u.o = str};
    return 0;
}

int jv_strz(rctx *c, const char *s, jv *out)
{
    return jv_str(c, s, strlen(s), out);
}

int jv_str_buf(rctx *c, tune_strbuf *sb, jv *out)
{
    int rc = sb->oom ? joom(c) : jv_str(c, sb->data ? sb->data : "", sb->len, out);
    tune_strbuf_free(sb);
    return rc;
}

int jv_undef(rctx *c, jv *out, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    jv m = jv_none();
    if (jv_strz(c, msg, &m)) return -1;
    *out = (jv){.t = JV_UNDEF, .u.o = m.u.o};
    return 0;
}

int jv_list(rctx *c, size_t cap, jv *out)
{
    jlist *l = calloc(1, sizeof *l);
    if (!l || (cap && !(l->v = malloc(cap * sizeof *l->v)))) {
        free(l);
        return joom(c);
    }
    l->h.rc = 1;
    l->depth = 1;
    l->cap = cap;
    *out = (jv){.t = JV_LIST, .u.o = l};
    return 0;
}

int jv_dict(rctx *c, jv *out)
{
    jdict *d = calloc(1, sizeof *d);
    if (!d) return joom(c);
    d->h.rc = 1;
    d->depth = 1;
    *out = (jv){.t = JV_DICT, .u.o = d};
    return 0;
}

static int depth_of(jv v)
{
    return v.t == JV_LIST ? L(v)->depth : v.t == JV_DICT ? D(v)->depth : 0;
}

/* A container's depth after holding v, bounded. */
static int hold(rctx *c, int *depth, jv v)
{
    int d = depth_of(v) + 1;
    if (d > JV_MAX_DEPTH) return jfail(c, TUNE_ERR_INPUT, "values nested deeper than %d levels", JV_MAX_DEPTH);
    if (d > *depth) *depth = d;
    return 0;
}

int list_push(rctx *c, jlist *l, jv v)
{
    if (l->n >= (size_t)c->lim.max_iterations) {
        jv_unref(v);
        return jfail(c, TUNE_ERR_INPUT, "a list longer than max_iterations (%ld items)", c->lim.max_iterations);
    }
    if (hold(c, &l->depth, v) || jwork(c, JV_WORK)) return jv_unref(v), -1;
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 4;
        jv *nv = realloc(l->v, cap * sizeof *nv);
        if (!nv) return jv_unref(v), joom(c);
        l->v = nv;
        l->cap = cap;
    }
    l->v[l->n++] = v;
    return 0;
}

jv *dict_get(const jdict *d, jv key)
{
    for (size_t i = 0; i < d->n; i++)
        if (jv_eq(d->k[i], key)) return &d->v[i];
    return NULL;
}

jv *dict_getz(const jdict *d, const char *key)
{
    size_t n = strlen(key);
    for (size_t i = 0; i < d->n; i++)
        if (d->k[i].t == JV_STR && S(d->k[i])->len == n && !memcmp(S(d->k[i])->s, key, n)) return &d->v[i];
    return NULL;
}

int dict_set(rctx *c, jdict *d, jv k, jv v)
{
    if (hold(c, &d->depth, v) || jwork(c, d->n * JV_WORK)) return jv_unref(k), jv_unref(v), -1;
    jv *slot = dict_get(d, k);
    if (slot) {
        jv_unref(k);
        jv_unref(*slot);
        *slot = v;
        return 0;
    }
    if (d->n >= (size_t)c->lim.max_iterations) {
        jv_unref(k), jv_unref(v);
        return jfail(c, TUNE_ERR_INPUT, "a dict larger than max_iterations (%ld items)", c->lim.max_iterations);
    }
    if (d->n == d->cap) {
        size_t cap = d->cap ? 2 * d->cap : 4;
        jv *nk = realloc(d->k, cap * sizeof *nk);
        if (nk) d->k = nk;
        jv *nv = nk ? realloc(d->v, cap * sizeof *nv) : NULL;
        if (!nv) return jv_unref(k), jv_unref(v), joom(c);
        d->v = nv;
        d->cap = cap;
    }
    d->k[d->n] = k;
    d->v[d->n++] = v;
    return 0;
}

static int from_json(rctx *c, const cJSON *j, int depth, jv *out)
{
    if (depth > JV_MAX_DEPTH)
        return jfail(c, TUNE_ERR_INPUT, "the context nests deeper than %d levels", JV_MAX_DEPTH);
    if (cJSON_IsObject(j) || cJSON_IsArray(j)) {
        int obj = cJSON_IsObject(j);
        if (obj ? jv_dict(c, out) : jv_list(c, 0, out)) return -1;
        const cJSON *e;
        cJSON_ArrayForEach(e, j)
        {
            jv k = jv_none(), v;
            if (obj && jv_strz(c, e->string ? e->string : "", &k)) return jv_unref(*out), -1;
            if (from_json(c, e, depth + 1, &v)) return jv_unref(k), jv_unref(*out), -1;
            if (obj ? dict_set(c, D(*out), k, v) : list_push(c, L(*out), v)) return jv_unref(*out), -1;
        }
        return 0;
    }
    if (cJSON_IsString(j)) return jv_strz(c, j->valuestring, out);
    if (cJSON_IsNumber(j)) {
        double d = j->valuedouble;
        *out = d == floor(d) && fabs(d) < 9007199254740992.0 ? jv_int((int64_t)d) : jv_float(d);
        return 0;
    }
    *out = cJSON_IsTrue(j) ? jv_bool(1) : cJSON_IsFalse(j) ? jv_bool(0) : jv_none();
    return 0;
}

/* JSON numbers without a fraction are ints (cJSON keeps only the double:
 * integral and exactly representable means int). */
int jv_from_json(rctx *c, const cJSON *j, jv *out)
{
    int rc = from_json(c, j, 0, out);
    if (rc) *out = jv_none(); /* from_json freed what it had built */
    return rc;
}

/* ---- Python semantics ---- */

int jv_truthy(jv v)
{
    switch (v.t) {
    case JV_UNDEF:
    case JV_NONE: return 0;
    case JV_BOOL:
    case JV_INT: return v.u.i != 0;
    case JV_FLOAT: return v.u.f != 0.0;
    case JV_STR: return S(v)->len != 0;
    case JV_LIST: return L(v)->n != 0 || L(v)->kind == SEQ_GENERATOR;
    case JV_DICT: return D(v)->n != 0;
    default: return 1;
    }
}

const char *jv_type_name(jv v)
{
    switch (v.t) {
    case JV_UNDEF: return "Undefined";
    case JV_NONE: return "NoneType";
    case JV_BOOL: return "bool";
    case JV_INT: return "int";
    case JV_FLOAT: return "float";
    case JV_STR: return "str";
    case JV_LIST: return L(v)->kind == SEQ_TUPLE ? "tuple" : L(v)->kind == SEQ_GENERATOR ? "generator" : "list";
    case JV_DICT: return "dict";
    case JV_NS: return "Namespace";
    case JV_FUNC: return ((jfunc *)v.u.o)->kind == F_MACRO ? "Macro" : "function";
    case JV_LOOP: return "LoopContext";
    }
    return "object";
}

static double num(jv v)
{
    return v.t == JV_FLOAT ? v.u.f : (double)v.u.i;
}

int jv_eq(jv a, jv b)
{
    if (jv_is_num(a) && jv_is_num(b)) {
        if (a.t != JV_FLOAT && b.t != JV_FLOAT) return a.u.i == b.u.i;
        return num(a) == num(b);
    }
    if (a.t != b.t) return 0;
    switch (a.t) {
    case JV_UNDEF:
    case JV_NONE: return 1;
    case JV_STR: return S(a)->len == S(b)->len && !memcmp(S(a)->s, S(b)->s, S(a)->len);
    case JV_LIST:
        if (L(a)->kind != L(b)->kind || L(a)->n != L(b)->n) return 0;
        if (L(a)->kind == SEQ_GENERATOR) return a.u.o == b.u.o;
        for (size_t i = 0; i < L(a)->n; i++)
            if (!jv_eq(L(a)->v[i], L(b)->v[i])) return 0;
        return 1;
    case JV_DICT:
        if (D(a)->n != D(b)->n) return 0;
        for (size_t i = 0; i < D(a)->n; i++) {
            jv *w = dict_get(D(b), D(a)->k[i]);
            if (!w || !jv_eq(D(a)->v[i], *w)) return 0;
        }
        return 1;
    default: return a.u.o == b.u.o;
    }
}

int jv_cmp(rctx *c, jv a, jv b, int *result)
{
    if (jv_is_num(a) && jv_is_num(b)) {
        if (a.t != JV_FLOAT && b.t != JV_FLOAT) *result = (a.u.i > b.u.i) - (a.u.i < b.u.i);
        else *result = (num(a) > num(b)) - (num(a) < num(b));
        return 0;
    }
    if (a.t == JV_STR && b.t == JV_STR) { /* UTF-8 byte order is code point order */
        size_t n = S(a)->len < S(b)->len ? S(a)->len : S(b)->len;
        int r = memcmp(S(a)->s, S(b)->s, n);
        *result = r ? (r > 0) - (r < 0) : (S(a)->len > S(b)->len) - (S(a)->len < S(b)->len);
        return 0;
    }
    if (a.t == JV_LIST && b.t == JV_LIST && L(a)->kind == L(b)->kind && L(a)->kind != SEQ_GENERATOR) {
        for (size_t i = 0; i < L(a)->n && i < L(b)->n; i++)
            if (!jv_eq(L(a)->v[i], L(b)->v[i])) return jv_cmp(c, L(a)->v[i], L(b)->v[i], result);
        *result = (L(a)->n > L(b)->n) - (L(a)->n < L(b)->n);
        return 0;
    }
    if (jv_check_defined(c, a) || jv_check_defined(c, b)) return -1;
    return jfail(c, TUNE_ERR_INPUT, "'<' not supported between instances of '%s' and '%s'", jv_type_name(a),
                 jv_type_name(b));
}

int jv_check_defined(rctx *c, jv v)
{
    if (v.t != JV_UNDEF) return 0;
    return jfail(c, TUNE_ERR_INPUT, "%s", v.u.o ? S(v)->s : "undefined value");
}

int jv_len(rctx *c, jv v, int64_t *n)
{
    switch (v.t) {
    case JV_UNDEF: *n = 0; return 0;
    case JV_STR: *n = (int64_t)(S(v)->ascii ? S(v)->len : utf8_count(S(v)->s, S(v)->len)); return 0;
    case JV_LIST:
        if (L(v)->kind == SEQ_GENERATOR) break;
        *n = (int64_t)L(v)->n;
        return 0;
    case JV_DICT: *n = (int64_t)D(v)->n; return 0;
    default: break;
    }
    return jfail(c, TUNE_ERR_INPUT, "object of type '%s' has no len()", jv_type_name(v));
}

int jv_iter(rctx *c, jv v, jv *list)
{
    if (v.t == JV_LIST) {
        *list = jv_ref(v);
        return 0;
    }
    if (v.t != JV_UNDEF && v.t != JV_DICT && v.t != JV_STR)
        return jfail(c, TUNE_ERR_INPUT, "'%s' object is not iterable", jv_type_name(v));
    if (jv_list(c, 0, list)) return -1;
    if (v.t == JV_DICT)
        for (size_t i = 0; i < D(v)->n; i++)
            if (list_push(c, L(*list), jv_ref(D(v)->k[i]))) return jv_unref(*list), -1;
    if (v.t == JV_STR)
        for (size_t i = 0; i < S(v)->len;) {
            size_t from = i;
            jv ch;
            utf8_next(S(v)->s, S(v)->len, &i);
            if (jv_str(c, S(v)->s + from, i - from, &ch) || list_push(c, L(*list), ch)) return jv_unref(*list), -1;
        }
    return 0;
}

/* ---- str(), repr() ---- */

/* Python's float repr: the shortest digits that read back as f; plain
 * notation for exponents -5 < e < 16, else d.ddde+XX. */
static void fmt_float(char *buf, size_t size, double f)
{
    if (isnan(f)) {
        snprintf(buf, size, "nan");
        return;
    }
    if (isinf(f)) {
        snprintf(buf, size, f < 0 ? "-inf" : "inf");
        return;
    }
    char e[40];
    for (int p = 1; p <= 17; p++) {
        snprintf(e, sizeof e, "%.*e", p - 1, f);
        if (strtod(e, NULL) == f) break;
    }
    char digits[24];
    int nd = 0, neg = e[0] == '-';
    const char *p = e + neg;
    for (; *p && *p != 'e'; p++)
        if (*p != '.') digits[nd++] = *p;
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    digits[nd] = 0;
    int exp = atoi(p + 1);
    size_t k = 0;
#define PUT(ch) (k + 1 < size ? (void)(buf[k++] = (ch)) : (void)0)
    if (neg) PUT('-');
    if (exp < -4 || exp >= 16) {
        PUT(digits[0]);
        if (nd > 1) {
            PUT('.');
            for (int i = 1; i < nd; i++) PUT(digits[i]);
        }
        snprintf(buf + k, size - k, "e%c%02d", exp < 0 ? '-' : '+', abs(exp));
        return;
    }
    if (exp < 0) {
        PUT('0');
        PUT('.');
        for (int i = 0; i < -exp - 1; i++) PUT('0');
        for (int i = 0; i < nd; i++) PUT(digits[i]);
    } else {
        for (int i = 0; i <= exp; i++) PUT(i < nd ? digits[i] : '0');
        PUT('.');
        if (nd <= exp + 1) PUT('0');
        for (int i = exp + 1; i < nd; i++) PUT(digits[i]);
    }
#undef PUT
    buf[k] = 0;
}

static int repr_str(rctx *c, tune_strbuf *sb, const jstr *s)
{
    char q = memchr(s->s, '\'', s->len) && !memchr(s->s, '"', s->len) ? '"' : '\'';
    if (sbput(c, sb, &q, 1)) return -1;
    for (size_t i = 0; i < s->len;) {
        size_t from = i;
        uint32_t cp = utf8_next(s->s, s->len, &i);
        char esc[16];
        const char *out = esc;
        size_t n;
        if (cp == (uint32_t)q || cp == '\\') n = (size_t)snprintf(esc, sizeof esc, "\\%c", (char)cp);
        else if (cp == '\t') out = "\\t", n = 2;
        else if (cp == '\n') out = "\\n", n = 2;
        else if (cp == '\r') out = "\\r", n = 2;
        else if (cp < 0x20 || cp == 0x7F) n = (size_t)snprintf(esc, sizeof esc, "\\x%02x", cp);
        else if (cp < 0x7F) out = s->s + from, n = 1;
        else {
            utf8proc_category_t cat = utf8proc_category((utf8proc_int32_t)cp);
            int printable = !(cat == UTF8PROC_CATEGORY_CC || cat == UTF8PROC_CATEGORY_CF ||
                              cat == UTF8PROC_CATEGORY_CS || cat == UTF8PROC_CATEGORY_CO ||
                              cat == UTF8PROC_CATEGORY_CN || cat == UTF8PROC_CATEGORY_ZL ||
                              cat == UTF8PROC_CATEGORY_ZP || cat == UTF8PROC_CATEGORY_ZS);
            if (printable && !(cp >= 0xDC80 && cp <= 0xDCFF)) out = s->s + from, n = i - from;
            else if (cp <= 0xFF) n = (size_t)snprintf(esc, sizeof esc, "\\x%02x", cp);
            else if (cp <= 0xFFFF) n = (size_t)snprintf(esc, sizeof esc, "\\u%04x", cp);
            else n = (size_t)snprintf(esc, sizeof esc, "\\U%08x", cp);
        }
        if (sbput(c, sb, out, n)) return -1;
    }
    return sbput(c, sb, &q, 1);
}

static int print(rctx *c, tune_strbuf *sb, jv v, int repr, int depth)
{
    char buf[64];
    if (depth > 2 * JV_MAX_DEPTH)
        return jfail(c, TUNE_ERR_INPUT, "values nested deeper than %d levels", 2 * JV_MAX_DEPTH);
    switch (v.t) {
    case JV_UNDEF: return repr ? sbputs(c, sb, "Undefined") : 0;
    case JV_NONE: return sbputs(c, sb, "None");
    case JV_BOOL: return sbputs(c, sb, v.u.i ? "True" : "False");
    case JV_INT: snprintf(buf, sizeof buf, "%lld", (long long)v.u.i); return sbputs(c, sb, buf);
    case JV_FLOAT: fmt_float(buf, sizeof buf, v.u.f); return sbputs(c, sb, buf);
    case JV_STR:
        if (!repr) return sbput(c, sb, S(v)->s, S(v)->len);
        if (!S(v)->markup) return repr_str(c, sb, S(v));
        return sbputs(c, sb, "Markup(") || repr_str(c, sb, S(v)) || sbputs(c, sb, ")") ? -1 : 0;
    case JV_LIST: {
        const jlist *l = L(v);
        if (l->kind == SEQ_GENERATOR) return sbputs(c, sb, "<generator object>");
        if (sbputs(c, sb, l->kind == SEQ_TUPLE ? "(" : "[")) return -1;
        for (size_t i = 0; i < l->n; i++)
            if ((i && sbputs(c, sb, ", ")) || print(c, sb, l->v[i], 1, depth + 1)) return -1;
        return sbputs(c, sb, l->kind == SEQ_LIST ? "]" : l->n == 1 ? ",)" : ")");
    }
    case JV_NS:
    case JV_DICT: {
        const jdict *d = D(v);
        if (sbputs(c, sb, v.t == JV_NS ? "<Namespace {" : "{")) return -1;
        for (size_t i = 0; i < d->n; i++)
            if ((i && sbputs(c, sb, ", ")) || print(c, sb, d->k[i], 1, depth + 1) || sbputs(c, sb, ": ") ||
                print(c, sb, d->v[i], 1, depth + 1))
                return -1;
        return sbputs(c, sb, v.t == JV_NS ? "}>" : "}");
    }
    case JV_FUNC:
        snprintf(buf, sizeof buf, "<%s %s>", jv_type_name(v), ((jfunc *)v.u.o)->name);
        return sbputs(c, sb, buf);
    case JV_LOOP: {
        const jloop *lp = v.u.o;
        snprintf(buf, sizeof buf, "<LoopContext %zu/%zu>", lp->i + 1, lp->items->n);
        return sbputs(c, sb, buf);
    }
    }
    return 0;
}

int jv_print(rctx *c, tune_strbuf *sb, jv v) { return print(c, sb, v, 0, 0); }
int jv_repr(rctx *c, tune_strbuf *sb, jv v) { return print(c, sb, v, 1, 0); }

int jv_to_str(rctx *c, jv v, jv *out)
{
    if (v.t == JV_STR) {
        *out = jv_ref(v);
        return 0;
    }
    tune_strbuf sb = {0};
    if (jv_print(c, &sb, v)) return tune_strbuf_free(&sb), -1;
    return jv_str_buf(c, &sb, out);
}

/* ---- json.dumps ---- */

static int json_str(rctx *c, tune_strbuf *sb, const char *s, size_t len, int ensure_ascii)
{
    if (sbput(c, sb, "\"", 1)) return -1;
    for (size_t i = 0; i < len;) {
        size_t from = i;
        uint32_t cp = utf8_next(s, len, &i);
        char esc[16];
        const char *out = esc;
        size_t n = 2;
        switch (cp) {
        case '"': out = "\\\""; break;
        case '\\': out = "\\\\"; break;
        case '\n': out = "\\n"; break;
        case '\r': out = "\\r"; break;
        case '\t': out = "\\t"; break;
        case '\b': out = "\\b"; break;
        case '\f': out = "\\f"; break;
        default:
            if (cp < 0x20 || (ensure_ascii && cp >= 0x7F && cp <= 0xFFFF)) {
                n = (size_t)snprintf(esc, sizeof esc, "\\u%04x", cp);
            } else if (ensure_ascii && cp > 0xFFFF) {
                uint32_t v = cp - 0x10000;
                n = (size_t)snprintf(esc, sizeof esc, "\\u%04x\\u%04x", 0xD800 + (v >> 10), 0xDC00 + (v & 0x3FF));
            } else {
                out = s + from;
                n = i - from;
            }
        }
        if (sbput(c, sb, out, n)) return -1;
    }
    return sbput(c, sb, "\"", 1);
}

/* A dict key as json.dumps writes it: str as is, numbers, bools and None converted. */
static int json_key(rctx *c, tune_strbuf *sb, jv k, int ensure_ascii)
{
    char buf[64];
    switch (k.t) {
    case JV_STR: return json_str(c, sb, S(k)->s, S(k)->len, ensure_ascii);
    case JV_NONE: return json_str(c, sb, "null", 4, 0);
    case JV_BOOL: return json_str(c, sb, k.u.i ? "true" : "false", k.u.i ? 4 : 5, 0);
    case JV_INT: snprintf(buf, sizeof buf, "%lld", (long long)k.u.i); break;
    case JV_FLOAT: fmt_float(buf, sizeof buf, k.u.f); break;
    default:
        return jfail(c, TUNE_ERR_INPUT, "keys must be str, int, float, bool or None, not %s", jv_type_name(k));
    }
    return json_str(c, sb, buf, strlen(buf), 0);
}

static int newline_indent(rctx *c, tune_strbuf *sb, const char *indent, int level)
{
    if (sbput(c, sb, "\n", 1)) return -1;
    for (int i = 0; i < level; i++)
        if (sbputs(c, sb, indent)) return -1;
    return 0;
}

typedef struct json_opts {
    int ensure_ascii, sort_keys;
    const char *indent, *item_sep, *key_sep;
} json_opts;

static int json_value(rctx *c, tune_strbuf *sb, jv v, const json_opts *o, int level);

static int merge_sort(rctx *c, sort_ent *e, sort_ent *tmp, size_t n, int reverse)
{
    if (n < 2) return 0;
    size_t h = n / 2;
    if (merge_sort(c, e, tmp, h, reverse) || merge_sort(c, e + h, tmp, n - h, reverse)) return -1;
    size_t i = 0, j = h, k = 0;
    while (i < h && j < n) {
        int r;
        if (jv_cmp(c, e[i].key, e[j].key, &r)) return -1;
        tmp[k++] = (reverse ? r >= 0 : r <= 0) ? e[i++] : e[j++];
    }
    while (i < h) tmp[k++] = e[i++];
    while (j < n) tmp[k++] = e[j++];
    memcpy(e, tmp, n * sizeof *e);
    return 0;
}

int jv_sort(rctx *c, sort_ent *e, size_t n, int reverse)
{
    sort_ent *tmp = malloc((n ? n : 1) * sizeof *tmp);
    if (!tmp) return joom(c);
    int rc = merge_sort(c, e, tmp, n, reverse);
    free(tmp);
    return rc;
}

static int json_container(rctx *c, tune_strbuf *sb, jv v, const json_opts *o, int level)
{
    int is_list = v.t == JV_LIST;
    size_t n = is_list ? L(v)->n : D(v)->n;
    if (!n) return sbputs(c, sb, is_list ? "[]" : "{}");
    sort_ent *idx = NULL; /* sort_keys: the entries by key, item the index */
    if (!is_list && o->sort_keys) {
        if (!(idx = malloc(n * sizeof *idx))) return joom(c);
        for (size_t i = 0; i < n; i++) idx[i] = (sort_ent){D(v)->k[i], jv_int((int64_t)i)};
        if (jv_sort(c, idx, n, 0)) return free(idx), -1;
    }
    int rc = sbputs(c, sb, is_list ? "[" : "{");
    if (!rc && o->indent) rc = newline_indent(c, sb, o->indent, level + 1);
    for (size_t i = 0; i < n && !rc; i++) {
        if (i) {
            rc = sbputs(c, sb, o->item_sep);
            if (!rc && o->indent) rc = newline_indent(c, sb, o->indent, level + 1);
        }
        size_t k = idx ? (size_t)idx[i].item.u.i : i;
        if (!rc && !is_list) {
            rc = json_key(c, sb, D(v)->k[k], o->ensure_ascii);
            if (!rc) rc = sbputs(c, sb, o->key_sep);
        }
        if (!rc) rc = json_value(c, sb, is_list ? L(v)->v[k] : D(v)->v[k], o, level + 1);
    }
    free(idx);
    if (!rc && o->indent) rc = newline_indent(c, sb, o->indent, level);
    return rc ? rc : sbputs(c, sb, is_list ? "]" : "}");
}

static int json_value(rctx *c, tune_strbuf *sb, jv v, const json_opts *o, int level)
{
    char buf[64];
    switch (v.t) {
    case JV_NONE: return sbputs(c, sb, "null");
    case JV_BOOL: return sbputs(c, sb, v.u.i ? "true" : "false");
    case JV_INT: snprintf(buf, sizeof buf, "%lld", (long long)v.u.i); return sbputs(c, sb, buf);
    case JV_FLOAT:
        if (isnan(v.u.f)) return sbputs(c, sb, "NaN");
        if (isinf(v.u.f)) return sbputs(c, sb, v.u.f < 0 ? "-Infinity" : "Infinity");
        fmt_float(buf, sizeof buf, v.u.f);
        return sbputs(c, sb, buf);
    case JV_STR: return json_str(c, sb, S(v)->s, S(v)->len, o->ensure_ascii);
    case JV_LIST:
        if (L(v)->kind == SEQ_GENERATOR) break;
        return json_container(c, sb, v, o, level);
    case JV_DICT: return json_container(c, sb, v, o, level);
    default: break;
    }
    return jfail(c, TUNE_ERR_INPUT, "Object of type %s is not JSON serializable",
                 v.t == JV_NS ? "TemplateNamespace" : jv_type_name(v));
}

int jv_json(rctx *c, tune_strbuf *sb, jv v, int ensure_ascii, const char *indent, const char *item_sep,
            const char *key_sep, int sort_keys)
{
    json_opts o = {ensure_ascii, sort_keys, indent, item_sep, key_sep};
    return json_value(c, sb, v, &o, 0);
}
