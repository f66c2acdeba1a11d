/* Post-processors (which special tokens wrap an encoding) and decoders
 * (token strings back to text), as `tokenizers` defines them. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* ======================= post-processors ======================= */

/* Every supported post-processor reduces, for a single sequence, to ids
 * before and ids after the sequence (ByteLevel only trims offsets). */
struct tk_postproc {
    int32_t *before, *after; // (n_before), (n_after)
    size_t n_before, n_after;
};

void tk_postproc_free(tk_postproc *p)
{
    if (!p) return;
    free(p->before);
    free(p->after);
    free(p);
}

static int list_add(int32_t **v, size_t *n, int32_t id)
{
    int32_t *g = realloc(*v, (*n + 1) * sizeof *g);
    if (!g) return -1;
    g[(*n)++] = id;
    *v = g;
    return 0;
}

/* [token, id] pair of RobertaProcessing / BertProcessing. */
static tune_status pair_id(const cJSON *j, const char *key, int32_t *id, const char *file, tune_error *err)
{
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(j, key);
    const cJSON *v = cJSON_GetArrayItem(p, 1);
    if (!cJSON_IsArray(p) || !cJSON_IsNumber(v) || v->valuedouble < 0)
        return tune_fail_input(err, file, "post_processor: \"%s\" must be [token, id]", key);
    *id = (int32_t)v->valuedouble;
    return TUNE_OK;
}

static tune_status postproc_into(const cJSON *j, tk_postproc *p, const char *file, tune_error *err)
{
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "type");
    const char *type = cJSON_IsString(t) ? t->valuestring : "";
    if (!strcmp(type, "ByteLevel")) return TUNE_OK;
    if (!strcmp(type, "Sequence")) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(j, "processors");
        for (const cJSON *e = cJSON_IsArray(list) ? list->child : NULL; e; e = e->next) {
            tune_status st = postproc_into(e, p, file, err);
            if (st != TUNE_OK) return st;
        }
        return TUNE_OK;
    }
    if (!strcmp(type, "RobertaProcessing") || !strcmp(type, "BertProcessing")) {
        int32_t cls, sep;
        tune_status st = pair_id(j, "cls", &cls, file, err);
        if (st == TUNE_OK) st = pair_id(j, "sep", &sep, file, err);
        if (st != TUNE_OK) return st;
        /* A later processor wraps what the earlier ones produced. */
        int32_t *b = malloc((p->n_before + 1) * sizeof *b);
        if (!b || list_add(&p->after, &p->n_after, sep)) {
            free(b);
            return tune_fail_run(err, file, "out of memory");
        }
        b[0] = cls;
        if (p->n_before) memcpy(b + 1, p->before, p->n_before * sizeof *b);
        free(p->before);
        p->before = b;
        p->n_before++;
        return TUNE_OK;
    }
    if (!strcmp(type, "TemplateProcessing")) {
        const cJSON *single = cJSON_GetObjectItemCaseSensitive(j, "single");
        const cJSON *specials = cJSON_GetObjectItemCaseSensitive(j, "special_tokens");
        if (!cJSON_IsArray(single)) return tune_fail_input(err, file, "TemplateProcessing without a \"single\" list");
        int32_t *before = NULL, *after = NULL;
        size_t nb = 0, na = 0;
        int seen_seq = 0;
        tune_status st = TUNE_OK;
        for (const cJSON *it = single->child; it && st == TUNE_OK; it = it->next) {
            const cJSON *sp = cJSON_GetObjectItemCaseSensitive(it, "SpecialToken");
            const cJSON *sq = cJSON_GetObjectItemCaseSensitive(it, "Sequence");
            if (sq) {
                const cJSON *id = cJSON_GetObjectItemCaseSensitive(sq, "id");
                if (seen_seq || !cJSON_IsString(id) || strcmp(id->valuestring, "A"))
                    st = tune_fail_input(err, file, "TemplateProcessing: \"single\" must hold sequence A once");
                seen_seq = 1;
                continue;
            }
            const cJSON *name = cJSON_GetObjectItemCaseSensitive(sp, "id");
            const cJSON *def = cJSON_IsString(name) ? cJSON_GetObjectItemCaseSensitive(specials, name->valuestring) : NULL;
            const cJSON *ids = cJSON_GetObjectItemCaseSensitive(def, "ids");
            if (!cJSON_IsArray(ids)) {
                st = tune_fail_input(err, file, "TemplateProcessing: special token %s has no \"ids\"",
                                     cJSON_IsString(name) ? name->valuestring : "?");
                break;
            }
            for (const cJSON *v = ids->child; v && st == TUNE_OK; v = v->next) {
                if (!cJSON_IsNumber(v) || v->valuedouble < 0) st = tune_fail_input(err, file, "TemplateProcessing: bad id");
                else if (list_add(seen_seq ? &after : &before, seen_seq ? &na : &nb, (int32_t)v->valuedouble))
                    st = tune_fail_run(err, file, "out of memory");
            }
        }
        if (st == TUNE_OK && !seen_seq) st = tune_fail_input(err, file, "TemplateProcessing: \"single\" lacks $A");
        /* Wrap: new before + old before, old after + new after. */
        for (size_t i = 0; st == TUNE_OK && i < p->n_before; i++)
            if (list_add(&before, &nb, p->before[i])) st = tune_fail_run(err, file, "out of memory");
        if (st == TUNE_OK) {
            int32_t *a = malloc((p->n_after + na + 1) * sizeof *a);
            if (!a) st = tune_fail_run(err, file, "out of memory");
            else {
                if (p->n_after) memcpy(a, p->after, p->n_after * sizeof *a);
                if (na) memcpy(a + p->n_after, after, na * sizeof *a);
                free(p->after);
                p->after = a;
                p->n_after += na;
                free(p->before);
                p->before = before;
                p->n_before = nb;
                before = NULL;
            }
        }
        free(before);
        free(after);
        return st;
    }
    return tune_fail_input(err, file, "post_processor \"%s\" is not supported (tune tokenizes exactly or not at all)", type);
}

tune_status tk_postproc_parse(const cJSON *j, tk_postproc **out, const char *file, tune_error *err)
{
    *out = calloc(1, sizeof **out);
    if (!*out) return tune_fail_run(err, file, "out of memory");
    tune_status st = postproc_into(j, *out, file, err);
    if (st != TUNE_OK) {
        tk_postproc_free(*out);
        *out = NULL;
    }
    return st;
}

int tk_postprocess(const tk_postproc *p, tune_ids *ids)
{
    size_t n = ids->n;
    for (size_t i = 0; i < p->n_before + p->n_after; i++)
        if (tk_ids_push(ids, 0)) return -1;
    if (p->n_before) { /* else ids->ids may be NULL */
        memmove(ids->ids + p->n_before, ids->ids, n * sizeof *ids->ids);
        memcpy(ids->ids, p->before, p->n_before * sizeof *ids->ids);
    }
    if (p->n_after) memcpy(ids->ids + p->n_before + n, p->after, p->n_after * sizeof *ids->ids);
    return 0;
}

/* ======================= decoders ======================= */

enum { D_SEQ, D_BYTELEVEL, D_BYTEFALLBACK, D_FUSE, D_STRIP, D_REPLACE, D_METASPACE };

struct tk_decoder {
    int kind;
    char *content; /* Strip content char, Replace content, Metaspace replacement */
    int32_t ch;
    int start, stop;
    int prepend; /* Metaspace: strip the replacement from the first token */
    tk_pattern pat;
    tk_decoder **kids;
    size_t n_kids;
};

void tk_decoder_free(tk_decoder *d)
{
    if (!d) return;
    for (size_t i = 0; i < d->n_kids; i++) tk_decoder_free(d->kids[i]);
    free(d->kids);
    free(d->content);
    tk_pattern_free(&d->pat);
    free(d);
}

static tune_status one_char(const cJSON *j, const char *key, tk_decoder *d, const char *file, tune_error *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    size_t bad;
    if (!cJSON_IsString(v) || !*v->valuestring ||
        tk_utf8_next((const uint8_t *)v->valuestring, strlen(v->valuestring), &d->ch, &bad) != (int)strlen(v->valuestring))
        return tune_fail_input(err, file, "decoder: \"%s\" must be one character", key);
    d->content = strdup(v->valuestring);
    return d->content ? TUNE_OK : tune_fail_run(err, file, "out of memory");
}

tune_status tk_decoder_parse(const cJSON *j, tk_decoder **out, const char *file, tune_error *err)
{
    *out = NULL;
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "type");
    const char *type = cJSON_IsString(t) ? t->valuestring : "";
    tk_decoder *d = calloc(1, sizeof *d);
    if (!d) return tune_fail_run(err, file, "out of memory");
    tune_status st = TUNE_OK;
    if (!strcmp(type, "Sequence")) {
        d->kind = D_SEQ;
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(j, "decoders");
        int k = cJSON_GetArraySize(list);
        if (!cJSON_IsArray(list)) st = tune_fail_input(err, file, "decoder Sequence without \"decoders\"");
        else if (k && !(d->kids = calloc((size_t)k, sizeof *d->kids))) st = tune_fail_run(err, file, "out of memory");
        for (int i = 0; st == TUNE_OK && i < k; i++) {
            st = tk_decoder_parse(cJSON_GetArrayItem(list, i), &d->kids[i], file, err);
            if (st == TUNE_OK) d->n_kids++;
        }
    } else if (!strcmp(type, "ByteLevel")) d->kind = D_BYTELEVEL;
    else if (!strcmp(type, "ByteFallback")) d->kind = D_BYTEFALLBACK;
    else if (!strcmp(type, "Fuse")) d->kind = D_FUSE;
    else if (!strcmp(type, "Strip")) {
        d->kind = D_STRIP;
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(j, "start"), *b = cJSON_GetObjectItemCaseSensitive(j, "stop");
        d->start = cJSON_IsNumber(a) && a->valuedouble > 0 ? (int)a->valuedouble : 0;
        d->stop = cJSON_IsNumber(b) && b->valuedouble > 0 ? (int)b->valuedouble : 0;
        st = one_char(j, "content", d, file, err);
    } else if (!strcmp(type, "Replace")) {
        d->kind = D_REPLACE;
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(j, "content");
        if (!cJSON_IsString(c)) st = tune_fail_input(err, file, "Replace decoder without \"content\"");
        else if (!(d->content = strdup(c->valuestring))) st = tune_fail_run(err, file, "out of memory");
        else st = tk_pattern_parse(&d->pat, cJSON_GetObjectItemCaseSensitive(j, "pattern"), file, err);
    } else if (!strcmp(type, "Metaspace")) {
        d->kind = D_METASPACE;
        st = one_char(j, "replacement", d, file, err);
        const cJSON *scheme = cJSON_GetObjectItemCaseSensitive(j, "prepend_scheme");
        if (cJSON_IsString(scheme)) d->prepend = strcmp(scheme->valuestring, "never") != 0;
        else d->prepend = !cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(j, "add_prefix_space"));
    } else
        st = tune_fail_input(err, file, "decoder \"%s\" is not supported (tune decodes exactly or not at all)", type);
    if (st != TUNE_OK) {
        tk_decoder_free(d);
        return st;
    }
    *out = d;
    return TUNE_OK;
}

/* A list of owned token strings. */
typedef struct toks {
    char **s;
    size_t *len;
    size_t n, cap;
} toks;

static void toks_free(toks *t)
{
    for (size_t i = 0; i < t->n; i++) free(t->s[i]);
    free(t->s);
    free(t->len);
    memset(t, 0, sizeof *t);
}

static int toks_add(toks *t, const char *s, size_t n)
{
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 32;
        char **a = realloc(t->s, cap * sizeof *a);
        if (!a) return -1;
        t->s = a;
        size_t *b = realloc(t->len, cap * sizeof *b);
        if (!b) return -1;
        t->len = b;
        t->cap = cap;
    }
    char *c = malloc(n + 1);
    if (!c) return -1;
    memcpy(c, s, n);
    c[n] = 0;
    t->s[t->n] = c;
    t->len[t->n++] = n;
    return 0;
}

static int add_sb(toks *t, tune_strbuf *sb)
{
    if (sb->oom) return -1;
    return toks_add(t, sb->data ? sb->data : "", sb->len);
}

/* String::from_utf8_lossy: invalid sequences become U+FFFD. */
static int add_lossy(toks *t, const char *s, size_t n)
{
    size_t len;
    char *c = tk_utf8_sanitize(s, n, &len);
    if (!c) return -1;
    int rc = toks_add(t, c, len);
    free(c);
    return rc;
}

static int is_byte_token(const char *s, size_t n, uint8_t *byte)
{
    if (n != 6 || memcmp(s, "<0x", 3) || s[5] != '>') return 0;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0) return 0;
        v = v * 16 + d;
    }
    *byte = (uint8_t)v;
    return 1;
}

static int flush_bytes(toks *out, tune_strbuf *bytes)
{
    if (!bytes->len) return 0;
    int rc = 0;
    size_t len;
    char *c = tk_utf8_sanitize(bytes->data, bytes->len, &len);
    if (!c) return -1;
    if (len == bytes->len && !memcmp(c, bytes->data, len)) rc = toks_add(out, c, len);
    else /* not UTF-8: one U+FFFD per byte */
        for (size_t i = 0; i < bytes->len && !rc; i++) rc = toks_add(out, "\xEF\xBF\xBD", 3);
    free(c);
    bytes->len = 0;
    return rc;
}

/* Runs one decoder over in, producing out. */
static int decode_step(const tk_decoder *d, toks *in, toks *out)
{
    tune_strbuf sb = {0};
    int rc = 0;
    switch (d->kind) {
    case D_BYTELEVEL: /* per token: bytes when every char maps, else its own bytes; then lossy UTF-8 of the whole */
        for (size_t i = 0; i < in->n && !sb.oom; i++) {
            size_t mark = sb.len;
            const char *s = in->s[i];
            size_t n = in->len[i];
            int ok = 1;
            for (size_t k = 0; k < n && ok;) {
                int32_t cp;
                size_t bad;
                int w = tk_utf8_next((const uint8_t *)s + k, n - k, &cp, &bad);
                int b = w ? tk_cp_to_byte(cp) : -1;
                if (b < 0) ok = 0;
                else {
                    char c = (char)b;
                    tune_strbuf_append(&sb, &c, 1);
                    k += (size_t)w;
                }
            }
            if (!ok) {
                sb.len = mark;
                tune_strbuf_append(&sb, s, n);
            }
        }
        rc = sb.oom ? -1 : add_lossy(out, sb.data ? sb.data : "", sb.len);
        break;
    case D_BYTEFALLBACK:
        for (size_t i = 0; i < in->n && !rc; i++) {
            uint8_t byte;
            if (is_byte_token(in->s[i], in->len[i], &byte)) {
                tune_strbuf_append(&sb, (const char *)&byte, 1);
                rc = sb.oom ? -1 : 0;
                continue;
            }
            rc = flush_bytes(out, &sb);
            if (!rc) rc = toks_add(out, in->s[i], in->len[i]);
        }
        if (!rc) rc = flush_bytes(out, &sb);
        break;
    case D_FUSE:
        for (size_t i = 0; i < in->n; i++) tune_strbuf_append(&sb, in->s[i], in->len[i]);
        rc = add_sb(out, &sb);
        break;
    case D_STRIP:
        for (size_t i = 0; i < in->n && !rc; i++) {
            const char *s = in->s[i];
            size_t n = in->len[i], cl = strlen(d->content), a = 0, b = n;
            for (int k = 0; k < d->start && b - a >= cl && !memcmp(s + a, d->content, cl); k++) a += cl;
            for (int k = 0; k < d->stop && b - a >= cl && !memcmp(s + b - cl, d->content, cl); k++) b -= cl;
            rc = toks_add(out, s + a, b - a);
        }
        break;
    case D_REPLACE:
        for (size_t i = 0; i < in->n && !rc; i++) {
            sb.len = 0;
            size_t pos = 0, done = 0, ms, me;
            int f;
            const char *s = in->s[i];
            size_t n = in->len[i];
            while ((f = tk_pattern_find((tk_pattern *)&d->pat, s, n, pos, &ms, &me)) == 1 && me > ms) {
                tune_strbuf_append(&sb, s + done, ms - done);
                tune_strbuf_puts(&sb, d->content);
                done = pos = me;
            }
            if (f < 0) rc = -1;
            tune_strbuf_append(&sb, s + done, n - done);
            if (!rc) rc = add_sb(out, &sb);
        }
        break;
    case D_METASPACE:
        for (size_t i = 0; i < in->n && !rc; i++) {
            sb.len = 0;
            const char *s = in->s[i];
            size_t n = in->len[i], cl = strlen(d->content);
            for (size_t k = 0; k < n;) {
                if (n - k >= cl && !memcmp(s + k, d->content, cl)) {
                    if (!(i == 0 && d->prepend)) tune_strbuf_append(&sb, " ", 1);
                    k += cl;
                } else
                    tune_strbuf_append(&sb, s + k++, 1);
            }
            rc = add_sb(out, &sb);
        }
        break;
    default: rc = -1;
    }
    tune_strbuf_free(&sb);
    return rc;
}

/* Runs d (a Sequence in order) over *a, leaving the result in *a. */
static int run_decoder(const tk_decoder *d, toks *a, toks *b)
{
    if (d->kind == D_SEQ) {
        for (size_t k = 0; k < d->n_kids; k++)
            if (run_decoder(d->kids[k], a, b)) return -1;
        return 0;
    }
    int rc = decode_step(d, a, b);
    toks t = *a;
    *a = *b;
    *b = t;
    toks_free(b);
    return rc;
}

int tk_decode_tokens(const tk_decoder *d, const char *const *tokens, size_t n, tune_strbuf *out)
{
    toks a = {0}, b = {0};
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++) rc = toks_add(&a, tokens[i], strlen(tokens[i]));
    if (!d) { /* no decoder: tokens joined by spaces */
        for (size_t i = 0; i < a.n; i++) {
            if (i) tune_strbuf_append(out, " ", 1);
            tune_strbuf_append(out, a.s[i], a.len[i]);
        }
        toks_free(&a);
        return rc || out->oom ? -1 : 0;
    }
    if (!rc) rc = run_decoder(d, &a, &b);
    for (size_t i = 0; i < a.n && !rc; i++) tune_strbuf_append(out, a.s[i], a.len[i]);
    toks_free(&a);
    toks_free(&b);
    return rc || out->oom ? -1 : 0;
}
