/* `tune export`: alpaca JSONL ↔ ShareGPT JSON ↔ Llama-2-chat text, with the
 * product's export filters. Every record goes through one shape: a list of
 * (role, content) messages plus the product fields it carries. */
#include <cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "tune/data.h"

/* Product fields carried from input to output when both formats hold them. */
static const char *const PRODUCT_FIELDS[] = {"id", "task_type", "quality_score", "rating", "edited"};
#define N_PRODUCT_FIELDS (int)(sizeof PRODUCT_FIELDS / sizeof PRODUCT_FIELDS[0])

int tune_export_format_from_name(const char *name, tune_export_format *f)
{
    if (!strcmp(name, "alpaca")) *f = TUNE_EXPORT_ALPACA;
    else if (!strcmp(name, "sharegpt")) *f = TUNE_EXPORT_SHAREGPT;
    else if (!strcmp(name, "llama2")) *f = TUNE_EXPORT_LLAMA2;
    else return 0;
    return 1;
}

typedef struct {
    tune_chat_message *msgs;
    int n;
    char *storage;       /* llama2 parse storage */
    char *joined;        /* alpaca: instruction + "\n\n" + input */
    const cJSON *fields; /* the record's object (product fields), or NULL */
} conversation;

static void conversation_free(conversation *c)
{
    free(c->msgs);
    free(c->storage);
    free(c->joined);
    memset(c, 0, sizeof *c);
}

static tune_status rec_error(tune_error *err, const tune_record *r, const char *msg)
{
    tune_error_set(err, TUNE_ERR_INPUT, r->file, r->line, 0, "%s", msg);
    if (err) err->record = r->index;
    return TUNE_ERR_INPUT;
}

static const char *str_field(const cJSON *o, const char *name)
{
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(o, name);
    return cJSON_IsString(f) ? f->valuestring : NULL;
}

static tune_status to_conversation(const tune_record *r, tune_export_format from, conversation *c, tune_error *err)
{
    memset(c, 0, sizeof *c);
    if (from == TUNE_EXPORT_LLAMA2) {
        tune_status st = tune_llama2_parse(r->text, r->text_len, &c->msgs, &c->n, &c->storage, err);
        if (st && err) {
            snprintf(err->file, sizeof err->file, "%s", r->file);
            err->line = r->line;
            err->record = r->index;
        }
        return st;
    }
    c->fields = r->json;
    if (from == TUNE_EXPORT_ALPACA) {
        const char *ins = str_field(r->json, "instruction"), *input = str_field(r->json, "input");
        const char *out = str_field(r->json, "output");
        if (!ins || !out) return rec_error(err, r, "alpaca record needs string fields 'instruction' and 'output'");
        c->msgs = calloc(2, sizeof *c->msgs);
        if (!c->msgs) return tune_fail_run(err, NULL, "out of memory");
        if (input && *input) {
            tune_strbuf sb = {0};
            tune_strbuf_printf(&sb, "%s\n\n%s", ins, input);
            if (sb.oom) return tune_fail_run(err, NULL, "out of memory");
            c->joined = sb.data;
            ins = c->joined;
        }
        c->msgs[0] = (tune_chat_message){"user", ins};
        c->msgs[1] = (tune_chat_message){"assistant", out};
        c->n = 2;
        return TUNE_OK;
    }
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(r->json, "conversations");
    if (!cJSON_IsArray(list) || cJSON_GetArraySize(list) == 0)
        return rec_error(err, r, "ShareGPT record needs a non-empty 'conversations' list");
    c->msgs = calloc((size_t)cJSON_GetArraySize(list), sizeof *c->msgs);
    if (!c->msgs) return tune_fail_run(err, NULL, "out of memory");
    const cJSON *m;
    cJSON_ArrayForEach(m, list)
    {
        const char *who = str_field(m, "from"), *value = str_field(m, "value");
        if (!who || !value) return rec_error(err, r, "each ShareGPT message needs string fields 'from' and 'value'");
        const char *role = !strcmp(who, "human") ? "user" : !strcmp(who, "gpt") ? "assistant"
                                                          : !strcmp(who, "system") ? "system" : NULL;
        if (!role) return rec_error(err, r, "ShareGPT 'from' must be human, gpt or system");
        c->msgs[c->n++] = (tune_chat_message){role, value};
    }
    return TUNE_OK;
}

static int passes(const conversation *c, const tune_export_filter *f)
{
    const cJSON *o = c->fields;
    if (f->min_quality_score >= 0) {
        const cJSON *q = cJSON_GetObjectItemCaseSensitive(o, "quality_score");
        if (!cJSON_IsNumber(q) || q->valuedouble < f->min_quality_score) return 0;
    }
    if (f->min_rating >= 0) {
        const cJSON *q = cJSON_GetObjectItemCaseSensitive(o, "rating");
        if (!cJSON_IsNumber(q) || q->valuedouble < f->min_rating) return 0;
    }
    if (f->task_types) {
        const char *t = str_field(o, "task_type");
        int ok = 0;
        for (int i = 0; t && i < f->n_task_types && !ok; i++) ok = !strcmp(t, f->task_types[i]);
        if (!ok) return 0;
    }
    if (!f->include_edited && cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "edited"))) return 0;
    return 1;
}

static tune_status add_product_fields(cJSON *out, const cJSON *in)
{
    for (int i = 0; in && i < N_PRODUCT_FIELDS; i++) {
        const cJSON *f = cJSON_GetObjectItemCaseSensitive(in, PRODUCT_FIELDS[i]);
        if (!f) continue;
        cJSON *copy = cJSON_Duplicate(f, 1);
        if (!copy || !cJSON_AddItemToObject(out, PRODUCT_FIELDS[i], copy)) {
            cJSON_Delete(copy);
            return TUNE_ERR_RUN;
        }
    }
    return TUNE_OK;
}

static tune_status write_alpaca(const tune_record *r, const conversation *c, tune_strbuf *out, tune_error *err)
{
    int k = 0;
    const char *user = NULL, *answer = NULL;
    for (int i = 0; i < c->n; i++) {
        if (!strcmp(c->msgs[i].role, "system")) continue;
        if (k == 0 && !strcmp(c->msgs[i].role, "user")) user = c->msgs[i].content;
        if (k == 1 && !strcmp(c->msgs[i].role, "assistant")) answer = c->msgs[i].content;
        k++;
    }
    if (k != 2 || !user || !answer)
        return rec_error(err, r, "only a single user/assistant exchange converts to alpaca (this record has another shape)");
    cJSON *o = cJSON_CreateObject();
    tune_status st = TUNE_OK;
    if (!o || !cJSON_AddStringToObject(o, "instruction", user) || !cJSON_AddStringToObject(o, "input", "") ||
        !cJSON_AddStringToObject(o, "output", answer) || add_product_fields(o, c->fields))
        st = tune_fail_run(err, NULL, "out of memory");
    char *text = st ? NULL : cJSON_PrintUnformatted(o);
    if (!st && !text) st = tune_fail_run(err, NULL, "out of memory");
    if (text) {
        tune_strbuf_puts(out, text);
        tune_strbuf_puts(out, "\n");
    }
    free(text);
    cJSON_Delete(o);
    return st;
}

static tune_status add_sharegpt(cJSON *array, const conversation *c, tune_error *err)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *list = o ? cJSON_AddArrayToObject(o, "conversations") : NULL;
    int ok = list != NULL;
    for (int i = 0; ok && i < c->n; i++) {
        cJSON *m = cJSON_CreateObject();
        const char *who = !strcmp(c->msgs[i].role, "user") ? "human" : !strcmp(c->msgs[i].role, "assistant") ? "gpt"
                                                                                                              : "system";
        ok = m && cJSON_AddItemToArray(list, m) && cJSON_AddStringToObject(m, "from", who) &&
             cJSON_AddStringToObject(m, "value", c->msgs[i].content);
    }
    ok = ok && !add_product_fields(o, c->fields) && cJSON_AddItemToArray(array, o);
    if (!ok) {
        cJSON_Delete(o);
        return tune_fail_run(err, NULL, "out of memory");
    }
    return TUNE_OK;
}

static tune_status write_llama2(const tune_record *r, const conversation *c, tune_strbuf *out, tune_error *err)
{
    tune_template_options o = tune_template_default_options(TUNE_TEMPLATE_LLAMA2);
    size_t before = out->len;
    tune_status st = tune_template_render(TUNE_TEMPLATE_LLAMA2, &o, c->msgs, c->n, 0, out, NULL, err);
    if (st) {
        if (err) {
            snprintf(err->file, sizeof err->file, "%s", r->file);
            err->line = r->line;
            err->record = r->index;
        }
        return st;
    }
    /* A line starting with "<s>[INST]" would begin a new record when read back. */
    for (size_t i = before + 1; i + 9 <= out->len; i++)
        if (out->data[i - 1] == '\n' && !memcmp(out->data + i, "<s>[INST]", 9))
            return rec_error(err, r, "a message line starts with '<s>[INST]'; Llama-2 text cannot hold it");
    tune_strbuf_puts(out, "\n");
    return TUNE_OK;
}

tune_status tune_data_export(const char *in_path, tune_export_format from, const char *out_path,
                             tune_export_format to, const tune_export_filter *filter, tune_export_stats *stats,
                             tune_error *err)
{
    memset(stats, 0, sizeof *stats);
    tune_record_list recs = {0};
    tune_status st = tune_data_read_file(in_path, from == TUNE_EXPORT_LLAMA2 ? TUNE_FORMAT_LLAMA2 : TUNE_FORMAT_CHAT,
                                         &recs, NULL, err);
    if (!st && from == TUNE_EXPORT_LLAMA2 && recs.count && !recs.items[0].text)
        st = tune_fail_input(err, in_path, "Llama-2-chat input must be a text file (one record per '<s>[INST]' line)");
    if (!st && from != TUNE_EXPORT_LLAMA2 && recs.count && !recs.items[0].json)
        st = tune_fail_input(err, in_path, "alpaca / ShareGPT input must be a .json or .jsonl file");
    tune_strbuf out = {0};
    cJSON *array = to == TUNE_EXPORT_SHAREGPT ? cJSON_CreateArray() : NULL;
    if (!st && to == TUNE_EXPORT_SHAREGPT && !array) st = tune_fail_run(err, NULL, "out of memory");
    for (size_t i = 0; i < recs.count && !st; i++) {
        conversation c;
        stats->read++;
        st = to_conversation(&recs.items[i], from, &c, err);
        if (!st) {
            if (!passes(&c, filter) || (filter->limit >= 0 && stats->written >= filter->limit)) {
                stats->filtered++;
            } else {
                if (to == TUNE_EXPORT_ALPACA) st = write_alpaca(&recs.items[i], &c, &out, err);
                else if (to == TUNE_EXPORT_SHAREGPT) st = add_sharegpt(array, &c, err);
                else st = write_llama2(&recs.items[i], &c, &out, err);
                stats->written += !st;
            }
        }
        conversation_free(&c);
    }
    if (!st && array) {
        char *text = cJSON_Print(array);
        if (!text) st = tune_fail_run(err, NULL, "out of memory");
        else {
            tune_strbuf_puts(&out, text);
            tune_strbuf_puts(&out, "\n");
        }
        free(text);
    }
    if (!st && out.oom) st = tune_fail_run(err, NULL, "out of memory");
    if (!st) st = tune_write_file_atomic(out_path, out.data ? out.data : "", out.len, err);
    cJSON_Delete(array);
    tune_strbuf_free(&out);
    tune_record_list_free(&recs);
    return st;
}
