/* Llama-2-chat text: the input read as a .txt dataset of type llama2 (one
 * record per line that starts with "<s>[INST]"), each record formatted and
 * tokenized; and the whole input parsed as one conversation. */
#include <stdlib.h>

#include "targets.h"
#include "tune/data.h"

void tune_fuzz_data_llama2(const uint8_t *data, size_t size)
{
    tune_record_list recs = {0};
    tune_error_list skipped = {0};
    tune_error e;
    tune_data_read_buffer("fuzz.txt", (const char *)data, size, TUNE_FORMAT_LLAMA2, &recs, &skipped, &e);
    for (size_t i = 0; i < recs.count; i++) tune_fuzz_format_record(&recs.items[i], "llama2", TUNE_TEMPLATE_LLAMA2);
    tune_record_list_free(&recs);
    tune_error_list_free(&skipped);

    tune_chat_message *msgs = NULL;
    int n = 0;
    char *storage = NULL;
    if (tune_llama2_parse((const char *)data, size, &msgs, &n, &storage, &e) == TUNE_OK) {
        free(msgs);
        free(storage);
    }
}
