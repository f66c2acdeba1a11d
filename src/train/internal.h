/* Private to src/train/: the loop's resumable state and the helpers that
 * write checkpoints, logs and reports. */
#ifndef TUNE_TRAIN_INTERNAL_H
#define TUNE_TRAIN_INTERNAL_H

#include <cJSON.h>

#include "tune/train.h"
#include "tune/util.h"

/* Everything a resumed run needs besides the weights and the optimizer
 * moments; saved as trainer_state.json. */
typedef struct train_state {
    long global_step;             /* optimizer steps done */
    long total_steps;
    double epoch;                 /* fractional epoch after global_step, as Transformers logs it */
    int data_epoch;               /* the next micro-batch to read ... */
    long data_index;              /* ... epoch and index */
    const long *epoch_mb;         /* (n_epochs): micro-batches of each epoch the run reaches (not owned) */
    int n_epochs;
    int accum;
    uint64_t seed;
    long logging_steps, eval_steps, save_steps;
    double log_loss_sum;          /* step losses since the last log ... */
    long log_n;                   /* ... and how many */
    double loss_sum;              /* every step's loss, for the run's mean */
    double last_loss;             /* the last step's loss */
    long watchdog_count;          /* consecutive steps above loss_watchdog_threshold */
    long skipped_steps;           /* steps skipped for a non-finite loss or gradient (no update) */
    long evals_not_improved;      /* consecutive evaluations above the best eval loss */
    double best_eval;             /* lowest eval loss, when best_step > 0 */
    long best_step;
    double last_eval;             /* when last_eval_step > 0 */
    long last_eval_step;
    cJSON *log_history;           /* array of the entries of training_log.jsonl */
} train_state;

/* trainer_state.json's text. */
tune_status train_state_json(const train_state *st, tune_strbuf *out, tune_error *err);

/* Writes output_dir/checkpoint-<step>/ (built as .tmp, then renamed); path
 * receives its name. */
tune_status checkpoint_write(const char *output_dir, const train_state *st, const tune_lora *lora,
                             const float *exp_avg, const float *exp_avg_sq, const char *base_model,
                             char *path, size_t size, tune_error *err);
/* Reads a checkpoint into st (log_history allocated; st->epoch_mb is kept
 * and must equal the checkpoint's), lora's params and the moments (each
 * lora->n_params floats). */
tune_status checkpoint_read(const char *dir, const tune_model_config *mcfg, train_state *st, tune_lora *lora,
                            float *exp_avg, float *exp_avg_sq, tune_error *err);
/* Removes the oldest checkpoint-N folders beyond limit. */
tune_status checkpoint_prune(const char *output_dir, int limit, tune_error *err);
/* Removes checkpoint-N.tmp folders an interrupted run left behind. */
tune_status checkpoint_remove_partial(const char *output_dir, tune_error *err);

/* output_dir/loss.svg: training and validation loss by step. */
tune_status report_loss_svg(const char *output_dir, const train_state *st, tune_error *err);
/* Appends one entry to output_dir/training_log.jsonl. */
tune_status report_log_append(const char *output_dir, const cJSON *entry, tune_error *err);
/* Rewrites output_dir/training_log.jsonl from st->log_history (on resume, so
 * lines logged after the checkpoint by the interrupted run disappear). */
tune_status report_log_rewrite(const char *output_dir, const train_state *st, tune_error *err);
/* output_dir/run_manifest.json. */
tune_status report_manifest(const tune_train_options *opts, const train_state *st, tune_error *err);

/* Micro-batch `index` of `epoch` from src, checked against the source's
 * stated maximum size; `what` names the source in errors. */
tune_status train_get_batch(const tune_batch_source *src, const char *what, int epoch, long index, tune_batch *b,
                            tune_error *err);

/* Which micro-batches each step trains on (batches.c): the epochs a run of
 * total_steps reaches, with the source's micro-batch count of each, accum
 * micro-batches a step and the last step of an epoch possibly short. */
typedef struct step_layout {
    long *epoch_first; /* (n_epochs + 1): first step of each epoch, then total_steps */
    long *epoch_mb;    /* (n_epochs): its micro-batches */
    int n_epochs;
    int accum;
} step_layout;

/* The micro-batches of one step: [first, first + n) of epoch, whose k-th
 * step (of epoch_steps) it is. */
typedef struct step_slice {
    int epoch;
    long k, first, epoch_steps;
    int n;
} step_slice;

tune_status step_layout_build(step_layout *l, const tune_batch_source *src, long total_steps, int accum,
                              tune_error *err);
step_slice step_layout_find(const step_layout *l, long step);
void step_layout_free(step_layout *l);

/* Trained targets of a micro-batch, by the rule of tune_llama_forward:
 * logits[b, t] is scored against labels[b, t + 1] unless that label is
 * ignored or t and t + 1 lie in different packed segments. */
long train_count_targets(const tune_batch *b);

/* dir/name into buf. */
tune_status train_path(char *buf, size_t size, const char *dir, const char *name, tune_error *err);

#endif
