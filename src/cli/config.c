/* tune config keys [--markdown] | tune config resolve CONFIG [overrides] */
#include <stdio.h>
#include <string.h>

#include "tune/cli.h"
#include "tune/config.h"
#include "tune/plan.h"

int tune_cli_load_config(const char *verb, int argc, char **argv, tune_config *cfg)
{
    if (argc < 1 || argv[0][0] == '-') return tune_cli_usage_error(verb, "expected a config file (CONFIG.yml) first");
    tune_error_list errs = {0};
    tune_status st = tune_config_load(cfg, argv[0], argc - 1, argv + 1, &errs);
    for (int i = 0; i < errs.count; i++) tune_error_print(stderr, &errs.items[i]);
    if (st != TUNE_OK) {
        if (errs.count > 1) fprintf(stderr, "tune: %d errors in the config\n", errs.count);
        tune_config_free(cfg);
    }
    tune_error_list_free(&errs);
    return (int)st;
}

int tune_cli_load_plan(const char *verb, int argc, char **argv, tune_config *cfg, tune_plan *plan)
{
    int rc = tune_cli_load_config(verb, argc, argv, cfg);
    if (rc) return rc;
    tune_error_list errs = {0};
    tune_status st = tune_plan_init(plan, cfg, &errs);
    for (int i = 0; i < errs.count; i++) tune_error_print(stderr, &errs.items[i]);
    tune_error_list_free(&errs);
    if (st != TUNE_OK) {
        tune_plan_free(plan);
        tune_config_free(cfg);
    }
    return (int)st;
}

void tune_cli_print_warnings(const tune_plan *plan)
{
    for (int i = 0; i < plan->warnings.count; i++) {
        char line[2048];
        tune_error_format(&plan->warnings.items[i], line, sizeof line);
        fprintf(stderr, "tune: warning: %s\n", line);
    }
}

void tune_cli_on_planned(void *ctx, const tune_plan *plan)
{
    (void)ctx;
    tune_cli_print_warnings(plan);
}

void tune_cli_on_note(void *ctx, const char *line)
{
    (void)ctx;
    fprintf(stderr, "tune: %s\n", line);
}

static void usage(FILE *out)
{
    fprintf(out, "usage: tune config keys [--markdown]\n"
                 "       tune config resolve CONFIG.yml [--key value ...]\n\n"
                 "keys      every config key with its type, default, status and meaning\n"
                 "          (--markdown: the text of docs/config.md)\n"
                 "resolve   print the resolved config: every key, defaults filled in, overrides\n"
                 "          applied, each value's origin in a comment\n");
}

int tune_cli_config(int argc, char **argv)
{
    if (tune_cli_wants_help(argc, argv)) {
        usage(stdout);
        return 0;
    }
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "keys")) {
        int markdown = 0;
        for (int i = 2; i < argc; i++) {
            if (!strcmp(argv[i], "--markdown"))
                markdown = 1;
            else
                return tune_cli_usage_error("config keys", "unknown argument '%s'", argv[i]);
        }
        tune_strbuf sb = {0};
        tune_config_keys_format(&sb, markdown);
        if (sb.oom) {
            tune_strbuf_free(&sb);
            fprintf(stderr, "tune: error: out of memory\n");
            return 1;
        }
        fwrite(sb.data, 1, sb.len, stdout);
        tune_strbuf_free(&sb);
        return 0;
    }
    if (!strcmp(argv[1], "resolve")) {
        tune_config cfg;
        int rc = tune_cli_load_config("config resolve", argc - 2, argv + 2, &cfg);
        if (rc) return rc;
        tune_strbuf sb = {0};
        if (tune_config_format_resolved(&cfg, &sb) != TUNE_OK) {
            fprintf(stderr, "tune: error: out of memory\n");
            rc = 1;
        } else {
            fwrite(sb.data, 1, sb.len, stdout);
        }
        tune_strbuf_free(&sb);
        tune_config_free(&cfg);
        return rc;
    }
    return tune_cli_usage_error("config", "unknown subcommand '%s' (keys, resolve)", argv[1]);
}
