/* Tokenizer against Hugging Face `tokenizers`: every corpus line must give
 * the same ids and the same decode (goldens from
 * tools/reference/make_tokenizer_golden.py). */
#include <cJSON.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"
#include "tune/rng.h"
#include "tune/tokenizer.h"
#include "tune/util.h"

static char *data_path(const char *rel)
{
    static char buf[8][1024];
    static int k;
    char *p = buf[k++ % 8];
    snprintf(p, 1024, "%s/tokenizer/%s", test_data_dir(), rel);
    return p;
}

/* Lines of a JSONL file, parsed. */
typedef struct jlines {
    cJSON **v;
    size_t n;
} jlines;

static jlines read_jsonl(const char *path)
{
    jlines l = {0};
    char *data;
    size_t len;
    tune_error err;
    ck_assert_msg(tune_read_file(path, &data, &len, &err) == TUNE_OK, "%s", err.message);
    size_t cap = 0;
    for (char *s = data; *s;) {
        char *e = strchr(s, '\n');
        if (e) *e = 0;
        if (*s) {
            if (l.n == cap) {
                cap = cap ? cap * 2 : 256;
                l.v = realloc(l.v, cap * sizeof *l.v);
                ck_assert_ptr_nonnull(l.v);
            }
            l.v[l.n] = cJSON_Parse(s);
            ck_assert_msg(l.v[l.n] != NULL, "%s: line %zu is not JSON", path, l.n + 1);
            l.n++;
        }
        if (!e) break;
        s = e + 1;
    }
    free(data);
    return l;
}

static void free_jsonl(jlines *l)
{
    for (size_t i = 0; i < l->n; i++) cJSON_Delete(l->v[i]);
    free(l->v);
}

/* Corpus lines are JSON strings that may hold U+0000. */
typedef struct corpus {
    char **s;
    size_t *len;
    size_t n;
} corpus;

static corpus read_corpus(void)
{
    corpus c = {0};
    char *data;
    size_t len;
    tune_error err;
    ck_assert_int_eq(tune_read_file(data_path("corpus.jsonl"), &data, &len, &err), TUNE_OK);
    size_t cap = 0;
    for (char *s = data; *s;) {
        char *e = strchr(s, '\n');
        size_t l = e ? (size_t)(e - s) : strlen(s);
        if (c.n == cap) {
            cap = cap ? cap * 2 : 1024;
            c.s = realloc(c.s, cap * sizeof *c.s);
            c.len = realloc(c.len, cap * sizeof *c.len);
        }
        ck_assert_msg(tune_json_string_decode(s, l, &c.s[c.n], &c.len[c.n], &err) == TUNE_OK, "corpus line %zu", c.n + 1);
        c.n++;
        if (!e) break;
        s = e + 1;
    }
    free(data);
    return c;
}

static void free_corpus(corpus *c)
{
    for (size_t i = 0; i < c->n; i++) free(c->s[i]);
    free(c->s);
    free(c->len);
}

static int ids_equal(const tune_ids *got, const cJSON *want)
{
    if ((size_t)cJSON_GetArraySize(want) != got->n) return 0;
    size_t i = 0;
    for (const cJSON *e = want->child; e; e = e->next, i++)
        if ((int32_t)e->valuedouble != got->ids[i]) return 0;
    return 1;
}

static void show_ids(const char *what, const tune_ids *ids)
{
    fprintf(stderr, "  %s:", what);
    for (size_t i = 0; i < ids->n && i < 40; i++) fprintf(stderr, " %d", ids->ids[i]);
    fprintf(stderr, "\n");
}

/* Compares tok on corpus lines against <prefix>golden.jsonl and
 * <prefix>golden_plain.jsonl; returns the number of mismatches. */
static int check_goldens(tune_tokenizer *tok, const char *prefix)
{
    corpus corpus = read_corpus();
    char p1[512], p2[512];
    snprintf(p1, sizeof p1, "%sgolden.jsonl", prefix);
    snprintf(p2, sizeof p2, "%sgolden_plain.jsonl", prefix);
    jlines gold = read_jsonl(data_path(p1));
    jlines plain = read_jsonl(data_path(p2));
    ck_assert_uint_ge(corpus.n, gold.n);
    int bad = 0;
    tune_ids ids = {0}, full = {0};
    tune_error err;
    for (size_t i = 0; i < gold.n; i++) {
        const char *text = corpus.s[i];
        size_t tl = corpus.len[i];
        ck_assert_int_eq(tune_tokenizer_encode(tok, text, tl, 1, &ids, &err), TUNE_OK);
        const cJSON *want = cJSON_GetObjectItem(gold.v[i], "ids");
        if (!ids_equal(&ids, want)) {
            if (bad++ < 5) {
                char *w = cJSON_PrintUnformatted(want);
                fprintf(stderr, "%s line %zu %s: ids differ\n  want: %.300s\n", prefix, i + 1, text, w);
                free(w);
                show_ids("got ", &ids);
            }
            continue;
        }
        char *dec;
        size_t dl;
        ck_assert_int_eq(tune_tokenizer_decode(tok, ids.ids, ids.n, 0, &dec, &dl, &err), TUNE_OK);
        const cJSON *wd = cJSON_GetObjectItem(gold.v[i], "decoded");
        const char *want_dec = wd ? wd->valuestring : text;
        size_t wl = wd ? strlen(want_dec) : tl;
        if (wd && memchr(text, 0, tl)) wl = dl; /* a NUL inside: compare up to it (cJSON stops there) */
        if (wl != dl || memcmp(dec, want_dec, dl)) {
            if (bad++ < 5) fprintf(stderr, "%s line %zu: decode differs\n  want: [%s]\n  got:  [%s]\n", prefix, i + 1, want_dec, dec);
        }
        free(dec);
    }
    for (size_t i = 0; i < plain.n; i++) {
        const char *text = corpus.s[i];
        size_t tl = corpus.len[i];
        ck_assert_int_eq(tune_tokenizer_encode(tok, text, tl, 0, &ids, &err), TUNE_OK);
        if (!ids_equal(&ids, cJSON_GetObjectItem(plain.v[i], "ids"))) {
            if (bad++ < 5) fprintf(stderr, "%s plain line %zu [%s]: ids differ\n", prefix, i + 1, text);
            continue;
        }
        ck_assert_int_eq(tune_tokenizer_encode(tok, text, tl, 1, &full, &err), TUNE_OK);
        char *dec;
        size_t dl;
        ck_assert_int_eq(tune_tokenizer_decode(tok, full.ids, full.n, 1, &dec, &dl, &err), TUNE_OK);
        const char *want = cJSON_GetObjectItem(plain.v[i], "skip")->valuestring;
        size_t wl = memchr(text, 0, tl) ? dl : strlen(want);
        if (wl != dl || memcmp(dec, want, dl)) {
            if (bad++ < 5) fprintf(stderr, "%s plain line %zu: skip-special decode differs\n  want: [%s]\n  got:  [%s]\n", prefix, i + 1, want, dec);
        }
        free(dec);
    }
    tune_ids_free(&ids);
    tune_ids_free(&full);
    free_corpus(&corpus);
    free_jsonl(&gold);
    free_jsonl(&plain);
    return bad;
}

static tune_tokenizer *load(const char *rel)
{
    tune_tokenizer *tok = NULL;
    tune_error err;
    tune_status st = tune_tokenizer_load(data_path(rel), &tok, &err);
    ck_assert_msg(st == TUNE_OK, "%s: %s", rel, err.message);
    return tok;
}

static void golden_dir(const char *name)
{
    tune_tokenizer *tok = load(name);
    char prefix[256];
    snprintf(prefix, sizeof prefix, "%s/", name);
    int bad = check_goldens(tok, prefix);
    ck_assert_msg(bad == 0, "%s: %d mismatches against HF tokenizers", name, bad);
    tune_tokenizer_free(tok);
}

START_TEST(smollm2_matches_hf) { golden_dir("smollm2"); }
END_TEST
START_TEST(llama3_matches_hf) { golden_dir("llama3"); }
END_TEST
START_TEST(sp_norm_matches_hf) { golden_dir("sp_norm"); }
END_TEST
START_TEST(sp_meta_matches_hf) { golden_dir("sp_meta"); }
END_TEST
START_TEST(sp_meta_split_matches_hf) { golden_dir("sp_meta_split"); }
END_TEST
START_TEST(subword_matches_hf) { golden_dir(_i ? "subword_roberta" : "subword_bert"); }
END_TEST

static const char *VARIANTS[] = {"split_removed", "split_prev",   "split_next",  "split_contig_invert",
                                 "split_removed_invert", "digits_ws", "wssplit", "gpt2_prefix",
                                 "nfkc_lower", "nfc_strip"};

/* variants/tokenizer.json with the variant's normalizer/pre_tokenizer/decoder spliced in. */
START_TEST(variants_match_hf)
{
    const char *name = VARIANTS[_i];
    char *base, *part;
    size_t bl, pl;
    tune_error err;
    char rel[256];
    snprintf(rel, sizeof rel, "variants/%s.json", name);
    ck_assert_int_eq(tune_read_file(data_path("variants/tokenizer.json"), &base, &bl, &err), TUNE_OK);
    ck_assert_int_eq(tune_read_file(data_path(rel), &part, &pl, &err), TUNE_OK);
    cJSON *doc = cJSON_Parse(base), *p = cJSON_Parse(part);
    ck_assert_ptr_nonnull(doc);
    ck_assert_ptr_nonnull(p);
    const char *keys[] = {"normalizer", "pre_tokenizer", "decoder"};
    for (int k = 0; k < 3; k++)
        cJSON_ReplaceItemInObject(doc, keys[k], cJSON_Duplicate(cJSON_GetObjectItem(p, keys[k]), 1));
    char *json = cJSON_PrintUnformatted(doc);
    tune_tokenizer *tok;
    ck_assert_msg(tune_tokenizer_load_json(json, strlen(json), rel, &tok, &err) == TUNE_OK, "%s", err.message);
    char prefix[256];
    snprintf(prefix, sizeof prefix, "variants/%s.", name);
    int bad = check_goldens(tok, prefix);
    ck_assert_msg(bad == 0, "%s: %d mismatches against HF tokenizers", name, bad);
    tune_tokenizer_free(tok);
    free(json);
    cJSON_Delete(doc);
    cJSON_Delete(p);
    free(base);
    free(part);
}
END_TEST

static size_t unhex(const char *h, char *out)
{
    size_t n = strlen(h) / 2;
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        sscanf(h + 2 * i, "%2x", &v);
        out[i] = (char)v;
    }
    return n;
}

/* Bytes that are not UTF-8 encode as HF encodes bytes.decode("utf-8", "replace"). */
START_TEST(invalid_utf8_replaced_as_python_does)
{
    tune_tokenizer *tok = load("smollm2");
    jlines l = read_jsonl(data_path("invalid_utf8.jsonl"));
    ck_assert_uint_ge(l.n, 5);
    tune_ids ids = {0};
    tune_error err;
    for (size_t i = 0; i < l.n; i++) {
        char buf[256];
        size_t n = unhex(cJSON_GetObjectItem(l.v[i], "hex")->valuestring, buf);
        ck_assert_int_eq(tune_tokenizer_encode(tok, buf, n, 1, &ids, &err), TUNE_OK);
        ck_assert_msg(ids_equal(&ids, cJSON_GetObjectItem(l.v[i], "ids")), "line %zu", i + 1);
    }
    tune_ids_free(&ids);
    free_jsonl(&l);
    tune_tokenizer_free(tok);
}
END_TEST

START_TEST(roles_and_template_from_config)
{
    tune_tokenizer *tok = load("smollm2");
    const tune_special_ids *r = tune_tokenizer_specials(tok);
    ck_assert_int_eq(r->bos, 1); /* <|im_start|> */
    ck_assert_int_eq(r->eos, 2); /* <|im_end|> */
    ck_assert_int_eq(r->pad, 2);
    ck_assert_int_eq(r->unk, 0);
    ck_assert_int_eq(r->add_bos, 0);
    ck_assert_int_eq(tune_tokenizer_vocab_size(tok), 49152);
    ck_assert_str_eq(tune_tokenizer_id_to_token(tok, 1), "<|im_start|>");
    ck_assert_int_eq(tune_tokenizer_token_to_id(tok, "<|im_end|>"), 2);
    ck_assert_int_eq(tune_tokenizer_token_to_id(tok, "no such token"), -1);
    ck_assert_ptr_null(tune_tokenizer_id_to_token(tok, 49152));
    ck_assert(tune_tokenizer_is_special(tok, 2));
    ck_assert(!tune_tokenizer_is_special(tok, 100));
    ck_assert_ptr_nonnull(strstr(tune_tokenizer_chat_template(tok), "<|im_start|>"));
    tune_tokenizer_free(tok);

    tok = load("sp_norm"); /* chat_template given as a list of {name, template} */
    ck_assert_ptr_nonnull(strstr(tune_tokenizer_chat_template(tok), "[INST]"));
    ck_assert_int_eq(tune_tokenizer_specials(tok)->bos, 1);
    ck_assert_int_eq(tune_tokenizer_specials(tok)->add_bos, 1);
    ck_assert_int_eq(tune_tokenizer_specials(tok)->add_eos, 0);
    tune_tokenizer_free(tok);
}
END_TEST

static const char **str_list(const cJSON *arr, size_t *n)
{
    *n = (size_t)cJSON_GetArraySize(arr);
    const char **v = calloc(*n + 1, sizeof *v);
    size_t i = 0;
    for (const cJSON *e = arr->child; e; e = e->next) v[i++] = e->valuestring;
    return v;
}

/* add_special_tokens / add_tokens as HF does them (ids, matching, decode),
 * and the extended tokenizer.json reads back the same. */
START_TEST(add_tokens_as_hf_and_save)
{
    tune_tokenizer *tok = load("llama3");
    char *text;
    size_t len;
    tune_error err;
    ck_assert_int_eq(tune_read_file(data_path("add_tokens.json"), &text, &len, &err), TUNE_OK);
    cJSON *g = cJSON_Parse(text);
    free(text);
    ck_assert_ptr_nonnull(g);
    size_t ns, np, n_new;
    const char **special = str_list(cJSON_GetObjectItem(g, "special"), &ns);
    const char **plain = str_list(cJSON_GetObjectItem(g, "plain"), &np);
    int32_t vs = tune_tokenizer_vocab_size(tok);
    ck_assert_int_eq(tune_tokenizer_add_tokens(tok, special, ns, 1, &n_new, &err), TUNE_OK);
    ck_assert_uint_eq(n_new, 2);
    ck_assert_int_eq(tune_tokenizer_add_tokens(tok, plain, np, 0, &n_new, &err), TUNE_OK);
    ck_assert_uint_eq(n_new, 1);
    ck_assert_int_eq(tune_tokenizer_vocab_size(tok), vs + 3);
    for (const cJSON *e = cJSON_GetObjectItem(g, "ids")->child; e; e = e->next)
        ck_assert_msg(tune_tokenizer_token_to_id(tok, e->string) == (int32_t)e->valuedouble, "id of %s", e->string);
    ck_assert(tune_tokenizer_is_special(tok, tune_tokenizer_token_to_id(tok, "<|tool_call|>")));
    ck_assert(!tune_tokenizer_is_special(tok, tune_tokenizer_token_to_id(tok, "엑셀함수")));

    char dir[256];
    snprintf(dir, sizeof dir, "%s/tune-tok-XXXXXX", P_tmpdir);
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char path[300];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    ck_assert_int_eq(tune_tokenizer_save_json(tok, path, &err), TUNE_OK);
    tune_tokenizer *again;
    ck_assert_msg(tune_tokenizer_load(path, &again, &err) == TUNE_OK, "%s", err.message);
    unlink(path);
    rmdir(dir);
    tune_tokenizer *both[] = {tok, again};
    tune_ids ids = {0};
    for (int k = 0; k < 2; k++)
        for (const cJSON *c = cJSON_GetObjectItem(g, "cases")->child; c; c = c->next) {
            const char *t = cJSON_GetObjectItem(c, "text")->valuestring;
            ck_assert_int_eq(tune_tokenizer_encode(both[k], t, strlen(t), 0, &ids, &err), TUNE_OK);
            ck_assert_msg(ids_equal(&ids, cJSON_GetObjectItem(c, "ids")), "%s (tokenizer %d)", t, k);
            ck_assert_int_eq(tune_tokenizer_encode(both[k], t, strlen(t), 1, &ids, &err), TUNE_OK);
            char *dec;
            size_t dl;
            ck_assert_int_eq(tune_tokenizer_decode(both[k], ids.ids, ids.n, 1, &dec, &dl, &err), TUNE_OK);
            ck_assert_str_eq(dec, cJSON_GetObjectItem(c, "decoded")->valuestring);
            free(dec);
        }
    tune_ids_free(&ids);
    free(special);
    free(plain);
    cJSON_Delete(g);
    tune_tokenizer_free(again);
    tune_tokenizer_free(tok);
}
END_TEST

static void write_text(const char *dir, const char *name, const char *text)
{
    char path[512];
    tune_error err;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    ck_assert_int_eq(tune_write_file_atomic(path, text, strlen(text), &err), TUNE_OK);
}

/* Roles: tokenizer_config.json first (string or AddedToken dict), then the
 * ids of generation_config.json, then config.json; chat_template.jinja wins
 * over the template in tokenizer_config.json. */
START_TEST(roles_reconciled_across_config_files)
{
    char dir[256];
    snprintf(dir, sizeof dir, "%s/tune-tokcfg-XXXXXX", P_tmpdir);
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char *json;
    size_t len;
    tune_error err;
    ck_assert_int_eq(tune_read_file(data_path("llama3/tokenizer.json"), &json, &len, &err), TUNE_OK);
    write_text(dir, "tokenizer.json", json);
    free(json);
    write_text(dir, "config.json", "{\"bos_token_id\": 5, \"eos_token_id\": [7, 8], \"pad_token_id\": 9}");
    write_text(dir, "generation_config.json", "{\"eos_token_id\": [6, 7]}");
    tune_tokenizer *tok;
    ck_assert_msg(tune_tokenizer_load(dir, &tok, &err) == TUNE_OK, "%s", err.message);
    const tune_special_ids *r = tune_tokenizer_specials(tok);
    ck_assert_int_eq(r->bos, 5);
    ck_assert_int_eq(r->eos, 6);
    ck_assert_int_eq(r->pad, 9);
    ck_assert_int_eq(r->add_bos, -1);
    ck_assert_ptr_null(tune_tokenizer_chat_template(tok));
    tune_tokenizer_free(tok);

    write_text(dir, "tokenizer_config.json",
               "{\"bos_token\": {\"content\": \"<|begin_of_text|>\", \"special\": true}, \"eos_token\": \"<|eot_id|>\","
               " \"add_bos_token\": true, \"chat_template\": \"from config\"}");
    write_text(dir, "chat_template.jinja", "from jinja file");
    ck_assert_msg(tune_tokenizer_load(dir, &tok, &err) == TUNE_OK, "%s", err.message);
    r = tune_tokenizer_specials(tok);
    ck_assert_int_eq(r->bos, tune_tokenizer_token_to_id(tok, "<|begin_of_text|>"));
    ck_assert_int_eq(r->eos, tune_tokenizer_token_to_id(tok, "<|eot_id|>"));
    ck_assert_int_eq(r->pad, 9);
    ck_assert_int_eq(r->add_bos, 1);
    ck_assert_str_eq(tune_tokenizer_chat_template(tok), "from jinja file");
    tune_tokenizer_free(tok);

    write_text(dir, "config.json", "{\"bos_token_id\": ");
    ck_assert_int_eq(tune_tokenizer_load(dir, &tok, &err), TUNE_ERR_INPUT);
    ck_assert_ptr_nonnull(strstr(err.file, "config.json"));
    const char *names[] = {"tokenizer.json", "config.json", "generation_config.json", "tokenizer_config.json",
                           "chat_template.jinja"};
    for (int i = 0; i < 5; i++) {
        char path[512];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        unlink(path);
    }
    rmdir(dir);
}
END_TEST

/* Components tune cannot run exactly are refused by name at load. */
static const char *REFUSED[][2] = {
    {"{\"model\":{\"type\":\"Unigram\",\"vocab\":[]}}", "Unigram"},
    {"{\"model\":{\"type\":\"WordPiece\",\"vocab\":{}}}", "WordPiece"},
    {"{\"normalizer\":{\"type\":\"BertNormalizer\"},\"model\":{\"type\":\"BPE\",\"vocab\":{},\"merges\":[]}}", "BertNormalizer"},
    {"{\"pre_tokenizer\":{\"type\":\"Punctuation\"},\"model\":{\"type\":\"BPE\",\"vocab\":{},\"merges\":[]}}", "Punctuation"},
    {"{\"decoder\":{\"type\":\"WordPiece\"},\"model\":{\"type\":\"BPE\",\"vocab\":{},\"merges\":[]}}", "WordPiece"},
    {"{\"post_processor\":{\"type\":\"Foo\"},\"model\":{\"type\":\"BPE\",\"vocab\":{},\"merges\":[]}}", "Foo"},
    {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[\"a b\"]}}", "not in the vocabulary"},
    {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[],\"unk_token\":\"<unk>\"}}", "<unk>"},
    {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[],\"dropout\":0.1}}", "dropout"},
    {"{\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"Regex\":\"(\"},\"behavior\":\"Isolated\"},"
     "\"model\":{\"type\":\"BPE\",\"vocab\":{},\"merges\":[]}}", "regex"},
    {"{\"model\":", "not valid JSON"},
};

START_TEST(unsupported_components_refused)
{
    tune_tokenizer *tok = NULL;
    tune_error err;
    const char *json = REFUSED[_i][0];
    ck_assert_int_eq(tune_tokenizer_load_json(json, strlen(json), "t.json", &tok, &err), TUNE_ERR_INPUT);
    ck_assert_ptr_null(tok);
    ck_assert_msg(strstr(err.message, REFUSED[_i][1]) != NULL, "message '%s' lacks '%s'", err.message, REFUSED[_i][1]);
    ck_assert_str_eq(err.file, "t.json");
}
END_TEST

START_TEST(missing_paths_and_refused_gguf)
{
    tune_tokenizer *tok = NULL;
    tune_error err;
    ck_assert_int_eq(tune_tokenizer_load("/nonexistent/tokenizer.json", &tok, &err), TUNE_ERR_INPUT);
    ck_assert_int_eq(tune_tokenizer_load(test_data_dir(), &tok, &err), TUNE_ERR_INPUT);
    ck_assert_ptr_nonnull(strstr(err.message, "no tokenizer.json"));
    ck_assert_int_eq(tune_tokenizer_load(data_path("gguf"), &tok, &err), TUNE_ERR_INPUT); /* four GGUF files */
    ck_assert_ptr_nonnull(strstr(err.message, "4 GGUF files"));
    ck_assert_int_eq(tune_tokenizer_load(data_path("gguf/refused_model.gguf"), &tok, &err), TUNE_ERR_INPUT);
    ck_assert_ptr_nonnull(strstr(err.message, "\"bert\""));
    ck_assert_int_eq(tune_tokenizer_load(data_path("gguf/refused_pre.gguf"), &tok, &err), TUNE_ERR_INPUT);
    ck_assert_ptr_nonnull(strstr(err.message, "\"tekken\""));
    ck_assert_int_eq(tune_tokenizer_load(data_path("corpus.jsonl"), &tok, &err), TUNE_ERR_INPUT);
    ck_assert_ptr_null(tok);
}
END_TEST

/* GGUF vocabularies: ids and decode as the tokenizer Transformers builds from them. */
START_TEST(gguf_vocab_matches_hf)
{
    const char *names[] = {"bpe_llama3", "spm"};
    char rel[128], prefix[128];
    snprintf(rel, sizeof rel, "gguf/%s.gguf", names[_i]);
    snprintf(prefix, sizeof prefix, "gguf/%s.", names[_i]);
    tune_tokenizer *tok = load(rel);
    int bad = check_goldens(tok, prefix);
    ck_assert_msg(bad == 0, "%s: %d mismatches against HF tokenizers", rel, bad);
    const tune_special_ids *r = tune_tokenizer_specials(tok);
    ck_assert_int_eq(r->add_bos, 1);
    ck_assert_int_ge(r->bos, 1);
    ck_assert_int_ge(r->eos, 2);
    tune_tokenizer_free(tok);
}
END_TEST

/* A GGUF vocabulary written as tokenizer.json + tokenizer_config.json (what
 * tune merge puts next to a merged GGUF base) reads back to the same
 * tokenizer, and the document has the fields tokenizers' deserialiser
 * requires (HF tokenizers itself loads these files to the same ids:
 * tools/reference/README.md). */
START_TEST(gguf_vocab_saves_as_hf_folder)
{
    const char *names[] = {"bpe_llama3", "spm"};
    char rel[128], prefix[128], dir[] = "/tmp/tune_tok_XXXXXX", path[256];
    snprintf(rel, sizeof rel, "gguf/%s.gguf", names[_i]);
    snprintf(prefix, sizeof prefix, "gguf/%s.", names[_i]);
    ck_assert_ptr_nonnull(mkdtemp(dir));
    tune_tokenizer *tok = load(rel), *back = NULL;
    tune_error err;
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    ck_assert_int_eq(tune_tokenizer_save_json(tok, path, &err), TUNE_OK);
    char *json;
    size_t len;
    ck_assert_int_eq(tune_read_file(path, &json, &len, &err), TUNE_OK);
    cJSON *doc = cJSON_Parse(json);
    const cJSON *model = cJSON_GetObjectItem(doc, "model");
    ck_assert_str_eq(cJSON_GetObjectItem(doc, "version")->valuestring, "1.0");
    ck_assert(cJSON_IsNull(cJSON_GetObjectItem(doc, "truncation")) && cJSON_IsNull(cJSON_GetObjectItem(doc, "padding")));
    ck_assert(cJSON_IsNull(cJSON_GetObjectItem(model, "dropout")));
    ck_assert(cJSON_GetObjectItem(model, "continuing_subword_prefix") && cJSON_GetObjectItem(model, "end_of_word_suffix"));
    if (_i == 1) ck_assert_str_eq(cJSON_GetObjectItem(model, "unk_token")->valuestring, "<unk>");
    cJSON_Delete(doc);
    free(json);
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    ck_assert_int_eq(tune_tokenizer_save_config(tok, path, &err), TUNE_OK);
    ck_assert_msg(tune_tokenizer_load(dir, &back, &err) == TUNE_OK, "%s", err.message);
    ck_assert_int_eq(check_goldens(back, prefix), 0);
    const tune_special_ids *a = tune_tokenizer_specials(tok), *b = tune_tokenizer_specials(back);
    ck_assert_int_eq(a->bos, b->bos);
    ck_assert_int_eq(a->eos, b->eos);
    ck_assert_int_eq(a->unk, b->unk);
    ck_assert_int_eq(a->add_bos, b->add_bos);
    ck_assert_int_eq(tune_tokenizer_vocab_size(tok), tune_tokenizer_vocab_size(back));
    tune_tokenizer_free(tok);
    tune_tokenizer_free(back);
    unlink(path);
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    unlink(path);
    rmdir(dir);
}
END_TEST

/* The real SmolLM2 GGUF (models/, fetched by `make model`) reads to the
 * same tokenizer as smollm2/tokenizer.json, over the whole corpus. */
START_TEST(smollm2_gguf_agrees_with_json)
{
    const char *path = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
    if (!tune_path_exists(path)) {
        fprintf(stderr, "SKIPPED smollm2_gguf_agrees_with_json: %s is absent (make model fetches it)\n", path);
        return;
    }
    tune_tokenizer *tok = NULL;
    tune_error err;
    ck_assert_msg(tune_tokenizer_load(path, &tok, &err) == TUNE_OK, "%s", err.message);
    int bad = check_goldens(tok, "smollm2/");
    ck_assert_msg(bad == 0, "%s: %d mismatches against the smollm2 goldens", path, bad);
    const tune_special_ids *r = tune_tokenizer_specials(tok);
    ck_assert_int_eq(r->bos, 1);
    ck_assert_int_eq(r->eos, 2);
    ck_assert_int_eq(r->pad, 2);
    ck_assert_int_eq(r->unk, 0);
    ck_assert_int_eq(r->add_bos, 0);
    ck_assert_int_eq(tune_tokenizer_vocab_size(tok), 49152);
    ck_assert_ptr_nonnull(strstr(tune_tokenizer_chat_template(tok), "<|im_start|>"));
    tune_tokenizer_free(tok);
}
END_TEST

/* Hostile input: random bytes encode without failing, and any ids (negative,
 * past the vocabulary) decode; what is decoded re-encodes to valid UTF-8. */
START_TEST(random_bytes_and_ids_are_safe)
{
    const char *names[] = {"smollm2", "llama3", "sp_norm", "sp_meta"};
    tune_tokenizer *tok = load(names[_i]);
    tune_ids ids = {0};
    tune_error err;
    char buf[300];
    uint64_t k = 0;
    for (int round = 0; round < 300; round++) {
        size_t n = tune_rng_u32(7, (uint64_t)_i, k++) % sizeof buf;
        for (size_t j = 0; j < n; j++) {
            uint32_t r = tune_rng_u32(7, (uint64_t)_i, k++);
            /* Mostly bytes of interest: ASCII, spaces, UTF-8 lead/continuation bytes, '<' of specials. */
            buf[j] = (char)((r >> 8) % 4 == 0 ? "<|> \n\t\xe2\x96\x81\xf0\x9f\xed\xa0\x80"[r % 14] : (char)(r & 0xFF));
        }
        ck_assert_int_eq(tune_tokenizer_encode(tok, buf, n, 1, &ids, &err), TUNE_OK);
        for (size_t j = 0; j < ids.n; j++) ck_assert(ids.ids[j] >= 0 && ids.ids[j] < tune_tokenizer_vocab_size(tok));
        int32_t rnd[64];
        for (int j = 0; j < 64; j++) rnd[j] = (int32_t)tune_rng_u32(9, (uint64_t)_i, k++) % 70000 - 100;
        char *dec;
        size_t dl;
        ck_assert_int_eq(tune_tokenizer_decode(tok, rnd, 64, round % 2, &dec, &dl, &err), TUNE_OK);
        ck_assert_int_eq(tune_tokenizer_encode(tok, dec, dl, 0, &ids, &err), TUNE_OK);
        free(dec);
    }
    tune_ids_free(&ids);
    tune_tokenizer_free(tok);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("tokenizer");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, smollm2_matches_hf);
    tcase_add_test(tc, llama3_matches_hf);
    tcase_add_test(tc, sp_norm_matches_hf);
    tcase_add_test(tc, sp_meta_matches_hf);
    tcase_add_test(tc, sp_meta_split_matches_hf);
    tcase_add_loop_test(tc, subword_matches_hf, 0, 2);
    tcase_add_loop_test(tc, variants_match_hf, 0, (int)(sizeof VARIANTS / sizeof VARIANTS[0]));
    tcase_add_test(tc, invalid_utf8_replaced_as_python_does);
    tcase_add_test(tc, roles_and_template_from_config);
    tcase_add_test(tc, add_tokens_as_hf_and_save);
    tcase_add_test(tc, roles_reconciled_across_config_files);
    tcase_add_loop_test(tc, unsupported_components_refused, 0, (int)(sizeof REFUSED / sizeof REFUSED[0]));
    tcase_add_test(tc, missing_paths_and_refused_gguf);
    tcase_add_loop_test(tc, gguf_vocab_matches_hf, 0, 2);
    tcase_add_loop_test(tc, gguf_vocab_saves_as_hf_folder, 0, 2);
    tcase_add_test(tc, smollm2_gguf_agrees_with_json);
    tcase_add_loop_test(tc, random_bytes_and_ids_are_safe, 0, 4);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
