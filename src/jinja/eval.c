/* Runs the syntax tree: expressions with Python's semantics and jinja2's
 * sandbox (attribute then item lookup, Undefined for what is missing),
 * statements with jinja2's scoping: a for-loop iteration, a macro call and a
 * captured block each get a scope of their own; if blocks do not. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* eval and exec recursion, so the C stack stays bounded whatever the
 * template (trees are at most 1000 deep; macros add their calls). */
#define NESTING_MAX 1000

static int eval(rctx *c, const node *n, jv *out);

/* ---- scopes ---- */

static frame *frame_new(rctx *c, frame *parent)
{
    frame *f = calloc(1, sizeof *f);
    if (!f) return joom(c), NULL;
    f->rc = 1;
    f->parent = parent;
    if (parent) parent->rc++;
    return f;
}

/* The end of a scope: its variables go now, even if a macro defined in it
 * still holds it, which breaks the macro <-> scope cycle. */
static void frame_end(frame *f)
{
    frame_clear(f);
    frame_unref(f);
}

static int frame_set(rctx *c, frame *f, const char *name, jv v)
{
    for (size_t i = 0; i < f->n; i++)
        if (!strcmp(f->names[i], name)) {
            jv_unref(f->vals[i]);
            f->vals[i] = v;
            return 0;
        }
    if (f->n == f->cap) {
        size_t cap = f->cap ? 2 * f->cap : 8;
        const char **nn = realloc(f->names, cap * sizeof *nn);
        if (nn) f->names = nn;
        jv *nv = nn ? realloc(f->vals, cap * sizeof *nv) : NULL;
        if (!nv) return jv_unref(v), joom(c);
        f->vals = nv;
        f->cap = cap;
    }
    f->names[f->n] = name;
    f->vals[f->n++] = v;
    return 0;
}

static int lookup(rctx *c, const char *name, jv *out)
{
    for (const frame *f = c->frame; f; f = f->parent)
        for (size_t i = 0; i < f->n; i++)
            if (!strcmp(f->names[i], name)) return *out = jv_ref(f->vals[i]), 0;
    const jv *g = dict_getz(c->globals, name);
    if (g) return *out = jv_ref(*g), 0;
    const jfunc *fn = find_global(name);
    if (fn) return *out = (jv){.t = JV_FUNC, .u.o = (void *)fn}, 0;
    return jv_undef(c, out, "'%s' is undefined", name);
}

static int count_iteration(rctx *c)
{
    if (++c->iterations <= c->lim.max_iterations) return 0;
    return jfail(c, TUNE_ERR_INPUT, "more than max_iterations (%ld) loop iterations", c->lim.max_iterations);
}

int ns_register(rctx *c, jv ns)
{
    if (c->nns == c->capns) {
        size_t cap = c->capns ? 2 * c->capns : 16;
        jv *v = realloc(c->namespaces, cap * sizeof *v);
        if (!v) return joom(c);
        c->namespaces = v;
        c->capns = cap;
    }
    c->namespaces[c->nns++] = jv_ref(ns);
    return 0;
}

/* ---- attribute and item access (jinja2's sandbox getattr / getitem) ---- */

static int bound_method(rctx *c, jv self, const char *name, jbuiltin_fn fn, jv *out)
{
    jfunc *f = calloc(1, sizeof *f);
    if (!f) return joom(c);
    f->h.rc = 1;
    f->kind = F_METHOD;
    f->name = name;
    f->fn = fn;
    f->self = jv_ref(self);
    *out = (jv){.t = JV_FUNC, .u.o = f};
    return 0;
}

/* jinja2 names the object in its messages: 'dict object', 'None', ... */
static const char *object_name(jv v, char *buf, size_t size)
{
    if (v.t == JV_NONE) return "None";
    snprintf(buf, size, "%s object", jv_type_name(v));
    return buf;
}

static int no_attribute(rctx *c, jv obj, const char *name, jv *out)
{
    char b[64];
    return jv_undef(c, out, "'%s' has no attribute '%s'", object_name(obj, b, sizeof b), name);
}

static int loop_attr(rctx *c, jv obj, const char *name, jv *out)
{
    const jloop *l = obj.u.o;
    size_t n = l->items->n, i = l->i;
    static const char *const ints[] = {"index", "index0", "revindex", "revindex0", "length", "depth", "depth0"};
    const int64_t vals[] = {(int64_t)i + 1, (int64_t)i, (int64_t)(n - i), (int64_t)(n - i - 1), (int64_t)n, 1, 0};
    for (int k = 0; k < 7; k++)
        if (!strcmp(name, ints[k])) return *out = jv_int(vals[k]), 0;
    if (!strcmp(name, "first")) return *out = jv_bool(i == 0), 0;
    if (!strcmp(name, "last")) return *out = jv_bool(i + 1 == n), 0;
    if (!strcmp(name, "previtem"))
        return i > 0 ? (*out = jv_ref(l->items->v[i - 1]), 0) : jv_undef(c, out, "there is no previous item");
    if (!strcmp(name, "nextitem"))
        return i + 1 < n ? (*out = jv_ref(l->items->v[i + 1]), 0) : jv_undef(c, out, "there is no next item");
    return no_attribute(c, obj, name, out);
}

/* obj.name as jinja2's sandbox does it: the attribute (a method, say),
 * else the item, else an Undefined that says which. */
static int get_attr(rctx *c, jv obj, const char *name, jv *out)
{
    if (jv_check_defined(c, obj)) return -1;
    if (name[0] != '_') {
        jbuiltin_fn m = find_method(obj, name);
        if (m) return bound_method(c, obj, name, m, out);
        if (unsafe_method(obj, name))
            return jv_undef(c, out, "access to attribute '%s' of '%s' object is unsafe.", name, jv_type_name(obj));
    }
    if (obj.t == JV_DICT || obj.t == JV_NS) {
        if (jwork(c, D(obj)->n * JV_WORK)) return -1;
        const jv *v = dict_getz(D(obj), name);
        if (v) return *out = jv_ref(*v), 0;
    }
    if (obj.t == JV_LOOP) return loop_attr(c, obj, name, out);
    return no_attribute(c, obj, name, out);
}

/* A Python index into n items (negative from the end): -1 when outside. */
static int64_t index_of(jv key, size_t n)
{
    int64_t i = key.u.i;
    if (i < 0) i += (int64_t)n;
    return i >= 0 && (uint64_t)i < n ? i : -1;
}

int get_item(rctx *c, jv obj, jv key, jv *out)
{
    if (jv_check_defined(c, obj)) return -1;
    if (obj.t == JV_DICT) {
        if (jwork(c, D(obj)->n * JV_WORK)) return -1;
        const jv *v = dict_get(D(obj), key);
        if (v) return *out = jv_ref(*v), 0;
    }
    int int_key = key.t == JV_INT || key.t == JV_BOOL;
    if (int_key && obj.t == JV_LIST && L(obj)->kind != SEQ_GENERATOR) {
        int64_t i = index_of(key, L(obj)->n);
        if (i >= 0) return *out = jv_ref(L(obj)->v[i]), 0;
    }
    if (int_key && obj.t == JV_STR) {
        const jstr *s = S(obj);
        int64_t i = index_of(key, s->ascii ? s->len : utf8_count(s->s, s->len));
        if (i >= 0) {
            size_t from = utf8_offset(s, (size_t)i), to = from;
            utf8_next(s->s, s->len, &to);
            return jv_str(c, s->s + from, to - from, out);
        }
    }
    if (key.t == JV_STR) return get_attr(c, obj, S(key)->s, out);
    char b[64];
    tune_strbuf k = {0};
    if (jv_repr(c, &k, key)) return tune_strbuf_free(&k), -1;
    int rc = jv_undef(c, out, "%s has no element %s", object_name(obj, b, sizeof b), k.data ? k.data : "");
    tune_strbuf_free(&k);
    return rc;
}

/* Python's slice.indices(): the start, step and count a slice takes from n items. */
static int slice_indices(rctx *c, const jv *part, size_t n, int64_t *start, int64_t *step, size_t *count)
{
    for (int k = 0; k < 3; k++)
        if (part[k].t != JV_NONE && part[k].t != JV_INT && part[k].t != JV_BOOL)
            return jfail(c, TUNE_ERR_INPUT, "slice indices must be integers or None");
    *step = part[2].t == JV_NONE ? 1 : part[2].u.i;
    if (*step == 0) return jfail(c, TUNE_ERR_INPUT, "slice step cannot be zero");
    int64_t len = (int64_t)n, b[2];
    for (int k = 0; k < 2; k++) {
        if (part[k].t == JV_NONE) {
            b[k] = *step > 0 ? (k ? len : 0) : (k ? -1 : len - 1);
            continue;
        }
        int64_t v = part[k].u.i;
        if (v < 0) v = v + len < 0 ? (*step < 0 ? -1 : 0) : v + len;
        else if (v >= len) v = *step < 0 ? len - 1 : len;
        b[k] = v;
    }
    *start = b[0];
    int64_t span = *step > 0 ? b[1] - b[0] : b[0] - b[1], st = *step > 0 ? *step : -*step;
    *count = span <= 0 ? 0 : (size_t)((span - 1) / st + 1);
    return 0;
}

static int slice(rctx *c, jv obj, const jv *part, jv *out)
{
    if (jv_check_defined(c, obj)) return -1;
    /* jinja2 compiles a slice to a plain Python subscript: no Undefined here */
    if ((obj.t != JV_LIST && obj.t != JV_STR) || (obj.t == JV_LIST && L(obj)->kind == SEQ_GENERATOR))
        return jfail(c, TUNE_ERR_INPUT, "'%s' object is not subscriptable", jv_type_name(obj));
    int64_t start, step;
    size_t count;
    if (obj.t == JV_LIST) {
        if (slice_indices(c, part, L(obj)->n, &start, &step, &count) || jv_list(c, count, out)) return -1;
        L(*out)->kind = L(obj)->kind;
        for (size_t k = 0; k < count; k++)
            if (list_push(c, L(*out), jv_ref(L(obj)->v[start + (int64_t)k * step]))) return jv_unref(*out), -1;
        return 0;
    }
    const jstr *s = S(obj);
    size_t n = s->ascii ? s->len : utf8_count(s->s, s->len);
    size_t *off = malloc((n + 1) * sizeof *off); /* byte offset of each code point */
    if (!off) return joom(c);
    for (size_t i = 0, k = 0; k <= n; k++) {
        off[k] = i;
        if (k < n) utf8_next(s->s, s->len, &i);
    }
    tune_strbuf sb = {0};
    int rc = slice_indices(c, part, n, &start, &step, &count);
    for (size_t k = 0; !rc && k < count; k++) {
        size_t i = (size_t)(start + (int64_t)k * step);
        rc = sbput(c, &sb, s->s + off[i], off[i + 1] - off[i]);
    }
    free(off);
    if (rc) return tune_strbuf_free(&sb), -1;
    return jv_str_buf(c, &sb, out);
}

/* ---- operators ---- */

static int type_error2(rctx *c, const char *op, jv a, jv b)
{
    return jfail(c, TUNE_ERR_INPUT, "unsupported operand type(s) for %s: '%s' and '%s'", op, jv_type_name(a),
                 jv_type_name(b));
}

static int overflow(rctx *c)
{
    return jfail(c, TUNE_ERR_INPUT, "integer overflow (ints are 64-bit here)");
}

static double fnum(jv v) { return v.t == JV_FLOAT ? v.u.f : (double)v.u.i; }

/* markupsafe's escape(), for `Markup + str`. */
static int html_escape(rctx *c, tune_strbuf *sb, const jstr *s)
{
    for (size_t i = 0; i < s->len; i++) {
        const char *e = NULL;
        switch (s->s[i]) {
        case '&': e = "&amp;"; break;
        case '<': e = "&lt;"; break;
        case '>': e = "&gt;"; break;
        case '"': e = "&#34;"; break;
        case '\'': e = "&#39;"; break;
        default: break;
        }
        if (e ? sbputs(c, sb, e) : sbput(c, sb, s->s + i, 1)) return -1;
    }
    return 0;
}

int escape_str(rctx *c, jv v, jv *out)
{
    tune_strbuf sb = {0};
    if (html_escape(c, &sb, S(v)) || jv_str_buf(c, &sb, out)) return tune_strbuf_free(&sb), -1;
    S(*out)->markup = 1;
    return 0;
}

/* str + str; a Markup side escapes the other and the result is Markup. */
static int add_str(rctx *c, jv a, jv b, jv *out)
{
    int markup = S(a)->markup || S(b)->markup;
    tune_strbuf sb = {0};
    int rc = markup && !S(a)->markup ? html_escape(c, &sb, S(a)) : sbput(c, &sb, S(a)->s, S(a)->len);
    if (!rc) rc = markup && !S(b)->markup ? html_escape(c, &sb, S(b)) : sbput(c, &sb, S(b)->s, S(b)->len);
    if (rc || jv_str_buf(c, &sb, out)) return tune_strbuf_free(&sb), -1;
    S(*out)->markup = (unsigned char)markup;
    return 0;
}

static int repeat(rctx *c, jv seq, int64_t times, jv *out)
{
    if (seq.t == JV_STR) {
        tune_strbuf sb = {0};
        for (int64_t k = 0; k < times; k++)
            if (sbput(c, &sb, S(seq)->s, S(seq)->len)) return tune_strbuf_free(&sb), -1;
        if (jv_str_buf(c, &sb, out)) return -1;
        S(*out)->markup = S(seq)->markup;
        return 0;
    }
    if (jv_list(c, 0, out)) return -1;
    L(*out)->kind = L(seq)->kind;
    for (int64_t k = 0; k < times; k++)
        for (size_t i = 0; i < L(seq)->n; i++)
            if (list_push(c, L(*out), jv_ref(L(seq)->v[i]))) return jv_unref(*out), -1;
    return 0;
}

/* Python's float floor division and modulo (the result takes the divisor's sign). */
static void float_divmod(double a, double b, double *fdiv, double *mod)
{
    double m = fmod(a, b), div = (a - m) / b;
    if (m != 0.0) {
        if ((b < 0) != (m < 0)) m += b, div -= 1.0;
    } else {
        m = copysign(0.0, b);
    }
    if (div != 0.0) {
        double fl = floor(div);
        *fdiv = div - fl > 0.5 ? fl + 1.0 : fl;
    } else {
        *fdiv = copysign(0.0, a / b);
    }
    *mod = m;
}

static int int_pow(rctx *c, int64_t base, int64_t e, jv *out)
{
    int64_t r = 1;
    while (e > 0) {
        if ((e & 1) && __builtin_mul_overflow(r, base, &r)) return overflow(c);
        e >>= 1;
        if (e && __builtin_mul_overflow(base, base, &base)) return overflow(c);
    }
    *out = jv_int(r);
    return 0;
}

static int arith(rctx *c, jop op, jv a, jv b, jv *out)
{
    static const char *const sym[] = {"+", "-", "*", "/", "//", "%", "**"};
    int ints = a.t != JV_FLOAT && b.t != JV_FLOAT;
    if (!jv_is_num(a) || !jv_is_num(b)) return type_error2(c, sym[op], a, b);
    int64_t x = a.u.i, y = b.u.i, r;
    double fx = fnum(a), fy = fnum(b), fd, fm;
    switch (op) {
    case OP_ADD:
        if (!ints) return *out = jv_float(fx + fy), 0;
        return __builtin_add_overflow(x, y, &r) ? overflow(c) : (*out = jv_int(r), 0);
    case OP_SUB:
        if (!ints) return *out = jv_float(fx - fy), 0;
        return __builtin_sub_overflow(x, y, &r) ? overflow(c) : (*out = jv_int(r), 0);
    case OP_MUL:
        if (!ints) return *out = jv_float(fx * fy), 0;
        return __builtin_mul_overflow(x, y, &r) ? overflow(c) : (*out = jv_int(r), 0);
    case OP_DIV:
        if (fy == 0.0) return jfail(c, TUNE_ERR_INPUT, "division by zero");
        return *out = jv_float(fx / fy), 0;
    case OP_FLOORDIV:
    case OP_MOD:
        if (ints) {
            if (y == 0) return jfail(c, TUNE_ERR_INPUT, "integer division or modulo by zero");
            if (x == INT64_MIN && y == -1) return op == OP_MOD ? (*out = jv_int(0), 0) : overflow(c);
            int64_t q = x / y, m = x % y;
            if (m != 0 && ((m < 0) != (y < 0))) q--, m += y;
            return *out = jv_int(op == OP_MOD ? m : q), 0;
        }
        if (fy == 0.0) return jfail(c, TUNE_ERR_INPUT, "float %s by zero", op == OP_MOD ? "modulo" : "floor division");
        float_divmod(fx, fy, &fd, &fm);
        return *out = jv_float(op == OP_MOD ? fm : fd), 0;
    case OP_POW:
        if (ints && y >= 0) return int_pow(c, x, y, out);
        if (fx == 0.0 && fy < 0) return jfail(c, TUNE_ERR_INPUT, "0.0 cannot be raised to a negative power");
        if (fx < 0 && fy != floor(fy)) return jfail(c, TUNE_ERR_INPUT, "a negative number to a fractional power");
        if (isinf(pow(fx, fy)) && isfinite(fx) && isfinite(fy))
            return jfail(c, TUNE_ERR_INPUT, "(34, 'Numerical result out of range')");
        return *out = jv_float(pow(fx, fy)), 0;
    default: return type_error2(c, "?", a, b);
    }
}

int binop(rctx *c, jop op, jv a, jv b, jv *out)
{
    if (op == OP_CONCAT) { /* str(a) ~ str(b): Undefined is "" here */
        tune_strbuf sb = {0};
        if (jv_print(c, &sb, a) || jv_print(c, &sb, b)) return tune_strbuf_free(&sb), -1;
        return jv_str_buf(c, &sb, out);
    }
    if (jv_check_defined(c, a) || jv_check_defined(c, b)) return -1;
    if (op == OP_ADD && a.t == JV_STR) {
        if (b.t == JV_STR) return add_str(c, a, b, out);
        return jfail(c, TUNE_ERR_INPUT, "can only concatenate str (not \"%s\") to str", jv_type_name(b));
    }
    if (op == OP_ADD && a.t == JV_LIST) {
        if (b.t != JV_LIST || L(a)->kind != L(b)->kind || L(a)->kind == SEQ_GENERATOR)
            return jfail(c, TUNE_ERR_INPUT, "can only concatenate %s (not \"%s\") to %s", jv_type_name(a),
                         jv_type_name(b), jv_type_name(a));
        if (jv_list(c, L(a)->n + L(b)->n, out)) return -1;
        L(*out)->kind = L(a)->kind;
        for (int side = 0; side < 2; side++) {
            const jlist *l = L(side ? b : a);
            for (size_t i = 0; i < l->n; i++)
                if (list_push(c, L(*out), jv_ref(l->v[i]))) return jv_unref(*out), -1;
        }
        return 0;
    }
    if (op == OP_MUL && (a.t == JV_STR || a.t == JV_LIST || b.t == JV_STR || b.t == JV_LIST)) {
        int a_seq = a.t == JV_STR || a.t == JV_LIST;
        jv seq = a_seq ? a : b, times = a_seq ? b : a;
        if (seq.t == JV_LIST && L(seq)->kind == SEQ_GENERATOR) return type_error2(c, "*", a, b);
        if (times.t != JV_INT && times.t != JV_BOOL)
            return jfail(c, TUNE_ERR_INPUT, "can't multiply sequence by non-int of type '%s'", jv_type_name(times));
        return repeat(c, seq, times.u.i, out);
    }
    if (op == OP_MOD && a.t == JV_STR) return percent_format(c, a, b, out);
    return arith(c, op, a, b, out);
}

/* Python's dicts and sets take only hashable keys. */
int check_hashable(rctx *c, jv v)
{
    if (v.t == JV_DICT || v.t == JV_NS || (v.t == JV_LIST && L(v)->kind == SEQ_LIST))
        return jfail(c, TUNE_ERR_INPUT, "unhashable type: '%s'", jv_type_name(v));
    return 0;
}

/* item in container */
int contains(rctx *c, jv container, jv item, int *result)
{
    *result = 0;
    switch (container.t) {
    case JV_UNDEF: return 0;
    case JV_STR:
        if (item.t != JV_STR)
            return jfail(c, TUNE_ERR_INPUT, "'in <string>' requires string as left operand, not %s",
                         jv_type_name(item));
        if (jwork(c, S(container)->len)) return -1;
        *result = memmem(S(container)->s, S(container)->len, S(item)->s, S(item)->len) != NULL ||
                  S(item)->len == 0;
        return 0;
    case JV_LIST: {
        size_t i = 0;
        while (i < L(container)->n && !*result) *result = jv_eq(L(container)->v[i++], item);
        return jwork(c, i * JV_WORK);
    }
    case JV_DICT:
        if (check_hashable(c, item) || jwork(c, D(container)->n * JV_WORK)) return -1;
        *result = dict_get(D(container), item) != NULL;
        return 0;
    default:
        return jfail(c, TUNE_ERR_INPUT, "argument of type '%s' is not iterable", jv_type_name(container));
    }
}

int compare(rctx *c, jop op, jv a, jv b, int *result)
{
    int r;
    switch (op) {
    case OP_EQ: *result = jv_eq(a, b); return 0;
    case OP_NE: *result = !jv_eq(a, b); return 0;
    case OP_IN:
    case OP_NOTIN:
        if (contains(c, b, a, &r)) return -1;
        *result = op == OP_IN ? r : !r;
        return 0;
    default:
        if (jv_cmp(c, a, b, &r)) return -1;
        *result = op == OP_LT ? r < 0 : op == OP_LE ? r <= 0 : op == OP_GT ? r > 0 : r >= 0;
        return 0;
    }
}

/* ---- calls ---- */

static void free_args(jargs *a)
{
    for (int i = 0; i < a->npos; i++) jv_unref(a->pos[i]);
    for (int i = 0; i < a->nkw; i++) jv_unref(a->kwval[i]);
    a->npos = a->nkw = 0;
}

static int eval_args(rctx *c, const node *n, jargs *a)
{
    a->npos = a->nkw = 0;
    for (int i = 0; i < n->items.n; i++, a->npos++)
        if (eval(c, n->items.v[i], &a->pos[i])) return free_args(a), -1;
    for (int i = 0; i < n->kw.n; i++, a->nkw++) {
        a->kwname[i] = n->names[i];
        if (eval(c, n->kw.v[i], &a->kwval[i])) return free_args(a), -1;
    }
    return 0;
}

static int exec_body(rctx *c, const nodelist *body);

/* Runs body in scope f (taken) and returns what it printed. */
static int run_scoped(rctx *c, frame *f, const nodelist *body, jv *out)
{
    tune_strbuf sb = {0}, *saved_out = c->out;
    frame *saved = c->frame;
    c->out = &sb;
    c->frame = f;
    int rc = exec_body(c, body);
    c->frame = saved;
    c->out = saved_out;
    frame_end(f);
    if (rc < 0) return tune_strbuf_free(&sb), -1;
    return jv_str_buf(c, &sb, out);
}

static int call_macro(rctx *c, const jfunc *fn, const jargs *a, jv *out)
{
    const node *def = fn->def;
    if (c->depth >= c->lim.max_depth)
        return jfail(c, TUNE_ERR_INPUT, "macro calls nested deeper than max_depth (%d)", c->lim.max_depth);
    if (a->npos > def->nnames)
        return jfail(c, TUNE_ERR_INPUT, "macro '%s' takes not more than %d argument(s)", fn->name, def->nnames);
    frame *f = frame_new(c, fn->closure);
    if (!f) return -1;
    unsigned char given[JARGS_MAX * 2] = {0};
    for (int i = 0; i < a->npos; i++) {
        given[i] = 1;
        if (frame_set(c, f, def->names[i], jv_ref(a->pos[i]))) return frame_end(f), -1;
    }
    for (int k = 0; k < a->nkw; k++) {
        int i = 0;
        while (i < def->nnames && strcmp(def->names[i], a->kwname[k])) i++;
        const char *name = i < def->nnames ? def->names[i] : "caller";
        if (i == def->nnames && (fn->kind != F_MACRO || strcmp(a->kwname[k], "caller")))
            return frame_end(f), jfail(c, TUNE_ERR_INPUT, "macro '%s' takes no keyword argument '%s'", fn->name,
                                       a->kwname[k]);
        if (i < def->nnames && given[i]++)
            return frame_end(f), jfail(c, TUNE_ERR_INPUT, "macro '%s' got multiple values for argument '%s'",
                                       fn->name, name);
        if (frame_set(c, f, name, jv_ref(a->kwval[k]))) return frame_end(f), -1;
    }
    frame *saved = c->frame;
    c->frame = f; /* defaults see the parameters before them */
    for (int i = 0; i < def->nnames; i++) {
        if (given[i]) continue;
        jv v;
        int rc = def->kw.v[i] ? eval(c, def->kw.v[i], &v)
                              : jv_undef(c, &v, "parameter '%s' was not provided", def->names[i]);
        if (rc || frame_set(c, f, def->names[i], v)) return c->frame = saved, frame_end(f), -1;
    }
    c->frame = saved;
    c->depth++;
    int rc = run_scoped(c, f, &def->body, out);
    c->depth--;
    return rc;
}

static int call_value(rctx *c, jv fn, const jargs *a, jv *out)
{
    if (jv_check_defined(c, fn)) return -1;
    if (fn.t != JV_FUNC) return jfail(c, TUNE_ERR_INPUT, "'%s' object is not callable", jv_type_name(fn));
    const jfunc *f = fn.u.o;
    if (f->kind == F_MACRO || f->kind == F_CALLER) return call_macro(c, f, a, out);
    return f->fn(c, f->self, a, out);
}

static int eval_call(rctx *c, const node *n, jv *out)
{
    jv fn;
    jargs a;
    if (eval(c, n->a, &fn)) return -1;
    if (eval_args(c, n, &a)) return jv_unref(fn), -1;
    int rc = call_value(c, fn, &a, out);
    free_args(&a);
    jv_unref(fn);
    return rc;
}

static int eval_filter(rctx *c, const node *n, jv *out)
{
    jv in;
    jargs a;
    if (n->a ? eval(c, n->a, &in) : (in = jv_ref(c->block_in), 0)) return -1;
    if (eval_args(c, n, &a)) return jv_unref(in), -1;
    int rc, result;
    if (!n->fn) rc = jfail(c, TUNE_ERR_INPUT, "No %s named '%s' found.", n->kind == E_FILTER ? "filter" : "test",
                           n->name);
    else if (n->kind == E_FILTER) rc = n->fn->fn(c, in, &a, out);
    else if (!(rc = run_test(c, n->fn, in, &a, &result))) *out = jv_bool(result);
    free_args(&a);
    jv_unref(in);
    return rc;
}

/* ---- expressions ---- */

static int eval_items(rctx *c, const node *n, jv *out)
{
    if (n->kind == E_DICT ? jv_dict(c, out) : jv_list(c, (size_t)n->items.n, out)) return -1;
    if (n->kind == E_TUPLE) L(*out)->kind = SEQ_TUPLE;
    for (int i = 0; i < n->items.n; i++) {
        jv v, k = jv_none();
        if (n->kind == E_DICT && (eval(c, n->items.v[i++], &k) || check_hashable(c, k)))
            return jv_unref(k), jv_unref(*out), -1;
        if (eval(c, n->items.v[i], &v)) return jv_unref(k), jv_unref(*out), -1;
        if (n->kind == E_DICT ? dict_set(c, D(*out), k, v) : list_push(c, L(*out), v)) return jv_unref(*out), -1;
    }
    return 0;
}

static int eval_cmp(rctx *c, const node *n, jv *out)
{
    jv left, right;
    int r = 1;
    if (eval(c, n->a, &left)) return -1;
    for (int i = 0; i < n->items.n && r; i++) {
        if (eval(c, n->items.v[i], &right)) return jv_unref(left), -1;
        int rc = compare(c, (jop)n->ops[i], left, right, &r);
        jv_unref(left);
        left = right;
        if (rc) return jv_unref(left), -1;
    }
    jv_unref(left);
    *out = jv_bool(r);
    return 0;
}

static int eval_node(rctx *c, const node *n, jv *out)
{
    jv a, b, parts[3];
    int rc;
    switch (n->kind) {
    case E_CONST: *out = jv_ref(n->value); return 0;
    case E_NAME: return lookup(c, n->name, out);
    case E_LIST:
    case E_TUPLE:
    case E_DICT: return eval_items(c, n, out);
    case E_ATTR:
        if (eval(c, n->a, &a)) return -1;
        rc = get_attr(c, a, n->name, out);
        jv_unref(a);
        return rc;
    case E_ITEM:
        if (eval(c, n->a, &a)) return -1;
        if (eval(c, n->b, &b)) return jv_unref(a), -1;
        rc = get_item(c, a, b, out);
        jv_unref(a);
        jv_unref(b);
        return rc;
    case E_SLICE:
        if (eval(c, n->a, &a)) return -1;
        rc = 0;
        for (int k = 0; k < 3; k++) {
            parts[k] = jv_none();
            if (!rc && n->items.v[k]) rc = eval(c, n->items.v[k], &parts[k]);
        }
        if (!rc) rc = slice(c, a, parts, out);
        for (int k = 0; k < 3; k++) jv_unref(parts[k]);
        jv_unref(a);
        return rc;
    case E_CALL: return eval_call(c, n, out);
    case E_FILTER:
    case E_TEST: return eval_filter(c, n, out);
    case E_NOT:
        if (eval(c, n->a, &a)) return -1;
        *out = jv_bool(!jv_truthy(a));
        jv_unref(a);
        return 0;
    case E_NEG:
    case E_POS:
        if (eval(c, n->a, &a)) return -1;
        if (jv_check_defined(c, a)) return jv_unref(a), -1;
        if (!jv_is_num(a))
            rc = jfail(c, TUNE_ERR_INPUT, "bad operand type for unary %c: '%s'", n->kind == E_NEG ? '-' : '+',
                       jv_type_name(a));
        else if (a.t == JV_FLOAT) rc = (*out = jv_float(n->kind == E_NEG ? -a.u.f : a.u.f), 0);
        else if (n->kind == E_NEG && a.u.i == INT64_MIN) rc = overflow(c);
        else rc = (*out = jv_int(n->kind == E_NEG ? -a.u.i : a.u.i), 0);
        jv_unref(a);
        return rc;
    case E_BIN:
        if (eval(c, n->a, &a)) return -1;
        if (eval(c, n->b, &b)) return jv_unref(a), -1;
        rc = binop(c, n->op, a, b, out);
        jv_unref(a);
        jv_unref(b);
        return rc;
    case E_AND:
    case E_OR: /* Python's: the deciding operand itself */
        if (eval(c, n->a, &a)) return -1;
        if (jv_truthy(a) == (n->kind == E_OR)) return *out = a, 0;
        jv_unref(a);
        return eval(c, n->b, out);
    case E_CMP: return eval_cmp(c, n, out);
    case E_COND:
        if (eval(c, n->a, &a)) return -1;
        rc = jv_truthy(a);
        jv_unref(a);
        if (rc) return eval(c, n->b, out);
        if (n->c) return eval(c, n->c, out);
        return jv_undef(c, out, "the inline if-expression on line %d evaluated to false and no else section was "
                                "defined.", n->line);
    default: return jfail(c, TUNE_ERR_RUN, "internal error: not an expression");
    }
}

static int enter(rctx *c, const node *n, const node **saved)
{
    *saved = c->at;
    c->at = n;
    if (++c->nesting <= NESTING_MAX) return 0;
    return jfail(c, TUNE_ERR_INPUT, "expressions, blocks and macro calls nested deeper than %d", NESTING_MAX);
}

/* On failure *out is None, so a caller may release it either way. */
static int eval(rctx *c, const node *n, jv *out)
{
    const node *saved;
    int rc = enter(c, n, &saved) ? -1 : eval_node(c, n, out);
    if (rc) *out = jv_none();
    c->nesting--;
    c->at = saved;
    return rc;
}

/* ---- statements ---- */

/* Binds for-loop / set targets in f: one name, or a tuple unpacked. */
static int assign(rctx *c, frame *f, const node *n, jv v)
{
    if (n->nnames == 1) return frame_set(c, f, n->names[0], v);
    jv items;
    if (jv_iter(c, v, &items)) return jv_unref(v), -1;
    jv_unref(v);
    size_t got = L(items)->n, want = (size_t)n->nnames;
    int rc = 0;
    if (got != want)
        rc = got > want ? jfail(c, TUNE_ERR_INPUT, "too many values to unpack (expected %zu)", want)
                        : jfail(c, TUNE_ERR_INPUT, "not enough values to unpack (expected %zu, got %zu)", want, got);
    for (size_t i = 0; i < want && !rc; i++) rc = frame_set(c, f, n->names[i], jv_ref(L(items)->v[i]));
    jv_unref(items);
    return rc;
}

static int exec_set(rctx *c, const node *n, jv v)
{
    if (!n->name) return assign(c, c->frame, n, v);
    jv ns; /* {% set ns.attr = v %} */
    if (lookup(c, n->names[0], &ns)) return jv_unref(v), -1;
    int rc;
    if (ns.t != JV_NS) rc = jfail(c, TUNE_ERR_INPUT, "cannot assign attribute on non-namespace object");
    else if (n->name[0] == '_')
        rc = jfail(c, TUNE_ERR_INPUT, "Chat templates cannot store underscore-prefixed attributes on a namespace, "
                                      "but got '%s'. Please rename the attribute.", n->name);
    else {
        jv key;
        if (!(rc = jv_strz(c, n->name, &key))) {
            rc = dict_set(c, D(ns), key, v); /* takes key and v */
            v = jv_none();
        }
    }
    jv_unref(v);
    jv_unref(ns);
    return rc;
}

/* The text a block prints, in a scope of its own, then through its filters. */
static int capture(rctx *c, const node *n, jv *out)
{
    frame *f = frame_new(c, c->frame);
    jv text;
    if (!f || run_scoped(c, f, &n->body, &text)) return -1;
    if (!n->b) return *out = text, 0;
    jv saved = c->block_in;
    c->block_in = text;
    int rc = eval(c, n->b, out);
    c->block_in = saved;
    jv_unref(text);
    return rc;
}

static int print_value(rctx *c, jv v)
{
    int rc = jv_print(c, c->out, v);
    jv_unref(v);
    return rc;
}

static int exec_for(rctx *c, const node *n)
{
    jv seq, items, loopv = jv_none();
    if (eval(c, n->a, &seq)) return -1;
    int rc = jv_iter(c, seq, &items);
    jv_unref(seq);
    if (rc) return -1;
    frame *parent = c->frame;
    if (n->b) { /* for x in y if cond: the items that pass, before the loop counts them */
        jv kept;
        if (jv_list(c, 0, &kept)) return jv_unref(items), -1;
        for (size_t i = 0; i < L(items)->n && !rc; i++) {
            jv pass = jv_none();
            frame *f = frame_new(c, parent);
            rc = !f || count_iteration(c) || assign(c, f, n, jv_ref(L(items)->v[i]));
            c->frame = f;
            if (!rc) rc = eval(c, n->b, &pass);
            c->frame = parent;
            if (f) frame_end(f);
            if (!rc && jv_truthy(pass)) rc = list_push(c, L(kept), jv_ref(L(items)->v[i]));
            jv_unref(pass);
        }
        jv_unref(items);
        items = kept;
        if (rc) return jv_unref(items), -1;
    }
    jloop *lp = calloc(1, sizeof *lp);
    if (!lp) return jv_unref(items), joom(c);
    lp->h.rc = 1;
    lp->items = L(jv_ref(items));
    loopv = (jv){.t = JV_LOOP, .u.o = lp};
    for (size_t i = 0; i < L(items)->n && rc >= 0; i++) {
        lp->i = i;
        frame *f = frame_new(c, parent);
        if (!f || count_iteration(c) || assign(c, f, n, jv_ref(L(items)->v[i])) ||
            frame_set(c, f, "loop", jv_ref(loopv))) {
            rc = -1;
        } else {
            c->frame = f;
            rc = exec_body(c, &n->body);
            c->frame = parent;
        }
        if (f) frame_end(f);
        if (rc == 1) break;
        if (rc == 2) rc = 0;
    }
    if (rc > 0) rc = 0; /* this loop's break ends here */
    if (!rc && !L(items)->n && n->orelse.n) { /* a break or continue in the else is the outer loop's */
        frame *f = frame_new(c, parent);
        c->frame = f;
        rc = f ? exec_body(c, &n->orelse) : -1;
        c->frame = parent;
        if (f) frame_end(f);
    }
    jv_unref(loopv);
    jv_unref(items);
    return rc;
}

/* A macro or a call block's caller: a function closing over this scope. */
static int make_macro(rctx *c, const node *n, jfunc_kind kind, jv *out)
{
    jfunc *f = calloc(1, sizeof *f);
    if (!f) return joom(c);
    f->h.rc = 1;
    f->kind = kind;
    f->name = kind == F_MACRO ? n->name : "caller";
    f->def = n;
    f->closure = c->frame;
    c->frame->rc++;
    *out = (jv){.t = JV_FUNC, .u.o = f};
    return 0;
}

static int exec_callblock(rctx *c, const node *n)
{
    const node *call = n->a;
    jv fn, result;
    jargs a;
    if (eval(c, call->a, &fn)) return -1;
    if (eval_args(c, call, &a)) return jv_unref(fn), -1;
    int rc = 0;
    if (a.nkw == JARGS_MAX) rc = jfail(c, TUNE_ERR_INPUT, "more than %d arguments", JARGS_MAX);
    else if (!(rc = make_macro(c, n, F_CALLER, &a.kwval[a.nkw]))) a.kwname[a.nkw++] = "caller";
    if (!rc) rc = call_value(c, fn, &a, &result);
    free_args(&a);
    jv_unref(fn);
    return rc ? -1 : print_value(c, result);
}

/* {% generation %}: its text, and where it lands in the output (jinja2
 * measures the top-level output so far, as Transformers does). */
static int exec_generation(rctx *c, const node *n)
{
    jv text;
    if (capture(c, n, &text)) return -1;
    if (c->nspans == c->capspans) {
        int cap = c->capspans ? 2 * c->capspans : 8;
        tune_jinja_span *s = realloc(c->spans, (size_t)cap * sizeof *s);
        if (!s) return jv_unref(text), joom(c);
        c->spans = s;
        c->capspans = cap;
    }
    c->spans[c->nspans].start = c->root->len;
    c->spans[c->nspans++].end = c->root->len + S(text)->len;
    return print_value(c, text);
}

/* {% with %}: the values, seen from outside, bound in a scope of their own;
 * a break or continue inside belongs to the loop around it. */
static int exec_with(rctx *c, const node *n)
{
    frame *parent = c->frame, *f = frame_new(c, parent);
    int rc = f ? 0 : -1;
    for (int i = 0; !rc && i < n->nnames; i++) {
        jv v;
        rc = eval(c, n->kw.v[i], &v) || frame_set(c, f, n->names[i], v) ? -1 : 0;
    }
    if (!rc) {
        c->frame = f;
        rc = exec_body(c, &n->body);
        c->frame = parent;
    }
    if (f) frame_end(f);
    return rc;
}

/* 0, -1 on failure, 1 for break, 2 for continue. */
static int exec_node(rctx *c, const node *n)
{
    jv v;
    switch (n->kind) {
    case S_DATA: return sbput(c, c->out, n->text, n->len);
    case S_OUT:
        if (n->a) return eval(c, n->a, &v) ? -1 : print_value(c, v);
        for (int i = 0; i < n->items.n; i++)
            if (eval(c, n->items.v[i], &v) || print_value(c, v)) return -1;
        return 0;
    case S_IF: {
        if (eval(c, n->a, &v)) return -1;
        int truth = jv_truthy(v);
        jv_unref(v);
        return exec_body(c, truth ? &n->body : &n->orelse);
    }
    case S_FOR: return exec_for(c, n);
    case S_SET: return eval(c, n->a, &v) ? -1 : exec_set(c, n, v);
    case S_SETBLOCK: return capture(c, n, &v) ? -1 : exec_set(c, n, v);
    case S_FILTERBLOCK: return capture(c, n, &v) ? -1 : print_value(c, v);
    case S_MACRO: return make_macro(c, n, F_MACRO, &v) ? -1 : frame_set(c, c->frame, n->name, v);
    case S_CALLBLOCK: return exec_callblock(c, n);
    case S_GEN: return exec_generation(c, n);
    case S_WITH: return exec_with(c, n);
    case S_BREAK: return 1;
    case S_CONTINUE: return 2;
    default: return jfail(c, TUNE_ERR_RUN, "internal error: not a statement");
    }
}

static int exec_body(rctx *c, const nodelist *body)
{
    for (int i = 0; i < body->n; i++) {
        const node *saved;
        int rc = enter(c, body->v[i], &saved) ? -1 : exec_node(c, body->v[i]);
        c->nesting--;
        c->at = saved;
        if (rc) return rc;
    }
    return 0;
}

/* ---- the API ---- */

tune_status tune_jinja_render(const tune_jinja *t, const tune_jinja_render_options *opt, tune_strbuf *out,
                              tune_jinja_span **spans, int *n_spans, int *raised, tune_error *err)
{
    if (spans) *spans = NULL;
    if (n_spans) *n_spans = 0;
    if (raised) *raised = 0;
    tune_strbuf text = {0};
    rctx c = {.t = t, .err = err, .root = &text, .out = &text, .now = opt->now, .lim = opt->limits};
    if (c.lim.max_depth <= 0) c.lim.max_depth = 64;
    if (c.lim.max_iterations <= 0) c.lim.max_iterations = 1000000;
    if (!c.lim.max_output) c.lim.max_output = (size_t)16 << 20;
    if (!c.lim.max_work) c.lim.max_work = (size_t)1 << 30;
    jv globals = jv_none();
    int rc;
    if (opt->context && !cJSON_IsObject(opt->context))
        rc = jfail(&c, TUNE_ERR_INPUT, "the template's context must be a JSON object");
    else
        rc = opt->context ? jv_from_json(&c, opt->context, &globals) : jv_dict(&c, &globals);
    if (!rc) {
        c.globals = D(globals);
        c.frame = frame_new(&c, NULL);
        rc = c.frame ? exec_body(&c, &t->body) : -1;
        if (c.frame) frame_end(c.frame);
    }
    for (size_t i = 0; i < c.nns; i++) dict_clear(D(c.namespaces[i]));
    for (size_t i = 0; i < c.nns; i++) jv_unref(c.namespaces[i]);
    free(c.namespaces);
    jv_unref(globals);
    if (text.len) tune_strbuf_append(out, text.data, text.len);
    tune_strbuf_free(&text);
    if (!rc && out->oom) rc = joom(&c);
    if (rc) {
        free(c.spans);
        if (raised) *raised = c.raised;
        return c.status;
    }
    if (spans) *spans = c.spans;
    else free(c.spans);
    if (n_spans) *n_spans = spans ? c.nspans : 0;
    return TUNE_OK;
}
