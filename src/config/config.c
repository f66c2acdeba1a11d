/* tune_config life cycle, equality, origins and the cross-key checks. */
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "schema.h"

tune_status tune_config_init(tune_config *cfg, tune_error *err)
{
    memset(cfg, 0, sizeof *cfg);
    tune_error_list errs = {0};
    tune_status st = TUNE_OK;
    for (int i = 0; i < tune_config_n_keys && st == TUNE_OK; i++)
        st = tune_schema_set_default(&tune_config_keys[i], cfg, &cfg->origin[i], &errs);
    if (st != TUNE_OK) {
        /* A schema default that does not parse is a bug; only out of memory reaches here in practice. */
        if (errs.count && err)
            *err = errs.items[0];
        else
            tune_fail_run(err, NULL, "out of memory while filling config defaults");
        tune_config_free(cfg);
    }
    tune_error_list_free(&errs);
    return st;
}

void tune_config_free(tune_config *cfg)
{
    for (int i = 0; i < tune_config_n_keys; i++) tune_schema_clear(&tune_config_keys[i], cfg);
    free(cfg->config_path);
    cfg->config_path = NULL;
}

static int str_eq(const char *a, const char *b)
{
    return (!a && !b) || (a && b && !strcmp(a, b));
}

static int list_eq(char **a, int na, char **b, int nb)
{
    if (na != nb) return 0;
    for (int i = 0; i < na; i++)
        if (strcmp(a[i], b[i])) return 0;
    return 1;
}

static int fields_equal(const key_spec *keys, int n, const void *a, const void *b);

static int field_equal(const key_spec *k, const void *a, const void *b)
{
    switch (k->type) {
    case K_STR: return str_eq(*FIELD(a, k, char *), *FIELD(b, k, char *));
    case K_BOOL:
    case K_ENUM: return *FIELD(a, k, int) == *FIELD(b, k, int);
    case K_INT: return *FIELD(a, k, long) == *FIELD(b, k, long);
    case K_FLOAT: return *FIELD(a, k, double) == *FIELD(b, k, double);
    case K_STRLIST: return list_eq(*FIELD(a, k, char **), *COUNT(a, k), *FIELD(b, k, char **), *COUNT(b, k));
    case K_SUB:
        for (int i = 0; i < k->sub->n; i++) {
            size_t off = k->sub->fields[i].off;
            if (!str_eq(*(char **)((char *)FIELD(a, k, char) + off), *(char **)((char *)FIELD(b, k, char) + off)))
                return 0;
        }
        return 1;
    case K_ROLES: {
        const tune_role_map *ra = *FIELD(a, k, tune_role_map *), *rb = *FIELD(b, k, tune_role_map *);
        if (*COUNT(a, k) != *COUNT(b, k)) return 0;
        for (int i = 0; i < *COUNT(a, k); i++)
            if (strcmp(ra[i].role, rb[i].role) || !list_eq(ra[i].names, ra[i].names_count, rb[i].names, rb[i].names_count))
                return 0;
        return 1;
    }
    case K_DATASETS: {
        const tune_dataset_config *da = *FIELD(a, k, tune_dataset_config *), *db = *FIELD(b, k, tune_dataset_config *);
        if (*COUNT(a, k) != *COUNT(b, k)) return 0;
        for (int i = 0; i < *COUNT(a, k); i++)
            if (!fields_equal(tune_dataset_keys, tune_dataset_n_keys, &da[i], &db[i])) return 0;
        return 1;
    }
    }
    return 0;
}

static int fields_equal(const key_spec *keys, int n, const void *a, const void *b)
{
    for (int i = 0; i < n; i++)
        if (!field_equal(&keys[i], a, b)) return 0;
    return 1;
}

int tune_config_equal(const tune_config *a, const tune_config *b)
{
    return fields_equal(tune_config_keys, tune_config_n_keys, a, b);
}

const tune_origin *tune_config_origin(const tune_config *cfg, const char *key)
{
    int i = tune_schema_find(tune_config_keys, tune_config_n_keys, key, strlen(key));
    return i < 0 ? NULL : &cfg->origin[i];
}

const tune_origin *tune_dataset_origin(const tune_dataset_config *ds, const char *key)
{
    int i = tune_schema_find(tune_dataset_keys, tune_dataset_n_keys, key, strlen(key));
    return i < 0 ? NULL : &ds->origin[i];
}

void tune_origin_describe(const tune_config *cfg, const tune_origin *o, char *buf, size_t size)
{
    if (o->kind == TUNE_FROM_FILE)
        snprintf(buf, size, "%s:%d:%d", cfg->config_path ? cfg->config_path : "config", o->line, o->col);
    else if (o->kind == TUNE_FROM_CLI)
        snprintf(buf, size, "command line %s", o->flag);
    else
        snprintf(buf, size, "default");
}

static tune_status error_vat(const tune_config *cfg, const tune_origin *o, tune_error *err, const char *fmt,
                             va_list ap)
{
    char msg[900];
    vsnprintf(msg, sizeof msg, fmt, ap);
    if (o && o->kind == TUNE_FROM_FILE)
        return tune_error_set(err, TUNE_ERR_INPUT, cfg->config_path, o->line, o->col, "%s", msg);
    if (o && o->kind == TUNE_FROM_CLI)
        return tune_error_set(err, TUNE_ERR_INPUT, "command line", 0, 0, "%s: %s", o->flag, msg);
    /* A default (or a whole-file problem): the start of the file. */
    if (cfg->config_path) return tune_error_set(err, TUNE_ERR_INPUT, cfg->config_path, 1, 1, "%s", msg);
    return tune_error_set(err, TUNE_ERR_INPUT, "command line", 0, 0, "%s", msg);
}

tune_status tune_config_error_at(const tune_config *cfg, const tune_origin *o, tune_error *err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    tune_status st = error_vat(cfg, o, err, fmt, ap);
    va_end(ap);
    return st;
}

const char *tune_config_enum_name(const char *key, int value)
{
    int i = tune_schema_find(tune_config_keys, tune_config_n_keys, key, strlen(key));
    const key_spec *k = i >= 0 ? &tune_config_keys[i] : NULL;
    if (!k) {
        i = tune_schema_find(tune_dataset_keys, tune_dataset_n_keys, key, strlen(key));
        k = i >= 0 ? &tune_dataset_keys[i] : NULL;
    }
    if (!k || k->type != K_ENUM) return NULL;
    return tune_schema_enum_canonical(k->en, value);
}

/* ---- validation ---- */

typedef struct vctx {
    const tune_config *cfg;
    tune_error_list *errs;
    tune_status status;
} vctx;

static void verr(vctx *v, const tune_origin *o, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void verr(vctx *v, const tune_origin *o, const char *fmt, ...)
{
    tune_error e;
    va_list ap;
    va_start(ap, fmt);
    error_vat(v->cfg, o, &e, fmt, ap);
    va_end(ap);
    if (tune_error_list_add(v->errs, &e) != TUNE_OK) e.code = TUNE_ERR_RUN;
    if (e.code > v->status) v->status = e.code;
}

static const tune_origin *O(const tune_config *cfg, const char *key)
{
    return tune_config_origin(cfg, key);
}

static int given(const tune_config *cfg, const char *key)
{
    return O(cfg, key)->kind != TUNE_FROM_DEFAULT;
}

/* A key that is not supported yet is fine at its default, which is always "off". */
static int is_off(const key_spec *k, const void *base)
{
    switch (k->type) {
    case K_STR: return !*FIELD(base, k, char *) || !**FIELD(base, k, char *);
    case K_BOOL: return !*FIELD(base, k, int);
    case K_INT: return *FIELD(base, k, long) == -1;
    case K_ENUM: return *FIELD(base, k, int) == -1;
    case K_FLOAT: return *FIELD(base, k, double) == 0.0;
    case K_STRLIST:
    case K_ROLES:
    case K_DATASETS: return *COUNT(base, k) == 0;
    case K_SUB: return 0;
    }
    return 0;
}

/* Keys not supported yet, and enum values stored but not supported yet. */
static void check_supported(vctx *v, const key_spec *keys, int n, const void *base, const tune_origin *origins,
                            const char *where)
{
    for (int i = 0; i < n; i++) {
        const key_spec *k = &keys[i];
        if (!k->supported && !is_off(k, base)) {
            verr(v, &origins[i], "%s%s: not supported yet (%s)", where, k->name, k->doc);
        } else if (k->type == K_ENUM && *FIELD(base, k, int) >= 0) {
            int val = *FIELD(base, k, int);
            for (int j = 0; j < k->en->n; j++)
                if (k->en->values[j].value == val && !k->en->values[j].supported) {
                    char list[256];
                    tune_schema_enum_list(k->en, 1, list, sizeof list);
                    verr(v, &origins[i], "%s%s: %s is not supported yet (supported: %s)", where, k->name,
                         k->en->values[j].name, list);
                    break;
                }
        }
    }
}

static void check_datasets(vctx *v, const char *key, const tune_dataset_config *ds, int n)
{
    for (int i = 0; i < n; i++) {
        char where[64];
        snprintf(where, sizeof where, "%s[%d].", key, i);
        if (!ds[i].path || !*ds[i].path) {
            tune_origin at = *O(v->cfg, key);
            if (ds[i].line > 0) at.kind = TUNE_FROM_FILE, at.line = ds[i].line, at.col = ds[i].col;
            verr(v, &at, "%s[%d]: missing required key 'path'", key, i);
        }
        check_supported(v, tune_dataset_keys, tune_dataset_n_keys, &ds[i], ds[i].origin, where);
    }
}

/* Set to something other than "off" (so a resolved file, which spells out
 * every default, reads back without contradictions). */
static int is_set(const tune_config *cfg, const char *key)
{
    int i = tune_schema_find(tune_config_keys, tune_config_n_keys, key, strlen(key));
    return !is_off(&tune_config_keys[i], cfg);
}

static void exclusive(vctx *v, const char *a, const char *b)
{
    if (!is_set(v->cfg, a) || !is_set(v->cfg, b)) return;
    char where[256];
    tune_origin_describe(v->cfg, O(v->cfg, a), where, sizeof where);
    verr(v, O(v->cfg, b), "%s and %s are both set (%s at %s); use one", a, b, a, where);
}

tune_status tune_config_validate(const tune_config *cfg, tune_error_list *errs)
{
    vctx v = {cfg, errs, TUNE_OK};
    for (int i = 0; i < tune_config_n_keys; i++) {
        const key_spec *k = &tune_config_keys[i];
        if (!k->required) continue;
        if (cfg->origin[i].kind == TUNE_FROM_DEFAULT)
            verr(&v, NULL, "missing required key '%s'", k->name);
        else if (k->type == K_DATASETS && *COUNT(cfg, k) == 0 && !cfg->origin[i].bad)
            verr(&v, &cfg->origin[i], "%s must list at least one dataset", k->name);
    }
    check_supported(&v, tune_config_keys, tune_config_n_keys, cfg, cfg->origin, "");
    check_datasets(&v, "datasets", cfg->datasets, cfg->datasets_count);
    check_datasets(&v, "test_datasets", cfg->test_datasets, cfg->test_datasets_count);

    exclusive(&v, "warmup_steps", "warmup_ratio");
    exclusive(&v, "save_steps", "saves_per_epoch");
    exclusive(&v, "eval_steps", "evals_per_epoch");
    if (cfg->load_in_8bit && cfg->load_in_4bit)
        verr(&v, O(cfg, "load_in_4bit"), "load_in_8bit and load_in_4bit are both true; use one");
    if (cfg->adapter != TUNE_ADAPTER_LORA && !cfg->load_in_4bit)
        verr(&v, O(cfg, "adapter"), "adapter: qlora needs load_in_4bit: true");
    if (cfg->adapter == TUNE_ADAPTER_LORA && cfg->load_in_4bit)
        verr(&v, O(cfg, "load_in_4bit"), "load_in_4bit trains QLoRA: set adapter: qlora");
    if (cfg->bnb_4bit_use_double_quant && !cfg->load_in_4bit)
        verr(&v, O(cfg, "bnb_4bit_use_double_quant"),
             "bnb_4bit_use_double_quant quantises load_in_4bit's NF4 scales: it needs load_in_4bit: true and adapter: qlora");
    if (cfg->val_set_size > 0 && cfg->test_datasets_count > 0)
        verr(&v, O(cfg, "val_set_size"), "val_set_size and test_datasets are both set; use one evaluation source");
    if (cfg->val_set_size > 1 && cfg->val_set_size != floor(cfg->val_set_size))
        verr(&v, O(cfg, "val_set_size"), "val_set_size above 1 is a record count and must be a whole number, got %g",
             cfg->val_set_size);
    if (is_set(cfg, "cosine_min_lr_ratio") && cfg->lr_scheduler != TUNE_LR_COSINE)
        verr(&v, O(cfg, "cosine_min_lr_ratio"), "cosine_min_lr_ratio applies to lr_scheduler: cosine only (it is %s)",
             tune_config_enum_name("lr_scheduler", (int)cfg->lr_scheduler));
    if (cfg->lr_scheduler == TUNE_LR_CONSTANT && (is_set(cfg, "warmup_steps") || is_set(cfg, "warmup_ratio")) &&
        cfg->warmup_steps != 0)
        verr(&v, O(cfg, "lr_scheduler"),
             "lr_scheduler: constant has no warmup (as in Transformers); use constant_with_warmup, or drop the warmup");
    if (cfg->lora_target_modules_count == 0 && !cfg->lora_target_linear)
        verr(&v, given(cfg, "lora_target_linear") ? O(cfg, "lora_target_linear") : O(cfg, "adapter"),
             "no LoRA target: set lora_target_modules (e.g. [q_proj, v_proj]) or lora_target_linear: true");
    return v.status;
}

tune_status tune_config_load(tune_config *cfg, const char *path, int argc, char **argv, tune_error_list *errs)
{
    tune_error e;
    tune_status st = tune_config_init(cfg, &e);
    if (st != TUNE_OK) {
        tune_error_list_add(errs, &e);
        return st;
    }
    int yaml_ok;
    tune_status parse = tune_schema_parse_file(cfg, path, errs, &yaml_ok);
    if (!yaml_ok) return parse; /* unreadable, or not YAML: nothing more to say */
    tune_status args = tune_config_apply_args(cfg, argc, argv, errs);
    tune_status valid = tune_config_validate(cfg, errs);
    st = parse > args ? parse : args;
    return valid > st ? valid : st;
}
