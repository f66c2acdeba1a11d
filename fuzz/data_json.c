/* Dataset records in JSON: the input read as a .json file and as a .jsonl
 * file, each record then formatted as every dataset type that reads JSON
 * (alpaca, sharegpt, chat_template with the chat templates of records.c in
 * turn, completion) and tokenized with the tiny test tokenizer. */
#include <stdlib.h>

#include "targets.h"
#include "tune/data.h"

void tune_fuzz_data_json(const uint8_t *data, size_t size)
{
    static const char *const types[] = {"alpaca", "sharegpt", "chat_template", "completion"};
    static const char *const names[] = {"fuzz.json", "fuzz.jsonl"};
    for (int f = 0; f < 2; f++) {
        tune_record_list recs = {0};
        tune_error_list skipped = {0};
        tune_error e;
        tune_data_read_buffer(names[f], (const char *)data, size, TUNE_FORMAT_CHAT, &recs, &skipped, &e);
        for (size_t i = 0; i < recs.count; i++)
            for (int t = 0; t < 4; t++)
                tune_fuzz_format_record(&recs.items[i], types[t], (int)i);
        tune_record_list_free(&recs);
        tune_error_list_free(&skipped);
    }
}
