/* The training loop: gradient accumulation over micro-batches, clipping,
 * AdamW, logging, evaluation, checkpoints and resume.
 *
 * Everything a step does depends only on (seed, step, micro-batch index) and
 * the state restored from a checkpoint, never on the process's history, so
 * an interrupted run resumed from a checkpoint ends with the same bytes as
 * an uninterrupted one. */
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"
#include "tune/parallel.h"

/* The micro-batches of one optimizer step, copied out of the source so all
 * can be counted before the first backward pass. */
typedef struct step_batches {
    int n;              /* micro-batches in this step */
    size_t cap;         /* max_B · max_T: elements per micro-batch */
    int32_t *ids;       /* (accum, cap) */
    int32_t *labels;    /* (accum, cap) */
    int32_t *positions; /* (accum, cap) */
    int32_t *segments;  /* (accum, cap) */
    tune_batch *mb;     /* (accum) */
    long *targets;      /* (accum): trained targets of each */
} step_batches;

typedef struct run {
    const tune_train_options *o;
    const tune_batch_source *train, *eval;
    const tune_model *model;     /* host: the weights as loaded */
    tune_lora *lora;             /* host: what checkpoints and the adapter are written from */
    const tune_backend *be;      /* where the step runs; it owns everything below marked "be" */
    tune_model dmodel;           /* be: the weights */
    tune_lora dlora;             /* be: params and grads; modules shared with lora */
    int have_dmodel, have_dlora;
    train_state st;
    float *exp_avg, *exp_avg_sq; /* host (n_params) each: the moments as checkpoints hold them */
    float *d_exp_avg, *d_exp_avg_sq; /* be: the same */
    tune_span *tensors;          /* (n_tensors): every trainable tensor, for the norm */
    tune_span *d_tensors;        /* be: the same table */
    int n_tensors;
    tune_workspace *ws;
    tune_parallel *par;          /* the ranks (NULL: this process alone) */
    float *slots;                /* be: (n_slots, n_params) gradients of this rank's micro-batches */
    int n_slots;                 /* rank 0: 1, or 0 with one micro-batch (it goes straight into the sum); others: per_rank */
    double *mb_loss;             /* (per_rank): loss sums of this rank's micro-batches */
    double *all_loss;            /* (ranks · per_rank): every rank's, in global micro-batch order */
    long per_rank;               /* micro-batches of a step each rank computes, at most */
    step_batches sb;
    step_layout layout;          /* the micro-batches of each step */
    long first_step;             /* where this process started */
    char last_checkpoint[4096];  /* "" when none */
    long saved_step;             /* the step last_checkpoint holds, when this process wrote it; else -1 */
    double t0;                   /* monotonic seconds at the start */
    double log_busy;             /* seconds spent in training steps since the last log */
    double busy;                 /* ... since the start of this process */
    long log_tokens;             /* tokens since the last log */
    long tokens;                 /* tokens since the start of this process */
} run;

/* Set by tune_train_request_stop (a signal handler), spent by the run that honours it. */
static volatile sig_atomic_t stop_requested;

void tune_train_request_stop(void) { stop_requested = 1; }

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Rank 0: the one that writes logs, checkpoints and the adapter, and whose
 * micro-batches begin each step's gradient sum. */
static int rank0(const run *R) { return tune_parallel_rank(R->par) == 0; }

/* Whether this process writes files: rank 0, unless the run has no output_dir. */
static int writes(const run *R) { return rank0(R) && R->o->output_dir; }

static tune_status step_batches_init(step_batches *sb, int accum, int max_B, int max_T, tune_error *err)
{
    memset(sb, 0, sizeof *sb);
    sb->cap = (size_t)max_B * (size_t)max_T;
    const size_t n = (size_t)accum * sb->cap;
    sb->ids = malloc(n * sizeof(int32_t));
    sb->labels = malloc(n * sizeof(int32_t));
    sb->positions = malloc(n * sizeof(int32_t));
    sb->segments = malloc(n * sizeof(int32_t));
    sb->mb = calloc((size_t)accum, sizeof *sb->mb);
    sb->targets = calloc((size_t)accum, sizeof *sb->targets);
    if (!sb->ids || !sb->labels || !sb->positions || !sb->segments || !sb->mb || !sb->targets)
        return tune_fail_run(err, NULL, "out of memory for %d micro-batches of %d x %d tokens", accum, max_B,
                             max_T);
    return TUNE_OK;
}

static void step_batches_free(step_batches *sb)
{
    free(sb->ids);
    free(sb->labels);
    free(sb->positions);
    free(sb->segments);
    free(sb->mb);
    free(sb->targets);
}

/* Copies micro-batches [first, first + n) of `epoch` into sb. */
static tune_status fetch_step(run *R, int epoch, long first, int n, tune_error *err)
{
    step_batches *sb = &R->sb;
    sb->n = n;
    for (int j = 0; j < n; j++) {
        tune_batch b;
        tune_status st = train_get_batch(R->train, "training", epoch, first + j, &b, err);
        if (st) return st;
        const size_t len = (size_t)b.B * b.T, off = (size_t)j * sb->cap;
        tune_batch *c = &sb->mb[j];
        *c = (tune_batch){.B = b.B, .T = b.T};
        memcpy(sb->ids + off, b.input_ids, len * sizeof(int32_t));
        memcpy(sb->labels + off, b.labels, len * sizeof(int32_t));
        c->input_ids = sb->ids + off;
        c->labels = sb->labels + off;
        if (b.position_ids) {
            memcpy(sb->positions + off, b.position_ids, len * sizeof(int32_t));
            c->position_ids = sb->positions + off;
        }
        if (b.segment_ids) {
            memcpy(sb->segments + off, b.segment_ids, len * sizeof(int32_t));
            c->segment_ids = sb->segments + off;
        }
        sb->targets[j] = train_count_targets(c);
    }
    return TUNE_OK;
}

static void emit(run *R, tune_train_event ev)
{
    if (!R->o->on_event) return;
    ev.step = R->st.global_step;
    ev.total_steps = R->st.total_steps;
    ev.first_step = R->first_step;
    ev.epoch = R->st.epoch;
    ev.elapsed_s = now_s() - R->t0;
    R->o->on_event(R->o->event_ctx, &ev);
}

/* The error that stops a run: the reason, and where to resume from. */
static tune_status stop_run(const run *R, tune_error *err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static tune_status stop_run(const run *R, tune_error *err, const char *fmt, ...)
{
    char reason[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof reason, fmt, ap);
    va_end(ap);
    return tune_fail_run(err, NULL, "training stopped: %s; %s%s", reason,
                         R->last_checkpoint[0] ? "the last good checkpoint is " : "no checkpoint was written yet",
                         R->last_checkpoint);
}

/* A NaN or infinite value at `where`. */
static tune_status nonfinite(const run *R, const char *what, double x, const char *where, tune_error *err)
{
    return stop_run(R, err, "the %s is %s at %s (lower the learning rate or check the data)", what,
                    isnan(x) ? "NaN" : "infinite", where);
}

/* A failure to write `what` (err holds the file and the system's reason):
 * the run stops, naming the last good checkpoint. */
static tune_status write_failed(const run *R, const char *what, tune_error *err)
{
    char why[1200];
    tune_error_format(err, why, sizeof why);
    return stop_run(R, err, "cannot write %s: %s (free some space, or make the folder writable, then resume)", what,
                    why);
}

static tune_status log_entry_add(run *R, cJSON *entry, tune_error *err)
{
    if (!entry) return tune_fail_run(err, NULL, "out of memory for the training log");
    if (!cJSON_AddItemToArray(R->st.log_history, entry)) {
        cJSON_Delete(entry);
        return tune_fail_run(err, NULL, "out of memory for the training log");
    }
    if (!writes(R)) return TUNE_OK;
    return report_log_append(R->o->output_dir, entry, err) ? write_failed(R, "the training log", err) : TUNE_OK;
}

static cJSON *log_entry_new(const train_state *st)
{
    cJSON *e = cJSON_CreateObject();
    if (e) {
        cJSON_AddNumberToObject(e, "step", (double)st->global_step);
        cJSON_AddNumberToObject(e, "epoch", st->epoch);
    }
    return e;
}

static tune_status do_eval(run *R, tune_error *err)
{
    double loss = 0.0;
    long n_targets;
    /* Rank 0 evaluates and every rank takes its loss, so all make the same early-stopping decision. */
    tune_status st = rank0(R) ? tune_evaluate(&R->dmodel, &R->dlora, R->eval, R->ws, &loss, &n_targets, err) : TUNE_OK;
    st = tune_parallel_agree(R->par, st, err);
    if (!st) st = tune_parallel_bcast(R->par, &loss, sizeof loss, err);
    if (st) return st;
    if (!isfinite(loss)) {
        char where[64];
        snprintf(where, sizeof where, "step %ld", R->st.global_step);
        return nonfinite(R, "evaluation loss", loss, where, err);
    }
    R->st.last_eval = loss;
    R->st.last_eval_step = R->st.global_step;
    if (R->st.best_step == 0 || loss < R->st.best_eval) {
        R->st.best_eval = loss;
        R->st.best_step = R->st.global_step;
        R->st.evals_not_improved = 0;
    } else {
        R->st.evals_not_improved++;
    }
    cJSON *e = log_entry_new(&R->st);
    if (e) cJSON_AddNumberToObject(e, "eval_loss", loss);
    st = log_entry_add(R, e, err);
    if (st) return st;
    emit(R, (tune_train_event){.kind = TUNE_EVENT_EVAL, .eval_loss = loss});
    return TUNE_OK;
}

static tune_status do_log(run *R, double lr, double grad_norm, tune_error *err)
{
    const double mean = R->st.log_loss_sum / (double)R->st.log_n;
    /* Throughput of the training steps alone (not evaluation or saving). */
    const double tps = R->log_busy > 0 ? (double)R->log_tokens / R->log_busy : 0.0;
    cJSON *e = log_entry_new(&R->st);
    if (e) {
        cJSON_AddNumberToObject(e, "loss", mean);
        cJSON_AddNumberToObject(e, "learning_rate", lr);
        cJSON_AddNumberToObject(e, "grad_norm", grad_norm);
        cJSON_AddNumberToObject(e, "tokens_per_second", round(tps));
        /* For the time to the first step, loading included (make bench). */
        const double age = tune_process_seconds();
        if (age >= 0) cJSON_AddNumberToObject(e, "elapsed_s", round(1e3 * age) / 1e3);
    }
    tune_status st = log_entry_add(R, e, err);
    if (st) return st;
    emit(R, (tune_train_event){.kind = TUNE_EVENT_LOG, .loss = mean, .lr = lr, .grad_norm = grad_norm,
                               .tokens_per_s = tps});
    R->st.log_loss_sum = 0.0;
    R->st.log_n = 0;
    R->log_busy = 0.0;
    R->log_tokens = 0;
    return TUNE_OK;
}

/* The adapters and moments from the backend into the host arrays that
 * checkpoints and the adapter are written from. */
static tune_status fetch_state(run *R, int moments, tune_error *err)
{
    const size_t bytes = R->lora->n_params * sizeof(float);
    if (tune_backend_fetch(R->be, R->lora->params, R->dlora.params, bytes) ||
        (moments && (tune_backend_fetch(R->be, R->exp_avg, R->d_exp_avg, bytes) ||
                     tune_backend_fetch(R->be, R->exp_avg_sq, R->d_exp_avg_sq, bytes)))) {
        char why[512];
        R->be->finish(why, sizeof why);
        return stop_run(R, err, "the %s backend failed: %s", R->be->name, why);
    }
    return TUNE_OK;
}

static tune_status do_save(run *R, tune_error *err)
{
    const tune_train_options *o = R->o;
    char path[4096];
    if (!rank0(R)) { /* rank 0's checkpoint, named for this rank's messages */
        snprintf(R->last_checkpoint, sizeof R->last_checkpoint, "%s/checkpoint-%ld", o->output_dir, R->st.global_step);
        R->saved_step = R->st.global_step;
        return TUNE_OK;
    }
    tune_status st = fetch_state(R, 1, err);
    if (st) return st;
    st = checkpoint_write(o->output_dir, &R->st, R->lora, R->exp_avg, R->exp_avg_sq, o->base_model_name_or_path,
                          path, sizeof path, err);
    if (st) {
        char what[64];
        snprintf(what, sizeof what, "the checkpoint of step %ld", R->st.global_step);
        return write_failed(R, what, err);
    }
    snprintf(R->last_checkpoint, sizeof R->last_checkpoint, "%s", path);
    R->saved_step = R->st.global_step;
    if ((st = report_loss_svg(o->output_dir, &R->st, err))) return write_failed(R, "the loss curve", err);
    if (o->save_total_limit > 0 && (st = checkpoint_prune(o->output_dir, o->save_total_limit, err))) return st;
    emit(R, (tune_train_event){.kind = TUNE_EVENT_SAVE, .path = path});
    return TUNE_OK;
}

/* The gradient of step s (0-based) into lora->grads: every micro-batch
 * forward and backward with grad_scale = 1 / (trained targets of the whole
 * step). *loss is the step's mean token loss. The micro-batches are already
 * in R->sb, all of them on every rank (each counts the step's targets).
 * Each micro-batch's gradient is made alone, from zero, and the step's sum
 * adds them one at a time in micro-batch order, whatever rank made them
 * (tune_parallel_fold; the loss sums likewise): N ranks give one process's
 * bytes. Rank 0 adds its own as it goes; the others keep theirs for the fold. */
static tune_status accumulate(run *R, long s, int epoch, long first, double *loss, tune_error *err)
{
    long n_targets = 0;
    for (int j = 0; j < R->sb.n; j++) n_targets += R->sb.targets[j];
    if (n_targets == 0)
        return tune_fail_input(err, NULL, "step %ld (epoch %d, micro-batches %ld-%ld) has no trained tokens: "
                                          "every label is -100",
                               s + 1, epoch, first, first + R->sb.n - 1);
    const size_t n = R->lora->n_params;
    float *acc = R->dlora.grads;
    tune_backend_label(R->be, TUNE_PASS_BACKWARD, -1, "gradient accumulation");
    R->be->zero(acc, n * sizeof(float));
    long mine, count;
    tune_parallel_share(R->par, R->st.accum, R->sb.n, &mine, &count);
    memset(R->mb_loss, 0, (size_t)R->per_rank * sizeof *R->mb_loss);
    const float grad_scale = (float)(1.0 / (double)n_targets);
    tune_status st = TUNE_OK;
    for (long i = 0; i < count && !st; i++) {
        const long j = mine + i;
        const tune_batch *b = &R->sb.mb[j];
        const tune_dropout drop = {.p = R->lora->cfg.dropout, .seed = R->st.seed,
                                   .micro_batch = (uint64_t)s * (uint64_t)R->st.accum + (uint64_t)j};
        /* rank 0's first goes straight into the zeroed sum: 0 + g is g */
        float *slot = rank0(R) && i == 0 ? acc : R->slots + (rank0(R) ? 0 : (size_t)i * n);
        if (slot != acc) R->be->zero(slot, n * sizeof(float));
        R->dlora.grads = slot; /* the passes add this micro-batch's gradient here */
        long nt;
        st = tune_llama_forward(&R->dmodel, &R->dlora, b, &drop, grad_scale, R->ws, &R->mb_loss[i], &nt, err);
        if (!st && nt != R->sb.targets[j])
            st = tune_fail_run(err, NULL, "internal error: the forward pass scored %ld targets in micro-batch %ld "
                                          "of epoch %d, the loop counted %ld",
                               nt, first + j, epoch, R->sb.targets[j]);
        if (!st) st = tune_llama_backward(&R->dmodel, &R->dlora, b, &drop, R->ws, err);
        R->dlora.grads = acc;
        tune_backend_label(R->be, TUNE_PASS_BACKWARD, -1, "gradient accumulation");
        if (!st && rank0(R) && slot != acc) R->be->add(acc, slot, n);
    }
    if (st) return st;
    st = tune_parallel_fold(R->par, R->be, acc, R->slots, rank0(R) ? 0 : (int)count, n, err);
    if (!st) st = tune_parallel_gather(R->par, R->mb_loss, R->all_loss, (size_t)R->per_rank * sizeof *R->mb_loss, err);
    if (st) return st;
    double loss_sum = 0.0; /* in micro-batch order, as the forward passes of one process add them */
    for (int j = 0; j < R->sb.n; j++) loss_sum += R->all_loss[j];
    *loss = loss_sum / (double)n_targets;
    return TUNE_OK;
}

/* The name of trainable tensor t (R->tensors' order) in the adapter file. */
static void tensor_name(const run *R, int t, char *buf, size_t size)
{
    const tune_lora *l = R->lora;
    if (l->saved & TUNE_SAVE_EMBED) {
        if (t == 0) {
            snprintf(buf, size, "base_model.model.model.embed_tokens.weight");
            return;
        }
        t--;
    }
    if (t >= 2 * l->n_modules) {
        snprintf(buf, size, "base_model.model.lm_head.weight");
        return;
    }
    char path[128];
    tune_linear_module_path(l->modules[t / 2].layer, l->modules[t / 2].kind, path, sizeof path);
    snprintf(buf, size, "base_model.model.%s.lora_%c.weight", path, t % 2 ? 'B' : 'A');
}

/* What was not finite in step s, whose loss or gradient norm was: the loss,
 * and the first trainable tensor (PEFT's order) whose gradient holds a NaN
 * or infinity. The gradient is computed again: clipping by a non-finite
 * norm has spread NaN into every tensor. */
static tune_status describe_nonfinite(run *R, long s, int epoch, long first, double loss, char *buf, size_t size,
                                      tune_error *err)
{
    double again;
    tune_status st = accumulate(R, s, epoch, first, &again, err);
    if (st) return st;
    if (tune_backend_fetch(R->be, R->lora->grads, R->dlora.grads, R->lora->n_params * sizeof(float)))
        return tune_backend_failed(R->be, "fetching the gradient", err);
    int n_bad = 0, first_bad = -1;
    for (int t = 0; t < R->n_tensors; t++) {
        const float *g = R->lora->grads + R->tensors[t].offset;
        size_t i = 0;
        while (i < R->tensors[t].size && isfinite(g[i])) i++;
        if (i == R->tensors[t].size) continue;
        if (first_bad < 0) first_bad = t;
        n_bad++;
    }
    size_t used = 0;
    if (!isfinite(loss))
        used = (size_t)snprintf(buf, size, "the training loss is %s%s", isnan(loss) ? "NaN" : "infinite",
                                n_bad ? " and " : "");
    if (used >= size) return TUNE_OK;
    if (n_bad) {
        char name[256];
        tensor_name(R, first_bad, name, sizeof name);
        snprintf(buf + used, size - used, "the gradient of %s is not finite (%d of the %d trainable tensors are)",
                 name, n_bad, R->n_tensors);
    } else if (!used) {
        snprintf(buf, size, "the gradient norm is not finite");
    }
    return TUNE_OK;
}

/* One optimizer step: its micro-batches, the accumulated gradient, clipping,
 * AdamW (or, when the loss or gradient is not finite and skip_nonfinite is
 * set, no update); then logging, evaluation and saving when they are due. */
static tune_status train_step(run *R, tune_error *err)
{
    const tune_train_options *o = R->o;
    train_state *S = &R->st;
    const long s = S->global_step;
    const step_slice x = step_layout_find(&R->layout, s);
    const int epoch = x.epoch, n_mb = x.n;
    const long k = x.k, first = x.first;

    const double t_start = now_s();
    double loss = 0.0;
    tune_status st = fetch_step(R, epoch, first, n_mb, err);
    if (!st) st = accumulate(R, s, epoch, first, &loss, err);
    if (st) return st;
    long tokens = 0;
    for (int j = 0; j < R->sb.n; j++) tokens += (long)R->sb.mb[j].B * R->sb.mb[j].T;
    tune_backend_label(R->be, TUNE_PASS_OPTIMIZER, -1, NULL);
    const float grad_norm =
        R->be->clip_grad_norm(R->dlora.grads, R->d_tensors, R->n_tensors, (float)o->max_grad_norm);
    const double lr = o->lr[s];
    const int finite = isfinite(loss) && isfinite(grad_norm);
    char what[512] = "";
    if (!finite) {
        char why[512];
        if (R->be->finish(why, sizeof why)) /* a failed device operation, not the numbers */
            return stop_run(R, err, "the %s backend failed at step %ld: %s", R->be->name, s + 1, why);
        if ((st = describe_nonfinite(R, s, epoch, first, loss, what, sizeof what, err))) return st;
        if (!o->skip_nonfinite)
            return stop_run(R, err, "%s at step %ld (epoch %d, micro-batches %ld-%ld): lower the learning rate, "
                                    "check the data, or set on_nan_inf: skip to skip such steps",
                            what, s + 1, epoch, first, first + n_mb - 1);
        S->skipped_steps++;
    } else {
        /* Axolotl's loss watchdog counts steps in a row above the threshold; the run ends after this step. */
        if (o->loss_watchdog_threshold > 0)
            S->watchdog_count = loss > o->loss_watchdog_threshold ? S->watchdog_count + 1 : 0;
        const tune_adamw_coeffs c = tune_adamw_coeffs_make(lr, o->adam_beta1, o->adam_beta2, o->adam_epsilon,
                                                           o->weight_decay, s + 1);
        R->be->adamw_update(R->dlora.params, R->d_exp_avg, R->d_exp_avg_sq, R->dlora.grads, R->lora->n_params,
                            &c);
        S->last_loss = loss;
        S->loss_sum += loss;
        S->log_loss_sum += loss;
        S->log_n++;
    }

    S->global_step = s + 1;
    const long epoch_steps = x.epoch_steps;
    S->epoch = epoch + (double)(k + 1) / (double)epoch_steps;
    S->data_epoch = k + 1 < epoch_steps ? epoch : epoch + 1;
    S->data_index = k + 1 < epoch_steps ? first + n_mb : 0;
    const double took = now_s() - t_start;
    R->tokens += tokens;
    R->log_tokens += tokens;
    R->busy += took;
    R->log_busy += took;
    tune_test_fault_point("after step %ld", S->global_step);
    if (finite) {
        emit(R, (tune_train_event){.kind = TUNE_EVENT_STEP, .loss = loss, .lr = lr, .grad_norm = grad_norm,
                                   .tokens_per_s = R->busy > 0 ? (double)R->tokens / R->busy : 0.0});
    } else {
        cJSON *e = log_entry_new(S);
        if (e) cJSON_AddStringToObject(e, "skipped_nonfinite", what);
        if ((st = log_entry_add(R, e, err))) return st;
        emit(R, (tune_train_event){.kind = TUNE_EVENT_SKIP, .lr = lr, .what = what});
    }

    /* A skipped step logs no mean: its interval joins the next log. */
    if (finite && o->logging_steps > 0 && S->global_step % o->logging_steps == 0) {
        st = do_log(R, lr, grad_norm, err);
        if (st) return st;
    }
    if (R->eval && o->eval_steps > 0 && S->global_step % o->eval_steps == 0) {
        st = do_eval(R, err);
        if (st) return st;
    }
    if (o->save_steps > 0 && S->global_step % o->save_steps == 0) {
        st = do_save(R, err);
        if (st) return st;
    }
    return TUNE_OK;
}

/* A stop request (SIGINT/SIGTERM) after a step: a checkpoint of that step
 * unless save_steps just wrote it, then TUNE_INTERRUPTED naming it. */
static tune_status interrupt(run *R, tune_error *err)
{
    stop_requested = 0;
    tune_status st = R->saved_step == R->st.global_step || !R->o->output_dir ? TUNE_OK : do_save(R, err);
    if (st) return st;
    return tune_error_set(err, TUNE_INTERRUPTED, R->last_checkpoint, 0, 0,
                          "training stopped on request after step %ld of %ld",
                          R->st.global_step, R->st.total_steps);
}

static tune_status check_options(const tune_train_options *o, const tune_batch_source *train,
                                 const tune_batch_source *eval, const tune_lora *lora, tune_error *err)
{
    if (o->output_dir && !o->output_dir[0]) return tune_fail_input(err, NULL, "output_dir is empty");
    if (!o->output_dir && (o->save_steps || o->resume_from_checkpoint || o->auto_resume))
        return tune_fail_input(err, NULL, "a run without output_dir neither saves nor resumes");
    if (o->total_steps < 1) return tune_fail_input(err, NULL, "the run has no optimizer steps");
    if (!o->lr) return tune_fail_input(err, NULL, "no learning-rate schedule was given");
    for (long s = 0; s < o->total_steps; s++)
        if (!isfinite(o->lr[s]) || o->lr[s] < 0)
            return tune_fail_input(err, NULL, "the learning rate of step %ld is %g", s + 1, o->lr[s]);
    if (o->gradient_accumulation_steps < 1)
        return tune_fail_input(err, NULL, "gradient_accumulation_steps must be at least 1");
    if (o->loss_watchdog_threshold > 0 && o->loss_watchdog_patience < 1)
        return tune_fail_input(err, NULL, "loss_watchdog_patience must be at least 1");
    if (o->logging_steps < 0 || o->eval_steps < 0 || o->save_steps < 0 || o->save_total_limit < 0 ||
        o->early_stopping_patience < 0)
        return tune_fail_input(err, NULL, "logging_steps, eval_steps, save_steps, save_total_limit and "
                                          "early_stopping_patience must not be negative");
    if (!(o->adam_beta1 >= 0 && o->adam_beta1 < 1 && o->adam_beta2 >= 0 && o->adam_beta2 < 1 &&
          o->adam_epsilon > 0 && o->weight_decay >= 0))
        return tune_fail_input(err, NULL, "AdamW needs 0 <= beta1, beta2 < 1, epsilon > 0, weight_decay >= 0");
    const tune_batch_source *srcs[2] = {train, eval};
    for (int i = 0; i < 2; i++)
        if (srcs[i] && (srcs[i]->max_B < 1 || srcs[i]->max_T < 2 || !srcs[i]->get || !srcs[i]->count))
            return tune_fail_input(err, NULL, "the %s batch source is incomplete", i ? "evaluation" : "training");
    if (lora->n_modules < 1 || lora->n_params < 1) return tune_fail_input(err, NULL, "the adapter has no modules");
    return TUNE_OK;
}

/* Refuses a checkpoint whose step layout differs from this run's: the data
 * position and the dropout masks of the remaining steps would change. */
static tune_status check_resumed(const run *R, const char *dir, tune_error *err)
{
    const train_state *S = &R->st;
    const tune_train_options *o = R->o;
    if (S->accum != o->gradient_accumulation_steps || S->seed != o->seed || S->total_steps != o->total_steps)
        return tune_fail_input(err, dir,
                               "this checkpoint comes from a run with %ld steps, %d micro-batches per step "
                               "(gradient_accumulation_steps x ranks) and seed %llu; this run has %ld, %d and %llu: "
                               "resuming needs the same data, global batch and seed",
                               S->total_steps, S->accum, (unsigned long long)S->seed, o->total_steps,
                               o->gradient_accumulation_steps, (unsigned long long)o->seed);
    if (S->global_step > S->total_steps)
        return tune_fail_input(err, dir, "global_step %ld is past the run's %ld steps", S->global_step,
                               S->total_steps);
    return TUNE_OK;
}

static void state_init(train_state *S, const run *R)
{
    const tune_train_options *o = R->o;
    memset(S, 0, sizeof *S);
    S->total_steps = o->total_steps;
    S->accum = o->gradient_accumulation_steps;
    S->epoch_mb = R->layout.epoch_mb;
    S->n_epochs = R->layout.n_epochs;
    S->seed = o->seed;
    S->logging_steps = o->logging_steps;
    S->eval_steps = o->eval_steps;
    S->save_steps = o->save_steps;
}

static tune_status start(run *R, tune_error *err)
{
    const tune_train_options *o = R->o;
    tune_lora *lora = R->lora;
    tune_status st = writes(R) ? tune_mkdir_p(o->output_dir, err) : TUNE_OK;
    if (!st) st = step_layout_build(&R->layout, R->train, o->total_steps, o->gradient_accumulation_steps, err);
    if (st) return st;
    state_init(&R->st, R);
    R->exp_avg = calloc(lora->n_params, sizeof(float));
    R->exp_avg_sq = calloc(lora->n_params, sizeof(float));
    R->tensors = calloc(2 * (size_t)lora->n_modules + 2, sizeof *R->tensors);
    if (!R->exp_avg || !R->exp_avg_sq || !R->tensors)
        return tune_fail_run(err, NULL, "out of memory for the optimizer state (%zu parameters)", lora->n_params);
    /* PEFT's parameter order: the embed_tokens copy, layer by layer, module
     * by module, A then B, the lm_head copy. */
    const size_t VC = (size_t)lora->vocab * lora->hidden;
    if (lora->saved & TUNE_SAVE_EMBED) R->tensors[R->n_tensors++] = (tune_span){lora->embed_offset, VC};
    for (int i = 0; i < lora->n_modules; i++) {
        const tune_lora_module *m = &lora->modules[i];
        R->tensors[R->n_tensors++] = (tune_span){m->a_offset, (size_t)lora->cfg.r * m->in};
        R->tensors[R->n_tensors++] = (tune_span){m->b_offset, (size_t)m->out * lora->cfg.r};
    }
    if (lora->saved & TUNE_SAVE_LM_HEAD) R->tensors[R->n_tensors++] = (tune_span){lora->head_offset, VC};

    char resume[4096] = "";
    if (o->resume_from_checkpoint && o->resume_from_checkpoint[0])
        snprintf(resume, sizeof resume, "%s", o->resume_from_checkpoint);
    else if (o->auto_resume)
        tune_train_latest_checkpoint(o->output_dir, resume, sizeof resume);
    if (resume[0]) {
        train_state fresh = R->st;
        st = checkpoint_read(resume, &R->model->cfg, &R->st, lora, R->exp_avg, R->exp_avg_sq, err);
        if (!st) st = check_resumed(R, resume, err);
        if (st) return st;
        /* Step settings may change between runs; the data layout may not. */
        R->st.logging_steps = fresh.logging_steps;
        R->st.eval_steps = fresh.eval_steps;
        R->st.save_steps = fresh.save_steps;
        snprintf(R->last_checkpoint, sizeof R->last_checkpoint, "%s", resume);
    } else {
        R->st.log_history = cJSON_CreateArray();
        if (!R->st.log_history) return tune_fail_run(err, NULL, "out of memory");
    }
    if (writes(R)) {
        st = report_log_rewrite(o->output_dir, &R->st, err);
        if (!st) st = checkpoint_remove_partial(o->output_dir, err);
        if (st) return st;
    }

    int max_B = R->train->max_B, max_T = R->train->max_T;
    if (R->eval) {
        if (R->eval->max_B > max_B) max_B = R->eval->max_B;
        if (R->eval->max_T > max_T) max_T = R->eval->max_T;
    }
    if (R->be->device && o->device_bytes > 0) {
        size_t free_b, total_b;
        R->be->memory(&free_b, &total_b);
        if ((unsigned long long)o->device_bytes > free_b)
            return tune_fail_run(err, NULL, "the run needs about %.2f GiB of %s memory (the plan's estimate: weights, "
                                 "LoRA state and activations) but %.2f GiB are free; lower micro_batch_size, "
                                 "eval_batch_size or sequence_len",
                                 (double)o->device_bytes / (1 << 30), R->be->name, (double)free_b / (1 << 30));
    }
    st = tune_backend_model(R->be, R->model, &R->dmodel, err);
    R->have_dmodel = !st;
    if (!st) st = tune_backend_lora(R->be, lora, &R->dlora, err);
    R->have_dlora = R->have_dmodel && !st;
    if (st) return st;
    const size_t bytes = lora->n_params * sizeof(float);
    R->d_exp_avg = tune_backend_mirror(R->be, R->exp_avg, bytes);
    R->d_exp_avg_sq = tune_backend_mirror(R->be, R->exp_avg_sq, bytes);
    R->d_tensors = tune_backend_mirror(R->be, R->tensors, (size_t)R->n_tensors * sizeof *R->tensors);
    if (!R->d_exp_avg || !R->d_exp_avg_sq || !R->d_tensors)
        return tune_fail_run(err, NULL, "out of %s memory for the optimizer state (%zu parameters)", R->be->name,
                             lora->n_params);
    const int ranks = tune_parallel_size(R->par);
    R->per_rank = (R->st.accum + ranks - 1) / ranks;
    R->n_slots = rank0(R) ? R->per_rank > 1 : (int)R->per_rank;
    R->slots = R->n_slots ? R->be->alloc((size_t)R->n_slots * bytes) : NULL;
    R->mb_loss = calloc((size_t)R->per_rank, sizeof *R->mb_loss);
    R->all_loss = calloc((size_t)R->per_rank * (size_t)ranks, sizeof *R->all_loss);
    if ((R->n_slots && !R->slots) || !R->mb_loss || !R->all_loss)
        return tune_fail_run(err, NULL, "out of %s memory for %d micro-batch gradients (%zu parameters)", R->be->name,
                             R->n_slots, lora->n_params);
    if (!R->be->device) { /* mapped in now, not by page faults inside the first step (AdamW's: 119 against 7 ms) */
        tune_populate(R->exp_avg, bytes);
        tune_populate(R->exp_avg_sq, bytes);
        if (R->slots) tune_populate(R->slots, (size_t)R->n_slots * bytes);
    }
    st = tune_workspace_create(R->be, &R->model->cfg, &R->dlora, max_B, max_T, R->o->gradient_checkpointing,
                               &R->ws, err);
    if (!st) st = step_batches_init(&R->sb, R->st.accum, R->train->max_B, R->train->max_T, err);
    R->first_step = R->st.global_step;
    return st;
}

/* Transformers' EarlyStoppingCallback on eval_loss. */
static int stopped_early(const run *R)
{
    return R->o->early_stopping_patience > 0 && R->st.evals_not_improved >= R->o->early_stopping_patience;
}

/* Axolotl's LossWatchDogCallback: too many steps in a row above the threshold. */
static int stopped_by_watchdog(const run *R)
{
    return R->o->loss_watchdog_threshold > 0 && R->st.watchdog_count >= R->o->loss_watchdog_patience;
}

static tune_status finish(run *R, tune_error *err)
{
    const tune_train_options *o = R->o;
    tune_status st = TUNE_OK;
    if (R->eval && R->st.last_eval_step != R->st.global_step) st = do_eval(R, err);
    if (st) return st;
    cJSON *e = log_entry_new(&R->st);
    const long counted = R->st.global_step - R->st.skipped_steps; /* steps whose loss was finite */
    if (e && counted > 0) cJSON_AddNumberToObject(e, "train_loss", R->st.loss_sum / (double)counted);
    if (e && R->st.skipped_steps > 0) cJSON_AddNumberToObject(e, "skipped_nonfinite_steps", (double)R->st.skipped_steps);
    if (e && stopped_early(R)) cJSON_AddTrueToObject(e, "stopped_early");
    if (e && stopped_by_watchdog(R)) cJSON_AddTrueToObject(e, "stopped_by_loss_watchdog");
    st = log_entry_add(R, e, err);
    if (!st && rank0(R)) st = fetch_state(R, 0, err);
    if (st || !writes(R)) return st;
    if ((st = tune_lora_save_peft(R->lora, o->output_dir, o->base_model_name_or_path, err)))
        return write_failed(R, "the adapter", err);
    tune_strbuf json = {0};
    char path[4096];
    st = train_state_json(&R->st, &json, err);
    if (!st) st = train_path(path, sizeof path, o->output_dir, "trainer_state.json", err);
    if (!st) st = tune_write_file_atomic(path, json.data, json.len, err);
    tune_strbuf_free(&json);
    if (!st) st = report_loss_svg(o->output_dir, &R->st, err);
    if (st) return write_failed(R, "trainer_state.json or loss.svg", err);
    if ((st = report_manifest(o, &R->st, err))) return st;
    emit(R, (tune_train_event){.kind = TUNE_EVENT_END, .loss = R->st.last_loss, .path = o->output_dir,
                               .eval_loss = R->eval ? R->st.last_eval : NAN, .stopped_early = stopped_early(R),
                               .stopped_by_watchdog = stopped_by_watchdog(R)});
    return TUNE_OK;
}

tune_status tune_train_run(const tune_train_options *opts, const tune_batch_source *train,
                           const tune_batch_source *eval, const tune_model *model, tune_lora *lora,
                           tune_error *err)
{
    tune_status st = check_options(opts, train, eval, lora, err);
    if (st) return st;
    run R = {.o = opts, .train = train, .eval = eval, .model = model, .lora = lora,
             .be = opts->backend ? opts->backend : tune_backend_cpu(), .saved_step = -1, .par = opts->parallel};
    R.t0 = now_s();
    st = tune_parallel_agree(R.par, start(&R, err), err);
    if (!st) { /* every rank resumed from the same checkpoint (or none) */
        char step[32];
        snprintf(step, sizeof step, "%ld", R.st.global_step);
        st = tune_parallel_same(R.par, "the step to resume from", step, err);
    }
    if (!st) emit(&R, (tune_train_event){.kind = TUNE_EVENT_START});
    while (!st && R.st.global_step < R.st.total_steps && !stopped_early(&R) && !stopped_by_watchdog(&R)) {
        st = train_step(&R, err);
        int stop = 0; /* a signal that reached any rank stops every rank after the same step */
        if (!st) st = tune_parallel_any(R.par, stop_requested, &stop, err);
        if (!st && stop) st = interrupt(&R, err);
    }
    if (!st) st = finish(&R, err);
    step_batches_free(&R.sb);
    step_layout_free(&R.layout);
    tune_workspace_free(R.ws);
    if (R.slots) R.be->release(R.slots);
    free(R.mb_loss);
    free(R.all_loss);
    if (R.d_exp_avg) tune_backend_unmirror(R.be, R.d_exp_avg, R.exp_avg);
    if (R.d_exp_avg_sq) tune_backend_unmirror(R.be, R.d_exp_avg_sq, R.exp_avg_sq);
    if (R.d_tensors) tune_backend_unmirror(R.be, R.d_tensors, R.tensors);
    if (R.have_dlora) tune_backend_lora_free(R.be, &R.dlora, lora);
    if (R.have_dmodel) tune_backend_model_free(R.be, &R.dmodel, model);
    cJSON_Delete(R.st.log_history);
    free(R.exp_avg);
    free(R.exp_avg_sq);
    free(R.tensors);
    return st;
}
