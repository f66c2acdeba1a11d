/* tune preprocess CONFIG [--debug N] [overrides]: runs the data stage and
 * writes what it made, for a person to check before training. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tune/cli.h"
#include "tune/data.h"
#include "tune/plan.h"
#include "tune/tokenizer.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: tune preprocess CONFIG.yml [--debug N] [--key value ...]\n\n"
            "Reads, formats and tokenizes the config's datasets as training would, and writes\n"
            "  OUTPUT_DIR/processed_conversations.json  per example: rendered text, input_ids, labels\n"
            "                                           (-100 = not trained)\n"
            "  OUTPUT_DIR/preprocess_report.json        records read, skipped (with reasons), examples,\n"
            "                                           tokens, trained tokens, truncated, dropped\n"
            "and fills the prepared-data cache (dataset_prepared_path).\n"
            "--debug N prints the first N examples token by token: trained tokens in green\n"
            "(in [brackets] when the output is not a terminal), masked ones plain.\n");
}

/* The built-in a config chat_template value (of `key`) means for this tokenizer. */
static tune_status template_for(const char *key, int value, const tune_tokenizer *tok, tune_template_id *id,
                                tune_error *err)
{
    return tune_template_resolve(tune_config_enum_name(key, value), tune_tokenizer_chat_template(tok), id, err);
}

static const char *const TYPE_NAMES[] = {"alpaca", "chat_template", "llama2", "completion"};

/* One config dataset entry as data-stage options; *files receives the resolved file list. */
static tune_status dataset_options(const tune_dataset_config *dc, const char *path, const tune_tokenizer *tok,
                                   tune_dataset_options *o, char ***files, tune_error *err)
{
    if ((unsigned)dc->type >= sizeof TYPE_NAMES / sizeof TYPE_NAMES[0])
        return tune_fail_input(err, path, "unknown dataset type");
    tune_status st = tune_dataset_options_init(o, TYPE_NAMES[dc->type], err);
    if (st) return st;
    o->name = dc->path;
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
                    return tune_fail_input(err, path, "more than %d role names", TUNE_DATA_MAX_ROLES);
                o->roles[o->n_roles++] = (tune_data_role_map){dc->roles[r].names[k], dc->roles[r].role};
            }
    }
    if (dc->roles_to_train_count > 0) {
        if (dc->roles_to_train_count > 4) return tune_fail_input(err, path, "roles_to_train holds at most 4 roles");
        for (int r = 0; r < dc->roles_to_train_count; r++) o->roles_to_train[r] = dc->roles_to_train[r];
        o->n_roles_to_train = dc->roles_to_train_count;
    }
    switch (dc->train_on_eos) {
    case TUNE_EOS_ALL: o->train_on_eos = TUNE_DATA_EOS_ALL; break;
    case TUNE_EOS_LAST: o->train_on_eos = TUNE_DATA_EOS_LAST; break;
    case TUNE_EOS_NONE: o->train_on_eos = TUNE_DATA_EOS_NONE; break;
    default: o->train_on_eos = TUNE_DATA_EOS_TURN; break;
    }
    if (dc->chat_template != TUNE_CHAT_TEMPLATE_UNSET && dc->type == TUNE_DS_CHAT_TEMPLATE) {
        tune_template_id id;
        if ((st = template_for("chat_template", (int)dc->chat_template, tok, &id, err))) return st;
        o->template_id = (int)id;
    }
    int n;
    st = tune_data_resolve_files(path, (const char *const *)dc->data_files, dc->data_files_count, dc->split, files,
                                 &n, err);
    if (st) return st;
    o->files = (const char *const *)*files;
    o->n_files = n;
    return TUNE_OK;
}

typedef struct {
    tune_dataset_options *train, *test;
    char ***files; /* (n_train + n_test) */
    int n_train, n_test;
} data_setup;

static void setup_free(data_setup *s)
{
    for (int i = 0; s->files && i < s->n_train + s->n_test; i++)
        tune_data_files_free(s->files[i], i < s->n_train ? s->train[i].n_files : s->test[i - s->n_train].n_files);
    free(s->files);
    free(s->train);
    free(s->test);
}

static tune_status data_options(const tune_config *cfg, const tune_plan *plan, const tune_tokenizer *tok,
                                data_setup *s, tune_data_options *o, tune_error *err)
{
    memset(o, 0, sizeof *o);
    memset(s, 0, sizeof *s);
    s->n_train = cfg->datasets_count;
    s->n_test = cfg->test_datasets_count;
    s->train = calloc((size_t)s->n_train + 1, sizeof *s->train);
    s->test = calloc((size_t)s->n_test + 1, sizeof *s->test);
    s->files = calloc((size_t)(s->n_train + s->n_test) + 1, sizeof *s->files);
    if (!s->train || !s->test || !s->files) return tune_fail_run(err, NULL, "out of memory");
    tune_status st = TUNE_OK;
    int any_chat = 0;
    for (int i = 0; i < s->n_train && !st; i++) {
        st = dataset_options(&cfg->datasets[i], plan->train_paths[i], tok, &s->train[i], &s->files[i], err);
        any_chat |= cfg->datasets[i].type == TUNE_DS_CHAT_TEMPLATE && s->train[i].template_id < 0;
    }
    for (int i = 0; i < s->n_test && !st; i++) {
        st = dataset_options(&cfg->test_datasets[i], plan->eval_paths[i], tok, &s->test[i], &s->files[s->n_train + i],
                             err);
        any_chat |= cfg->test_datasets[i].type == TUNE_DS_CHAT_TEMPLATE && s->test[i].template_id < 0;
    }
    if (st) return st;
    o->datasets = s->train;
    o->n_datasets = s->n_train;
    o->test_datasets = s->test;
    o->n_test_datasets = s->n_test;
    /* the top-level template matters only to chat datasets without their own */
    o->template_id = TUNE_TEMPLATE_CHATML;
    if (any_chat && (st = template_for("chat_template", (int)cfg->chat_template, tok, &o->template_id, err))) return st;
    const tune_special_ids *sp = tune_tokenizer_specials(tok);
    o->template_options = tune_template_default_options(o->template_id);
    if (sp->bos >= 0) o->template_options.bos = tune_tokenizer_id_to_token(tok, sp->bos);
    if (sp->eos >= 0) o->template_options.eos = tune_tokenizer_id_to_token(tok, sp->eos);
    if (cfg->chat_template_date) o->template_options.date = cfg->chat_template_date;
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

static int fail(const tune_error *err)
{
    tune_error_print(stderr, err);
    return err->code ? (int)err->code : 1;
}

int tune_cli_preprocess(int argc, char **argv)
{
    if (tune_cli_wants_help(argc, argv)) {
        usage(stdout);
        return 0;
    }
    long debug = 0;
    int n = 0;
    char **args = malloc(((size_t)argc + 1) * sizeof *args);
    if (!args) return 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--debug")) {
            char *end;
            if (i + 1 >= argc || (debug = strtol(argv[i + 1], &end, 10)) < 0 || *end) {
                free(args);
                return tune_cli_usage_error("preprocess", "--debug needs a count of examples");
            }
            i++;
        } else {
            args[n++] = argv[i];
        }
    }
    tune_config cfg;
    int rc = tune_cli_load_config("preprocess", n, args, &cfg);
    free(args);
    if (rc) return rc;
    tune_plan plan;
    tune_error_list errs = {0};
    tune_status st = tune_plan_init(&plan, &cfg, &errs);
    for (int i = 0; i < errs.count; i++) tune_error_print(stderr, &errs.items[i]);
    tune_error_list_free(&errs);
    if (st) {
        tune_plan_free(&plan);
        tune_config_free(&cfg);
        return (int)st;
    }
    tune_error err;
    tune_error_clear(&err);
    tune_tokenizer *tok = NULL;
    tune_data_tokenizer dtok;
    data_setup setup = {0};
    tune_data_options opt;
    tune_prepared prep;
    memset(&prep, 0, sizeof prep);
    char path[4096];
    if ((st = tune_tokenizer_load(plan.tokenizer_path, &tok, &err)) ||
        (st = tune_data_tokenizer_wrap(tok, plan.tokenizer_path, &dtok, &err)) ||
        (st = data_options(&cfg, &plan, tok, &setup, &opt, &err)) ||
        (st = tune_data_prepare(&opt, &dtok, plan.prepared_dir, 1, &prep, &err)) ||
        (st = tune_mkdir_p(plan.output_dir, &err))) {
        rc = fail(&err);
        goto done;
    }
    snprintf(path, sizeof path, "%s/processed_conversations.json", plan.output_dir);
    if ((st = tune_data_write_processed(&prep, path, &err))) {
        rc = fail(&err);
        goto done;
    }
    snprintf(path, sizeof path, "%s/preprocess_report.json", plan.output_dir);
    if ((st = tune_data_write_report(&prep, path, &err))) {
        rc = fail(&err);
        goto done;
    }
    tune_strbuf sb = {0};
    tune_data_report_text(&prep, &sb);
    int color = isatty(STDOUT_FILENO);
    for (long i = 0; i < debug && (size_t)i < prep.train.count + prep.val.count && !st; i++) {
        tune_strbuf_puts(&sb, "\n");
        st = tune_data_debug_example(&prep, (size_t)i, &dtok, color, &sb, &err);
    }
    if (st) rc = fail(&err);
    else if (sb.oom) rc = 1;
    else {
        fwrite(sb.data, 1, sb.len, stdout);
        printf("\nwrote %s/processed_conversations.json and %s/preprocess_report.json\n", plan.output_dir,
               plan.output_dir);
    }
    tune_strbuf_free(&sb);
done:
    tune_prepared_free(&prep);
    setup_free(&setup);
    tune_tokenizer_free(tok);
    tune_plan_free(&plan);
    tune_config_free(&cfg);
    return rc;
}
