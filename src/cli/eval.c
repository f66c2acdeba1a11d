/* tune eval CONFIG.yml | MODEL --data FILE: loss and perplexity of a model
 * (optionally with a PEFT adapter) on a dataset, formatted and masked as
 * training does, through the same tune_evaluate the trainer logs as eval_loss
 * (tune_plan_evaluate runs it; this file parses and prints). With --generate
 * the model also answers the file's prompts, scored as tune compare scores
 * them (the same CLI helpers). */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tune/cli.h"
#include "tune/config.h"
#include "tune/lora.h"
#include "tune/plan.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: tune eval CONFIG.yml [--adapter DIR] [--json] [--out DIR] [--key value ...]\n"
            "       tune eval MODEL --data FILE [--type alpaca|sharegpt|chat_template|llama2|completion]\n"
            "                 [--chat_template NAME] [--adapter DIR] [--sequence_len N]\n"
            "                 [--batch_size N] [--backend auto|cpu|cuda] [--json] [--out DIR]\n"
            "                 [--generate [--max_new_tokens N] [--raw | --alpaca]]\n\n"
            "Mean token loss and perplexity on a dataset, with the formatting and masking of\n"
            "training. With a config: its validation set (test_datasets or the val_set_size\n"
            "split), the figure the trainer logs as eval_loss. With a model (folder or GGUF):\n"
            "every record of FILE (default type alpaca, batch 1, sequence_len 2048 or the\n"
            "model's context length when shorter); longer examples are truncated and counted.\n\n"
            "--adapter DIR evaluates with a PEFT LoRA adapter (adapter_config.json +\n"
            "adapter_model.safetensors). Prints a summary, or with --json one line\n"
            "{\"loss\", \"perplexity\", \"tokens\", \"examples\"}. Writes eval_summary.csv\n"
            "(model, adapter, data, examples, tokens, loss, perplexity, and the --generate\n"
            "scores below) into --out (default: the current directory).\n\n"
            "--generate (MODEL form) also answers every prompt of FILE that has a reference\n"
            "answer, greedily, and scores the answers as tune compare does: corpus chrF and\n"
            "BLEU (sacreBLEU's) and Excel task accuracy. FILE is read as compare's --prompts\n"
            "(\"instruction\" + \"input\" or \"prompt\"; \"output\" or \"reference\": an Alpaca file\n"
            "as it is), and prompts are rendered as compare renders them: the chat template\n"
            "(--chat_template NAME chooses it; raw for a model without one), or the alpaca\n"
            "prompt for an adapter trained on alpaca data. --raw and --alpaca choose as in\n"
            "compare; --max_new_tokens N (default 256). --json adds \"scored\", \"chrf\",\n"
            "\"bleu\" and the shares \"excel_functions_named\", \"excel_formulas_matched\"\n"
            "(0-1; where the references call functions or write formulas); so does the CSV.\n");
}

typedef struct eval_args {
    const char *target;   /* CONFIG.yml or MODEL */
    const char *adapter, *out, *data, *type, *chat_template, *sequence_len, *batch_size, *backend;
    int json, generate, raw, alpaca, max_new_set;
    tune_cli_gen_args gen; /* --generate: greedy, --max_new_tokens; the model's backend and template */
    char **config_argv;   /* the config form: CONFIG.yml, then the config overrides */
    int config_argc;
} eval_args;

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !strcmp(s + n - m, suffix);
}

static int is_config(const char *path) { return ends_with(path, ".yml") || ends_with(path, ".yaml"); }

/* argv[0] is "eval". Returns 0 or exit code 2. */
static int parse_args(int argc, char **argv, eval_args *a)
{
    if (argc < 2) return tune_cli_usage_error("eval", "expected CONFIG.yml or MODEL (see tune eval --help)");
    a->target = argv[1];
    if (a->target[0] == '-') return tune_cli_usage_error("eval", "expected CONFIG.yml or MODEL before '%s'", a->target);
    a->config_argv = malloc((size_t)argc * sizeof *a->config_argv);
    if (!a->config_argv) return tune_cli_usage_error("eval", "out of memory");
    a->config_argv[a->config_argc++] = argv[1];
    const int config = is_config(a->target);
    tune_cli_gen_defaults(&a->gen, 0);
    for (int i = 2; i < argc; i++) {
        const char *s = argv[i];
        const char **slot = !strcmp(s, "--adapter")         ? &a->adapter
                            : !strcmp(s, "--out")           ? &a->out
                            : config                        ? NULL
                            : !strcmp(s, "--data")          ? &a->data
                            : !strcmp(s, "--type")          ? &a->type
                            : !strcmp(s, "--chat_template") ? &a->chat_template
                            : !strcmp(s, "--sequence_len")  ? &a->sequence_len
                            : !strcmp(s, "--batch_size")    ? &a->batch_size
                            : !strcmp(s, "--backend")       ? &a->backend
                                                            : NULL;
        int *flag = !strcmp(s, "--json")       ? &a->json
                    : config                   ? NULL
                    : !strcmp(s, "--generate") ? &a->generate
                    : !strcmp(s, "--raw")      ? &a->raw
                    : !strcmp(s, "--alpaca")   ? &a->alpaca
                                               : NULL;
        if (flag) {
            *flag = 1;
        } else if (config && !strcmp(s, "--generate")) {
            /* Its validation set may be a split of the training data: no prompts file to answer. */
            return tune_cli_usage_error("eval", "--generate takes MODEL --data FILE, not a config");
        } else if (!config && (!strcmp(s, "--max_new_tokens") || !strcmp(s, "--max-new-tokens"))) {
            if (tune_cli_gen_option("eval", argc, argv, &i, &a->gen) < 0) return 2;
            a->max_new_set = 1;
        } else if (slot) {
            if (i + 1 >= argc) return tune_cli_usage_error("eval", "%s needs a value", s);
            *slot = argv[++i];
        } else if (config) {
            a->config_argv[a->config_argc++] = argv[i]; /* checked by the config loader */
        } else {
            return tune_cli_usage_error("eval", "unknown argument '%s' (see tune eval --help)", s);
        }
    }
    if (!config && !a->data) return tune_cli_usage_error("eval", "MODEL needs --data FILE (or give a CONFIG.yml)");
    if (!a->generate && (a->raw || a->alpaca || a->max_new_set))
        return tune_cli_usage_error("eval", "--raw, --alpaca and --max_new_tokens go with --generate");
    if (a->raw + a->alpaca + (a->chat_template != NULL) > 1)
        return tune_cli_usage_error("eval", "--raw, --alpaca and --chat_template exclude each other");
    a->gen.chat_template = a->chat_template;
    return 0;
}

static int report(const tune_error *err)
{
    tune_error_print(stderr, err);
    return err->code ? (int)err->code : 1;
}

static int print_errors(tune_error_list *errs, tune_status st)
{
    for (int i = 0; i < errs->count; i++) tune_error_print(stderr, &errs->items[i]);
    tune_error_list_free(errs);
    return (int)st;
}

/* The MODEL form as a config: FILE is the test set (so all of it is
 * evaluated). The plan wants a complete training config, so FILE is the
 * training set too and learning_rate and the LoRA targets get values that
 * evaluation never reads. */
static int model_config(const eval_args *a, tune_config *cfg)
{
    tune_error err;
    tune_error_clear(&err);
    if (tune_config_init(cfg, &err)) return report(&err);
    const char *type = a->type ? a->type : "alpaca";
    /* --chat_template FILE.jinja is chat_template: jinja with that file. */
    const int jinja_file = tune_template_is_file(a->chat_template);
    const struct {
        const char *key, *value, *flag;
    } sets[] = {
        {"base_model", a->target, "MODEL"},
        {"tokenizer_config", tune_lora_tokenizer_source(a->adapter, NULL), "--adapter"}, /* its added tokens */
        {"datasets.0.path", a->data, "--data"},
        {"datasets.0.type", type, "--type"},
        {"test_datasets.0.path", a->data, "--data"},
        {"test_datasets.0.type", type, "--type"},
        {"excess_length_strategy", "truncate", NULL},
        {"sample_packing", "false", NULL},
        {"sequence_len", a->sequence_len ? a->sequence_len : "2048", "--sequence_len"},
        {"micro_batch_size", a->batch_size ? a->batch_size : "1", "--batch_size"},
        {"eval_batch_size", a->batch_size ? a->batch_size : "1", "--batch_size"},
        {"chat_template", jinja_file ? "jinja" : a->chat_template, "--chat_template"},
        {"chat_template_jinja", jinja_file ? a->chat_template : NULL, "--chat_template"},
        {"backend", a->backend, "--backend"},
        {"learning_rate", "1e-4", NULL},
        {"lora_target_linear", "true", NULL},
    };
    tune_error_list errs = {0};
    tune_status st = TUNE_OK;
    for (size_t i = 0; !st && i < sizeof sets / sizeof sets[0]; i++)
        if (sets[i].value) st = tune_config_set(cfg, sets[i].key, sets[i].value, sets[i].flag, &errs);
    if (!st) st = tune_config_validate(cfg, &errs);
    if (st) tune_config_free(cfg);
    return print_errors(&errs, st);
}

/* An Excel share as a CSV cell: empty where nothing was counted. */
static void csv_share(tune_strbuf *csv, long k, long n)
{
    if (n) tune_strbuf_printf(csv, ",%.17g", (double)k / (double)n);
    else tune_strbuf_puts(csv, ",");
}

/* s: the --generate scores, or NULL (their cells empty). */
static tune_status write_csv(const char *dir, const tune_plan *plan, const char *adapter, const tune_eval_report *r,
                             const tune_cli_scores *s, tune_error *err)
{
    tune_strbuf csv = {0};
    tune_strbuf_puts(&csv, "model,adapter,data,examples,tokens,loss,perplexity,"
                           "scored,chrf,bleu,excel_functions_named,excel_formulas_matched\n");
    tune_strbuf_csv_field(&csv, plan->base_model, strlen(plan->base_model));
    tune_strbuf_puts(&csv, ",");
    if (!adapter) adapter = "";
    tune_strbuf_csv_field(&csv, adapter, strlen(adapter));
    tune_strbuf_puts(&csv, ",");
    tune_strbuf_csv_field(&csv, r->data, strlen(r->data));
    tune_strbuf_printf(&csv, ",%ld,%ld,%.17g,%.17g", r->examples, r->tokens, r->loss, r->perplexity);
    if (s) {
        tune_strbuf_printf(&csv, ",%d,%.17g,%.17g", s->n, tune_chrf_score(&s->chrf), tune_bleu_score(&s->bleu, 0));
        csv_share(&csv, s->excel.fn_named, s->excel.fn_answers);
        csv_share(&csv, s->excel.formulas_matched, s->excel.formulas);
        tune_strbuf_puts(&csv, "\n");
    } else {
        tune_strbuf_puts(&csv, ",,,,,\n");
    }
    char path[4200];
    tune_status st = csv.oom ? tune_fail_run(err, NULL, "out of memory") : tune_mkdir_p(dir, err);
    if (!st && snprintf(path, sizeof path, "%s/eval_summary.csv", dir) >= (int)sizeof path)
        st = tune_fail_input(err, NULL, "--out path too long");
    if (!st) st = tune_write_file_atomic(path, csv.data, csv.len, err);
    tune_strbuf_free(&csv);
    return st;
}

/* --generate: the model answers each prompt of the data file that has a
 * reference, in the format tune compare gives it, and the answers are scored
 * as compare scores them. Prints its errors; returns the exit code. */
static int generate_scores(const eval_args *a, const tune_cli_prompt_list *prompts, tune_cli_scores *scores)
{
    tune_lm *lm;
    tune_status st = tune_cli_open_lm(a->target, a->adapter, &a->gen, &lm);
    if (st != TUNE_OK) return (int)st;
    const tune_cli_prompt_format f =
        tune_cli_lm_prompt_format("eval", "the model", lm, a->raw, a->alpaca, &a->gen, a->adapter);
    fprintf(stderr, "tune eval: answering the %d prompts with a reference (max_new_tokens %d)\n", prompts->n_refs,
            a->gen.max_new_tokens);
    tune_error err;
    for (int i = 0; i < prompts->n && st == TUNE_OK; i++) {
        const tune_cli_prompt *p = &prompts->items[i];
        if (!p->ref) continue; /* nothing to score it against */
        tune_strbuf reply = {0};
        tune_reply_stats stats;
        double chrf, bleu;
        st = tune_cli_answer(lm, f, NULL, p, &a->gen, &reply, &stats, &err);
        if (st == TUNE_OK) st = tune_cli_score(scores, reply.data ? reply.data : "", p->ref, &chrf, &bleu, &err);
        if (st == TUNE_OK)
            fprintf(stderr, "tune eval: %d/%d  %d tokens %.2f s  chrF %.2f\n", scores->n, prompts->n_refs,
                    stats.new_tokens, stats.seconds, chrf);
        tune_strbuf_free(&reply);
    }
    if (st != TUNE_OK) tune_error_print(stderr, &err);
    tune_lm_close(lm);
    return (int)st;
}

static int evaluate(const tune_config *cfg, tune_plan *plan, eval_args *a)
{
    tune_error err;
    tune_error_clear(&err);
    const tune_run_hooks hooks = {.on_planned = tune_cli_on_planned, .on_note = tune_cli_on_note};
    tune_eval_report r;
    const char *where = is_config(a->target) ? a->target : a->data;
    tune_cli_prompt_list prompts = {0};
    tune_cli_scores scores;
    memset(&scores, 0, sizeof scores);
    a->gen.backend = cfg->backend;
    /* The prompts are read first: a file --generate cannot score fails before the loss is computed. */
    tune_status st = a->generate ? tune_cli_read_prompts(a->data, &prompts, &err) : TUNE_OK;
    if (st == TUNE_OK && a->generate && !prompts.n_refs)
        st = tune_fail_input(&err, a->data, "--generate: no record has a reference (\"output\" or \"reference\")");
    const int threads = omp_get_max_threads();
    if (st == TUNE_OK) st = tune_plan_evaluate(plan, cfg, a->adapter, where, &hooks, &r, &err);
    /* The loss ran on the plan's thread count; the answers decode on compare's (the default). */
    omp_set_num_threads(threads);
    int rc = st != TUNE_OK ? report(&err) : a->generate ? generate_scores(a, &prompts, &scores) : 0;
    tune_cli_prompts_free(&prompts);
    if (!rc && write_csv(a->out ? a->out : ".", plan, a->adapter, &r, a->generate ? &scores : NULL, &err))
        rc = report(&err);
    if (rc) return rc;
    if (!is_config(a->target) && r.truncated > 0)
        fprintf(stderr, "tune: %ld examples longer than sequence_len %ld were truncated\n", r.truncated,
                plan->sequence_len);
    if (a->json) {
        tune_strbuf js = {0};
        tune_strbuf_printf(&js, "{\"loss\": %.17g, \"perplexity\": %.17g, \"tokens\": %ld, \"examples\": %ld", r.loss,
                           r.perplexity, r.tokens, r.examples);
        if (a->generate) tune_cli_scores_json(&scores, &js, ", ", "");
        tune_strbuf_puts(&js, "}\n");
        if (js.oom) {
            tune_strbuf_free(&js);
            tune_fail_run(&err, NULL, "out of memory");
            return report(&err);
        }
        fputs(js.data, stdout);
        tune_strbuf_free(&js);
    } else {
        printf("model       %s\nadapter     %s\ndata        %s\nexamples    %ld\ntokens      %ld (trained targets)\n"
               "loss        %.6f\nperplexity  %.4f\n",
               plan->base_model, a->adapter ? a->adapter : "(none)", r.data, r.examples, r.tokens, r.loss,
               r.perplexity);
        if (a->generate) {
            char line[256];
            tune_cli_scores_format(&scores, line, sizeof line);
            printf("scores      %s (%d answers, max_new_tokens %d)\n", line, scores.n, a->gen.max_new_tokens);
        }
    }
    return 0;
}

int tune_cli_eval(int argc, char **argv)
{
    if (tune_cli_wants_help(argc, argv)) {
        usage(stdout);
        return 0;
    }
    eval_args a = {0};
    int rc = parse_args(argc, argv, &a);
    tune_config cfg;
    const int config = rc == 0 && is_config(a.target);
    if (!rc) rc = config ? tune_cli_load_config("eval", a.config_argc, a.config_argv, &cfg) : model_config(&a, &cfg);
    free(a.config_argv);
    if (rc) return rc;
    tune_plan plan;
    tune_error_list errs = {0};
    tune_status st = tune_plan_init(&plan, &cfg, &errs);
    if (!st && !config && !a.sequence_len && plan.have_model && plan.model.max_position_embeddings > 0 &&
        plan.model.max_position_embeddings < plan.sequence_len) {
        /* The default sequence_len is capped at the model's context length. */
        char len[32];
        snprintf(len, sizeof len, "%d", plan.model.max_position_embeddings);
        tune_plan_free(&plan);
        st = tune_config_set(&cfg, "sequence_len", len, NULL, &errs);
        if (!st) st = tune_plan_init(&plan, &cfg, &errs);
    }
    rc = print_errors(&errs, st);
    if (!rc) {
        if (!config) {
            /* One file looked at once: no prepared-data cache next to an output_dir. */
            free(plan.prepared_dir);
            plan.prepared_dir = NULL;
        }
        rc = evaluate(&cfg, &plan, &a);
    }
    tune_plan_free(&plan); /* also after a failed init */
    tune_config_free(&cfg);
    return rc;
}
