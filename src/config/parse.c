/* YAML (libyaml document API) → tune_config, driven by the schema. The same
 * code sets values from the file, from command-line overrides (each value is
 * itself parsed as YAML) and from the schema's defaults (YAML text too). */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "schema.h"
#include "tune/data.h"

typedef struct ctx {
    const char *name;      /* file name for errors */
    tune_origin_kind kind; /* where the values come from */
    const char *flag;      /* the command-line flag (TUNE_FROM_CLI) */
    yaml_document_t *doc;
    tune_error_list *errs;
    tune_status status;    /* worst error so far */
    int n_errors;
    size_t copied;         /* bytes of values taken out of the document */
    int stopped;           /* past a limit: the rest is not read */
} ctx;

static void add_error(ctx *c, tune_status code, int line, int col, const char *fmt, va_list ap)
{
    if (c->stopped) return;
    char msg[900];
    if (++c->n_errors > TUNE_CONFIG_MAX_ERRORS) {
        snprintf(msg, sizeof msg, "more than %d errors: the rest of the config was not read", TUNE_CONFIG_MAX_ERRORS);
        c->stopped = 1;
    } else {
        vsnprintf(msg, sizeof msg, fmt, ap);
    }
    tune_error e;
    if (c->kind == TUNE_FROM_FILE)
        tune_error_set(&e, code, c->name, line, col, "%s", msg);
    else if (c->kind == TUNE_FROM_CLI)
        tune_error_set(&e, code, "command line", 0, 0, "%s: %s", c->flag, msg);
    else
        tune_error_set(&e, code, NULL, 0, 0, "schema default: %s", msg);
    if (tune_error_list_add(c->errs, &e) != TUNE_OK) code = TUNE_ERR_RUN;
    if (code > c->status) c->status = code;
}

static void node_error(ctx *c, const yaml_node_t *n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void node_error(ctx *c, const yaml_node_t *n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    add_error(c, TUNE_ERR_INPUT, n ? (int)n->start_mark.line + 1 : 0, n ? (int)n->start_mark.column + 1 : 0, fmt, ap);
    va_end(ap);
}

static void oom(ctx *c)
{
    tune_error e;
    tune_error_set(&e, TUNE_ERR_RUN, NULL, 0, 0, "out of memory while reading the config");
    tune_error_list_add(c->errs, &e);
    c->status = TUNE_ERR_RUN;
}

static void config_error(ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void config_error(ctx *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    add_error(c, TUNE_ERR_INPUT, 0, 0, fmt, ap);
    va_end(ap);
}

/* A copy of a value; NULL (the error reported) when out of memory or past
 * TUNE_CONFIG_MAX_BYTES of values in all. */
static char *xstrndup(ctx *c, const char *s, size_t n)
{
    if (n > TUNE_CONFIG_MAX_BYTES - c->copied) {
        config_error(c, "the values of the config add up to more than %d bytes with its YAML aliases expanded, "
                        "tune's limit for a config (see docs/limits.md)", TUNE_CONFIG_MAX_BYTES);
        c->stopped = 1;
        return NULL;
    }
    c->copied += n;
    char *p = malloc(n + 1);
    if (!p) {
        oom(c);
        return NULL;
    }
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

/* ---- scalars ---- */

static const char *scalar(const yaml_node_t *n)
{
    return (const char *)n->data.scalar.value;
}

static int is_null(const yaml_node_t *n)
{
    if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE) return 0;
    const char *s = scalar(n);
    return !*s || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") || !strcmp(s, "NULL");
}

static const char *node_kind(const yaml_node_t *n)
{
    return n->type == YAML_MAPPING_NODE ? "a mapping" : n->type == YAML_SEQUENCE_NODE ? "a list" : "a scalar";
}

/* The text of a scalar node, or an error naming what was expected. */
static const char *need_scalar(ctx *c, const char *key, const yaml_node_t *n, const char *what)
{
    if (n->type != YAML_SCALAR_NODE) {
        node_error(c, n, "%s must be %s, got %s", key, what, node_kind(n));
        return NULL;
    }
    if (strlen(scalar(n)) != n->data.scalar.length) {
        node_error(c, n, "%s contains a NUL character", key);
        return NULL;
    }
    return scalar(n);
}

/* YAML 1.1 booleans, as PyYAML (and so Axolotl) reads them. */
static int parse_bool(const char *s, int *v)
{
    static const char *const t[] = {"true", "True", "TRUE", "yes", "Yes", "YES", "on", "On", "ON", NULL};
    static const char *const f[] = {"false", "False", "FALSE", "no", "No", "NO", "off", "Off", "OFF", NULL};
    for (int i = 0; t[i]; i++)
        if (!strcmp(s, t[i])) return *v = 1, 1;
    for (int i = 0; f[i]; i++)
        if (!strcmp(s, f[i])) return *v = 0, 1;
    return 0;
}

static int parse_long(const char *s, long *v)
{
    char *end;
    errno = 0;
    long x = strtol(s, &end, 10);
    if (end == s || *end || errno) return 0;
    *v = x;
    return 1;
}

static int parse_double(const char *s, double *v)
{
    char *end;
    errno = 0;
    double x = strtod(s, &end);
    if (end == s || *end || errno == ERANGE || !isfinite(x)) return 0;
    *v = x;
    return 1;
}

static int in_range(const key_spec *k, double x)
{
    if (k->has_min && (k->min_open ? x <= k->min : x < k->min)) return 0;
    if (k->has_max && (k->max_open ? x >= k->max : x > k->max)) return 0;
    return 1;
}

static int check_range(ctx *c, const key_spec *k, const yaml_node_t *n, double x, const char *text)
{
    if (in_range(k, x)) return 1;
    char r[96];
    tune_schema_range_text(k, r, sizeof r);
    node_error(c, n, "%s must be %s, got %s", k->name, r, text);
    return 0;
}

/* ---- fields ---- */

static void free_list(char **items, int n)
{
    for (int i = 0; i < n; i++) free(items[i]);
    free(items);
}

static void free_roles(tune_role_map *roles, int n)
{
    for (int i = 0; i < n; i++) {
        free(roles[i].role);
        free_list(roles[i].names, roles[i].names_count);
    }
    free(roles);
}

void tune_dataset_free(tune_dataset_config *ds)
{
    for (int i = 0; i < tune_dataset_n_keys; i++) tune_schema_clear(&tune_dataset_keys[i], ds);
}

void tune_schema_clear(const key_spec *k, void *base)
{
    switch (k->type) {
    case K_STR: free(*FIELD(base, k, char *)); *FIELD(base, k, char *) = NULL; break;
    case K_BOOL: *FIELD(base, k, int) = 0; break;
    case K_INT: *FIELD(base, k, long) = 0; break;
    case K_FLOAT: *FIELD(base, k, double) = 0; break;
    case K_ENUM: *FIELD(base, k, int) = 0; break;
    case K_STRLIST:
        free_list(*FIELD(base, k, char **), *COUNT(base, k));
        *FIELD(base, k, char **) = NULL;
        *COUNT(base, k) = 0;
        break;
    case K_SUB:
        for (int i = 0; i < k->sub->n; i++) {
            char **p = (char **)((char *)FIELD(base, k, char) + k->sub->fields[i].off);
            free(*p);
            *p = NULL;
        }
        break;
    case K_ROLES:
        free_roles(*FIELD(base, k, tune_role_map *), *COUNT(base, k));
        *FIELD(base, k, tune_role_map *) = NULL;
        *COUNT(base, k) = 0;
        break;
    case K_DATASETS: {
        tune_dataset_config *ds = *FIELD(base, k, tune_dataset_config *);
        for (int i = 0; i < *COUNT(base, k); i++) tune_dataset_free(&ds[i]);
        free(ds);
        *FIELD(base, k, tune_dataset_config *) = NULL;
        *COUNT(base, k) = 0;
        break;
    }
    }
}

static tune_status set_value(ctx *c, const key_spec *k, void *base, tune_origin *origin, const yaml_node_t *key_node,
                             const yaml_node_t *v);
static tune_status load_text(ctx *c, const char *text, size_t len, yaml_document_t *doc, const yaml_node_t **root);

tune_status tune_schema_set_default(const key_spec *k, void *base, tune_origin *origin, tune_error_list *errs)
{
    tune_schema_clear(k, base);
    memset(origin, 0, sizeof *origin);
    if (!k->def) {
        if (k->type == K_INT) *FIELD(base, k, long) = -1;
        if (k->type == K_ENUM) *FIELD(base, k, int) = -1;
        return TUNE_OK;
    }
    ctx c = {.kind = TUNE_FROM_DEFAULT, .errs = errs};
    yaml_document_t doc;
    const yaml_node_t *root;
    c.doc = &doc;
    if (load_text(&c, k->def, strlen(k->def), &doc, &root) != TUNE_OK) return c.status;
    if (root) set_value(&c, k, base, origin, NULL, root);
    yaml_document_delete(&doc);
    memset(origin, 0, sizeof *origin);
    return c.status;
}

tune_status tune_dataset_init(tune_dataset_config *ds, tune_error_list *errs)
{
    memset(ds, 0, sizeof *ds);
    tune_status st = TUNE_OK;
    for (int i = 0; i < tune_dataset_n_keys; i++) {
        tune_status s = tune_schema_set_default(&tune_dataset_keys[i], ds, &ds->origin[i], errs);
        if (s > st) st = s;
    }
    return st;
}

static tune_origin origin_of(ctx *c, const yaml_node_t *key_node)
{
    tune_origin o;
    memset(&o, 0, sizeof o);
    o.kind = c->kind;
    if (c->kind == TUNE_FROM_FILE && key_node) {
        o.line = (int)key_node->start_mark.line + 1;
        o.col = (int)key_node->start_mark.column + 1;
    }
    if (c->kind == TUNE_FROM_CLI) snprintf(o.flag, sizeof o.flag, "%s", c->flag);
    return o;
}

/* Appends a copy of s to a list; 0 when out of memory. */
static int list_push(ctx *c, char ***items, int *n, const char *s, size_t len)
{
    char **grown = realloc(*items, (size_t)(*n + 1) * sizeof **items);
    if (!grown) return oom(c), 0;
    *items = grown;
    if (!(grown[*n] = xstrndup(c, s, len))) return 0;
    (*n)++;
    return 1;
}

/* Checks one list element against k->allowed and appends it; 0 on error. */
static int push_element(ctx *c, const key_spec *k, const char *what, const yaml_node_t *at, const char *s, size_t len,
                        char ***items, int *n)
{
    if (!len) {
        node_error(c, at, "%s: empty list element", what);
        return 0;
    }
    if (k && k->allowed) {
        int found = 0;
        for (int i = 0; !found && k->allowed[i]; i++) found = strlen(k->allowed[i]) == len && !strncmp(k->allowed[i], s, len);
        if (!found) {
            char name[128];
            snprintf(name, sizeof name, "%.*s", (int)len, s);
            const char *sug = tune_schema_suggest_name(k->allowed, name);
            char sugtext[96] = "";
            if (sug) snprintf(sugtext, sizeof sugtext, " (did you mean '%s'?)", sug);
            node_error(c, at, "%s: unknown module '%s'%s", what, name, sugtext);
            return 0;
        }
    }
    return list_push(c, items, n, s, len);
}

/* A list of strings: a YAML list of scalars, or one scalar, which on the
 * command line may be comma-separated ("q_proj,v_proj"). */
static int read_strlist(ctx *c, const key_spec *k, const char *what, const yaml_node_t *v, char ***out, int *n_out)
{
    char **items = NULL;
    int n = 0, ok = 1;
    if (v->type == YAML_SEQUENCE_NODE) {
        for (yaml_node_item_t *it = v->data.sequence.items.start; it < v->data.sequence.items.top && !c->stopped;
             it++) {
            const yaml_node_t *e = yaml_document_get_node(c->doc, *it);
            const char *s = need_scalar(c, what, e, "a list of strings");
            if (!s || !push_element(c, k, what, e, s, is_null(e) ? 0 : strlen(s), &items, &n)) ok = 0;
        }
    } else {
        const char *s = need_scalar(c, what, v, "a string or a list of strings");
        if (!s) ok = 0;
        while (s && ok) {
            const char *comma = c->kind == TUNE_FROM_CLI ? strchr(s, ',') : NULL;
            size_t len = comma ? (size_t)(comma - s) : strlen(s);
            while (len && isspace((unsigned char)*s)) s++, len--;
            while (len && isspace((unsigned char)s[len - 1])) len--;
            ok = push_element(c, k, what, v, s, len, &items, &n);
            s = comma ? comma + 1 : NULL;
        }
    }
    if (!ok) {
        free_list(items, n);
        return 0;
    }
    *out = items;
    *n_out = n;
    return 1;
}

/* Duplicate keys in a mapping: libyaml keeps both, PyYAML keeps the last. Both are errors here. */
static int duplicate_key(ctx *c, const yaml_node_t *map, const yaml_node_pair_t *pair)
{
    const yaml_node_t *k = yaml_document_get_node(c->doc, pair->key);
    if (k->type != YAML_SCALAR_NODE) return 0;
    for (const yaml_node_pair_t *p = map->data.mapping.pairs.start; p < pair; p++) {
        const yaml_node_t *q = yaml_document_get_node(c->doc, p->key);
        if (q->type == YAML_SCALAR_NODE && !strcmp(scalar(q), scalar(k))) {
            node_error(c, k, "duplicate key '%s' (first at line %d, column %d)", scalar(k),
                       (int)q->start_mark.line + 1, (int)q->start_mark.column + 1);
            return 1;
        }
    }
    return 0;
}

/* A fixed set of string sub-keys; sub-keys not given keep their values. */
static int read_sub(ctx *c, const key_spec *k, void *field, const yaml_node_t *v)
{
    if (v->type != YAML_MAPPING_NODE) {
        node_error(c, v, "%s must be a mapping, got %s", k->name, node_kind(v));
        return 0;
    }
    char *vals[8] = {0};
    int given[8] = {0}, ok = 1;
    for (yaml_node_pair_t *p = v->data.mapping.pairs.start; p < v->data.mapping.pairs.top && !c->stopped; p++) {
        const yaml_node_t *kn = yaml_document_get_node(c->doc, p->key);
        const yaml_node_t *vn = yaml_document_get_node(c->doc, p->value);
        const char *name = need_scalar(c, k->name, kn, "a mapping with string keys");
        if (!name || duplicate_key(c, v, p)) {
            ok = 0;
            continue;
        }
        int idx = -1;
        for (int i = 0; i < k->sub->n; i++)
            if (!strcmp(k->sub->fields[i].name, name)) idx = i;
        if (idx < 0) {
            char allowed[128] = "";
            for (int i = 0; i < k->sub->n; i++)
                snprintf(allowed + strlen(allowed), sizeof allowed - strlen(allowed), "%s%s", i ? ", " : "",
                         k->sub->fields[i].name);
            node_error(c, kn, "unknown key '%s' in %s (allowed: %s)", name, k->name, allowed);
            ok = 0;
            continue;
        }
        given[idx] = 1;
        if (is_null(vn)) continue;
        const char *s = need_scalar(c, name, vn, "a string");
        if (!s || !(vals[idx] = xstrndup(c, s, strlen(s)))) ok = 0;
    }
    for (int i = 0; i < k->sub->n; i++) {
        char **dst = (char **)((char *)field + k->sub->fields[i].off);
        if (ok && given[i]) {
            free(*dst);
            *dst = vals[i];
        } else {
            free(vals[i]);
        }
    }
    return ok;
}

static int read_roles(ctx *c, const key_spec *k, const yaml_node_t *v, tune_role_map **out, int *n_out)
{
    if (v->type != YAML_MAPPING_NODE) {
        node_error(c, v, "%s must be a mapping of role -> list of names, got %s", k->name, node_kind(v));
        return 0;
    }
    int n = (int)(v->data.mapping.pairs.top - v->data.mapping.pairs.start);
    if (n > TUNE_DATA_MAX_ROLES) {
        node_error(c, v, "%s: %d roles, more than tune's limit of %d", k->name, n, TUNE_DATA_MAX_ROLES);
        return 0;
    }
    tune_role_map *roles = calloc((size_t)(n ? n : 1), sizeof *roles);
    if (!roles) return oom(c), 0;
    int ok = 1, used = 0;
    for (yaml_node_pair_t *p = v->data.mapping.pairs.start; p < v->data.mapping.pairs.top; p++) {
        const yaml_node_t *kn = yaml_document_get_node(c->doc, p->key);
        const yaml_node_t *vn = yaml_document_get_node(c->doc, p->value);
        const char *role = need_scalar(c, k->name, kn, "a mapping with string keys");
        if (!role || duplicate_key(c, v, p)) {
            ok = 0;
            continue;
        }
        tune_role_map *r = &roles[used++];
        if (!(r->role = xstrndup(c, role, strlen(role))) || !read_strlist(c, NULL, role, vn, &r->names, &r->names_count))
            ok = 0;
    }
    if (!ok) {
        free_roles(roles, used);
        return 0;
    }
    *out = roles;
    *n_out = used;
    return 1;
}

static tune_status read_dataset(ctx *c, const yaml_node_t *v, tune_dataset_config *ds);

static int read_datasets(ctx *c, const key_spec *k, const yaml_node_t *v, tune_dataset_config **out, int *n_out)
{
    if (v->type != YAML_SEQUENCE_NODE) {
        node_error(c, v, "%s must be a list of dataset entries (- path: ...), got %s", k->name, node_kind(v));
        return 0;
    }
    int n = (int)(v->data.sequence.items.top - v->data.sequence.items.start);
    if (n > TUNE_CONFIG_MAX_DATASETS) {
        node_error(c, v, "%s: %d entries, more than tune's limit of %d (see docs/limits.md)", k->name, n,
                   TUNE_CONFIG_MAX_DATASETS);
        return 0;
    }
    tune_dataset_config *ds = calloc((size_t)(n ? n : 1), sizeof *ds);
    if (!ds) return oom(c), 0;
    int ok = 1;
    for (int i = 0; i < n; i++)
        if (read_dataset(c, yaml_document_get_node(c->doc, v->data.sequence.items.start[i]), &ds[i]) != TUNE_OK)
            ok = 0;
    /* Entries with errors are kept (their bad keys at defaults) so that validation
     * can still report the other problems of the list. */
    *out = ds;
    *n_out = n;
    return ok;
}

/* Sets one field from a node; the old value stays when the new one is bad.
 * A null value restores the default. */
static tune_status set_value(ctx *c, const key_spec *k, void *base, tune_origin *origin, const yaml_node_t *key_node,
                             const yaml_node_t *v)
{
    if (is_null(v) && c->kind != TUNE_FROM_DEFAULT) {
        tune_status st = tune_schema_set_default(k, base, origin, c->errs);
        if (st > c->status) c->status = st;
        return st;
    }
    const char *s = NULL;
    switch (k->type) {
    case K_STR:
        if (!(s = need_scalar(c, k->name, v, "a string"))) return TUNE_ERR_INPUT;
        {
            char *copy = xstrndup(c, s, strlen(s));
            if (!copy) return c->status;
            tune_schema_clear(k, base);
            *FIELD(base, k, char *) = copy;
        }
        break;
    case K_BOOL: {
        int b;
        if (!(s = need_scalar(c, k->name, v, "true or false"))) return TUNE_ERR_INPUT;
        if (!parse_bool(s, &b)) {
            node_error(c, v, "%s must be true or false, got '%s'", k->name, s);
            return TUNE_ERR_INPUT;
        }
        *FIELD(base, k, int) = b;
        break;
    }
    case K_INT: {
        long x;
        if (!(s = need_scalar(c, k->name, v, "an integer"))) return TUNE_ERR_INPUT;
        if (!parse_long(s, &x)) {
            node_error(c, v, "%s must be an integer, got '%s'", k->name, s);
            return TUNE_ERR_INPUT;
        }
        if (!check_range(c, k, v, (double)x, s)) return TUNE_ERR_INPUT;
        *FIELD(base, k, long) = x;
        break;
    }
    case K_FLOAT: {
        double x;
        if (!(s = need_scalar(c, k->name, v, "a number"))) return TUNE_ERR_INPUT;
        if (!parse_double(s, &x)) {
            node_error(c, v, "%s must be a number, got '%s'", k->name, s);
            return TUNE_ERR_INPUT;
        }
        if (!check_range(c, k, v, x, s)) return TUNE_ERR_INPUT;
        *FIELD(base, k, double) = x;
        break;
    }
    case K_ENUM: {
        char list[512];
        if (!(s = need_scalar(c, k->name, v, "a string"))) return TUNE_ERR_INPUT;
        int b;
        if (k->en->boolish && v->data.scalar.style == YAML_PLAIN_SCALAR_STYLE && parse_bool(s, &b))
            s = b ? "true" : "false";
        const enum_value *e = tune_schema_enum_find(k->en, s);
        if (!e) {
            const char *names[64];
            int n = 0;
            for (int i = 0; i < k->en->n && n < 63; i++) names[n++] = k->en->values[i].name;
            names[n] = NULL;
            const char *sug = tune_schema_suggest_name(names, s);
            char sugtext[96] = "";
            if (sug) snprintf(sugtext, sizeof sugtext, "; did you mean '%s'?", sug);
            tune_schema_enum_list(k->en, 1, list, sizeof list);
            node_error(c, v, "bad value '%s' for %s (allowed: %s%s)", s, k->name, list, sugtext);
            return TUNE_ERR_INPUT;
        }
        if (e->value < 0) {
            tune_schema_enum_list(k->en, 1, list, sizeof list);
            node_error(c, v, "%s: %s is not supported yet (supported: %s)", k->name, s, list);
            return TUNE_ERR_INPUT;
        }
        *FIELD(base, k, int) = e->value;
        break;
    }
    case K_STRLIST: {
        char **items;
        int n;
        if (!read_strlist(c, k, k->name, v, &items, &n)) return TUNE_ERR_INPUT;
        tune_schema_clear(k, base);
        *FIELD(base, k, char **) = items;
        *COUNT(base, k) = n;
        break;
    }
    case K_SUB:
        if (!read_sub(c, k, FIELD(base, k, char), v)) return TUNE_ERR_INPUT;
        break;
    case K_ROLES: {
        tune_role_map *roles;
        int n;
        if (!read_roles(c, k, v, &roles, &n)) return TUNE_ERR_INPUT;
        tune_schema_clear(k, base);
        *FIELD(base, k, tune_role_map *) = roles;
        *COUNT(base, k) = n;
        break;
    }
    case K_DATASETS: {
        tune_dataset_config *ds = NULL;
        int n = 0;
        int ok = read_datasets(c, k, v, &ds, &n);
        if (ds) {
            tune_schema_clear(k, base);
            *FIELD(base, k, tune_dataset_config *) = ds;
            *COUNT(base, k) = n;
        }
        if (!ok) return TUNE_ERR_INPUT;
        break;
    }
    }
    *origin = origin_of(c, key_node);
    return TUNE_OK;
}

/* Applies every pair of a mapping to keys of one schema table. */
static void read_mapping(ctx *c, const yaml_node_t *map, const key_spec *keys, int n_keys, void *base,
                         tune_origin *origins, const char *where)
{
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top && !c->stopped; p++) {
        const yaml_node_t *kn = yaml_document_get_node(c->doc, p->key);
        const yaml_node_t *vn = yaml_document_get_node(c->doc, p->value);
        if (kn->type != YAML_SCALAR_NODE) {
            node_error(c, kn, "keys must be plain names, got %s", node_kind(kn));
            continue;
        }
        if (duplicate_key(c, map, p)) continue;
        const char *name = scalar(kn);
        int i = tune_schema_find(keys, n_keys, name, strlen(name));
        if (i < 0) {
            const char *sug = tune_schema_suggest(keys, n_keys, name);
            if (keys == tune_config_keys && tune_schema_find(tune_dataset_keys, tune_dataset_n_keys, name, strlen(name)) >= 0)
                node_error(c, kn, "unknown key '%s' (it is a dataset key: put it in an entry under datasets:)", name);
            else if (sug)
                node_error(c, kn, "unknown key '%s'%s (did you mean '%s'?)", name, where, sug);
            else
                node_error(c, kn, "unknown key '%s'%s", name, where);
            continue;
        }
        tune_status st = set_value(c, &keys[i], base, &origins[i], kn, vn);
        /* A bad value still counts as given: no "missing key" error on top of its own. */
        if (st != TUNE_OK) origins[i] = origin_of(c, kn), origins[i].bad = 1;
        if (st > c->status) c->status = st;
    }
}

static tune_status read_dataset(ctx *c, const yaml_node_t *v, tune_dataset_config *ds)
{
    tune_status before = c->status;
    c->status = TUNE_OK;
    tune_status st = tune_dataset_init(ds, c->errs);
    if (st != TUNE_OK) {
        c->status = st > before ? st : before;
        return st;
    }
    ds->line = c->kind == TUNE_FROM_FILE ? (int)v->start_mark.line + 1 : 0;
    ds->col = c->kind == TUNE_FROM_FILE ? (int)v->start_mark.column + 1 : 0;
    if (v->type != YAML_MAPPING_NODE) {
        node_error(c, v, "a dataset entry must be a mapping (path: ..., type: ...), got %s", node_kind(v));
    } else {
        read_mapping(c, v, tune_dataset_keys, tune_dataset_n_keys, ds, ds->origin, " in dataset entry");
    }
    st = c->status;
    if (before > c->status) c->status = before;
    return st;
}

static void mark_error(ctx *c, yaml_mark_t m, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void mark_error(ctx *c, yaml_mark_t m, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    add_error(c, TUNE_ERR_INPUT, (int)m.line + 1, (int)m.column + 1, fmt, ap);
    va_end(ap);
}

/* Where the text nests mappings and sequences deeper than
 * TUNE_CONFIG_MAX_DEPTH, found by libyaml's event parser, which stops there
 * in time linear in the text read. libyaml's loader takes time quadratic in
 * the depth (100,000 levels: 15 s), so deeper text never reaches it; no key
 * of the schema nests more than a few levels. 0 when within the limit or not
 * valid YAML (the loader then reports the syntax error). */
static int too_deep(const char *text, size_t len, yaml_mark_t *at)
{
    yaml_parser_t parser;
    if (!yaml_parser_initialize(&parser)) return 0; /* the loader reports it */
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    int depth = 0, deep = 0, end = 0;
    while (!deep && !end) {
        yaml_event_t e;
        if (!yaml_parser_parse(&parser, &e)) break;
        if (e.type == YAML_SEQUENCE_START_EVENT || e.type == YAML_MAPPING_START_EVENT) {
            deep = ++depth > TUNE_CONFIG_MAX_DEPTH;
            *at = e.start_mark;
        } else if (e.type == YAML_SEQUENCE_END_EVENT || e.type == YAML_MAPPING_END_EVENT) {
            depth--;
        }
        end = e.type == YAML_STREAM_END_EVENT;
        yaml_event_delete(&e);
    }
    yaml_parser_delete(&parser);
    return deep;
}

/* Loads one YAML document; *root is NULL for an empty one. On error the
 * document is already freed. */
static tune_status load_text(ctx *c, const char *text, size_t len, yaml_document_t *doc, const yaml_node_t **root)
{
    if (len > TUNE_CONFIG_MAX_BYTES) {
        config_error(c, "%zu bytes of YAML, more than tune's limit of %d for a config (see docs/limits.md)", len,
                     TUNE_CONFIG_MAX_BYTES);
        return c->status;
    }
    yaml_mark_t deep_at;
    if (too_deep(text, len, &deep_at)) {
        mark_error(c, deep_at, "the YAML nests deeper than %d levels, tune's limit for a config (see docs/limits.md)",
                   TUNE_CONFIG_MAX_DEPTH);
        return c->status;
    }
    yaml_parser_t parser;
    if (!yaml_parser_initialize(&parser)) return oom(c), TUNE_ERR_RUN;
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    if (!yaml_parser_load(&parser, doc)) {
        mark_error(c, parser.problem_mark, "invalid YAML: %s%s%s", parser.problem ? parser.problem : "parse error",
                   parser.context ? " " : "", parser.context ? parser.context : "");
        yaml_parser_delete(&parser);
        return c->status;
    }
    *root = yaml_document_get_root_node(doc);
    if (*root) {
        /* A second document is a mistake in a config, not something to ignore. */
        yaml_document_t next;
        if (!yaml_parser_load(&parser, &next)) {
            mark_error(c, parser.problem_mark, "invalid YAML: %s", parser.problem ? parser.problem : "parse error");
        } else {
            const yaml_node_t *r2 = yaml_document_get_root_node(&next);
            if (r2) node_error(c, r2, "more than one YAML document in the config");
            yaml_document_delete(&next);
        }
    }
    yaml_parser_delete(&parser);
    if (c->status != TUNE_OK) {
        yaml_document_delete(doc);
        return c->status;
    }
    return TUNE_OK;
}

tune_status tune_config_parse_string(tune_config *cfg, const char *name, const char *text, size_t len,
                                     tune_error_list *errs)
{
    return tune_schema_parse(cfg, name, text, len, errs, NULL);
}

tune_status tune_schema_parse(tune_config *cfg, const char *name, const char *text, size_t len, tune_error_list *errs,
                              int *yaml_ok)
{
    ctx c = {.name = name, .kind = TUNE_FROM_FILE, .errs = errs};
    yaml_document_t doc;
    const yaml_node_t *root;
    c.doc = &doc;
    if (yaml_ok) *yaml_ok = 0;
    if (load_text(&c, text, len, &doc, &root) != TUNE_OK) return c.status;
    if (yaml_ok) *yaml_ok = root && root->type == YAML_MAPPING_NODE;
    if (!root) {
        tune_error e;
        tune_error_set(&e, TUNE_ERR_INPUT, name, 1, 1, "the config is empty");
        tune_error_list_add(errs, &e);
        c.status = TUNE_ERR_INPUT;
    } else if (root->type != YAML_MAPPING_NODE) {
        node_error(&c, root, "the config must be a mapping of keys (key: value), got %s", node_kind(root));
    } else {
        read_mapping(&c, root, tune_config_keys, tune_config_n_keys, cfg, cfg->origin, "");
    }
    yaml_document_delete(&doc);
    return c.status;
}

tune_status tune_config_parse_file(tune_config *cfg, const char *path, tune_error_list *errs)
{
    return tune_schema_parse_file(cfg, path, errs, NULL);
}

tune_status tune_schema_parse_file(tune_config *cfg, const char *path, tune_error_list *errs, int *yaml_ok)
{
    if (yaml_ok) *yaml_ok = 0;
    char *text;
    size_t len;
    tune_error e;
    if (tune_read_file(path, &text, &len, &e) != TUNE_OK) {
        tune_error_list_add(errs, &e);
        return e.code;
    }
    free(cfg->config_path);
    cfg->config_path = strdup(path);
    tune_status st = cfg->config_path ? tune_schema_parse(cfg, path, text, len, errs, yaml_ok) : TUNE_ERR_RUN;
    free(text);
    return st;
}

/* ---- overrides ---- */

static int cli_error(tune_error_list *errs, const char *flag, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int cli_error(tune_error_list *errs, const char *flag, const char *fmt, ...)
{
    char msg[900];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    tune_error e;
    tune_error_set(&e, TUNE_ERR_INPUT, "command line", 0, 0, "%s: %s", flag, msg);
    tune_error_list_add(errs, &e);
    return TUNE_ERR_INPUT;
}

/* Sets field k of base (or, with sub_name, one field of a K_SUB key) from YAML text. */
static tune_status set_from_text(const key_spec *k, void *base, tune_origin *origin, const char *sub_name,
                                 const char *value, const char *flag, tune_error_list *errs)
{
    ctx c = {.kind = TUNE_FROM_CLI, .flag = flag, .errs = errs};
    yaml_document_t doc;
    const yaml_node_t *root;
    c.doc = &doc;
    if (load_text(&c, value, strlen(value), &doc, &root) != TUNE_OK) return c.status;
    yaml_node_t empty;
    if (!root) { /* "--key=" : an empty value is null */
        memset(&empty, 0, sizeof empty);
        empty.type = YAML_SCALAR_NODE;
        empty.data.scalar.value = (yaml_char_t *)"";
        empty.data.scalar.style = YAML_PLAIN_SCALAR_STYLE;
        root = &empty;
    }
    if (!sub_name) {
        if (set_value(&c, k, base, origin, NULL, root) != TUNE_OK) *origin = origin_of(&c, NULL), origin->bad = 1;
    } else {
        int idx = -1;
        for (int i = 0; i < k->sub->n; i++)
            if (!strcmp(k->sub->fields[i].name, sub_name)) idx = i;
        if (idx < 0) {
            cli_error(errs, flag, "unknown key '%s' in %s", sub_name, k->name);
            c.status = TUNE_ERR_INPUT;
        } else {
            char **dst = (char **)((char *)FIELD(base, k, char) + k->sub->fields[idx].off);
            const char *s = is_null(root) ? NULL : need_scalar(&c, sub_name, root, "a string");
            if (is_null(root)) {
                free(*dst);
                *dst = NULL;
            } else if (s) {
                char *copy = xstrndup(&c, s, strlen(s));
                if (copy) {
                    free(*dst);
                    *dst = copy;
                }
            }
            if (c.status == TUNE_OK) *origin = origin_of(&c, NULL);
        }
    }
    yaml_document_delete(&doc);
    return c.status;
}

static tune_status unknown_key(tune_error_list *errs, const char *flag, const key_spec *keys, int n, const char *name,
                               size_t len, const char *where)
{
    char buf[128];
    snprintf(buf, sizeof buf, "%.*s", (int)len, name);
    for (char *p = buf; *p; p++)
        if (*p == '-') *p = '_';
    const char *sug = tune_schema_suggest(keys, n, buf);
    if (sug) return cli_error(errs, flag, "unknown key '%s'%s (did you mean '%s'?)", buf, where, sug);
    return cli_error(errs, flag, "unknown key '%s'%s", buf, where);
}

tune_status tune_config_set(tune_config *cfg, const char *key, const char *value, const char *flag,
                            tune_error_list *errs)
{
    const char *dot = strchr(key, '.');
    size_t len = dot ? (size_t)(dot - key) : strlen(key);
    int i = tune_schema_find(tune_config_keys, tune_config_n_keys, key, len);
    if (i < 0) return unknown_key(errs, flag, tune_config_keys, tune_config_n_keys, key, len, "");
    const key_spec *k = &tune_config_keys[i];
    if (!dot) return set_from_text(k, cfg, &cfg->origin[i], NULL, value, flag, errs);
    const char *rest = dot + 1;
    if (k->type == K_SUB) return set_from_text(k, cfg, &cfg->origin[i], rest, value, flag, errs);
    if (k->type != K_DATASETS) return cli_error(errs, flag, "%s has no sub-keys", k->name);

    /* datasets.N.key[.sub] */
    char *end;
    errno = 0;
    long idx = strtol(rest, &end, 10);
    int *count = COUNT(cfg, k);
    if (end == rest || *end != '.' || errno || idx < 0 || idx > *count)
        return cli_error(errs, flag, "expected %s.N.KEY with N from 0 to %d", k->name, *count);
    tune_dataset_config **list = FIELD(cfg, k, tune_dataset_config *);
    if (idx == *count) { /* one past the end appends an entry */
        if (*count >= TUNE_CONFIG_MAX_DATASETS)
            return cli_error(errs, flag, "more than %d %s entries, tune's limit (see docs/limits.md)",
                             TUNE_CONFIG_MAX_DATASETS, k->name);
        tune_dataset_config *grown = realloc(*list, (size_t)(*count + 1) * sizeof **list);
        if (!grown) return cli_error(errs, flag, "out of memory");
        *list = grown;
        tune_status st = tune_dataset_init(&grown[*count], errs);
        if (st != TUNE_OK) return st;
        (*count)++;
        cfg->origin[i].kind = TUNE_FROM_CLI;
        snprintf(cfg->origin[i].flag, sizeof cfg->origin[i].flag, "%s", flag);
    }
    tune_dataset_config *ds = &(*list)[idx];
    const char *dkey = end + 1, *dot2 = strchr(dkey, '.');
    size_t dlen = dot2 ? (size_t)(dot2 - dkey) : strlen(dkey);
    int j = tune_schema_find(tune_dataset_keys, tune_dataset_n_keys, dkey, dlen);
    if (j < 0)
        return unknown_key(errs, flag, tune_dataset_keys, tune_dataset_n_keys, dkey, dlen, " in dataset entry");
    const key_spec *dk = &tune_dataset_keys[j];
    if (dot2 && dk->type != K_SUB) return cli_error(errs, flag, "%s has no sub-keys", dk->name);
    return set_from_text(dk, ds, &ds->origin[j], dot2 ? dot2 + 1 : NULL, value, flag, errs);
}

/* The original fine-tuning scripts' short flags. */
static const struct {
    const char *flag, *key, *implied;
} SHORT_FLAGS[] = {
    {"model", "base_model", NULL},
    {"dataset", "datasets.0.path", NULL},
    {"dataset_path", "datasets.0.path", NULL},
    {"epochs", "num_epochs", NULL},
    {"batch_size", "micro_batch_size", NULL},
    {"lr", "learning_rate", NULL},
    {"load_8bit", "load_in_8bit", "true"},
};
#define N_SHORT (int)(sizeof SHORT_FLAGS / sizeof SHORT_FLAGS[0])

tune_status tune_config_apply_args(tune_config *cfg, int argc, char **argv, tune_error_list *errs)
{
    tune_status worst = TUNE_OK;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) || !a[2]) {
            tune_status st = cli_error(errs, a, "unexpected argument (overrides are --key value)");
            if (st > worst) worst = st;
            continue;
        }
        char name[128], flag[300];
        const char *eq = strchr(a, '=');
        size_t nlen = eq ? (size_t)(eq - a - 2) : strlen(a + 2);
        if (nlen >= sizeof name) nlen = sizeof name - 1;
        memcpy(name, a + 2, nlen);
        name[nlen] = '\0';
        for (char *p = name; *p; p++)
            if (*p == '-') *p = '_';
        snprintf(flag, sizeof flag, "--%s", name);

        const char *key = name, *implied = NULL;
        for (int s = 0; s < N_SHORT; s++)
            if (!strcmp(name, SHORT_FLAGS[s].flag)) key = SHORT_FLAGS[s].key, implied = SHORT_FLAGS[s].implied;
        int top = tune_schema_find(tune_config_keys, tune_config_n_keys, key, strcspn(key, "."));
        int is_bool = top >= 0 && !strchr(key, '.') && tune_config_keys[top].type == K_BOOL;

        const char *value = NULL;
        if (eq)
            value = eq + 1;
        else if (i + 1 < argc && strncmp(argv[i + 1], "--", 2))
            value = argv[++i];
        else if (implied)
            value = implied;
        else if (is_bool)
            value = "true";

        tune_status st;
        if (!strcmp(name, "set")) {
            const char *e2 = value ? strchr(value, '=') : NULL;
            if (!e2) {
                st = cli_error(errs, "--set", "expected --set KEY=VALUE");
            } else {
                char path[200];
                snprintf(path, sizeof path, "%.*s", (int)(e2 - value), value);
                snprintf(flag, sizeof flag, "--set %s", path);
                st = tune_config_set(cfg, path, e2 + 1, flag, errs);
            }
        } else if (top < 0) {
            const char *names[TUNE_CONFIG_MAX_KEYS + N_SHORT + 2];
            int n = 0;
            for (int k = 0; k < tune_config_n_keys; k++) names[n++] = tune_config_keys[k].name;
            for (int s = 0; s < N_SHORT; s++) names[n++] = SHORT_FLAGS[s].flag;
            names[n++] = "set";
            names[n] = NULL;
            const char *sug = tune_schema_suggest_name(names, name);
            if (sug)
                st = cli_error(errs, flag, "unknown option (did you mean '--%s'?)", sug);
            else
                st = cli_error(errs, flag, "unknown option");
        } else if (!value) {
            st = cli_error(errs, flag, "needs a value");
        } else {
            st = tune_config_set(cfg, key, value, flag, errs);
        }
        if (st > worst) worst = st;
    }
    return worst;
}
