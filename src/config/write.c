/* Output from the schema: the resolved config as YAML, and the key
 * reference (`tune config keys`, docs/config.md). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "schema.h"

/* YAML double-quoted string. */
static void put_quoted(tune_strbuf *sb, const char *s)
{
    tune_strbuf_puts(sb, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            tune_strbuf_printf(sb, "\\%c", *p);
        else if (*p == '\n')
            tune_strbuf_puts(sb, "\\n");
        else if (*p == '\t')
            tune_strbuf_puts(sb, "\\t");
        else if (*p < 0x20 || *p == 0x7f)
            tune_strbuf_printf(sb, "\\x%02x", *p);
        else
            tune_strbuf_append(sb, (const char *)p, 1);
    }
    tune_strbuf_puts(sb, "\"");
}

/* The shortest %g form that reads back as the same double. */
static void put_double(tune_strbuf *sb, double x)
{
    char buf[40];
    for (int prec = 6; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, x);
        if (strtod(buf, NULL) == x) break;
    }
    tune_strbuf_puts(sb, buf);
}

static void put_list(tune_strbuf *sb, char **items, int n)
{
    tune_strbuf_puts(sb, "[");
    for (int i = 0; i < n; i++) {
        if (i) tune_strbuf_puts(sb, ", ");
        put_quoted(sb, items[i]);
    }
    tune_strbuf_puts(sb, "]");
}

/* A value in flow style (every type but K_DATASETS). */
static void put_value(tune_strbuf *sb, const key_spec *k, const void *base)
{
    switch (k->type) {
    case K_STR: {
        const char *s = *FIELD(base, k, char *);
        if (s)
            put_quoted(sb, s);
        else
            tune_strbuf_puts(sb, "null");
        break;
    }
    case K_BOOL: tune_strbuf_puts(sb, *FIELD(base, k, int) ? "true" : "false"); break;
    case K_INT:
        if (!k->def && *FIELD(base, k, long) == -1)
            tune_strbuf_puts(sb, "null");
        else
            tune_strbuf_printf(sb, "%ld", *FIELD(base, k, long));
        break;
    case K_FLOAT:
        /* A number without a default (learning_rate) is 0 until given. */
        if (!k->def && *FIELD(base, k, double) == 0.0)
            tune_strbuf_puts(sb, "null");
        else
            put_double(sb, *FIELD(base, k, double));
        break;
    case K_ENUM: {
        int v = *FIELD(base, k, int);
        const char *name = v < 0 ? NULL : tune_schema_enum_canonical(k->en, v);
        tune_strbuf_puts(sb, name ? name : "null");
        break;
    }
    case K_STRLIST: put_list(sb, *FIELD(base, k, char **), *COUNT(base, k)); break;
    case K_SUB:
        tune_strbuf_puts(sb, "{");
        for (int i = 0; i < k->sub->n; i++) {
            const char *s = *(char **)((char *)FIELD(base, k, char) + k->sub->fields[i].off);
            tune_strbuf_printf(sb, "%s%s: ", i ? ", " : "", k->sub->fields[i].name);
            if (s)
                put_quoted(sb, s);
            else
                tune_strbuf_puts(sb, "null");
        }
        tune_strbuf_puts(sb, "}");
        break;
    case K_ROLES: {
        const tune_role_map *r = *FIELD(base, k, tune_role_map *);
        tune_strbuf_puts(sb, "{");
        for (int i = 0; i < *COUNT(base, k); i++) {
            if (i) tune_strbuf_puts(sb, ", ");
            put_quoted(sb, r[i].role);
            tune_strbuf_puts(sb, ": ");
            put_list(sb, r[i].names, r[i].names_count);
        }
        tune_strbuf_puts(sb, "}");
        break;
    }
    case K_DATASETS: break;
    }
}

/* "key: value" padded, then "# origin". */
static void put_line(tune_strbuf *sb, const tune_config *cfg, const char *indent, const key_spec *k, const void *base,
                     const tune_origin *o)
{
    size_t start = sb->len;
    tune_strbuf_printf(sb, "%s%s: ", indent, k->name);
    if (k->type != K_DATASETS) put_value(sb, k, base);
    else if (*COUNT(base, k) == 0) tune_strbuf_puts(sb, "[]");
    size_t w = sb->len - start;
    char where[600];
    tune_origin_describe(cfg, o, where, sizeof where);
    tune_strbuf_printf(sb, "%*s# %s\n", w < 48 ? (int)(48 - w) : 1, "", where);
}

static void put_datasets(tune_strbuf *sb, const tune_config *cfg, const key_spec *k)
{
    const tune_dataset_config *ds = *FIELD(cfg, k, tune_dataset_config *);
    for (int i = 0; i < *COUNT(cfg, k); i++)
        for (int j = 0; j < tune_dataset_n_keys; j++)
            put_line(sb, cfg, j == 0 ? "  - " : "    ", &tune_dataset_keys[j], &ds[i], &ds[i].origin[j]);
}

tune_status tune_config_format_resolved(const tune_config *cfg, tune_strbuf *out)
{
    tune_strbuf_puts(out, "# Resolved tune config: every key, defaults filled in, command-line overrides applied.\n"
                          "# The comment after each value says where it came from. `tune train` on this file\n"
                          "# repeats the run (relative paths are taken from the current directory).\n");
    const char *section = NULL;
    for (int i = 0; i < tune_config_n_keys; i++) {
        const key_spec *k = &tune_config_keys[i];
        if (!section || strcmp(section, k->section)) {
            section = k->section;
            tune_strbuf_printf(out, "\n# %s\n", section);
        }
        put_line(out, cfg, "", k, cfg, &cfg->origin[i]);
        if (k->type == K_DATASETS) put_datasets(out, cfg, k);
    }
    return out->oom ? TUNE_ERR_RUN : TUNE_OK;
}

tune_status tune_config_write_resolved(const tune_config *cfg, const char *path, tune_error *err)
{
    tune_strbuf sb = {0};
    tune_status st = tune_config_format_resolved(cfg, &sb);
    if (st != TUNE_OK)
        st = tune_fail_run(err, path, "out of memory while formatting the resolved config");
    else
        st = tune_write_file_atomic(path, sb.data, sb.len, err);
    tune_strbuf_free(&sb);
    return st;
}

/* ---- key reference ---- */

static void default_text(const key_spec *k, char *buf, size_t size)
{
    if (k->required)
        snprintf(buf, size, "required");
    else if (k->def)
        snprintf(buf, size, "%s", k->def);
    else if (k->type == K_STRLIST || k->type == K_ROLES || k->type == K_DATASETS)
        snprintf(buf, size, "[]");
    else
        snprintf(buf, size, "not set");
}

static void allowed_text(const key_spec *k, char *buf, size_t size)
{
    buf[0] = '\0';
    if (k->type == K_INT || k->type == K_FLOAT) {
        tune_schema_range_text(k, buf, size);
    } else if (k->type == K_ENUM) {
        tune_schema_enum_list(k->en, 1, buf, size);
    } else if (k->type == K_SUB) {
        size_t used = 0;
        for (int i = 0; i < k->sub->n && used < size; i++)
            used += (size_t)snprintf(buf + used, size - used, "%s%s", i ? ", " : "", k->sub->fields[i].name);
    } else if (k->allowed) {
        size_t used = 0;
        for (int i = 0; k->allowed[i] && used < size; i++)
            used += (size_t)snprintf(buf + used, size - used, "%s%s", i ? ", " : "", k->allowed[i]);
    }
}

/* The doc line, plus the recognised enum values that are not supported yet. */
static void doc_text(const key_spec *k, char *buf, size_t size)
{
    size_t used = (size_t)snprintf(buf, size, "%s", k->doc);
    if (k->type != K_ENUM || used >= size) return;
    int first = 1;
    for (int i = 0; i < k->en->n && used < size; i++) {
        if (k->en->values[i].supported) continue;
        used += (size_t)snprintf(buf + used, size - used, "%s%s", first ? " Not supported yet: " : ", ",
                                 k->en->values[i].name);
        first = 0;
    }
    if (!first && used < size) snprintf(buf + used, size - used, ".");
}

static void keys_table(tune_strbuf *out, const key_spec *keys, int n, int markdown)
{
    const char *section = NULL;
    for (int i = 0; i < n; i++) {
        const key_spec *k = &keys[i];
        char def[128], allowed[512], doc[1024];
        default_text(k, def, sizeof def);
        allowed_text(k, allowed, sizeof allowed);
        doc_text(k, doc, sizeof doc);
        const char *status = k->supported ? "supported" : "not supported yet";
        if (!section || strcmp(section, k->section)) {
            section = k->section;
            if (markdown)
                tune_strbuf_printf(out, "\n## %s\n\n| key | type | default | allowed | status | meaning |\n"
                                        "| --- | --- | --- | --- | --- | --- |\n", section);
            else
                tune_strbuf_printf(out, "\n%s:\n", section);
        }
        if (markdown)
            tune_strbuf_printf(out, "| `%s` | %s | `%s` | %s | %s | %s |\n", k->name, tune_schema_type_name(k), def,
                               allowed, status, doc);
        else
            tune_strbuf_printf(out, "  %-28s %-16s default %-20s %s%s%s\n      %s\n", k->name, tune_schema_type_name(k),
                               def, status, allowed[0] ? "; " : "", allowed, doc);
    }
}

void tune_config_keys_format(tune_strbuf *out, int markdown)
{
    if (markdown)
        tune_strbuf_puts(
            out,
            "# Configuration keys\n\n"
            "<!-- Generated by `tune config keys --markdown`; a test checks this file against it. -->\n\n"
            "A tune experiment is one YAML file in [Axolotl](https://github.com/axolotl-ai-cloud/axolotl)'s key names "
            "and meanings (LoRA SFT subset). Rules:\n\n"
            "- An unknown key is an error (with the closest known key as a suggestion), never ignored.\n"
            "- A key marked *not supported yet* is recognised: leaving it out, or at its default, is fine; any other "
            "value is an error at its position.\n"
            "- `key: null` (or an empty value) means the default.\n"
            "- Every error names `file:line:col`; all errors are reported in one run and tune exits with status 2.\n"
            "- Relative paths (base_model, dataset paths, output_dir, dataset_prepared_path, ...) are taken from the "
            "current directory, as Axolotl does, not from the config file's folder.\n"
            "- Command-line overrides: `--learning_rate 5e-5`, `--learning-rate=5e-5`, `--set datasets.0.path=x.jsonl`, "
            "`--set special_tokens.pad_token=\"<pad>\"`; lists as `[q_proj, v_proj]` or `q_proj,v_proj`. Short flags: "
            "`--model` (base_model), `--dataset`/`--dataset_path` (datasets.0.path), `--epochs` (num_epochs), "
            "`--batch_size` (micro_batch_size), `--lr` (learning_rate), `--load_8bit` (load_in_8bit: true). "
            "Overrides are checked like file values; errors name the flag.\n"
            "- `tune config resolve CONFIG` prints the resolved config (every key, with where its value came from); "
            "`tune train` writes it to `output_dir/config_resolved.yml`.\n\n"
            "Step arithmetic (`tune plan`): micro-batches per epoch = ceil(examples / micro_batch_size); optimizer "
            "steps per epoch = ceil(micro-batches / gradient_accumulation_steps) (a short last group is one step); "
            "total steps = max_steps when set, else ceil(num_epochs x steps per epoch); warmup = warmup_steps, else "
            "ceil(warmup_ratio x total). Examples are records after splitting, or packed sequences with "
            "sample_packing.\n");
    else
        tune_strbuf_puts(out, "Every config key (docs/config.md has the same as Markdown):\n");
    keys_table(out, tune_config_keys, tune_config_n_keys, markdown);
    keys_table(out, tune_dataset_keys, tune_dataset_n_keys, markdown);
}
