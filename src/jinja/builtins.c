/* jinja2's filters and tests, the str / dict methods templates call, and
 * Transformers' globals (range, dict, namespace, raise_exception,
 * strftime_now), each with the Python behaviour it stands for. */
#include <ctype.h>
#include <locale.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <utf8proc.h>

#include "internal.h"
#include "tune/template.h"

/* An argument not given: an Undefined without a message, which evaluation
 * never makes (its Undefineds say what is missing). */
#define MISSING ((jv){.t = JV_UNDEF, .u.o = NULL})

static int arg_given(jv v) { return !(v.t == JV_UNDEF && !v.u.o); }

/* Binds a builtin's arguments to its parameters, named in params (space
 * separated; a trailing ! marks a required one). slot[i] is borrowed, and
 * MISSING when an optional parameter is not given. */
static int bind_args(rctx *c, const char *fname, const jargs *a, const char *params, jv *slot)
{
    char buf[160], *save = NULL, *names[12];
    int n = 0, required[12];
    snprintf(buf, sizeof buf, "%s", params);
    for (char *p = strtok_r(buf, " ", &save); p && n < 12; p = strtok_r(NULL, " ", &save)) {
        size_t len = strlen(p);
        required[n] = p[len - 1] == '!';
        if (required[n]) p[len - 1] = 0;
        names[n++] = p;
    }
    for (int i = 0; i < n; i++) slot[i] = MISSING;
    if (a->npos > n)
        return jfail(c, TUNE_ERR_INPUT, "%s() takes at most %d argument%s (%d given)", fname, n, n == 1 ? "" : "s",
                     a->npos);
    for (int i = 0; i < a->npos; i++) slot[i] = a->pos[i];
    for (int k = 0; k < a->nkw; k++) {
        int i = 0;
        while (i < n && strcmp(names[i], a->kwname[k])) i++;
        if (i == n)
            return jfail(c, TUNE_ERR_INPUT, "%s() got an unexpected keyword argument '%s'", fname, a->kwname[k]);
        if (arg_given(slot[i]))
            return jfail(c, TUNE_ERR_INPUT, "%s() got multiple values for argument '%s'", fname, a->kwname[k]);
        slot[i] = a->kwval[k];
    }
    for (int i = 0; i < n; i++)
        if (required[i] && !arg_given(slot[i]))
            return jfail(c, TUNE_ERR_INPUT, "%s() missing required argument '%s'", fname, names[i]);
    return 0;
}

static jv or_default(jv v, jv def) { return arg_given(v) ? v : def; }

static int want_int(rctx *c, jv v, const char *what, int64_t *out)
{
    if (v.t == JV_INT || v.t == JV_BOOL) return *out = v.u.i, 0;
    if (jv_check_defined(c, v)) return -1;
    return jfail(c, TUNE_ERR_INPUT, "%s must be an integer, not '%s'", what, jv_type_name(v));
}

static int want_str(rctx *c, jv v, const char *what)
{
    if (v.t == JV_STR) return 0;
    if (jv_check_defined(c, v)) return -1;
    return jfail(c, TUNE_ERR_INPUT, "%s must be a str, not '%s'", what, jv_type_name(v));
}

static int str_from(rctx *c, tune_strbuf *sb, int markup, jv *out)
{
    if (jv_str_buf(c, sb, out)) return -1;
    S(*out)->markup = (unsigned char)markup;
    return 0;
}

/* ---- text ---- */

typedef enum { CASE_UPPER, CASE_LOWER, CASE_TITLE, CASE_CAPITALIZE, CASE_JTITLE } case_mode;

static int is_cased(uint32_t cp)
{
    utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)cp);
    return k == UTF8PROC_CATEGORY_LU || k == UTF8PROC_CATEGORY_LL || k == UTF8PROC_CATEGORY_LT;
}

/* Python's upper/lower/title/capitalize (simple case mappings, plus the
 * common full ones: ß upper-cases to SS, İ lower-cases to i̇), and jinja2's
 * |title, which capitalises after - ( { [ < and whitespace. */
static int case_map(rctx *c, jv in, case_mode mode, jv *out)
{
    jv s;
    if (jv_to_str(c, in, &s)) return -1;
    const jstr *str = S(s);
    tune_strbuf sb = {0};
    int rc = 0, prev_cased = 0, word_start = 1;
    for (size_t i = 0; i < str->len && !rc;) {
        uint32_t cp = utf8_next(str->s, str->len, &i), m;
        int upper = mode == CASE_UPPER ? 1 : mode == CASE_LOWER ? 0 : mode == CASE_TITLE ? !prev_cased : word_start;
        utf8proc_int32_t u32 = (utf8proc_int32_t)cp; /* title case for str.title and capitalize */
        m = (uint32_t)(!upper                                                 ? utf8proc_tolower(u32)
                       : mode == CASE_TITLE || mode == CASE_CAPITALIZE ? utf8proc_totitle(u32)
                                                                          : utf8proc_toupper(u32));
        prev_cased = is_cased(cp);
        word_start = mode == CASE_JTITLE ? (py_isspace(cp) || (cp < 0x80 && strchr("-({[<", (int)cp))) : 0;
        char u[8];
        if (upper && cp == 0xDF && mode == CASE_UPPER) rc = sbputs(c, &sb, "SS");
        else if (!upper && cp == 0x130) rc = sbputs(c, &sb, "i\xcc\x87");
        else rc = sbput(c, &sb, u, utf8_put(m, u));
    }
    int markup = str->markup && (mode == CASE_UPPER || mode == CASE_LOWER);
    jv_unref(s);
    if (rc) return tune_strbuf_free(&sb), -1;
    return str_from(c, &sb, markup, out);
}

static int in_chars(uint32_t cp, const jv chars)
{
    if (chars.t != JV_STR) return py_isspace(cp);
    for (size_t i = 0; i < S(chars)->len;)
        if (utf8_next(S(chars)->s, S(chars)->len, &i) == cp) return 1;
    return 0;
}

/* str.strip / lstrip / rstrip (which: 1 left, 2 right, 3 both); chars None: whitespace. */
static int strip(rctx *c, jv s, jv chars, int which, jv *out)
{
    if (chars.t != JV_NONE && want_str(c, chars, "strip chars")) return -1;
    const jstr *str = S(s);
    size_t first = str->len, end = 0;
    for (size_t i = 0; i < str->len;) {
        size_t from = i;
        if (!in_chars(utf8_next(str->s, str->len, &i), chars)) {
            if (first == str->len) first = from;
            end = i;
        }
    }
    size_t a = which & 1 ? first : 0, b = which & 2 ? end : str->len;
    if (a > b) a = b = 0;
    if (jv_str(c, str->s + a, b - a, out)) return -1;
    S(*out)->markup = str->markup;
    return 0;
}

/* str.split(sep=None, maxsplit=-1) */
static int split(rctx *c, jv s, jv sep, int64_t maxsplit, jv *out)
{
    const jstr *str = S(s);
    if (sep.t != JV_NONE && want_str(c, sep, "separator")) return -1;
    if (sep.t == JV_STR && !S(sep)->len) return jfail(c, TUNE_ERR_INPUT, "empty separator");
    if (jv_list(c, 0, out)) return -1;
    size_t i = 0, n = str->len;
    for (int64_t splits = 0;; splits++) {
        size_t start = i, end;
        if (sep.t == JV_NONE) { /* runs of whitespace; none at either end */
            size_t k = i;
            while (k < n && py_isspace(utf8_next(str->s, n, &k))) i = k;
            if (i >= n) break;
            start = i;
            if (maxsplit >= 0 && splits >= maxsplit) {
                end = i = n;
            } else {
                for (k = i; i < n && !py_isspace(utf8_next(str->s, n, &k)); k = i) i = k;
                end = i;
            }
        } else {
            const char *hit = maxsplit >= 0 && splits >= maxsplit
                                  ? NULL
                                  : memmem(str->s + i, n - i, S(sep)->s, S(sep)->len);
            end = hit ? (size_t)(hit - str->s) : n;
            i = hit ? end + S(sep)->len : n + 1;
        }
        jv piece;
        if (jv_str(c, str->s + start, end - start, &piece) || list_push(c, L(*out), piece))
            return jv_unref(*out), -1;
        if (i > n) break;
    }
    return 0;
}

/* str.replace(old, new, count=-1); an empty old goes before every code point and at the end. */
static int replace(rctx *c, jv s, jv old, jv new, int64_t count, jv *out)
{
    if (want_str(c, old, "replace() old") || want_str(c, new, "replace() new")) return -1;
    const jstr *str = S(s), *o = S(old), *w = S(new);
    tune_strbuf sb = {0};
    size_t i = 0;
    int rc = 0;
    for (int64_t done = 0; !rc; done++) {
        int more = count < 0 || done < count;
        if (!o->len) {
            if (more) rc = sbput(c, &sb, w->s, w->len);
            if (rc || i >= str->len) break;
            size_t from = i;
            utf8_next(str->s, str->len, &i);
            rc = sbput(c, &sb, str->s + from, i - from);
            continue;
        }
        const char *hit = more ? memmem(str->s + i, str->len - i, o->s, o->len) : NULL;
        if (!hit) {
            rc = sbput(c, &sb, str->s + i, str->len - i);
            break;
        }
        rc = sbput(c, &sb, str->s + i, (size_t)(hit - str->s) - i) || sbput(c, &sb, w->s, w->len);
        i = (size_t)(hit - str->s) + o->len;
    }
    if (rc) return tune_strbuf_free(&sb), -1;
    return jv_str_buf(c, &sb, out);
}

/* Code point index of sub in s (the first, or the last when last): -1 when absent. */
static int64_t find(const jstr *s, const jstr *sub, int last)
{
    const char *hit = NULL;
    for (const char *p = s->s; p + sub->len <= s->s + s->len; p++) {
        if (memcmp(p, sub->s, sub->len)) continue;
        hit = p;
        if (!last) break;
    }
    return hit ? (int64_t)utf8_count(s->s, (size_t)(hit - s->s)) : -1;
}

/* Python's str.splitlines() boundaries (\n \r \r\n \v \f \x1c-\x1e \x85 \u2028 \u2029). */
static int line_break(uint32_t cp)
{
    return cp == '\n' || cp == '\r' || cp == '\v' || cp == '\f' || (cp >= 0x1C && cp <= 0x1E) || cp == 0x85 ||
           cp == 0x2028 || cp == 0x2029;
}

static int splitlines(rctx *c, const jstr *s, jv *out)
{
    if (jv_list(c, 0, out)) return -1;
    size_t start = 0;
    for (size_t i = 0; i < s->len;) {
        size_t from = i;
        uint32_t cp = utf8_next(s->s, s->len, &i);
        if (!line_break(cp)) continue;
        if (cp == '\r' && i < s->len && s->s[i] == '\n') i++;
        jv line;
        if (jv_str(c, s->s + start, from - start, &line) || list_push(c, L(*out), line)) return jv_unref(*out), -1;
        start = i;
    }
    jv last;
    if (start < s->len && (jv_str(c, s->s + start, s->len - start, &last) || list_push(c, L(*out), last)))
        return jv_unref(*out), -1;
    return 0;
}

/* ---- attribute paths (jinja2's make_attrgetter: "a.b.0") ---- */

static int attr_path(rctx *c, jv item, jv attribute, jv *out)
{
    if (attribute.t != JV_STR) return get_item(c, item, attribute, out);
    const jstr *path = S(attribute);
    jv cur = jv_ref(item);
    for (size_t i = 0; i <= path->len;) {
        const char *dot = memchr(path->s + i, '.', path->len - i);
        size_t end = dot ? (size_t)(dot - path->s) : path->len, k = i;
        while (k < end && path->s[k] >= '0' && path->s[k] <= '9') k++;
        jv key = jv_none(), next;
        int rc = k == end && end > i ? (key = jv_int(strtoll(path->s + i, NULL, 10)), 0)
                                     : jv_str(c, path->s + i, end - i, &key);
        if (!rc) rc = get_item(c, cur, key, &next);
        jv_unref(key);
        jv_unref(cur);
        if (rc) return -1;
        cur = next;
        i = end + 1;
    }
    *out = cur;
    return 0;
}

/* ---- sorting ---- */

/* The key a sort / unique / min / max compares: the attribute when given,
 * lower-cased when a str and not case sensitive. */
static int sort_key(rctx *c, jv item, jv attribute, int case_sensitive, jv *key)
{
    jv k;
    if (arg_given(attribute) && attribute.t != JV_NONE) {
        if (attr_path(c, item, attribute, &k)) return -1;
    } else {
        k = jv_ref(item);
    }
    if (case_sensitive || k.t != JV_STR) return *key = k, 0;
    int rc = case_map(c, k, CASE_LOWER, key);
    jv_unref(k);
    return rc;
}

static void free_entries(sort_ent *e, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        jv_unref(e[i].key);
        jv_unref(e[i].item);
    }
    free(e);
}

/* Entries for every item of seq (a list), keyed. */
static int entries(rctx *c, jv seq, jv attribute, int case_sensitive, sort_ent **out)
{
    size_t n = L(seq)->n;
    sort_ent *e = calloc(n ? n : 1, sizeof *e);
    if (!e) return joom(c);
    for (size_t i = 0; i < n; i++) {
        e[i].item = jv_ref(L(seq)->v[i]);
        e[i].key = jv_none();
        if (sort_key(c, e[i].item, attribute, case_sensitive, &e[i].key)) return free_entries(e, n), -1;
    }
    *out = e;
    return 0;
}

static int sorted_list(rctx *c, sort_ent *e, size_t n, int reverse, jv *out)
{
    int rc = jv_sort(c, e, n, reverse);
    if (!rc && !(rc = jv_list(c, n, out)))
        for (size_t i = 0; i < n && !rc; i++)
            if ((rc = list_push(c, L(*out), jv_ref(e[i].item)))) jv_unref(*out);
    free_entries(e, n);
    return rc;
}

/* ---- filters ---- */

#define FILTER(name) static int name(rctx *c, jv in, const jargs *a, jv *out)

FILTER(f_trim)
{
    jv s[1], str;
    if (bind_args(c, "trim", a, "chars", s) || jv_to_str(c, in, &str)) return -1;
    int rc = strip(c, str, or_default(s[0], jv_none()), 3, out);
    jv_unref(str);
    return rc;
}

FILTER(f_tojson)
{
    jv s[4];
    if (bind_args(c, "tojson", a, "ensure_ascii indent separators sort_keys", s)) return -1;
    char indent[256];
    const char *ind = NULL, *item_sep = ", ", *key_sep = ": ";
    jv iv = or_default(s[1], jv_none());
    if (iv.t == JV_INT) {
        int64_t k = iv.u.i < 0 ? 0 : iv.u.i > 255 ? 255 : iv.u.i;
        memset(indent, ' ', (size_t)k);
        indent[k] = 0;
        ind = indent;
    } else if (iv.t == JV_STR) {
        ind = S(iv)->s;
    } else if (iv.t != JV_NONE) {
        return jfail(c, TUNE_ERR_INPUT, "tojson indent must be an int or a str");
    }
    if (ind) item_sep = ",";
    jv sep = or_default(s[2], jv_none());
    if (sep.t == JV_LIST) {
        if (L(sep)->n != 2 || L(sep)->v[0].t != JV_STR || L(sep)->v[1].t != JV_STR)
            return jfail(c, TUNE_ERR_INPUT, "tojson separators must be two strings");
        item_sep = S(L(sep)->v[0])->s;
        key_sep = S(L(sep)->v[1])->s;
    }
    tune_strbuf sb = {0};
    if (jv_json(c, &sb, in, jv_truthy(or_default(s[0], jv_bool(0))), ind, item_sep, key_sep,
                jv_truthy(or_default(s[3], jv_bool(0)))))
        return tune_strbuf_free(&sb), -1;
    return jv_str_buf(c, &sb, out);
}

FILTER(f_length)
{
    int64_t n;
    if (bind_args(c, "length", a, "", NULL) || jv_len(c, in, &n)) return -1;
    *out = jv_int(n);
    return 0;
}

static int first_or_last(rctx *c, jv in, int last, jv *out)
{
    jv items;
    if (jv_iter(c, in, &items)) return -1;
    size_t n = L(items)->n;
    int rc = n ? (*out = jv_ref(L(items)->v[last ? n - 1 : 0]), 0)
               : jv_undef(c, out, "No %s item, sequence was empty.", last ? "last" : "first");
    jv_unref(items);
    return rc;
}

FILTER(f_first) { return bind_args(c, "first", a, "", NULL) ? -1 : first_or_last(c, in, 0, out); }
FILTER(f_last) { return bind_args(c, "last", a, "", NULL) ? -1 : first_or_last(c, in, 1, out); }

FILTER(f_join)
{
    jv s[2], items;
    if (bind_args(c, "join", a, "d attribute", s) || jv_iter(c, in, &items)) return -1;
    jv sep = or_default(s[0], jv_none());
    tune_strbuf sb = {0};
    int rc = 0;
    for (size_t i = 0; i < L(items)->n && !rc; i++) {
        jv item = jv_ref(L(items)->v[i]);
        if (arg_given(s[1]) && s[1].t != JV_NONE) {
            jv v;
            rc = attr_path(c, item, s[1], &v);
            jv_unref(item);
            item = rc ? jv_none() : v;
        }
        if (!rc && i && sep.t != JV_NONE) rc = jv_print(c, &sb, sep);
        if (!rc) rc = jv_print(c, &sb, item);
        jv_unref(item);
    }
    jv_unref(items);
    if (rc) return tune_strbuf_free(&sb), -1;
    return jv_str_buf(c, &sb, out);
}

FILTER(f_upper) { return bind_args(c, "upper", a, "", NULL) ? -1 : case_map(c, in, CASE_UPPER, out); }
FILTER(f_lower) { return bind_args(c, "lower", a, "", NULL) ? -1 : case_map(c, in, CASE_LOWER, out); }
FILTER(f_title) { return bind_args(c, "title", a, "", NULL) ? -1 : case_map(c, in, CASE_JTITLE, out); }
FILTER(f_capitalize)
{
    return bind_args(c, "capitalize", a, "", NULL) ? -1 : case_map(c, in, CASE_CAPITALIZE, out);
}

FILTER(f_replace)
{
    jv s[3], str;
    int64_t count = -1;
    if (bind_args(c, "replace", a, "old! new! count", s)) return -1;
    if (arg_given(s[2]) && s[2].t != JV_NONE && want_int(c, s[2], "replace() count", &count)) return -1;
    jv old, new;
    if (jv_to_str(c, in, &str)) return -1;
    if (jv_to_str(c, s[0], &old)) return jv_unref(str), -1;
    if (jv_to_str(c, s[1], &new)) return jv_unref(str), jv_unref(old), -1;
    int rc = replace(c, str, old, new, count, out);
    jv_unref(str), jv_unref(old), jv_unref(new);
    return rc;
}

FILTER(f_default)
{
    jv s[2];
    if (bind_args(c, "default", a, "default_value boolean", s)) return -1;
    int use = in.t == JV_UNDEF || (jv_truthy(or_default(s[1], jv_bool(0))) && !jv_truthy(in));
    if (!use) return *out = jv_ref(in), 0;
    return arg_given(s[0]) ? (*out = jv_ref(s[0]), 0) : jv_strz(c, "", out);
}

/* A new, empty generator (see seq_kind). */
static int generator(rctx *c, size_t cap, jv *out)
{
    if (jv_list(c, cap, out)) return -1;
    L(*out)->kind = SEQ_GENERATOR;
    return 0;
}

/* (key, value) tuples of a dict. */
static int dict_items(rctx *c, jv d, jv *out)
{
    if (jv_list(c, D(d)->n, out)) return -1;
    for (size_t i = 0; i < D(d)->n; i++) {
        jv pair;
        if (jv_list(c, 2, &pair)) return jv_unref(*out), -1;
        L(pair)->kind = SEQ_TUPLE;
        if (list_push(c, L(pair), jv_ref(D(d)->k[i])) || list_push(c, L(pair), jv_ref(D(d)->v[i])) ||
            list_push(c, L(*out), pair))
            return jv_unref(pair), jv_unref(*out), -1;
    }
    return 0;
}

FILTER(f_items)
{
    if (bind_args(c, "items", a, "", NULL)) return -1;
    if (in.t == JV_UNDEF) return generator(c, 0, out);
    if (in.t != JV_DICT) return jfail(c, TUNE_ERR_INPUT, "Can only get item pairs from a mapping.");
    if (dict_items(c, in, out)) return -1;
    L(*out)->kind = SEQ_GENERATOR;
    return 0;
}

/* A new list of in's items, in order or reversed. */
static int list_copy(rctx *c, jv in, int reversed, jv *out)
{
    jv items;
    if (jv_iter(c, in, &items)) return -1;
    size_t n = L(items)->n;
    int rc = jv_list(c, n, out);
    for (size_t i = 0; !rc && i < n; i++)
        if ((rc = list_push(c, L(*out), jv_ref(L(items)->v[reversed ? n - 1 - i : i])))) jv_unref(*out);
    jv_unref(items);
    return rc;
}

FILTER(f_list) { return bind_args(c, "list", a, "", NULL) ? -1 : list_copy(c, in, 0, out); }

/* map / select / reject / selectattr / rejectattr: one walk. */
typedef enum { WALK_MAP, WALK_SELECT, WALK_REJECT, WALK_SELECTATTR, WALK_REJECTATTR } walk_kind;

static int walk(rctx *c, jv in, const jargs *a, walk_kind kind, jv *out)
{
    jargs rest = *a;
    jv attribute = MISSING, def = jv_none();
    const jbuiltin *fn = NULL;
    int off = 0;
    if (kind == WALK_MAP && !a->npos) { /* map(attribute='x', default=...) */
        rest.nkw = 0;
        for (int k = 0; k < a->nkw; k++) {
            if (!strcmp(a->kwname[k], "attribute")) attribute = a->kwval[k];
            else if (!strcmp(a->kwname[k], "default")) def = a->kwval[k];
            else return jfail(c, TUNE_ERR_INPUT, "Unexpected keyword argument '%s'", a->kwname[k]);
        }
        if (!arg_given(attribute)) return jfail(c, TUNE_ERR_INPUT, "map requires a filter argument");
    } else {
        if (kind == WALK_SELECTATTR || kind == WALK_REJECTATTR) {
            if (!a->npos) return jfail(c, TUNE_ERR_INPUT, "Missing parameter for attribute name");
            attribute = a->pos[off++];
        }
        if (a->npos > off) {
            if (want_str(c, a->pos[off], "the filter or test name")) return -1;
            const char *name = S(a->pos[off])->s;
            fn = kind == WALK_MAP ? find_filter(name) : find_test(name);
            if (!fn)
                return jfail(c, TUNE_ERR_INPUT, "No %s named '%s'.", kind == WALK_MAP ? "filter" : "test", name);
            off++;
        } else if (kind == WALK_MAP) {
            return jfail(c, TUNE_ERR_INPUT, "map requires a filter argument");
        }
        rest.npos = a->npos - off;
        memmove(rest.pos, a->pos + off, (size_t)rest.npos * sizeof *rest.pos);
    }
    jv items;
    if (!jv_truthy(in)) return generator(c, 0, out); /* jinja2 walks nothing when the value is falsy */
    if (jv_iter(c, in, &items)) return -1;
    if (generator(c, L(items)->n, out)) return jv_unref(items), -1;
    int rc = 0;
    for (size_t i = 0; !rc && i < L(items)->n; i++) {
        jv item = L(items)->v[i], v, r;
        if (arg_given(attribute)) {
            if (attr_path(c, item, attribute, &v)) {
                rc = -1;
                break;
            }
            if (kind == WALK_MAP && v.t == JV_UNDEF && def.t != JV_NONE) jv_unref(v), v = jv_ref(def);
        } else {
            v = jv_ref(item);
        }
        if (kind == WALK_MAP) {
            rc = fn ? fn->fn(c, v, &rest, &r) : (r = jv_ref(v), 0);
            if (!rc) rc = list_push(c, L(*out), r);
        } else {
            int keep = 0;
            rc = fn ? run_test(c, fn, v, &rest, &keep) : (keep = jv_truthy(v), 0);
            if (!rc && keep == (kind == WALK_SELECT || kind == WALK_SELECTATTR))
                rc = list_push(c, L(*out), jv_ref(item));
        }
        jv_unref(v);
    }
    jv_unref(items);
    if (rc) return jv_unref(*out), -1;
    return 0;
}

FILTER(f_map) { return walk(c, in, a, WALK_MAP, out); }
FILTER(f_select) { return walk(c, in, a, WALK_SELECT, out); }
FILTER(f_reject) { return walk(c, in, a, WALK_REJECT, out); }
FILTER(f_selectattr) { return walk(c, in, a, WALK_SELECTATTR, out); }
FILTER(f_rejectattr) { return walk(c, in, a, WALK_REJECTATTR, out); }

FILTER(f_string)
{
    return bind_args(c, "string", a, "", NULL) ? -1 : jv_to_str(c, in, out);
}

FILTER(f_safe)
{
    if (bind_args(c, "safe", a, "", NULL)) return -1;
    jv s;
    if (jv_to_str(c, in, &s)) return -1;
    if (S(s)->markup) return *out = s, 0;
    int rc = jv_str(c, S(s)->s, S(s)->len, out);
    jv_unref(s);
    if (!rc) S(*out)->markup = 1;
    return rc;
}

FILTER(f_escape)
{
    if (bind_args(c, "escape", a, "", NULL)) return -1;
    if (in.t == JV_STR && S(in)->markup) return *out = jv_ref(in), 0;
    jv s;
    if (jv_to_str(c, in, &s)) return -1;
    int rc = escape_str(c, s, out);
    jv_unref(s);
    return rc;
}

/* Python's float(str): surrounding whitespace, underscores between digits, inf and nan. */
static int parse_float(const jstr *s, double *out)
{
    size_t len;
    const char *p = tune_text_strip(s->s, s->len, &len);
    char buf[128];
    size_t k = 0;
    if (!len || len >= sizeof buf) return -1;
    for (size_t i = 0; i < len; i++) {
        if (p[i] == '_' && i > 0 && i + 1 < len && p[i - 1] >= '0' && p[i - 1] <= '9' && p[i + 1] >= '0' &&
            p[i + 1] <= '9')
            continue;
        if (p[i] == 'x' || p[i] == 'X' || p[i] == '_' || p[i] == ' ') return -1;
        buf[k++] = p[i];
    }
    buf[k] = 0;
    char *end;
    *out = strtod(buf, &end);
    return *end || end == buf ? -1 : 0;
}

/* Python's int(str, 10). */
static int parse_int(const jstr *s, int64_t *out)
{
    size_t len;
    const char *p = tune_text_strip(s->s, s->len, &len);
    size_t i = 0;
    int neg = 0;
    if (i < len && (p[i] == '+' || p[i] == '-')) neg = p[i++] == '-';
    if (i == len) return -1;
    uint64_t v = 0;
    for (; i < len; i++) {
        if (p[i] == '_' && i > 0 && i + 1 < len && p[i - 1] >= '0' && p[i - 1] <= '9') continue;
        if (p[i] < '0' || p[i] > '9' || v > (UINT64_MAX - 9) / 10) return -1;
        v = v * 10 + (uint64_t)(p[i] - '0');
    }
    if (v > (uint64_t)INT64_MAX + (uint64_t)neg) return -1;
    *out = neg ? (int64_t)(0 - v) : (int64_t)v;
    return 0;
}

FILTER(f_int)
{
    jv s[2];
    int64_t base = 10, iv;
    double f;
    if (bind_args(c, "int", a, "default base", s)) return -1;
    if (arg_given(s[1]) && want_int(c, s[1], "int base", &base)) return -1;
    if (base != 10) return jfail(c, TUNE_ERR_INPUT, "int filter: only base 10 is supported");
    if (jv_check_defined(c, in)) return -1;
    if (in.t == JV_INT || in.t == JV_BOOL) return *out = jv_int(in.u.i), 0;
    if (in.t == JV_STR && !parse_int(S(in), &iv)) return *out = jv_int(iv), 0;
    f = in.t == JV_FLOAT ? in.u.f : NAN;
    if (in.t == JV_STR && parse_float(S(in), &f)) f = NAN;
    if (isinf(f)) return jfail(c, TUNE_ERR_INPUT, "cannot convert float infinity to integer");
    if (!isnan(f) && fabs(f) < 9.2e18) return *out = jv_int((int64_t)f), 0;
    return *out = jv_ref(or_default(s[0], jv_int(0))), 0;
}

FILTER(f_float)
{
    jv s[1];
    double f;
    if (bind_args(c, "float", a, "default", s) || jv_check_defined(c, in)) return -1;
    if (jv_is_num(in)) return *out = jv_float(in.t == JV_FLOAT ? in.u.f : (double)in.u.i), 0;
    if (in.t == JV_STR && !parse_float(S(in), &f)) return *out = jv_float(f), 0;
    return *out = jv_ref(or_default(s[0], jv_float(0.0))), 0;
}

/* jinja2's indent: splitlines of s + "\n"; every line but the first gets
 * the indent (an empty one only when blank=True); first=True indents it too. */
FILTER(f_indent)
{
    jv s[3], str, lines;
    int64_t width = 4;
    if (bind_args(c, "indent", a, "width first blank", s)) return -1;
    jv w = or_default(s[0], jv_int(4));
    if (w.t != JV_STR && want_int(c, w, "indent width", &width)) return -1;
    if (jv_check_defined(c, in)) return -1;
    if (in.t != JV_STR) /* jinja2 adds "\n" to the value itself */
        return jfail(c, TUNE_ERR_INPUT, "unsupported operand type(s) for +=: '%s' and 'str'", jv_type_name(in));
    tune_strbuf sb = {0}, pad = {0};
    int rc = 0;
    if (w.t == JV_STR) rc = sbput(c, &pad, S(w)->s, S(w)->len);
    for (int64_t k = 0; w.t != JV_STR && k < width && !rc; k++) rc = sbput(c, &pad, " ", 1);
    if (!rc) rc = sbput(c, &sb, S(in)->s, S(in)->len);
    if (!rc) rc = sbput(c, &sb, "\n", 1);
    if (rc || jv_str_buf(c, &sb, &str)) return tune_strbuf_free(&pad), tune_strbuf_free(&sb), -1;
    rc = splitlines(c, S(str), &lines);
    jv_unref(str);
    if (rc) return tune_strbuf_free(&pad), -1;
    const char *ind = pad.data ? pad.data : "";
    int blank = jv_truthy(or_default(s[2], jv_bool(0)));
    if (jv_truthy(or_default(s[1], jv_bool(0)))) rc = sbputs(c, &sb, ind);
    for (size_t i = 0; i < L(lines)->n && !rc; i++) {
        const jstr *line = S(L(lines)->v[i]);
        if (i) rc = sbput(c, &sb, "\n", 1);
        if (!rc && i && (blank || line->len)) rc = sbputs(c, &sb, ind);
        if (!rc) rc = sbput(c, &sb, line->s, line->len);
    }
    jv_unref(lines);
    tune_strbuf_free(&pad);
    if (rc) return tune_strbuf_free(&sb), -1;
    return jv_str_buf(c, &sb, out);
}

FILTER(f_unique)
{
    jv s[2], items;
    sort_ent *e;
    if (bind_args(c, "unique", a, "case_sensitive attribute", s) || jv_iter(c, in, &items)) return -1;
    size_t n = L(items)->n;
    int rc = entries(c, items, s[1], jv_truthy(or_default(s[0], jv_bool(0))), &e);
    jv_unref(items);
    if (rc) return -1;
    if (generator(c, 0, out)) return free_entries(e, n), -1;
    for (size_t i = 0; i < n && !rc; i++) {
        int seen = 0;
        if ((rc = check_hashable(c, e[i].key))) break;
        for (size_t j = 0; j < i && !seen; j++) seen = jv_eq(e[j].key, e[i].key);
        if (!seen) rc = list_push(c, L(*out), jv_ref(e[i].item));
    }
    free_entries(e, n);
    if (rc) return jv_unref(*out), -1;
    return 0;
}

FILTER(f_dictsort)
{
    jv s[3], items;
    sort_ent *e;
    if (bind_args(c, "dictsort", a, "case_sensitive by reverse", s)) return -1;
    if (in.t != JV_DICT) return jfail(c, TUNE_ERR_INPUT, "dictsort needs a mapping, not '%s'", jv_type_name(in));
    jv by = or_default(s[1], MISSING);
    int pos = 0;
    if (arg_given(by)) {
        if (by.t != JV_STR || (strcmp(S(by)->s, "key") && strcmp(S(by)->s, "value")))
            return jfail(c, TUNE_ERR_INPUT, "You can only sort by either \"key\" or \"value\"");
        pos = S(by)->s[0] == 'v';
    }
    if (dict_items(c, in, &items)) return -1;
    int rc = entries(c, items, jv_int(pos), jv_truthy(or_default(s[0], jv_bool(0))), &e);
    size_t n = L(items)->n;
    jv_unref(items);
    return rc ? -1 : sorted_list(c, e, n, jv_truthy(or_default(s[2], jv_bool(0))), out);
}

FILTER(f_sort)
{
    jv s[3], items;
    sort_ent *e;
    if (bind_args(c, "sort", a, "reverse case_sensitive attribute", s) || jv_iter(c, in, &items)) return -1;
    size_t n = L(items)->n;
    int rc = entries(c, items, s[2], jv_truthy(or_default(s[1], jv_bool(0))), &e);
    jv_unref(items);
    return rc ? -1 : sorted_list(c, e, n, jv_truthy(or_default(s[0], jv_bool(0))), out);
}

FILTER(f_reverse)
{
    if (bind_args(c, "reverse", a, "", NULL)) return -1;
    if (in.t != JV_STR) { /* a reversed iterator */
        if (list_copy(c, in, 1, out)) return -1;
        L(*out)->kind = SEQ_GENERATOR;
        return 0;
    }
    jv chars;
    if (list_copy(c, in, 1, &chars)) return -1;
    tune_strbuf sb = {0};
    int rc = 0;
    for (size_t i = 0; i < L(chars)->n && !rc; i++) rc = jv_print(c, &sb, L(chars)->v[i]);
    jv_unref(chars);
    if (rc) return tune_strbuf_free(&sb), -1;
    return jv_str_buf(c, &sb, out);
}

FILTER(f_abs)
{
    if (bind_args(c, "abs", a, "", NULL) || jv_check_defined(c, in)) return -1;
    if (in.t == JV_FLOAT) return *out = jv_float(fabs(in.u.f)), 0;
    if (in.t != JV_INT && in.t != JV_BOOL)
        return jfail(c, TUNE_ERR_INPUT, "bad operand type for abs(): '%s'", jv_type_name(in));
    if (in.u.i == INT64_MIN) return jfail(c, TUNE_ERR_INPUT, "integer overflow (ints are 64-bit here)");
    return *out = jv_int(in.u.i < 0 ? -in.u.i : in.u.i), 0;
}

/* Python's round(x, n): the correctly rounded decimal, ties to even (glibc's
 * printf rounds the exact binary value the same way). */
static double py_round(double x, int64_t n)
{
    if (!isfinite(x) || n > 300) return x;
    if (n < 0) {
        double p = pow(10.0, (double)-n);
        return nearbyint(x / p) * p;
    }
    char buf[512];
    snprintf(buf, sizeof buf, "%.*f", (int)n, x);
    return strtod(buf, NULL);
}

FILTER(f_round)
{
    jv s[2];
    int64_t prec = 0;
    if (bind_args(c, "round", a, "precision method", s) || jv_check_defined(c, in)) return -1;
    if (arg_given(s[0]) && want_int(c, s[0], "round precision", &prec)) return -1;
    const char *method = arg_given(s[1]) && s[1].t == JV_STR ? S(s[1])->s : "common";
    if (strcmp(method, "common") && strcmp(method, "ceil") && strcmp(method, "floor"))
        return jfail(c, TUNE_ERR_INPUT, "method must be common, ceil or floor");
    if (!jv_is_num(in)) return jfail(c, TUNE_ERR_INPUT, "type %s doesn't define __round__ method", jv_type_name(in));
    double x = in.t == JV_FLOAT ? in.u.f : (double)in.u.i;
    if (method[0] == 'c' && method[1] == 'o') {
        if (in.t != JV_FLOAT && prec >= 0) return *out = jv_int(in.u.i), 0;
        return *out = jv_float(py_round(x, prec)), 0;
    }
    double p = pow(10.0, (double)prec);
    return *out = jv_float((method[0] == 'c' ? ceil(x * p) : floor(x * p)) / p), 0;
}

static int min_max(rctx *c, jv in, const jargs *a, int want_max, jv *out)
{
    jv s[2], items;
    sort_ent *e;
    if (bind_args(c, want_max ? "max" : "min", a, "case_sensitive attribute", s) || jv_iter(c, in, &items))
        return -1;
    size_t n = L(items)->n, best = 0;
    int rc = entries(c, items, s[1], jv_truthy(or_default(s[0], jv_bool(0))), &e);
    jv_unref(items);
    if (rc) return -1;
    for (size_t i = 1; i < n && !rc; i++) {
        int r;
        rc = jv_cmp(c, e[i].key, e[best].key, &r);
        if (!rc && (want_max ? r > 0 : r < 0)) best = i;
    }
    if (!rc) rc = n ? (*out = jv_ref(e[best].item), 0) : jv_undef(c, out, "No aggregated item, sequence was empty.");
    free_entries(e, n);
    return rc;
}

FILTER(f_max) { return min_max(c, in, a, 1, out); }
FILTER(f_min) { return min_max(c, in, a, 0, out); }

FILTER(f_sum)
{
    jv s[2], items;
    if (bind_args(c, "sum", a, "attribute start", s) || jv_iter(c, in, &items)) return -1;
    jv total = jv_ref(or_default(s[1], jv_int(0)));
    int rc = 0;
    for (size_t i = 0; i < L(items)->n && !rc; i++) {
        jv v, t;
        if (arg_given(s[0]) && s[0].t != JV_NONE) rc = attr_path(c, L(items)->v[i], s[0], &v);
        else v = jv_ref(L(items)->v[i]);
        if (rc) break;
        rc = binop(c, OP_ADD, total, v, &t);
        jv_unref(v);
        jv_unref(total);
        total = rc ? jv_none() : t;
    }
    jv_unref(items);
    if (rc) return jv_unref(total), -1;
    *out = total;
    return 0;
}

FILTER(f_wordcount)
{
    jv str;
    if (bind_args(c, "wordcount", a, "", NULL) || jv_to_str(c, in, &str)) return -1;
    int64_t words = 0;
    int inword = 0;
    for (size_t i = 0; i < S(str)->len;) { /* runs of \w: letters, numbers, _ */
        uint32_t cp = utf8_next(S(str)->s, S(str)->len, &i);
        const char *cat = utf8proc_category_string((utf8proc_int32_t)cp);
        int w = cp == '_' || cat[0] == 'L' || cat[0] == 'N';
        words += w && !inword;
        inword = w;
    }
    jv_unref(str);
    *out = jv_int(words);
    return 0;
}

FILTER(f_center)
{
    jv s[1], str;
    int64_t width = 80, len;
    if (bind_args(c, "center", a, "width", s)) return -1;
    if (arg_given(s[0]) && want_int(c, s[0], "center width", &width)) return -1;
    if (jv_to_str(c, in, &str) || jv_len(c, str, &len)) return -1;
    int64_t marg = width - len, left = marg / 2 + (marg & width & 1);
    tune_strbuf sb = {0};
    int rc = 0;
    for (int64_t k = 0; k < marg && !rc; k++) {
        if (k == left) rc = sbput(c, &sb, S(str)->s, S(str)->len);
        if (!rc) rc = sbput(c, &sb, " ", 1);
    }
    if (!rc && marg <= left) rc = sbput(c, &sb, S(str)->s, S(str)->len);
    jv_unref(str);
    if (rc) return tune_strbuf_free(&sb), -1;
    return jv_str_buf(c, &sb, out);
}

/* "%s, %s"|format(a, b) or "%(x)s"|format(x=1): printf-style. */
FILTER(f_format)
{
    jv str, args;
    if (jv_to_str(c, in, &str)) return -1;
    int rc = a->nkw ? jv_dict(c, &args) : jv_list(c, (size_t)a->npos, &args);
    if (rc) return jv_unref(str), -1;
    if (args.t == JV_LIST) L(args)->kind = SEQ_TUPLE;
    for (int k = 0; !rc && k < a->nkw; k++) {
        jv key;
        rc = jv_strz(c, a->kwname[k], &key);
        if (!rc) rc = dict_set(c, D(args), key, jv_ref(a->kwval[k]));
    }
    for (int k = 0; !rc && !a->nkw && k < a->npos; k++) rc = list_push(c, L(args), jv_ref(a->pos[k]));
    if (!rc) rc = percent_format(c, str, args, out);
    jv_unref(args);
    jv_unref(str);
    return rc;
}

/* ---- printf-style and str.format ---- */

/* s[0, n) padded with spaces to width code points (left-aligned when left). */
static int put_padded(rctx *c, tune_strbuf *sb, const char *s, size_t n, int64_t width, int left)
{
    int64_t pad = width - (int64_t)utf8_count(s, n);
    int rc = 0;
    for (int64_t k = 0; !left && k < pad && !rc; k++) rc = sbput(c, sb, " ", 1);
    if (!rc) rc = sbput(c, sb, s, n);
    for (int64_t k = 0; left && k < pad && !rc; k++) rc = sbput(c, sb, " ", 1);
    return rc;
}

int percent_format(rctx *c, jv fmt, jv args, jv *out)
{
    const jstr *f = S(fmt);
    int is_tuple = args.t == JV_LIST && L(args)->kind == SEQ_TUPLE;
    size_t next = 0, nargs = is_tuple ? L(args)->n : 1;
    tune_strbuf sb = {0};
    int rc = 0;
    for (size_t i = 0; i < f->len && !rc;) {
        const char *pct = memchr(f->s + i, '%', f->len - i);
        size_t end = pct ? (size_t)(pct - f->s) : f->len;
        rc = sbput(c, &sb, f->s + i, end - i);
        if (!pct || rc) break;
        i = end + 1;
        jv key = MISSING, v;
        if (i < f->len && f->s[i] == '(') { /* %(name)s */
            const char *close = memchr(f->s + i, ')', f->len - i);
            if (!close) return tune_strbuf_free(&sb), jfail(c, TUNE_ERR_INPUT, "incomplete format key");
            if (args.t != JV_DICT) return tune_strbuf_free(&sb), jfail(c, TUNE_ERR_INPUT, "format requires a mapping");
            if ((rc = jv_str(c, f->s + i + 1, (size_t)(close - f->s) - i - 1, &key))) break;
            i = (size_t)(close - f->s) + 1;
        }
        int left = 0, zero = 0;
        for (; i < f->len && strchr("-0 +#", f->s[i]); i++) left |= f->s[i] == '-', zero |= f->s[i] == '0';
        int64_t width = 0, prec = -1; /* both bounded: the digits may be hostile */
        for (; i < f->len && f->s[i] >= '0' && f->s[i] <= '9'; i++)
            if (width < 100000) width = width * 10 + (f->s[i] - '0');
        if (i < f->len && f->s[i] == '.')
            for (prec = 0, i++; i < f->len && f->s[i] >= '0' && f->s[i] <= '9'; i++)
                if (prec < 100) prec = prec * 10 + (f->s[i] - '0');
        char conv = i < f->len ? f->s[i++] : 0;
        if (conv == '%') {
            rc = sbput(c, &sb, "%", 1);
            continue;
        }
        if (!strchr("sridfFxXeEgG", conv) || !conv) {
            rc = jfail(c, TUNE_ERR_INPUT, "unsupported format character '%c'", conv ? conv : '?');
            break;
        }
        if (arg_given(key)) {
            const jv *hit = dict_get(D(args), key);
            jv_unref(key);
            if (!hit) return tune_strbuf_free(&sb), jfail(c, TUNE_ERR_INPUT, "format key not found");
            v = *hit;
        } else if (args.t == JV_DICT && !is_tuple) {
            v = args;
            next++;
        } else {
            if (next >= nargs)
                return tune_strbuf_free(&sb), jfail(c, TUNE_ERR_INPUT, "not enough arguments for format string");
            v = is_tuple ? L(args)->v[next] : args;
            next++;
        }
        if (conv == 's' || conv == 'r') {
            tune_strbuf piece = {0};
            rc = conv == 's' ? jv_print(c, &piece, v) : jv_repr(c, &piece, v);
            const char *text = piece.data ? piece.data : "";
            size_t n = 0; /* a precision keeps that many code points */
            for (int64_t k = 0; n < piece.len && (prec < 0 || k < prec); k++) utf8_next(text, piece.len, &n);
            if (!rc) rc = put_padded(c, &sb, text, n, width, left);
            tune_strbuf_free(&piece);
        } else if (!jv_is_num(v) || (v.t == JV_FLOAT && strchr("idxX", conv) && !(fabs(v.u.f) < 9.2e18))) {
            rc = jfail(c, TUNE_ERR_INPUT, "%%%c format: a number in range is required, not %s", conv,
                       jv_type_name(v));
        } else { /* C's printf does these as Python does */
            char spec[16], num[640];
            int w = (int)(width > 500 ? 500 : width), p = (int)(prec < 0 ? 6 : prec);
            if (strchr("idxX", conv)) {
                snprintf(spec, sizeof spec, "%%%s%s*ll%c", left ? "-" : "", zero ? "0" : "", conv == 'i' ? 'd' : conv);
                snprintf(num, sizeof num, spec, w, v.t == JV_FLOAT ? (long long)v.u.f : (long long)v.u.i);
            } else {
                snprintf(spec, sizeof spec, "%%%s%s*.*%c", left ? "-" : "", zero ? "0" : "", conv);
                snprintf(num, sizeof num, spec, w, p, v.t == JV_FLOAT ? v.u.f : (double)v.u.i);
            }
            rc = sbputs(c, &sb, num);
        }
    }
    /* a lone list, dict or Undefined (anything with __getitem__) may go unused */
    if (!rc && (is_tuple || (args.t != JV_LIST && args.t != JV_DICT && args.t != JV_UNDEF)) && next < nargs)
        rc = jfail(c, TUNE_ERR_INPUT, "not all arguments converted during string formatting");
    if (rc) return tune_strbuf_free(&sb), -1;
    return jv_str_buf(c, &sb, out);
}

/* str.format: {} {0} {name}, with !r / !s; format specs are not supported. */
static int str_format(rctx *c, jv fmt, const jargs *a, jv *out)
{
    const jstr *f = S(fmt);
    tune_strbuf sb = {0};
    int rc = 0, autonum = 0;
    for (size_t i = 0; i < f->len && !rc;) {
        char ch = f->s[i];
        if ((ch == '{' || ch == '}') && i + 1 < f->len && f->s[i + 1] == ch) {
            rc = sbput(c, &sb, &ch, 1);
            i += 2;
            continue;
        }
        if (ch == '}')
            return tune_strbuf_free(&sb), jfail(c, TUNE_ERR_INPUT, "Single '}' encountered in format string");
        if (ch != '{') {
            rc = sbput(c, &sb, &ch, 1);
            i++;
            continue;
        }
        const char *close = memchr(f->s + i, '}', f->len - i);
        if (!close) return tune_strbuf_free(&sb), jfail(c, TUNE_ERR_INPUT, "Single '{' encountered in format string");
        size_t a0 = i + 1, a1 = (size_t)(close - f->s), nameend = a0;
        while (nameend < a1 && f->s[nameend] != '!' && f->s[nameend] != ':') nameend++;
        char conv = nameend + 1 < a1 && f->s[nameend] == '!' ? f->s[nameend + 1] : 's';
        if (memchr(f->s + a0, ':', a1 - a0))
            return tune_strbuf_free(&sb), jfail(c, TUNE_ERR_INPUT, "format specs are not supported");
        jv v = MISSING;
        size_t digits = a0, word = a0;
        while (digits < nameend && f->s[digits] >= '0' && f->s[digits] <= '9') digits++;
        while (word < nameend && (f->s[word] == '_' || isalnum((unsigned char)f->s[word]))) word++;
        if (word < nameend || (digits > a0 && digits < nameend)) { /* {0.attr}, {x[k]} */
            rc = jfail(c, TUNE_ERR_INPUT, "format field '%.*s' is not supported", (int)(nameend - a0), f->s + a0);
            break;
        }
        if (nameend == a0) {
            if (autonum >= a->npos) {
                rc = jfail(c, TUNE_ERR_INPUT, "Replacement index %d out of range", autonum);
                break;
            }
            v = a->pos[autonum++];
        } else if (digits == nameend) {
            long k = strtol(f->s + a0, NULL, 10);
            if (k >= a->npos)
                return tune_strbuf_free(&sb), jfail(c, TUNE_ERR_INPUT, "Replacement index %ld out of range", k);
            v = a->pos[k];
        } else {
            for (int k = 0; k < a->nkw; k++)
                if (strlen(a->kwname[k]) == nameend - a0 && !memcmp(a->kwname[k], f->s + a0, nameend - a0))
                    v = a->kwval[k];
            if (!arg_given(v)) {
                rc = jfail(c, TUNE_ERR_INPUT, "format: no argument named '%.*s'", (int)(nameend - a0), f->s + a0);
                break;
            }
        }
        rc = conv == 'r' ? jv_repr(c, &sb, v) : jv_print(c, &sb, v);
        i = a1 + 1;
    }
    if (rc) return tune_strbuf_free(&sb), -1;
    return jv_str_buf(c, &sb, out);
}

/* ---- methods ---- */

#define METHOD(name) static int name(rctx *c, jv self, const jargs *a, jv *out)

static int strip_method(rctx *c, jv self, const jargs *a, int which, jv *out)
{
    jv s[1];
    return bind_args(c, "strip", a, "chars", s) ? -1 : strip(c, self, or_default(s[0], jv_none()), which, out);
}
METHOD(m_strip) { return strip_method(c, self, a, 3, out); }
METHOD(m_lstrip) { return strip_method(c, self, a, 1, out); }
METHOD(m_rstrip) { return strip_method(c, self, a, 2, out); }

METHOD(m_split)
{
    jv s[2];
    int64_t maxsplit = -1;
    if (bind_args(c, "split", a, "sep maxsplit", s)) return -1;
    if (arg_given(s[1]) && want_int(c, s[1], "maxsplit", &maxsplit)) return -1;
    return split(c, self, or_default(s[0], jv_none()), maxsplit, out);
}

static int affix(rctx *c, jv self, const jargs *a, int end, jv *out)
{
    jv s[1];
    if (bind_args(c, end ? "endswith" : "startswith", a, "prefix!", s)) return -1;
    jv p = s[0];
    size_t n = p.t == JV_LIST && L(p)->kind == SEQ_TUPLE ? L(p)->n : 1;
    const jstr *str = S(self);
    for (size_t i = 0; i < n; i++) {
        jv one = p.t == JV_LIST ? L(p)->v[i] : p;
        if (want_str(c, one, end ? "endswith() argument" : "startswith() argument")) return -1;
        const jstr *x = S(one);
        if (x->len <= str->len && !memcmp(str->s + (end ? str->len - x->len : 0), x->s, x->len))
            return *out = jv_bool(1), 0;
    }
    return *out = jv_bool(0), 0;
}
METHOD(m_startswith) { return affix(c, self, a, 0, out); }
METHOD(m_endswith) { return affix(c, self, a, 1, out); }

METHOD(m_upper) { return bind_args(c, "upper", a, "", NULL) ? -1 : case_map(c, self, CASE_UPPER, out); }
METHOD(m_lower) { return bind_args(c, "lower", a, "", NULL) ? -1 : case_map(c, self, CASE_LOWER, out); }
METHOD(m_title) { return bind_args(c, "title", a, "", NULL) ? -1 : case_map(c, self, CASE_TITLE, out); }
METHOD(m_capitalize)
{
    return bind_args(c, "capitalize", a, "", NULL) ? -1 : case_map(c, self, CASE_CAPITALIZE, out);
}

METHOD(m_replace)
{
    jv s[3];
    int64_t count = -1;
    if (bind_args(c, "replace", a, "old! new! count", s)) return -1;
    if (arg_given(s[2]) && want_int(c, s[2], "replace() count", &count)) return -1;
    return replace(c, self, s[0], s[1], count, out);
}

static int find_method_impl(rctx *c, jv self, const jargs *a, int mode, jv *out)
{
    jv s[1];
    if (bind_args(c, mode == 2 ? "count" : "find", a, "sub!", s) || want_str(c, s[0], "substring")) return -1;
    if (mode < 2) return *out = jv_int(find(S(self), S(s[0]), mode)), 0;
    int64_t n = 0;
    const jstr *str = S(self), *sub = S(s[0]);
    if (!sub->len) return *out = jv_int((int64_t)utf8_count(str->s, str->len) + 1), 0;
    for (const char *p = str->s; (p = memmem(p, str->len - (size_t)(p - str->s), sub->s, sub->len)); p += sub->len)
        n++;
    return *out = jv_int(n), 0;
}
METHOD(m_find) { return find_method_impl(c, self, a, 0, out); }
METHOD(m_rfind) { return find_method_impl(c, self, a, 1, out); }
METHOD(m_count) { return find_method_impl(c, self, a, 2, out); }
METHOD(m_format) { return str_format(c, self, a, out); }

METHOD(m_join)
{
    jv s[1], items;
    if (bind_args(c, "join", a, "iterable!", s) || jv_iter(c, s[0], &items)) return -1;
    tune_strbuf sb = {0};
    int rc = 0;
    for (size_t i = 0; i < L(items)->n && !rc; i++) {
        jv item = L(items)->v[i];
        if (item.t != JV_STR)
            rc = jfail(c, TUNE_ERR_INPUT, "sequence item %zu: expected str instance, %s found", i, jv_type_name(item));
        else if (i && sbput(c, &sb, S(self)->s, S(self)->len)) rc = -1;
        if (!rc) rc = sbput(c, &sb, S(item)->s, S(item)->len);
    }
    jv_unref(items);
    if (rc) return tune_strbuf_free(&sb), -1;
    return jv_str_buf(c, &sb, out);
}

METHOD(m_splitlines)
{
    return bind_args(c, "splitlines", a, "", NULL) ? -1 : splitlines(c, S(self), out);
}

METHOD(m_get)
{
    jv s[2];
    if (bind_args(c, "get", a, "key! default", s)) return -1;
    const jv *v = dict_get(D(self), s[0]);
    return *out = jv_ref(v ? *v : or_default(s[1], jv_none())), 0;
}

METHOD(m_items) { return bind_args(c, "items", a, "", NULL) ? -1 : dict_items(c, self, out); }

static int keys_or_values(rctx *c, jv self, const jargs *a, int values, jv *out)
{
    if (bind_args(c, values ? "values" : "keys", a, "", NULL) || jv_list(c, D(self)->n, out)) return -1;
    for (size_t i = 0; i < D(self)->n; i++)
        if (list_push(c, L(*out), jv_ref(values ? D(self)->v[i] : D(self)->k[i]))) return jv_unref(*out), -1;
    return 0;
}
METHOD(m_keys) { return keys_or_values(c, self, a, 0, out); }
METHOD(m_values) { return keys_or_values(c, self, a, 1, out); }

/* list.count(x) / list.index(x) */
static int list_find(rctx *c, jv self, const jargs *a, int index, jv *out)
{
    jv s[1];
    if (bind_args(c, index ? "index" : "count", a, "value!", s)) return -1;
    int64_t n = 0;
    for (size_t i = 0; i < L(self)->n; i++) {
        if (!jv_eq(L(self)->v[i], s[0])) continue;
        if (index) return *out = jv_int((int64_t)i), 0;
        n++;
    }
    if (index) return jfail(c, TUNE_ERR_INPUT, "value is not in list");
    return *out = jv_int(n), 0;
}
METHOD(m_list_count) { return list_find(c, self, a, 0, out); }
METHOD(m_list_index) { return list_find(c, self, a, 1, out); }

METHOD(m_cycle)
{
    const jloop *l = self.u.o;
    if (!a->npos) return jfail(c, TUNE_ERR_INPUT, "no items for cycling given");
    return *out = jv_ref(a->pos[l->i % (size_t)a->npos]), 0;
}

static const struct {
    jv_type t;
    jbuiltin b;
} methods[] = {
    {JV_STR, {"strip", m_strip}},       {JV_STR, {"lstrip", m_lstrip}},
    {JV_STR, {"rstrip", m_rstrip}},     {JV_STR, {"split", m_split}},
    {JV_STR, {"startswith", m_startswith}}, {JV_STR, {"endswith", m_endswith}},
    {JV_STR, {"upper", m_upper}},       {JV_STR, {"lower", m_lower}},
    {JV_STR, {"title", m_title}},       {JV_STR, {"capitalize", m_capitalize}},
    {JV_STR, {"replace", m_replace}},   {JV_STR, {"find", m_find}},
    {JV_STR, {"rfind", m_rfind}},       {JV_STR, {"count", m_count}},
    {JV_STR, {"format", m_format}},     {JV_STR, {"join", m_join}},
    {JV_STR, {"splitlines", m_splitlines}},
    {JV_DICT, {"get", m_get}},          {JV_DICT, {"items", m_items}},
    {JV_DICT, {"keys", m_keys}},        {JV_DICT, {"values", m_values}},
    {JV_LIST, {"count", m_list_count}}, {JV_LIST, {"index", m_list_index}},
    {JV_LOOP, {"cycle", m_cycle}},
};

jbuiltin_fn find_method(jv self, const char *name)
{
    if (self.t == JV_LIST && L(self)->kind == SEQ_GENERATOR) return NULL;
    for (size_t i = 0; i < sizeof methods / sizeof *methods; i++)
        if (methods[i].t == self.t && !strcmp(methods[i].b.name, name)) return methods[i].b.fn;
    return NULL;
}

int unsafe_method(jv self, const char *name)
{
    static const char *const list_ops[] = {"append", "clear", "pop", "reverse", "insert", "sort", "extend",
                                           "remove", NULL};
    static const char *const dict_ops[] = {"clear", "pop", "popitem", "setdefault", "update", NULL};
    const char *const *ops = self.t == JV_LIST && L(self)->kind == SEQ_LIST ? list_ops
                             : self.t == JV_DICT                            ? dict_ops
                                                                            : NULL;
    for (; ops && *ops; ops++)
        if (!strcmp(*ops, name)) return 1;
    return 0;
}

/* ---- tests ---- */

#define TEST(name, expr)                                                                                            \
    static int name(rctx *c, jv v, const jargs *a, jv *out)                                                         \
    {                                                                                                               \
        (void)c, (void)a;                                                                                           \
        *out = jv_bool(expr);                                                                                       \
        return 0;                                                                                                   \
    }

TEST(t_defined, v.t != JV_UNDEF)
TEST(t_undefined, v.t == JV_UNDEF)
TEST(t_none, v.t == JV_NONE)
TEST(t_boolean, v.t == JV_BOOL)
TEST(t_true, v.t == JV_BOOL && v.u.i)
TEST(t_false, v.t == JV_BOOL && !v.u.i)
TEST(t_integer, v.t == JV_INT)
TEST(t_float, v.t == JV_FLOAT)
TEST(t_number, jv_is_num(v))
TEST(t_string, v.t == JV_STR)
TEST(t_mapping, v.t == JV_DICT)
TEST(t_sequence, v.t == JV_STR || (v.t == JV_LIST && L(v)->kind != SEQ_GENERATOR) || v.t == JV_DICT || v.t == JV_UNDEF)
TEST(t_iterable, v.t == JV_STR || v.t == JV_LIST || v.t == JV_DICT || v.t == JV_UNDEF)
TEST(t_callable, v.t == JV_FUNC)
TEST(t_escaped, v.t == JV_STR && S(v)->markup)

static int one_arg(rctx *c, const char *name, const jargs *a, jv *arg)
{
    jv s[1];
    if (bind_args(c, name, a, "other!", s)) return -1;
    *arg = s[0];
    return 0;
}

static int cmp_test(rctx *c, jv v, const jargs *a, jop op, jv *out)
{
    jv other;
    int r;
    const char *name = op == OP_EQ ? "eq" : op == OP_NE ? "ne" : op == OP_LT ? "lt" : op == OP_LE ? "le"
                     : op == OP_GT ? "gt" : "ge";
    if (one_arg(c, name, a, &other) || compare(c, op, v, other, &r)) return -1;
    return *out = jv_bool(r), 0;
}
#define CMP_TEST(name, op) \
    static int name(rctx *c, jv v, const jargs *a, jv *out) { return cmp_test(c, v, a, op, out); }
CMP_TEST(t_eq, OP_EQ)
CMP_TEST(t_ne, OP_NE)
CMP_TEST(t_lt, OP_LT)
CMP_TEST(t_le, OP_LE)
CMP_TEST(t_gt, OP_GT)
CMP_TEST(t_ge, OP_GE)

static int t_in(rctx *c, jv v, const jargs *a, jv *out)
{
    jv seq;
    int r;
    if (one_arg(c, "in", a, &seq) || contains(c, seq, v, &r)) return -1;
    return *out = jv_bool(r), 0;
}

static int t_sameas(rctx *c, jv v, const jargs *a, jv *out)
{
    jv other = jv_none();
    if (one_arg(c, "sameas", a, &other)) return -1;
    int same = v.t == other.t && (v.t == JV_NONE || v.t == JV_UNDEF ||
                                  (v.t == JV_BOOL || v.t == JV_INT ? v.u.i == other.u.i
                                   : v.t == JV_FLOAT              ? v.u.f == other.u.f
                                                                  : v.u.o == other.u.o));
    return *out = jv_bool(same), 0;
}

/* value % divisor == 0 (odd / even / divisibleby). */
static int mod_test(rctx *c, jv v, int64_t divisor, int64_t want, jv *out)
{
    jv m;
    if (binop(c, OP_MOD, v, jv_int(divisor), &m)) return -1;
    *out = jv_bool(jv_eq(m, jv_int(want)));
    return 0;
}

static int t_odd(rctx *c, jv v, const jargs *a, jv *out)
{
    return bind_args(c, "odd", a, "", NULL) ? -1 : mod_test(c, v, 2, 1, out);
}
static int t_even(rctx *c, jv v, const jargs *a, jv *out)
{
    return bind_args(c, "even", a, "", NULL) ? -1 : mod_test(c, v, 2, 0, out);
}
static int t_divisibleby(rctx *c, jv v, const jargs *a, jv *out)
{
    jv d;
    int64_t n = 1;
    return one_arg(c, "divisibleby", a, &d) || want_int(c, d, "divisibleby", &n) ? -1 : mod_test(c, v, n, 0, out);
}

/* str(v).islower() / isupper(): some cased character, and none of the other case. */
static int case_test(rctx *c, jv v, int upper, jv *out)
{
    jv s;
    if (jv_to_str(c, v, &s)) return -1;
    int cased = 0, ok = 1;
    for (size_t i = 0; i < S(s)->len && ok;) {
        utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)utf8_next(S(s)->s, S(s)->len, &i));
        if (k == (upper ? UTF8PROC_CATEGORY_LU : UTF8PROC_CATEGORY_LL)) cased = 1;
        else if (k == UTF8PROC_CATEGORY_LT || k == (upper ? UTF8PROC_CATEGORY_LL : UTF8PROC_CATEGORY_LU)) ok = 0;
    }
    jv_unref(s);
    return *out = jv_bool(ok && cased), 0;
}
static int t_lower(rctx *c, jv v, const jargs *a, jv *out)
{
    return bind_args(c, "lower", a, "", NULL) ? -1 : case_test(c, v, 0, out);
}
static int t_upper(rctx *c, jv v, const jargs *a, jv *out)
{
    return bind_args(c, "upper", a, "", NULL) ? -1 : case_test(c, v, 1, out);
}

static int t_filter(rctx *c, jv v, const jargs *a, jv *out)
{
    (void)c, (void)a;
    return *out = jv_bool(v.t == JV_STR && find_filter(S(v)->s)), 0;
}
static int t_test(rctx *c, jv v, const jargs *a, jv *out)
{
    (void)c, (void)a;
    return *out = jv_bool(v.t == JV_STR && find_test(S(v)->s)), 0;
}

static const jbuiltin tests[] = {
    {"defined", t_defined}, {"undefined", t_undefined}, {"none", t_none},       {"boolean", t_boolean},
    {"true", t_true},       {"false", t_false},         {"integer", t_integer}, {"float", t_float},
    {"number", t_number},   {"string", t_string},       {"mapping", t_mapping}, {"sequence", t_sequence},
    {"iterable", t_iterable}, {"callable", t_callable}, {"escaped", t_escaped}, {"eq", t_eq},
    {"equalto", t_eq},      {"==", t_eq},               {"ne", t_ne},           {"!=", t_ne},
    {"lt", t_lt},           {"lessthan", t_lt},         {"<", t_lt},            {"le", t_le},
    {"<=", t_le},           {"gt", t_gt},               {"greaterthan", t_gt},  {">", t_gt},
    {"ge", t_ge},           {">=", t_ge},               {"in", t_in},           {"sameas", t_sameas},
    {"odd", t_odd},         {"even", t_even},           {"divisibleby", t_divisibleby},
    {"lower", t_lower},     {"upper", t_upper},         {"filter", t_filter},   {"test", t_test},
};

static const jbuiltin filters[] = {
    {"abs", f_abs},         {"capitalize", f_capitalize}, {"center", f_center},   {"count", f_length},
    {"d", f_default},       {"default", f_default},       {"dictsort", f_dictsort}, {"e", f_escape},
    {"escape", f_escape},   {"first", f_first},           {"float", f_float},     {"format", f_format},
    {"indent", f_indent},   {"int", f_int},               {"items", f_items},     {"join", f_join},
    {"last", f_last},       {"length", f_length},         {"list", f_list},       {"lower", f_lower},
    {"map", f_map},         {"max", f_max},               {"min", f_min},         {"reject", f_reject},
    {"rejectattr", f_rejectattr}, {"replace", f_replace}, {"reverse", f_reverse}, {"round", f_round},
    {"safe", f_safe},       {"select", f_select},         {"selectattr", f_selectattr}, {"sort", f_sort},
    {"string", f_string},   {"sum", f_sum},               {"title", f_title},     {"tojson", f_tojson},
    {"trim", f_trim},       {"unique", f_unique},         {"upper", f_upper},     {"wordcount", f_wordcount},
};

static const jbuiltin *find_in(const jbuiltin *table, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(table[i].name, name)) return &table[i];
    return NULL;
}

const jbuiltin *find_filter(const char *name) { return find_in(filters, sizeof filters / sizeof *filters, name); }
const jbuiltin *find_test(const char *name) { return find_in(tests, sizeof tests / sizeof *tests, name); }

int run_test(rctx *c, const jbuiltin *t, jv v, const jargs *a, int *result)
{
    jv r;
    if (t->fn(c, v, a, &r)) return -1;
    *result = jv_truthy(r);
    jv_unref(r);
    return 0;
}

/* ---- globals ---- */

static int g_range(rctx *c, jv self, const jargs *a, jv *out)
{
    (void)self;
    int64_t v[3] = {0, 0, 1};
    if (a->nkw || a->npos < 1 || a->npos > 3)
        return jfail(c, TUNE_ERR_INPUT, "range expected 1 to 3 integer arguments");
    for (int i = 0; i < a->npos; i++)
        if (want_int(c, a->pos[i], "range() argument", &v[a->npos == 1 ? 1 : i])) return -1;
    if (!v[2]) return jfail(c, TUNE_ERR_INPUT, "range() arg 3 must not be zero");
    double count = v[2] > 0 ? ceil(((double)v[1] - (double)v[0]) / (double)v[2])
                            : ceil(((double)v[0] - (double)v[1]) / (double)-v[2]);
    if (count > 100000)
        return jfail(c, TUNE_ERR_INPUT, "Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).");
    if (count < 0) count = 0;
    if (jv_list(c, (size_t)count, out)) return -1;
    for (int64_t k = 0; k < (int64_t)count; k++)
        if (list_push(c, L(*out), jv_int(v[0] + k * v[2]))) return jv_unref(*out), -1;
    return 0;
}

/* dict(mapping or pairs, **kwargs) and namespace(...), which takes the same. */
static int build_dict(rctx *c, const jargs *a, const char *fname, jv *out)
{
    if (a->npos > 1) return jfail(c, TUNE_ERR_INPUT, "%s expected at most 1 argument, got %d", fname, a->npos);
    if (jv_dict(c, out)) return -1;
    if (a->npos) {
        jv src = a->pos[0], items;
        if (src.t == JV_DICT || src.t == JV_NS) {
            for (size_t i = 0; i < D(src)->n; i++)
                if (dict_set(c, D(*out), jv_ref(D(src)->k[i]), jv_ref(D(src)->v[i]))) return jv_unref(*out), -1;
        } else {
            if (jv_iter(c, src, &items)) return jv_unref(*out), -1;
            for (size_t i = 0; i < L(items)->n; i++) {
                jv pair = L(items)->v[i];
                if (pair.t != JV_LIST || L(pair)->n != 2) {
                    jv_unref(items), jv_unref(*out);
                    return jfail(c, TUNE_ERR_INPUT, "%s: sequence element #%zu is not a key, value pair", fname, i);
                }
                if (dict_set(c, D(*out), jv_ref(L(pair)->v[0]), jv_ref(L(pair)->v[1])))
                    return jv_unref(items), jv_unref(*out), -1;
            }
            jv_unref(items);
        }
    }
    for (int k = 0; k < a->nkw; k++) {
        jv key;
        if (jv_strz(c, a->kwname[k], &key) || dict_set(c, D(*out), key, jv_ref(a->kwval[k])))
            return jv_unref(*out), -1;
    }
    return 0;
}

static int g_dict(rctx *c, jv self, const jargs *a, jv *out)
{
    (void)self;
    return build_dict(c, a, "dict", out);
}

static int g_namespace(rctx *c, jv self, const jargs *a, jv *out)
{
    (void)self;
    if (build_dict(c, a, "namespace", out)) return -1;
    out->t = JV_NS;
    for (size_t i = 0; i < D(*out)->n; i++) {
        jv k = D(*out)->k[i];
        if (k.t == JV_STR && S(k)->s[0] == '_') {
            jfail(c, TUNE_ERR_INPUT, "Chat templates cannot store underscore-prefixed attributes on a namespace, but "
                                     "got '%s'. Please rename the attribute.", S(k)->s);
            return jv_unref(*out), -1;
        }
    }
    if (ns_register(c, *out)) return jv_unref(*out), -1;
    return 0;
}

static int g_raise_exception(rctx *c, jv self, const jargs *a, jv *out)
{
    (void)self, (void)out;
    jv s[1], msg;
    if (bind_args(c, "raise_exception", a, "message", s)) return -1;
    if (jv_to_str(c, or_default(s[0], jv_none()), &msg)) return -1;
    if (!c->failed) c->raised = 1;
    jfail(c, TUNE_ERR_INPUT, "%s", S(msg)->s);
    jv_unref(msg);
    return -1;
}

/* datetime.now().strftime(fmt), now being the render's time in UTC, in the C locale. */
static int g_strftime_now(rctx *c, jv self, const jargs *a, jv *out)
{
    (void)self;
    jv s[1];
    if (bind_args(c, "strftime_now", a, "format!", s) || want_str(c, s[0], "strftime_now format")) return -1;
    time_t now = (time_t)c->now;
    struct tm tm;
    if (!gmtime_r(&now, &tm)) return jfail(c, TUNE_ERR_INPUT, "strftime_now: the time is out of range");
    locale_t loc = newlocale(LC_ALL_MASK, "C", (locale_t)0);
    if (!loc) return joom(c);
    size_t cap = 64 + 8 * S(s[0])->len, n = 0;
    char *buf = NULL;
    while (S(s[0])->len && cap <= 65536) {
        char *nb = realloc(buf, cap);
        if (!nb) break;
        buf = nb;
        if ((n = strftime_l(buf, cap, S(s[0])->s, &tm, loc)) > 0) break;
        cap *= 2;
    }
    freelocale(loc);
    int rc = S(s[0])->len && !buf ? joom(c) : jv_str(c, buf ? buf : "", n, out);
    free(buf);
    return rc;
}

static const jfunc globals[] = {
    {.h = {-1}, .kind = F_BUILTIN, .name = "range", .fn = g_range},
    {.h = {-1}, .kind = F_BUILTIN, .name = "dict", .fn = g_dict},
    {.h = {-1}, .kind = F_BUILTIN, .name = "namespace", .fn = g_namespace},
    {.h = {-1}, .kind = F_BUILTIN, .name = "raise_exception", .fn = g_raise_exception},
    {.h = {-1}, .kind = F_BUILTIN, .name = "strftime_now", .fn = g_strftime_now},
};

const jfunc *find_global(const char *name)
{
    for (size_t i = 0; i < sizeof globals / sizeof *globals; i++)
        if (!strcmp(globals[i].name, name)) return &globals[i];
    return NULL;
}
