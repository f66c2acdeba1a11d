/* Private parts of the tokenizer module, shared by its source files. */
#ifndef TUNE_TOKENIZER_INTERNAL_H
#define TUNE_TOKENIZER_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <cJSON.h>
#include <pcre2.h>
#include <stddef.h>
#include <stdint.h>

#include "tune/tokenizer.h"
#include "tune/util.h"

/* ---- string -> id hash map (open addressing, keys owned) ---- */
typedef struct tk_strmap {
    char **keys;    // (cap)
    uint32_t *lens; // (cap)
    int32_t *vals;  // (cap)
    size_t cap, n;
} tk_strmap;

uint64_t tk_hash(const char *s, size_t n);
int tk_strmap_put(tk_strmap *m, const char *s, size_t n, int32_t v); /* 0 ok, -1 out of memory */
int32_t tk_strmap_get(const tk_strmap *m, const char *s, size_t n);  /* -1 when absent */
void tk_strmap_free(tk_strmap *m);

/* ---- UTF-8 ---- */
/* Decodes one code point at s[0..n); returns its length (1..4), or 0 when
 * the bytes are not UTF-8 (*len_bad = length of the maximal invalid prefix). */
int tk_utf8_next(const uint8_t *s, size_t n, int32_t *cp, size_t *len_bad);
int tk_utf8_encode(int32_t cp, char out[4]);
/* Copy of s with invalid sequences replaced by U+FFFD (NULL: out of memory). */
char *tk_utf8_sanitize(const char *s, size_t n, size_t *out_len);

/* ---- pieces of text moving through the pipeline ---- */
typedef struct tk_span {
    size_t off, len;
    int at_start; /* begins at offset 0 of the original text (Metaspace "first") */
} tk_span;

typedef struct tk_pieces {
    tune_strbuf buf;
    tk_span *v; // (n)
    size_t n, cap;
} tk_pieces;

int tk_pieces_push(tk_pieces *p, const char *s, size_t len, int at_start);
void tk_pieces_reset(tk_pieces *p);
void tk_pieces_free(tk_pieces *p);

/* ---- patterns (Split, Replace) ---- */
typedef struct tk_pattern {
    char *literal; /* literal string, or NULL for a regex */
    size_t literal_len;
    pcre2_code *re;
    pcre2_match_data *md;
} tk_pattern;

/* Reads {"String": s} or {"Regex": r}. */
tune_status tk_pattern_parse(tk_pattern *p, const cJSON *j, const char *where, tune_error *err);
tune_status tk_pattern_regex(tk_pattern *p, const char *re, const char *where, tune_error *err);
void tk_pattern_free(tk_pattern *p);
/* Finds the next match at or after start: 1 found ([*ms, *me)), 0 none, -1 failure. */
int tk_pattern_find(tk_pattern *p, const char *s, size_t n, size_t start, size_t *ms, size_t *me);

/* ---- normalizers and pre-tokenizers ---- */
typedef struct tk_normalizer tk_normalizer;
typedef struct tk_pretok tk_pretok;

tune_status tk_normalizer_parse(const cJSON *j, tk_normalizer **out, const char *file, tune_error *err);
void tk_normalizer_free(tk_normalizer *n);
/* Normalizes s into out (appended). 0 ok, -1 failure (out of memory). */
int tk_normalize(const tk_normalizer *n, const char *s, size_t len, tune_strbuf *out);

tune_status tk_pretok_parse(const cJSON *j, tk_pretok **out, const char *file, tune_error *err);
void tk_pretok_free(tk_pretok *p);
/* Splits every piece of *io further (tmp is scratch). 0 ok, -1 failure. */
int tk_pretokenize(tk_pretok *p, tk_pieces *io, tk_pieces *tmp);

/* GPT-2 byte <-> char map. */
int32_t tk_byte_to_cp(uint8_t b);
int tk_cp_to_byte(int32_t cp); /* -1 when cp is not one of the 256 */
/* Rust's char::is_whitespace (Unicode White_Space). */
int tk_is_space(int32_t cp);

/* ---- BPE model ---- */
typedef struct tk_bpe tk_bpe;

tune_status tk_bpe_parse(const cJSON *model, tk_bpe **out, const char *file, tune_error *err);
void tk_bpe_free(tk_bpe *b);
/* Appends the ids of one pre-token. 0 ok, -1 out of memory. */
int tk_bpe_encode(tk_bpe *b, const char *s, size_t len, tune_ids *out);
int32_t tk_bpe_token_to_id(const tk_bpe *b, const char *s, size_t len);
const char *tk_bpe_id_to_token(const tk_bpe *b, int32_t id);
int32_t tk_bpe_size(const tk_bpe *b);

/* ---- post-processor and decoder ---- */
typedef struct tk_postproc tk_postproc;
typedef struct tk_decoder tk_decoder;

tune_status tk_postproc_parse(const cJSON *j, tk_postproc **out, const char *file, tune_error *err);
void tk_postproc_free(tk_postproc *p);
/* Wraps ids with the template's special tokens (in place). 0 ok, -1 oom. */
int tk_postprocess(const tk_postproc *p, tune_ids *ids);

tune_status tk_decoder_parse(const cJSON *j, tk_decoder **out, const char *file, tune_error *err);
void tk_decoder_free(tk_decoder *d);
/* Decodes token strings into out. 0 ok, -1 failure. */
int tk_decode_tokens(const tk_decoder *d, const char *const *tokens, size_t n, tune_strbuf *out);

int tk_ids_push(tune_ids *ids, int32_t id);

/* ---- GGUF vocabularies ---- */
typedef struct tk_gguf_meta {
    int32_t bos, eos, unk, pad; /* -1 when absent */
    int add_bos, add_eos;       /* -1 when absent */
    char *chat_template;        /* malloc'd, or NULL */
} tk_gguf_meta;

/* Reads tokenizer.ggml.* of a GGUF file into the tokenizer.json document
 * Transformers would build from it. */
tune_status tk_gguf_document(const char *path, cJSON **doc, tk_gguf_meta *meta, tune_error *err);

#endif
