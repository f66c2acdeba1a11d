/* A sharded model's model.safetensors.index.json, written next to copies of
 * the four small shards of tests/data/model_load/sharded_f16: every entry of
 * a set that opens must be found under its name. */
#include <stdio.h>
#include <stdlib.h>

#include "targets.h"
#include "tune/safetensors.h"
#include "tune/util.h"

void tune_fuzz_safetensors_index(const uint8_t *data, size_t size)
{
    static int shards;
    char path[512];
    tune_error e;
    for (; shards < 4; shards++) {
        char name[64], *bytes;
        size_t len;
        snprintf(name, sizeof name, "sharded_f16/model-%05d-of-00004.safetensors", shards + 1);
        snprintf(path, sizeof path, "%s/model_load/%s", tune_fuzz_data_dir(), name);
        tune_fuzz_check(tune_read_file(path, &bytes, &len, &e) == TUNE_OK, "cannot read a test shard");
        tune_fuzz_write_tmp(name, bytes, len, path, sizeof path);
        free(bytes);
    }
    tune_fuzz_write_tmp("sharded_f16/model.safetensors.index.json", data, size, path, sizeof path);
    tune_st_set *set;
    if (tune_st_set_open(path, &set, &e) != TUNE_OK) return;
    for (int i = 0; i < set->n_entries; i++)
        tune_fuzz_check(tune_st_set_find(set, set->entry_names[i]) == set->entry_tensors[i],
                        "an index entry is not found by its name");
    tune_st_set_close(set);
}
