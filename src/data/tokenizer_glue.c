/* The data stage's view of a tune_tokenizer. */
#include <stdlib.h>
#include <string.h>

#include "tune/data.h"
#include "tune/tokenizer.h"

static tune_status glue_encode(void *ctx, const char *text, size_t len, int add_special, int32_t **ids, size_t *n,
                               size_t *cap, tune_error *err)
{
    tune_ids tmp = {0};
    tune_status st = tune_tokenizer_encode(ctx, text, len, add_special, &tmp, err);
    if (!st && *n + tmp.n > *cap) {
        size_t c = *cap ? *cap : 64;
        while (c < *n + tmp.n) c *= 2;
        int32_t *p = realloc(*ids, c * sizeof *p);
        if (!p) st = tune_fail_run(err, NULL, "out of memory");
        else {
            *ids = p;
            *cap = c;
        }
    }
    if (!st && tmp.n) {
        memcpy(*ids + *n, tmp.ids, tmp.n * sizeof *tmp.ids);
        *n += tmp.n;
    }
    tune_ids_free(&tmp);
    return st;
}

static tune_status glue_decode(void *ctx, const int32_t *ids, size_t n, tune_strbuf *out, tune_error *err)
{
    char *text;
    size_t len;
    tune_status st = tune_tokenizer_decode(ctx, ids, n, 0, &text, &len, err);
    if (st) return st;
    tune_strbuf_append(out, text, len);
    free(text);
    return out->oom ? tune_fail_run(err, NULL, "out of memory") : TUNE_OK;
}

/* SHA-256 over the tokenizer's files: a GGUF / tokenizer.json file itself,
 * or a folder's tokenizer.json, tokenizer_config.json and chat_template.jinja. */
static tune_status fingerprint(const char *path, char hex[65], tune_error *err)
{
    if (!tune_is_dir(path)) return tune_sha256_file_hex(path, hex, err);
    static const char *const FILES[] = {"tokenizer.json", "tokenizer_config.json", "chat_template.jinja"};
    tune_sha256 h;
    tune_sha256_init(&h);
    for (size_t i = 0; i < sizeof FILES / sizeof FILES[0]; i++) {
        char p[4096], one[65];
        snprintf(p, sizeof p, "%s/%s", path, FILES[i]);
        if (!tune_path_exists(p)) continue;
        tune_status st = tune_sha256_file_hex(p, one, err);
        if (st) return st;
        tune_sha256_update(&h, FILES[i], strlen(FILES[i]) + 1);
        tune_sha256_update(&h, one, 64);
    }
    uint8_t d[32];
    tune_sha256_final(&h, d);
    for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", d[i]);
    return TUNE_OK;
}

tune_status tune_data_tokenizer_wrap(struct tune_tokenizer *tok, const char *path, tune_data_tokenizer *out,
                                     tune_error *err)
{
    memset(out, 0, sizeof *out);
    const tune_special_ids *sp = tune_tokenizer_specials(tok);
    out->ctx = tok;
    out->encode = glue_encode;
    out->decode = glue_decode;
    out->eos_id = sp->eos;
    out->pad_id = sp->pad;
    return fingerprint(path, out->fingerprint, err);
}
