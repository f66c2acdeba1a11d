/* Tokenizer: Hugging Face tokenizer.json (and GGUF vocabularies) loaded and
 * run token for token as the `tokenizers` library runs them.
 *
 * Supported: BPE models (byte-level and SentencePiece-style with
 * byte_fallback, ignore_merges, unk/fuse_unk, continuing_subword_prefix,
 * end_of_word_suffix); normalizers Prepend, Replace, NFC/NFD/NFKC/NFKD,
 * Lowercase, StripAccents, Strip, Sequence; pre-tokenizers Split (every
 * behaviour, invert), ByteLevel, Digits, Metaspace, Whitespace,
 * WhitespaceSplit, Sequence; post-processors TemplateProcessing, ByteLevel,
 * RobertaProcessing, BertProcessing, Sequence; decoders ByteLevel,
 * ByteFallback, Fuse, Strip, Replace, Metaspace, Sequence. Anything else
 * (Unigram, WordPiece, other components) is refused at load time, by name.
 *
 * A tokenizer.json whose strings hold U+0000 is refused (cJSON, the JSON
 * reader, ends strings there).
 *
 * Input text is bytes. HF's API takes Unicode strings only (its Python
 * binding refuses a str holding a lone surrogate with TypeError). Bytes that
 * are not UTF-8 (surrogates encoded as ED A0..BF xx included) are replaced by
 * U+FFFD, one per maximal invalid subsequence: what Python's
 * bytes.decode("utf-8", "replace") gives, so the ids equal HF's ids for that
 * decoded string.
 *
 * GGUF vocabularies give the tokenizer Transformers builds from them, except
 * where llama.cpp (and the model's own tokenizer.json) split differently:
 * pre-type "smollm" splits digits one by one and "llama-bpe" keeps
 * ignore_merges, as the published tokenizers do; tokens Transformers would
 * add past the end of the vocabulary (ids the model has no row for) are not
 * added.
 *
 * A tokenizer keeps a cache of encoded words: encode on one tokenizer from
 * several threads at once is not safe; use one tokenizer per thread. */
#ifndef TUNE_TOKENIZER_H
#define TUNE_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "tune/error.h"

typedef struct tune_tokenizer tune_tokenizer;

/* Token ids of an encoding. */
typedef struct tune_ids {
    int32_t *ids; // (n)
    size_t n, cap;
} tune_ids;

void tune_ids_free(tune_ids *ids);

/* An added token (tokenizer.json "added_tokens"), with HF's flags. */
typedef struct tune_added_token {
    const char *content;
    int32_t id;
    int special, normalized, lstrip, rstrip, single_word;
} tune_added_token;

/* Roles of special tokens (-1 when the tokenizer has none). Taken from
 * tokenizer_config.json, else generation_config.json / config.json ids, else
 * GGUF metadata. add_bos/add_eos: tokenizer_config.json add_bos_token /
 * add_eos_token (GGUF: tokenizer.ggml.add_bos_token/add_eos_token); -1 when
 * not given. encode() itself follows the post-processor. */
typedef struct tune_special_ids {
    int32_t bos, eos, pad, unk;
    int add_bos, add_eos;
} tune_special_ids;

/* Loads a model folder (tokenizer.json + tokenizer_config.json, with
 * chat_template.jinja, generation_config.json and config.json when present),
 * a tokenizer.json file, or a GGUF file (tokenizer.ggml.* metadata). */
tune_status tune_tokenizer_load(const char *path, tune_tokenizer **out, tune_error *err);
/* Loads a tokenizer.json document held in memory; name is used in errors. */
tune_status tune_tokenizer_load_json(const char *json, size_t len, const char *name, tune_tokenizer **out,
                                     tune_error *err);
void tune_tokenizer_free(tune_tokenizer *tok);

/* Encodes text (len bytes) into out (reset first). add_special: run the
 * post-processor (HF encode's add_special_tokens). */
tune_status tune_tokenizer_encode(tune_tokenizer *tok, const char *text, size_t len, int add_special,
                                  tune_ids *out, tune_error *err);

/* Decodes ids into a malloc'd NUL-terminated string (*len bytes). Unknown ids
 * are skipped, as HF does. skip_special: leave special tokens out. */
tune_status tune_tokenizer_decode(const tune_tokenizer *tok, const int32_t *ids, size_t n, int skip_special,
                                  char **text, size_t *len, tune_error *err);

/* Number of ids: the highest id in vocabulary and added tokens, plus one. */
int32_t tune_tokenizer_vocab_size(const tune_tokenizer *tok);
/* The token string of id (added tokens first), or NULL. */
const char *tune_tokenizer_id_to_token(const tune_tokenizer *tok, int32_t id);
/* The id of a token string (added tokens first), or -1. */
int32_t tune_tokenizer_token_to_id(const tune_tokenizer *tok, const char *token);

const tune_special_ids *tune_tokenizer_specials(const tune_tokenizer *tok);
/* The texts of the BOS and EOS tokens (what a chat template writes as
 * bos_token / eos_token) into *bos and *eos; each is left as it is where the
 * tokenizer has no such token. */
void tune_tokenizer_bos_eos_texts(const tune_tokenizer *tok, const char **bos, const char **eos);
/* The chat template (the "default" one of a list), or NULL. */
const char *tune_tokenizer_chat_template(const tune_tokenizer *tok);

size_t tune_tokenizer_n_added(const tune_tokenizer *tok);
const tune_added_token *tune_tokenizer_added(const tune_tokenizer *tok, size_t i);
/* True when id is a special added token. */
int tune_tokenizer_is_special(const tune_tokenizer *tok, int32_t id);

/* Adds tokens as HF's add_tokens (special = 0: normalized, not special) or
 * add_special_tokens (special = 1: special, not normalized) do: a token
 * already in the vocabulary keeps its id, a new one gets the next id after
 * the current vocabulary. *n_new (may be NULL) receives how many ids are new. */
tune_status tune_tokenizer_add_tokens(tune_tokenizer *tok, const char *const *tokens, size_t n, int special,
                                      size_t *n_new, tune_error *err);

/* Writes tokenizer.json: the loaded document (for a GGUF file, the one built
 * from its metadata, every field tokenizers requires spelled out) with the
 * added_tokens list brought up to date. */
tune_status tune_tokenizer_save_json(const tune_tokenizer *tok, const char *path, tune_error *err);
/* Writes a tokenizer_config.json that makes Transformers' AutoTokenizer use
 * tokenizer.json as it is (PreTrainedTokenizerFast): the bos/eos/pad/unk
 * tokens, add_bos/add_eos when known, and the chat template. */
tune_status tune_tokenizer_save_config(const tune_tokenizer *tok, const char *path, tune_error *err);

/* Decodes one JSON string literal (s[0..n) starting with '"') into a
 * malloc'd buffer that may hold U+0000 (JSONL text inputs: cJSON stops at
 * NUL). Returns TUNE_ERR_INPUT when s is not a valid JSON string. */
tune_status tune_json_string_decode(const char *s, size_t n, char **out, size_t *len, tune_error *err);

#endif
