/* The plan's data side: config datasets → data-stage options, and the one
 * call that prepares a plan's data and gives the plan its counts. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tune/lora.h"
#include "tune/plan.h"
#include "tune/tokenizer.h"
#include "tune/util.h"

/* Re-positions err (a message from another module) at a config key. */
static tune_status at_key(const tune_config *cfg, const tune_origin *o, const char *key, tune_error *err)
{
    if (!err) return TUNE_ERR_INPUT;
    tune_status code = err->code ? err->code : TUNE_ERR_INPUT;
    char msg[sizeof err->message];
    tune_error_format(err, msg, sizeof msg);
    tune_config_error_at(cfg, o, err, "%s: %s", key, msg);
    err->code = code;
    return code;
}

/* chat_template_jinja: the template text, or the path of a file holding it. */
static tune_status jinja_source(const tune_config *cfg, char **text, tune_error *err)
{
    const char *v = cfg->chat_template_jinja;
    *text = NULL;
    if (!v) return TUNE_OK;
    int used = cfg->chat_template == TUNE_CHAT_TEMPLATE_JINJA;
    for (int i = 0; i < cfg->datasets_count; i++) used |= cfg->datasets[i].chat_template == TUNE_CHAT_TEMPLATE_JINJA;
    for (int i = 0; i < cfg->test_datasets_count; i++)
        used |= cfg->test_datasets[i].chat_template == TUNE_CHAT_TEMPLATE_JINJA;
    if (!used)
        return tune_config_error_at(cfg, tune_config_origin(cfg, "chat_template_jinja"), err,
                                    "chat_template_jinja is set but no chat_template is jinja, so it would be "
                                    "ignored; set chat_template: jinja");
    int markup = strstr(v, "{{") || strstr(v, "{%") || strstr(v, "{#");
    if (!markup && tune_path_exists(v)) {
        size_t len;
        tune_status st = tune_read_file(v, text, &len, err);
        if (st) return at_key(cfg, tune_config_origin(cfg, "chat_template_jinja"), "chat_template_jinja", err);
        if (strlen(*text) != len)
            return tune_config_error_at(cfg, tune_config_origin(cfg, "chat_template_jinja"), err,
                                        "chat_template_jinja: '%s' holds a NUL byte", v);
        return TUNE_OK;
    }
    if (!markup && tune_template_is_file(v))
        return tune_config_error_at(cfg, tune_config_origin(cfg, "chat_template_jinja"), err,
                                    "chat_template_jinja: '%s' does not exist", v);
    return (*text = strdup(v)) ? TUNE_OK : tune_fail_run(err, NULL, "out of memory");
}

/* The template a config chat_template value means for this tokenizer. */
static tune_status template_for(const tune_config *cfg, const tune_origin *o, const char *key, int value,
                                const tune_tokenizer *tok, const char *jinja, tune_template *t,
                                tune_error *err)
{
    tune_status st = tune_template_open(tune_config_enum_name("chat_template", value),
                                             tune_tokenizer_chat_template(tok), jinja, cfg->chat_template_jinja, t, err);
    return st ? at_key(cfg, o, key, err) : TUNE_OK;
}

static int is_chat(tune_dataset_type t) { return t == TUNE_DS_CHAT_TEMPLATE || t == TUNE_DS_SHAREGPT; }

/* One config dataset entry (`key` is "datasets[i]") as data-stage options;
 * *files receives the resolved file list. */
static tune_status dataset_options(const tune_config *cfg, const tune_dataset_config *dc, const char *key,
                                   const char *path, const tune_tokenizer *tok, const char *jinja,
                                   tune_template *tpl, tune_dataset_options *o, char ***files, tune_error *err)
{
    const char *type = tune_config_enum_name("type", (int)dc->type);
    tune_status st = tune_dataset_options_init(o, type, err);
    if (st) return at_key(cfg, tune_dataset_origin(dc, "type"), key, err);
    o->name = dc->path;
    /* A key the config leaves unset (NULL) keeps the type's default. */
    if (dc->field_instruction) o->field_instruction = dc->field_instruction;
    if (dc->field_input) o->field_input = dc->field_input;
    if (dc->field_output) o->field_output = dc->field_output;
    if (dc->field_system) o->field_system = dc->field_system;
    if (dc->field_messages) o->field_messages = dc->field_messages;
    if (dc->field) o->field = dc->field;
    if (dc->message_property_mappings.role) o->field_role = dc->message_property_mappings.role;
    if (dc->message_property_mappings.content) o->field_content = dc->message_property_mappings.content;
    if (dc->roles_count > 0) {
        o->n_roles = 0;
        for (int r = 0; r < dc->roles_count; r++)
            for (int k = 0; k < dc->roles[r].names_count; k++) {
                if (o->n_roles == TUNE_DATA_MAX_ROLES)
                    return tune_config_error_at(cfg, tune_dataset_origin(dc, "roles"), err,
                                                "%s.roles: more than %d role names", key, TUNE_DATA_MAX_ROLES);
                o->roles[o->n_roles++] = (tune_data_role_map){dc->roles[r].names[k], dc->roles[r].role};
            }
    }
    if (dc->roles_to_train_count > 0) {
        int max = (int)(sizeof o->roles_to_train / sizeof o->roles_to_train[0]);
        if (dc->roles_to_train_count > max)
            return tune_config_error_at(cfg, tune_dataset_origin(dc, "roles_to_train"), err,
                                        "%s.roles_to_train: at most %d roles", key, max);
        for (int r = 0; r < dc->roles_to_train_count; r++) o->roles_to_train[r] = dc->roles_to_train[r];
        o->n_roles_to_train = dc->roles_to_train_count;
    }
    switch (dc->train_on_eos) {
    case TUNE_EOS_ALL: o->train_on_eos = TUNE_DATA_EOS_ALL; break;
    case TUNE_EOS_LAST: o->train_on_eos = TUNE_DATA_EOS_LAST; break;
    case TUNE_EOS_NONE: o->train_on_eos = TUNE_DATA_EOS_NONE; break;
    default: o->train_on_eos = TUNE_DATA_EOS_TURN; break;
    }
    if (dc->chat_template != TUNE_CHAT_TEMPLATE_UNSET && is_chat(dc->type)) {
        if ((st = template_for(cfg, tune_dataset_origin(dc, "chat_template"), key, (int)dc->chat_template, tok, jinja,
                               tpl, err)))
            return st;
        o->chat_template = tpl;
    }
    int n = 0;
    st = tune_data_resolve_files(path, (const char *const *)dc->data_files, dc->data_files_count, dc->split, files,
                                 &n, err);
    if (st) return at_key(cfg, tune_dataset_origin(dc, "path"), key, err);
    o->files = (const char *const *)*files;
    o->n_files = n;
    return TUNE_OK;
}

/* The vocabulary text and id of a special_tokens override; the token must exist. */
static tune_status special_token(const tune_config *cfg, const tune_tokenizer *tok, const char *name,
                                 const char *text, int32_t *id, tune_error *err)
{
    *id = tune_tokenizer_token_to_id(tok, text);
    if (*id < 0)
        return tune_config_error_at(cfg, tune_config_origin(cfg, "special_tokens"), err,
                                    "special_tokens.%s '%s' is not in the tokenizer's vocabulary", name, text);
    return TUNE_OK;
}

tune_status tune_plan_data_options(const tune_config *cfg, const tune_plan *plan, const tune_tokenizer *tok,
                                   tune_plan_data_setup *s, tune_error *err)
{
    memset(s, 0, sizeof *s);
    tune_data_options *o = &s->opt;
    int n = cfg->datasets_count + cfg->test_datasets_count;
    if (plan->n_train_paths != cfg->datasets_count || plan->n_eval_paths != cfg->test_datasets_count)
        return tune_fail_run(err, NULL, "the plan was made from another config");
    s->datasets = calloc((size_t)n + 1, sizeof *s->datasets);
    s->files = calloc((size_t)n + 1, sizeof *s->files);
    s->templates = calloc((size_t)n + 1, sizeof *s->templates);
    if (!s->datasets || !s->files || !s->templates) return tune_fail_run(err, NULL, "out of memory");
    s->n_templates = n + 1;
    tune_status st = jinja_source(cfg, &s->jinja, err);
    if (st) return st;
    int any_chat = 0;
    for (int i = 0; i < n; i++) {
        int test = i >= cfg->datasets_count;
        int j = test ? i - cfg->datasets_count : i;
        const tune_dataset_config *dc = test ? &cfg->test_datasets[j] : &cfg->datasets[j];
        char key[64];
        snprintf(key, sizeof key, "%s[%d]", test ? "test_datasets" : "datasets", j);
        st = dataset_options(cfg, dc, key, test ? plan->eval_paths[j] : plan->train_paths[j], tok, s->jinja,
                             &s->templates[i + 1], &s->datasets[i], &s->files[i], err);
        if (st) return st;
        if (test) s->n_test_datasets++;
        else s->n_datasets++;
        any_chat |= is_chat(dc->type) && !s->datasets[i].chat_template;
    }
    o->datasets = s->datasets;
    o->n_datasets = s->n_datasets;
    o->test_datasets = s->datasets + s->n_datasets;
    o->n_test_datasets = s->n_test_datasets;
    /* The top-level template matters only to chat datasets without their own. */
    s->templates[0].id = TUNE_TEMPLATE_CHATML;
    if (any_chat && (st = template_for(cfg, tune_config_origin(cfg, "chat_template"), "chat_template",
                                       (int)cfg->chat_template, tok, s->jinja, &s->templates[0], err)))
        return st;
    /* Every template writes the tokenizer's BOS/EOS texts (or the
     * special_tokens overrides) and the fixed date. */
    tune_template_options texts = tune_template_default_options(s->templates[0].id);
    tune_tokenizer_bos_eos_texts(tok, &texts.bos, &texts.eos);
    const struct { const char *name, *text; const char **dst; } overrides[] = {
        {"bos_token", cfg->special_tokens.bos_token, &texts.bos},
        {"eos_token", cfg->special_tokens.eos_token, &texts.eos},
    };
    for (size_t i = 0; i < sizeof overrides / sizeof overrides[0]; i++) {
        int32_t id;
        if (!overrides[i].text) continue;
        if ((st = special_token(cfg, tok, overrides[i].name, overrides[i].text, &id, err))) return st;
        *overrides[i].dst = overrides[i].text;
    }
    if (cfg->chat_template_date) texts.date = cfg->chat_template_date;
    for (int i = 0; i <= n; i++) s->templates[i].opt = texts;
    o->chat_template = s->templates[0];
    o->default_system_message = cfg->default_system_message;
    o->sequence_len = (int)cfg->sequence_len;
    o->excess = cfg->excess_length_strategy == TUNE_EXCESS_TRUNCATE ? TUNE_DATA_EXCESS_TRUNCATE
                : cfg->excess_length_strategy == TUNE_EXCESS_RAISE  ? TUNE_DATA_EXCESS_RAISE
                                                                    : TUNE_DATA_EXCESS_DROP;
    o->train_on_inputs = cfg->train_on_inputs;
    o->skip_bad_records = cfg->skip_bad_records;
    o->val_set_size = cfg->val_set_size;
    o->seed = (uint64_t)cfg->seed;
    return TUNE_OK;
}

void tune_plan_data_setup_free(tune_plan_data_setup *s)
{
    int n = s->n_datasets + s->n_test_datasets;
    for (int i = 0; s->files && i < n; i++) tune_data_files_free(s->files[i], s->datasets[i].n_files);
    free(s->files);
    free(s->datasets);
    for (int i = 0; i < s->n_templates; i++) tune_template_close(&s->templates[i]);
    free(s->templates);
    free(s->jinja);
    memset(s, 0, sizeof *s);
}

static void warn(tune_plan *plan, const tune_config *cfg, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void warn(tune_plan *plan, const tune_config *cfg, const char *key, const char *fmt, ...)
{
    char msg[900];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    tune_error w;
    tune_config_error_at(cfg, tune_config_origin(cfg, key), &w, "%s", msg);
    tune_error_list_add(&plan->warnings, &w);
}

/* What the report says a person should know before training. */
static void data_warnings(tune_plan *plan, const tune_config *cfg, const tune_data_report *r)
{
    tune_dataset_report t;
    memset(&t, 0, sizeof t);
    for (int d = 0; d < r->n_datasets; d++) {
        const tune_dataset_report *x = &r->datasets[d];
        t.dropped_long += x->dropped_long, t.truncated += x->truncated, t.skipped += x->skipped;
        t.dropped_untrained += x->dropped_untrained;
        if (x->longest > t.longest) t.longest = x->longest;
    }
    if (t.dropped_long > 0)
        warn(plan, cfg, "sequence_len",
             "%ld example%s dropped as longer than sequence_len %ld (the longest has %ld tokens); sequence_len: %ld "
             "keeps them all",
             t.dropped_long, t.dropped_long == 1 ? "" : "s", plan->sequence_len, t.longest,
             (t.longest + 63) / 64 * 64);
    if (t.truncated > 0)
        warn(plan, cfg, "excess_length_strategy",
             "%ld example%s truncated to sequence_len %ld (the longest has %ld tokens)", t.truncated,
             t.truncated == 1 ? "" : "s", plan->sequence_len, t.longest);
    if (t.skipped > 0)
        warn(plan, cfg, "skip_bad_records", "%ld bad record%s skipped (tune preprocess lists them)", t.skipped,
             t.skipped == 1 ? "" : "s");
    if (t.dropped_untrained > 0)
        warn(plan, cfg, "train_on_inputs", "%ld example%s dropped: nothing in them is trained", t.dropped_untrained,
             t.dropped_untrained == 1 ? "" : "s");
}

/* Axolotl's tokenizer setup: special_tokens missing from the vocabulary are
 * added as special tokens (add_special_tokens), then `tokens` (add_tokens).
 * New ids need trained embedding and output rows, so, as Axolotl requires,
 * lora_modules_to_save must hold embed_tokens and lm_head. Whatever was
 * added joins the tokenizer fingerprint (the data cache key): an added token
 * that was already in the vocabulary still changes how text splits. */
static tune_status add_config_tokens(const tune_config *cfg, const tune_plan *plan, tune_plan_data *d,
                                     tune_error *err)
{
    const char *const specials[] = {cfg->special_tokens.bos_token, cfg->special_tokens.eos_token,
                                    cfg->special_tokens.pad_token, cfg->special_tokens.unk_token};
    tune_sha256 h;
    tune_sha256_init(&h);
    tune_sha256_update(&h, d->dtok.fingerprint, 64);
    int any = 0;
    size_t k;
    for (size_t i = 0; i < sizeof specials / sizeof *specials; i++) {
        if (!specials[i] || tune_tokenizer_token_to_id(d->tok, specials[i]) >= 0) continue;
        if (tune_tokenizer_add_tokens(d->tok, &specials[i], 1, 1, &k, err))
            return at_key(cfg, tune_config_origin(cfg, "special_tokens"), "special_tokens", err);
        d->n_new_tokens += k;
        tune_sha256_update(&h, "special:", 8);
        tune_sha256_update(&h, specials[i], strlen(specials[i]) + 1);
        any = 1;
    }
    if (cfg->tokens_count > 0) {
        if (tune_tokenizer_add_tokens(d->tok, (const char *const *)cfg->tokens, (size_t)cfg->tokens_count, 0, &k, err))
            return at_key(cfg, tune_config_origin(cfg, "tokens"), "tokens", err);
        d->n_new_tokens += k;
        for (int i = 0; i < cfg->tokens_count; i++) {
            tune_sha256_update(&h, "token:", 6);
            tune_sha256_update(&h, cfg->tokens[i], strlen(cfg->tokens[i]) + 1);
        }
        any = 1;
    }
    const unsigned both = TUNE_SAVE_EMBED | TUNE_SAVE_LM_HEAD;
    if (d->n_new_tokens > 0 && (plan->lora_saved & both) != both) {
        const char *key = cfg->tokens_count > 0 ? "tokens" : "special_tokens";
        return tune_config_error_at(cfg, tune_config_origin(cfg, key), err,
                                    "%s: %zu new token%s need%s trained embeddings: set lora_modules_to_save: "
                                    "[embed_tokens, lm_head]",
                                    key, d->n_new_tokens, d->n_new_tokens == 1 ? "" : "s",
                                    d->n_new_tokens == 1 ? "s" : "");
    }
    if (!any) return TUNE_OK;
    uint8_t dg[32];
    tune_sha256_final(&h, dg);
    for (int i = 0; i < 32; i++) snprintf(d->dtok.fingerprint + 2 * i, 3, "%02x", dg[i]);
    return TUNE_OK;
}

static tune_status prepare(tune_plan *plan, const tune_config *cfg, int keep_text, tune_plan_data *d,
                           tune_error *err)
{
    tune_status st;
    if ((st = tune_tokenizer_load(plan->tokenizer_path, &d->tok, err)) ||
        (st = tune_data_tokenizer_wrap(d->tok, plan->tokenizer_path, &d->dtok, err)) ||
        (st = add_config_tokens(cfg, plan, d, err)))
        return st;
    if (plan->vocab_size < tune_tokenizer_vocab_size(d->tok)) { /* the model grows to the tokenizer */
        plan->vocab_size = tune_tokenizer_vocab_size(d->tok);
        if (plan->have_model) tune_plan_set_model(plan, &plan->model);
    }
    /* special_tokens overrides of the ids the data stage appends and pads with */
    const struct { const char *name, *text; int32_t *dst; } ids[] = {
        {"eos_token", cfg->special_tokens.eos_token, &d->dtok.eos_id},
        {"pad_token", cfg->special_tokens.pad_token, &d->dtok.pad_id},
    };
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++)
        if (ids[i].text && (st = special_token(cfg, d->tok, ids[i].name, ids[i].text, ids[i].dst, err))) return st;
    if ((st = tune_plan_data_options(cfg, plan, d->tok, &d->setup, err)) ||
        (st = tune_data_prepare(&d->setup.opt, &d->dtok, plan->prepared_dir, keep_text, &d->prep, err)))
        return st;
    d->batch = (tune_batch_options){
        .micro_batch_size = (int)plan->micro_batch_size,
        .sequence_len = (int)plan->sequence_len,
        .sample_packing = plan->sample_packing,
        .pad_to_sequence_len = plan->pad_to_sequence_len,
        .shuffle = 1,
        .pad_id = d->dtok.pad_id >= 0 ? d->dtok.pad_id : d->dtok.eos_id,
        .seed = (uint64_t)plan->seed,
    };
    long rows = (long)d->prep.train.count;
    if (plan->sample_packing) {
        tune_batcher *b;
        if ((st = tune_batcher_create(&d->prep.train, &d->batch, &b, err))) return st;
        rows = tune_batcher_rows(b, 0, err);
        tune_batcher_free(b);
        if (rows < 0) return err ? err->code : TUNE_ERR_RUN;
    }
    plan->n_train_unpacked = (long)d->prep.train.count;
    plan->n_train_tokens = (long long)d->prep.train.n_tokens;
    /* The memory the run holds besides weights, adapters and workspace. */
    plan->mem_runtime = (long long)tune_peak_rss_bytes();
    if (plan->have_model) tune_plan_set_model(plan, &plan->model);
    tune_plan_set_examples(plan, rows, plan->has_eval ? (long)d->prep.val.count : 0);
    data_warnings(plan, cfg, &d->prep.report);
    return TUNE_OK;
}

tune_status tune_plan_prepare_data(tune_plan *plan, const tune_config *cfg, int keep_text, tune_plan_data *d,
                                   tune_error *err)
{
    memset(d, 0, sizeof *d);
    tune_error_clear(&plan->data_error);
    tune_status st = prepare(plan, cfg, keep_text, d, &plan->data_error);
    plan->data_prepared = st ? -1 : 1;
    if (st && plan->data_error.code == TUNE_OK) plan->data_error.code = st;
    if (err) *err = plan->data_error;
    return st;
}

void tune_plan_data_free(tune_plan_data *d)
{
    tune_prepared_free(&d->prep);
    tune_plan_data_setup_free(&d->setup);
    tune_tokenizer_free(d->tok);
    memset(d, 0, sizeof *d);
}
