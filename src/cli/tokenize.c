/* tune tokenize MODEL "text" | --jsonl: ids, tokens and the decoded round
 * trip, as Hugging Face `tokenizers` gives them. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tune/cli.h"
#include "tune/tokenizer.h"
#include "tune/util.h"

static const char USAGE[] =
    "usage: tune tokenize MODEL \"text\" [--no-special]\n"
    "       tune tokenize MODEL --jsonl [--no-special] < lines.jsonl\n\n"
    "MODEL is a model folder (tokenizer.json, tokenizer_config.json), a\n"
    "tokenizer.json file or a GGUF file. Prints the ids, the tokens and the\n"
    "decoded text. Special tokens are added as HF encode() adds them by\n"
    "default; --no-special leaves them out.\n"
    "--jsonl reads one JSON string per stdin line and writes one line\n"
    "{\"ids\": [...], \"tokens\": [...], \"decoded\": \"...\"} per input line.\n";

/* Appends s as a JSON string literal (any bytes; U+0000 escaped). */
static void json_str(tune_strbuf *sb, const char *s, size_t n)
{
    tune_strbuf_append(sb, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"') tune_strbuf_puts(sb, "\\\"");
        else if (c == '\\') tune_strbuf_puts(sb, "\\\\");
        else if (c == '\n') tune_strbuf_puts(sb, "\\n");
        else if (c == '\r') tune_strbuf_puts(sb, "\\r");
        else if (c == '\t') tune_strbuf_puts(sb, "\\t");
        else if (c < 0x20) tune_strbuf_printf(sb, "\\u%04x", c);
        else tune_strbuf_append(sb, s + i, 1);
    }
    tune_strbuf_append(sb, "\"", 1);
}

/* Encodes one text and writes either the JSONL record or the readable form. */
static int show(tune_tokenizer *tok, const char *text, size_t len, int special, int jsonl)
{
    tune_ids ids = {0};
    tune_error err;
    char *dec = NULL;
    size_t dl = 0;
    if (tune_tokenizer_encode(tok, text, len, special, &ids, &err) != TUNE_OK ||
        tune_tokenizer_decode(tok, ids.ids, ids.n, 0, &dec, &dl, &err) != TUNE_OK) {
        tune_error_print(stderr, &err);
        tune_ids_free(&ids);
        return err.code;
    }
    tune_strbuf sb = {0};
    tune_strbuf_puts(&sb, jsonl ? "{\"ids\": [" : "ids:     [");
    for (size_t i = 0; i < ids.n; i++) tune_strbuf_printf(&sb, "%s%d", i ? ", " : "", ids.ids[i]);
    tune_strbuf_puts(&sb, jsonl ? "], \"tokens\": [" : "]\ntokens:  [");
    for (size_t i = 0; i < ids.n; i++) {
        const char *t = tune_tokenizer_id_to_token(tok, ids.ids[i]);
        if (i) tune_strbuf_puts(&sb, ", ");
        json_str(&sb, t ? t : "", t ? strlen(t) : 0);
    }
    tune_strbuf_puts(&sb, jsonl ? "], \"decoded\": " : "]\ndecoded: ");
    json_str(&sb, dec, dl);
    tune_strbuf_puts(&sb, jsonl ? "}\n" : "\n");
    if (!jsonl) tune_strbuf_printf(&sb, "count:   %zu tokens, %zu bytes\n", ids.n, len);
    int rc = 0;
    if (sb.oom) {
        fprintf(stderr, "tune tokenize: out of memory\n");
        rc = 1;
    } else
        fwrite(sb.data, 1, sb.len, stdout);
    tune_strbuf_free(&sb);
    free(dec);
    tune_ids_free(&ids);
    return rc;
}

static int run_jsonl(tune_tokenizer *tok, int special)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    long lineno = 0;
    int rc = 0;
    while (!rc && (n = getline(&line, &cap, stdin)) >= 0) {
        lineno++;
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) n--;
        if (!n) continue;
        char *text;
        size_t len;
        tune_error err;
        if (tune_json_string_decode(line, (size_t)n, &text, &len, &err) != TUNE_OK) {
            fprintf(stderr, "tune tokenize: stdin line %ld: %s\n", lineno, err.message);
            rc = 2;
            break;
        }
        rc = show(tok, text, len, special, 1);
        free(text);
    }
    free(line);
    return rc;
}

int tune_cli_tokenize(int argc, char **argv)
{
    if (tune_cli_wants_help(argc, argv)) {
        fputs(USAGE, stdout);
        return 0;
    }
    const char *model = NULL, *text = NULL;
    int special = 1, jsonl = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--no-special")) special = 0;
        else if (!strcmp(argv[i], "--jsonl")) jsonl = 1;
        else if (argv[i][0] == '-' && argv[i][1] == '-') return tune_cli_usage_error("tokenize", "unknown option '%s'", argv[i]);
        else if (!model) model = argv[i];
        else if (!text) text = argv[i];
        else return tune_cli_usage_error("tokenize", "too many arguments (quote the text)");
    }
    if (!model) return tune_cli_usage_error("tokenize", "no MODEL given (tune tokenize --help)");
    if (!text && !jsonl) return tune_cli_usage_error("tokenize", "no text given (or use --jsonl to read stdin)");
    if (text && jsonl) return tune_cli_usage_error("tokenize", "give either a text or --jsonl, not both");
    tune_tokenizer *tok;
    tune_error err;
    if (tune_tokenizer_load(model, &tok, &err) != TUNE_OK) {
        tune_error_print(stderr, &err);
        return err.code;
    }
    int rc = jsonl ? run_jsonl(tok, special) : show(tok, text, strlen(text), special, 0);
    tune_tokenizer_free(tok);
    return rc;
}
