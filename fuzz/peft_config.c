/* A PEFT adapter_config.json, read against the tiny test model's config
 * (target_modules as names or as a regex, modules_to_save, the options tune
 * refuses); an accepted one then makes the adapters it describes. */
#include <stdlib.h>
#include <string.h>

#include "targets.h"
#include "tune/lora.h"

void tune_fuzz_peft_config(const uint8_t *data, size_t size)
{
    static tune_model_config model;
    static int loaded;
    tune_error e;
    if (!loaded) {
        char path[512];
        tune_fuzz_data_path(path, sizeof path, "tiny/gqa");
        tune_fuzz_check(tune_model_config_load(path, &model, &e) == TUNE_OK, "cannot load tests/data/tiny/gqa");
        loaded = 1;
    }
    char path[512];
    tune_fuzz_write_tmp("adapter/adapter_config.json", data, size, path, sizeof path);
    path[strlen(path) - strlen("/adapter_config.json")] = 0;
    unsigned char *selected = calloc((size_t)model.num_hidden_layers * TUNE_N_LINEAR, 1);
    tune_fuzz_check(selected != NULL, "out of memory");
    tune_lora_config cfg;
    if (tune_lora_read_peft_config(path, &model, &cfg, selected, &e) == TUNE_OK) {
        tune_lora *lora;
        if (tune_lora_create(&model, &cfg, selected, 1, &lora, &e) == TUNE_OK) tune_lora_free(lora);
    }
    free(selected);
}
