/* tune template show|render: what a model's chat template is, and the text
 * (and ids) it makes of a conversation, rendered as training and generation
 * render it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tune/cli.h"
#include "tune/template.h"
#include "tune/tokenizer.h"
#include "tune/util.h"

static const char USAGE[] =
    "usage: tune template show MODEL\n"
    "       tune template render MODEL|FILE.jinja --messages FILE.json [--add-generation-prompt]\n"
    "                            [--ids] [--model MODEL] [--chat_template NAME] [--date \"26 Jul 2024\"]\n\n"
    "show prints the model's chat template (from tokenizer_config.json,\n"
    "chat_template.jinja or GGUF metadata) and whether tune renders it with a\n"
    "built-in renderer or runs it as Jinja.\n\n"
    "render prints the text the template makes of the conversation in\n"
    "FILE.json (a list of {\"role\", \"content\"} messages, or an object with\n"
    "\"messages\"), exactly what training and generation render. MODEL is a\n"
    "model folder, tokenizer.json or GGUF file (its own template, its BOS/EOS\n"
    "texts); FILE.jinja is a template file (with --model MODEL for the\n"
    "tokenizer; without one, bos_token/eos_token are <s> and </s>).\n"
    "--chat_template NAME renders with a built-in (or tokenizer_default_fallback_NAME)\n"
    "instead. --ids also prints the token ids (needs a tokenizer).\n"
    "--date sets the day strftime_now and Llama 3.1's \"Today Date\" give\n"
    "(default 26 Jul 2024, as in training, so renders are reproducible).\n";

static int fail(const tune_error *err)
{
    tune_error_print(stderr, err);
    return err->code ? err->code : 1;
}

static int show(const char *model)
{
    tune_tokenizer *tok;
    tune_error err;
    if (tune_tokenizer_load(model, &tok, &err) != TUNE_OK) return fail(&err);
    const char *src = tune_tokenizer_chat_template(tok);
    int rc = 0;
    if (!src) {
        printf("%s has no chat template\n", model);
    } else {
        tune_template t;
        if (tune_template_open(NULL, src, NULL, NULL, &t, &err) != TUNE_OK) {
            rc = fail(&err);
        } else {
            if (t.id == TUNE_TEMPLATE_JINJA)
                printf("chat template: run as Jinja (sha256 %.16s)\n", t.sha256);
            else
                printf("chat template: built-in '%s' (tune renders it in C, with the same text)\n",
                       tune_template_name(t.id));
            tune_template_close(&t);
        }
        printf("----\n%s\n----\n", src);
    }
    tune_tokenizer_free(tok);
    return rc;
}

/* The conversation of FILE.json; msgs point into *doc. */
static int read_messages(const char *path, cJSON **doc, tune_chat_message **msgs, int *n)
{
    char *text;
    size_t len;
    tune_error err;
    if (tune_read_file(path, &text, &len, &err) != TUNE_OK) return fail(&err);
    *doc = cJSON_ParseWithLength(text, len);
    free(text);
    if (!*doc) {
        fprintf(stderr, "%s: not valid JSON\n", path);
        return 2;
    }
    const cJSON *list = cJSON_IsObject(*doc) ? cJSON_GetObjectItemCaseSensitive(*doc, "messages") : *doc;
    if (!cJSON_IsArray(list) || cJSON_GetArraySize(list) == 0) {
        fprintf(stderr, "%s: expected a non-empty list of messages (or an object with \"messages\")\n", path);
        return 2;
    }
    *n = cJSON_GetArraySize(list);
    *msgs = calloc((size_t)*n, sizeof **msgs);
    if (!*msgs) {
        fprintf(stderr, "tune template: out of memory\n");
        return 1;
    }
    int i = 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, list)
    {
        const char *role = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(m, "role"));
        const char *content = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(m, "content"));
        if (!role || !content) {
            fprintf(stderr, "%s: message %d needs string \"role\" and \"content\"\n", path, i);
            return 2;
        }
        (*msgs)[i++] = (tune_chat_message){role, content};
    }
    return 0;
}

typedef struct render_args {
    const char *source, *messages, *model, *chat_template, *date;
    int generation_prompt, ids;
} render_args;

static int render(const render_args *a)
{
    tune_error err;
    tune_tokenizer *tok = NULL;
    char *jinja = NULL;
    cJSON *doc = NULL;
    tune_chat_message *msgs = NULL;
    tune_strbuf text = {0};
    tune_ids ids = {0};
    tune_template t = {0};
    int n = 0, rc = 0, opened = 0;
    const char *tok_path = tune_template_is_file(a->source) ? a->model : a->source;
    if (tok_path && tune_tokenizer_load(tok_path, &tok, &err) != TUNE_OK) {
        rc = fail(&err);
        goto done;
    }
    if (tune_template_is_file(a->source)) {
        size_t len;
        if (tune_read_file(a->source, &jinja, &len, &err) != TUNE_OK) {
            rc = fail(&err);
            goto done;
        }
    }
    if ((rc = read_messages(a->messages, &doc, &msgs, &n))) goto done;
    const char *name = a->chat_template ? a->chat_template : jinja ? "jinja" : NULL;
    if (tune_template_open(name, tok ? tune_tokenizer_chat_template(tok) : NULL, jinja, a->source, &t, &err)) {
        rc = fail(&err);
        goto done;
    }
    opened = 1;
    if (tok) tune_tokenizer_bos_eos_texts(tok, &t.opt.bos, &t.opt.eos);
    if (a->date) t.opt.date = a->date;
    if (tune_chat_render(&t, msgs, n, a->generation_prompt, &text, NULL, &err) != TUNE_OK) {
        snprintf(err.file, sizeof err.file, "%s", a->messages);
        rc = fail(&err);
        goto done;
    }
    fwrite(text.data ? text.data : "", 1, text.len, stdout);
    if (a->ids) {
        /* The rendered text already holds BOS: no special tokens are added again. */
        if (tune_tokenizer_encode(tok, text.data ? text.data : "", text.len, 0, &ids, &err) != TUNE_OK) {
            rc = fail(&err);
            goto done;
        }
        printf("\n---- %zu ids ----\n[", ids.n);
        for (size_t i = 0; i < ids.n; i++) printf("%s%d", i ? ", " : "", ids.ids[i]);
        printf("]\n");
    }
done:
    tune_ids_free(&ids);
    tune_strbuf_free(&text);
    if (opened) tune_template_close(&t);
    free(msgs);
    cJSON_Delete(doc);
    free(jinja);
    tune_tokenizer_free(tok);
    return rc;
}

int tune_cli_template(int argc, char **argv)
{
    if (tune_cli_wants_help(argc, argv) || argc < 2) {
        fputs(USAGE, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *sub = argv[1];
    if (!strcmp(sub, "show")) {
        if (argc != 3) return tune_cli_usage_error("template", "show takes one MODEL");
        return show(argv[2]);
    }
    if (strcmp(sub, "render")) return tune_cli_usage_error("template", "unknown subcommand '%s' (show, render)", sub);
    render_args a = {0};
    for (int i = 2; i < argc; i++) {
        const char **value = !strcmp(argv[i], "--messages")        ? &a.messages
                             : !strcmp(argv[i], "--model")         ? &a.model
                             : !strcmp(argv[i], "--chat_template") ? &a.chat_template
                             : !strcmp(argv[i], "--date")          ? &a.date
                                                                   : NULL;
        if (value) {
            if (++i >= argc) return tune_cli_usage_error("template", "%s needs a value", argv[i - 1]);
            *value = argv[i];
        } else if (!strcmp(argv[i], "--add-generation-prompt")) a.generation_prompt = 1;
        else if (!strcmp(argv[i], "--ids")) a.ids = 1;
        else if (argv[i][0] == '-') return tune_cli_usage_error("template", "unknown option '%s'", argv[i]);
        else if (!a.source) a.source = argv[i];
        else return tune_cli_usage_error("template", "unexpected argument '%s'", argv[i]);
    }
    if (!a.source) return tune_cli_usage_error("template", "render needs MODEL or FILE.jinja");
    if (!a.messages) return tune_cli_usage_error("template", "render needs --messages FILE.json");
    if (a.model && !tune_template_is_file(a.source))
        return tune_cli_usage_error("template", "--model goes with FILE.jinja (MODEL gives its own tokenizer)");
    if (a.ids && tune_template_is_file(a.source) && !a.model)
        return tune_cli_usage_error("template", "--ids needs a tokenizer: add --model MODEL");
    return render(&a);
}
