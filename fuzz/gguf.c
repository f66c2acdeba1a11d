/* A GGUF file: header, metadata, tensor infos; then what tune reads from a
 * file that opens: every key through the getters, every tensor dequantised,
 * the LLaMA config and weights, and the tokenizer built from its vocabulary. */
#include <stdlib.h>
#include <string.h>

#include "targets.h"
#include "tune/gguf.h"
#include "tune/tokenizer.h"

/* Weights past this are not loaded: the loader's checks all come first. */
#define MAX_MODEL_BYTES (64u << 20)

static void read_key(const tune_gguf *g, const tune_gguf_kv *kv)
{
    char *key = tune_fuzz_cstr((const uint8_t *)kv->key.ptr, kv->key.len);
    tune_error e;
    tune_gguf_str s;
    int64_t i;
    double d;
    int b;
    const tune_gguf_str *strs;
    int64_t *ints = NULL;
    float *floats = NULL;
    uint64_t n;
    tune_gguf_get_str(g, key, &s, &e);
    tune_gguf_get_int(g, key, &i, &e);
    tune_gguf_get_float(g, key, &d, &e);
    tune_gguf_get_bool(g, key, &b, &e);
    tune_gguf_get_str_array(g, key, &strs, &n, &e);
    if (tune_gguf_get_int_array(g, key, &ints, &n, &e) == TUNE_OK) free(ints);
    if (tune_gguf_get_float_array(g, key, &floats, &n, &e) == TUNE_OK) free(floats);
    free(key);
}

static void read_tensor(const tune_gguf *g, const tune_gguf_tensor *t)
{
    tune_fuzz_check(t->data >= g->base && t->n_bytes <= g->size && t->data + t->n_bytes <= g->base + g->size,
                    "a tensor's bytes lie outside the file");
    if (t->n_elements > 16 * (uint64_t)g->size + 64) return; /* no readable type packs more */
    float *out = malloc(t->n_elements * sizeof *out + 1);
    tune_fuzz_check(out != NULL, "out of memory");
    tune_error e;
    tune_gguf_tensor_to_f32(g, t, out, &e);
    free(out);
}

static void read_model(const tune_gguf *g)
{
    tune_model_config cfg;
    tune_error e;
    if (tune_gguf_read_config(g, &cfg, &e) != TUNE_OK) return;
    size_t bytes = 0;
    for (int s = TUNE_STORE_F32; s <= TUNE_STORE_NF4; s++) tune_gguf_stored_bytes(g, (tune_weight_storage)s, &bytes, &e);
    if (tune_gguf_stored_bytes(g, TUNE_STORE_FILE, &bytes, &e) == TUNE_OK && bytes <= MAX_MODEL_BYTES) {
        tune_model model;
        if (tune_gguf_read_model(g, TUNE_STORE_FILE, &model, &e) == TUNE_OK) tune_model_free(&model);
    }
}

void tune_fuzz_gguf(const uint8_t *data, size_t size)
{
    tune_gguf g;
    tune_error e;
    if (tune_gguf_open_memory(data, size, "fuzz.gguf", &g, &e) != TUNE_OK) {
        tune_gguf_close(&g);
        return;
    }
    for (uint64_t i = 0; i < g.n_kvs; i++) read_key(&g, &g.kvs[i]);
    for (uint64_t i = 0; i < g.n_tensors; i++) read_tensor(&g, &g.tensors[i]);
    read_model(&g);
    int has_vocab = tune_gguf_find(&g, "tokenizer.ggml.model") != NULL;
    tune_gguf_close(&g);
    if (has_vocab) { /* the tokenizer loader reads files */
        char path[512];
        tune_tokenizer *tok;
        tune_fuzz_write_tmp("fuzz.gguf", data, size, path, sizeof path);
        if (tune_tokenizer_load(path, &tok, &e) == TUNE_OK) {
            tune_ids ids = {0};
            static const char text[] = "Hello world! 안녕하세요 123";
            tune_tokenizer_encode(tok, text, sizeof text - 1, 1, &ids, &e);
            tune_ids_free(&ids);
            tune_tokenizer_free(tok);
        }
    }
}
