/* A model's chat template (tokenizer_config.json's chat_template): matched
 * against the built-ins by fingerprint, then opened as tune opens it
 * (chat_template: tokenizer_default) and rendered over a fixed conversation
 * with the message spans the data stage trains on. */
#include <stdlib.h>

#include "targets.h"
#include "tune/template.h"

static const tune_chat_message MESSAGES[] = {
    {"system", "You are an Excel expert."},
    {"user", "Sum column A?"},
    {"assistant", "=SUM(A:A)"},
    {"user", "안녕하세요 {{ x }}"},
    {"assistant", " Spaces around. "},
};
#define N_MESSAGES (int)(sizeof MESSAGES / sizeof MESSAGES[0])

void tune_fuzz_chat_template(const uint8_t *data, size_t size)
{
    char *source = tune_fuzz_cstr(data, size);
    tune_template_id id;
    tune_error e;
    tune_template_recognize(source, &id, &e);
    tune_template t;
    if (tune_template_open("tokenizer_default", source, NULL, NULL, &t, &e) == TUNE_OK) {
        for (int gen = 0; gen < 2; gen++) {
            tune_strbuf out = {0};
            tune_message_span spans[N_MESSAGES];
            if (tune_chat_render(&t, MESSAGES, N_MESSAGES, gen, &out, spans, &e) == TUNE_OK)
                for (int i = 0; i < N_MESSAGES; i++)
                    tune_fuzz_check(spans[i].start <= spans[i].end && spans[i].end <= spans[i].eot_start &&
                                        spans[i].eot_start <= spans[i].eot_end && spans[i].eot_end <= out.len,
                                    "a message span lies outside the text");
            tune_strbuf_free(&out);
        }
    }
    tune_template_close(&t);
    free(source);
}
