/* Running the plan: the training and evaluation setups (data, model,
 * adapters, batchers, schedule) that `tune train` and `tune eval` run. The
 * CLI parses and prints; this file wires the modules and runs them. */
#include <math.h>
#include <omp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tune/parallel.h"
#include "tune/plan.h"
#include "tune/tokenizer.h"

/* The data module's batcher as the trainer's micro-batch source. */
static long batcher_count(void *ctx, int epoch, tune_error *err) { return tune_batcher_count(ctx, epoch, err); }

static tune_status batcher_get(void *ctx, int epoch, long index, tune_batch *batch, tune_error *err)
{
    return tune_batcher_get(ctx, epoch, index, batch, err);
}

static tune_batch_source batcher_source(tune_batcher *b, const tune_batch_options *o)
{
    return (tune_batch_source){.ctx = b, .max_B = o->micro_batch_size, .max_T = o->sequence_len,
                               .count = batcher_count, .get = batcher_get};
}

static void note(const tune_run_hooks *h, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(const tune_run_hooks *h, const char *fmt, ...)
{
    if (!h || !h->on_note) return;
    char line[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    h->on_note(h->ctx, line);
}

/* Where the run computes; on the CPU also which BLAS kernels, and who chose them. */
static void note_backend(const tune_run_hooks *h, const tune_plan *plan)
{
    note(h, "backend %s", plan->backend_reason);
    if (plan->be->device) return;
    char blas[512];
    tune_cpu_blas_describe(blas, sizeof blas);
    note(h, "cpu: %s", blas);
}

/* The evaluation batches: the training batching without shuffle, eval_batch_size rows. */
static tune_batch_options eval_batching(const tune_plan *plan, const tune_plan_data *data)
{
    tune_batch_options o = data->batch;
    o.micro_batch_size = (int)plan->eval_batch_size;
    o.shuffle = 0;
    return o;
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
static tune_status lora_for(const tune_plan *plan, const tune_model *model, tune_lora **lora, tune_error *err)
{
    const tune_model_config *mc = &model->cfg;
    tune_lora_config lc = {.r = plan->lora_r,
                           .alpha = (float)plan->lora_alpha,
                           .dropout = (float)plan->lora_dropout,
                           .use_rslora = plan->use_rslora,
                           .target_mask = plan->lora_target_mask};
    unsigned char *selected = NULL;
    tune_status st = TUNE_OK;
    if (plan->n_lora_target_names > 0) {
        selected = calloc((size_t)mc->num_hidden_layers * TUNE_N_LINEAR, 1);
        if (!selected) return tune_fail_run(err, NULL, "out of memory");
        st = tune_lora_select_names(mc, plan->lora_target_names, plan->n_lora_target_names, selected, err);
    }
    if (st == TUNE_OK) st = tune_lora_create(mc, &lc, selected, (uint64_t)plan->seed, lora, err);
    free(selected);
    if (st == TUNE_OK && plan->lora_saved) st = tune_lora_add_saved(*lora, model, plan->lora_saved, err);
    return st;
}

/* The model (grown to a vocabulary that added tokens extended) and its new adapters. */
static tune_status model_and_adapters(const tune_plan *plan, tune_model *model, tune_lora **lora, tune_error *err)
{
    tune_status st = tune_model_load_stored(plan->base_model, plan->weight_storage, model, err);
    if (!st && plan->vocab_size > model->cfg.vocab_size) st = tune_model_resize_vocab(model, plan->vocab_size, err);
    if (!st) st = lora_for(plan, model, lora, err);
    return st;
}

/* Added tokens: the tokenizer that knows them goes next to the adapter, as
 * tokenizer.json + tokenizer_config.json that AutoTokenizer loads (written
 * before training, so a tokenizer that cannot be written stops the run at once). */
static tune_status save_tokenizer(const tune_plan *plan, const tune_plan_data *data, tune_error *err)
{
    if (!plan->n_added_tokens_asked && data->n_new_tokens == 0) return TUNE_OK;
    char tok_path[4200], config_path[4200];
    snprintf(tok_path, sizeof tok_path, "%s/tokenizer.json", plan->output_dir);
    snprintf(config_path, sizeof config_path, "%s/tokenizer_config.json", plan->output_dir);
    tune_status st = tune_tokenizer_save_json(data->tok, tok_path, err);
    if (!st) st = tune_tokenizer_save_config(data->tok, config_path, err);
    return st;
}

/* The data stage, then the plan's final counts and warnings to the caller. */
static tune_status prepare(tune_plan *plan, const tune_config *cfg, const tune_run_hooks *hooks, tune_plan_data *data,
                           tune_error *err)
{
    tune_status st = tune_plan_prepare_data(plan, cfg, 0, data, err);
    if (st) tune_plan_data_free(data);
    else if (hooks && hooks->on_planned) hooks->on_planned(hooks->ctx, plan);
    return st;
}

/* The sha256 of the resolved config and of the prepared examples, which
 * every rank must share. */
static tune_status fingerprints(const tune_config *cfg, const tune_plan_data *data, char config_hex[65],
                                char data_hex[65], tune_error *err)
{
    tune_strbuf text = {0};
    if (tune_config_format_resolved(cfg, &text) != TUNE_OK) {
        tune_strbuf_free(&text);
        return tune_fail_run(err, NULL, "out of memory");
    }
    tune_sha256_hex(text.data, text.len, config_hex);
    tune_strbuf_free(&text);
    tune_sha256 h;
    tune_sha256_init(&h);
    const tune_example_set *sets[2] = {&data->prep.train, &data->prep.val};
    for (int i = 0; i < 2; i++) {
        const uint64_t counts[2] = {sets[i]->count, sets[i]->n_tokens};
        tune_sha256_update(&h, counts, sizeof counts);
        tune_sha256_update(&h, sets[i]->ids, sets[i]->n_tokens * sizeof *sets[i]->ids);
        tune_sha256_update(&h, sets[i]->labels, sets[i]->n_tokens * sizeof *sets[i]->labels);
    }
    uint8_t digest[32];
    tune_sha256_final(&h, digest);
    for (int i = 0; i < 32; i++) snprintf(data_hex + 2 * i, 3, "%02x", digest[i]);
    return TUNE_OK;
}

/* The data stage on every rank, rank 0 first (the others then read its
 * cache: writers of one cache file would collide); then the ranks' config
 * and data are compared. Only rank 0 locks output_dir. */
static tune_status prepare_ranks(tune_plan *plan, const tune_config *cfg, const tune_run_hooks *hooks,
                                 tune_plan_data *data, int *lock, tune_error *err)
{
    tune_parallel *par = plan->parallel;
    const int first = tune_parallel_rank(par) == 0;
    *lock = -1;
    /* One run per output_dir; an output_dir that cannot be written stops
     * the run here, before the data stage. */
    tune_status st = first ? tune_lock_output_dir(plan->output_dir, lock, err) : TUNE_OK;
    if (!st && first) st = prepare(plan, cfg, hooks, data, err);
    st = tune_parallel_agree(par, st, err);
    if (!st) st = tune_parallel_agree(par, first ? TUNE_OK : prepare(plan, cfg, hooks, data, err), err);
    char config_hex[65] = "", data_hex[65] = "";
    if (!st && tune_parallel_size(par) > 1) {
        st = tune_parallel_agree(par, fingerprints(cfg, data, config_hex, data_hex, err), err);
        if (!st) st = tune_parallel_same(par, "the resolved config (sha256)", config_hex, err);
        if (!st) st = tune_parallel_same(par, "the prepared data (sha256 of its tokens)", data_hex, err);
    }
    if (st) {
        tune_plan_data_free(data); /* safe on what prepare already freed */
        if (*lock >= 0) tune_unlock_output_dir(*lock);
    }
    return st;
}

tune_status tune_plan_train(tune_plan *plan, const tune_config *cfg, const char *config_path, const char *version,
                            const tune_run_hooks *hooks, tune_error *err)
{
    int lock;
    tune_plan_data data = {0};
    tune_status st = prepare_ranks(plan, cfg, hooks, &data, &lock, err);
    if (st) return st;
    const int first = tune_parallel_rank(plan->parallel) == 0; /* the rank that writes */
    tune_model model = {0};
    tune_lora *lora = NULL;
    tune_batcher *train_b = NULL, *eval_b = NULL;
    double *lr = NULL;
    const char **files = NULL;
    char **model_files = NULL;
    int n_files = 0, n_model_files = 0;
    char resolved[4200];
    snprintf(resolved, sizeof resolved, "%s/config_resolved.yml", plan->output_dir);
    if (plan->total_steps <= 0)
        st = tune_fail_input(err, config_path, "the plan has no training steps (no examples?)");
    if (!st && first) st = tune_config_write_resolved(cfg, resolved, err);
    if (st) goto done;
    omp_set_num_threads(plan->threads);
    note(hooks, "%ld steps (%ld per epoch), %ld training sequences, %ld eval; loading %s", plan->total_steps,
         plan->steps_per_epoch, plan->n_train_examples, plan->n_eval_examples, plan->base_model);
    note_backend(hooks, plan);
    if (plan->ranks > 1)
        note(hooks, "%d ranks (MPI): each computes %ld of the %ld micro-batches of a step; rank 0 writes", plan->ranks,
             plan->gradient_accumulation_steps, plan->gradient_accumulation_steps * plan->ranks);
    if ((first && (st = save_tokenizer(plan, &data, err))) || (st = model_and_adapters(plan, &model, &lora, err)) ||
        (st = tune_batcher_create(&data.prep.train, &data.batch, &train_b, err)))
        goto done;
    const tune_batch_options eval_opt = eval_batching(plan, &data);
    if (data.prep.val.count > 0 && (st = tune_batcher_create(&data.prep.val, &eval_opt, &eval_b, err))) goto done;
    lr = malloc((size_t)plan->total_steps * sizeof *lr);
    files = data_files(&data, &n_files);
    if (!lr || !files) {
        st = tune_fail_run(err, NULL, "out of memory");
        goto done;
    }
    for (long s = 0; s < plan->total_steps; s++) lr[s] = tune_schedule_lr(&plan->schedule, s);
    if ((st = tune_model_files(plan->base_model, &model_files, &n_model_files, err))) goto done;
    const tune_batch_source train_src = batcher_source(train_b, &data.batch);
    const tune_batch_source eval_src = batcher_source(eval_b, &eval_opt);
    tune_train_options opts;
    tune_plan_train_options(plan, &opts);
    opts.skip_nonfinite = cfg->on_nan_inf == TUNE_NAN_INF_SKIP;
    opts.lr = lr;
    opts.tune_version = version;
    opts.config_path = config_path;
    opts.data_files = files;
    opts.n_data_files = n_files;
    opts.model_files = (const char *const *)model_files;
    opts.n_model_files = n_model_files;
    opts.on_event = hooks ? hooks->on_event : NULL;
    opts.event_ctx = hooks ? hooks->ctx : NULL;
    st = tune_train_run(&opts, &train_src, eval_b ? &eval_src : NULL, &model, lora, err);
done:
    for (int i = 0; i < n_model_files; i++) free(model_files[i]);
    free(model_files);
    free(files);
    free(lr);
    tune_batcher_free(eval_b);
    tune_batcher_free(train_b);
    tune_lora_free(lora);
    tune_model_free(&model);
    tune_plan_data_free(&data);
    tune_unlock_output_dir(lock);
    return st;
}

tune_status tune_plan_write_batches(const tune_plan *plan, const tune_plan_data *data, const char *path, long steps,
                                    tune_error *err)
{
    tune_batcher *b;
    tune_status st = tune_batcher_create(&data->prep.train, &data->batch, &b, err);
    if (st) return st;
    const tune_batch_source src = batcher_source(b, &data->batch);
    tune_train_options opts;
    tune_plan_train_options(plan, &opts);
    st = tune_train_write_batches(&src, opts.total_steps, opts.gradient_accumulation_steps, steps, path, err);
    tune_batcher_free(b);
    return st;
}

/* The validation files, comma-separated: the test datasets, else the training ones (val_set_size). */
static void data_names(const tune_plan_data *d, char *buf, size_t size)
{
    const tune_data_options *o = &d->setup.opt;
    buf[0] = 0;
    size_t used = 0;
    const tune_dataset_options *sets = o->n_test_datasets ? o->test_datasets : o->datasets;
    const int n = o->n_test_datasets ? o->n_test_datasets : o->n_datasets;
    for (int i = 0; i < n; i++)
        for (int k = 0; k < sets[i].n_files && used < size; k++)
            used += (size_t)snprintf(buf + used, size - used, "%s%s", used ? "," : "", sets[i].files[k]);
}

tune_status tune_plan_evaluate(tune_plan *plan, const tune_config *cfg, const char *adapter, const char *where,
                               const tune_run_hooks *hooks, tune_eval_report *r, tune_error *err)
{
    memset(r, 0, sizeof *r);
    tune_plan_data data;
    tune_status st = prepare(plan, cfg, hooks, &data, err);
    if (st) return st;
    tune_model model = {0};
    tune_lora *lora = NULL;
    tune_batcher *eval_b = NULL;
    if (data.prep.val.count == 0) {
        st = tune_fail_input(err, where, "there is no validation set to evaluate (set test_datasets or val_set_size)");
        goto done;
    }
    const tune_batch_options eval_opt = eval_batching(plan, &data);
    omp_set_num_threads(plan->threads);
    note(hooks, "evaluating %ld examples; loading %s", (long)data.prep.val.count, plan->base_model);
    note_backend(hooks, plan);
    if ((st = tune_batcher_create(&data.prep.val, &eval_opt, &eval_b, err)) ||
        (st = tune_model_load_stored(plan->base_model, plan->weight_storage, &model, err)) ||
        (adapter && (st = tune_lora_open_peft(&model, adapter, &lora, err))))
        goto done;
    const tune_batch_source src = batcher_source(eval_b, &eval_opt);
    r->examples = (long)data.prep.val.count;
    if ((st = tune_evaluate_on(plan->be, &model, lora, &src, &r->loss, &r->tokens, err))) goto done;
    r->perplexity = exp(r->loss);
    const tune_data_report *rep = &data.prep.report;
    for (int i = data.setup.n_datasets; i < rep->n_datasets; i++) r->truncated += rep->datasets[i].truncated;
    data_names(&data, r->data, sizeof r->data);
done:
    tune_batcher_free(eval_b);
    tune_lora_free(lora);
    tune_model_free(&model);
    tune_plan_data_free(&data);
    return st;
}

/* ---- tune explain ---- */

#define EXPLAIN_SGEMM_N 2048 /* a product the size of a big linear layer's */

/* The trace records from the start of the profiled step (x->step) to its
 * end: after the run's start, or after the step before it. */
static void explain_event(void *ctx, const tune_train_event *ev)
{
    tune_explain *x = ctx;
    if (ev->kind != TUNE_EVENT_START && ev->kind != TUNE_EVENT_STEP) return;
    if (ev->step == x->step - 1) tune_trace_record(1); /* steps done: the profiled one starts */
    if (ev->kind != TUNE_EVENT_STEP || ev->step != x->step) return;
    tune_trace_record(0);
    x->loss = ev->loss;
    x->grad_norm = ev->grad_norm;
}

/* Which step explain profiles, and that step's micro-batches as the loop
 * takes them (accum at a time in epoch 0): their tokens and model FLOPs.
 * The second step where the plan and the epoch have one, since the first
 * also pays for first touches (the BLAS's buffers, page tables, caches):
 * 2.79 s against 2.47 s for the second on the bench config. */
static tune_status explain_batches(tune_batcher *b, int accum, long total_steps, tune_explain *x, tune_error *err)
{
    const long n = tune_batcher_count(b, 0, err);
    if (n < 0) return err ? err->code : TUNE_ERR_RUN;
    x->step = total_steps >= 2 && n >= 2L * accum ? 2 : 1;
    const int first = (x->step - 1) * accum;
    x->micro_batches = (int)(n < accum ? n : accum);
    for (int j = 0; j < x->micro_batches; j++) {
        tune_batch bt;
        tune_status st = tune_batcher_get(b, 0, first + j, &bt, err);
        if (st) return st;
        if (j == 0) {
            x->B = bt.B;
            x->T = bt.T;
        }
        x->tokens += (long)bt.B * bt.T;
        x->model_flops += (double)bt.B * bt.T * tune_model_flops_per_token(&x->model, x->lora_params, bt.T);
    }
    return TUNE_OK;
}

/* The weights, the trainable state and the workspace of the step. */
static void explain_memory(const tune_plan *plan, const tune_model *model, const tune_lora *lora,
                           const tune_batch_options *batch, tune_explain *x)
{
    const size_t params = lora->n_params * sizeof(float);
    const tune_buffer_bytes state[TUNE_EXPLAIN_STATE] = {
        {"weights_fp32", model->n_floats * sizeof(float)},
        {"weights_blocks", model->n_block_bytes},
        {"lora_params", params},
        {"lora_grads", params},
        {"adamw_exp_avg", params},
        {"adamw_exp_avg_sq", params},
        /* the loop's gradient of one micro-batch, added into lora_grads; a step of one goes straight there */
        {"micro_batch_grads", plan->gradient_accumulation_steps > 1 ? params : 0},
    };
    memcpy(x->state, state, sizeof state);
    size_t dropout_in = 0;
    for (int m = 0; lora->cfg.dropout > 0.0f && m < lora->n_modules; m++) dropout_in += (size_t)lora->modules[m].in;
    tune_workspace_buffers(plan->be, &model->cfg, lora->n_modules, lora->cfg.r, dropout_in, batch->micro_batch_size,
                           batch->sequence_len, plan->gradient_checkpointing, x->workspace);
}

tune_status tune_plan_explain(tune_plan *plan, const tune_config *cfg, const tune_run_hooks *hooks, tune_explain *x,
                              tune_error *err)
{
    memset(x, 0, sizeof *x);
    tune_plan_data data;
    tune_status st = prepare(plan, cfg, hooks, &data, err);
    if (st) return st;
    tune_model model = {0};
    tune_lora *lora = NULL;
    tune_batcher *train_b = NULL;
    const tune_backend *traced;
    if (plan->total_steps <= 0) {
        st = tune_fail_input(err, NULL, "the plan has no training steps (no examples?)");
        goto done;
    }
    omp_set_num_threads(plan->threads);
    note(hooks, "one optimizer step; loading %s", plan->base_model);
    note_backend(hooks, plan);
    if ((st = model_and_adapters(plan, &model, &lora, err)) ||
        (st = tune_batcher_create(&data.prep.train, &data.batch, &train_b, err)))
        goto done;
    tune_train_options opts;
    tune_plan_train_options(plan, &opts);
    x->model = model.cfg;
    for (int m = 0; m < lora->n_modules; m++)
        x->lora_params += (double)lora->cfg.r * (lora->modules[m].in + lora->modules[m].out);
    x->sgemm_n = EXPLAIN_SGEMM_N;
    if ((st = explain_batches(train_b, opts.gradient_accumulation_steps, plan->total_steps, x, err)) ||
        (st = tune_backend_sgemm_gflops(plan->be, x->sgemm_n, 3, &x->sgemm_gflops, err)) ||
        (st = tune_trace_open(plan->be, &x->trace, &traced, err)))
        goto done;
    const double lr[2] = {tune_schedule_lr(&plan->schedule, 0), tune_schedule_lr(&plan->schedule, 1)};
    opts.backend = traced;
    opts.output_dir = NULL; /* steps that write nothing */
    opts.total_steps = x->step;
    opts.lr = lr;
    opts.logging_steps = opts.eval_steps = opts.save_steps = 0;
    opts.resume_from_checkpoint = NULL;
    opts.auto_resume = 0;
    opts.on_event = explain_event;
    opts.event_ctx = x;
    const tune_batch_source src = batcher_source(train_b, &data.batch);
    st = tune_train_run(&opts, &src, NULL, &model, lora, err);
    tune_trace_close();
    if (!st && x->trace.oom) st = tune_fail_run(err, NULL, "out of memory recording the step's operations");
    if (!st) explain_memory(plan, &model, lora, &data.batch, x);
done:
    tune_batcher_free(train_b);
    tune_lora_free(lora);
    tune_model_free(&model);
    tune_plan_data_free(&data);
    return st;
}

void tune_explain_free(tune_explain *x) { tune_trace_free(&x->trace); }
