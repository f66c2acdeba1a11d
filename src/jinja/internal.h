/* The Jinja engine's private types: values (Python's, reference counted),
 * the syntax tree, and the render state shared by the evaluator and the
 * built-in filters, tests and methods. */
#ifndef TUNE_JINJA_INTERNAL_H
#define TUNE_JINJA_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "tune/jinja.h"

/* ---- values ---- */

typedef enum {
    JV_UNDEF, /* jinja2's Undefined; u.o: the jstr message its misuse raises (or NULL) */
    JV_NONE,
    JV_BOOL, /* u.i: 0 or 1 */
    JV_INT,
    JV_FLOAT,
    JV_STR,  /* jstr */
    JV_LIST, /* jlist: a list, tuple or generator (see seq_kind) */
    JV_DICT, /* jdict, insertion ordered */
    JV_NS,   /* namespace(): a jdict that `set ns.x = ...` may change */
    JV_FUNC, /* jfunc: macro, caller, global function or bound method */
    JV_LOOP, /* jloop: the `loop` variable of a for loop */
} jv_type;

/* Every heap object starts with this; rc < 0 marks an object owned by the
 * parsed template (constants), which renders never count, so several
 * threads may render one template at once. */
typedef struct jobj {
    int rc;
} jobj;

typedef struct jv {
    jv_type t;
    union {
        int64_t i;
        double f;
        void *o;
    } u;
} jv;

typedef struct jstr {
    jobj h;
    unsigned char markup; /* markupsafe.Markup (from |safe): `+` escapes the other side */
    unsigned char ascii;  /* all bytes < 0x80: code point index == byte index */
    size_t len;
    char s[]; /* NUL-terminated */
} jstr;

/* What a jlist stands for. jinja2's map, select, unique, |items, ... give
 * generators: always true, no len(), no indexing, not JSON. */
typedef enum { SEQ_LIST, SEQ_TUPLE, SEQ_GENERATOR } seq_kind;

typedef struct jlist {
    jobj h;
    seq_kind kind;
    int depth; /* nesting depth, bounded so recursion over values is bounded */
    size_t n, cap;
    jv *v;
} jlist;

typedef struct jdict {
    jobj h;
    int depth;
    size_t n, cap;
    jv *k, *v;
} jdict;

typedef struct node node;
typedef struct frame frame;
typedef struct rctx rctx;
typedef struct jargs jargs;

typedef int (*jbuiltin_fn)(rctx *c, jv self, const jargs *a, jv *out);

typedef enum { F_MACRO, F_CALLER, F_BUILTIN, F_METHOD } jfunc_kind;

typedef struct jfunc {
    jobj h;
    jfunc_kind kind;
    const char *name;
    jbuiltin_fn fn;  /* F_BUILTIN, F_METHOD */
    jv self;         /* F_METHOD: the bound object */
    const node *def; /* F_MACRO, F_CALLER: the macro / call block */
    frame *closure;  /* F_MACRO, F_CALLER: the scope it was defined in */
} jfunc;

typedef struct jloop {
    jobj h;
    jlist *items;
    size_t i; /* index0 */
} jloop;

/* A scope: a for-loop iteration, a macro call, a captured block, or the
 * template's top level. Macros keep their defining scope (jinja2 closures);
 * a scope's variables are cleared when it ends, which breaks the cycle. */
struct frame {
    int rc;
    frame *parent;
    size_t n, cap;
    const char **names; /* the template's own names (or static ones): they outlive the render */
    jv *vals;
};

/* Call arguments, borrowed: positional then keyword. */
#define JARGS_MAX 16
struct jargs {
    int npos, nkw;
    jv pos[JARGS_MAX];
    const char *kwname[JARGS_MAX];
    jv kwval[JARGS_MAX];
};

/* Containers nest at most this deep (JSON input included). */
#define JV_MAX_DEPTH 512

/* ---- syntax tree ---- */

typedef enum {
    E_CONST, E_NAME, E_LIST, E_TUPLE, E_DICT, E_ATTR, E_ITEM, E_SLICE, E_CALL, E_FILTER, E_TEST,
    E_NOT, E_NEG, E_POS, E_BIN, E_AND, E_OR, E_CMP, E_COND,
    S_DATA, S_OUT, S_IF, S_FOR, S_SET, S_SETBLOCK, S_MACRO, S_CALLBLOCK, S_FILTERBLOCK, S_GEN, S_WITH,
    S_BREAK, S_CONTINUE,
} node_kind;

/* Binary and comparison operators. */
typedef enum {
    OP_ADD, OP_SUB, OP_MUL, OP_DIV, OP_FLOORDIV, OP_MOD, OP_POW, OP_CONCAT,
    OP_EQ, OP_NE, OP_LT, OP_LE, OP_GT, OP_GE, OP_IN, OP_NOTIN,
} jop;

typedef struct nodelist {
    node **v;
    int n;
} nodelist;

typedef struct jbuiltin {
    const char *name;
    jbuiltin_fn fn;
} jbuiltin;

struct node {
    node_kind kind;
    int line, col;
    jop op;                /* E_BIN */
    unsigned char *ops;    /* E_CMP: one per operand in items */
    node *a, *b, *c;       /* operands; see parser.c for each kind's use */
    nodelist items;        /* elements, positional arguments, slice parts, comparands */
    const char **names;    /* keyword names, assignment targets, parameters */
    nodelist kw;           /* keyword values / parameter defaults (NULL: none), as names */
    int nnames;
    const char *name;      /* variable, attribute, filter, test, macro, namespace attribute */
    const jbuiltin *fn;    /* E_FILTER / E_TEST: NULL when unknown (an error when run) */
    jv value;              /* E_CONST */
    const char *text;      /* S_DATA */
    size_t len;
    nodelist body, orelse; /* statements */
};

struct tune_jinja {
    char *name;
    struct arena *arena; /* every node, constant and the normalised source */
    nodelist body;
};

/* ---- lexer.c ---- */

typedef enum {
    TK_EOF, TK_DATA, TK_VAR_BEGIN, TK_VAR_END, TK_BLOCK_BEGIN, TK_BLOCK_END,
    TK_NAME, TK_STRING, TK_INT, TK_FLOAT, TK_OP,
} tk_type;

typedef struct token {
    tk_type type;
    int line, col;
    const char *s; /* DATA: text after whitespace control; NAME, OP: NUL-terminated; STRING: decoded */
    size_t n;
    int64_t i;
    double f;
} token;

/* Allocations that live as long as the parsed template; zeroed. */
typedef struct arena arena;
arena *arena_new(void);
void *arena_alloc(arena *a, size_t n);
void arena_free(arena *a);

/* Splits source into tokens (jinja2's lexer with trim_blocks and
 * lstrip_blocks); the last one is TK_EOF. *toks is malloc'd. */
tune_status jinja_lex(const char *source, size_t len, const char *name, arena *a, token **toks, int *ntoks,
                      tune_error *err);

/* ---- render state ---- */

struct rctx {
    const tune_jinja *t;
    tune_error *err;
    tune_status status; /* of the first failure */
    int failed, raised;
    const node *at; /* the expression or statement being run: errors point at it */
    tune_strbuf *out, *root;
    frame *frame;
    jdict *globals;
    int nesting; /* eval / exec recursion, bounded */
    jv block_in; /* the captured text a {% filter %} / {% set %} block's filters read */
    long long now;
    tune_jinja_limits lim;
    long iterations;
    size_t work; /* against lim.max_work */
    int depth;
    tune_jinja_span *spans;
    int nspans, capspans;
    jv *namespaces; /* every namespace made: cleared at the end, as they can form cycles */
    size_t nns, capns;
};

/* ---- value.c ---- */

/* Fails the render at c->at (the first failure wins); returns -1. */
int jfail(rctx *c, tune_status code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int joom(rctx *c);
/* Counts n units of work (see tune_jinja_limits.max_work); -1 past the limit. */
int jwork(rctx *c, size_t n);
#define JV_WORK ((size_t)sizeof(jv)) /* the work of one list item or dict entry */

static inline jv jv_none(void) { return (jv){.t = JV_NONE}; }
static inline jv jv_bool(int b) { return (jv){.t = JV_BOOL, .u.i = b != 0}; }
static inline jv jv_int(int64_t i) { return (jv){.t = JV_INT, .u.i = i}; }
static inline jv jv_float(double f) { return (jv){.t = JV_FLOAT, .u.f = f}; }
static inline jstr *S(jv v) { return (jstr *)v.u.o; }
static inline jlist *L(jv v) { return (jlist *)v.u.o; }
static inline jdict *D(jv v) { return (jdict *)v.u.o; }
static inline int jv_is_num(jv v) { return v.t == JV_INT || v.t == JV_BOOL || v.t == JV_FLOAT; }

jv jv_ref(jv v);
void jv_unref(jv v);
void frame_clear(frame *f);
void frame_unref(frame *f);

/* Appends to a buffer, failing past max_output bytes (every text the render
 * builds is bounded so, not only its output). */
int sbput(rctx *c, tune_strbuf *sb, const char *s, size_t n);
int sbputs(rctx *c, tune_strbuf *sb, const char *s);
/* Constructors fail (-1) when out of memory or past the render's bounds;
 * on failure *out is not set. */
int jv_str(rctx *c, const char *s, size_t n, jv *out);
int jv_strz(rctx *c, const char *s, jv *out);
int jv_str_buf(rctx *c, tune_strbuf *sb, jv *out); /* frees sb */
int jv_undef(rctx *c, jv *out, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int jv_list(rctx *c, size_t cap, jv *out);
int jv_dict(rctx *c, jv *out);
int list_push(rctx *c, jlist *l, jv v); /* takes v */
int dict_set(rctx *c, jdict *d, jv k, jv v); /* takes k and v */
jv *dict_get(const jdict *d, jv key);
jv *dict_getz(const jdict *d, const char *key);
int jv_from_json(rctx *c, const cJSON *j, jv *out);
void dict_clear(jdict *d);

int jv_truthy(jv v);
const char *jv_type_name(jv v); /* Python's type name: "str", "NoneType", ... */
int jv_eq(jv a, jv b);
/* *result -1, 0 or 1 as Python orders a and b; fails (TypeError) when they do not order. */
int jv_cmp(rctx *c, jv a, jv b, int *result);
/* str(v) / repr(v) appended to sb. */
int jv_print(rctx *c, tune_strbuf *sb, jv v);
int jv_repr(rctx *c, tune_strbuf *sb, jv v);
int jv_to_str(rctx *c, jv v, jv *out); /* str(v) as a value (v itself when a str) */
/* json.dumps(v, ensure_ascii, indent (NULL: none), separators, sort_keys). */
int jv_json(rctx *c, tune_strbuf *sb, jv v, int ensure_ascii, const char *indent, const char *item_sep,
            const char *key_sep, int sort_keys);
/* Raises the undefined's error when v is undefined (attribute access, arithmetic, ...). */
int jv_check_defined(rctx *c, jv v);
/* The items a for loop / filter walks: a new reference to a list. */
int jv_iter(rctx *c, jv v, jv *list);
int jv_len(rctx *c, jv v, int64_t *n);

/* Python's sorted(): stable, by key (references borrowed). */
typedef struct sort_ent {
    jv key, item;
} sort_ent;
int jv_sort(rctx *c, sort_ent *e, size_t n, int reverse);

/* UTF-8 by code point. */
uint32_t utf8_next(const char *s, size_t n, size_t *i);
size_t utf8_put(uint32_t cp, char *out);
size_t utf8_count(const char *s, size_t n);
int py_isspace(uint32_t cp);
/* Byte offset of code point index k (k <= count). */
size_t utf8_offset(const jstr *s, size_t k);

/* ---- eval.c ---- */

/* obj[key] as jinja2's sandbox does it: the item, else the attribute (a
 * str key), else an Undefined that says which. */
int get_item(rctx *c, jv obj, jv key, jv *out);
int ns_register(rctx *c, jv ns);
/* a op b for + - * / // % ** ~; comparisons and `in` (*result 0 or 1). */
int binop(rctx *c, jop op, jv a, jv b, jv *out);
int compare(rctx *c, jop op, jv a, jv b, int *result);
int contains(rctx *c, jv container, jv item, int *result);
int check_hashable(rctx *c, jv v);
/* markupsafe.escape(s) of a str: a Markup str. */
int escape_str(rctx *c, jv s, jv *out);

/* ---- builtins.c ---- */

const jbuiltin *find_filter(const char *name);
const jbuiltin *find_test(const char *name);
/* The method `name` of a str / dict / list / loop value: NULL when none. */
jbuiltin_fn find_method(jv self, const char *name);
/* list.append & co.: the immutable sandbox refuses them. */
int unsafe_method(jv self, const char *name);
const jfunc *find_global(const char *name);
int run_test(rctx *c, const jbuiltin *t, jv v, const jargs *a, int *result);
/* fmt % args (printf-style formatting of a str). */
int percent_format(rctx *c, jv fmt, jv args, jv *out);

#endif
