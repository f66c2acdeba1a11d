/* tokenizer_config.json (special tokens, add_bos/add_eos, chat_template as
 * text or as a list) and generation_config.json (the ids it declares): the
 * input is written as both, next to the tiny test tokenizer.json, and the
 * folder loaded. */
#include <stdlib.h>
#include <string.h>

#include "targets.h"
#include "tune/tokenizer.h"
#include "tune/util.h"

void tune_fuzz_tokenizer_config(const uint8_t *data, size_t size)
{
    static int ready;
    char path[512];
    tune_error e;
    if (!ready) {
        char *json;
        size_t len;
        tune_fuzz_data_path(path, sizeof path, "tiny/tokenizer/tokenizer.json");
        tune_fuzz_check(tune_read_file(path, &json, &len, &e) == TUNE_OK, "cannot read tests/data/tiny/tokenizer");
        tune_fuzz_write_tmp("tokenizer/tokenizer.json", json, len, path, sizeof path);
        free(json);
        ready = 1;
    }
    tune_fuzz_write_tmp("tokenizer/tokenizer_config.json", data, size, path, sizeof path);
    tune_fuzz_write_tmp("tokenizer/generation_config.json", data, size, path, sizeof path);
    path[strlen(path) - strlen("/generation_config.json")] = 0;
    tune_tokenizer *tok;
    if (tune_tokenizer_load(path, &tok, &e) != TUNE_OK) return;
    const tune_special_ids *sp = tune_tokenizer_specials(tok);
    const int32_t vocab = tune_tokenizer_vocab_size(tok);
    const int32_t ids[] = {sp->bos, sp->eos, sp->pad, sp->unk};
    for (int i = 0; i < 4; i++) tune_fuzz_check(ids[i] >= -1 && ids[i] < vocab, "a special id outside the vocabulary");
    tune_ids out = {0};
    static const char text[] = "Hello world";
    tune_tokenizer_encode(tok, text, sizeof text - 1, 1, &out, &e);
    tune_ids_free(&out);
    tune_tokenizer_free(tok);
}
