/* Options shared by the inference verbs (generate, chat, compare). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tune/cli.h"
#include "tune/config.h"
#include "tune/data.h"

void tune_cli_gen_defaults(tune_cli_gen_args *a, int sample)
{
    memset(a, 0, sizeof *a);
    a->sampling = tune_sampling_greedy();
    if (sample) {
        a->sampling.temperature = 0.7f;
        a->sampling.top_k = 50;
        a->sampling.top_p = 0.9f;
        a->sampling.repetition_penalty = 1.1f;
    }
    a->max_new_tokens = 256;
}

static int parse_float(const char *s, float *out)
{
    char *end;
    errno = 0;
    const double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v)) return 0;
    *out = (float)v;
    return 1;
}

static int parse_long(const char *s, long long lo, long long hi, long long *out)
{
    char *end;
    errno = 0;
    const long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return 0;
    *out = v;
    return 1;
}

/* "--top-k" and "--top_k" are the same option. */
static int opt_is(const char *arg, const char *name)
{
    if (strncmp(arg, "--", 2)) return 0;
    arg += 2;
    for (; *arg && *name; arg++, name++)
        if (*arg != *name && !(*arg == '-' && *name == '_')) return 0;
    return !*arg && !*name;
}

int tune_cli_gen_option(const char *verb, int argc, char **argv, int *i, tune_cli_gen_args *a)
{
    static const char *const names[] = {"temperature", "top_k", "top_p", "repetition_penalty",
                                        "seed", "max_new_tokens", "chat_template", "stop", "backend"};
    int which = -1;
    for (int k = 0; k < (int)(sizeof names / sizeof names[0]); k++)
        if (opt_is(argv[*i], names[k])) which = k;
    if (which < 0) return 0;
    if (*i + 1 >= argc) {
        tune_cli_usage_error(verb, "--%s needs a value", names[which]);
        return -1;
    }
    const char *v = argv[++*i];
    long long n;
    int ok = 1;
    switch (which) {
    case 0: ok = parse_float(v, &a->sampling.temperature); break;
    case 1: ok = parse_long(v, 0, 1 << 30, &n); a->sampling.top_k = (int)n; break;
    case 2: ok = parse_float(v, &a->sampling.top_p); break;
    case 3: ok = parse_float(v, &a->sampling.repetition_penalty); break;
    case 4: ok = parse_long(v, 0, INT64_MAX, &n); a->sampling.seed = (uint64_t)n; break;
    case 5: ok = parse_long(v, 0, 1 << 24, &n); a->max_new_tokens = (int)n; break;
    case 6: a->chat_template = v; break;
    case 8:
        ok = !strcmp(v, "auto") || !strcmp(v, "cpu") || !strcmp(v, "cuda");
        a->backend = !strcmp(v, "cuda") ? TUNE_BACKEND_CUDA : !strcmp(v, "cpu") ? TUNE_BACKEND_CPU : TUNE_BACKEND_AUTO;
        break;
    default:
        if (!*v) {
            tune_cli_usage_error(verb, "--stop needs a non-empty string");
            return -1;
        }
        if (a->n_stops == TUNE_CLI_MAX_STOPS) {
            tune_cli_usage_error(verb, "at most %d --stop strings", TUNE_CLI_MAX_STOPS);
            return -1;
        }
        a->stops[a->n_stops++] = v;
    }
    if (!ok) {
        tune_cli_usage_error(verb, "--%s: '%s' is not a valid value", names[which], v);
        return -1;
    }
    tune_error err;
    if (tune_sampling_check(&a->sampling, &err) != TUNE_OK) {
        tune_cli_usage_error(verb, "%s", err.message);
        return -1;
    }
    return 1;
}

const char *tune_cli_gen_help(void)
{
    return "  --temperature T        0 is greedy (deterministic); > 0 samples\n"
           "  --top_k K              keep the K most likely tokens (0: off)\n"
           "  --top_p P              keep the smallest set of tokens with mass > P (1: off)\n"
           "  --repetition_penalty R divide positive / multiply negative logits of tokens\n"
           "                         already in the prompt or the reply (1: off)\n"
           "  --seed S               sampling seed (the same seed gives the same text)\n"
           "  --max_new_tokens N     at most N new tokens\n"
           "  --stop STR             end the reply before STR (repeatable; STR is not printed)\n"
           "  --backend B            auto (the GPU when tune has CUDA and one is usable), cpu\n"
           "                         or cuda\n"
           "  --chat_template NAME   render prompts with this template instead of the model's\n"
           "                         own: a built-in, as a config's chat_template: llama3,\n"
           "                         llama3_1, llama2, chatml, smollm2, vicuna_v1.1, zephyr,\n"
           "                         alpaca, tokenizer_default_fallback_NAME; or FILE.jinja,\n"
           "                         a Jinja template run as Transformers runs it\n";
}

tune_status tune_cli_open_lm(const char *model, const char *adapter, const tune_cli_gen_args *a, tune_lm **out)
{
    tune_error err;
    const tune_backend *be;
    char why[512];
    tune_status st = tune_backend_select(a->backend, &be, why, sizeof why, &err);
    if (st == TUNE_OK) st = tune_lm_open(be, model, adapter, out, &err);
    if (st == TUNE_OK && a->chat_template && (st = tune_lm_set_template(*out, a->chat_template, &err)) != TUNE_OK) {
        tune_lm_close(*out);
        *out = NULL;
    }
    if (st != TUNE_OK) tune_error_print(stderr, &err);
    return st;
}

int tune_cli_trained_on_alpaca(const char *adapter)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/config_resolved.yml", adapter);
    if (!tune_path_exists(path)) return 0;
    tune_config cfg;
    tune_error err;
    tune_error_list errs = {0};
    if (tune_config_init(&cfg, &err) != TUNE_OK) return 0;
    int alpaca = tune_config_parse_file(&cfg, path, &errs) == TUNE_OK && cfg.datasets_count > 0;
    for (int i = 0; alpaca && i < cfg.datasets_count; i++) alpaca = cfg.datasets[i].type == TUNE_DS_ALPACA;
    tune_error_list_free(&errs);
    tune_config_free(&cfg);
    return alpaca;
}

tune_cli_prompt_format tune_cli_pick_prompt_format(const char *verb, const char *who, int raw, int alpaca,
                                                   const tune_cli_gen_args *a, const char *adapter)
{
    if (raw) return TUNE_CLI_PROMPT_RAW;
    if (alpaca) return TUNE_CLI_PROMPT_ALPACA;
    if (!a->chat_template && adapter && tune_cli_trained_on_alpaca(adapter)) {
        fprintf(stderr,
                "tune %s: note: %s: the adapter was trained on alpaca data (%s/config_resolved.yml), so its "
                "prompts use the alpaca prompt (--chat_template NAME or --raw choose otherwise)\n",
                verb, who, adapter);
        return TUNE_CLI_PROMPT_ALPACA;
    }
    return TUNE_CLI_PROMPT_CHAT;
}

tune_status tune_cli_prompt_ids(tune_lm *lm, tune_cli_prompt_format f, const char *system, const char *instruction,
                                const char *input, tune_ids *ids, tune_error *err)
{
    tune_strbuf text = {0};
    if (f == TUNE_CLI_PROMPT_ALPACA) {
        tune_data_alpaca_prompt(instruction, input, &text);
    } else {
        tune_strbuf_puts(&text, instruction);
        if (input && *input) tune_strbuf_printf(&text, "\n\n%s", input);
    }
    if (!text.data) tune_strbuf_append(&text, "", 0);
    tune_status st = text.oom ? tune_fail_run(err, NULL, "out of memory") : TUNE_OK;
    tune_chat_message msgs[2];
    int n = 0;
    if (system && f == TUNE_CLI_PROMPT_CHAT) msgs[n++] = (tune_chat_message){"system", system};
    msgs[n++] = (tune_chat_message){"user", text.data};
    if (st == TUNE_OK) st = tune_lm_prompt(lm, msgs, n, f != TUNE_CLI_PROMPT_CHAT, ids, err);
    tune_strbuf_free(&text);
    return st;
}

tune_cli_prompt_format tune_cli_lm_prompt_format(const char *verb, const char *who, const tune_lm *lm, int raw,
                                                 int alpaca, const tune_cli_gen_args *a, const char *adapter)
{
    const tune_cli_prompt_format f = tune_cli_pick_prompt_format(verb, who, raw, alpaca, a, adapter);
    if (f != TUNE_CLI_PROMPT_CHAT || !tune_lm_template_missing(lm)) return f;
    fprintf(stderr, "tune %s: note: %s: %s; its prompts are fed raw\n", verb, who, tune_lm_template_missing(lm));
    return TUNE_CLI_PROMPT_RAW;
}

tune_status tune_cli_answer(tune_lm *lm, tune_cli_prompt_format f, const char *system, const tune_cli_prompt *p,
                            const tune_cli_gen_args *a, tune_strbuf *reply, tune_reply_stats *stats, tune_error *err)
{
    tune_ids ids = {0};
    tune_status st = tune_cli_prompt_ids(lm, f, system, p->instruction, p->input, &ids, err);
    if (st == TUNE_OK) {
        const tune_reply_opts o = {a->sampling, a->max_new_tokens, a->stops, a->n_stops, 0, NULL};
        st = tune_lm_generate(lm, ids.ids, (int)ids.n, &o, NULL, NULL, reply, stats, err);
    }
    tune_ids_free(&ids);
    return st;
}
