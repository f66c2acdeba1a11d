/* The tokenizer's encode on arbitrary bytes, with SmolLM2's byte-level BPE
 * tokenizer and a SentencePiece-style one (normalizers, byte fallback). The
 * byte-level one has no normalizer: decoding what it encoded from valid
 * UTF-8 must give back the input, unless the input holds one of the bytes
 * its vocabulary has no token for (HF drops those, and so does tune). */
#include <stdlib.h>
#include <string.h>

#include "targets.h"
#include "tune/data.h"
#include "tune/tokenizer.h"

static tune_tokenizer *load(const char *rel)
{
    char path[512];
    tune_tokenizer *tok;
    tune_error e;
    tune_fuzz_data_path(path, sizeof path, rel);
    tune_fuzz_check(tune_tokenizer_load(path, &tok, &e) == TUNE_OK, "cannot load a test tokenizer");
    return tok;
}

/* Which bytes have a token in a byte-level vocabulary: byte b is the
 * character GPT-2's byte map gives it (printable Latin-1 bytes stand for
 * themselves, the others for U+0100 onwards, in order). */
static void byte_tokens(const tune_tokenizer *tok, unsigned char has[256])
{
    int next = 256;
    for (int b = 0; b < 256; b++) {
        int self = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
        int cp = self ? b : next++;
        char s[3] = {(char)(0xC0 | cp >> 6), (char)(0x80 | (cp & 0x3F)), 0};
        if (cp < 0x80) s[0] = (char)cp, s[1] = 0;
        has[b] = tune_tokenizer_token_to_id(tok, s) >= 0;
    }
}

static int all_bytes_have_tokens(const unsigned char has[256], const uint8_t *data, size_t size)
{
    for (size_t i = 0; i < size; i++)
        if (!has[data[i]]) return 0;
    return 1;
}

static void encode(tune_tokenizer *tok, const uint8_t *data, size_t size, int round_trip)
{
    tune_ids ids = {0};
    tune_error e;
    tune_fuzz_check(tune_tokenizer_encode(tok, (const char *)data, size, 0, &ids, &e) == TUNE_OK,
                    "encode failed");
    const int32_t vocab = tune_tokenizer_vocab_size(tok);
    for (size_t i = 0; i < ids.n; i++)
        tune_fuzz_check(ids.ids[i] >= 0 && ids.ids[i] < vocab, "an id outside the vocabulary");
    char *text;
    size_t len;
    tune_fuzz_check(tune_tokenizer_decode(tok, ids.ids, ids.n, 0, &text, &len, &e) == TUNE_OK, "decode failed");
    if (round_trip && tune_utf8_valid((const char *)data, size, NULL))
        tune_fuzz_check(len == size && !memcmp(text, data, size), "decode(encode(text)) is not the text");
    free(text);
    tune_ids_free(&ids);
}

void tune_fuzz_encode(const uint8_t *data, size_t size)
{
    static tune_tokenizer *byte_level, *sentencepiece;
    static unsigned char has[256];
    if (!byte_level) {
        byte_level = load("tokenizer/smollm2");
        sentencepiece = load("tokenizer/sp_norm");
        byte_tokens(byte_level, has);
    }
    encode(byte_level, data, size, all_bytes_have_tokens(has, data, size));
    encode(sentencepiece, data, size, 0);
}
