/* A Hugging Face model's config.json (dimensions, heads, RoPE scaling, tied
 * embeddings, token ids), in a folder of its own. */
#include <string.h>

#include "targets.h"
#include "tune/model.h"

void tune_fuzz_model_config(const uint8_t *data, size_t size)
{
    char path[512];
    tune_fuzz_write_tmp("model/config.json", data, size, path, sizeof path);
    path[strlen(path) - strlen("/config.json")] = 0;
    tune_model_config cfg;
    tune_error e;
    tune_model_config_load(path, &cfg, &e);
}
