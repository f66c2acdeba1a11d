/* A tokenizer.json document: model, normalizer, pre-tokenizer (its regexes
 * included), post-processor, decoder and added tokens; a tokenizer that
 * loads then encodes and decodes a fixed text, adds tokens and encodes again. */
#include <stdlib.h>

#include "targets.h"
#include "tune/tokenizer.h"

static const char TEXT[] = "Hello, World! 안녕하세요 =SUM(A1:B2) 12345 \t\n  <s>x</s> 🙂 é";

static void encode_decode(tune_tokenizer *tok)
{
    tune_error e;
    for (int special = 0; special < 2; special++) {
        tune_ids ids = {0};
        if (tune_tokenizer_encode(tok, TEXT, sizeof TEXT - 1, special, &ids, &e) == TUNE_OK) {
            int32_t vocab = tune_tokenizer_vocab_size(tok);
            for (size_t i = 0; i < ids.n; i++)
                tune_fuzz_check(ids.ids[i] >= 0 && ids.ids[i] < vocab, "an id outside the vocabulary");
            char *text;
            size_t len;
            if (tune_tokenizer_decode(tok, ids.ids, ids.n, special, &text, &len, &e) == TUNE_OK) free(text);
        }
        tune_ids_free(&ids);
    }
}

void tune_fuzz_tokenizer_json(const uint8_t *data, size_t size)
{
    tune_tokenizer *tok;
    tune_error e;
    if (tune_tokenizer_load_json((const char *)data, size, "tokenizer.json", &tok, &e) != TUNE_OK) return;
    encode_decode(tok);
    static const char *const added[] = {"<|fuzz|>", "Hello", "=SUM("};
    if (tune_tokenizer_add_tokens(tok, added, 3, 1, NULL, &e) == TUNE_OK) encode_decode(tok);
    tune_tokenizer_free(tok);
}
