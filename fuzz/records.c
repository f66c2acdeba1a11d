/* The data stage after reading, shared by the dataset targets: a record
 * formatted as one dataset type and tokenized with the tiny test tokenizer. */
#include <stdlib.h>

#include "targets.h"
#include "tune/data.h"
#include "tune/tokenizer.h"

static const tune_data_tokenizer *tiny_tokenizer(void)
{
    static tune_tokenizer *tok;
    static tune_data_tokenizer wrapped;
    if (!tok) {
        char path[512];
        tune_error e;
        tune_fuzz_data_path(path, sizeof path, "tiny/tokenizer");
        tune_fuzz_check(tune_tokenizer_load(path, &tok, &e) == TUNE_OK &&
                            tune_data_tokenizer_wrap(tok, path, &wrapped, &e) == TUNE_OK,
                        "cannot load tests/data/tiny/tokenizer");
    }
    return &wrapped;
}

void tune_fuzz_format_record(const tune_record *rec, const char *type, int template_id)
{
    tune_dataset_options ds;
    tune_error e;
    tune_fuzz_check(tune_dataset_options_init(&ds, type, &e) == TUNE_OK, "unknown dataset type");
    tune_data_options opt = {.datasets = &ds, .n_datasets = 1, .sequence_len = 2048};
    opt.chat_template.id = (tune_template_id)template_id;
    opt.chat_template.opt = tune_template_default_options((tune_template_id)template_id);
    tune_formatted f;
    if (tune_data_format_record(rec, &ds, &opt, &f, &e) == TUNE_OK) {
        int32_t *ids = NULL, *labels = NULL;
        size_t n = 0;
        int mismatch = 0;
        if (tune_data_tokenize(&f, tiny_tokenizer(), &ids, &labels, &n, &mismatch, &e) == TUNE_OK) {
            free(ids);
            free(labels);
        }
    }
    tune_formatted_free(&f);
}
