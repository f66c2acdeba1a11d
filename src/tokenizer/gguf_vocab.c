/* GGUF vocabularies (tokenizer.ggml.*) turned into the tokenizer.json
 * document Transformers builds from them, then loaded like any other:
 *   "gpt2"  byte-level BPE: tokens respelled into the byte alphabet where
 *           needed, the file's merges; pre-tokenizer from tokenizer.ggml.pre
 *           as llama.cpp applies it (llama-bpe: Llama 3 split, ignore_merges;
 *           smollm: digits one by one, then the GPT-2 regex; gpt2/default:
 *           the GPT-2 regex). Other pre-types are refused by name.
 *   "llama" SentencePiece BPE: merges derived from the vocabulary and its
 *           scores (Transformers' generate_merges), byte fallback, Metaspace
 *           (prepend first), decoder Replace/ByteFallback/Fuse/Strip.
 * Control tokens (type 3) and the bos/eos/unk/pad tokens become special
 * added tokens, user-defined ones (type 4) plain added tokens. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "tune/gguf.h"

#define LLAMA3_RE                                                                                                     \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|" \
    "\\s+(?!\\S)|\\s+"

enum { TYPE_NORMAL = 1, TYPE_UNKNOWN = 2, TYPE_CONTROL = 3, TYPE_USER = 4 };

/* A GGUF string as a NUL-terminated copy; NULL when it holds a NUL or memory runs out. */
static char *dup_str(tune_gguf_str s)
{
    if (memchr(s.ptr, 0, s.len)) return NULL;
    char *c = malloc(s.len + 1);
    if (!c) return NULL;
    memcpy(c, s.ptr, s.len);
    c[s.len] = 0;
    return c;
}

/* Whether every character of s is one of the 256 byte-level characters. */
static int in_byte_alphabet(const char *s)
{
    size_t n = strlen(s);
    for (size_t i = 0; i < n;) {
        int32_t cp;
        size_t bad;
        int k = tk_utf8_next((const uint8_t *)s + i, n - i, &cp, &bad);
        if (!k || tk_cp_to_byte(cp) < 0) return 0;
        i += (size_t)k;
    }
    return 1;
}

static char *respell(const char *s)
{
    tune_strbuf sb = {0};
    char u[4];
    for (const char *p = s; *p; p++) tune_strbuf_append(&sb, u, (size_t)tk_utf8_encode(tk_byte_to_cp((uint8_t)*p), u));
    if (!sb.data) tune_strbuf_append(&sb, "", 0);
    if (sb.oom) {
        tune_strbuf_free(&sb);
        return NULL;
    }
    return sb.data;
}

static size_t n_chars(const char *s, size_t n)
{
    size_t c = 0;
    for (size_t i = 0; i < n; i++) c += ((uint8_t)s[i] & 0xC0) != 0x80;
    return c;
}

typedef struct merge_item {
    float score;
    uint32_t lenl, lenr; /* in characters */
    uint32_t seq;        /* order before sorting (stable ties) */
    int32_t idl, idr;
    const char *tok; /* the merged token */
    uint32_t cut;    /* byte where the right part starts */
} merge_item;

static int cmp_local(const void *a, const void *b)
{
    const merge_item *x = a, *y = b;
    if (x->idl != y->idl) return x->idl < y->idl ? -1 : 1;
    return (x->idr > y->idr) - (x->idr < y->idr);
}

/* sorted(key=(score, len(l), len(r)), reverse=True), stable. */
static int cmp_global(const void *a, const void *b)
{
    const merge_item *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    if (x->lenl != y->lenl) return x->lenl > y->lenl ? -1 : 1;
    if (x->lenr != y->lenr) return x->lenr > y->lenr ? -1 : 1;
    return (x->seq > y->seq) - (x->seq < y->seq);
}

/* Transformers' generate_merges(vocab, scores): every split of every token
 * into two vocabulary tokens, best score first. Adds [l, r] pairs to merges. */
static tune_status derive_merges(char **tokens, const float *scores, size_t n, cJSON *merges, const char *file,
                                 tune_error *err)
{
    tk_strmap vocab = {0}, first = {0}; /* token -> last id; token -> first position */
    tune_status st = TUNE_OK;
    for (size_t i = 0; i < n && st == TUNE_OK; i++) {
        size_t l = strlen(tokens[i]);
        if (tk_strmap_put(&vocab, tokens[i], l, (int32_t)i) ||
            (tk_strmap_get(&first, tokens[i], l) < 0 && tk_strmap_put(&first, tokens[i], l, (int32_t)i)))
            st = tune_fail_run(err, file, "out of memory");
    }
    merge_item *items = NULL;
    size_t ni = 0, cap = 0;
    for (size_t i = 0; i < n && st == TUNE_OK; i++) {
        const char *t = tokens[i];
        size_t tl = strlen(t);
        if (tk_strmap_get(&first, t, tl) != (int32_t)i) continue; /* a repeat: dict order keeps the first */
        float score = scores[tk_strmap_get(&vocab, t, tl)];       /* and the last value */
        size_t start = ni;
        for (size_t cut = 1; cut < tl; cut++) {
            if (((uint8_t)t[cut] & 0xC0) == 0x80) continue; /* split between characters only */
            int32_t l = tk_strmap_get(&vocab, t, cut), r = tk_strmap_get(&vocab, t + cut, tl - cut);
            if (l < 0 || r < 0) continue;
            if (ni == cap) {
                cap = cap ? cap * 2 : 4096;
                merge_item *g = realloc(items, cap * sizeof *g);
                if (!g) {
                    st = tune_fail_run(err, file, "out of memory");
                    break;
                }
                items = g;
            }
            items[ni++] = (merge_item){score, (uint32_t)n_chars(t, cut), (uint32_t)n_chars(t + cut, tl - cut), 0,
                                       l, r, t, (uint32_t)cut};
        }
        qsort(items + start, ni - start, sizeof *items, cmp_local);
    }
    for (size_t i = 0; i < ni; i++) items[i].seq = (uint32_t)i;
    if (st == TUNE_OK) qsort(items, ni, sizeof *items, cmp_global);
    for (size_t i = 0; i < ni && st == TUNE_OK; i++) {
        const merge_item *m = &items[i];
        char *l = strndup(m->tok, m->cut);
        cJSON *pair = cJSON_CreateArray();
        if (!l || !pair || !cJSON_AddItemToArray(merges, pair) ||
            !cJSON_AddItemToArray(pair, cJSON_CreateString(l)) ||
            !cJSON_AddItemToArray(pair, cJSON_CreateString(m->tok + m->cut)))
            st = tune_fail_run(err, file, "out of memory");
        free(l);
    }
    free(items);
    tk_strmap_free(&vocab);
    tk_strmap_free(&first);
    return st;
}

static tune_status add_token(cJSON *added, int32_t id, const char *content, int special, const char *file,
                             tune_error *err)
{
    for (const cJSON *a = added->child; a; a = a->next) /* already there: nothing to do */
        if (!strcmp(cJSON_GetObjectItemCaseSensitive(a, "content")->valuestring, content)) return TUNE_OK;
    cJSON *o = cJSON_CreateObject();
    if (!o || !cJSON_AddItemToArray(added, o) || !cJSON_AddNumberToObject(o, "id", id) ||
        !cJSON_AddStringToObject(o, "content", content) || !cJSON_AddBoolToObject(o, "single_word", 0) ||
        !cJSON_AddBoolToObject(o, "lstrip", 0) || !cJSON_AddBoolToObject(o, "rstrip", 0) ||
        !cJSON_AddBoolToObject(o, "normalized", 0) || !cJSON_AddBoolToObject(o, "special", special))
        return tune_fail_run(err, file, "out of memory");
    return TUNE_OK;
}

static int32_t opt_id(const tune_gguf *g, const char *key, size_t n_tokens)
{
    int64_t v;
    tune_error ignore;
    if (!tune_gguf_find(g, key) || tune_gguf_get_int(g, key, &v, &ignore) != TUNE_OK) return -1;
    return v >= 0 && (uint64_t)v < n_tokens ? (int32_t)v : -1;
}

static int opt_bool(const tune_gguf *g, const char *key, int dflt)
{
    int v;
    tune_error ignore;
    if (!tune_gguf_find(g, key) || tune_gguf_get_bool(g, key, &v, &ignore) != TUNE_OK) return dflt;
    return v;
}

/* The ByteLevel decoder as tokenizers serialises it (its options do not change decoding). */
#define HF_HEADER "\"version\":\"1.0\",\"truncation\":null,\"padding\":null,"
#define BYTE_LEVEL_DECODER "{\"type\":\"ByteLevel\",\"add_prefix_space\":true,\"trim_offsets\":true,\"use_regex\":true}"

/* The pipeline parts (everything but model and added_tokens) as JSON text, every field
 * that tokenizers' deserialiser requires spelled out, so the document is a tokenizer.json. */
static const char *pipeline_json(int spm, const char *pre)
{
    if (spm)
        return "{" HF_HEADER "\"normalizer\":null,"
               "\"pre_tokenizer\":{\"type\":\"Metaspace\",\"replacement\":\"\\u2581\",\"prepend_scheme\":\"first\",\"split\":false},"
               "\"decoder\":{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"Replace\",\"pattern\":{\"String\":\"\\u2581\"},"
               "\"content\":\" \"},{\"type\":\"ByteFallback\"},{\"type\":\"Fuse\"},"
               "{\"type\":\"Strip\",\"content\":\" \",\"start\":1,\"stop\":0}]}}";
    static const char *llama3[] = {"llama-bpe", "llama3", "llama-v3"};
    for (size_t i = 0; i < sizeof llama3 / sizeof *llama3; i++)
        if (!strcmp(pre, llama3[i]))
            return "{" HF_HEADER "\"normalizer\":null,\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":["
                   "{\"type\":\"Split\",\"pattern\":{\"Regex\":\"LLAMA3\"},\"behavior\":\"Isolated\",\"invert\":false},"
                   "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":true,\"use_regex\":false}]},"
                   "\"decoder\":" BYTE_LEVEL_DECODER "}";
    if (!strcmp(pre, "smollm"))
        return "{" HF_HEADER "\"normalizer\":null,\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":["
               "{\"type\":\"Digits\",\"individual_digits\":true},"
               "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":true,\"use_regex\":true}]},"
               "\"decoder\":" BYTE_LEVEL_DECODER "}";
    if (!strcmp(pre, "gpt2") || !strcmp(pre, "default"))
        return "{" HF_HEADER "\"normalizer\":null,\"pre_tokenizer\":{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":true,\"use_regex\":true},"
               "\"decoder\":" BYTE_LEVEL_DECODER "}";
    return NULL;
}

/* Escapes s for a JSON string into sb (for the template's token names). */
static void json_escape(tune_strbuf *sb, const char *s)
{
    cJSON *j = cJSON_CreateString(s);
    char *p = j ? cJSON_PrintUnformatted(j) : NULL;
    if (p) tune_strbuf_puts(sb, p);
    else sb->oom = 1;
    free(p);
    cJSON_Delete(j);
}

static tune_status build_doc(const tune_gguf *g, cJSON **out, tk_gguf_meta *meta, const char *file, tune_error *err)
{
    tune_gguf_str model_s, pre_s = {"default", 7};
    tune_status st = tune_gguf_get_str(g, "tokenizer.ggml.model", &model_s, err);
    if (st != TUNE_OK) return st;
    int spm = tune_gguf_str_eq(model_s, "llama");
    if (!spm && !tune_gguf_str_eq(model_s, "gpt2"))
        return tune_fail_input(err, file, "tokenizer.ggml.model \"%.*s\" is not supported (tune reads \"gpt2\" and \"llama\")",
                               (int)(model_s.len > 64 ? 64 : model_s.len), model_s.ptr);
    if (tune_gguf_find(g, "tokenizer.ggml.pre") && (st = tune_gguf_get_str(g, "tokenizer.ggml.pre", &pre_s, err)) != TUNE_OK)
        return st;
    char pre[64];
    snprintf(pre, sizeof pre, "%.*s", (int)(pre_s.len > 63 ? 63 : pre_s.len), pre_s.ptr);
    const char *pipe = pipeline_json(spm, pre);
    if (!pipe)
        return tune_fail_input(err, file, "tokenizer.ggml.pre \"%s\" is not supported (tune reads llama-bpe, smollm, gpt2, default)",
                               pre);
    const tune_gguf_str *toks;
    uint64_t n;
    if ((st = tune_gguf_get_str_array(g, "tokenizer.ggml.tokens", &toks, &n, err)) != TUNE_OK) return st;
    if (n == 0 || n >= (1u << 26)) return tune_fail_input(err, file, "tokenizer.ggml.tokens: %llu tokens", (unsigned long long)n);
    int64_t *types = NULL;
    float *scores = NULL;
    uint64_t nt = 0, ns = 0;
    if (tune_gguf_find(g, "tokenizer.ggml.token_type") &&
        (st = tune_gguf_get_int_array(g, "tokenizer.ggml.token_type", &types, &nt, err)) != TUNE_OK)
        return st;
    if (st == TUNE_OK && types && nt != n)
        st = tune_fail_input(err, file, "tokenizer.ggml.token_type has %llu entries for %llu tokens", (unsigned long long)nt,
                             (unsigned long long)n);
    if (st == TUNE_OK && spm) {
        if ((st = tune_gguf_get_float_array(g, "tokenizer.ggml.scores", &scores, &ns, err)) == TUNE_OK && ns != n)
            st = tune_fail_input(err, file, "tokenizer.ggml.scores has %llu entries for %llu tokens", (unsigned long long)ns,
                                 (unsigned long long)n);
    }
    char **spelled = calloc(n, sizeof *spelled); /* vocabulary spelling */
    char **orig = calloc(n, sizeof *orig);       /* as the file spells it */
    cJSON *doc = cJSON_Parse(pipe);
    /* The regex goes in as a string value (the JSON text above cannot spell its backslashes plainly). */
    cJSON *split = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(doc, "pre_tokenizer"),
                                                                       "pretokenizers"), 0);
    cJSON *pat = cJSON_GetObjectItemCaseSensitive(split, "pattern");
    if (pat && !cJSON_ReplaceItemInObjectCaseSensitive(pat, "Regex", cJSON_CreateString(LLAMA3_RE)))
        st = tune_fail_run(err, file, "out of memory");
    cJSON *model = cJSON_CreateObject(), *vocab = cJSON_CreateObject(), *merges = cJSON_CreateArray();
    cJSON *added = cJSON_CreateArray();
    if (st == TUNE_OK && (!spelled || !orig || !doc || !model || !vocab || !merges || !added))
        st = tune_fail_run(err, file, "out of memory");
    for (uint64_t i = 0; i < n && st == TUNE_OK; i++) {
        if (!(orig[i] = dup_str(toks[i]))) {
            st = tune_fail_input(err, file, "tokenizer.ggml.tokens[%llu] holds U+0000 (or memory ran out)", (unsigned long long)i);
            break;
        }
        spelled[i] = spm || in_byte_alphabet(orig[i]) ? strdup(orig[i]) : respell(orig[i]);
        if (!spelled[i] || !cJSON_AddNumberToObject(vocab, spelled[i], (double)i)) st = tune_fail_run(err, file, "out of memory");
    }
    if (st == TUNE_OK && spm) st = derive_merges(spelled, scores, n, merges, file, err);
    if (st == TUNE_OK && !spm) {
        const tune_gguf_str *ms = NULL;
        uint64_t nm = 0;
        if (tune_gguf_find(g, "tokenizer.ggml.merges")) st = tune_gguf_get_str_array(g, "tokenizer.ggml.merges", &ms, &nm, err);
        for (uint64_t i = 0; i < nm && st == TUNE_OK; i++) {
            char *m = dup_str(ms[i]);
            if (!m || !cJSON_AddItemToArray(merges, cJSON_CreateString(m)))
                st = tune_fail_input(err, file, "tokenizer.ggml.merges[%llu] holds U+0000 (or memory ran out)", (unsigned long long)i);
            free(m);
        }
    }
    /* Roles, then control and user-defined tokens, as added tokens. */
    meta->bos = opt_id(g, "tokenizer.ggml.bos_token_id", n);
    meta->eos = opt_id(g, "tokenizer.ggml.eos_token_id", n);
    meta->unk = opt_id(g, "tokenizer.ggml.unknown_token_id", n);
    meta->pad = opt_id(g, "tokenizer.ggml.padding_token_id", n);
    meta->add_bos = opt_bool(g, "tokenizer.ggml.add_bos_token", spm ? 1 : -1);
    meta->add_eos = opt_bool(g, "tokenizer.ggml.add_eos_token", -1);
    int32_t roles[] = {meta->unk, meta->bos, meta->eos, meta->pad};
    for (int k = 0; k < 4 && st == TUNE_OK; k++) /* a role token spelled outside the vocabulary has no id: left out */
        if (roles[k] >= 0 && !strcmp(orig[roles[k]], spelled[roles[k]]))
            st = add_token(added, roles[k], orig[roles[k]], 1, file, err);
    for (uint64_t i = 0; types && i < n && st == TUNE_OK; i++) {
        int plain = !strcmp(orig[i], spelled[i]); /* byte-level: control tokens outside the alphabet are mislabels */
        if (types[i] == TYPE_CONTROL && plain) st = add_token(added, (int32_t)i, orig[i], 1, file, err);
        else if (types[i] == TYPE_USER && plain) st = add_token(added, (int32_t)i, orig[i], 0, file, err);
    }
    /* Post-processor: bos before and eos after when the file asks for them. */
    tune_strbuf tp = {0};
    if (st == TUNE_OK) {
        int b = meta->add_bos == 1 && meta->bos >= 0, e = meta->add_eos == 1 && meta->eos >= 0;
        tune_strbuf_puts(&tp, "{\"type\":\"TemplateProcessing\",\"single\":[");
        if (b) {
            tune_strbuf_puts(&tp, "{\"SpecialToken\":{\"id\":");
            json_escape(&tp, orig[meta->bos]);
            tune_strbuf_puts(&tp, ",\"type_id\":0}},");
        }
        tune_strbuf_puts(&tp, "{\"Sequence\":{\"id\":\"A\",\"type_id\":0}}");
        if (e) {
            tune_strbuf_puts(&tp, ",{\"SpecialToken\":{\"id\":");
            json_escape(&tp, orig[meta->eos]);
            tune_strbuf_puts(&tp, ",\"type_id\":0}}");
        }
        tune_strbuf_puts(&tp, "],\"pair\":[{\"Sequence\":{\"id\":\"A\",\"type_id\":0}},{\"Sequence\":{\"id\":\"B\",\"type_id\":1}}],"
                              "\"special_tokens\":{");
        for (int k = 0; k < 2; k++) {
            int32_t id = k ? meta->eos : meta->bos;
            if (!(k ? e : b)) continue;
            if (k && b) tune_strbuf_puts(&tp, ",");
            json_escape(&tp, orig[id]);
            tune_strbuf_puts(&tp, ":{\"id\":");
            json_escape(&tp, orig[id]);
            tune_strbuf_printf(&tp, ",\"ids\":[%d],\"tokens\":[", id);
            json_escape(&tp, orig[id]);
            tune_strbuf_puts(&tp, "]}");
        }
        tune_strbuf_puts(&tp, "}}");
        cJSON *post = tp.oom ? NULL : cJSON_Parse(tp.data);
        if (!post || !cJSON_AddItemToObject(doc, "post_processor", post)) {
            cJSON_Delete(post);
            st = tune_fail_run(err, file, "out of memory");
        }
    }
    tune_strbuf_free(&tp);
    if (st == TUNE_OK) {
        const int unk = spm && meta->unk >= 0;
        int ok = cJSON_AddStringToObject(model, "type", "BPE") && cJSON_AddNullToObject(model, "dropout") &&
                 (unk ? cJSON_AddStringToObject(model, "unk_token", orig[meta->unk]) != NULL
                      : cJSON_AddNullToObject(model, "unk_token") != NULL) &&
                 cJSON_AddNullToObject(model, "continuing_subword_prefix") &&
                 cJSON_AddNullToObject(model, "end_of_word_suffix") && cJSON_AddBoolToObject(model, "fuse_unk", spm) &&
                 cJSON_AddBoolToObject(model, "byte_fallback", spm) &&
                 cJSON_AddBoolToObject(model, "ignore_merges", strstr(pipe, "Split") != NULL) &&
                 cJSON_AddItemToObject(model, "vocab", vocab);
        vocab = NULL;
        ok = ok && cJSON_AddItemToObject(model, "merges", merges);
        merges = NULL;
        ok = ok && cJSON_AddItemToObject(doc, "model", model);
        model = NULL;
        ok = ok && cJSON_AddItemToObject(doc, "added_tokens", added);
        added = NULL;
        if (!ok) st = tune_fail_run(err, file, "out of memory");
    }
    for (uint64_t i = 0; spelled && orig && i < n; i++) {
        free(spelled[i]);
        free(orig[i]);
    }
    free(spelled);
    free(orig);
    free(types);
    free(scores);
    cJSON_Delete(model);
    cJSON_Delete(vocab);
    cJSON_Delete(merges);
    cJSON_Delete(added);
    if (st != TUNE_OK) {
        cJSON_Delete(doc);
        return st;
    }
    if (tune_gguf_find(g, "tokenizer.chat_template")) {
        tune_gguf_str t;
        if (tune_gguf_get_str(g, "tokenizer.chat_template", &t, err) == TUNE_OK) meta->chat_template = dup_str(t);
    }
    *out = doc;
    return TUNE_OK;
}

tune_status tk_gguf_document(const char *path, cJSON **doc, tk_gguf_meta *meta, tune_error *err)
{
    tune_gguf g;
    *doc = NULL;
    memset(meta, 0, sizeof *meta);
    tune_status st = tune_gguf_open(path, &g, err);
    if (st != TUNE_OK) return st;
    st = build_doc(&g, doc, meta, path, err);
    tune_gguf_close(&g);
    return st;
}
