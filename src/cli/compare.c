#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tune/cli.h"

#define DEFAULT_OUT "model_comparison_results.csv"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: tune compare MODEL_A MODEL_B --prompts FILE [--adapter-a DIR] [--adapter-b DIR]\n"
            "                    [--out FILE] [--raw | --alpaca] [--system S] [options]\n\n"
            "Answers the same prompts with two models (base vs instruct, or base vs base + adapter:\n"
            "MODEL_B may be MODEL_A with --adapter-b) and writes a CSV with the columns prompt,\n"
            "answer_a, answer_b, tokens_a, tokens_b, seconds_a, seconds_b. When prompts come with\n"
            "reference answers, five more columns (reference, chrf_a, chrf_b, bleu_a, bleu_b) score each\n"
            "answer against its reference with chrF and BLEU (sacreBLEU's defaults, 0-100; sentence BLEU\n"
            "with its effective order), and both models' corpus chrF and BLEU and Excel task accuracy\n"
            "(answers naming the reference's worksheet functions, reference formulas written alike once\n"
            "spaces and case are set aside) are printed at the end.\n\n"
            "  --prompts FILE         one prompt per line, or JSONL with \"prompt\" or \"instruction\"\n"
            "                         (+ \"input\") per line (.jsonl, or a first line starting with '{');\n"
            "                         \"reference\" or \"output\" is the reference answer (so an Alpaca\n"
            "                         eval file works as it is)\n"
            "  --adapter-a/-b DIR     PEFT LoRA adapters, merged into that model's weights at load\n"
            "  --out FILE             the CSV (default " DEFAULT_OUT ")\n"
            "  --raw                  feed prompts as they are; by default each model wraps them in its\n"
            "                         chat template (a model without one gets them raw, with a note)\n"
            "  --alpaca               render prompts as `type: alpaca` training does (preamble,\n"
            "                         ### Instruction:, ### Input:, ### Response:); a model whose adapter\n"
            "                         was trained on alpaca data (config_resolved.yml next to it) gets\n"
            "                         this by default\n"
            "  --system S             a system message before each prompt (chat template only)\n"
            "%s\n"
            "Defaults: greedy (temperature 0), 256 new tokens.\n",
            tune_cli_gen_help());
}

typedef struct {
    tune_lm *lm;
    const char *name;
    tune_cli_prompt_format format;
} side;

/* The reference and each answer's sentence chrF and BLEU as CSV columns; adds to the corpus
 * scores and counts which answer is closer by chrF. reply: (2)   scores: (2) */
static tune_status score_answers(tune_strbuf *csv, const tune_strbuf *reply, const char *ref, tune_cli_scores *scores,
                                 int *closer, tune_error *err)
{
    double chrf[2], bleu[2];
    for (int s = 0; s < 2; s++)
        if (tune_cli_score(&scores[s], reply[s].data ? reply[s].data : "", ref, &chrf[s], &bleu[s], err) != TUNE_OK)
            return TUNE_ERR_RUN;
    if (chrf[0] != chrf[1]) closer[chrf[1] > chrf[0]]++;
    tune_strbuf_puts(csv, ",");
    tune_strbuf_csv_field(csv, ref, strlen(ref));
    tune_strbuf_printf(csv, ",%.2f,%.2f,%.2f,%.2f", chrf[0], chrf[1], bleu[0], bleu[1]);
    return TUNE_OK;
}

int tune_cli_compare(int argc, char **argv)
{
    if (tune_cli_wants_help(argc, argv)) {
        usage(stdout);
        return 0;
    }
    const char *models[2] = {NULL, NULL}, *adapters[2] = {NULL, NULL};
    const char *prompts_path = NULL, *out = DEFAULT_OUT, *system = NULL;
    int raw = 0, alpaca = 0, n_models = 0;
    tune_cli_gen_args g;
    tune_cli_gen_defaults(&g, 0);
    for (int i = 1; i < argc; i++) {
        const int r = tune_cli_gen_option("compare", argc, argv, &i, &g);
        if (r < 0) return 2;
        if (r > 0) continue;
        const char **value = !strcmp(argv[i], "--prompts")     ? &prompts_path
                             : !strcmp(argv[i], "--adapter-a") ? &adapters[0]
                             : !strcmp(argv[i], "--adapter-b") ? &adapters[1]
                             : !strcmp(argv[i], "--out")       ? &out
                             : !strcmp(argv[i], "--system")    ? &system
                                                               : NULL;
        if (value) {
            if (i + 1 >= argc) return tune_cli_usage_error("compare", "%s needs a value", argv[i]);
            *value = argv[++i];
        } else if (!strcmp(argv[i], "--raw")) {
            raw = 1;
        } else if (!strcmp(argv[i], "--alpaca")) {
            alpaca = 1;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            return tune_cli_usage_error("compare", "unknown option '%s' (try 'tune compare --help')", argv[i]);
        } else if (n_models < 2) {
            models[n_models++] = argv[i];
        } else {
            return tune_cli_usage_error("compare", "unexpected argument '%s'", argv[i]);
        }
    }
    if (n_models < 2) return tune_cli_usage_error("compare", "expected MODEL_A MODEL_B (try 'tune compare --help')");
    if (!prompts_path) return tune_cli_usage_error("compare", "--prompts FILE is required");
    if (raw + alpaca + (g.chat_template != NULL) > 1)
        return tune_cli_usage_error("compare", "--raw, --alpaca and --chat_template exclude each other");

    tune_error err;
    tune_cli_prompt_list prompts = {0};
    side sides[2] = {{NULL, "model A", TUNE_CLI_PROMPT_CHAT}, {NULL, "model B", TUNE_CLI_PROMPT_CHAT}};
    tune_status st = tune_cli_read_prompts(prompts_path, &prompts, &err);
    if (st != TUNE_OK) tune_error_print(stderr, &err);
    for (int s = 0; s < 2 && st == TUNE_OK; s++) {
        st = tune_cli_open_lm(models[s], adapters[s], &g, &sides[s].lm);
        if (st != TUNE_OK) break;
        sides[s].format =
            tune_cli_lm_prompt_format("compare", sides[s].name, sides[s].lm, raw, alpaca, &g, adapters[s]);
        if (sides[s].format == TUNE_CLI_PROMPT_ALPACA && system) {
            fprintf(stderr, "tune compare: note: %s: the alpaca prompt has no system message; --system is not "
                            "used for it\n", sides[s].name);
        }
    }
    tune_strbuf csv = {0};
    tune_strbuf_puts(&csv, "prompt,answer_a,answer_b,tokens_a,tokens_b,seconds_a,seconds_b");
    tune_strbuf_puts(&csv, prompts.n_refs ? ",reference,chrf_a,chrf_b,bleu_a,bleu_b\r\n" : "\r\n");
    double total[2] = {0, 0};
    tune_cli_scores scores[2];
    memset(scores, 0, sizeof scores);
    int closer[2] = {0, 0};
    for (int i = 0; i < prompts.n && st == TUNE_OK; i++) {
        tune_strbuf reply[2] = {{0}, {0}};
        tune_reply_stats stats[2];
        for (int s = 0; s < 2 && st == TUNE_OK; s++) {
            st = tune_cli_answer(sides[s].lm, sides[s].format, system, &prompts.items[i], &g, &reply[s], &stats[s],
                                 &err);
            if (st == TUNE_OK) total[s] += stats[s].seconds;
        }
        if (st == TUNE_OK) {
            const tune_cli_prompt *p = &prompts.items[i];
            tune_strbuf shown = {0}; /* the prompt column: instruction, then input after a blank line */
            tune_strbuf_puts(&shown, p->instruction);
            if (p->input) tune_strbuf_printf(&shown, "\n\n%s", p->input);
            tune_strbuf_csv_field(&csv, shown.data ? shown.data : "", shown.len);
            tune_strbuf_free(&shown);
            for (int s = 0; s < 2; s++) {
                tune_strbuf_puts(&csv, ",");
                tune_strbuf_csv_field(&csv, reply[s].data ? reply[s].data : "", reply[s].len);
            }
            tune_strbuf_printf(&csv, ",%d,%d,%.3f,%.3f", stats[0].new_tokens, stats[1].new_tokens,
                               stats[0].seconds, stats[1].seconds);
            if (p->ref) st = score_answers(&csv, reply, p->ref, scores, closer, &err);
            else if (prompts.n_refs) tune_strbuf_puts(&csv, ",,,,,");
            tune_strbuf_puts(&csv, "\r\n");
            fprintf(stderr, "tune compare: %d/%d  A %d tokens %.2f s  B %d tokens %.2f s\n", i + 1, prompts.n,
                    stats[0].new_tokens, stats[0].seconds, stats[1].new_tokens, stats[1].seconds);
        }
        tune_strbuf_free(&reply[0]);
        tune_strbuf_free(&reply[1]);
    }
    if (st == TUNE_OK && csv.oom) st = tune_fail_run(&err, out, "out of memory");
    if (st == TUNE_OK) st = tune_write_file_atomic(out, csv.data, csv.len, &err);
    if (st == TUNE_OK && prompts.n_refs) {
        char line[2][256];
        tune_cli_scores_format(&scores[0], line[0], sizeof line[0]);
        tune_cli_scores_format(&scores[1], line[1], sizeof line[1]);
        fprintf(stderr,
                "tune compare: chrF against the %d references: A %.2f, B %.2f; closer: A on %d, B on %d, "
                "tied on %d\ntune compare: A: %s\ntune compare: B: %s\n",
                prompts.n_refs, tune_chrf_score(&scores[0].chrf), tune_chrf_score(&scores[1].chrf), closer[0],
                closer[1], prompts.n_refs - closer[0] - closer[1], line[0], line[1]);
    }
    if (st == TUNE_OK)
        fprintf(stderr, "tune compare: wrote %s (%d prompts; A %.2f s, B %.2f s)\n", out, prompts.n, total[0],
                total[1]);
    else if (sides[0].lm && sides[1].lm)
        tune_error_print(stderr, &err);
    tune_strbuf_free(&csv);
    tune_lm_close(sides[0].lm);
    tune_lm_close(sides[1].lm);
    tune_cli_prompts_free(&prompts);
    return st;
}
