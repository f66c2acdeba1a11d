#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "tune/cli.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: tune generate MODEL --prompt TEXT [--input TEXT] [--adapter DIR] [--raw | --alpaca]\n"
            "                     [--system S] [options]\n\n"
            "Continues a prompt and writes only the generated text to stdout, token by token\n"
            "(timing and diagnostics go to stderr). By default the prompt is a user message in\n"
            "the model's chat template, followed by the assistant's generation prompt.\n\n"
            "  MODEL                  Hugging Face folder or .gguf file\n"
            "  --prompt TEXT          the prompt (with --alpaca: the instruction)\n"
            "  --input TEXT           context after the prompt (alpaca's ### Input:; otherwise after a\n"
            "                         blank line)\n"
            "  --adapter DIR          a PEFT LoRA adapter, merged into the weights at load\n"
            "  --raw                  feed the prompt as it is (no chat template)\n"
            "  --alpaca               render the prompt as `type: alpaca` training does (preamble,\n"
            "                         ### Instruction:, ### Input:, ### Response:); the default for an\n"
            "                         adapter trained on alpaca data (config_resolved.yml next to it)\n"
            "  --system S             a system message before the prompt (chat template only)\n"
            "%s\n"
            "Defaults: greedy (temperature 0), 256 new tokens, seed 0; generation also ends at\n"
            "any EOS token of the model.\n",
            tune_cli_gen_help());
}

static void write_stdout(void *ctx, const char *s, size_t n)
{
    (void)ctx;
    fwrite(s, 1, n, stdout);
    fflush(stdout);
}

static const char *stop_name(tune_stop_reason r)
{
    return r == TUNE_STOP_EOS ? "end of sequence" : r == TUNE_STOP_STRING ? "stop string" : "max_new_tokens";
}

int tune_cli_generate(int argc, char **argv)
{
    if (tune_cli_wants_help(argc, argv)) {
        usage(stdout);
        return 0;
    }
    const char *model = NULL, *adapter = NULL, *prompt = NULL, *input = NULL, *system = NULL;
    int raw = 0, alpaca = 0;
    tune_cli_gen_args g;
    tune_cli_gen_defaults(&g, 0);
    for (int i = 1; i < argc; i++) {
        const int r = tune_cli_gen_option("generate", argc, argv, &i, &g);
        if (r < 0) return 2;
        if (r > 0) continue;
        const char **value = !strcmp(argv[i], "--prompt")    ? &prompt
                             : !strcmp(argv[i], "--input")   ? &input
                             : !strcmp(argv[i], "--adapter") ? &adapter
                             : !strcmp(argv[i], "--system")  ? &system
                                                             : NULL;
        if (value) {
            if (i + 1 >= argc) return tune_cli_usage_error("generate", "%s needs a value", argv[i]);
            *value = argv[++i];
        } else if (!strcmp(argv[i], "--raw")) {
            raw = 1;
        } else if (!strcmp(argv[i], "--alpaca")) {
            alpaca = 1;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            return tune_cli_usage_error("generate", "unknown option '%s' (try 'tune generate --help')", argv[i]);
        } else if (!model) {
            model = argv[i];
        } else {
            return tune_cli_usage_error("generate", "unexpected argument '%s'", argv[i]);
        }
    }
    if (!model) return tune_cli_usage_error("generate", "expected MODEL (try 'tune generate --help')");
    if (!prompt) return tune_cli_usage_error("generate", "--prompt is required");
    if (raw + alpaca + (g.chat_template != NULL) > 1)
        return tune_cli_usage_error("generate", "--raw, --alpaca and --chat_template exclude each other");
    if ((raw || alpaca) && system)
        return tune_cli_usage_error("generate", "--system needs the chat template; drop --raw / --alpaca");

    tune_error err;
    tune_lm *lm;
    tune_status st = tune_cli_open_lm(model, adapter, &g, &lm);
    if (st != TUNE_OK) return st;
    const tune_cli_prompt_format format = tune_cli_pick_prompt_format("generate", "the model", raw, alpaca, &g, adapter);
    if (format == TUNE_CLI_PROMPT_ALPACA && system) {
        tune_lm_close(lm);
        return tune_cli_usage_error("generate", "the alpaca prompt has no system message: drop --system, or "
                                                "choose a chat template with --chat_template NAME");
    }
    tune_ids ids = {0};
    tune_strbuf reply = {0};
    tune_reply_stats stats;
    st = tune_cli_prompt_ids(lm, format, system, prompt, input, &ids, &err);
    if (st == TUNE_OK) {
        const tune_reply_opts o = {g.sampling, g.max_new_tokens, g.stops, g.n_stops, 0, NULL};
        st = tune_lm_generate(lm, ids.ids, (int)ids.n, &o, write_stdout, NULL, &reply, &stats, &err);
    }
    if (st == TUNE_OK) {
        if (isatty(STDOUT_FILENO)) fputc('\n', stdout);
        fprintf(stderr, "tune generate: %d prompt tokens, %d new tokens in %.2f s (%.1f tokens/s), stopped at %s\n",
                stats.prompt_tokens, stats.new_tokens, stats.seconds,
                stats.seconds > 0 ? stats.new_tokens / stats.seconds : 0.0, stop_name(stats.stop));
    } else {
        tune_error_print(stderr, &err);
    }
    tune_strbuf_free(&reply);
    tune_ids_free(&ids);
    tune_lm_close(lm);
    return st;
}
