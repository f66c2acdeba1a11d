/* Excel task accuracy: does an answer name the worksheet functions its
 * reference calls, and write the formulas the reference writes? */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "tune/generate.h"

static int name_char(char c) { return isalnum((unsigned char)c) || c == '.' || c == '_'; }

/* Whether name (n bytes) occurs in text as a whole word, in any case. */
static int names(const char *text, const char *name, size_t n)
{
    for (const char *p = text; *p; p++)
        if (!strncasecmp(p, name, n) && (p == text || !name_char(p[-1])) && !name_char(p[n])) return 1;
    return 0;
}

/* The length of the function name at s: upper-case letters, digits and dots
 * starting with a letter, followed by "(" and not preceded by a name character. */
static size_t function_at(const char *text, const char *s)
{
    if (!isupper((unsigned char)*s) || (s > text && name_char(s[-1]))) return 0;
    size_t n = 1;
    while (isupper((unsigned char)s[n]) || isdigit((unsigned char)s[n]) || s[n] == '.') n++;
    return s[n] == '(' && n >= 2 ? n : 0;
}

/* The formula at s ("=" then a call or reference), normalised (spaces
 * out, upper case outside strings) into out with a NUL; its length in the
 * text, or 0 when none starts here. A formula ends at prose (a non-ASCII
 * character, a backtick, a line end), or at a space once its parentheses
 * are closed; sentence punctuation after it is not part of it. */
static size_t formula_at(const char *text, const char *s, tune_strbuf *out)
{
    if (*s != '=' || (s > text && !strchr(" \t\n`'\"(:", s[-1])) ||
        !(isalpha((unsigned char)s[1]) || s[1] == '$' || s[1] == '('))
        return 0;
    int depth = 0, quoted = 0;
    size_t end = 0;
    for (size_t n = 0; s[n]; n++) {
        const char c = s[n];
        if (quoted) quoted = c != '"';
        else if (c == '"') quoted = 1;
        else if (c == '(') depth++;
        else if (c == ')' && --depth < 0) break;
        else if ((unsigned char)c >= 0x80 || c == '\n' || c == '`' || (depth == 0 && (c == ' ' || c == '\t'))) break;
        if (!quoted && depth == 0 && !strchr(".,;", c)) end = n + 1;
    }
    if (end <= 1 || depth > 0 || quoted) return 0;
    out->len = 0;
    quoted = 0;
    for (size_t i = 0; i < end; i++) {
        const char c = s[i], u = (char)toupper((unsigned char)c);
        if (c == '"') quoted = !quoted;
        if (quoted || (c != ' ' && c != '\t')) tune_strbuf_append(out, quoted ? &c : &u, 1);
    }
    tune_strbuf_append(out, "", 1);
    return end;
}

/* Every normalised formula of text, each ending in NUL, one after another in all. */
static int formulas(const char *text, tune_strbuf *all)
{
    int count = 0;
    tune_strbuf one = {0};
    for (const char *p = text; *p; p++) {
        const size_t n = formula_at(text, p, &one);
        if (!n) continue;
        tune_strbuf_append(all, one.data, one.len);
        count++;
        p += n - 1;
    }
    if (one.oom) all->oom = 1;
    tune_strbuf_free(&one);
    return count;
}

tune_status tune_excel_add(tune_excel_stats *acc, const char *hyp, const char *ref, tune_error *err)
{
    int calls = 0, named = 1;
    for (const char *p = ref; *p; p++) {
        const size_t n = function_at(ref, p);
        if (!n) continue;
        calls = 1;
        named &= names(hyp, p, n);
        p += n - 1;
    }
    if (calls) {
        acc->fn_answers++;
        acc->fn_named += named;
    }
    tune_strbuf rf = {0}, hf = {0};
    const int nr = formulas(ref, &rf), nh = formulas(hyp, &hf);
    tune_status st = rf.oom || hf.oom ? tune_fail_run(err, "Excel accuracy", "out of memory") : TUNE_OK;
    for (int i = 0, at = 0; st == TUNE_OK && i < nr; i++) {
        const char *want = rf.data + at;
        int found = 0;
        for (int j = 0, bt = 0; j < nh && !found; j++) {
            found = !strcmp(want, hf.data + bt);
            bt += (int)strlen(hf.data + bt) + 1;
        }
        acc->formulas++;
        acc->formulas_matched += found;
        at += (int)strlen(want) + 1;
    }
    tune_strbuf_free(&rf);
    tune_strbuf_free(&hf);
    return st;
}
