/* The training plan: everything decided from a config before training
 * starts — resolved paths, model dimensions (header only), LoRA targets and
 * trainable parameters, step arithmetic, the learning-rate schedule and a
 * memory estimate. The plan is the one place that wires modules together;
 * later stages read plain values from it, not from the config. */
#ifndef TUNE_PLAN_H
#define TUNE_PLAN_H

#include "tune/config.h"
#include "tune/data.h"
#include "tune/model.h"
#include "tune/train.h"

/* Learning rate per optimizer step, as Transformers' schedules:
 * get_constant_schedule (no warmup), get_constant_schedule_with_warmup,
 * get_linear_schedule_with_warmup,
 * get_cosine_schedule_with_warmup (min_lr_ratio 0) and
 * get_cosine_with_min_lr_schedule_with_warmup(min_lr_rate = min_lr_ratio). */
typedef struct tune_schedule {
    tune_lr_scheduler kind;
    double lr;           /* peak learning rate */
    long warmup_steps;   /* lr rises linearly from 0 over these steps */
    long total_steps;    /* num_training_steps */
    double min_lr_ratio; /* cosine: floor as a fraction of lr */
} tune_schedule;

/* The lr for 0-based optimizer step `step` (the first update uses step 0,
 * which is 0 when there is warmup): lr · λ(step), λ as in Transformers. */
double tune_schedule_lr(const tune_schedule *s, long step);

#define TUNE_PLAN_UNKNOWN (-1L) /* "unknown until the data stage" */

typedef struct tune_plan {
    /* paths, absolute (relative ones are taken from the current directory) */
    char *base_model;         /* model folder or GGUF file */
    char *model_config_path;  /* where the hyperparameters are read: base_model_config or base_model */
    char *tokenizer_path;     /* tokenizer_config or base_model */
    char *output_dir;
    char *prepared_dir;       /* dataset_prepared_path, default output_dir/prepared */
    char **train_paths;       /* (n_train_paths) datasets[i].path */
    int n_train_paths;
    char **eval_paths;        /* (n_eval_paths) test_datasets[i].path */
    int n_eval_paths;

    /* model, from its header */
    int have_model;
    tune_model_config model;
    long long n_model_params;

    /* LoRA */
    int lora_r;
    double lora_alpha, lora_scaling; /* scaling = alpha / r, or alpha / sqrt(r) with rslora */
    double lora_dropout;
    int use_rslora;
    unsigned lora_target_mask;       /* bit (1u << tune_linear_kind) per targeted module */
    int n_lora_targets;
    unsigned lora_saved;             /* TUNE_SAVE_* bits of lora_modules_to_save */
    int vocab_size;                  /* the model's vocabulary, grown to the tokenizer's after added tokens
                                        (tune_plan_prepare_data); 0 before the model */
    long long n_lora_params;         /* r·(in + out) per targeted module, summed over layers, plus
                                        vocab_size·hidden per saved module; -1 before the model */

    /* data: counts filled by the data stage through tune_plan_set_examples */
    long n_train_examples;           /* sequences per epoch (examples, or packed rows of epoch 0); -1 unknown */
    long n_train_unpacked;           /* training examples before packing; -1 unknown */
    long n_eval_examples;            /* -1 unknown, 0 no evaluation */
    long long n_train_tokens;        /* tokens in one epoch of training sequences; -1 unknown (the data stage sets it) */
    int has_eval;                    /* test_datasets or val_set_size given */
    int data_prepared;               /* 0 not tried, 1 prepared (counts above are real), -1 failed: */
    tune_error data_error;           /* why the data could not be prepared */

    /* steps (TUNE_PLAN_UNKNOWN where they need the example count) */
    long micro_batch_size, gradient_accumulation_steps, eval_batch_size;
    long sequence_len;
    int sample_packing, pad_to_sequence_len;
    double num_epochs;
    long max_steps;                  /* -1: from num_epochs */
    int ranks;                       /* processes sharing each step (data parallelism; 1 alone): each takes
                                        gradient_accumulation_steps micro-batches of the step, as Axolotl counts */
    struct tune_parallel *parallel;  /* those ranks for the training loop (NULL: this process alone) */
    long micro_batches_per_epoch;    /* ceil(n_train / micro_batch_size) */
    long steps_per_epoch;            /* ceil(micro_batches_per_epoch / (gradient_accumulation_steps · ranks)) */
    long total_steps;                /* max_steps, else ceil(num_epochs · steps_per_epoch) */
    long warmup_steps;               /* warmup_steps, else ceil(warmup_ratio · total) */
    long logging_steps;
    long save_every;                 /* save_steps / saves_per_epoch / once per epoch */
    long eval_every;                 /* eval_steps / evals_per_epoch / once per epoch; 0: no evaluation */
    tune_schedule schedule;          /* usable once total_steps is known */

    /* memory estimate in bytes; -1 before the model */
    tune_weight_storage weight_storage; /* load_in_8bit / load_in_4bit, else a GGUF's blocks kept as they are */
    long long mem_weights;           /* base weights as stored (blocks and fp32) */
    long long mem_weights_f32;       /* the same weights all in fp32 */
    long long mem_weights_stored;    /* from the model file's headers; -1 when not read */
    long long mem_lora;              /* LoRA params + grads + 2 AdamW moments */
    long long mem_activations;       /* kept for backward, micro_batch_size × sequence_len */
    long long mem_activations_other; /* the same with gradient_checkpointing the other way */
    int gradient_checkpointing;      /* keep only each layer's input; the backward recomputes the rest */
    long long mem_runtime;           /* what the process holds once its data is prepared (code, libraries,
                                      * tokenizer, examples): its peak resident memory then; -1 before */
    long long mem_total;
    long long mem_device;            /* on a device backend: weights + LoRA state + the exact workspace; else -1 */
    long long device_free;           /* free device memory when planned; -1 on the CPU */

    /* the optimizer and the run's stopping and saving rules, as configured */
    double adam_beta1, adam_beta2, adam_epsilon, weight_decay, max_grad_norm;
    double loss_watchdog_threshold;
    long loss_watchdog_patience, early_stopping_patience; /* 0: no early stopping */
    int save_total_limit;            /* 0: keep every checkpoint */
    const char *resume_from_checkpoint; /* the config's (NULL: none); points into the config */
    int auto_resume;
    const char *base_model_name;     /* base_model as written, for adapter_config.json; points into the config */
    const char *const *lora_target_names; /* lora_target_modules (PEFT's name rule); points into the config */
    int n_lora_target_names;         /* 0: every linear layer of lora_target_mask's kinds */
    int n_added_tokens_asked;        /* entries of tokens: (the tokenizer is saved with the adapter) */

    tune_backend_kind backend;       /* as asked for (auto, cpu, cuda) */
    const tune_backend *be;          /* as chosen: where the run computes */
    char backend_reason[384];        /* which and why, e.g. "cuda: NVIDIA H200 (...)" */
    int threads;                     /* resolved: threads, or all cores when 0 */
    long seed;

    /* from the config, for the inputs above: steps recompute from these */
    double warmup_ratio;
    long cfg_warmup_steps;           /* -1: not set */
    long save_steps, saves_per_epoch, eval_steps, evals_per_epoch;

    /* Things worth a look that do not stop training (sequence_len beyond the
     * model's context, a LoRA rank vLLM does not load, examples dropped as
     * too long, records skipped), each at the config key it is about. */
    tune_error_list warnings;
} tune_plan;

/* The plan from the config alone: paths (checked to exist, errors at the
 * key's position), the model's dimensions from its header
 * (tune_model_config_load: no weights are read), LoRA targets and sizes, the
 * memory estimate, the step numbers that need no data. Example counts come
 * later with tune_plan_set_examples. Appends every error to errs. */
tune_status tune_plan_init(tune_plan *plan, const tune_config *cfg, tune_error_list *errs);

/* Model dimensions (tune_plan_init reads them): parameter counts and the memory estimate. */
void tune_plan_set_model(tune_plan *plan, const tune_model_config *model);

/* The number of ranks (mpirun -np); recomputes every step number and the schedule. */
void tune_plan_set_ranks(tune_plan *plan, int ranks);

/* Example counts from the data stage; recomputes every step number and the schedule. */
void tune_plan_set_examples(tune_plan *plan, long n_train, long n_eval);

/* Steps per epoch for n examples: ceil(ceil(n / micro_batch_size) / gradient_accumulation_steps). */
long tune_plan_steps_per_epoch(long n_examples, long micro_batch_size, long gradient_accumulation_steps);

/* ------------------------------------------------------------- data */

struct tune_tokenizer;

/* The config's datasets as data-stage options. The options borrow strings
 * from the config and the tokenizer: both must outlive them. */
typedef struct tune_plan_data_setup {
    tune_data_options opt;           /* what tune_data_prepare takes; points into the arrays below */
    tune_dataset_options *datasets;  /* (n_datasets + n_test_datasets): datasets, then test_datasets */
    char ***files;                   /* (n_datasets + n_test_datasets) resolved file lists */
    tune_template *templates;   /* (1 + n_datasets + n_test_datasets): the top-level one (opt.chat_template
                                      * is a copy of it), then each entry's own where it has one */
    int n_templates;
    char *jinja;                     /* chat_template_jinja's text (read from its file), or NULL */
    int n_datasets, n_test_datasets;
} tune_plan_data_setup;

/* Maps the config onto data-stage options: each entry's type defaults
 * (tune_dataset_options_init), field names, roles, chat template (resolved
 * against the tokenizer's own template), files (tune_data_resolve_files on
 * the plan's absolute paths), special_tokens overrides, length rule, split
 * and seed. Errors name the config key. Free with tune_plan_data_setup_free
 * (also after a failure). */
tune_status tune_plan_data_options(const tune_config *cfg, const tune_plan *plan, const struct tune_tokenizer *tok,
                                   tune_plan_data_setup *out, tune_error *err);
void tune_plan_data_setup_free(tune_plan_data_setup *s);

/* Everything the data stage made for a plan. */
typedef struct tune_plan_data {
    struct tune_tokenizer *tok;  /* loaded from plan->tokenizer_path */
    tune_data_tokenizer dtok;    /* the data stage's view of tok (special_tokens applied) */
    size_t n_new_tokens;         /* ids that tokens / special_tokens added to tok */
    tune_plan_data_setup setup;
    tune_prepared prep;          /* training and validation examples, and the report */
    tune_batch_options batch;    /* micro-batching for training, from the plan */
} tune_plan_data;

/* Loads the tokenizer, maps the config (tune_plan_data_options), runs the
 * data stage with the cache in plan->prepared_dir (keep_text as
 * tune_data_prepare: for `tune preprocess`), then gives the plan its counts
 * (tune_plan_set_examples with the training rows — packed rows of epoch 0
 * under sample_packing — and the validation examples; n_train_tokens) and
 * the data warnings. cfg must outlive out. On failure err (and
 * plan->data_error) says why and the plan's counts stay unknown; free out in
 * every case. Call it once per plan (each call adds its data warnings). */
tune_status tune_plan_prepare_data(tune_plan *plan, const tune_config *cfg, int keep_text, tune_plan_data *out,
                                   tune_error *err);
void tune_plan_data_free(tune_plan_data *d);

/* For a person / as JSON (cJSON; *json is malloc'd). */
tune_status tune_plan_format(const tune_plan *plan, tune_strbuf *out);
tune_status tune_plan_to_json(const tune_plan *plan, char **json, tune_error *err);

void tune_plan_free(tune_plan *plan);

/* The training loop's options from the plan: backend, device estimate,
 * output folder, steps, optimizer, logging, evaluation, saving and resume.
 * The caller adds the schedule (lr), the files for the manifest, the
 * version and the progress callback. The plan must outlive the options. */
void tune_plan_train_options(const tune_plan *plan, tune_train_options *opts);

/* ---- Running the plan ------------------------------------------------------
 * The setups of `tune train` and `tune eval`: data, model, adapters,
 * batchers and schedule, wired here and run on the plan's backend. The
 * library prints nothing: it reports through these hooks (each may be NULL). */
typedef struct tune_run_hooks {
    void *ctx;
    /* after the data stage, when the plan's counts and warnings are final */
    void (*on_planned)(void *ctx, const tune_plan *plan);
    /* a line of progress, e.g. "backend cuda: NVIDIA H200 (...)" */
    void (*on_note)(void *ctx, const char *line);
    /* training progress (tune_train_format_event formats it) */
    void (*on_event)(void *ctx, const tune_train_event *ev);
} tune_run_hooks;

/* Trains as the plan says: prepares the data, writes
 * output_dir/config_resolved.yml (and the tokenizer when tokens were
 * added), loads the model (grown to the plan's vocabulary), creates the
 * adapters, the batchers and the schedule, and runs tune_train_run.
 * config_path and version go into the run's manifest. */
tune_status tune_plan_train(tune_plan *plan, const tune_config *cfg, const char *config_path, const char *version,
                            const tune_run_hooks *hooks, tune_error *err);

/* The micro-batches of the first `steps` optimizer steps of the plan's run
 * (every step when steps < 1) from its prepared data, in the order
 * tune_plan_train trains on them, into path (tune_train_write_batches). */
tune_status tune_plan_write_batches(const tune_plan *plan, const tune_plan_data *data, const char *path, long steps,
                                    tune_error *err);

typedef struct tune_eval_report {
    long examples, tokens, truncated; /* validation examples, trained targets, examples truncated */
    double loss, perplexity;          /* mean token loss and its exp */
    char data[4096];                  /* the validation files, comma-separated */
} tune_eval_report;

/* The loss of the plan's validation set with the trainer's batching (the
 * figure it logs as eval_loss), with a PEFT adapter when adapter is not
 * NULL. where names the input in the error when there is no validation set. */
tune_status tune_plan_evaluate(tune_plan *plan, const tune_config *cfg, const char *adapter, const char *where,
                               const tune_run_hooks *hooks, tune_eval_report *r, tune_error *err);

/* One optimizer step of the plan's experiment, taken apart (tune explain). */
#define TUNE_EXPLAIN_STATE 7
typedef struct tune_explain {
    tune_trace trace;            /* every operation of the step in order; trace.seconds: the step's time */
    double sgemm_gflops;         /* the backend's sgemm rate, measured in the same run ... */
    int sgemm_n;                 /* ... on n×n×n products */
    int step;                    /* which step is profiled: 2 (warm), or 1 where the plan or epoch has one */
    int micro_batches;           /* in the step */
    int B, T;                    /* the first micro-batch's shape */
    long tokens;                 /* in the step's micro-batches */
    tune_model_config model;     /* as trained (vocabulary grown by added tokens) */
    double lora_params;          /* the A and B matrices' parameters */
    double model_flops;          /* of the step: tune_model_flops_per_token × tokens, micro-batch by micro-batch */
    double loss, grad_norm;      /* the step's, as the loop logs them */
    /* What the step holds where it computes: the weights as stored and the
     * trainable state (each with its bytes), then the workspace buffer by buffer. */
    tune_buffer_bytes state[TUNE_EXPLAIN_STATE];
    tune_buffer_bytes workspace[TUNE_WORKSPACE_BUFFERS];
} tune_explain;

/* Prepares the data, loads the model and creates the adapters as
 * tune_plan_train does, measures the backend's sgemm rate, then runs the
 * training loop on a tracing copy of the backend (tune_trace_open) up to the
 * step it profiles (x->step), writing nothing into output_dir (the data cache
 * excepted). Free x with
 * tune_explain_free (also after a failure). */
tune_status tune_plan_explain(tune_plan *plan, const tune_config *cfg, const tune_run_hooks *hooks, tune_explain *x,
                              tune_error *err);
void tune_explain_free(tune_explain *x);

#endif
