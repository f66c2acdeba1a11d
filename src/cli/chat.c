#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tune/cli.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: tune chat MODEL [--adapter DIR] [--system S] [options]\n\n"
            "Interactive conversation: each line read from stdin is a user message; the reply is\n"
            "streamed to stdout, followed by a newline. The conversation is rendered again with\n"
            "the model's chat template every turn; the key/value cache keeps what was computed.\n"
            "  /reset   start a new conversation\n"
            "  /exit    end (as does end of input)\n\n"
            "  MODEL                  Hugging Face folder or .gguf file\n"
            "  --adapter DIR          a PEFT LoRA adapter, merged into the weights at load\n"
            "  --system S             a system message at the start of each conversation\n"
            "%s\n"
            "Defaults: temperature 0.7, top_k 50, top_p 0.9, repetition_penalty 1.1, seed 0,\n"
            "256 new tokens per reply.\n",
            tune_cli_gen_help());
}

static void write_stdout(void *ctx, const char *s, size_t n)
{
    (void)ctx;
    fwrite(s, 1, n, stdout);
    fflush(stdout);
}

/* The conversation: messages whose contents it owns. */
typedef struct {
    tune_chat_message *msgs; /* (n) */
    int n, cap;
} conversation;

static int push(conversation *c, const char *role, const char *content, size_t len)
{
    if (c->n == c->cap) {
        const int cap = c->cap ? 2 * c->cap : 16;
        tune_chat_message *m = realloc(c->msgs, (size_t)cap * sizeof *m);
        if (!m) return 0;
        c->msgs = m;
        c->cap = cap;
    }
    char *copy = malloc(len + 1);
    if (!copy) return 0;
    memcpy(copy, content, len);
    copy[len] = '\0';
    c->msgs[c->n++] = (tune_chat_message){role, copy};
    return 1;
}

static void truncate_to(conversation *c, int n)
{
    while (c->n > n) free((char *)c->msgs[--c->n].content);
}

int tune_cli_chat(int argc, char **argv)
{
    if (tune_cli_wants_help(argc, argv)) {
        usage(stdout);
        return 0;
    }
    const char *model = NULL, *adapter = NULL, *system = NULL;
    tune_cli_gen_args g;
    tune_cli_gen_defaults(&g, 1);
    for (int i = 1; i < argc; i++) {
        const int r = tune_cli_gen_option("chat", argc, argv, &i, &g);
        if (r < 0) return 2;
        if (r > 0) continue;
        const char **value = !strcmp(argv[i], "--adapter") ? &adapter : !strcmp(argv[i], "--system") ? &system : NULL;
        if (value) {
            if (i + 1 >= argc) return tune_cli_usage_error("chat", "%s needs a value", argv[i]);
            *value = argv[++i];
        } else if (argv[i][0] == '-' && argv[i][1]) {
            return tune_cli_usage_error("chat", "unknown option '%s' (try 'tune chat --help')", argv[i]);
        } else if (!model) {
            model = argv[i];
        } else {
            return tune_cli_usage_error("chat", "unexpected argument '%s'", argv[i]);
        }
    }
    if (!model) return tune_cli_usage_error("chat", "expected MODEL (try 'tune chat --help')");

    tune_error err;
    tune_lm *lm;
    tune_status st = tune_cli_open_lm(model, adapter, &g, &lm);
    if (st != TUNE_OK) return st;
    if (tune_lm_template_missing(lm)) {
        fprintf(stderr, "tune: error: chat needs a chat template: %s (or --chat_template NAME)\n",
                tune_lm_template_missing(lm));
        tune_lm_close(lm);
        return 2;
    }
    if (adapter && !g.chat_template && tune_cli_trained_on_alpaca(adapter))
        fprintf(stderr, "tune chat: note: the adapter was trained on alpaca prompts (%s/config_resolved.yml), "
                        "not on this chat template; 'tune generate MODEL --adapter %s --prompt ...' asks it the "
                        "way it was trained\n",
                adapter, adapter);
    const int interactive = isatty(STDIN_FILENO);
    if (interactive) fprintf(stderr, "tune chat: /reset starts over, /exit or Ctrl-D ends\n");
    conversation c = {0};
    const int base = system ? 1 : 0;
    if (system && !push(&c, "system", system, strlen(system))) st = tune_fail_run(&err, NULL, "out of memory");
    uint64_t step = 0; /* sampling steps run on across turns: no two replies draw the same numbers */
    char *line = NULL;
    size_t line_cap = 0;
    ssize_t len;
    while (st == TUNE_OK) {
        if (interactive) fprintf(stderr, "> ");
        if ((len = getline(&line, &line_cap, stdin)) < 0) break;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = '\0';
        if (len == 0) continue;
        if (!strcmp(line, "/exit")) break;
        if (!strcmp(line, "/reset")) {
            truncate_to(&c, base);
            fprintf(stderr, "tune chat: new conversation\n");
            continue;
        }
        if (!push(&c, "user", line, (size_t)len)) {
            st = tune_fail_run(&err, NULL, "out of memory");
            break;
        }
        tune_ids ids = {0};
        tune_strbuf reply = {0};
        tune_reply_stats stats = {0};
        tune_status turn = tune_lm_prompt(lm, c.msgs, c.n, 0, &ids, &err);
        if (turn == TUNE_OK) {
            const tune_reply_opts o = {g.sampling, g.max_new_tokens, g.stops, g.n_stops, step, NULL};
            turn = tune_lm_generate(lm, ids.ids, (int)ids.n, &o, write_stdout, NULL, &reply, &stats, &err);
        }
        step += (uint64_t)stats.new_tokens + 1;
        if (turn == TUNE_OK) {
            fputc('\n', stdout);
            fflush(stdout);
            if (!push(&c, "assistant", reply.data ? reply.data : "", reply.len))
                turn = st = tune_fail_run(&err, NULL, "out of memory");
        } else if (turn == TUNE_ERR_INPUT) {
            /* too long a conversation, say: report it, forget the message, go on */
            fputc('\n', stdout);
            tune_error_print(stderr, &err);
            fprintf(stderr, "tune chat: the message was dropped; /reset starts a new conversation\n");
            truncate_to(&c, c.n - 1);
        } else {
            st = turn;
        }
        tune_strbuf_free(&reply);
        tune_ids_free(&ids);
    }
    if (st != TUNE_OK) tune_error_print(stderr, &err);
    free(line);
    truncate_to(&c, 0);
    free(c.msgs);
    tune_lm_close(lm);
    return st;
}
