/* The BPE model of `tokenizers`: characters to ids (with byte fallback and
 * unk), then merges, lowest rank first and leftmost among equals, through a
 * priority queue: O(n log n) per word. Results of short words are cached. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define CACHE_SLOTS 8192     /* direct-mapped: bounded, and a hit never changes a result */
#define CACHE_MAX_WORD 256   /* bytes; longer words are not cached */
#define MERGE_EMPTY UINT64_MAX

typedef struct cache_slot {
    char *word;   // (len)
    int32_t *ids; // (n)
    uint32_t len, n;
} cache_slot;

struct tk_bpe {
    tk_strmap vocab;
    char **tokens; // (size) id -> token, NULL for holes
    int32_t size;
    uint64_t *mkey; // (mcap) (left << 32 | right), MERGE_EMPTY when free
    int32_t *mrank; // (mcap)
    int32_t *mnew;  // (mcap)
    size_t mcap;
    int32_t unk_id; /* -1: none */
    int fuse_unk, byte_fallback, ignore_merges;
    char *prefix, *suffix; /* continuing_subword_prefix, end_of_word_suffix; NULL when unset */
    int32_t byte_id[256];  /* <0xHH> ids, -1 when absent */
    cache_slot *cache;     // (CACHE_SLOTS)
};

static size_t merge_slot(const tk_bpe *b, uint64_t key)
{
    return (size_t)((key * 0x9E3779B97F4A7C15ull) >> 20) & (b->mcap - 1);
}

/* Later duplicates overwrite earlier ones, as HF's HashMap collect does. */
static void merge_put(tk_bpe *b, int32_t l, int32_t r, int32_t rank, int32_t nid)
{
    uint64_t key = ((uint64_t)(uint32_t)l << 32) | (uint32_t)r;
    size_t j = merge_slot(b, key);
    while (b->mkey[j] != MERGE_EMPTY && b->mkey[j] != key) j = (j + 1) & (b->mcap - 1);
    b->mkey[j] = key;
    b->mrank[j] = rank;
    b->mnew[j] = nid;
}

static int merge_get(const tk_bpe *b, int32_t l, int32_t r, int32_t *rank, int32_t *nid)
{
    uint64_t key = ((uint64_t)(uint32_t)l << 32) | (uint32_t)r;
    size_t j = merge_slot(b, key);
    while (b->mkey[j] != MERGE_EMPTY) {
        if (b->mkey[j] == key) {
            *rank = b->mrank[j];
            *nid = b->mnew[j];
            return 1;
        }
        j = (j + 1) & (b->mcap - 1);
    }
    return 0;
}

void tk_bpe_free(tk_bpe *b)
{
    if (!b) return;
    tk_strmap_free(&b->vocab);
    if (b->tokens)
        for (int32_t i = 0; i < b->size; i++) free(b->tokens[i]);
    free(b->tokens);
    free(b->mkey);
    free(b->mrank);
    free(b->mnew);
    free(b->prefix);
    free(b->suffix);
    if (b->cache)
        for (size_t i = 0; i < CACHE_SLOTS; i++) {
            free(b->cache[i].word);
            free(b->cache[i].ids);
        }
    free(b->cache);
    free(b);
}

/* Allocates the id table, merge table and cache once the vocabulary is known. */
static tune_status bpe_finish_vocab(tk_bpe *b, size_t n_merges, const char *file, tune_error *err)
{
    b->tokens = calloc((size_t)b->size + 1, sizeof *b->tokens);
    b->cache = calloc(CACHE_SLOTS, sizeof *b->cache);
    b->mcap = 16;
    while (b->mcap < n_merges * 2 + 2) b->mcap *= 2;
    b->mkey = malloc(b->mcap * sizeof *b->mkey);
    b->mrank = malloc(b->mcap * sizeof *b->mrank);
    b->mnew = malloc(b->mcap * sizeof *b->mnew);
    if (!b->tokens || !b->cache || !b->mkey || !b->mrank || !b->mnew) return tune_fail_run(err, file, "out of memory");
    for (size_t i = 0; i < b->mcap; i++) b->mkey[i] = MERGE_EMPTY;
    for (size_t i = 0; i < b->vocab.cap; i++) {
        if (!b->vocab.keys[i]) continue;
        int32_t id = b->vocab.vals[i];
        if (b->tokens[id]) continue; /* two strings with one id: keep the first seen */
        if (!(b->tokens[id] = strdup(b->vocab.keys[i]))) return tune_fail_run(err, file, "out of memory");
    }
    for (int c = 0; c < 256; c++) {
        char piece[8];
        snprintf(piece, sizeof piece, "<0x%02X>", c);
        b->byte_id[c] = tk_strmap_get(&b->vocab, piece, 6);
    }
    return TUNE_OK;
}

static tune_status add_merge(tk_bpe *b, const char *l, size_t ll, const char *r, size_t rl, int32_t rank,
                             const char *file, tune_error *err)
{
    int32_t a = tk_strmap_get(&b->vocab, l, ll), c = tk_strmap_get(&b->vocab, r, rl);
    if (a < 0 || c < 0)
        return tune_fail_input(err, file, "merge %d (\"%.*s\" \"%.*s\"): token not in the vocabulary", rank,
                               (int)ll, l, (int)rl, r);
    size_t pl = b->prefix ? strlen(b->prefix) : 0;
    if (rl < pl) return tune_fail_input(err, file, "merge %d: right part shorter than the subword prefix", rank);
    tune_strbuf sb = {0};
    tune_strbuf_append(&sb, l, ll);
    tune_strbuf_append(&sb, r + pl, rl - pl);
    if (sb.oom) {
        tune_strbuf_free(&sb);
        return tune_fail_run(err, file, "out of memory");
    }
    int32_t nid = tk_strmap_get(&b->vocab, sb.data, sb.len);
    if (nid < 0) {
        tune_status st = tune_fail_input(err, file, "merge %d: merged token \"%s\" not in the vocabulary", rank, sb.data);
        tune_strbuf_free(&sb);
        return st;
    }
    tune_strbuf_free(&sb);
    merge_put(b, a, c, rank, nid);
    return TUNE_OK;
}

tune_status tk_bpe_parse(const cJSON *model, tk_bpe **out, const char *file, tune_error *err)
{
    *out = NULL;
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(model, "type");
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    if (cJSON_IsString(type) && strcmp(type->valuestring, "BPE"))
        return tune_fail_input(err, file, "model type \"%s\" is not supported (only BPE is)", type->valuestring);
    if (!cJSON_IsObject(vocab) || (merges && !cJSON_IsArray(merges)))
        return tune_fail_input(err, file, "model: BPE needs a \"vocab\" object and a \"merges\" list");
    const cJSON *dropout = cJSON_GetObjectItemCaseSensitive(model, "dropout");
    if (cJSON_IsNumber(dropout) && dropout->valuedouble > 0.0)
        return tune_fail_input(err, file, "model: BPE dropout is random; tune does not support it");
    tk_bpe *b = calloc(1, sizeof *b);
    if (!b) return tune_fail_run(err, file, "out of memory");
    tune_status st = TUNE_OK;
    b->unk_id = -1;
    b->size = 0;
    for (const cJSON *e = vocab->child; e && st == TUNE_OK; e = e->next) {
        if (!cJSON_IsNumber(e) || e->valuedouble < 0 || e->valuedouble >= 67108864.0) {
            st = tune_fail_input(err, file, "model.vocab[\"%s\"]: id must be an integer in [0, 2^26)", e->string);
            break;
        }
        int32_t id = (int32_t)e->valuedouble;
        if (tk_strmap_put(&b->vocab, e->string, strlen(e->string), id)) st = tune_fail_run(err, file, "out of memory");
        if (id + 1 > b->size) b->size = id + 1;
    }
    const cJSON *pre = cJSON_GetObjectItemCaseSensitive(model, "continuing_subword_prefix");
    const cJSON *suf = cJSON_GetObjectItemCaseSensitive(model, "end_of_word_suffix");
    if (st == TUNE_OK && cJSON_IsString(pre) && *pre->valuestring && !(b->prefix = strdup(pre->valuestring)))
        st = tune_fail_run(err, file, "out of memory");
    if (st == TUNE_OK && cJSON_IsString(suf) && *suf->valuestring && !(b->suffix = strdup(suf->valuestring)))
        st = tune_fail_run(err, file, "out of memory");
    int n_merges = cJSON_GetArraySize(merges);
    if (st == TUNE_OK) st = bpe_finish_vocab(b, (size_t)n_merges, file, err);
    int rank = 0;
    for (const cJSON *m = merges ? merges->child : NULL; m && st == TUNE_OK; m = m->next, rank++) {
        if (cJSON_IsString(m)) {
            const char *s = m->valuestring, *sp = strchr(s, ' ');
            if (!sp || strchr(sp + 1, ' ')) {
                st = tune_fail_input(err, file, "merge %d (\"%s\"): expected two tokens separated by one space", rank, s);
                break;
            }
            st = add_merge(b, s, (size_t)(sp - s), sp + 1, strlen(sp + 1), rank, file, err);
        } else if (cJSON_IsArray(m) && cJSON_GetArraySize(m) == 2 && cJSON_IsString(m->child) &&
                   cJSON_IsString(m->child->next)) {
            const char *l = m->child->valuestring, *r = m->child->next->valuestring;
            st = add_merge(b, l, strlen(l), r, strlen(r), rank, file, err);
        } else
            st = tune_fail_input(err, file, "merge %d: expected \"a b\" or [\"a\", \"b\"]", rank);
    }
    const cJSON *unk = cJSON_GetObjectItemCaseSensitive(model, "unk_token");
    if (st == TUNE_OK && cJSON_IsString(unk)) {
        b->unk_id = tk_strmap_get(&b->vocab, unk->valuestring, strlen(unk->valuestring));
        if (b->unk_id < 0) st = tune_fail_input(err, file, "model.unk_token \"%s\" is not in the vocabulary", unk->valuestring);
    }
    b->fuse_unk = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "fuse_unk"));
    b->byte_fallback = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "byte_fallback"));
    b->ignore_merges = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "ignore_merges"));
    if (st != TUNE_OK) {
        tk_bpe_free(b);
        return st;
    }
    *out = b;
    return TUNE_OK;
}

int32_t tk_bpe_token_to_id(const tk_bpe *b, const char *s, size_t len) { return tk_strmap_get(&b->vocab, s, len); }

const char *tk_bpe_id_to_token(const tk_bpe *b, int32_t id)
{
    return id >= 0 && id < b->size ? b->tokens[id] : NULL;
}

int32_t tk_bpe_size(const tk_bpe *b) { return b->size; }

int tk_ids_push(tune_ids *ids, int32_t id)
{
    if (ids->n == ids->cap) {
        size_t cap = ids->cap ? ids->cap * 2 : 64;
        int32_t *v = realloc(ids->ids, cap * sizeof *v);
        if (!v) return -1;
        ids->ids = v;
        ids->cap = cap;
    }
    ids->ids[ids->n++] = id;
    return 0;
}

/* ---- merging ---- */

typedef struct sym {
    int32_t id;
    int32_t prev, next; /* -1 at the ends */
    int alive;
} sym;

typedef struct hent {
    int32_t rank, pos, nid;
} hent;

static int hless(hent a, hent b) { return a.rank != b.rank ? a.rank < b.rank : a.pos < b.pos; }

static void hpush(hent *h, size_t *n, hent e)
{
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!hless(e, h[p])) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = e;
}

static hent hpop(hent *h, size_t *n)
{
    hent top = h[0], last = h[--(*n)];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && hless(h[c + 1], h[c])) c++;
        if (!hless(h[c], last)) break;
        h[i] = h[c];
        i = c;
    }
    if (*n) h[i] = last;
    return top;
}

typedef struct symlist {
    sym *v;
    size_t n, cap;
} symlist;

static int sym_add(symlist *l, int32_t id)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        sym *v = realloc(l->v, cap * sizeof *v);
        if (!v) return -1;
        l->v = v;
        l->cap = cap;
    }
    int32_t i = (int32_t)l->n;
    l->v[l->n++] = (sym){id, i - 1, i + 1, 1};
    return 0;
}

/* Word::merge_all of `tokenizers`, including its stale-entry check. */
static int merge_all(const tk_bpe *b, symlist *w)
{
    if (w->n) w->v[w->n - 1].next = -1;
    size_t cap = w->n * 2 + 2, hn = 0;
    hent *h = malloc(cap * sizeof *h);
    if (!h) return -1;
    int32_t rank, nid;
    for (size_t i = 0; i + 1 < w->n; i++)
        if (merge_get(b, w->v[i].id, w->v[i + 1].id, &rank, &nid)) hpush(h, &hn, (hent){rank, (int32_t)i, nid});
    while (hn) {
        hent top = hpop(h, &hn);
        sym *cur = &w->v[top.pos];
        if (!cur->alive || cur->next < 0) continue;
        sym *right = &w->v[cur->next];
        if (!merge_get(b, cur->id, right->id, &rank, &nid) || nid != top.nid) continue;
        cur->id = top.nid;
        right->alive = 0;
        cur->next = right->next;
        if (cur->next >= 0) w->v[cur->next].prev = top.pos;
        if (hn + 2 > cap) {
            cap *= 2;
            hent *g = realloc(h, cap * sizeof *h);
            if (!g) {
                free(h);
                return -1;
            }
            h = g;
        }
        if (cur->prev >= 0 && merge_get(b, w->v[cur->prev].id, cur->id, &rank, &nid))
            hpush(h, &hn, (hent){rank, cur->prev, nid});
        if (cur->next >= 0 && merge_get(b, cur->id, w->v[cur->next].id, &rank, &nid))
            hpush(h, &hn, (hent){rank, top.pos, nid});
    }
    free(h);
    return 0;
}

/* BPE::merge_word: characters (with prefix/suffix) to ids, byte fallback, unk. */
static int word_symbols(const tk_bpe *b, const char *s, size_t n, symlist *w)
{
    int32_t unk = -1; /* pending unk (fused while fuse_unk) */
    tune_strbuf piece = {0};
    int rc = 0;
    for (size_t i = 0; i < n && !rc;) {
        int32_t cp;
        size_t bad;
        size_t k = (size_t)tk_utf8_next((const uint8_t *)s + i, n - i, &cp, &bad);
        if (!k) k = bad;
        const char *c = s + i;
        size_t cl = k;
        if ((i > 0 && b->prefix) || (i + k == n && b->suffix)) {
            piece.len = 0;
            if (i > 0 && b->prefix) tune_strbuf_puts(&piece, b->prefix);
            tune_strbuf_append(&piece, s + i, k);
            if (i + k == n && b->suffix) tune_strbuf_puts(&piece, b->suffix);
            if (piece.oom) {
                rc = -1;
                break;
            }
            c = piece.data;
            cl = piece.len;
        }
        i += k;
        int32_t id = tk_strmap_get(&b->vocab, c, cl);
        if (id >= 0) {
            if (unk >= 0 && sym_add(w, unk)) rc = -1;
            unk = -1;
            if (sym_add(w, id)) rc = -1;
            continue;
        }
        if (b->byte_fallback) {
            size_t j = 0;
            while (j < cl && b->byte_id[(uint8_t)c[j]] >= 0) j++;
            if (j == cl) { /* as HF: byte pieces go in before a pending unk */
                for (j = 0; j < cl && !rc; j++) rc = sym_add(w, b->byte_id[(uint8_t)c[j]]);
                continue;
            }
        }
        if (b->unk_id >= 0) {
            if (unk >= 0 && !b->fuse_unk && sym_add(w, unk)) rc = -1;
            unk = b->unk_id;
        }
        /* With no unk token the character is dropped, as HF does. */
    }
    if (!rc && unk >= 0) rc = sym_add(w, unk);
    tune_strbuf_free(&piece);
    return rc;
}

int tk_bpe_encode(tk_bpe *b, const char *s, size_t n, tune_ids *out)
{
    if (!n) return 0;
    if (b->ignore_merges) {
        int32_t id = tk_strmap_get(&b->vocab, s, n);
        if (id >= 0) return tk_ids_push(out, id);
    }
    cache_slot *slot = NULL;
    if (n <= CACHE_MAX_WORD) {
        slot = &b->cache[tk_hash(s, n) & (CACHE_SLOTS - 1)];
        if (slot->word && slot->len == n && !memcmp(slot->word, s, n)) {
            for (uint32_t i = 0; i < slot->n; i++)
                if (tk_ids_push(out, slot->ids[i])) return -1;
            return 0;
        }
    }
    symlist w = {0};
    if (word_symbols(b, s, n, &w) || merge_all(b, &w)) {
        free(w.v);
        return -1;
    }
    size_t first = out->n;
    int rc = 0;
    for (size_t i = 0; i < w.n && !rc; i++)
        if (w.v[i].alive) rc = tk_ids_push(out, w.v[i].id);
    free(w.v);
    if (rc || !slot) return rc;
    char *word = malloc(n);
    int32_t *ids = malloc((out->n - first + 1) * sizeof *ids);
    if (!word || !ids) { /* the cache is an optimisation: skip it */
        free(word);
        free(ids);
        return 0;
    }
    free(slot->word);
    free(slot->ids);
    memcpy(word, s, n);
    if (out->n > first) memcpy(ids, out->ids + first, (out->n - first) * sizeof *ids); /* out->ids may be NULL */
    *slot = (cache_slot){word, ids, (uint32_t)n, (uint32_t)(out->n - first)};
    return 0;
}
