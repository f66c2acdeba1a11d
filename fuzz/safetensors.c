/* A safetensors file: header length, JSON header, dtypes, shapes, offsets;
 * every tensor of a file that opens is then found by name and converted. */
#include <stdlib.h>
#include <string.h>

#include "targets.h"
#include "tune/safetensors.h"

void tune_fuzz_safetensors(const uint8_t *data, size_t size)
{
    tune_st_file *f;
    tune_error e;
    if (tune_st_open_memory(data, size, "fuzz.safetensors", &f, &e) != TUNE_OK) return;
    for (int i = 0; i < f->n_tensors; i++) {
        const tune_st_tensor *t = &f->tensors[i];
        tune_fuzz_check(tune_st_find(f, t->name) == t, "a tensor is not found by its name");
        tune_fuzz_check(t->data >= (const uint8_t *)f->map && t->data + t->nbytes <= (const uint8_t *)f->map + size,
                        "a tensor's bytes lie outside the file");
        /* numel ≤ nbytes ≤ size: the buffer is bounded by the input */
        void *out = malloc(t->numel * 4 + 1);
        tune_fuzz_check(out != NULL, "out of memory");
        if (tune_st_read_f32(t, out, &e) != TUNE_OK) tune_st_read_i32(t, out, &e);
        free(out);
    }
    for (int i = 0; i < f->n_meta; i++)
        tune_fuzz_check(tune_st_metadata(f, f->meta_keys[i]) != NULL, "a metadata key is not found");
    tune_st_close(f);
}
