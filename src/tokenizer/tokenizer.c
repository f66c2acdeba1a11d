/* Loading tokenizer.json / model folders, added tokens, and the encode and
 * decode pipelines (added-token split, normalizer, pre-tokenizer, BPE,
 * post-processor; decoder). */
#include <stdlib.h>
#include <string.h>
#include <dirent.h>

#include "internal.h"

/* One matching set of added tokens: candidates bucketed by first byte,
 * longest first, so the first hit at a position is the longest. */
typedef struct match_set {
    uint32_t *order;   // (n) indices into tok->added
    uint32_t *bucket;  // (257) order[bucket[b] .. bucket[b+1]) start with byte b
    char **text;       // (n_text) per added token: the text matched (normalized content for the normalized set)
    size_t *len;       // (n_text)
    size_t n_text;     /* n_added when the set was built */
} match_set;

struct tune_tokenizer {
    char *name;  /* file named in errors */
    cJSON *doc;  /* tokenizer.json document (built from the metadata for a GGUF file) */
    tk_bpe *bpe;
    tk_normalizer *norm;
    tk_pretok *pre;
    tk_postproc *post;
    tk_decoder *dec;
    tune_added_token *added; // (n_added) content owned
    size_t n_added, cap_added;
    match_set raw, normd; /* normalized = false / true */
    tk_strmap added_by_content; /* content -> index in added */
    tune_special_ids roles;
    char *chat_template;
    pcre2_code *word_re; /* Rust's \w, for single_word */
    pcre2_match_data *word_md;
    /* scratch reused by encode */
    tk_pieces pa, pb;
};

/* ---------------- added tokens ---------------- */

static void match_set_free(match_set *m)
{
    if (m->text)
        for (size_t i = 0; i < m->n_text; i++) free(m->text[i]);
    free(m->text);
    free(m->len);
    free(m->order);
    free(m->bucket);
    memset(m, 0, sizeof *m);
}

typedef struct sort_item {
    uint32_t idx;
    uint8_t first;
    size_t len;
} sort_item;

static int sort_cmp(const void *a, const void *b)
{
    const sort_item *x = a, *y = b;
    if (x->first != y->first) return x->first < y->first ? -1 : 1;
    if (x->len != y->len) return x->len > y->len ? -1 : 1;
    return x->idx < y->idx ? -1 : x->idx > y->idx; /* equal text: the earlier token */
}

/* Builds a set from the added tokens whose normalized flag equals want. */
static int match_set_build(tune_tokenizer *tok, match_set *m, int want)
{
    size_t n = tok->n_added;
    m->text = calloc(n + 1, sizeof *m->text);
    m->len = calloc(n + 1, sizeof *m->len);
    m->bucket = calloc(257, sizeof *m->bucket);
    sort_item *items = calloc(n + 1, sizeof *items);
    m->order = calloc(n + 1, sizeof *m->order);
    if (!m->text || !m->len || !m->bucket || !items || !m->order) {
        free(items);
        return -1;
    }
    m->n_text = n;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        const tune_added_token *a = &tok->added[i];
        if (a->normalized != want) continue;
        tune_strbuf sb = {0};
        if (want && tok->norm) {
            if (tk_normalize(tok->norm, a->content, strlen(a->content), &sb)) {
                tune_strbuf_free(&sb);
                free(items);
                return -1;
            }
        } else
            tune_strbuf_puts(&sb, a->content);
        if (sb.oom || !sb.len) { /* nothing to match (an empty normalization never matches) */
            int oom = sb.oom;
            tune_strbuf_free(&sb);
            if (oom) {
                free(items);
                return -1;
            }
            continue;
        }
        m->text[i] = sb.data;
        m->len[i] = sb.len;
        items[k++] = (sort_item){(uint32_t)i, (uint8_t)sb.data[0], sb.len};
    }
    qsort(items, k, sizeof *items, sort_cmp);
    for (size_t i = 0; i < k; i++) {
        m->order[i] = items[i].idx;
        m->bucket[items[i].first + 1]++;
    }
    for (int b = 0; b < 256; b++) m->bucket[b + 1] += m->bucket[b];
    free(items);
    return 0;
}

static int refresh_added(tune_tokenizer *tok)
{
    match_set_free(&tok->raw);
    match_set_free(&tok->normd);
    return match_set_build(tok, &tok->raw, 0) || match_set_build(tok, &tok->normd, 1) ? -1 : 0;
}

/* Rust regex \w (single_word checks the characters around a match). */
static int is_word_cp(const tune_tokenizer *tok, int32_t cp)
{
    if (cp < 0) return 0;
    if (cp < 128) return (cp >= '0' && cp <= '9') || (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z') || cp == '_';
    char u[4];
    int n = tk_utf8_encode(cp, u);
    return pcre2_match(tok->word_re, (PCRE2_SPTR)u, (size_t)n, 0, PCRE2_NO_UTF_CHECK, tok->word_md, NULL) >= 0;
}

static int32_t last_cp(const char *s, size_t n)
{
    size_t st = n - 1;
    while (st > 0 && ((uint8_t)s[st] & 0xC0) == 0x80) st--;
    int32_t cp;
    size_t bad;
    return tk_utf8_next((const uint8_t *)s + st, n - st, &cp, &bad) ? cp : -1;
}

static int32_t first_cp(const char *s, size_t n)
{
    int32_t cp;
    size_t bad;
    return tk_utf8_next((const uint8_t *)s, n, &cp, &bad) ? cp : -1;
}

/* A segment of text between added tokens, or one added token. */
typedef struct split_item {
    size_t s, e;
    int32_t added; /* index into tok->added, -1 for text */
} split_item;

typedef struct split_list {
    split_item *v;
    size_t n, cap;
} split_list;

static int split_push(split_list *l, size_t s, size_t e, int32_t a)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        split_item *v = realloc(l->v, cap * sizeof *v);
        if (!v) return -1;
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = (split_item){s, e, a};
    return 0;
}

/* Splits s by one added-token set, as AddedVocabulary::find_matches does
 * (leftmost-longest matches, single_word, lstrip, rstrip). */
static int find_added(const tune_tokenizer *tok, const match_set *m, const char *s, size_t n, split_list *out)
{
    out->n = 0;
    size_t start_off = 0;
    if (m->bucket && m->bucket[256]) {
        for (size_t p = 0; p < n;) {
            uint8_t b = (uint8_t)s[p];
            int32_t hit = -1;
            size_t hl = 0;
            for (uint32_t k = m->bucket[b]; k < m->bucket[b + 1]; k++) {
                uint32_t i = m->order[k];
                if (m->len[i] <= n - p && !memcmp(s + p, m->text[i], m->len[i])) {
                    hit = (int32_t)i;
                    hl = m->len[i];
                    break;
                }
            }
            if (hit < 0) {
                p++;
                continue;
            }
            size_t ms = p, me = p + hl;
            p = me; /* the automaton resumes after the match, kept or not */
            const tune_added_token *a = &tok->added[hit];
            if (a->single_word) {
                int sw = ms == 0 || !is_word_cp(tok, last_cp(s, ms));
                int ew = me == n || !is_word_cp(tok, first_cp(s + me, n - me));
                if (!sw || !ew) continue;
            }
            if (a->lstrip) {
                size_t ns = ms;
                while (ns > 0) {
                    size_t st = ns - 1;
                    while (st > 0 && ((uint8_t)s[st] & 0xC0) == 0x80) st--;
                    if (!tk_is_space(first_cp(s + st, ns - st))) break;
                    ns = st;
                }
                ms = ns > start_off ? ns : start_off;
            }
            if (a->rstrip) {
                while (me < n) {
                    int32_t cp;
                    size_t bad;
                    int k = tk_utf8_next((const uint8_t *)s + me, n - me, &cp, &bad);
                    if (!k || !tk_is_space(cp)) break;
                    me += (size_t)k;
                }
            }
            if (start_off < ms && split_push(out, start_off, ms, -1)) return -1;
            if (split_push(out, ms, me, hit)) return -1;
            start_off = me;
        }
    }
    if (start_off < n && split_push(out, start_off, n, -1)) return -1;
    return 0;
}

/* ---------------- encode ---------------- */

static int encode_text(tune_tokenizer *tok, const char *s, size_t n, int at_start, tune_ids *out)
{
    tk_pieces_reset(&tok->pa);
    if (tk_pieces_push(&tok->pa, s, n, at_start)) return -1;
    if (tok->pre && tk_pretokenize(tok->pre, &tok->pa, &tok->pb)) return -1;
    for (size_t i = 0; i < tok->pa.n; i++) {
        tk_span sp = tok->pa.v[i];
        if (tk_bpe_encode(tok->bpe, tok->pa.buf.data + sp.off, sp.len, out)) return -1;
    }
    return 0;
}

static int encode_segment(tune_tokenizer *tok, const char *s, size_t n, int at_start, tune_ids *out)
{
    const char *t = s;
    size_t tn = n;
    char *owned = NULL;
    if (tok->norm) {
        tune_strbuf nb = {0};
        if (tk_normalize(tok->norm, s, n, &nb)) {
            tune_strbuf_free(&nb);
            return -1;
        }
        owned = nb.data;
        t = nb.data ? nb.data : "";
        tn = nb.len;
    }
    split_list parts = {0};
    int rc = find_added(tok, &tok->normd, t, tn, &parts);
    for (size_t i = 0; !rc && i < parts.n; i++) {
        split_item it = parts.v[i];
        if (it.added >= 0) rc = tk_ids_push(out, tok->added[it.added].id);
        else rc = encode_text(tok, t + it.s, it.e - it.s, at_start && it.s == 0, out);
    }
    free(parts.v);
    free(owned);
    return rc;
}

tune_status tune_tokenizer_encode(tune_tokenizer *tok, const char *text, size_t len, int add_special, tune_ids *out,
                                  tune_error *err)
{
    out->n = 0;
    char *clean = NULL;
    size_t i = 0;
    while (i < len) {
        if ((uint8_t)text[i] < 0x80) {
            i++;
            continue;
        }
        int32_t cp;
        size_t bad;
        int k = tk_utf8_next((const uint8_t *)text + i, len - i, &cp, &bad);
        if (!k) break;
        i += (size_t)k;
    }
    if (i < len) {
        clean = tk_utf8_sanitize(text, len, &len);
        if (!clean) return tune_fail_run(err, NULL, "out of memory");
        text = clean;
    }
    split_list parts = {0};
    int rc = find_added(tok, &tok->raw, text, len, &parts);
    for (size_t k = 0; !rc && k < parts.n; k++) {
        split_item it = parts.v[k];
        if (it.added >= 0) rc = tk_ids_push(out, tok->added[it.added].id);
        else rc = encode_segment(tok, text + it.s, it.e - it.s, it.s == 0, out);
    }
    free(parts.v);
    free(clean);
    if (!rc && add_special && tok->post) rc = tk_postprocess(tok->post, out);
    if (rc) return tune_fail_run(err, NULL, "out of memory while encoding");
    return TUNE_OK;
}

void tune_ids_free(tune_ids *ids)
{
    free(ids->ids);
    memset(ids, 0, sizeof *ids);
}

/* ---------------- lookups ---------------- */

static const tune_added_token *added_by_id(const tune_tokenizer *tok, int32_t id)
{
    for (size_t i = tok->n_added; i-- > 0;) /* the last entry for an id wins, as HF's map does */
        if (tok->added[i].id == id) return &tok->added[i];
    return NULL;
}

/* As HF: a normalized added token reads back as its normalized content. */
const char *tune_tokenizer_id_to_token(const tune_tokenizer *tok, int32_t id)
{
    const tune_added_token *a = added_by_id(tok, id);
    if (!a) return tk_bpe_id_to_token(tok->bpe, id);
    size_t i = (size_t)(a - tok->added);
    return a->normalized && tok->norm && tok->normd.text && tok->normd.text[i] ? tok->normd.text[i] : a->content;
}

int32_t tune_tokenizer_token_to_id(const tune_tokenizer *tok, const char *token)
{
    int32_t i = tk_strmap_get(&tok->added_by_content, token, strlen(token));
    if (i >= 0) return tok->added[i].id;
    return tk_bpe_token_to_id(tok->bpe, token, strlen(token));
}

int32_t tune_tokenizer_vocab_size(const tune_tokenizer *tok)
{
    int32_t n = tk_bpe_size(tok->bpe);
    for (size_t i = 0; i < tok->n_added; i++)
        if (tok->added[i].id + 1 > n) n = tok->added[i].id + 1;
    return n;
}

int tune_tokenizer_is_special(const tune_tokenizer *tok, int32_t id)
{
    const tune_added_token *a = added_by_id(tok, id);
    return a && a->special;
}

void tune_tokenizer_bos_eos_texts(const tune_tokenizer *tok, const char **bos, const char **eos)
{
    const tune_special_ids *sp = tune_tokenizer_specials(tok);
    const char *b = sp->bos >= 0 ? tune_tokenizer_id_to_token(tok, sp->bos) : NULL;
    const char *e = sp->eos >= 0 ? tune_tokenizer_id_to_token(tok, sp->eos) : NULL;
    if (b) *bos = b;
    if (e) *eos = e;
}

const tune_special_ids *tune_tokenizer_specials(const tune_tokenizer *tok) { return &tok->roles; }
const char *tune_tokenizer_chat_template(const tune_tokenizer *tok) { return tok->chat_template; }
size_t tune_tokenizer_n_added(const tune_tokenizer *tok) { return tok->n_added; }

const tune_added_token *tune_tokenizer_added(const tune_tokenizer *tok, size_t i)
{
    return i < tok->n_added ? &tok->added[i] : NULL;
}

/* ---------------- decode ---------------- */

tune_status tune_tokenizer_decode(const tune_tokenizer *tok, const int32_t *ids, size_t n, int skip_special,
                                  char **text, size_t *len, tune_error *err)
{
    const char **toks = malloc((n + 1) * sizeof *toks);
    if (!toks) return tune_fail_run(err, NULL, "out of memory");
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        const char *t = tune_tokenizer_id_to_token(tok, ids[i]);
        if (!t) continue;
        if (skip_special) { /* HF looks the token's text up among the special contents */
            int32_t a = tk_strmap_get(&tok->added_by_content, t, strlen(t));
            if (a >= 0 && tok->added[a].special) continue;
        }
        toks[k++] = t;
    }
    tune_strbuf sb = {0};
    int rc = tk_decode_tokens(tok->dec, toks, k, &sb);
    free(toks);
    if (!rc && !sb.data) tune_strbuf_append(&sb, "", 0);
    if (rc || sb.oom) {
        tune_strbuf_free(&sb);
        return tune_fail_run(err, NULL, "out of memory while decoding");
    }
    *text = sb.data;
    *len = sb.len;
    return TUNE_OK;
}

/* ---------------- adding tokens ---------------- */

static tune_status add_one(tune_tokenizer *tok, const tune_added_token *t, const char *file, tune_error *err)
{
    if (!*t->content) return TUNE_OK;
    int32_t have = tk_strmap_get(&tok->added_by_content, t->content, strlen(t->content));
    if (have >= 0) { /* same content again: the flags of the new entry win */
        tune_added_token *a = &tok->added[have];
        int32_t id = a->id;
        char *c = (char *)a->content;
        *a = *t;
        a->content = c;
        a->id = id;
        return TUNE_OK;
    }
    if (tok->n_added == tok->cap_added) {
        size_t cap = tok->cap_added ? tok->cap_added * 2 : 16;
        tune_added_token *v = realloc(tok->added, cap * sizeof *v);
        if (!v) return tune_fail_run(err, file, "out of memory");
        tok->added = v;
        tok->cap_added = cap;
    }
    tune_added_token *a = &tok->added[tok->n_added];
    *a = *t;
    if (!(a->content = strdup(t->content)) ||
        tk_strmap_put(&tok->added_by_content, t->content, strlen(t->content), (int32_t)tok->n_added)) {
        free((char *)a->content);
        return tune_fail_run(err, file, "out of memory");
    }
    tok->n_added++;
    return TUNE_OK;
}

tune_status tune_tokenizer_add_tokens(tune_tokenizer *tok, const char *const *tokens, size_t n, int special,
                                      size_t *n_new, tune_error *err)
{
    size_t fresh = 0;
    for (size_t i = 0; i < n; i++) {
        if (!tokens[i] || !*tokens[i]) continue;
        int32_t id = tune_tokenizer_token_to_id(tok, tokens[i]);
        if (id < 0) {
            int32_t max = -1;
            for (size_t k = 0; k < tok->n_added; k++)
                if (tok->added[k].id > max) max = tok->added[k].id;
            int32_t vs = tk_bpe_size(tok->bpe);
            id = max < 0 || (max < vs && vs > 0) ? vs : max + 1;
            fresh++;
        }
        tune_added_token t = {tokens[i], id, special, !special, 0, 0, 0};
        tune_status st = add_one(tok, &t, tok->name, err);
        if (st != TUNE_OK) return st;
    }
    if (refresh_added(tok)) return tune_fail_run(err, tok->name, "out of memory");
    if (n_new) *n_new = fresh;
    return TUNE_OK;
}

/* ---------------- loading ---------------- */

void tune_tokenizer_free(tune_tokenizer *tok)
{
    if (!tok) return;
    match_set_free(&tok->raw);
    match_set_free(&tok->normd);
    for (size_t i = 0; i < tok->n_added; i++) free((char *)tok->added[i].content);
    free(tok->added);
    tk_strmap_free(&tok->added_by_content);
    tk_bpe_free(tok->bpe);
    tk_normalizer_free(tok->norm);
    tk_pretok_free(tok->pre);
    tk_postproc_free(tok->post);
    tk_decoder_free(tok->dec);
    cJSON_Delete(tok->doc);
    free(tok->chat_template);
    free(tok->name);
    tk_pieces_free(&tok->pa);
    tk_pieces_free(&tok->pb);
    if (tok->word_md) pcre2_match_data_free(tok->word_md);
    if (tok->word_re) pcre2_code_free(tok->word_re);
    free(tok);
}

static tune_tokenizer *tok_new(const char *name)
{
    tune_tokenizer *tok = calloc(1, sizeof *tok);
    if (!tok) return NULL;
    tok->roles = (tune_special_ids){-1, -1, -1, -1, -1, -1};
    int e;
    PCRE2_SIZE o;
    tok->word_re = pcre2_compile((PCRE2_SPTR) "^[\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\p{Join_Control}]",
                                 PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &e, &o, NULL);
    tok->word_md = tok->word_re ? pcre2_match_data_create_from_pattern(tok->word_re, NULL) : NULL;
    tok->name = strdup(name ? name : "tokenizer.json");
    if (!tok->name || !tok->word_md) {
        tune_tokenizer_free(tok);
        return NULL;
    }
    return tok;
}

static int is_null(const cJSON *j) { return !j || cJSON_IsNull(j); }

static tune_status load_doc(tune_tokenizer *tok, tune_error *err)
{
    const char *f = tok->name;
    const cJSON *d = tok->doc;
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(d, "model");
    if (!cJSON_IsObject(model)) return tune_fail_input(err, f, "no \"model\" object: not a tokenizer.json");
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(model, "type");
    if (cJSON_IsString(mt) && strcmp(mt->valuestring, "BPE"))
        return tune_fail_input(err, f, "model type \"%s\" is not supported: tune tokenizes BPE models only",
                               mt->valuestring);
    tune_status st = tk_bpe_parse(model, &tok->bpe, f, err);
    const cJSON *j;
    if (st == TUNE_OK && !is_null(j = cJSON_GetObjectItemCaseSensitive(d, "normalizer")))
        st = tk_normalizer_parse(j, &tok->norm, f, err);
    if (st == TUNE_OK && !is_null(j = cJSON_GetObjectItemCaseSensitive(d, "pre_tokenizer")))
        st = tk_pretok_parse(j, &tok->pre, f, err);
    if (st == TUNE_OK && !is_null(j = cJSON_GetObjectItemCaseSensitive(d, "post_processor")))
        st = tk_postproc_parse(j, &tok->post, f, err);
    if (st == TUNE_OK && !is_null(j = cJSON_GetObjectItemCaseSensitive(d, "decoder")))
        st = tk_decoder_parse(j, &tok->dec, f, err);
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(d, "added_tokens");
    int idx = 0;
    for (const cJSON *a = cJSON_IsArray(added) ? added->child : NULL; a && st == TUNE_OK; a = a->next, idx++) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(a, "id");
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(a, "content");
        if (!cJSON_IsNumber(id) || id->valuedouble < 0 || !cJSON_IsString(c)) {
            st = tune_fail_input(err, f, "added_tokens[%d]: needs \"id\" and \"content\"", idx);
            break;
        }
        int special = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(a, "special"));
        const cJSON *nz = cJSON_GetObjectItemCaseSensitive(a, "normalized");
        tune_added_token t = {c->valuestring,
                              (int32_t)id->valuedouble,
                              special,
                              cJSON_IsBool(nz) ? cJSON_IsTrue(nz) : !special,
                              cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(a, "lstrip")),
                              cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(a, "rstrip")),
                              cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(a, "single_word"))};
        st = add_one(tok, &t, f, err);
    }
    if (st == TUNE_OK && refresh_added(tok)) st = tune_fail_run(err, f, "out of memory");
    return st;
}

tune_status tune_tokenizer_load_json(const char *json, size_t len, const char *name, tune_tokenizer **out,
                                     tune_error *err)
{
    *out = NULL;
    if (memmem(json, len, "\\u0000", 6))
        return tune_fail_input(err, name, "a string holds U+0000, which tune cannot read from tokenizer.json");
    tune_tokenizer *tok = tok_new(name);
    if (!tok) return tune_fail_run(err, name, "out of memory");
    tok->doc = cJSON_ParseWithLength(json, len);
    if (!tok->doc) {
        const char *at = cJSON_GetErrorPtr();
        size_t off = at && at >= json && at <= json + len ? (size_t)(at - json) : 0;
        int line = 1, col = 1;
        for (size_t i = 0; i < off; i++) {
            if (json[i] == '\n') {
                line++;
                col = 1;
            } else
                col++;
        }
        tune_status st = tune_error_set(err, TUNE_ERR_INPUT, tok->name, line, col, "not valid JSON");
        tune_tokenizer_free(tok);
        return st;
    }
    tune_status st = load_doc(tok, err);
    if (st != TUNE_OK) {
        tune_tokenizer_free(tok);
        return st;
    }
    *out = tok;
    return TUNE_OK;
}

/* ---------------- tokenizer_config.json and friends ---------------- */

static cJSON *read_json(const char *path, tune_status *st, tune_error *err)
{
    char *data;
    size_t len;
    *st = TUNE_OK;
    if (!tune_path_exists(path)) return NULL;
    if ((*st = tune_read_file(path, &data, &len, err)) != TUNE_OK) return NULL;
    cJSON *j = cJSON_ParseWithLength(data, len);
    free(data);
    if (!j) *st = tune_fail_input(err, path, "not valid JSON");
    return j;
}

/* bos_token etc.: a string or an AddedToken dict {"content": ...}. */
static int32_t role_id(const tune_tokenizer *tok, const cJSON *cfg, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, key);
    if (cJSON_IsObject(v)) v = cJSON_GetObjectItemCaseSensitive(v, "content");
    return cJSON_IsString(v) ? tune_tokenizer_token_to_id(tok, v->valuestring) : -1;
}

static int32_t config_id(const cJSON *cfg, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, key);
    if (cJSON_IsArray(v)) v = v->child; /* eos_token_id may be a list: the first is the main one */
    return cJSON_IsNumber(v) && v->valuedouble >= 0 ? (int32_t)v->valuedouble : -1;
}

static tune_status set_template(tune_tokenizer *tok, const char *t, const char *file, tune_error *err)
{
    free(tok->chat_template);
    tok->chat_template = strdup(t);
    return tok->chat_template ? TUNE_OK : tune_fail_run(err, file, "out of memory");
}

/* dir/name into path (PATH_LEN bytes); names too long to hold are cut to "" (then absent). */
#define PATH_LEN 4096
static void join_path(char *path, const char *dir, const char *name)
{
    size_t a = strlen(dir), b = strlen(name);
    if (a + b + 2 > PATH_LEN) {
        path[0] = 0;
        return;
    }
    memcpy(path, dir, a);
    path[a] = '/';
    memcpy(path + a + 1, name, b + 1);
}

static tune_status load_configs(tune_tokenizer *tok, const char *dir, tune_error *err)
{
    char path[PATH_LEN];
    tune_status st;
    join_path(path, dir, "tokenizer_config.json");
    cJSON *cfg = read_json(path, &st, err);
    if (st != TUNE_OK) return st;
    if (cfg) {
        tok->roles.bos = role_id(tok, cfg, "bos_token");
        tok->roles.eos = role_id(tok, cfg, "eos_token");
        tok->roles.pad = role_id(tok, cfg, "pad_token");
        tok->roles.unk = role_id(tok, cfg, "unk_token");
        const cJSON *b = cJSON_GetObjectItemCaseSensitive(cfg, "add_bos_token");
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(cfg, "add_eos_token");
        if (cJSON_IsBool(b)) tok->roles.add_bos = cJSON_IsTrue(b);
        if (cJSON_IsBool(e)) tok->roles.add_eos = cJSON_IsTrue(e);
        const cJSON *ct = cJSON_GetObjectItemCaseSensitive(cfg, "chat_template");
        if (cJSON_IsString(ct)) st = set_template(tok, ct->valuestring, path, err);
        else if (cJSON_IsArray(ct)) { /* [{name, template}]: "default", else the first */
            const cJSON *pick = NULL;
            for (const cJSON *e2 = ct->child; e2; e2 = e2->next) {
                const cJSON *nm = cJSON_GetObjectItemCaseSensitive(e2, "name");
                if (!pick || (cJSON_IsString(nm) && !strcmp(nm->valuestring, "default"))) pick = e2;
            }
            const cJSON *tt = cJSON_GetObjectItemCaseSensitive(pick, "template");
            if (cJSON_IsString(tt)) st = set_template(tok, tt->valuestring, path, err);
        }
        cJSON_Delete(cfg);
        if (st != TUNE_OK) return st;
    }
    join_path(path, dir, "chat_template.jinja");
    if (tune_path_exists(path)) {
        char *data;
        size_t len;
        if ((st = tune_read_file(path, &data, &len, err)) != TUNE_OK) return st;
        free(tok->chat_template);
        tok->chat_template = data;
    }
    /* Ids the model configs declare fill roles tokenizer_config.json leaves open. */
    const char *names[] = {"generation_config.json", "config.json"};
    for (int i = 0; i < 2; i++) {
        join_path(path, dir, names[i]);
        cJSON *c = read_json(path, &st, err);
        if (st != TUNE_OK) return st;
        if (!c) continue;
        if (tok->roles.bos < 0) tok->roles.bos = config_id(c, "bos_token_id");
        if (tok->roles.eos < 0) tok->roles.eos = config_id(c, "eos_token_id");
        if (tok->roles.pad < 0) tok->roles.pad = config_id(c, "pad_token_id");
        cJSON_Delete(c);
    }
    if (tok->roles.unk < 0) {
        const cJSON *u = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(tok->doc, "model"), "unk_token");
        if (cJSON_IsString(u)) tok->roles.unk = tune_tokenizer_token_to_id(tok, u->valuestring);
    }
    return TUNE_OK;
}

static int ends_with(const char *s, const char *suf)
{
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && !strcmp(s + n - m, suf);
}

static tune_status load_gguf(const char *file, tune_tokenizer **out, tune_error *err)
{
    tune_tokenizer *tok = tok_new(file);
    if (!tok) return tune_fail_run(err, file, "out of memory");
    tk_gguf_meta meta;
    tune_status st = tk_gguf_document(file, &tok->doc, &meta, err);
    if (st == TUNE_OK) st = load_doc(tok, err);
    if (st == TUNE_OK) {
        tok->roles = (tune_special_ids){meta.bos, meta.eos, meta.pad, meta.unk, meta.add_bos, meta.add_eos};
        tok->chat_template = meta.chat_template;
        meta.chat_template = NULL;
    }
    free(meta.chat_template);
    if (st != TUNE_OK) {
        tune_tokenizer_free(tok);
        return st;
    }
    *out = tok;
    return TUNE_OK;
}

tune_status tune_tokenizer_load(const char *path, tune_tokenizer **out, tune_error *err)
{
    *out = NULL;
    char file[PATH_LEN], dir[PATH_LEN];
    if (strlen(path) + 32 > PATH_LEN) return tune_fail_input(err, NULL, "path too long: %.200s...", path);
    if (tune_is_dir(path)) {
        strcpy(dir, path);
        join_path(file, path, "tokenizer.json");
        if (!tune_path_exists(file)) { /* a folder holding one GGUF file stands for it */
            int n = 0;
            DIR *d = opendir(path);
            for (struct dirent *e; d && (e = readdir(d));)
                if (ends_with(e->d_name, ".gguf") && n++ == 0) join_path(file, path, e->d_name);
            if (d) closedir(d);
            if (n == 0) return tune_fail_input(err, path, "no tokenizer.json and no GGUF file in this folder");
            if (n > 1) return tune_fail_input(err, path, "no tokenizer.json and %d GGUF files in this folder: name one", n);
            return load_gguf(file, out, err);
        }
    } else {
        strcpy(file, path);
        strcpy(dir, path);
        char *slash = strrchr(dir, '/');
        if (slash) *slash = 0;
        else strcpy(dir, ".");
    }
    if (ends_with(file, ".gguf")) return load_gguf(file, out, err);
    char *data;
    size_t len;
    tune_status st = tune_read_file(file, &data, &len, err);
    if (st != TUNE_OK) return st;
    st = tune_tokenizer_load_json(data, len, file, out, err);
    free(data);
    if (st == TUNE_OK) st = load_configs(*out, dir, err);
    if (st != TUNE_OK) {
        tune_tokenizer_free(*out);
        *out = NULL;
    }
    return st;
}

/* ---------------- writing ---------------- */

static int cmp_added_id(const void *a, const void *b)
{
    const tune_added_token *x = *(const tune_added_token *const *)a, *y = *(const tune_added_token *const *)b;
    return x->id < y->id ? -1 : x->id > y->id;
}

tune_status tune_tokenizer_save_json(const tune_tokenizer *tok, const char *path, tune_error *err)
{
    const tune_added_token **v = malloc((tok->n_added + 1) * sizeof *v);
    cJSON *list = cJSON_CreateArray();
    if (!v || !list) {
        free(v);
        cJSON_Delete(list);
        return tune_fail_run(err, path, "out of memory");
    }
    for (size_t i = 0; i < tok->n_added; i++) v[i] = &tok->added[i];
    qsort(v, tok->n_added, sizeof *v, cmp_added_id);
    int oom = 0;
    for (size_t i = 0; i < tok->n_added && !oom; i++) {
        cJSON *o = cJSON_CreateObject();
        if (!o || !cJSON_AddItemToArray(list, o)) {
            cJSON_Delete(o);
            oom = 1;
            break;
        }
        oom |= !cJSON_AddNumberToObject(o, "id", v[i]->id) || !cJSON_AddStringToObject(o, "content", v[i]->content) ||
               !cJSON_AddBoolToObject(o, "single_word", v[i]->single_word) ||
               !cJSON_AddBoolToObject(o, "lstrip", v[i]->lstrip) || !cJSON_AddBoolToObject(o, "rstrip", v[i]->rstrip) ||
               !cJSON_AddBoolToObject(o, "normalized", v[i]->normalized) ||
               !cJSON_AddBoolToObject(o, "special", v[i]->special);
    }
    free(v);
    if (oom) {
        cJSON_Delete(list);
        return tune_fail_run(err, path, "out of memory");
    }
    /* Serialise a copy so the loaded document stays as it was. */
    cJSON *doc = cJSON_Duplicate(tok->doc, 1);
    if (!doc || (cJSON_GetObjectItemCaseSensitive(doc, "added_tokens") ? !cJSON_ReplaceItemInObjectCaseSensitive(doc, "added_tokens", list)
                                                                       : !cJSON_AddItemToObject(doc, "added_tokens", list))) {
        cJSON_Delete(doc);
        cJSON_Delete(list);
        return tune_fail_run(err, path, "out of memory");
    }
    char *s = cJSON_PrintUnformatted(doc);
    cJSON_Delete(doc);
    if (!s) return tune_fail_run(err, path, "out of memory");
    tune_status st = tune_write_file_atomic(path, s, strlen(s), err);
    free(s);
    return st;
}

tune_status tune_tokenizer_save_config(const tune_tokenizer *tok, const char *path, tune_error *err)
{
    cJSON *c = cJSON_CreateObject();
    int ok = c && cJSON_AddStringToObject(c, "tokenizer_class", "PreTrainedTokenizerFast") &&
             cJSON_AddBoolToObject(c, "clean_up_tokenization_spaces", 0);
    const tune_special_ids *r = &tok->roles;
    const struct {
        const char *key;
        int32_t id;
    } roles[] = {{"bos_token", r->bos}, {"eos_token", r->eos}, {"pad_token", r->pad}, {"unk_token", r->unk}};
    for (size_t i = 0; ok && i < sizeof roles / sizeof roles[0]; i++) {
        const char *content = roles[i].id >= 0 ? tune_tokenizer_id_to_token(tok, roles[i].id) : NULL;
        if (content) ok = cJSON_AddStringToObject(c, roles[i].key, content) != NULL;
    }
    if (ok && r->add_bos >= 0) ok = cJSON_AddBoolToObject(c, "add_bos_token", r->add_bos) != NULL;
    if (ok && r->add_eos >= 0) ok = cJSON_AddBoolToObject(c, "add_eos_token", r->add_eos) != NULL;
    if (ok && tok->chat_template) ok = cJSON_AddStringToObject(c, "chat_template", tok->chat_template) != NULL;
    char *text = ok ? cJSON_Print(c) : NULL;
    cJSON_Delete(c);
    if (!text) return tune_fail_run(err, path, "out of memory");
    tune_status st = tune_write_file_atomic(path, text, strlen(text), err);
    free(text);
    return st;
}
