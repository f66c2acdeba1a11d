/* Training: AdamW, gradient clipping, the training loop with gradient
 * accumulation, evaluation, logging, checkpoints and resume. */
#ifndef TUNE_TRAIN_H
#define TUNE_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "tune/error.h"
#include "tune/kernels.h"
#include "tune/llama.h"
#include "tune/lora.h"
#include "tune/model.h"

/* ---- AdamW, as torch.optim.AdamW (single-tensor path) ----------------
 * The coefficients and the per-element update live in tune/kernels.h. */

/* step is the 1-based number of this update. */
tune_adamw_coeffs tune_adamw_coeffs_make(double lr, double beta1, double beta2, double eps,
                                         double weight_decay, long step);

/* The update itself and gradient clipping are backend operations
 * (tune/backend.h): tune_cpu_adamw_update, tune_cpu_clip_grad_norm. */

/* ---- Micro-batch sources ----------------------------------------------- */

/* Where micro-batches come from (the data module's batcher, or a test
 * replaying stored batches). The count and micro-batch `index` of epoch
 * `epoch` must depend only on (epoch, index) and the source's own seed,
 * never on earlier calls: a resumed run asks for batches from the middle of
 * an epoch. With sample packing the count may differ between epochs. */
typedef struct tune_batch_source {
    void *ctx;
    int max_B, max_T; /* no micro-batch is larger (sizes the workspace) */
    /* Micro-batches in `epoch` (at least 1), or -1 with err filled. */
    long (*count)(void *ctx, int epoch, tune_error *err);
    /* Fills *batch; its arrays stay valid until the next call on this source. */
    tune_status (*get)(void *ctx, int epoch, long index, tune_batch *batch, tune_error *err);
} tune_batch_source;

/* ---- Evaluation ---------------------------------------------------------- */

/* Mean token cross-entropy over every micro-batch of epoch 0 of `eval`
 * (model and lora as the workspace's backend holds them, tune_backend_model),
 * without dropout: *loss = summed loss / *n_targets (trained targets). The
 * training loop reports this as eval_loss; `tune eval` prints it. lora may
 * be NULL (the base model); ws must fit eval->max_B x eval->max_T. An empty
 * set or one without trained targets is TUNE_ERR_INPUT. */
tune_status tune_evaluate(const tune_model *model, const tune_lora *lora, const tune_batch_source *eval,
                          tune_workspace *ws, double *loss, long *n_targets, tune_error *err);

/* tune_evaluate on backend be from the host model and adapters (lora may be
 * NULL): makes their copies there and a workspace for eval's batches. */
tune_status tune_evaluate_on(const tune_backend *be, const tune_model *model, tune_lora *lora,
                             const tune_batch_source *eval, double *loss, long *n_targets, tune_error *err);

/* ---- The training loop ------------------------------------------------- */

typedef enum {
    TUNE_EVENT_START,  /* before the first step (step = the step it resumes from) */
    TUNE_EVENT_STEP,   /* after every optimizer step */
    TUNE_EVENT_LOG,    /* every logging_steps: mean loss since the last log, lr, grad norm, tokens/s */
    TUNE_EVENT_EVAL,   /* after an evaluation */
    TUNE_EVENT_SAVE,   /* after a checkpoint was written (path) */
    TUNE_EVENT_SKIP,   /* a step with a non-finite loss or gradient, skipped (what; skip_nonfinite) */
    TUNE_EVENT_END,    /* the final adapter was written (path = output_dir) */
} tune_train_event_kind;

typedef struct tune_train_event {
    tune_train_event_kind kind;
    long step;        /* optimizer steps done */
    long total_steps;
    long first_step;  /* the step this process started from (> 0 when resumed) */
    double epoch;     /* fractional, as Transformers logs it */
    double loss;      /* STEP: this step's loss; LOG: mean over the steps since the last log */
    double lr;        /* the learning rate of the last step */
    double grad_norm; /* before clipping, of the last step */
    double tokens_per_s;
    double eval_loss; /* EVAL */
    double elapsed_s; /* since this process started training */
    const char *path; /* SAVE: the checkpoint folder; END: output_dir */
    const char *what; /* SKIP: what was not finite */
    int stopped_early; /* END: early_stopping_patience ended the run */
    int stopped_by_watchdog; /* END: the loss watchdog ended the run */
} tune_train_event;

/* Plain values from the plan; the loop never reads the config. */
typedef struct tune_train_options {
    const tune_backend *backend;   /* where the step runs (NULL: the CPU) */
    struct tune_parallel *parallel; /* the ranks that share each step (tune/parallel.h; NULL: this
                                      process alone); only rank 0 writes files */
    long long device_bytes;        /* on a device: the plan's estimate, checked against free memory
                                      before anything is allocated (<= 0: not checked) */
    const char *output_dir;        /* NULL: the run writes nothing (tune explain); then it may neither save
                                      nor resume */
    long total_steps;              /* optimizer steps of the whole run */
    const double *lr;              /* (total_steps): learning rate of each step, from the schedule */
    int gradient_accumulation_steps; /* micro-batches per optimizer step, every rank's together */
    double adam_beta1, adam_beta2, adam_epsilon, weight_decay;
    double max_grad_norm;          /* <= 0: no clipping (the norm is still logged) */
    int gradient_checkpointing;    /* the backward recomputes activations (same gradients, less memory) */
    int skip_nonfinite;            /* a step whose loss or gradient is NaN or infinite: 0 stops the run
                                      (TUNE_ERR_RUN), 1 skips its update (logged; the run goes on) */
    uint64_t seed;                 /* LoRA dropout masks */
    double loss_watchdog_threshold; /* > 0: end the run (as Axolotl, after that step's update, */
    long loss_watchdog_patience;    /* adapter written) when the step loss stays above it this many steps */
    long logging_steps;            /* 0: never */
    long eval_steps;               /* 0: never (an eval source still gives a final eval) */
    long early_stopping_patience;  /* > 0: end the run (normally, with its adapter) after this many
                                      evaluations in a row that do not improve on the best eval loss */
    long save_steps;               /* 0: never */
    int save_total_limit;          /* 0: keep every checkpoint */
    const char *resume_from_checkpoint; /* a checkpoint folder, or NULL */
    int auto_resume;               /* resume from the newest complete checkpoint in output_dir */
    /* Recorded in adapter_config.json and run_manifest.json. */
    const char *base_model_name_or_path;
    const char *tune_version;
    const char *config_path;       /* NULL when none */
    const char *const *data_files;
    int n_data_files;
    const char *const *model_files;
    int n_model_files;
    /* Progress reports (may be NULL); the library itself never prints. */
    void (*on_event)(void *ctx, const tune_train_event *ev);
    void *event_ctx;
} tune_train_options;

/* Trains lora (already initialised) on `train`, on opts->backend: the
 * weights, adapters, gradients, moments and activations stay there; a step
 * uploads its batches and downloads the loss and gradient norm; checkpoints
 * and the adapter are downloaded into lora when written; evaluates on `eval` (may be
 * NULL) every eval_steps and at the end, stopping early when
 * early_stopping_patience says so. Writes into output_dir:
 * checkpoint-N/ every save_steps (adapter, optimizer.safetensors,
 * trainer_state.json; built as checkpoint-N.tmp and renamed),
 * training_log.jsonl, loss.svg, and at the end adapter_model.safetensors,
 * adapter_config.json, trainer_state.json and run_manifest.json. A NaN or
 * infinite loss or gradient stops the run with TUNE_ERR_RUN, naming the step
 * and the first tensor whose gradient is not finite and leaving the
 * checkpoints already written (or, with skip_nonfinite, skips that step's
 * update); early stopping and the loss watchdog end it normally. A file that
 * cannot be written (disk full, say) stops it with TUNE_ERR_RUN naming the
 * file, the system's reason and the last good checkpoint. After
 * tune_train_request_stop it returns TUNE_INTERRUPTED once the step in
 * progress is done and checkpointed, with err->file that checkpoint. */
tune_status tune_train_run(const tune_train_options *opts, const tune_batch_source *train,
                           const tune_batch_source *eval, const tune_model *model, tune_lora *lora,
                           tune_error *err);

/* The micro-batches of the first `steps` optimizer steps (every step when
 * steps < 1) of a run of total_steps with accum micro-batches a step, in
 * the order tune_train_run trains on them from a fresh start, written to
 * path as safetensors (for a peer trainer to train on the same batches):
 * for micro-batch K, "input_ids.K", "labels.K" (-100: not trained),
 * "position_ids.K" and "segment_ids.K" (packed examples 1, 2, ...; padding
 * 0), int32 (B, T); and int32 (N) "step", "epoch", "index" (within the
 * epoch) and "targets" (trained targets: the next token's label is not
 * -100 and lies in the same segment). A step's loss is the summed token
 * loss of its micro-batches over the sum of their targets. */
tune_status tune_train_write_batches(const tune_batch_source *train, long total_steps, int accum, long steps,
                                     const char *path, tune_error *err);

/* Asks the running tune_train_run to stop after its current optimizer step
 * (see there); the run that honours the request spends it. Async-signal-safe:
 * the CLI calls it from its SIGINT/SIGTERM handler. */
void tune_train_request_stop(void);

/* One line describing an event: a progress bar for a terminal (tty != 0,
 * meant to be drawn after a carriage return) or a plain log line. Writes ""
 * for events that have no line in that mode. */
void tune_train_format_event(const tune_train_event *ev, int tty, char *buf, size_t size);

/* The newest complete checkpoint-N folder in output_dir into path; returns
 * 0 when there is none. */
int tune_train_latest_checkpoint(const char *output_dir, char *path, size_t size);

#endif
