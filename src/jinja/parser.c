/* jinja2's parser (jinja2/parser.py), function for function, so operator
 * precedence and the statement grammar are jinja2's:
 *   condexpr < or < and < not < compare (==, in, not in, ...) < + - < ~
 *   < * / // % < ** < unary - + < postfix (.a [k] (args)) and filters/tests.
 * Node fields by kind:
 *   E_CONST value; E_NAME name; E_LIST/E_TUPLE items; E_DICT items = k, v, k, v...
 *   E_ATTR a.name; E_ITEM a[b]; E_SLICE a[items 0:1:2] (NULL parts)
 *   E_CALL a(items, names = kw); E_FILTER / E_TEST a|name(items, names = kw)
 *     (a NULL: a filter block's text); E_NOT/E_NEG/E_POS a; E_BIN/E_AND/E_OR a op b
 *   E_CMP a ops[i] items[i]...; E_COND b if a else c
 *   S_DATA text; S_OUT a (or items, from {% print %}); S_IF a body orelse; S_FOR names in a if b body orelse
 *   S_SET names = a (names[0].name = a when name is set: a namespace attribute)
 *   S_SETBLOCK names |b body (the same targets); S_MACRO name(names = kw) body;
 *   S_CALLBLOCK (names = kw) a body; S_FILTERBLOCK b body; S_GEN body; S_WITH (names = kw) body */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Brackets, blocks and unary operators nested deeper than this are refused,
 * so a hostile template cannot exhaust the C stack while parsing. */
#define PARSE_MAX_NESTING 100
/* Deeper trees (long operator chains, elif ladders) are refused too. */
#define TREE_MAX_DEPTH 1000

typedef struct open_block {
    const char *tag;
    int line, col;
    const char *const *ends; /* the tags its body runs to */
} open_block;

typedef struct parser {
    const token *t;
    int i;
    arena *a;
    const char *name;
    tune_error *err;
    tune_status status;
    int nesting;
    int loops; /* for loops around the current statement (break / continue) */
    open_block open[PARSE_MAX_NESTING + 1];
    int nopen;
} parser;

static const token *cur(const parser *P) { return &P->t[P->i]; }
static const token *look(const parser *P)
{
    return P->t[P->i].type == TK_EOF ? &P->t[P->i] : &P->t[P->i + 1];
}
static const token *next(parser *P)
{
    const token *t = &P->t[P->i];
    if (t->type != TK_EOF) P->i++;
    return t;
}
static int is_op(const token *t, const char *op) { return t->type == TK_OP && !strcmp(t->s, op); }
static int is_name(const token *t, const char *kw) { return t->type == TK_NAME && !strcmp(t->s, kw); }

static void *fail_at(parser *P, int line, int col, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void *fail_at(parser *P, int line, int col, const char *fmt, ...)
{
    if (P->status != TUNE_OK) return NULL;
    va_list ap;
    va_start(ap, fmt);
    P->status = tune_error_vset(P->err, TUNE_ERR_INPUT, P->name, line, col, fmt, ap);
    va_end(ap);
    return NULL;
}
#define FAIL(P, tok, ...) fail_at((P), (tok)->line, (tok)->col, __VA_ARGS__)

static void *oom(parser *P)
{
    if (P->status == TUNE_OK)
        P->status = tune_error_set(P->err, TUNE_ERR_RUN, P->name, 0, 0, "out of memory parsing the template");
    return NULL;
}

/* How a token reads in messages (jinja2's describe_token). */
static const char *describe(const token *t, char *buf, size_t size)
{
    switch (t->type) {
    case TK_EOF: return "end of template";
    case TK_DATA: return "template data";
    case TK_VAR_BEGIN: return "begin of print statement";
    case TK_VAR_END: return "end of print statement";
    case TK_BLOCK_BEGIN: return "begin of statement block";
    case TK_BLOCK_END: return "end of statement block";
    case TK_STRING: return "string";
    case TK_INT: return "integer";
    case TK_FLOAT: return "float";
    case TK_NAME:
    case TK_OP: snprintf(buf, size, "'%s'", t->s); return buf;
    }
    return "token";
}

static void *unexpected(parser *P, const char *wanted)
{
    char b[64];
    const token *t = cur(P);
    if (wanted) return FAIL(P, t, "expected %s, got %s", wanted, describe(t, b, sizeof b));
    return FAIL(P, t, "unexpected %s", describe(t, b, sizeof b));
}

static int expect_op(parser *P, const char *op)
{
    if (is_op(cur(P), op)) return next(P), 1;
    char w[16];
    snprintf(w, sizeof w, "'%s'", op);
    return unexpected(P, w), 0;
}

static int expect_type(parser *P, tk_type type, const char *what)
{
    if (cur(P)->type == type) return next(P), 1;
    return unexpected(P, what), 0;
}

static node *mk(parser *P, node_kind kind, const token *at)
{
    node *n = arena_alloc(P->a, sizeof *n);
    if (!n) return oom(P);
    n->kind = kind;
    n->line = at->line;
    n->col = at->col;
    return n;
}

/* Growable arena arrays: doubling wastes at most half, freed with the template. */
static int grow(parser *P, void **v, int n, int *cap, size_t elem)
{
    if (n < *cap) return 1;
    int nc = *cap ? *cap * 2 : 4;
    void *nv = arena_alloc(P->a, (size_t)nc * elem);
    if (!nv) return oom(P), 0;
    if (n) memcpy(nv, *v, (size_t)n * elem);
    *v = nv;
    *cap = nc;
    return 1;
}

static int nl_push(parser *P, nodelist *l, int *cap, node *x)
{
    if (!x || !grow(P, (void **)&l->v, l->n, cap, sizeof *l->v)) return 0;
    l->v[l->n++] = x;
    return 1;
}

static int name_push(parser *P, node *n, int *cap, const char *name)
{
    if (!grow(P, (void **)&n->names, n->nnames, cap, sizeof *n->names)) return 0;
    n->names[n->nnames++] = name;
    return 1;
}

static int enter(parser *P)
{
    if (++P->nesting <= PARSE_MAX_NESTING) return 1;
    FAIL(P, cur(P), "template nested too deeply (more than %d levels of brackets, blocks or unary operators)",
         PARSE_MAX_NESTING);
    return 0;
}
static void leave(parser *P) { P->nesting--; }

/* ---- expressions ---- */

static node *parse_expression(parser *P, int with_condexpr);
static node *parse_tuple(parser *P, int with_condexpr, const char *extra_end, int explicit_parens);
static node *parse_unary(parser *P, int with_filter);
static node *parse_postfix(parser *P, node *n);
static node *parse_primary(parser *P);

static node *constant(parser *P, const token *at, jv v)
{
    node *n = mk(P, E_CONST, at);
    if (n) n->value = v;
    return n;
}

/* An immortal string constant in the arena. */
static node *string_const(parser *P, const token *at, const char *s, size_t len)
{
    jstr *str = arena_alloc(P->a, sizeof *str + len + 1);
    if (!str) return oom(P);
    str->h.rc = -1;
    str->len = len;
    str->ascii = 1;
    memcpy(str->s, s, len);
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] >= 0x80) str->ascii = 0;
    return constant(P, at, (jv){.t = JV_STR, .u.o = str});
}

/* (args) after a call, filter or test: positional then keyword arguments. */
static int parse_call_args(parser *P, node *n)
{
    const token *open = cur(P);
    if (!expect_op(P, "(")) return 0;
    if (!enter(P)) return 0;
    int cap = 0, kcap = 0, ncap = 0;
    while (!is_op(cur(P), ")")) {
        if (n->items.n + n->kw.n) {
            if (!expect_op(P, ",")) return 0;
            if (is_op(cur(P), ")")) break;
        }
        if (is_op(cur(P), "*") || is_op(cur(P), "**"))
            return FAIL(P, cur(P), "*args and **kwargs in calls are not supported"), 0;
        if (n->items.n + n->kw.n >= JARGS_MAX) return FAIL(P, cur(P), "more than %d arguments", JARGS_MAX), 0;
        if (cur(P)->type == TK_NAME && is_op(look(P), "=")) {
            const char *key = next(P)->s;
            next(P);
            if (!name_push(P, n, &ncap, key) || !nl_push(P, &n->kw, &kcap, parse_expression(P, 1))) return 0;
        } else {
            if (n->kw.n) return FAIL(P, open, "invalid syntax for function call expression"), 0;
            if (!nl_push(P, &n->items, &cap, parse_expression(P, 1))) return 0;
        }
    }
    leave(P);
    return expect_op(P, ")");
}

/* callee(args); errors in the call point at the callee. */
static node *parse_call(parser *P, node *callee)
{
    node *call = mk(P, E_CALL, cur(P));
    if (!call) return NULL;
    call->a = callee;
    call->line = callee->line;
    call->col = callee->col;
    return parse_call_args(P, call) ? call : NULL;
}

/* |name(args)|name... applied to n (NULL: a filter block's text). */
static node *parse_filters(parser *P, node *n, int start_inline)
{
    while (is_op(cur(P), "|") || start_inline) {
        if (!start_inline) next(P);
        start_inline = 0;
        const token *t = cur(P);
        if (!expect_type(P, TK_NAME, "filter name")) return NULL;
        node *f = mk(P, E_FILTER, t);
        if (!f) return NULL;
        f->a = n;
        f->name = t->s;
        f->fn = find_filter(t->s);
        if (is_op(cur(P), "(") && !parse_call_args(P, f)) return NULL;
        n = f;
    }
    return n;
}

static node *parse_test(parser *P, node *n)
{
    const token *is = next(P);
    int negated = 0;
    if (is_name(cur(P), "not")) next(P), negated = 1;
    const token *t = cur(P);
    if (!expect_type(P, TK_NAME, "test name")) return NULL;
    node *x = mk(P, E_TEST, t);
    if (!x) return NULL;
    x->a = n;
    x->name = t->s;
    x->fn = find_test(t->s);
    const token *c = cur(P);
    if (is_op(c, "(")) {
        if (!parse_call_args(P, x)) return NULL;
    } else if ((c->type == TK_NAME || c->type == TK_STRING || c->type == TK_INT || c->type == TK_FLOAT ||
                is_op(c, "[") || is_op(c, "{")) &&
               !is_name(c, "else") && !is_name(c, "or") && !is_name(c, "and")) {
        if (is_name(c, "is")) return FAIL(P, c, "You cannot chain multiple tests with is");
        int cap = 0;
        node *arg = parse_primary(P);
        if (!arg || !nl_push(P, &x->items, &cap, parse_postfix(P, arg))) return NULL;
    }
    if (!negated) return x;
    node *not = mk(P, E_NOT, is);
    if (not) not->a = x;
    return not;
}

static node *parse_filter_expr(parser *P, node *n)
{
    while (n) {
        if (is_op(cur(P), "|")) {
            n = parse_filters(P, n, 0);
        } else if (is_name(cur(P), "is")) {
            n = parse_test(P, n);
        } else if (is_op(cur(P), "(")) {
            n = parse_call(P, n);
        } else {
            break;
        }
    }
    return n;
}

/* One subscript: an expression or a slice a:b:c. */
static node *parse_subscribed(parser *P)
{
    const token *start = cur(P);
    node *parts[3] = {NULL, NULL, NULL};
    if (!is_op(cur(P), ":")) {
        node *x = parse_expression(P, 1);
        if (!x || !is_op(cur(P), ":")) return x;
        parts[0] = x;
    }
    next(P); /* the first ':' */
    if (!is_op(cur(P), ":") && !is_op(cur(P), "]") && !is_op(cur(P), ",") && !(parts[1] = parse_expression(P, 1)))
        return NULL;
    if (is_op(cur(P), ":")) {
        next(P);
        if (!is_op(cur(P), "]") && !is_op(cur(P), ",") && !(parts[2] = parse_expression(P, 1))) return NULL;
    }
    node *s = mk(P, E_SLICE, start);
    if (!s || !(s->items.v = arena_alloc(P->a, sizeof parts))) return oom(P);
    memcpy(s->items.v, parts, sizeof parts);
    s->items.n = 3;
    return s;
}

static node *parse_subscript(parser *P, node *n)
{
    const token *t = next(P);
    if (is_op(t, ".")) {
        const token *attr = next(P);
        if (attr->type == TK_NAME) {
            node *x = mk(P, E_ATTR, t);
            if (x) x->a = n, x->name = attr->s;
            return x;
        }
        if (attr->type != TK_INT) return FAIL(P, attr, "expected name or number");
        node *x = mk(P, E_ITEM, t);
        if (!x || !(x->b = constant(P, attr, jv_int(attr->i)))) return NULL;
        x->a = n;
        return x;
    }
    if (!enter(P)) return NULL;
    node *tuple = mk(P, E_TUPLE, t);
    int cap = 0;
    if (!tuple) return NULL;
    while (!is_op(cur(P), "]")) {
        if (tuple->items.n && !expect_op(P, ",")) return NULL;
        if (!nl_push(P, &tuple->items, &cap, parse_subscribed(P))) return NULL;
    }
    leave(P);
    if (!expect_op(P, "]")) return NULL;
    if (!tuple->items.n) return FAIL(P, t, "expected subscript expression");
    for (int i = 0; tuple->items.n > 1 && i < tuple->items.n; i++)
        if (tuple->items.v[i]->kind == E_SLICE) return FAIL(P, t, "slices inside a tuple subscript are not supported");
    node *x = mk(P, E_ITEM, t);
    if (!x) return NULL;
    x->a = n;
    x->b = tuple->items.n == 1 ? tuple->items.v[0] : tuple;
    if (x->b->kind == E_SLICE) { /* obj[a:b:c] */
        x->b->a = n;
        return x->b;
    }
    return x;
}

static node *parse_postfix(parser *P, node *n)
{
    while (n) {
        if (is_op(cur(P), ".") || is_op(cur(P), "[")) {
            n = parse_subscript(P, n);
        } else if (is_op(cur(P), "(")) {
            n = parse_call(P, n);
        } else {
            break;
        }
    }
    return n;
}

/* [a, b] or {k: v}: items separated by commas, a trailing one allowed. */
static node *parse_container(parser *P, node_kind kind, const char *close)
{
    node *n = mk(P, kind, next(P));
    int cap = 0;
    if (!n || !enter(P)) return NULL;
    while (!is_op(cur(P), close)) {
        if (n->items.n && !expect_op(P, ",")) return NULL;
        if (is_op(cur(P), close)) break;
        if (!nl_push(P, &n->items, &cap, parse_expression(P, 1))) return NULL;
        if (kind == E_DICT && (!expect_op(P, ":") || !nl_push(P, &n->items, &cap, parse_expression(P, 1))))
            return NULL;
    }
    leave(P);
    return expect_op(P, close) ? n : NULL;
}

static node *parse_primary(parser *P)
{
    const token *t = cur(P);
    if (t->type == TK_NAME) {
        next(P);
        if (!strcmp(t->s, "true") || !strcmp(t->s, "True")) return constant(P, t, jv_bool(1));
        if (!strcmp(t->s, "false") || !strcmp(t->s, "False")) return constant(P, t, jv_bool(0));
        if (!strcmp(t->s, "none") || !strcmp(t->s, "None")) return constant(P, t, jv_none());
        node *n = mk(P, E_NAME, t);
        if (n) n->name = t->s;
        return n;
    }
    if (t->type == TK_STRING) { /* adjacent literals concatenate */
        size_t len = 0;
        int k = P->i;
        for (; P->t[k].type == TK_STRING; k++) len += P->t[k].n;
        char *buf = arena_alloc(P->a, len + 1);
        if (!buf) return oom(P);
        len = 0;
        for (; cur(P)->type == TK_STRING; next(P)) {
            memcpy(buf + len, cur(P)->s, cur(P)->n);
            len += cur(P)->n;
        }
        return string_const(P, t, buf, len);
    }
    if (t->type == TK_INT) return next(P), constant(P, t, jv_int(t->i));
    if (t->type == TK_FLOAT) return next(P), constant(P, t, jv_float(t->f));
    if (is_op(t, "(")) {
        next(P);
        if (!enter(P)) return NULL;
        node *n = parse_tuple(P, 1, NULL, 1);
        leave(P);
        return n && expect_op(P, ")") ? n : NULL;
    }
    if (is_op(t, "[")) return parse_container(P, E_LIST, "]");
    if (is_op(t, "{")) return parse_container(P, E_DICT, "}");
    return unexpected(P, NULL);
}

static node *unary(parser *P, node_kind kind, const token *at, node *a)
{
    if (!a) return NULL;
    node *n = mk(P, kind, at);
    if (n) n->a = a;
    return n;
}

static node *parse_unary(parser *P, int with_filter)
{
    const token *t = cur(P);
    node *n;
    if (is_op(t, "-") || is_op(t, "+")) {
        next(P);
        if (!enter(P)) return NULL;
        n = unary(P, is_op(t, "-") ? E_NEG : E_POS, t, parse_unary(P, 0));
        leave(P);
    } else {
        n = parse_primary(P);
    }
    n = parse_postfix(P, n);
    return with_filter ? parse_filter_expr(P, n) : n;
}

/* a op b; op means something for E_BIN only (E_AND and E_OR pass OP_ADD). */
static node *binary(parser *P, node_kind kind, jop op, const token *at, node *a, node *b)
{
    if (!a || !b) return NULL;
    node *n = mk(P, kind, at);
    if (n) n->op = op, n->a = a, n->b = b;
    return n;
}

static node *parse_pow(parser *P)
{
    node *left = parse_unary(P, 1);
    while (left && is_op(cur(P), "**")) {
        const token *t = next(P);
        left = binary(P, E_BIN, OP_POW, t, left, parse_unary(P, 1));
    }
    return left;
}

static node *parse_math2(parser *P)
{
    static const struct {
        const char *s;
        jop op;
    } ops[] = {{"*", OP_MUL}, {"/", OP_DIV}, {"//", OP_FLOORDIV}, {"%", OP_MOD}};
    node *left = parse_pow(P);
    while (left) {
        int k = 0;
        while (k < 4 && !is_op(cur(P), ops[k].s)) k++;
        if (k == 4) break;
        const token *t = next(P);
        left = binary(P, E_BIN, ops[k].op, t, left, parse_pow(P));
    }
    return left;
}

static node *parse_concat(parser *P)
{
    node *left = parse_math2(P);
    while (left && is_op(cur(P), "~")) {
        const token *t = next(P);
        left = binary(P, E_BIN, OP_CONCAT, t, left, parse_math2(P));
    }
    return left;
}

static node *parse_math1(parser *P)
{
    node *left = parse_concat(P);
    while (left && (is_op(cur(P), "+") || is_op(cur(P), "-"))) {
        const token *t = next(P);
        left = binary(P, E_BIN, is_op(t, "+") ? OP_ADD : OP_SUB, t, left, parse_concat(P));
    }
    return left;
}

static node *parse_compare(parser *P)
{
    static const struct {
        const char *s;
        jop op;
    } ops[] = {{"==", OP_EQ}, {"!=", OP_NE}, {"<", OP_LT}, {"<=", OP_LE}, {">", OP_GT}, {">=", OP_GE}};
    const token *start = cur(P);
    node *expr = parse_math1(P), *cmp = NULL;
    int cap = 0, ocap = 0;
    while (expr) {
        int op = -1;
        for (int k = 0; k < 6; k++)
            if (is_op(cur(P), ops[k].s)) op = (int)ops[k].op, next(P);
        if (op < 0 && is_name(cur(P), "in")) op = OP_IN, next(P);
        if (op < 0 && is_name(cur(P), "not") && is_name(look(P), "in")) op = OP_NOTIN, next(P), next(P);
        if (op < 0) break;
        if (!cmp && !(cmp = mk(P, E_CMP, start))) return NULL;
        cmp->a = expr;
        if (!grow(P, (void **)&cmp->ops, cmp->items.n, &ocap, 1)) return NULL;
        cmp->ops[cmp->items.n] = (unsigned char)op;
        if (!nl_push(P, &cmp->items, &cap, parse_math1(P))) return NULL;
    }
    return cmp && expr ? cmp : expr;
}

static node *parse_not(parser *P)
{
    if (!is_name(cur(P), "not")) return parse_compare(P);
    const token *t = next(P);
    if (!enter(P)) return NULL;
    node *n = unary(P, E_NOT, t, parse_not(P));
    leave(P);
    return n;
}

static node *parse_and(parser *P)
{
    node *left = parse_not(P);
    while (left && is_name(cur(P), "and")) {
        const token *t = next(P);
        left = binary(P, E_AND, OP_ADD, t, left, parse_not(P));
    }
    return left;
}

static node *parse_or(parser *P)
{
    node *left = parse_and(P);
    while (left && is_name(cur(P), "or")) {
        const token *t = next(P);
        left = binary(P, E_OR, OP_ADD, t, left, parse_and(P));
    }
    return left;
}

static node *parse_condexpr(parser *P)
{
    const token *start = cur(P);
    node *expr = parse_or(P);
    while (expr && is_name(cur(P), "if")) {
        next(P);
        node *c = mk(P, E_COND, start);
        if (!c || !(c->a = parse_or(P))) return NULL;
        c->b = expr;
        if (is_name(cur(P), "else")) {
            next(P);
            if (!enter(P) || !(c->c = parse_condexpr(P))) return NULL;
            leave(P);
        }
        expr = c;
    }
    return expr;
}

static node *parse_expression(parser *P, int with_condexpr)
{
    if (!enter(P)) return NULL;
    node *n = with_condexpr ? parse_condexpr(P) : parse_or(P);
    leave(P);
    return n;
}

static int tuple_end(const parser *P, const char *extra_end)
{
    const token *t = cur(P);
    return t->type == TK_VAR_END || t->type == TK_BLOCK_END || is_op(t, ")") ||
           (extra_end && is_name(t, extra_end));
}

/* Expressions separated by commas: a tuple when there is a comma. */
static node *parse_tuple(parser *P, int with_condexpr, const char *extra_end, int explicit_parens)
{
    const token *start = cur(P);
    node *tuple = mk(P, E_TUPLE, start);
    int cap = 0, is_tuple = 0;
    if (!tuple) return NULL;
    for (;;) {
        if (tuple->items.n && !expect_op(P, ",")) return NULL;
        if (tuple_end(P, extra_end)) break;
        if (!nl_push(P, &tuple->items, &cap, parse_expression(P, with_condexpr))) return NULL;
        if (!is_op(cur(P), ",")) break;
        is_tuple = 1;
    }
    if (!is_tuple && tuple->items.n) return tuple->items.v[0];
    if (!is_tuple && !explicit_parens) {
        char b[64];
        return FAIL(P, cur(P), "Expected an expression, got %s", describe(cur(P), b, sizeof b));
    }
    return tuple;
}

/* ---- statements ---- */

static int parse_body(parser *P, const char *const *ends, nodelist *body);

static int block_end(parser *P)
{
    return expect_type(P, TK_BLOCK_END, "end of statement block");
}

/* Assignment targets: name or name, name, ...; with_ns also allows ns.attr
 * (then n->name is the attribute and names[0] the namespace). */
static int parse_targets(parser *P, node *n, int with_ns, const char *end)
{
    int cap = 0;
    for (;;) {
        const token *t = cur(P);
        if (t->type != TK_NAME || !strcmp(t->s, "true") || !strcmp(t->s, "false") || !strcmp(t->s, "none") ||
            !strcmp(t->s, "True") || !strcmp(t->s, "False") || !strcmp(t->s, "None"))
            return unexpected(P, "a variable name to assign to"), 0;
        next(P);
        if (with_ns && !n->nnames && is_op(cur(P), ".")) { /* {% set ns.attr = ... %} */
            next(P);
            const token *attr = cur(P);
            if (!expect_type(P, TK_NAME, "attribute name")) return 0;
            n->name = attr->s;
            return name_push(P, n, &cap, t->s);
        }
        if (!name_push(P, n, &cap, t->s)) return 0;
        if (!is_op(cur(P), ",")) return 1;
        next(P);
        if (tuple_end(P, end)) return 1;
    }
}

static const char *const END_FOR[] = {"endfor", "else", NULL};
static const char *const END_FOR_ELSE[] = {"endfor", NULL};
static const char *const END_IF[] = {"elif", "else", "endif", NULL};
static const char *const END_IF_ELSE[] = {"endif", NULL};

static node *parse_for(parser *P, const token *t)
{
    node *n = mk(P, S_FOR, t);
    if (!n || !parse_targets(P, n, 0, "in")) return NULL;
    if (!is_name(cur(P), "in")) return unexpected(P, "'in'");
    next(P);
    if (!(n->a = parse_tuple(P, 0, "recursive", 0))) return NULL;
    if (is_name(cur(P), "if")) {
        next(P);
        if (!(n->b = parse_expression(P, 1))) return NULL;
    }
    if (is_name(cur(P), "recursive")) return FAIL(P, cur(P), "recursive for loops are not supported");
    P->loops++;
    int ok = block_end(P) && parse_body(P, END_FOR, &n->body);
    P->loops--;
    if (!ok) return NULL;
    if (is_name(next(P), "else") && !(block_end(P) && parse_body(P, END_FOR_ELSE, &n->orelse) && next(P)))
        return NULL;
    return n;
}

static node *parse_if(parser *P, const token *t)
{
    node *n = mk(P, S_IF, t);
    if (!n || !(n->a = parse_tuple(P, 0, NULL, 0)) || !block_end(P) || !parse_body(P, END_IF, &n->body))
        return NULL;
    const token *end = next(P);
    if (is_name(end, "elif")) {
        if (!enter(P)) return NULL;
        node *e = parse_if(P, end);
        leave(P);
        if (!e) return NULL;
        if (!(n->orelse.v = arena_alloc(P->a, sizeof *n->orelse.v))) return oom(P);
        n->orelse.v[0] = e;
        n->orelse.n = 1;
    } else if (is_name(end, "else")) {
        if (!block_end(P) || !parse_body(P, END_IF_ELSE, &n->orelse)) return NULL;
        next(P);
    }
    return n;
}

/* (a, b=default, ...) of a macro or call block. */
static int parse_signature(parser *P, node *n)
{
    if (!expect_op(P, "(")) return 0;
    int ncap = 0, kcap = 0;
    while (!is_op(cur(P), ")")) {
        if (n->nnames && !expect_op(P, ",")) return 0;
        const token *t = cur(P);
        if (n->nnames == JARGS_MAX) return FAIL(P, t, "more than %d parameters", JARGS_MAX), 0;
        if (!expect_type(P, TK_NAME, "parameter name") || !name_push(P, n, &ncap, t->s)) return 0;
        node *def = NULL;
        if (is_op(cur(P), "=")) {
            next(P);
            if (!(def = parse_expression(P, 1))) return 0;
        } else if (n->kw.n && n->kw.v[n->kw.n - 1]) {
            return FAIL(P, t, "non-default argument follows default argument"), 0;
        }
        if (!grow(P, (void **)&n->kw.v, n->kw.n, &kcap, sizeof *n->kw.v)) return 0;
        n->kw.v[n->kw.n++] = def;
    }
    return expect_op(P, ")");
}

/* A body that runs as its own scope (macro, call block, ...): no loop around it. */
static int parse_scoped_body(parser *P, const char *end, nodelist *body)
{
    const char *ends[] = {end, NULL};
    int loops = P->loops;
    P->loops = 0;
    int ok = block_end(P) && parse_body(P, ends, body);
    P->loops = loops;
    return ok && next(P);
}

/* 'a' or 'b' or 'c' */
static const char *tag_list(const char *const *ends, char *buf, size_t size)
{
    buf[0] = 0;
    for (int k = 0; ends && ends[k]; k++)
        snprintf(buf + strlen(buf), size - strlen(buf), "%s'%s'", k ? " or " : "", ends[k]);
    return buf;
}

static node *parse_statement(parser *P)
{
    const token *t = cur(P);
    if (t->type != TK_NAME) return FAIL(P, t, "tag name expected");
    const char *tag = t->s;
    next(P);
    node *n = NULL;
    if (!strcmp(tag, "for")) return parse_for(P, t);
    if (!strcmp(tag, "if")) return parse_if(P, t);
    if (!strcmp(tag, "set")) {
        if (!(n = mk(P, S_SET, t)) || !parse_targets(P, n, 1, NULL)) return NULL;
        if (is_op(cur(P), "=")) {
            next(P);
            return (n->a = parse_tuple(P, 1, NULL, 0)) ? n : NULL;
        }
        n->kind = S_SETBLOCK;
        if (is_op(cur(P), "|") && !(n->b = parse_filters(P, NULL, 0))) return NULL;
        return parse_scoped_body(P, "endset", &n->body) ? n : NULL;
    }
    if (!strcmp(tag, "macro")) {
        const token *name = cur(P);
        if (!(n = mk(P, S_MACRO, t)) || !expect_type(P, TK_NAME, "macro name")) return NULL;
        n->name = name->s;
        return parse_signature(P, n) && parse_scoped_body(P, "endmacro", &n->body) ? n : NULL;
    }
    if (!strcmp(tag, "call")) {
        if (!(n = mk(P, S_CALLBLOCK, t)) || (is_op(cur(P), "(") && !parse_signature(P, n))) return NULL;
        if (!(n->a = parse_expression(P, 1))) return NULL;
        if (n->a->kind != E_CALL) return fail_at(P, t->line, t->col, "expected call");
        return parse_scoped_body(P, "endcall", &n->body) ? n : NULL;
    }
    if (!strcmp(tag, "filter")) {
        if (!(n = mk(P, S_FILTERBLOCK, t)) || !(n->b = parse_filters(P, NULL, 1))) return NULL;
        return parse_scoped_body(P, "endfilter", &n->body) ? n : NULL;
    }
    if (!strcmp(tag, "with")) { /* {% with a = x, b = y %}: a scope, inside any loop around it */
        static const char *const end_with[] = {"endwith", NULL};
        int ncap = 0, kcap = 0;
        if (!(n = mk(P, S_WITH, t))) return NULL;
        while (cur(P)->type != TK_BLOCK_END) {
            if (n->nnames && !expect_op(P, ",")) return NULL;
            const token *name = cur(P);
            if (!expect_type(P, TK_NAME, "a variable name") || !name_push(P, n, &ncap, name->s) ||
                !expect_op(P, "=") || !nl_push(P, &n->kw, &kcap, parse_expression(P, 1)))
                return NULL;
        }
        return block_end(P) && parse_body(P, end_with, &n->body) && next(P) ? n : NULL;
    }
    if (!strcmp(tag, "generation")) {
        if (!(n = mk(P, S_GEN, t))) return NULL;
        return parse_scoped_body(P, "endgeneration", &n->body) ? n : NULL;
    }
    if (!strcmp(tag, "break") || !strcmp(tag, "continue")) {
        if (!P->loops) return FAIL(P, t, "'%s' outside of a for loop", tag);
        return mk(P, tag[0] == 'b' ? S_BREAK : S_CONTINUE, t);
    }
    if (!strcmp(tag, "print")) { /* {% print a, b %} prints each */
        int cap = 0;
        if (!(n = mk(P, S_OUT, t))) return NULL;
        while (cur(P)->type != TK_BLOCK_END)
            if ((n->items.n && !expect_op(P, ",")) || !nl_push(P, &n->items, &cap, parse_expression(P, 1)))
                return NULL;
        return n;
    }
    static const char *const unsupported[] = {"block", "extends", "include", "import", "from", "autoescape",
                                              NULL};
    for (int k = 0; unsupported[k]; k++)
        if (!strcmp(tag, unsupported[k]))
            return FAIL(P, t, "the '%s' tag is not supported (a chat template is one self-contained file)", tag);
    if (P->nopen > 1) { /* the block around this tag (the last entry is the tag itself) */
        const open_block *o = &P->open[P->nopen - 2];
        char want[128];
        return FAIL(P, t, "Encountered unknown tag '%s'. Jinja was looking for the following tags: %s. The "
                          "innermost block that needs to be closed is '%s' (line %d, column %d).",
                    tag, tag_list(o->ends, want, sizeof want), o->tag, o->line, o->col);
    }
    return FAIL(P, t, "Encountered unknown tag '%s'.", tag);
}

static int in_list(const char *s, const char *const *list)
{
    for (; list && *list; list++)
        if (!strcmp(s, *list)) return 1;
    return 0;
}

/* Statements and text up to a block tag named in ends (left as the current
 * token), or to the end of the template when ends is NULL. */
static int parse_body(parser *P, const char *const *ends, nodelist *body)
{
    int cap = 0;
    if (!enter(P)) return 0;
    if (ends) P->open[P->nopen - 1].ends = ends;
    for (;;) {
        const token *t = cur(P);
        if (t->type == TK_EOF) {
            if (!ends) break;
            const open_block *o = &P->open[P->nopen - 1];
            char want[128];
            return fail_at(P, o->line, o->col, "unexpected end of template: the '%s' block opened here is never "
                                               "closed (Jinja was looking for %s)", o->tag,
                           tag_list(ends, want, sizeof want)), 0;
        }
        if (t->type == TK_DATA) {
            node *d = mk(P, S_DATA, next(P));
            if (!d) return 0;
            d->text = t->s;
            d->len = t->n;
            if (!nl_push(P, body, &cap, d)) return 0;
        } else if (t->type == TK_VAR_BEGIN) {
            node *o = mk(P, S_OUT, next(P));
            if (!o || !(o->a = parse_tuple(P, 1, NULL, 0)) || !expect_type(P, TK_VAR_END, "end of print statement") ||
                !nl_push(P, body, &cap, o))
                return 0;
        } else if (t->type == TK_BLOCK_BEGIN) {
            next(P);
            const token *tag = cur(P);
            if (tag->type == TK_NAME && in_list(tag->s, ends)) break;
            open_block *o = &P->open[P->nopen++];
            o->tag = tag->type == TK_NAME ? tag->s : "?";
            o->line = t->line;
            o->col = t->col;
            o->ends = NULL;
            node *s = parse_statement(P);
            P->nopen--;
            if (!s || !block_end(P) || !nl_push(P, body, &cap, s)) return 0;
        } else {
            return unexpected(P, NULL), 0;
        }
    }
    leave(P);
    return 1;
}

/* ---- checks after parsing ---- */

/* jinja2 fails at compile time on an unknown filter or test, except inside
 * an if statement or if-expression, where it fails only when it runs; the
 * walk also bounds the tree's depth (the evaluator recurses over it). */
static int check_tree(parser *P, const node *n, int soft, int depth);

static int check_list(parser *P, const nodelist *l, int soft, int depth)
{
    for (int i = 0; i < l->n; i++)
        if (l->v[i] && !check_tree(P, l->v[i], soft, depth)) return 0;
    return 1;
}

static int check_tree(parser *P, const node *n, int soft, int depth)
{
    if (depth > TREE_MAX_DEPTH)
        return fail_at(P, n->line, n->col, "template nested too deeply (an expression or block chain more than "
                                           "%d deep)", TREE_MAX_DEPTH), 0;
    if ((n->kind == E_FILTER || n->kind == E_TEST) && !n->fn && !soft)
        return fail_at(P, n->line, n->col, "No %s named '%s'.", n->kind == E_FILTER ? "filter" : "test", n->name),
               0;
    int inner = soft, own = soft; /* own: a, items, kw; inner: b, c, body, orelse */
    switch (n->kind) {
    case S_IF:
    case E_COND: own = inner = 1; break;
    case S_FOR:
    case S_WITH: inner = 0; break;
    case S_MACRO:
    case S_SETBLOCK:
    case S_FILTERBLOCK:
    case S_GEN: own = inner = 0; break;
    case S_CALLBLOCK: inner = 0; own = soft; break;
    default: break;
    }
    if (n->kind == S_CALLBLOCK || n->kind == S_MACRO) { /* defaults run in the macro's own scope */
        if (!check_list(P, &n->kw, 0, depth + 1)) return 0;
    } else if (!check_list(P, &n->kw, own, depth + 1)) {
        return 0;
    }
    if ((n->a && !check_tree(P, n->a, own, depth + 1)) || (n->b && !check_tree(P, n->b, inner, depth + 1)) ||
        (n->c && !check_tree(P, n->c, inner, depth + 1)))
        return 0;
    return check_list(P, &n->items, own, depth + 1) && check_list(P, &n->body, inner, depth + 1) &&
           check_list(P, &n->orelse, inner, depth + 1);
}

tune_status tune_jinja_parse(const char *source, size_t len, const char *name, tune_jinja **out, tune_error *err)
{
    *out = NULL;
    if (!name) name = "chat template";
    tune_jinja *t = calloc(1, sizeof *t);
    if (!t || !(t->name = strdup(name)) || !(t->arena = arena_new())) {
        tune_jinja_free(t);
        return tune_error_set(err, TUNE_ERR_RUN, name, 0, 0, "out of memory parsing the template");
    }
    token *toks = NULL;
    int ntoks = 0;
    tune_status st = jinja_lex(source, len, t->name, t->arena, &toks, &ntoks, err);
    if (st == TUNE_OK) {
        parser P = {.t = toks, .a = t->arena, .name = t->name, .err = err};
        if (parse_body(&P, NULL, &t->body)) {
            check_list(&P, &t->body, 0, 1);
        }
        st = P.status;
    }
    free(toks);
    if (st != TUNE_OK) {
        tune_jinja_free(t);
        return st;
    }
    *out = t;
    return TUNE_OK;
}

void tune_jinja_free(tune_jinja *t)
{
    if (!t) return;
    arena_free(t->arena);
    free(t->name);
    free(t);
}
