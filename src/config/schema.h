/* The config schema: one table of keys (top level) and one of dataset-entry
 * keys. Private to src/config/. */
#ifndef TUNE_CONFIG_SCHEMA_H
#define TUNE_CONFIG_SCHEMA_H

#include <stddef.h>

#include "tune/config.h"

typedef enum {
    K_STR,      /* char * */
    K_BOOL,     /* int */
    K_INT,      /* long; -1 when the key has no default ("not set") */
    K_FLOAT,    /* double */
    K_ENUM,     /* C enum (int-sized); -1 when the key has no default */
    K_STRLIST,  /* char ** + int count */
    K_SUB,      /* struct of char * fields with fixed names */
    K_ROLES,    /* tune_role_map * + int count */
    K_DATASETS, /* tune_dataset_config * + int count */
} key_type;

typedef struct enum_value {
    const char *name;
    int value;     /* stored value; several names may share one (aliases); -1: recognised, not storable */
    int supported; /* 0: recognised but "not supported yet" */
} enum_value;

typedef struct enum_spec {
    const enum_value *values;
    int n;
    int boolish; /* YAML booleans (yes, True, off, ...) name the values "true"/"false" */
} enum_spec;

typedef struct sub_field {
    const char *name;
    size_t off; /* of a char * inside the sub-struct */
} sub_field;

typedef struct sub_spec {
    const sub_field *fields;
    int n;
} sub_spec;

typedef struct key_spec {
    const char *name;
    key_type type;
    size_t off, count_off;      /* count_off: lists only */
    const char *def;            /* YAML text of the default; NULL: not set */
    int has_min, has_max, min_open, max_open;
    double min, max;            /* K_INT, K_FLOAT */
    const enum_spec *en;        /* K_ENUM */
    const sub_spec *sub;        /* K_SUB */
    const char *const *allowed; /* K_STRLIST: allowed elements, NULL-terminated; NULL: any */
    int supported;              /* 0: any value but the default is "not supported yet" */
    int required;
    const char *section;        /* docs grouping; a new section starts where it changes */
    const char *doc;
} key_spec;

extern const key_spec tune_config_keys[];
extern const int tune_config_n_keys;
extern const key_spec tune_dataset_keys[];
extern const int tune_dataset_n_keys;

/* Index of a key (dashes read as underscores), or -1. */
int tune_schema_find(const key_spec *keys, int n, const char *name, size_t len);
/* The known key closest to name by edit distance, or NULL when none is close. */
const char *tune_schema_suggest(const key_spec *keys, int n, const char *name);
/* Same over a NULL-terminated list of names. */
const char *tune_schema_suggest_name(const char *const *names, const char *name);

/* Enum lookups. */
const enum_value *tune_schema_enum_find(const enum_spec *en, const char *name);
const char *tune_schema_enum_canonical(const enum_spec *en, int value);
/* "constant, linear, cosine" (supported values only) into buf. */
void tune_schema_enum_list(const enum_spec *en, int supported_only, char *buf, size_t size);
/* "> 0", ">= 1", "in [0, 1)", or "" when no range. */
void tune_schema_range_text(const key_spec *k, char *buf, size_t size);
const char *tune_schema_type_name(const key_spec *k);

/* Shared by the files of src/config/ (defined in parse.c). */
/* Frees a field's value and leaves it zeroed. */
void tune_schema_clear(const key_spec *k, void *base);
/* Sets a field to its schema default; *origin becomes "default". */
tune_status tune_schema_set_default(const key_spec *k, void *base, tune_origin *origin, tune_error_list *errs);
/* A dataset entry with every default. */
tune_status tune_dataset_init(tune_dataset_config *ds, tune_error_list *errs);
void tune_dataset_free(tune_dataset_config *ds);

/* tune_config_parse_string / _file, also telling whether the YAML itself
 * loaded (*yaml_ok; may be NULL): after a syntax error validation is skipped. */
tune_status tune_schema_parse(tune_config *cfg, const char *name, const char *text, size_t len, tune_error_list *errs,
                              int *yaml_ok);
tune_status tune_schema_parse_file(tune_config *cfg, const char *path, tune_error_list *errs, int *yaml_ok);

/* Field access. */
#define FIELD(base, k, T) ((T *)((char *)(base) + (k)->off))
#define COUNT(base, k) ((int *)((char *)(base) + (k)->count_off))

#endif
