#include "tune/cli.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#ifndef TUNE_GIT_REV
#define TUNE_GIT_REV "unknown"
#endif
#define TUNE_VERSION "0.1.0"

static const tune_verb VERBS[] = {
    {"train", tune_cli_train, "train a LoRA adapter from a YAML experiment (the default verb)"},
    {"plan", tune_cli_plan, "resolve a config and print the training plan (--json for scripts)"},
    {"config", tune_cli_config, "config tools: 'keys' lists every key, 'resolve' prints the resolved config"},
    {"tokenize", tune_cli_tokenize, "encode text with a model's tokenizer: ids, tokens, decoded round trip"},
    {"tokens", tune_cli_tokens, "list added/special tokens with roles; writes special_tokens_analysis.csv"},
};
#define N_VERBS (int)(sizeof VERBS / sizeof VERBS[0])

static void print_help(FILE *out)
{
    fprintf(out,
            "tune %s — config-driven LoRA fine-tuning for LLaMA-family models\n\n"
            "usage: tune CONFIG.yml [--key value ...]   (same as: tune train CONFIG.yml)\n"
            "       tune VERB [args] (tune VERB --help for details)\n\nverbs:\n",
            TUNE_VERSION);
    for (int i = 0; i < N_VERBS; i++) fprintf(out, "  %-10s %s\n", VERBS[i].name, VERBS[i].summary);
    fprintf(out, "\noptions: --help, --version\n");
}

int tune_cli_usage_error(const char *verb, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "tune%s%s: error: ", verb ? " " : "", verb ? verb : "");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    return 2;
}

int tune_cli_wants_help(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) return 1;
    return 0;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !strcmp(s + n - m, suffix);
}

int tune_cli_main(int argc, char **argv)
{
    if (argc < 2) {
        print_help(stderr);
        return 2;
    }
    const char *first = argv[1];
    if (!strcmp(first, "--help") || !strcmp(first, "-h") || !strcmp(first, "help")) {
        print_help(stdout);
        return 0;
    }
    if (!strcmp(first, "--version") || !strcmp(first, "version")) {
        printf("tune %s (git %s)\n", TUNE_VERSION, TUNE_GIT_REV);
        return 0;
    }
    for (int i = 0; i < N_VERBS; i++)
        if (!strcmp(first, VERBS[i].name)) return VERBS[i].run(argc - 1, argv + 1);
    /* `tune CONFIG.yml ...` means `tune train CONFIG.yml ...`: argv[0] stands for the verb. */
    if (ends_with(first, ".yml") || ends_with(first, ".yaml")) return tune_cli_train(argc, argv);
    if (first[0] == '-') return tune_cli_usage_error(NULL, "unknown option '%s' (try 'tune --help')", first);
    return tune_cli_usage_error(NULL, "unknown verb '%s' (try 'tune --help')", first);
}
