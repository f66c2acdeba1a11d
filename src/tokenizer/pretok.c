/* Normalizers and pre-tokenizers, as the `tokenizers` library runs them.
 * Pieces carry no offsets: only the text and whether it starts the input. */
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "internal.h"

/* The GPT-2 regex ByteLevel applies when use_regex is true. */
static const char BYTELEVEL_RE[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
/* Whitespace pre-tokenizer: \w+|[^\w\s]+ with Rust's Unicode \w. */
#define WORD_CLASS "\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\p{Join_Control}"
static const char WHITESPACE_RE[] = "[" WORD_CLASS "]+|[^" WORD_CLASS "\\s]+";

int32_t tk_byte_to_cp(uint8_t b)
{
    if ((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE) return b;
    if (b <= 0x20) return 256 + b;
    if (b <= 0xA0) return 256 + 33 + (b - 0x7F);
    return 256 + 67; /* 0xAD */
}

int tk_cp_to_byte(int32_t cp)
{
    if ((cp >= 0x21 && cp <= 0x7E) || (cp >= 0xA1 && cp <= 0xAC) || (cp >= 0xAE && cp <= 0xFF)) return cp;
    if (cp >= 256 && cp <= 256 + 32) return cp - 256;
    if (cp >= 256 + 33 && cp <= 256 + 66) return cp - 256 - 33 + 0x7F;
    if (cp == 256 + 67) return 0xAD;
    return -1;
}

int tk_is_space(int32_t c)
{
    return (c >= 9 && c <= 13) || c == 32 || c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) ||
           c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

/* Rust's char::is_numeric: general categories Nd, Nl, No. */
static int is_numeric(int32_t c)
{
    if (c < 128) return c >= '0' && c <= '9';
    utf8proc_category_t k = utf8proc_category(c);
    return k == UTF8PROC_CATEGORY_ND || k == UTF8PROC_CATEGORY_NL || k == UTF8PROC_CATEGORY_NO;
}

/* Decodes the (already valid) code point at s; returns its length. */
static int cp_at(const char *s, size_t n, int32_t *cp)
{
    size_t bad;
    int k = tk_utf8_next((const uint8_t *)s, n, cp, &bad);
    if (!k) { /* cannot happen on sanitized text; step one byte */
        *cp = 0xFFFD;
        return 1;
    }
    return k;
}

/* ======================= normalizers ======================= */

enum { N_SEQ, N_PREPEND, N_REPLACE, N_NFC, N_NFD, N_NFKC, N_NFKD, N_LOWER, N_STRIP_ACCENTS, N_STRIP };

struct tk_normalizer {
    int kind;
    char *str; /* Prepend text, Replace content */
    tk_pattern pat;
    int left, right; /* Strip */
    tk_normalizer **kids;
    size_t n_kids;
};

void tk_normalizer_free(tk_normalizer *n)
{
    if (!n) return;
    for (size_t i = 0; i < n->n_kids; i++) tk_normalizer_free(n->kids[i]);
    free(n->kids);
    free(n->str);
    tk_pattern_free(&n->pat);
    free(n);
}

static const char *jstr(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static int jbool(const cJSON *o, const char *key, int dflt)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsBool(v) ? cJSON_IsTrue(v) : dflt;
}

tune_status tk_normalizer_parse(const cJSON *j, tk_normalizer **out, const char *file, tune_error *err)
{
    *out = NULL;
    const char *type = jstr(j, "type");
    if (!type) return tune_fail_input(err, file, "normalizer without a \"type\"");
    tk_normalizer *n = calloc(1, sizeof *n);
    if (!n) return tune_fail_run(err, file, "out of memory");
    tune_status st = TUNE_OK;
    if (!strcmp(type, "Sequence")) {
        n->kind = N_SEQ;
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(j, "normalizers");
        int k = cJSON_GetArraySize(list);
        if (!cJSON_IsArray(list)) st = tune_fail_input(err, file, "normalizer Sequence without \"normalizers\"");
        else if (k && !(n->kids = calloc((size_t)k, sizeof *n->kids))) st = tune_fail_run(err, file, "out of memory");
        for (int i = 0; st == TUNE_OK && i < k; i++) {
            st = tk_normalizer_parse(cJSON_GetArrayItem(list, i), &n->kids[i], file, err);
            if (st == TUNE_OK) n->n_kids++;
        }
    } else if (!strcmp(type, "Prepend")) {
        n->kind = N_PREPEND;
        const char *p = jstr(j, "prepend");
        if (!p) st = tune_fail_input(err, file, "Prepend normalizer without \"prepend\"");
        else if (!(n->str = strdup(p))) st = tune_fail_run(err, file, "out of memory");
    } else if (!strcmp(type, "Replace")) {
        n->kind = N_REPLACE;
        const char *c = jstr(j, "content");
        if (!c) st = tune_fail_input(err, file, "Replace normalizer without \"content\"");
        else if (!(n->str = strdup(c))) st = tune_fail_run(err, file, "out of memory");
        else st = tk_pattern_parse(&n->pat, cJSON_GetObjectItemCaseSensitive(j, "pattern"), file, err);
    } else if (!strcmp(type, "NFC")) n->kind = N_NFC;
    else if (!strcmp(type, "NFD")) n->kind = N_NFD;
    else if (!strcmp(type, "NFKC")) n->kind = N_NFKC;
    else if (!strcmp(type, "NFKD")) n->kind = N_NFKD;
    else if (!strcmp(type, "Lowercase")) n->kind = N_LOWER;
    else if (!strcmp(type, "StripAccents")) n->kind = N_STRIP_ACCENTS;
    else if (!strcmp(type, "Strip")) {
        n->kind = N_STRIP;
        n->left = jbool(j, "strip_left", 1);
        n->right = jbool(j, "strip_right", 1);
    } else
        st = tune_fail_input(err, file, "normalizer \"%s\" is not supported (tune tokenizes exactly or not at all)", type);
    if (st != TUNE_OK) {
        tk_normalizer_free(n);
        return st;
    }
    *out = n;
    return TUNE_OK;
}

/* HF's Lowercase: Rust's char::to_lowercase per character (no final-sigma
 * context); U+0130 is the one character whose lowercase is two. */
static int lowercase(const char *s, size_t n, tune_strbuf *out)
{
    char u[4];
    for (size_t i = 0; i < n;) {
        int32_t c;
        i += (size_t)cp_at(s + i, n - i, &c);
        if (c == 0x130) tune_strbuf_append(out, "i\xCC\x87", 3);
        else tune_strbuf_append(out, u, (size_t)tk_utf8_encode(utf8proc_tolower(c), u));
    }
    return out->oom ? -1 : 0;
}

static int unicode_form(const char *s, size_t n, int options, tune_strbuf *out)
{
    if (!n) return 0;
    utf8proc_uint8_t *dst = NULL;
    utf8proc_ssize_t r = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &dst, options);
    if (r < 0) return -1;
    tune_strbuf_append(out, (const char *)dst, (size_t)r);
    free(dst);
    return out->oom ? -1 : 0;
}

static int replace(tk_pattern *pat, const char *with, const char *s, size_t n, tune_strbuf *out)
{
    size_t pos = 0, done = 0, ms, me;
    size_t wl = strlen(with);
    int f;
    while ((f = tk_pattern_find(pat, s, n, pos, &ms, &me)) == 1) {
        tune_strbuf_append(out, s + done, ms - done);
        tune_strbuf_append(out, with, wl);
        done = me;
        if (me == ms) { /* empty match: step over one character */
            if (me >= n) break;
            int32_t cp;
            size_t k = (size_t)cp_at(s + me, n - me, &cp);
            tune_strbuf_append(out, s + me, k);
            done = me + k;
            pos = me + k;
        } else
            pos = me;
    }
    if (f < 0) return -1;
    if (done < n) tune_strbuf_append(out, s + done, n - done);
    return out->oom ? -1 : 0;
}

int tk_normalize(const tk_normalizer *nm, const char *s, size_t n, tune_strbuf *out)
{
    switch (nm->kind) {
    case N_SEQ: {
        tune_strbuf a = {0}, b = {0};
        tune_strbuf_append(&a, s, n);
        int rc = a.oom ? -1 : 0;
        for (size_t i = 0; !rc && i < nm->n_kids; i++) {
            b.len = 0;
            rc = tk_normalize(nm->kids[i], a.data ? a.data : "", a.len, &b);
            tune_strbuf t = a;
            a = b;
            b = t;
        }
        if (!rc) tune_strbuf_append(out, a.data ? a.data : "", a.len);
        tune_strbuf_free(&a);
        tune_strbuf_free(&b);
        return rc || out->oom ? -1 : 0;
    }
    case N_PREPEND:
        if (n) tune_strbuf_puts(out, nm->str);
        tune_strbuf_append(out, s, n);
        return out->oom ? -1 : 0;
    case N_REPLACE: return replace((tk_pattern *)&nm->pat, nm->str, s, n, out);
    case N_NFC: return unicode_form(s, n, UTF8PROC_STABLE | UTF8PROC_COMPOSE, out);
    case N_NFD: return unicode_form(s, n, UTF8PROC_STABLE | UTF8PROC_DECOMPOSE, out);
    case N_NFKC: return unicode_form(s, n, UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT, out);
    case N_NFKD: return unicode_form(s, n, UTF8PROC_STABLE | UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT, out);
    case N_LOWER: return lowercase(s, n, out);
    case N_STRIP_ACCENTS:
    case N_STRIP: {
        size_t a = 0, b = n;
        if (nm->kind == N_STRIP) {
            int32_t cp;
            while (nm->left && a < b) {
                int k = cp_at(s + a, b - a, &cp);
                if (!tk_is_space(cp)) break;
                a += (size_t)k;
            }
            while (nm->right && b > a) {
                size_t st = b - 1;
                while (st > a && ((uint8_t)s[st] & 0xC0) == 0x80) st--;
                cp_at(s + st, b - st, &cp);
                if (!tk_is_space(cp)) break;
                b = st;
            }
            tune_strbuf_append(out, s + a, b - a);
            return out->oom ? -1 : 0;
        }
        for (size_t i = 0; i < n;) { /* StripAccents: drop combining marks */
            int32_t cp;
            int k = cp_at(s + i, n - i, &cp);
            utf8proc_category_t c = utf8proc_category(cp);
            if (c != UTF8PROC_CATEGORY_MN && c != UTF8PROC_CATEGORY_MC && c != UTF8PROC_CATEGORY_ME)
                tune_strbuf_append(out, s + i, (size_t)k);
            i += (size_t)k;
        }
        return out->oom ? -1 : 0;
    }
    }
    return -1;
}

/* ======================= pre-tokenizers ======================= */

enum { P_SEQ, P_SPLIT, P_BYTELEVEL, P_DIGITS, P_METASPACE, P_WHITESPACE, P_WSSPLIT };
enum { B_REMOVED, B_ISOLATED, B_PREVIOUS, B_NEXT, B_CONTIGUOUS };
enum { PREPEND_ALWAYS, PREPEND_FIRST, PREPEND_NEVER };

struct tk_pretok {
    int kind;
    tk_pattern pat; /* Split, Whitespace, ByteLevel with regex */
    int behavior, invert;
    int add_prefix_space, use_regex; /* ByteLevel */
    int individual;                  /* Digits */
    int32_t replacement;             /* Metaspace */
    char rep[4];
    int rep_len, prepend, split;
    tk_pretok **kids;
    size_t n_kids;
};

void tk_pretok_free(tk_pretok *p)
{
    if (!p) return;
    for (size_t i = 0; i < p->n_kids; i++) tk_pretok_free(p->kids[i]);
    free(p->kids);
    tk_pattern_free(&p->pat);
    free(p);
}

static int parse_behavior(const char *s)
{
    static const char *names[] = {"Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous"};
    for (int i = 0; s && i < 5; i++)
        if (!strcmp(s, names[i])) return i;
    return -1;
}

tune_status tk_pretok_parse(const cJSON *j, tk_pretok **out, const char *file, tune_error *err)
{
    *out = NULL;
    const char *type = jstr(j, "type");
    if (!type) return tune_fail_input(err, file, "pre_tokenizer without a \"type\"");
    tk_pretok *p = calloc(1, sizeof *p);
    if (!p) return tune_fail_run(err, file, "out of memory");
    tune_status st = TUNE_OK;
    if (!strcmp(type, "Sequence")) {
        p->kind = P_SEQ;
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(j, "pretokenizers");
        int k = cJSON_GetArraySize(list);
        if (!cJSON_IsArray(list)) st = tune_fail_input(err, file, "pre_tokenizer Sequence without \"pretokenizers\"");
        else if (k && !(p->kids = calloc((size_t)k, sizeof *p->kids))) st = tune_fail_run(err, file, "out of memory");
        for (int i = 0; st == TUNE_OK && i < k; i++) {
            st = tk_pretok_parse(cJSON_GetArrayItem(list, i), &p->kids[i], file, err);
            if (st == TUNE_OK) p->n_kids++;
        }
    } else if (!strcmp(type, "Split")) {
        p->kind = P_SPLIT;
        p->behavior = parse_behavior(jstr(j, "behavior"));
        p->invert = jbool(j, "invert", 0);
        if (p->behavior < 0) st = tune_fail_input(err, file, "Split pre_tokenizer: unknown \"behavior\"");
        else st = tk_pattern_parse(&p->pat, cJSON_GetObjectItemCaseSensitive(j, "pattern"), file, err);
    } else if (!strcmp(type, "ByteLevel")) {
        p->kind = P_BYTELEVEL;
        p->add_prefix_space = jbool(j, "add_prefix_space", 1);
        p->use_regex = jbool(j, "use_regex", 1);
        if (p->use_regex) st = tk_pattern_regex(&p->pat, BYTELEVEL_RE, file, err);
    } else if (!strcmp(type, "Digits")) {
        p->kind = P_DIGITS;
        p->individual = jbool(j, "individual_digits", 0);
    } else if (!strcmp(type, "Metaspace")) {
        p->kind = P_METASPACE;
        const char *r = jstr(j, "replacement");
        int32_t cp;
        size_t bad;
        if (!r || !*r || tk_utf8_next((const uint8_t *)r, strlen(r), &cp, &bad) != (int)strlen(r)) {
            st = tune_fail_input(err, file, "Metaspace \"replacement\" must be one character");
        } else {
            p->replacement = cp;
            p->rep_len = tk_utf8_encode(cp, p->rep);
            const char *scheme = jstr(j, "prepend_scheme");
            if (!scheme) p->prepend = jbool(j, "add_prefix_space", 1) ? PREPEND_ALWAYS : PREPEND_NEVER;
            else if (!strcmp(scheme, "always")) p->prepend = PREPEND_ALWAYS;
            else if (!strcmp(scheme, "first")) p->prepend = PREPEND_FIRST;
            else if (!strcmp(scheme, "never")) p->prepend = PREPEND_NEVER;
            else st = tune_fail_input(err, file, "Metaspace: unknown prepend_scheme \"%s\"", scheme);
            p->split = jbool(j, "split", 1);
        }
    } else if (!strcmp(type, "Whitespace")) {
        p->kind = P_WHITESPACE;
        p->behavior = B_REMOVED;
        p->invert = 1;
        st = tk_pattern_regex(&p->pat, WHITESPACE_RE, file, err);
    } else if (!strcmp(type, "WhitespaceSplit")) {
        p->kind = P_WSSPLIT;
    } else
        st = tune_fail_input(err, file, "pre_tokenizer \"%s\" is not supported (tune tokenizes exactly or not at all)",
                             type);
    if (st != TUNE_OK) {
        tk_pretok_free(p);
        return st;
    }
    *out = p;
    return TUNE_OK;
}

typedef struct seg {
    size_t s, e;
    int m;
} seg;

typedef struct segs {
    seg *v;
    size_t n, cap;
} segs;

static int segs_push(segs *g, size_t s, size_t e, int m)
{
    if (g->n == g->cap) {
        size_t cap = g->cap ? g->cap * 2 : 32;
        seg *v = realloc(g->v, cap * sizeof *v);
        if (!v) return -1;
        g->v = v;
        g->cap = cap;
    }
    g->v[g->n++] = (seg){s, e, m};
    return 0;
}

/* Character predicates used as split patterns (each matching char is one match). */
enum { C_NUMERIC, C_SPACE, C_REPLACEMENT };

/* Cuts s into matched / unmatched segments covering it (HF find_matches). */
static int find_segments(tk_pretok *p, int cls, const char *s, size_t n, segs *g)
{
    g->n = 0;
    if (!n) return segs_push(g, 0, 0, 0);
    size_t prev = 0;
    if (p->pat.re || p->pat.literal) {
        size_t pos = 0, ms, me;
        int f;
        while ((f = tk_pattern_find(&p->pat, s, n, pos, &ms, &me)) == 1) {
            if (prev != ms && segs_push(g, prev, ms, 0)) return -1;
            if (segs_push(g, ms, me, 1)) return -1;
            prev = me;
            if (me == ms) {
                if (me >= n) break;
                int32_t cp;
                pos = me + (size_t)cp_at(s + me, n - me, &cp);
            } else
                pos = me;
        }
        if (f < 0) return -1;
    } else {
        for (size_t i = 0; i < n;) {
            int32_t cp;
            size_t k = (size_t)cp_at(s + i, n - i, &cp);
            int hit = cls == C_NUMERIC ? is_numeric(cp) : cls == C_SPACE ? tk_is_space(cp) : cp == p->replacement;
            if (hit) {
                if (prev != i && segs_push(g, prev, i, 0)) return -1;
                if (segs_push(g, i, i + k, 1)) return -1;
                prev = i + k;
            }
            i += k;
        }
    }
    if (prev != n && segs_push(g, prev, n, 0)) return -1;
    return 0;
}

/* Applies a split behaviour to the segments (in place); m = 1 marks removal. */
static void apply_behavior(segs *g, int behavior, int invert)
{
    if (invert)
        for (size_t i = 0; i < g->n; i++) g->v[i].m = !g->v[i].m;
    size_t k = 0;
    int prevm = 0;
    switch (behavior) {
    case B_REMOVED: return; /* matches are dropped by the caller */
    case B_ISOLATED:
        for (size_t i = 0; i < g->n; i++) g->v[i].m = 0;
        return;
    case B_PREVIOUS:
        for (size_t i = 0; i < g->n; i++) {
            seg c = g->v[i];
            if (c.m && !prevm && k) g->v[k - 1].e = c.e;
            else g->v[k++] = (seg){c.s, c.e, 0};
            prevm = c.m;
        }
        break;
    case B_NEXT: /* walk backwards, then the kept segments are reversed */
        for (size_t i = g->n; i-- > 0;) {
            seg c = g->v[i];
            if (c.m && !prevm && k) g->v[g->n - k].s = c.s;
            else g->v[g->n - ++k] = (seg){c.s, c.e, 0};
            prevm = c.m;
        }
        memmove(g->v, g->v + g->n - k, k * sizeof *g->v);
        break;
    case B_CONTIGUOUS:
        for (size_t i = 0; i < g->n; i++) {
            seg c = g->v[i];
            if (c.m == prevm && k) g->v[k - 1].e = c.e;
            else g->v[k++] = (seg){c.s, c.e, 0};
            prevm = c.m;
        }
        break;
    }
    g->n = k;
}

/* Pushes s as a piece; with bytelevel, each byte as its GPT-2 character. */
static int push_piece(tk_pieces *out, const char *s, size_t len, int at_start, int bytelevel)
{
    if (!bytelevel) return tk_pieces_push(out, s, len, at_start);
    size_t off = out->buf.len;
    if (tk_pieces_push(out, "", 0, at_start)) return -1;
    char tmp[512];
    for (size_t i = 0; i < len;) { /* in chunks: s may lie in a buffer other than out's */
        size_t k = 0;
        while (i < len && k + 2 <= sizeof tmp) {
            int32_t cp = tk_byte_to_cp((uint8_t)s[i++]); /* below U+0144: one or two bytes */
            if (cp < 0x80) tmp[k++] = (char)cp;
            else {
                tmp[k++] = (char)(0xC0 | (cp >> 6));
                tmp[k++] = (char)(0x80 | (cp & 0x3F));
            }
        }
        tune_strbuf_append(&out->buf, tmp, k);
    }
    if (out->buf.oom) return -1;
    out->v[out->n - 1].len = out->buf.len - off;
    return 0;
}

/* Splits one piece into out by pattern / class and behaviour. */
static int split_piece(tk_pretok *p, int cls, int behavior, int invert, const char *s, size_t n, int at_start,
                       segs *g, tk_pieces *out, int bytelevel)
{
    if (find_segments(p, cls, s, n, g)) return -1;
    apply_behavior(g, behavior, invert);
    for (size_t i = 0; i < g->n; i++) {
        seg c = g->v[i];
        if (c.m || c.e == c.s) continue;
        if (push_piece(out, s + c.s, c.e - c.s, at_start && c.s == 0, bytelevel)) return -1;
    }
    return 0;
}

static int pretok_one(tk_pretok *p, const char *s, size_t n, int at_start, segs *g, tk_pieces *out,
                      tune_strbuf *scratch)
{
    if (!n) return 0; /* HF never prepends to or splits an empty piece */
    switch (p->kind) {
    case P_SPLIT:
    case P_WHITESPACE: return split_piece(p, 0, p->behavior, p->invert, s, n, at_start, g, out, 0);
    case P_WSSPLIT: return split_piece(p, C_SPACE, B_REMOVED, 0, s, n, at_start, g, out, 0);
    case P_DIGITS:
        return split_piece(p, C_NUMERIC, p->individual ? B_ISOLATED : B_CONTIGUOUS, 0, s, n, at_start, g, out, 0);
    case P_BYTELEVEL: {
        if (p->add_prefix_space && s[0] != ' ') {
            scratch->len = 0;
            tune_strbuf_append(scratch, " ", 1);
            tune_strbuf_append(scratch, s, n);
            if (scratch->oom) return -1;
            s = scratch->data;
            n = scratch->len;
        }
        if (p->use_regex) return split_piece(p, 0, B_ISOLATED, 0, s, n, at_start, g, out, 1);
        return push_piece(out, s, n, at_start, 1);
    }
    case P_METASPACE: {
        scratch->len = 0;
        for (size_t i = 0; i < n;) {
            const char *sp = memchr(s + i, ' ', n - i);
            size_t e = sp ? (size_t)(sp - s) : n;
            tune_strbuf_append(scratch, s + i, e - i);
            if (sp) tune_strbuf_append(scratch, p->rep, (size_t)p->rep_len);
            i = e + 1;
        }
        int starts = scratch->len >= (size_t)p->rep_len && !memcmp(scratch->data, p->rep, (size_t)p->rep_len);
        int pre = !starts && (p->prepend == PREPEND_ALWAYS || (p->prepend == PREPEND_FIRST && at_start));
        if (pre) {
            tune_strbuf t = {0};
            tune_strbuf_append(&t, p->rep, (size_t)p->rep_len);
            tune_strbuf_append(&t, scratch->data ? scratch->data : "", scratch->len);
            tune_strbuf_free(scratch);
            *scratch = t;
        }
        if (scratch->oom) return -1;
        if (!scratch->len) return 0;
        if (!p->split) return tk_pieces_push(out, scratch->data, scratch->len, at_start);
        return split_piece(p, C_REPLACEMENT, B_NEXT, 0, scratch->data, scratch->len, at_start, g, out, 0);
    }
    }
    return -1;
}

int tk_pretokenize(tk_pretok *p, tk_pieces *io, tk_pieces *tmp)
{
    if (p->kind == P_SEQ) {
        for (size_t i = 0; i < p->n_kids; i++)
            if (tk_pretokenize(p->kids[i], io, tmp)) return -1;
        return 0;
    }
    segs g = {0};
    tune_strbuf scratch = {0};
    tk_pieces_reset(tmp);
    int rc = 0;
    for (size_t i = 0; !rc && i < io->n; i++) {
        tk_span sp = io->v[i];
        /* io's buffer does not move while tmp grows, so the pointer stays valid. */
        rc = pretok_one(p, io->buf.data + sp.off, sp.len, sp.at_start, &g, tmp, &scratch);
    }
    free(g.v);
    tune_strbuf_free(&scratch);
    if (rc) return -1;
    tk_pieces t = *io;
    *io = *tmp;
    *tmp = t;
    return 0;
}
