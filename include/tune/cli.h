/* Command-line verbs. main() only dispatches; each verb lives in
 * src/cli/<verb>.c, parses its own arguments, prints, and returns the exit
 * code (0 ok, 1 failure while running, 2 bad input). */
#ifndef TUNE_CLI_H
#define TUNE_CLI_H

#include "tune/generate.h"

typedef int (*tune_verb_fn)(int argc, char **argv);

typedef struct tune_verb {
    const char *name;
    tune_verb_fn run;
    const char *summary;
} tune_verb;

int tune_cli_main(int argc, char **argv);
/* "0.1.0 (git <revision>)". */
const char *tune_cli_version(void);
/* Prints "tune: error: ..." and returns exit code 2 (for argument errors). */
int tune_cli_usage_error(const char *verb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* True when argv holds -h or --help. */
int tune_cli_wants_help(int argc, char **argv);

struct tune_config;
struct tune_plan;
/* Loads argv[0] (the config file) with argv[1..argc) as overrides, prints
 * every error; returns 0, or the exit code (2 bad input, 1 failure). On
 * success cfg must be freed with tune_config_free. Used by train, plan, config. */
int tune_cli_load_config(const char *verb, int argc, char **argv, struct tune_config *cfg);
/* The same, then the config's plan (tune_plan_init); on failure both are freed. */
int tune_cli_load_plan(const char *verb, int argc, char **argv, struct tune_config *cfg, struct tune_plan *plan);
/* "tune: warning: ..." on stderr for each of the plan's warnings. */
void tune_cli_print_warnings(const struct tune_plan *plan);
/* tune_run_hooks (plan.h) that print: the plan's warnings, and notes as "tune: LINE". */
void tune_cli_on_planned(void *ctx, const struct tune_plan *plan);
void tune_cli_on_note(void *ctx, const char *line);

int tune_cli_train(int argc, char **argv);
int tune_cli_plan(int argc, char **argv);
int tune_cli_explain(int argc, char **argv);
int tune_cli_eval(int argc, char **argv);
int tune_cli_config(int argc, char **argv);
int tune_cli_merge(int argc, char **argv);
int tune_cli_tokenize(int argc, char **argv);
int tune_cli_template(int argc, char **argv);
int tune_cli_tokens(int argc, char **argv);
int tune_cli_export(int argc, char **argv);
int tune_cli_preprocess(int argc, char **argv);
int tune_cli_generate(int argc, char **argv);
int tune_cli_chat(int argc, char **argv);
int tune_cli_compare(int argc, char **argv);
int tune_cli_serve(int argc, char **argv);
int tune_cli_bench_serve(int argc, char **argv);

/* Sampling and length options shared by generate, chat and compare. */
#define TUNE_CLI_MAX_STOPS 16
typedef struct tune_cli_gen_args {
    tune_sampling sampling;
    int max_new_tokens;
    const char *stops[TUNE_CLI_MAX_STOPS]; /* (n_stops) */
    int n_stops;
    const char *chat_template; /* --chat_template NAME, or NULL: the model's own */
    tune_backend_kind backend; /* --backend auto|cpu|cuda */
} tune_cli_gen_args;

/* Greedy (sample = 0) or chat's sampling defaults; 256 new tokens. */
void tune_cli_gen_defaults(tune_cli_gen_args *a, int sample);
/* When argv[*i] is one of the options, consumes it and its value and
 * returns 1; 0 when it is another argument; -1 after printing a usage error. */
int tune_cli_gen_option(const char *verb, int argc, char **argv, int *i, tune_cli_gen_args *a);
/* The options' help lines. */
const char *tune_cli_gen_help(void);
/* Opens MODEL (+ adapter) for a verb and applies --chat_template; prints the error. */
tune_status tune_cli_open_lm(const char *model, const char *adapter, const tune_cli_gen_args *a, tune_lm **out);

/* A prompts file (compare, bench-serve, eval --generate): one prompt per
 * line, or JSONL with "prompt", or "instruction" (+ "input"), per line
 * (.jsonl, or a first line starting with '{'); "reference" or else "output"
 * is the reference answer, so an Alpaca eval file works as it is. */
typedef struct tune_cli_prompt {
    char *instruction, *input, *ref; /* input and ref may be NULL */
} tune_cli_prompt;

typedef struct tune_cli_prompt_list {
    tune_cli_prompt *items; /* (n) */
    int n, cap, n_refs;
} tune_cli_prompt_list;

/* An input error naming the file and line for a bad record, or no prompts. */
tune_status tune_cli_read_prompts(const char *path, tune_cli_prompt_list *p, tune_error *err);
void tune_cli_prompts_free(tune_cli_prompt_list *p);

/* Scores of answers against their references (compare, bench-serve, eval --generate). */
typedef struct tune_cli_scores {
    tune_chrf_stats chrf;
    tune_bleu_stats bleu;
    tune_excel_stats excel;
    int n; /* answers scored */
} tune_cli_scores;

/* Adds an answer to s; *chrf and *bleu get its sentence scores (0-100). */
tune_status tune_cli_score(tune_cli_scores *s, const char *hyp, const char *ref, double *chrf, double *bleu,
                           tune_error *err);
/* "chrF C, BLEU B, functions named P% (k/n), formulas matched P% (k/n)" (the Excel
 * parts only where the references call functions or write formulas). */
void tune_cli_scores_format(const tune_cli_scores *s, char *buf, size_t size);
/* The scores as JSON members, each as before "KEY": VALUE after: "scored", "chrf",
 * "bleu", and where the references give them the shares (0-1) "excel_functions_named"
 * and "excel_formulas_matched" (eval --json and bench-serve's summary). */
void tune_cli_scores_json(const tune_cli_scores *s, tune_strbuf *out, const char *before, const char *after);

/* How prompts are rendered for one model. */
typedef enum {
    TUNE_CLI_PROMPT_CHAT,   /* a user message (after the system one) in the chat template */
    TUNE_CLI_PROMPT_RAW,    /* the text as it is */
    TUNE_CLI_PROMPT_ALPACA, /* the prompt `type: alpaca` data is trained with */
} tune_cli_prompt_format;

/* Whether the run that wrote the adapter folder (its config_resolved.yml)
 * trained on alpaca datasets only. */
int tune_cli_trained_on_alpaca(const char *adapter);
/* The format for a model opened with adapter (may be NULL): --raw or
 * --alpaca when given; else alpaca when the adapter's run trained on alpaca
 * data only (its config_resolved.yml says so) and no --chat_template was
 * given, with a note on stderr ("tune VERB: note: WHO: ..."); else the chat
 * template. */
tune_cli_prompt_format tune_cli_pick_prompt_format(const char *verb, const char *who, int raw, int alpaca,
                                                   const tune_cli_gen_args *a, const char *adapter);
/* Prompt ids in format f: the alpaca prompt of instruction and input, or
 * the text instruction (+ a blank line and input when input is non-empty)
 * raw or as the user message after system (may be NULL; chat format only). */
tune_status tune_cli_prompt_ids(tune_lm *lm, tune_cli_prompt_format f, const char *system, const char *instruction,
                                const char *input, tune_ids *ids, tune_error *err);
/* tune_cli_pick_prompt_format for an opened lm, where the chat format falls
 * back to raw, with a note, when the model has no chat template: how
 * compare and eval --generate feed a model the prompts of a file. */
tune_cli_prompt_format tune_cli_lm_prompt_format(const char *verb, const char *who, const tune_lm *lm, int raw,
                                                 int alpaca, const tune_cli_gen_args *a, const char *adapter);
/* p answered by lm: its prompt ids in format f, then a's sampling, length and stops. */
tune_status tune_cli_answer(tune_lm *lm, tune_cli_prompt_format f, const char *system, const tune_cli_prompt *p,
                            const tune_cli_gen_args *a, tune_strbuf *reply, tune_reply_stats *stats, tune_error *err);

#endif
