/* Prompt files of compare, bench-serve and eval --generate (one prompt per line, or
 * JSONL records), and the scores of their answers against the references. */
#include <cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "tune/cli.h"

void tune_cli_prompts_free(tune_cli_prompt_list *p)
{
    for (int i = 0; i < p->n; i++) {
        free(p->items[i].instruction);
        free(p->items[i].input);
        free(p->items[i].ref);
    }
    free(p->items);
}

/* Copies the three strings (input and ref may be NULL). */
static tune_status prompts_add(tune_cli_prompt_list *p, const char *instruction, size_t len, const char *input,
                               const char *ref, const char *path, tune_error *err)
{
    if (p->n == p->cap) {
        const int cap = p->cap ? 2 * p->cap : 64;
        tune_cli_prompt *items = realloc(p->items, (size_t)cap * sizeof *items);
        if (!items) return tune_fail_run(err, path, "out of memory");
        p->items = items;
        p->cap = cap;
    }
    tune_cli_prompt it = {strndup(instruction, len), input ? strdup(input) : NULL, ref ? strdup(ref) : NULL};
    if (!it.instruction || (input && !it.input) || (ref && !it.ref)) {
        free(it.instruction);
        free(it.input);
        free(it.ref);
        return tune_fail_run(err, path, "out of memory");
    }
    p->items[p->n++] = it;
    p->n_refs += ref != NULL;
    return TUNE_OK;
}

/* One JSONL record: "prompt", or "instruction" with an optional "input" after a blank line;
 * the reference answer from "reference" or else "output" (an Alpaca record), when there is one. */
static tune_status json_prompt(const char *line, size_t len, const char *path, int lineno, tune_cli_prompt_list *p,
                               tune_error *err)
{
    cJSON *o = cJSON_ParseWithLength(line, len);
    tune_status st = TUNE_OK;
    const cJSON *pr = cJSON_GetObjectItemCaseSensitive(o, "prompt");
    const cJSON *ins = cJSON_GetObjectItemCaseSensitive(o, "instruction");
    const cJSON *in = cJSON_GetObjectItemCaseSensitive(o, "input");
    const cJSON *ref = cJSON_GetObjectItemCaseSensitive(o, "reference");
    if (!ref) ref = cJSON_GetObjectItemCaseSensitive(o, "output");
    const char *reference = cJSON_IsString(ref) ? ref->valuestring : NULL;
    if (!cJSON_IsObject(o)) {
        st = tune_error_set(err, TUNE_ERR_INPUT, path, lineno, 0, "not a JSON object");
    } else if (ref && !reference) {
        st = tune_error_set(err, TUNE_ERR_INPUT, path, lineno, 0, "\"%s\" must be a string", ref->string);
    } else if (cJSON_IsString(pr)) {
        st = prompts_add(p, pr->valuestring, strlen(pr->valuestring), NULL, reference, path, err);
    } else if (cJSON_IsString(ins)) {
        const char *input = cJSON_IsString(in) && in->valuestring[0] ? in->valuestring : NULL;
        st = prompts_add(p, ins->valuestring, strlen(ins->valuestring), input, reference, path, err);
    } else {
        st = tune_error_set(err, TUNE_ERR_INPUT, path, lineno, 0,
                            "expected a string \"prompt\" or \"instruction\" field");
    }
    cJSON_Delete(o);
    return st;
}

tune_status tune_cli_read_prompts(const char *path, tune_cli_prompt_list *p, tune_error *err)
{
    char *data;
    size_t len;
    tune_status st = tune_read_file(path, &data, &len, err);
    if (st != TUNE_OK) return st;
    size_t first = 0;
    while (first < len && (data[first] == ' ' || data[first] == '\t' || data[first] == '\r' || data[first] == '\n'))
        first++;
    const size_t plen = strlen(path);
    const int jsonl = (plen > 6 && !strcmp(path + plen - 6, ".jsonl")) || (first < len && data[first] == '{');
    int lineno = 0;
    for (size_t at = 0; at < len && st == TUNE_OK;) {
        const char *nl = memchr(data + at, '\n', len - at);
        size_t end = nl ? (size_t)(nl - data) : len, next = nl ? end + 1 : len;
        lineno++;
        if (end > at && data[end - 1] == '\r') end--;
        size_t a = at;
        while (a < end && (data[a] == ' ' || data[a] == '\t')) a++;
        if (a < end) {
            if (jsonl) st = json_prompt(data + at, end - at, path, lineno, p, err);
            else st = prompts_add(p, data + at, end - at, NULL, NULL, path, err);
        }
        at = next;
    }
    free(data);
    if (st == TUNE_OK && p->n == 0) st = tune_fail_input(err, path, "no prompts in the file");
    return st;
}


tune_status tune_cli_score(tune_cli_scores *s, const char *hyp, const char *ref, double *chrf, double *bleu,
                           tune_error *err)
{
    tune_chrf_stats c;
    tune_bleu_stats b;
    memset(&c, 0, sizeof c);
    memset(&b, 0, sizeof b);
    if (tune_chrf_add(&c, hyp, ref, err) || tune_chrf_add(&s->chrf, hyp, ref, err) || tune_bleu_add(&b, hyp, ref, err) ||
        tune_bleu_add(&s->bleu, hyp, ref, err) || tune_excel_add(&s->excel, hyp, ref, err))
        return TUNE_ERR_RUN;
    *chrf = tune_chrf_score(&c);
    *bleu = tune_bleu_score(&b, 1); /* one sentence: sacreBLEU's effective order */
    s->n++;
    return TUNE_OK;
}

void tune_cli_scores_format(const tune_cli_scores *s, char *buf, size_t size)
{
    const tune_excel_stats *e = &s->excel;
    int at = snprintf(buf, size, "chrF %.2f, BLEU %.2f", tune_chrf_score(&s->chrf), tune_bleu_score(&s->bleu, 0));
    if (e->fn_answers && at > 0 && (size_t)at < size)
        at += snprintf(buf + at, size - (size_t)at, ", functions named %.0f%% (%ld/%ld)",
                       100.0 * (double)e->fn_named / (double)e->fn_answers, e->fn_named, e->fn_answers);
    if (e->formulas && at > 0 && (size_t)at < size)
        snprintf(buf + at, size - (size_t)at, ", formulas matched %.0f%% (%ld/%ld)",
                 100.0 * (double)e->formulas_matched / (double)e->formulas, e->formulas_matched, e->formulas);
}

void tune_cli_scores_json(const tune_cli_scores *s, tune_strbuf *out, const char *before, const char *after)
{
    const tune_excel_stats *e = &s->excel;
    tune_strbuf_printf(out, "%s\"scored\": %d%s%s\"chrf\": %.17g%s%s\"bleu\": %.17g%s", before, s->n, after, before,
                       tune_chrf_score(&s->chrf), after, before, tune_bleu_score(&s->bleu, 0), after);
    if (e->fn_answers)
        tune_strbuf_printf(out, "%s\"excel_functions_named\": %.17g%s", before,
                           (double)e->fn_named / (double)e->fn_answers, after);
    if (e->formulas)
        tune_strbuf_printf(out, "%s\"excel_formulas_matched\": %.17g%s", before,
                           (double)e->formulas_matched / (double)e->formulas, after);
}
