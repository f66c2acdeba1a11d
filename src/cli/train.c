/* tune train CONFIG [overrides]  (also: tune CONFIG.yml)
 * config → plan → data → model + LoRA → training loop. */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tune/cli.h"
#include "tune/data.h"
#include "tune/lora.h"
#include "tune/model.h"
#include "tune/plan.h"
#include "tune/tokenizer.h"
#include "tune/train.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: tune train CONFIG.yml [--key value ...]\n"
            "       tune CONFIG.yml [--key value ...]\n\n"
            "Trains a LoRA adapter as the config describes. Any config key can be\n"
            "overridden: --learning_rate 5e-5, --set datasets.0.path=x.jsonl, and the short\n"
            "flags --model, --dataset, --output_dir, --epochs, --batch_size, --lr, --lora_r.\n\n"
            "Writes into output_dir: config_resolved.yml (running tune on it reproduces the\n"
            "run), checkpoint-N/ every save interval, training_log.jsonl, loss.svg, and at the\n"
            "end adapter_model.safetensors + adapter_config.json (PEFT format),\n"
            "trainer_state.json and run_manifest.json; with tokens / special_tokens added\n"
            "to the vocabulary also tokenizer.json (load the base model, resize its\n"
            "embeddings to len(tokenizer), then the adapter). resume_from_checkpoint and\n"
            "auto_resume_from_checkpoints continue an interrupted run to the same adapter.\n");
}

/* Progress on stderr: a bar redrawn in place on a terminal, log lines otherwise. */
typedef struct progress {
    int tty;
    int bar_drawn;
} progress;

static void on_event(void *ctx, const tune_train_event *ev)
{
    progress *p = ctx;
    char line[512];
    tune_train_format_event(ev, p->tty, line, sizeof line);
    if (!line[0]) return;
    if (p->tty && ev->kind == TUNE_EVENT_STEP) {
        fprintf(stderr, "\r%s", line);
        p->bar_drawn = 1;
    } else {
        fprintf(stderr, "%s%s\n", p->bar_drawn ? "\n" : "", line);
        p->bar_drawn = 0;
    }
    fflush(stderr);
}

static int report(const tune_error *err)
{
    tune_error_print(stderr, err);
    return err->code ? (int)err->code : 1;
}

/* Every data file of the run, for the manifest. */
static const char **data_files(const tune_plan_data *data, int *n)
{
    const tune_data_options *o = &data->setup.opt;
    int total = 0;
    for (int i = 0; i < o->n_datasets; i++) total += o->datasets[i].n_files;
    for (int i = 0; i < o->n_test_datasets; i++) total += o->test_datasets[i].n_files;
    const char **files = malloc((size_t)(total ? total : 1) * sizeof *files);
    if (!files) return NULL;
    *n = 0;
    for (int i = 0; i < o->n_datasets; i++)
        for (int k = 0; k < o->datasets[i].n_files; k++) files[(*n)++] = o->datasets[i].files[k];
    for (int i = 0; i < o->n_test_datasets; i++)
        for (int k = 0; k < o->test_datasets[i].n_files; k++) files[(*n)++] = o->test_datasets[i].files[k];
    return files;
}

/* The adapted modules: lora_target_modules by PEFT's name rule, else every
 * linear layer (lora_target_linear). */
static tune_status lora_for(const tune_config *cfg, const tune_plan *plan, const tune_model *model, tune_lora **lora,
                            tune_error *err)
{
    const tune_model_config *mc = &model->cfg;
    tune_lora_config lc = {.r = plan->lora_r,
                           .alpha = (float)plan->lora_alpha,
                           .dropout = (float)plan->lora_dropout,
                           .use_rslora = plan->use_rslora,
                           .target_mask = plan->lora_target_mask};
    unsigned char *selected = NULL;
    tune_status st = TUNE_OK;
    if (cfg->lora_target_modules_count > 0) {
        selected = calloc((size_t)mc->num_hidden_layers * TUNE_N_LINEAR, 1);
        if (!selected) return tune_fail_run(err, NULL, "out of memory");
        st = tune_lora_select_names(mc, (const char *const *)cfg->lora_target_modules, cfg->lora_target_modules_count,
                                    selected, err);
    }
    if (st == TUNE_OK) st = tune_lora_create(mc, &lc, selected, (uint64_t)plan->seed, lora, err);
    free(selected);
    if (st == TUNE_OK && plan->lora_saved) st = tune_lora_add_saved(*lora, model, plan->lora_saved, err);
    return st;
}

static int train(const tune_config *cfg, tune_plan *plan, const char *config_path)
{
    tune_error err;
    tune_error_clear(&err);
    tune_plan_data data;
    tune_status st = tune_plan_prepare_data(plan, cfg, 0, &data, &err);
    tune_model model = {0};
    tune_lora *lora = NULL;
    tune_batcher *train_b = NULL, *eval_b = NULL;
    double *lr = NULL;
    const char **files = NULL;
    int rc = 0;
    if (st) {
        rc = report(&err);
        goto done;
    }
    tune_cli_print_warnings(plan);
    if (plan->total_steps <= 0) {
        tune_error_set(&err, TUNE_ERR_INPUT, config_path, 0, 0, "the plan has no training steps (no examples?)");
        rc = report(&err);
        goto done;
    }
    char resolved[4200];
    snprintf(resolved, sizeof resolved, "%s/config_resolved.yml", plan->output_dir);
    if ((st = tune_mkdir_p(plan->output_dir, &err)) || (st = tune_config_write_resolved(cfg, resolved, &err))) {
        rc = report(&err);
        goto done;
    }
    omp_set_num_threads(plan->threads);
    fprintf(stderr, "tune: %ld steps (%ld per epoch), %ld training sequences, %ld eval; loading %s\n"
                    "tune: backend %s\n",
            plan->total_steps, plan->steps_per_epoch, plan->n_train_examples, plan->n_eval_examples,
            plan->base_model, plan->backend_reason);
    /* Added tokens: the tokenizer that knows them goes next to the adapter, as
     * tokenizer.json + tokenizer_config.json that AutoTokenizer loads
     * (written before training, so a tokenizer that cannot be written stops
     * the run at once), and the model grows to the new vocabulary. */
    if (cfg->tokens_count > 0 || data.n_new_tokens > 0) {
        char tok_path[4200], config_path[4200];
        snprintf(tok_path, sizeof tok_path, "%s/tokenizer.json", plan->output_dir);
        snprintf(config_path, sizeof config_path, "%s/tokenizer_config.json", plan->output_dir);
        if ((st = tune_tokenizer_save_json(data.tok, tok_path, &err)) ||
            (st = tune_tokenizer_save_config(data.tok, config_path, &err))) {
            rc = report(&err);
            goto done;
        }
    }
    if ((st = tune_model_load(plan->base_model, &model, &err)) ||
        (plan->vocab_size > model.cfg.vocab_size &&
         (st = tune_model_resize_vocab(&model, plan->vocab_size, &err))) ||
        (st = lora_for(cfg, plan, &model, &lora, &err))) {
        rc = report(&err);
        goto done;
    }
    if ((st = tune_batcher_create(&data.prep.train, &data.batch, &train_b, &err))) {
        rc = report(&err);
        goto done;
    }
    tune_batch_options eval_opt = data.batch;
    eval_opt.micro_batch_size = (int)plan->eval_batch_size;
    eval_opt.shuffle = 0;
    if (data.prep.val.count > 0 && (st = tune_batcher_create(&data.prep.val, &eval_opt, &eval_b, &err))) {
        rc = report(&err);
        goto done;
    }
    lr = malloc((size_t)plan->total_steps * sizeof *lr);
    int n_files = 0;
    files = data_files(&data, &n_files);
    if (!lr || !files) {
        tune_fail_run(&err, NULL, "out of memory");
        rc = report(&err);
        goto done;
    }
    for (long s = 0; s < plan->total_steps; s++) lr[s] = tune_schedule_lr(&plan->schedule, s);

    const tune_batch_source train_src = tune_cli_batcher_source(train_b, data.batch.micro_batch_size, data.batch.sequence_len);
    const tune_batch_source eval_src = tune_cli_batcher_source(eval_b, eval_opt.micro_batch_size, eval_opt.sequence_len);
    char **model_files = NULL;
    int n_model_files = 0;
    if ((st = tune_model_files(plan->base_model, &model_files, &n_model_files, &err))) {
        rc = report(&err);
        goto done;
    }
    progress prog = {.tty = isatty(STDERR_FILENO)};
    tune_train_options opts;
    tune_plan_train_options(plan, &opts);
    opts.lr = lr;
    opts.tune_version = tune_cli_version();
    opts.config_path = config_path;
    opts.data_files = files;
    opts.n_data_files = n_files;
    opts.model_files = (const char *const *)model_files;
    opts.n_model_files = n_model_files;
    opts.on_event = on_event;
    opts.event_ctx = &prog;
    st = tune_train_run(&opts, &train_src, eval_b ? &eval_src : NULL, &model, lora, &err);
    for (int i = 0; i < n_model_files; i++) free(model_files[i]);
    free(model_files);
    if (st) {
        if (prog.bar_drawn) fputc('\n', stderr);
        rc = report(&err);
        goto done;
    }
    printf("tune: adapter written to %s\n", plan->output_dir);
done:
    free(files);
    free(lr);
    tune_batcher_free(eval_b);
    tune_batcher_free(train_b);
    tune_lora_free(lora);
    tune_model_free(&model);
    tune_plan_data_free(&data);
    return rc;
}

int tune_cli_train(int argc, char **argv)
{
    if (tune_cli_wants_help(argc, argv)) {
        usage(stdout);
        return 0;
    }
    tune_config cfg;
    tune_plan plan;
    int rc = tune_cli_load_plan("train", argc - 1, argv + 1, &cfg, &plan);
    if (rc) return rc;
    rc = train(&cfg, &plan, argv[1]);
    tune_plan_free(&plan);
    tune_config_free(&cfg);
    return rc;
}
