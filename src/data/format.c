/* Formatters: one record → rendered text cut into trained / untrained pieces. */
#include <cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "tune/data.h"

static const char ALPACA_WITH_INPUT[] =
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n### Instruction:\n%s\n\n### Input:\n%s"
    "\n\n### Response:\n";
static const char ALPACA_NO_INPUT[] =
    "Below is an instruction that describes a task. Write a response that appropriately completes the "
    "request.\n\n### Instruction:\n%s\n\n### Response:\n";

tune_status tune_dataset_options_init(tune_dataset_options *o, const char *type, tune_error *err)
{
    memset(o, 0, sizeof *o);
    o->field_instruction = "instruction";
    o->field_input = "input";
    o->field_output = "output";
    o->field_messages = "messages";
    o->field_role = "role";
    o->field_content = "content";
    o->field_system = "system";
    /* Axolotl's default role names: user [human, user], assistant [gpt, assistant] */
    o->roles[0] = (tune_data_role_map){"human", "user"};
    o->roles[1] = (tune_data_role_map){"gpt", "assistant"};
    o->n_roles = 2;
    o->roles_to_train[0] = "assistant";
    o->n_roles_to_train = 1;
    o->train_on_eos = TUNE_DATA_EOS_TURN;
    o->field = "text";
    if (!type || !strcmp(type, "alpaca")) {
        o->format = TUNE_FORMAT_ALPACA;
    } else if (!strcmp(type, "chat_template")) {
        o->format = TUNE_FORMAT_CHAT;
    } else if (!strcmp(type, "sharegpt")) {
        o->format = TUNE_FORMAT_CHAT;
        o->field_messages = "conversations";
        o->field_role = "from";
        o->field_content = "value";
    } else if (!strcmp(type, "llama2")) {
        o->format = TUNE_FORMAT_LLAMA2;
    } else if (!strcmp(type, "completion")) {
        o->format = TUNE_FORMAT_COMPLETION;
    } else {
        return tune_error_set(err, TUNE_ERR_INPUT, NULL, 0, 0,
                              "unknown dataset type '%s' (expected alpaca, sharegpt, chat_template, llama2 or "
                              "completion)",
                              type);
    }
    return TUNE_OK;
}

/* An error about a record's field: file:line, record index. */
static tune_status field_error(tune_error *err, const tune_record *rec, const char *fmt, const char *a, const char *b)
{
    tune_error_set(err, TUNE_ERR_INPUT, rec->file, rec->line, 0, fmt, a, b);
    if (err) err->record = rec->index;
    return TUNE_ERR_INPUT;
}

/* The string field `name` of a JSON record; NULL with an error when missing
 * (unless optional) or not a string. */
static tune_status get_string(const tune_record *rec, const cJSON *obj, const char *name, int optional,
                              const char **out, tune_error *err)
{
    *out = NULL;
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(obj, name);
    if (!f || cJSON_IsNull(f)) {
        if (optional) return TUNE_OK;
        return field_error(err, rec, "missing field '%s'%s", name, "");
    }
    if (!cJSON_IsString(f)) return field_error(err, rec, "field '%s' must be a string%s", name, "");
    *out = f->valuestring;
    return TUNE_OK;
}

static tune_status add_piece(tune_formatted *f, tune_piece_kind kind, size_t start, size_t end, int train,
                             int add_special, tune_error *err)
{
    if (kind == TUNE_PIECE_TEXT && start == end) return TUNE_OK;
    if (f->n_pieces == f->cap) {
        int cap = f->cap ? f->cap * 2 : 8;
        tune_text_piece *p = realloc(f->pieces, (size_t)cap * sizeof *p);
        if (!p) return tune_fail_run(err, NULL, "out of memory");
        f->pieces = p;
        f->cap = cap;
    }
    f->pieces[f->n_pieces++] = (tune_text_piece){kind, start, end, train, add_special};
    return TUNE_OK;
}

void tune_data_alpaca_prompt(const char *instruction, const char *input, tune_strbuf *out)
{
    if (input && *input)
        tune_strbuf_printf(out, ALPACA_WITH_INPUT, instruction, input);
    else
        tune_strbuf_printf(out, ALPACA_NO_INPUT, instruction);
}

static tune_status format_alpaca(const tune_record *rec, const tune_dataset_options *ds,
                                 const tune_data_options *opt, tune_formatted *f, tune_error *err)
{
    if (!rec->json) return field_error(err, rec, "alpaca records must be JSON objects%s%s", "", "");
    const char *ins, *input, *output;
    tune_status st;
    if ((st = get_string(rec, rec->json, ds->field_instruction, 0, &ins, err)) ||
        (st = get_string(rec, rec->json, ds->field_input, 1, &input, err)) ||
        (st = get_string(rec, rec->json, ds->field_output, 0, &output, err)))
        return st;
    tune_data_alpaca_prompt(ins, input, &f->text);
    size_t prompt_end = f->text.len;
    tune_strbuf_puts(&f->text, output);
    if (f->text.oom) return tune_fail_run(err, NULL, "out of memory");
    /* Axolotl: prompt and response tokenized separately, then EOS. */
    if ((st = add_piece(f, TUNE_PIECE_TEXT, 0, prompt_end, opt->train_on_inputs, 1, err)) ||
        (st = add_piece(f, TUNE_PIECE_TEXT, prompt_end, f->text.len, 1, 0, err)) ||
        (st = add_piece(f, TUNE_PIECE_EOS, f->text.len, f->text.len, 1, 0, err)))
        return st;
    return TUNE_OK;
}

static int role_trained(const tune_dataset_options *ds, const char *role)
{
    for (int i = 0; i < ds->n_roles_to_train; i++)
        if (!strcmp(ds->roles_to_train[i], role)) return 1;
    return 0;
}

/* Renders msgs with the template and cuts the text at the trained spans. */
static tune_status render_pieces(const tune_record *rec, const tune_dataset_options *ds,
                                 const tune_data_options *opt, const tune_template *tpl,
                                 const tune_chat_message *msgs, int n, tune_formatted *f, tune_error *err)
{
    if (n > TUNE_DATA_MAX_MESSAGES) { /* a Jinja template's spans take time quadratic in n */
        char have[16], limit[16];
        snprintf(have, sizeof have, "%d", n);
        snprintf(limit, sizeof limit, "%d", TUNE_DATA_MAX_MESSAGES);
        return field_error(err, rec, "a conversation of %s messages, more than tune's limit of %s (see docs/limits.md)",
                           have, limit);
    }
    tune_message_span *sp = calloc((size_t)n, sizeof *sp);
    if (!sp) return tune_fail_run(err, NULL, "out of memory");
    tune_status st = tune_chat_render(tpl, msgs, n, 0, &f->text, sp, err);
    if (st) {
        if (err) {
            /* Point the template's complaint at the record. */
            snprintf(err->file, sizeof err->file, "%s", rec->file);
            err->line = rec->line;
            err->record = rec->index;
        }
        free(sp);
        return st;
    }
    int last_trained = -1;
    for (int i = 0; i < n; i++)
        if (role_trained(ds, msgs[i].role)) last_trained = i;
    size_t at = 0;
    for (int i = 0; i < n && !st; i++) {
        int train = opt->train_on_inputs || role_trained(ds, msgs[i].role);
        int eos = ds->train_on_eos == TUNE_DATA_EOS_ALL || (ds->train_on_eos == TUNE_DATA_EOS_TURN && train) ||
                  (ds->train_on_eos == TUNE_DATA_EOS_LAST && i == last_trained);
        if (!train && !eos) continue;
        if (train) {
            if (!st) st = add_piece(f, TUNE_PIECE_TEXT, at, sp[i].start, 0, 0, err);
            if (!st) st = add_piece(f, TUNE_PIECE_TEXT, sp[i].start, sp[i].end, 1, 0, err);
            at = sp[i].end;
        }
        if (eos) {
            if (!st) st = add_piece(f, TUNE_PIECE_TEXT, at, sp[i].eot_start, 0, 0, err);
            if (!st) st = add_piece(f, TUNE_PIECE_TEXT, sp[i].eot_start, sp[i].eot_end, 1, 0, err);
            at = sp[i].eot_end;
        }
    }
    if (!st) st = add_piece(f, TUNE_PIECE_TEXT, at, f->text.len, 0, 0, err);
    f->tokenize_whole = 1;
    free(sp);
    if (!st && f->text.oom) st = tune_fail_run(err, NULL, "out of memory");
    return st;
}

static const char *map_role(const tune_dataset_options *ds, const char *role)
{
    for (int i = 0; i < ds->n_roles; i++)
        if (!strcmp(ds->roles[i].from, role)) return ds->roles[i].to;
    if (!strcmp(role, "system") || !strcmp(role, "user") || !strcmp(role, "assistant")) return role;
    return NULL;
}

static const tune_template *template_of(const tune_dataset_options *ds, const tune_data_options *opt)
{
    return ds->chat_template ? ds->chat_template : &opt->chat_template;
}

static tune_status format_chat(const tune_record *rec, const tune_dataset_options *ds, const tune_data_options *opt,
                               tune_formatted *f, tune_error *err)
{
    if (!rec->json) return field_error(err, rec, "chat records must be JSON objects%s%s", "", "");
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(rec->json, ds->field_messages);
    if (!list) return field_error(err, rec, "missing field '%s'%s", ds->field_messages, "");
    if (!cJSON_IsArray(list)) return field_error(err, rec, "field '%s' must be a list of messages%s",
                                                 ds->field_messages, "");
    int n = cJSON_GetArraySize(list);
    if (n == 0) return field_error(err, rec, "field '%s': empty conversation%s", ds->field_messages, "");
    int sys = opt->default_system_message != NULL;
    tune_chat_message *msgs = calloc((size_t)n + 1, sizeof *msgs);
    if (!msgs) return tune_fail_run(err, NULL, "out of memory");
    int k = 0;
    tune_status st = TUNE_OK;
    const cJSON *m;
    char where[160];
    cJSON_ArrayForEach(m, list)
    {
        snprintf(where, sizeof where, "%s[%d]", ds->field_messages, k);
        const char *role, *content;
        if (!cJSON_IsObject(m)) {
            st = field_error(err, rec, "field '%s' must be a message object%s", where, "");
            break;
        }
        if ((st = get_string(rec, m, ds->field_role, 0, &role, err)) ||
            (st = get_string(rec, m, ds->field_content, 0, &content, err))) {
            if (err) {
                char msg[sizeof err->message];
                memcpy(msg, err->message, sizeof msg);
                tune_strbuf sb = {0};
                tune_strbuf_printf(&sb, "%s: %s", where, msg);
                if (sb.data) snprintf(err->message, sizeof err->message, "%s", sb.data);
                tune_strbuf_free(&sb);
            }
            break;
        }
        const char *mapped = map_role(ds, role);
        if (!mapped) {
            char what[200];
            snprintf(what, sizeof what, "%s.%s", where, ds->field_role);
            st = field_error(err, rec, "field '%s': unknown role '%s' (map it with roles:)", what, role);
            break;
        }
        msgs[1 + k].role = mapped;
        msgs[1 + k].content = content;
        k++;
    }
    const char *record_system = NULL;
    if (!st && ds->field_system) st = get_string(rec, rec->json, ds->field_system, 1, &record_system, err);
    if (!st) {
        tune_chat_message *first = msgs + 1;
        if ((record_system || sys) && strcmp(first[0].role, "system")) {
            msgs[0].role = "system";
            msgs[0].content = record_system ? record_system : opt->default_system_message;
            first = msgs;
            k++;
        }
        st = render_pieces(rec, ds, opt, template_of(ds, opt), first, k, f, err);
    }
    free(msgs);
    return st;
}

/* Finds needle in [p, end); NULL when absent. */
static const char *find(const char *p, const char *end, const char *needle)
{
    size_t m = strlen(needle);
    for (; p + m <= end; p++)
        if (!memcmp(p, needle, m)) return p;
    return NULL;
}

static char *strip_in_place(char *s, char *end)
{
    size_t len;
    char *b = (char *)tune_text_strip(s, (size_t)(end - s), &len);
    b[len] = 0;
    return b;
}

tune_status tune_llama2_parse(const char *text, size_t len, tune_chat_message **msgs_out, int *n_out,
                              char **storage, tune_error *err)
{
    *msgs_out = NULL;
    *n_out = 0;
    char *s = malloc(len + 1);
    /* at most: a system message, then a user and an assistant message per "[INST]" */
    size_t cap = 1;
    for (const char *p = text; (p = find(p, text + len, "[INST]")) != NULL; p++) cap += 2;
    tune_chat_message *msgs = calloc(cap, sizeof *msgs);
    if (!s || !msgs) {
        free(s);
        free(msgs);
        return tune_fail_run(err, NULL, "out of memory");
    }
    memcpy(s, text, len);
    s[len] = 0;
    char *p = s, *end = s + len;
    int n = 0, turn = 0;
    const char *why = NULL;
    for (;;) {
        while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')) p++;
        if (p >= end) break;
        if (strncmp(p, "<s>", 3) == 0) p += 3;
        while (p < end && *p == ' ') p++;
        if (strncmp(p, "[INST]", 6)) {
            why = "expected '[INST]'";
            break;
        }
        p += 6;
        char *close = (char *)find(p, end, "[/INST]");
        if (!close) {
            why = "'[INST]' without '[/INST]'";
            break;
        }
        char *user = p;
        if (turn == 0) {
            char *q = user;
            while (q < close && (*q == ' ' || *q == '\n')) q++;
            if (!strncmp(q, "<<SYS>>", 7)) {
                char *sys_end = (char *)find(q, close, "<</SYS>>");
                if (!sys_end) {
                    why = "'<<SYS>>' without '<</SYS>>'";
                    break;
                }
                char *sys = q + 7;
                user = sys_end + 8;
                msgs[n++] = (tune_chat_message){"system", strip_in_place(sys, sys_end)};
            }
        }
        msgs[n++] = (tune_chat_message){"user", strip_in_place(user, close)};
        p = close + 7;
        char *eos = (char *)find(p, end, "</s>");
        char *answer_end = eos ? eos : end;
        char *answer = strip_in_place(p, answer_end);
        if (!*answer) {
            why = "a turn without an answer";
            break;
        }
        msgs[n++] = (tune_chat_message){"assistant", answer};
        p = eos ? eos + 4 : end;
        turn++;
    }
    if (!why && turn == 0) why = "no [INST] ... [/INST] turn";
    if (why) {
        free(s);
        free(msgs);
        return tune_error_set(err, TUNE_ERR_INPUT, NULL, 0, 0, "Llama-2-chat text: %s (turn %d)", why, turn + 1);
    }
    *msgs_out = msgs;
    *n_out = n;
    *storage = s;
    return TUNE_OK;
}

/* Text of a text-format record: the record itself, or its JSON `field`. */
static tune_status record_text(const tune_record *rec, const tune_dataset_options *ds, const char **text,
                               size_t *len, tune_error *err)
{
    if (rec->text) {
        *text = rec->text;
        *len = rec->text_len;
        return TUNE_OK;
    }
    tune_status st = get_string(rec, rec->json, ds->field, 0, text, err);
    if (!st) *len = strlen(*text);
    return st;
}

static tune_status format_llama2(const tune_record *rec, const tune_dataset_options *ds,
                                 const tune_data_options *opt, tune_formatted *f, tune_error *err)
{
    const char *text;
    size_t len;
    tune_status st = record_text(rec, ds, &text, &len, err);
    if (st) return st;
    tune_chat_message *msgs;
    int n;
    char *storage;
    st = tune_llama2_parse(text, len, &msgs, &n, &storage, err);
    if (st) {
        if (err) {
            snprintf(err->file, sizeof err->file, "%s", rec->file);
            err->line = rec->line;
            err->record = rec->index;
        }
        return st;
    }
    /* The record's <s> / </s> are its format's markers, not token texts:
     * render with the tokenizer's BOS/EOS texts, as Transformers' Llama-2
     * template does with bos_token/eos_token, so the trained end of a turn is
     * the EOS token even where "</s>" is plain text (SmolLM2). Options without
     * texts fall back to the Llama-2 defaults "<s>" / "</s>". */
    const tune_template llama2 = {.id = TUNE_TEMPLATE_LLAMA2, .opt = opt->chat_template.opt};
    st = render_pieces(rec, ds, opt, &llama2, msgs, n, f, err);
    free(msgs);
    free(storage);
    return st;
}

static tune_status format_completion(const tune_record *rec, const tune_dataset_options *ds, tune_formatted *f,
                                     tune_error *err)
{
    const char *text;
    size_t len;
    tune_status st = record_text(rec, ds, &text, &len, err);
    if (st) return st;
    tune_strbuf_append(&f->text, text, len);
    if (f->text.oom) return tune_fail_run(err, NULL, "out of memory");
    if ((st = add_piece(f, TUNE_PIECE_TEXT, 0, len, 1, 1, err))) return st;
    return add_piece(f, TUNE_PIECE_EOS, len, len, 1, 0, err);
}

tune_status tune_data_format_record(const tune_record *rec, const tune_dataset_options *ds,
                                    const tune_data_options *opt, tune_formatted *out, tune_error *err)
{
    memset(out, 0, sizeof *out);
    switch (ds->format) {
    case TUNE_FORMAT_ALPACA: return format_alpaca(rec, ds, opt, out, err);
    case TUNE_FORMAT_CHAT: return format_chat(rec, ds, opt, out, err);
    case TUNE_FORMAT_LLAMA2: return format_llama2(rec, ds, opt, out, err);
    case TUNE_FORMAT_COMPLETION: return format_completion(rec, ds, out, err);
    }
    return tune_fail_run(err, NULL, "unknown dataset format %d", (int)ds->format);
}

void tune_formatted_free(tune_formatted *f)
{
    tune_strbuf_free(&f->text);
    free(f->pieces);
    memset(f, 0, sizeof *f);
}
