/* YAML config with command-line overrides: the input up to its first NUL
 * byte is the config file's text, the NUL-separated strings after it are the
 * arguments after `tune train CONFIG` (--key value, --set a.b=value, ...).
 * A config that loads without error must write out (the resolved config of
 * every run) as YAML that loads back equal. */
#include <stdlib.h>
#include <string.h>

#include "targets.h"
#include "tune/config.h"

#define MAX_ARGS 64

/* Loads the resolved YAML of cfg into a fresh config and compares. */
static void check_round_trip(const tune_config *cfg)
{
    tune_strbuf yaml = {0};
    tune_fuzz_check(tune_config_format_resolved(cfg, &yaml) == TUNE_OK && !yaml.oom, "cannot format the config");
    tune_config back;
    tune_error e;
    tune_error_list errs = {0};
    tune_fuzz_check(tune_config_init(&back, &e) == TUNE_OK, "out of memory");
    tune_status st = tune_config_parse_string(&back, "resolved.yml", yaml.data, yaml.len, &errs);
    tune_fuzz_check(st == TUNE_OK && tune_config_equal(cfg, &back), "the resolved config does not load back equal");
    tune_config_free(&back);
    tune_error_list_free(&errs);
    tune_strbuf_free(&yaml);
}

void tune_fuzz_config(const uint8_t *data, size_t size)
{
    const uint8_t *nul = memchr(data, 0, size);
    size_t text_len = nul ? (size_t)(nul - data) : size;
    char *args = NULL, *argv[MAX_ARGS];
    int argc = 0;
    if (nul) {
        size_t args_len = size - text_len - 1;
        args = tune_fuzz_cstr(nul + 1, args_len);
        for (size_t at = 0; at <= args_len && argc < MAX_ARGS; at += strlen(args + at) + 1) argv[argc++] = args + at;
    }

    tune_config cfg;
    tune_error e;
    tune_error_list errs = {0};
    tune_fuzz_check(tune_config_init(&cfg, &e) == TUNE_OK, "out of memory");
    tune_config_parse_string(&cfg, "fuzz.yml", (const char *)data, text_len, &errs);
    tune_config_apply_args(&cfg, argc, argv, &errs);
    tune_config_validate(&cfg, &errs);
    if (tune_error_list_status(&errs) == TUNE_OK) check_round_trip(&cfg);
    tune_config_free(&cfg);
    tune_error_list_free(&errs);
    free(args);
}
