/* tune tokens MODEL [--out DIR]: every added / special token with its id,
 * flags, role and whether the chat template uses it; a table on stdout and
 * special_tokens_analysis.csv. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tune/cli.h"
#include "tune/tokenizer.h"
#include "tune/util.h"

static const char USAGE[] =
    "usage: tune tokens MODEL [--out DIR]\n\n"
    "Lists every added and special token of MODEL (a model folder, a\n"
    "tokenizer.json or a GGUF file): id, text, flags (special, normalized,\n"
    "lstrip, rstrip, single_word), role (bos, eos, pad, unk, chat marker) and\n"
    "whether the chat template uses it. Writes special_tokens_analysis.csv\n"
    "into DIR (default: the current directory).\n";

typedef struct row {
    int32_t id;
    const char *text;
    const tune_added_token *added; /* NULL for a role token that is not an added token */
} row;

/* Whether the template names the token, literally or through its role variable. */
static int in_template(const char *tmpl, const char *text, const char *roles)
{
    if (!tmpl) return 0;
    if (*text && strstr(tmpl, text)) return 1;
    if (strstr(roles, "bos") && strstr(tmpl, "bos_token")) return 1;
    if (strstr(roles, "eos") && strstr(tmpl, "eos_token")) return 1;
    return 0;
}

static void role_of(const tune_tokenizer *tok, const row *r, const char *tmpl, char *out, size_t n)
{
    const tune_special_ids *s = tune_tokenizer_specials(tok);
    const char *names[] = {"bos", "eos", "pad", "unk"};
    int32_t ids[] = {s->bos, s->eos, s->pad, s->unk};
    out[0] = 0;
    for (int i = 0; i < 4; i++)
        if (ids[i] == r->id) snprintf(out + strlen(out), n - strlen(out), "%s%s", *out ? "+" : "", names[i]);
    if (!*out && tmpl && *r->text && strstr(tmpl, r->text)) snprintf(out, n, "chat marker");
    if (!*out) snprintf(out, n, "%s", r->added && r->added->special ? "special" : "added");
}

/* The token text with control characters shown as escapes, for the table. */
static void printable(const char *s, char *out, size_t n)
{
    size_t k = 0;
    for (; *s && k + 5 < n; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '\n') k += (size_t)snprintf(out + k, n - k, "\\n");
        else if (c < 0x20) k += (size_t)snprintf(out + k, n - k, "\\x%02x", c);
        else out[k++] = (char)c;
    }
    out[k] = 0;
}

int tune_cli_tokens(int argc, char **argv)
{
    if (tune_cli_wants_help(argc, argv)) {
        fputs(USAGE, stdout);
        return 0;
    }
    const char *model = NULL, *dir = ".";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--out")) {
            if (++i >= argc) return tune_cli_usage_error("tokens", "--out needs a folder");
            dir = argv[i];
        } else if (argv[i][0] == '-') return tune_cli_usage_error("tokens", "unknown option '%s'", argv[i]);
        else if (!model) model = argv[i];
        else return tune_cli_usage_error("tokens", "unexpected argument '%s'", argv[i]);
    }
    if (!model) return tune_cli_usage_error("tokens", "no MODEL given (tune tokens --help)");
    tune_tokenizer *tok;
    tune_error err;
    if (tune_tokenizer_load(model, &tok, &err) != TUNE_OK) {
        tune_error_print(stderr, &err);
        return err.code;
    }
    const char *tmpl = tune_tokenizer_chat_template(tok);
    const tune_special_ids *sp = tune_tokenizer_specials(tok);
    size_t na = tune_tokenizer_n_added(tok);
    row *rows = calloc(na + 4, sizeof *rows);
    if (!rows) {
        tune_tokenizer_free(tok);
        fprintf(stderr, "tune tokens: out of memory\n");
        return 1;
    }
    size_t nr = 0;
    for (size_t i = 0; i < na; i++) {
        const tune_added_token *a = tune_tokenizer_added(tok, i);
        rows[nr++] = (row){a->id, a->content, a};
    }
    int32_t role_ids[] = {sp->bos, sp->eos, sp->pad, sp->unk};
    for (int k = 0; k < 4; k++) { /* role tokens that live only in the vocabulary */
        int32_t id = role_ids[k];
        const char *t = id >= 0 ? tune_tokenizer_id_to_token(tok, id) : NULL;
        int seen = 0;
        for (size_t i = 0; i < nr; i++) seen |= rows[i].id == id;
        if (t && !seen) rows[nr++] = (row){id, t, NULL};
    }
    tune_strbuf csv = {0};
    tune_strbuf_puts(&csv, "id,token,special,normalized,lstrip,rstrip,single_word,role,in_chat_template\n");
    printf("%8s  %-32s %-7s %-5s %-6s %-6s %-6s %-16s %s\n", "id", "token", "special", "norm", "lstrip", "rstrip",
           "single", "role", "in template");
    for (size_t i = 0; i < nr; i++) {
        const row *r = &rows[i];
        char role[64], shown[256];
        role_of(tok, r, tmpl, role, sizeof role);
        int used = in_template(tmpl, r->text, role);
        const tune_added_token *a = r->added;
        const char *yn[] = {"no", "yes"};
        printable(r->text, shown, sizeof shown);
        printf("%8d  %-32s %-7s %-5s %-6s %-6s %-6s %-16s %s\n", r->id, shown, a ? yn[a->special] : "-",
               a ? yn[a->normalized] : "-", a ? yn[a->lstrip] : "-", a ? yn[a->rstrip] : "-",
               a ? yn[a->single_word] : "-", role, tmpl ? yn[used] : "(no template)");
        tune_strbuf_printf(&csv, "%d,", r->id);
        tune_strbuf_csv_field(&csv, r->text, strlen(r->text));
        tune_strbuf_printf(&csv, ",%s,%s,%s,%s,%s,%s,%s\n", a ? yn[a->special] : "", a ? yn[a->normalized] : "",
                           a ? yn[a->lstrip] : "", a ? yn[a->rstrip] : "", a ? yn[a->single_word] : "", role,
                           tmpl ? yn[used] : "");
    }
    printf("\n%zu tokens; vocabulary size %d; chat template: %s\n", nr, tune_tokenizer_vocab_size(tok),
           tmpl ? "yes" : "none");
    free(rows);
    tune_tokenizer_free(tok);
    int rc = 0;
    char *path = NULL;
    if (csv.oom || tune_mkdir_p(dir, &err) != TUNE_OK ||
        asprintf(&path, "%s/special_tokens_analysis.csv", dir) < 0) {
        if (csv.oom) tune_fail_run(&err, NULL, "out of memory");
        tune_error_print(stderr, &err);
        rc = 1;
        path = NULL;
    } else if (tune_write_file_atomic(path, csv.data, csv.len, &err) != TUNE_OK) {
        tune_error_print(stderr, &err);
        rc = 1;
    } else
        printf("wrote %s\n", path);
    free(path);
    tune_strbuf_free(&csv);
    return rc;
}
