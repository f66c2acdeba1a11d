/* Command-line verbs. main() only dispatches; each verb lives in
 * src/cli/<verb>.c, parses its own arguments, prints, and returns the exit
 * code (0 ok, 1 failure while running, 2 bad input). */
#ifndef TUNE_CLI_H
#define TUNE_CLI_H

typedef int (*tune_verb_fn)(int argc, char **argv);

typedef struct tune_verb {
    const char *name;
    tune_verb_fn run;
    const char *summary;
} tune_verb;

int tune_cli_main(int argc, char **argv);
/* Prints "tune: error: ..." and returns exit code 2 (for argument errors). */
int tune_cli_usage_error(const char *verb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* True when argv holds -h or --help. */
int tune_cli_wants_help(int argc, char **argv);

struct tune_config;
/* Loads argv[0] (the config file) with argv[1..argc) as overrides, prints
 * every error; returns 0, or the exit code (2 bad input, 1 failure). On
 * success cfg must be freed with tune_config_free. Used by train, plan, config. */
int tune_cli_load_config(const char *verb, int argc, char **argv, struct tune_config *cfg);

int tune_cli_train(int argc, char **argv);
int tune_cli_plan(int argc, char **argv);
int tune_cli_config(int argc, char **argv);
int tune_cli_merge(int argc, char **argv);
int tune_cli_tokenize(int argc, char **argv);
int tune_cli_tokens(int argc, char **argv);
int tune_cli_export(int argc, char **argv);
int tune_cli_preprocess(int argc, char **argv);

#endif
