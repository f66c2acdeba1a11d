/* The data stage after reading, shared by the dataset targets: a record
 * formatted as one dataset type and tokenized with the tiny test tokenizer. */
#include <stdlib.h>

#include "targets.h"
#include "tune/data.h"
#include "tune/tokenizer.h"

/* Jinja chat templates run by the engine (not recognised as built-ins): one
 * whose spans are found by rendering with placeholders, one with
 * {% generation %} blocks. */
static const char *const JINJA[] = {
    "{{ bos_token }}{% for m in messages %}<|{{ m.role }}|>\n{{ m.content | trim }}{{ eos_token }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}",
    "{% for m in messages %}{% if m.role == 'assistant' %}[A] {% generation %}{{ m.content }}{{ eos_token }}"
    "{% endgeneration %}{% else %}[{{ m.role[0] | upper }}] {{ m.content }}\n{% endif %}{% endfor %}",
};
#define N_JINJA (int)(sizeof JINJA / sizeof JINJA[0])

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

/* Template k (taken modulo their number): the built-ins, then the Jinja ones. */
static const tune_template *chat_template(int k)
{
    static tune_template templates[TUNE_N_TEMPLATES + N_JINJA];
    static int ready;
    if (!ready) {
        for (int i = 0; i < TUNE_N_TEMPLATES; i++)
            templates[i] = (tune_template){.id = (tune_template_id)i,
                                           .opt = tune_template_default_options((tune_template_id)i)};
        for (int i = 0; i < N_JINJA; i++) {
            tune_error e;
            tune_fuzz_check(tune_template_open("jinja", NULL, JINJA[i], "fuzz.jinja", &templates[TUNE_N_TEMPLATES + i],
                                               &e) == TUNE_OK,
                            "bad Jinja template");
            templates[TUNE_N_TEMPLATES + i].opt.eos = "</s>";
        }
        ready = 1;
    }
    return &templates[k % (TUNE_N_TEMPLATES + N_JINJA)];
}

void tune_fuzz_format_record(const tune_record *rec, const char *type, int template)
{
    tune_dataset_options ds;
    tune_error e;
    tune_fuzz_check(tune_dataset_options_init(&ds, type, &e) == TUNE_OK, "unknown dataset type");
    tune_data_options opt = {.datasets = &ds, .n_datasets = 1, .sequence_len = 2048};
    opt.chat_template = *chat_template(template);
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
