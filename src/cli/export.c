/* tune export: convert datasets between alpaca JSONL, ShareGPT JSON and
 * Llama-2-chat text, with the product's export filters. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tune/cli.h"
#include "tune/data.h"

#define MAX_TASK_TYPES 64

static void usage(FILE *out)
{
    fprintf(out,
            "usage: tune export --from FORMAT --to FORMAT INPUT OUTPUT [filters]\n\n"
            "Converts a dataset between formats:\n"
            "  alpaca    JSON Lines: {\"instruction\", \"input\", \"output\"} per line\n"
            "  sharegpt  JSON array: {\"conversations\": [{\"from\": human|gpt|system, \"value\"}]}\n"
            "  llama2    text: one \"<s>[INST] ... [/INST] ... </s>\" record per line start\n\n"
            "Filters (on the product export fields a record carries; a record without the\n"
            "field a filter needs is left out):\n"
            "  --min_quality_score X   keep records with quality_score >= X\n"
            "  --min_rating N          keep records with rating >= N\n"
            "  --task_types A,B        keep records whose task_type is one of these\n"
            "  --limit N               write at most N records\n"
            "  --include_edited        also keep records with edited: true (left out by default)\n\n"
            "The fields id, task_type, quality_score, rating and edited are carried over\n"
            "between alpaca and sharegpt. An alpaca input joins instruction and input with a\n"
            "blank line; only single-exchange conversations convert to alpaca.\n");
}

static int parse_number(const char *s, double *v)
{
    char *end;
    errno = 0;
    *v = strtod(s, &end);
    return errno == 0 && end != s && *end == 0;
}

int tune_cli_export(int argc, char **argv)
{
    if (tune_cli_wants_help(argc, argv)) {
        usage(stdout);
        return 0;
    }
    tune_export_filter f = {-1, -1, NULL, 0, -1, 0};
    const char *from = NULL, *to = NULL, *files[2] = {NULL, NULL};
    char *types_copy = NULL;
    const char *types[MAX_TASK_TYPES];
    int n_files = 0, rc = 0;
    for (int i = 1; i < argc && !rc; i++) {
        const char *a = argv[i];
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        double v;
        if (!strcmp(a, "--include_edited")) {
            f.include_edited = 1;
        } else if (!strncmp(a, "--", 2)) {
            if (!val) {
                rc = tune_cli_usage_error("export", "%s needs a value", a);
                break;
            }
            i++;
            if (!strcmp(a, "--from")) from = val;
            else if (!strcmp(a, "--to")) to = val;
            else if (!strcmp(a, "--min_quality_score") && parse_number(val, &v)) f.min_quality_score = v;
            else if (!strcmp(a, "--min_rating") && parse_number(val, &v)) f.min_rating = v;
            else if (!strcmp(a, "--limit") && parse_number(val, &v) && v >= 0 && v == (long)v) f.limit = (long)v;
            else if (!strcmp(a, "--task_types")) {
                free(types_copy);
                types_copy = strdup(val);
                if (!types_copy) {
                    fprintf(stderr, "tune export: out of memory\n");
                    return 1;
                }
                f.n_task_types = 0;
                for (char *save = NULL, *t = strtok_r(types_copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
                    if (f.n_task_types == MAX_TASK_TYPES) {
                        rc = tune_cli_usage_error("export", "at most %d task types", MAX_TASK_TYPES);
                        break;
                    }
                    types[f.n_task_types++] = t;
                }
                f.task_types = types;
            } else
                rc = tune_cli_usage_error("export", "bad option or value: %s %s", a, val);
        } else if (n_files < 2) {
            files[n_files++] = a;
        } else {
            rc = tune_cli_usage_error("export", "unexpected argument '%s'", a);
        }
    }
    tune_export_format ff, tf;
    if (!rc && (!from || !to || n_files != 2))
        rc = tune_cli_usage_error("export", "needs --from, --to, an input and an output file (tune export --help)");
    if (!rc && !tune_export_format_from_name(from, &ff))
        rc = tune_cli_usage_error("export", "unknown format '%s' (alpaca, sharegpt, llama2)", from);
    if (!rc && !tune_export_format_from_name(to, &tf))
        rc = tune_cli_usage_error("export", "unknown format '%s' (alpaca, sharegpt, llama2)", to);
    if (!rc) {
        tune_export_stats stats;
        tune_error err;
        tune_error_clear(&err);
        tune_status st = tune_data_export(files[0], ff, files[1], tf, &f, &stats, &err);
        if (st) {
            tune_error_print(stderr, &err);
            rc = (int)st;
        } else {
            printf("read %ld records, wrote %ld, filtered out %ld -> %s\n", stats.read, stats.written, stats.filtered,
                   files[1]);
        }
    }
    free(types_copy);
    return rc;
}
