/* The plan: paths, LoRA targets and sizes, step arithmetic, schedule, memory. */
#include "tune/plan.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cJSON.h>

#include "tune/lora.h"

double tune_schedule_lr(const tune_schedule *s, long step)
{
    long w = s->warmup_steps, t = s->total_steps;
    double lambda;
    if (s->kind == TUNE_LR_CONSTANT) {
        lambda = 1.0; /* get_constant_schedule: no warmup */
    } else if (step < w) {
        lambda = (double)step / (double)(w > 1 ? w : 1);
    } else if (s->kind == TUNE_LR_CONSTANT_WITH_WARMUP) {
        lambda = 1.0;
    } else {
        long span = t - w > 1 ? t - w : 1;
        if (s->kind == TUNE_LR_LINEAR) {
            lambda = (double)(t - step) / (double)span;
        } else {
            /* num_cycles 0.5: cos(pi · 0.5 · 2 · progress), evaluated as Transformers does. */
            double progress = (double)(step - w) / (double)span;
            double f = 0.5 * (1.0 + cos(M_PI * 0.5 * 2.0 * progress));
            lambda = f * (1 - s->min_lr_ratio) + s->min_lr_ratio;
        }
        if (lambda < 0.0) lambda = 0.0;
    }
    return s->lr * lambda;
}

long tune_plan_steps_per_epoch(long n_examples, long micro_batch_size, long gradient_accumulation_steps)
{
    long micro_batches = (n_examples + micro_batch_size - 1) / micro_batch_size;
    return (micro_batches + gradient_accumulation_steps - 1) / gradient_accumulation_steps;
}

static long ceil_to_long(double x)
{
    double c = ceil(x);
    return c >= (double)LONG_MAX ? LONG_MAX : (long)c;
}

/* Steps between saves or evaluations: every `steps`, or `per_epoch` times per
 * epoch as Axolotl does it (a ratio 1 / (per_epoch · num_epochs) of the total),
 * or once per epoch when neither is set. */
static long every(const tune_plan *p, long steps, long per_epoch)
{
    if (steps > 0) return steps;
    if (per_epoch > 0) {
        if (p->total_steps < 0) return TUNE_PLAN_UNKNOWN;
        double ratio = 1.0 / ((double)per_epoch * p->num_epochs);
        long n = ratio < 1.0 ? ceil_to_long((double)p->total_steps * ratio) : p->total_steps;
        return n > 0 ? n : 1;
    }
    return p->steps_per_epoch > 0 ? p->steps_per_epoch : p->steps_per_epoch < 0 ? TUNE_PLAN_UNKNOWN : 1;
}

static void recompute(tune_plan *p)
{
    if (p->n_train_examples >= 0) {
        p->micro_batches_per_epoch = (p->n_train_examples + p->micro_batch_size - 1) / p->micro_batch_size;
        p->steps_per_epoch = tune_plan_steps_per_epoch(p->n_train_examples, p->micro_batch_size,
                                                       p->gradient_accumulation_steps * p->ranks);
    } else {
        p->micro_batches_per_epoch = p->steps_per_epoch = TUNE_PLAN_UNKNOWN;
    }
    if (p->max_steps > 0)
        p->total_steps = p->max_steps;
    else if (p->steps_per_epoch >= 0)
        p->total_steps = ceil_to_long(p->num_epochs * (double)p->steps_per_epoch);
    else
        p->total_steps = TUNE_PLAN_UNKNOWN;
    if (p->cfg_warmup_steps >= 0)
        p->warmup_steps = p->cfg_warmup_steps;
    else if (p->total_steps >= 0)
        p->warmup_steps = ceil_to_long((double)p->total_steps * p->warmup_ratio);
    else
        p->warmup_steps = TUNE_PLAN_UNKNOWN;
    p->save_every = every(p, p->save_steps, p->saves_per_epoch);
    p->eval_every = p->has_eval && p->n_eval_examples != 0 ? every(p, p->eval_steps, p->evals_per_epoch) : 0;
    p->schedule.warmup_steps = p->warmup_steps;
    p->schedule.total_steps = p->total_steps;
}

void tune_plan_set_ranks(tune_plan *plan, int ranks)
{
    plan->ranks = ranks > 1 ? ranks : 1;
    recompute(plan);
}

void tune_plan_set_examples(tune_plan *plan, long n_train, long n_eval)
{
    plan->n_train_examples = n_train;
    plan->n_eval_examples = n_eval;
    recompute(plan);
}

void tune_plan_set_model(tune_plan *plan, const tune_model_config *m)
{
    plan->have_model = 1;
    plan->model = *m;
    long long C = m->hidden_size, V = m->vocab_size, L = m->num_hidden_layers;
    long long per_layer = 2 * C, lora_per_layer = 0, lora_in = 0;
    for (int k = 0; k < TUNE_N_LINEAR; k++) {
        int out, in;
        tune_linear_shape(m, (tune_linear_kind)k, &out, &in);
        per_layer += (long long)out * in;
        if (plan->lora_target_mask & (1u << k)) {
            lora_per_layer += (long long)plan->lora_r * ((long long)in + out);
            lora_in += in;
        }
    }
    plan->n_model_params = V * C + L * per_layer + C + (m->tie_word_embeddings ? 0 : V * C);
    plan->vocab_size = plan->vocab_size > m->vocab_size ? plan->vocab_size : m->vocab_size;
    const int n_saved = (plan->lora_saved & TUNE_SAVE_EMBED ? 1 : 0) + (plan->lora_saved & TUNE_SAVE_LM_HEAD ? 1 : 0);
    plan->n_lora_params = L * lora_per_layer + (long long)n_saved * plan->vocab_size * C;
    plan->mem_weights_f32 = 4 * plan->n_model_params;
    plan->mem_weights = plan->mem_weights_stored >= 0 ? plan->mem_weights_stored : plan->mem_weights_f32;
    plan->mem_lora = 4 * 4 * plan->n_lora_params; /* params, grads, AdamW m and v */

    /* The workspace the run allocates, from its own layout (tune_workspace_bytes): activations
     * kept for the backward pass, the head's chunk, scratch and dropout masks, sized for the
     * larger of the training and evaluation batches, as the loop makes it. */
    const long B = plan->has_eval && plan->eval_batch_size > plan->micro_batch_size ? plan->eval_batch_size
                                                                                     : plan->micro_batch_size;
    const tune_backend *be = plan->be ? plan->be : tune_backend_cpu();
    for (int other = 0; other < 2; other++)
        *(other ? &plan->mem_activations_other : &plan->mem_activations) = (long long)tune_workspace_bytes(
            be, m, (int)(L * plan->n_lora_targets), plan->lora_r, plan->lora_dropout > 0 ? (size_t)(L * lora_in) : 0,
            (int)B, (int)plan->sequence_len, plan->gradient_checkpointing != other);
    plan->mem_total = plan->mem_weights + plan->mem_lora + plan->mem_activations +
                      (plan->mem_runtime > 0 ? plan->mem_runtime : 0);
    plan->mem_device = be->device ? plan->mem_total : -1;
}

/* ---- paths ---- */

static char *absolute(const char *path)
{
    char *real = realpath(path, NULL);
    if (real) return real;
    if (path[0] == '/') return strdup(path);
    char cwd[4096];
    if (!getcwd(cwd, sizeof cwd)) return strdup(path);
    size_t n = strlen(cwd) + strlen(path) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", cwd, path);
    return p;
}

typedef struct pctx {
    const tune_config *cfg;
    tune_error_list *errs;
    tune_status status;
} pctx;

static void perr(pctx *c, const tune_origin *o, tune_status code, const char *fmt, const char *a, const char *b)
{
    tune_error e;
    tune_config_error_at(c->cfg, o, &e, fmt, a, b);
    e.code = code;
    tune_error_list_add(c->errs, &e);
    if (code > c->status) c->status = code;
}

/* Absolute form of a configured path; with must_exist, a missing path is an error at the key. */
static char *resolve(pctx *c, const char *key, const char *path, const tune_origin *o, int must_exist)
{
    if (!path) return NULL;
    char *abs = absolute(path);
    if (!abs) {
        perr(c, NULL, TUNE_ERR_RUN, "%s%s: out of memory", key, "");
        return NULL;
    }
    if (must_exist && !tune_path_exists(abs)) perr(c, o, TUNE_ERR_INPUT, "%s: '%s' does not exist", key, path);
    return abs;
}

static char **resolve_datasets(pctx *c, const char *key, const tune_dataset_config *ds, int n)
{
    char **paths = calloc((size_t)(n ? n : 1), sizeof *paths);
    if (!paths) {
        perr(c, NULL, TUNE_ERR_RUN, "%s%s: out of memory", key, "");
        return NULL;
    }
    for (int i = 0; i < n; i++) {
        if (!ds[i].path) continue; /* reported by tune_config_validate */
        char name[64];
        snprintf(name, sizeof name, "%s[%d].path", key, i);
        paths[i] = resolve(c, name, ds[i].path, tune_dataset_origin(&ds[i], "path"), 1);
    }
    return paths;
}

/* The LoRA ranks vLLM loads (its supported max_lora_rank values). */
static int vllm_rank(long r)
{
    static const long RANKS[] = {1, 8, 16, 32, 64, 128, 256, 320, 512};
    for (size_t i = 0; i < sizeof RANKS / sizeof RANKS[0]; i++)
        if (r == RANKS[i]) return 1;
    return 0;
}

static void plan_warnings(tune_plan *p, const tune_config *cfg)
{
    tune_error w;
    if (p->have_model && p->model.max_position_embeddings > 0 && p->sequence_len > p->model.max_position_embeddings) {
        tune_config_error_at(cfg, tune_config_origin(cfg, "sequence_len"), &w,
                             "sequence_len %ld is above the model's context length %d: positions past it were never "
                             "trained",
                             p->sequence_len, p->model.max_position_embeddings);
        tune_error_list_add(&p->warnings, &w);
    }
    if (!vllm_rank(cfg->lora_r)) {
        tune_config_error_at(cfg, tune_config_origin(cfg, "lora_r"), &w,
                             "lora_r %ld: vLLM loads only r in {1, 8, 16, 32, 64, 128, 256, 320, 512}", cfg->lora_r);
        tune_error_list_add(&p->warnings, &w);
    }
}

tune_status tune_plan_init(tune_plan *p, const tune_config *cfg, tune_error_list *errs)
{
    memset(p, 0, sizeof *p);
    pctx c = {cfg, errs, TUNE_OK};
    const char *model_cfg = cfg->base_model_config ? cfg->base_model_config : cfg->base_model;
    const char *tok = cfg->tokenizer_config ? cfg->tokenizer_config : cfg->base_model;
    p->base_model = resolve(&c, "base_model", cfg->base_model, tune_config_origin(cfg, "base_model"), 1);
    p->model_config_path = resolve(&c, cfg->base_model_config ? "base_model_config" : "base_model", model_cfg,
                                   tune_config_origin(cfg, cfg->base_model_config ? "base_model_config" : "base_model"),
                                   cfg->base_model_config != NULL);
    p->tokenizer_path = resolve(&c, cfg->tokenizer_config ? "tokenizer_config" : "base_model", tok,
                                tune_config_origin(cfg, cfg->tokenizer_config ? "tokenizer_config" : "base_model"),
                                cfg->tokenizer_config != NULL);
    p->output_dir = resolve(&c, "output_dir", cfg->output_dir, NULL, 0);
    if (cfg->dataset_prepared_path) {
        p->prepared_dir = resolve(&c, "dataset_prepared_path", cfg->dataset_prepared_path, NULL, 0);
    } else if (p->output_dir) {
        size_t n = strlen(p->output_dir) + sizeof "/prepared";
        if ((p->prepared_dir = malloc(n))) snprintf(p->prepared_dir, n, "%s/prepared", p->output_dir);
    }
    if (cfg->resume_from_checkpoint)
        free(resolve(&c, "resume_from_checkpoint", cfg->resume_from_checkpoint,
                     tune_config_origin(cfg, "resume_from_checkpoint"), 1));
    p->train_paths = resolve_datasets(&c, "datasets", cfg->datasets, cfg->datasets_count);
    p->n_train_paths = p->train_paths ? cfg->datasets_count : 0;
    p->eval_paths = resolve_datasets(&c, "test_datasets", cfg->test_datasets, cfg->test_datasets_count);
    p->n_eval_paths = p->eval_paths ? cfg->test_datasets_count : 0;

    p->lora_r = (int)cfg->lora_r;
    p->lora_alpha = cfg->lora_alpha;
    p->lora_dropout = cfg->lora_dropout;
    p->use_rslora = cfg->peft_use_rslora;
    p->lora_scaling = cfg->peft_use_rslora ? cfg->lora_alpha / sqrt((double)cfg->lora_r)
                                           : cfg->lora_alpha / (double)cfg->lora_r;
    for (int k = 0; k < TUNE_N_LINEAR; k++) {
        int on = cfg->lora_target_linear;
        for (int i = 0; i < cfg->lora_target_modules_count; i++) on |= !strcmp(cfg->lora_target_modules[i], tune_linear_names[k]);
        if (on) p->lora_target_mask |= 1u << k, p->n_lora_targets++;
    }
    for (int i = 0; i < cfg->lora_modules_to_save_count; i++) /* the schema allows only these two */
        p->lora_saved |= !strcmp(cfg->lora_modules_to_save[i], "embed_tokens") ? TUNE_SAVE_EMBED : TUNE_SAVE_LM_HEAD;
    p->n_lora_params = -1;
    p->n_train_tokens = TUNE_PLAN_UNKNOWN;
    p->mem_weights = p->mem_weights_f32 = p->mem_weights_stored = p->mem_lora = p->mem_activations = p->mem_total = -1;
    p->mem_runtime = -1;
    p->weight_storage = cfg->load_in_8bit                                     ? TUNE_STORE_INT8
                        : cfg->load_in_4bit && cfg->bnb_4bit_use_double_quant ? TUNE_STORE_NF4_DQ
                        : cfg->load_in_4bit                                   ? TUNE_STORE_NF4
                                                                              : TUNE_STORE_FILE;

    p->has_eval = cfg->test_datasets_count > 0 || cfg->val_set_size > 0;
    p->micro_batch_size = cfg->micro_batch_size;
    p->gradient_accumulation_steps = cfg->gradient_accumulation_steps;
    p->ranks = 1;
    p->eval_batch_size = cfg->eval_batch_size > 0 ? cfg->eval_batch_size : cfg->micro_batch_size;
    p->sequence_len = cfg->sequence_len;
    p->sample_packing = cfg->sample_packing;
    p->pad_to_sequence_len = cfg->pad_to_sequence_len;
    p->n_train_unpacked = TUNE_PLAN_UNKNOWN;
    p->num_epochs = cfg->num_epochs;
    p->max_steps = cfg->max_steps;
    p->logging_steps = cfg->logging_steps;
    p->warmup_ratio = cfg->warmup_ratio;
    p->cfg_warmup_steps = cfg->warmup_steps;
    p->save_steps = cfg->save_steps;
    p->saves_per_epoch = cfg->saves_per_epoch;
    p->eval_steps = cfg->eval_steps;
    p->evals_per_epoch = cfg->evals_per_epoch;
    p->schedule.kind = cfg->lr_scheduler;
    p->schedule.lr = cfg->learning_rate;
    p->schedule.min_lr_ratio = cfg->lr_scheduler == TUNE_LR_COSINE ? cfg->cosine_min_lr_ratio : 0.0;

    p->adam_beta1 = cfg->adam_beta1;
    p->adam_beta2 = cfg->adam_beta2;
    p->adam_epsilon = cfg->adam_epsilon;
    p->weight_decay = cfg->weight_decay;
    p->max_grad_norm = cfg->max_grad_norm;
    p->gradient_checkpointing = cfg->gradient_checkpointing;
    p->loss_watchdog_threshold = cfg->loss_watchdog_threshold;
    p->loss_watchdog_patience = cfg->loss_watchdog_patience;
    p->early_stopping_patience = cfg->early_stopping_patience > 0 ? cfg->early_stopping_patience : 0;
    p->save_total_limit = cfg->save_total_limit > 0 ? (int)cfg->save_total_limit : 0;
    p->resume_from_checkpoint = cfg->resume_from_checkpoint;
    p->auto_resume = cfg->auto_resume_from_checkpoints;
    p->base_model_name = cfg->base_model;
    p->lora_target_names = (const char *const *)cfg->lora_target_modules;
    p->n_lora_target_names = cfg->lora_target_modules_count;
    p->n_added_tokens_asked = cfg->tokens_count;
    p->backend = cfg->backend;
    p->device_free = -1;
    {
        tune_error e;
        if (tune_backend_select(cfg->backend, &p->be, p->backend_reason, sizeof p->backend_reason, &e)) {
            perr(&c, tune_config_origin(cfg, "backend"), TUNE_ERR_INPUT, "%s%s", e.message, "");
            p->be = tune_backend_cpu(); /* the rest of the plan still shows */
            snprintf(p->backend_reason, sizeof p->backend_reason, "refused: %.360s", e.message);
        }
        size_t free_b, total_b;
        p->be->memory(&free_b, &total_b);
        if (p->be->device) p->device_free = (long long)free_b;
    }
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    p->threads = cfg->threads > 0 ? (int)cfg->threads : (int)(cores > 0 ? cores : 1);
    p->seed = cfg->seed;

    tune_plan_set_examples(p, TUNE_PLAN_UNKNOWN, p->has_eval ? TUNE_PLAN_UNKNOWN : 0);
    /* Model dimensions from the header alone (config.json or the GGUF metadata). */
    if (p->model_config_path && tune_path_exists(p->model_config_path)) {
        tune_model_config m;
        tune_error e;
        size_t stored;
        if (tune_model_config_load(p->model_config_path, &m, &e) == TUNE_OK) {
            /* The storage from the weights' own headers, where they are readable here. */
            if (p->base_model && tune_path_exists(p->base_model) &&
                tune_model_stored_bytes(p->base_model, p->weight_storage, &stored, &e) == TUNE_OK)
                p->mem_weights_stored = (long long)stored;
            tune_plan_set_model(p, &m);
        } else {
            tune_error_list_add(errs, &e);
            if (e.code > c.status) c.status = e.code;
        }
    }
    plan_warnings(p, cfg);
    if (!p->base_model || !p->model_config_path || !p->tokenizer_path || !p->output_dir || !p->prepared_dir) {
        tune_error e;
        tune_error_set(&e, TUNE_ERR_RUN, NULL, 0, 0, "out of memory while planning");
        tune_error_list_add(errs, &e);
        c.status = TUNE_ERR_RUN;
    }
    return c.status;
}

static void free_paths(char **paths, int n)
{
    for (int i = 0; paths && i < n; i++) free(paths[i]);
    free(paths);
}

void tune_plan_train_options(const tune_plan *p, tune_train_options *o)
{
    memset(o, 0, sizeof *o);
    o->backend = p->be;
    o->device_bytes = p->mem_device;
    o->output_dir = p->output_dir;
    o->total_steps = p->total_steps;
    o->parallel = p->parallel;
    o->gradient_accumulation_steps = (int)(p->gradient_accumulation_steps * p->ranks);
    o->adam_beta1 = p->adam_beta1;
    o->adam_beta2 = p->adam_beta2;
    o->adam_epsilon = p->adam_epsilon;
    o->weight_decay = p->weight_decay;
    o->max_grad_norm = p->max_grad_norm;
    o->gradient_checkpointing = p->gradient_checkpointing;
    o->seed = (uint64_t)p->seed;
    o->loss_watchdog_threshold = p->loss_watchdog_threshold;
    o->loss_watchdog_patience = p->loss_watchdog_patience;
    o->early_stopping_patience = p->early_stopping_patience;
    o->logging_steps = p->logging_steps;
    o->eval_steps = p->eval_every;
    o->save_steps = p->save_every;
    o->save_total_limit = p->save_total_limit;
    o->resume_from_checkpoint = p->resume_from_checkpoint;
    o->auto_resume = p->auto_resume;
    o->base_model_name_or_path = p->base_model_name;
}

void tune_plan_free(tune_plan *p)
{
    free(p->base_model);
    free(p->model_config_path);
    free(p->tokenizer_path);
    free(p->output_dir);
    free(p->prepared_dir);
    free_paths(p->train_paths, p->n_train_paths);
    free_paths(p->eval_paths, p->n_eval_paths);
    tune_error_list_free(&p->warnings);
    memset(p, 0, sizeof *p);
}


/* ---- output ---- */

static void put_count(tune_strbuf *sb, long long n)
{
    char digits[32], out[48];
    snprintf(digits, sizeof digits, "%lld", n);
    size_t len = strlen(digits), j = 0;
    for (size_t i = 0; i < len; i++) {
        if (i && (len - i) % 3 == 0) out[j++] = ',';
        out[j++] = digits[i];
    }
    out[j] = '\0';
    tune_strbuf_puts(sb, out);
}

static void put_bytes(tune_strbuf *sb, long long n)
{
    if (n >= (1LL << 30))
        tune_strbuf_printf(sb, "%.2f GiB", (double)n / (double)(1LL << 30));
    else
        tune_strbuf_printf(sb, "%.1f MiB", (double)n / (double)(1LL << 20));
}

static void put_steps(tune_strbuf *sb, long n)
{
    if (n < 0)
        tune_strbuf_puts(sb, "unknown until the data stage");
    else
        put_count(sb, n);
}

tune_status tune_plan_format(const tune_plan *p, tune_strbuf *sb)
{
    tune_strbuf_printf(sb, "model        %s\n", p->base_model);
    if (p->have_model) {
        const tune_model_config *m = &p->model;
        tune_strbuf_printf(sb, "             %d layers, hidden %d, intermediate %d, heads %d (kv %d, dim %d), vocab %d\n",
                           m->num_hidden_layers, m->hidden_size, m->intermediate_size, m->num_attention_heads,
                           m->num_key_value_heads, m->head_dim, m->vocab_size);
        tune_strbuf_puts(sb, "             ");
        put_count(sb, p->n_model_params);
        tune_strbuf_puts(sb, " parameters\n");
    } else {
        tune_strbuf_puts(sb, "             dimensions not read\n");
    }
    tune_strbuf_printf(sb, "tokenizer    %s\n", p->tokenizer_path);
    tune_strbuf_printf(sb, "lora         r %d, alpha %g (scaling %g%s), dropout %g\n             targets", p->lora_r,
                       p->lora_alpha, p->lora_scaling, p->use_rslora ? ", rslora" : "", p->lora_dropout);
    for (int k = 0; k < TUNE_N_LINEAR; k++)
        if (p->lora_target_mask & (1u << k)) tune_strbuf_printf(sb, " %s", tune_linear_names[k]);
    if (p->lora_saved) /* trained in full, at the vocabulary grown by added tokens */
        tune_strbuf_printf(sb, "\n             modules_to_save%s%s (vocabulary %d)",
                           p->lora_saved & TUNE_SAVE_EMBED ? " embed_tokens" : "",
                           p->lora_saved & TUNE_SAVE_LM_HEAD ? " lm_head" : "", p->vocab_size);
    tune_strbuf_puts(sb, "\n             trainable parameters: ");
    if (p->n_lora_params >= 0) {
        put_count(sb, p->n_lora_params);
        if (p->n_model_params > 0)
            tune_strbuf_printf(sb, " (%.3f%% of the model)", 100.0 * (double)p->n_lora_params / (double)p->n_model_params);
    } else {
        tune_strbuf_puts(sb, "unknown without the model dimensions");
    }
    tune_strbuf_puts(sb, "\n");
    for (int i = 0; i < p->n_train_paths; i++) tune_strbuf_printf(sb, "train data   %s\n", p->train_paths[i]);
    for (int i = 0; i < p->n_eval_paths; i++) tune_strbuf_printf(sb, "eval data    %s\n", p->eval_paths[i]);
    tune_strbuf_puts(sb, "examples     train ");
    put_steps(sb, p->n_train_examples);
    if (p->sample_packing && p->n_train_unpacked >= 0) {
        tune_strbuf_puts(sb, " packed rows (from ");
        put_count(sb, p->n_train_unpacked);
        tune_strbuf_puts(sb, " examples)");
    }
    tune_strbuf_puts(sb, ", eval ");
    if (p->has_eval) put_steps(sb, p->n_eval_examples);
    else tune_strbuf_puts(sb, "none");
    tune_strbuf_puts(sb, "; train tokens per epoch ");
    if (p->n_train_tokens >= 0) put_count(sb, p->n_train_tokens);
    else tune_strbuf_puts(sb, "unknown until the data stage");
    tune_strbuf_printf(sb, "\nbatch        %ld sequences x %ld accumulation", p->micro_batch_size,
                       p->gradient_accumulation_steps);
    if (p->ranks > 1)
        tune_strbuf_printf(sb, " = %ld per rank, x %d ranks", p->micro_batch_size * p->gradient_accumulation_steps,
                           p->ranks);
    tune_strbuf_printf(sb, " = %ld sequences of up to %ld tokens per step\n",
                       p->micro_batch_size * p->gradient_accumulation_steps * p->ranks, p->sequence_len);
    tune_strbuf_puts(sb, "steps        per epoch ");
    put_steps(sb, p->steps_per_epoch);
    tune_strbuf_puts(sb, "; total ");
    put_steps(sb, p->total_steps);
    if (p->max_steps > 0) tune_strbuf_puts(sb, " (max_steps)");
    else tune_strbuf_printf(sb, " (num_epochs %g)", p->num_epochs);
    tune_strbuf_puts(sb, "; warmup ");
    put_steps(sb, p->warmup_steps);
    tune_strbuf_printf(sb, "\n             log every %ld; save every ", p->logging_steps);
    put_steps(sb, p->save_every);
    tune_strbuf_puts(sb, "; evaluate ");
    if (!p->eval_every) tune_strbuf_puts(sb, "never (no eval data)");
    else {
        tune_strbuf_puts(sb, "every ");
        put_steps(sb, p->eval_every);
    }
    tune_strbuf_printf(sb, "\nschedule     %s, peak lr %g", tune_config_enum_name("lr_scheduler", (int)p->schedule.kind), p->schedule.lr);
    if (p->schedule.kind == TUNE_LR_COSINE && p->schedule.min_lr_ratio > 0)
        tune_strbuf_printf(sb, ", floor %g x lr", p->schedule.min_lr_ratio);
    if (p->total_steps > 0) {
        long last = p->total_steps - 1, mid = p->total_steps / 2;
        tune_strbuf_printf(sb, "; lr at step 0: %g, %ld: %g, %ld: %g", tune_schedule_lr(&p->schedule, 0), mid,
                           tune_schedule_lr(&p->schedule, mid), last, tune_schedule_lr(&p->schedule, last));
    }
    tune_strbuf_puts(sb, "\nmemory       ");
    if (p->mem_total >= 0) {
        tune_strbuf_puts(sb, "about ");
        put_bytes(sb, p->mem_total);
        tune_strbuf_puts(sb, ": weights ");
        put_bytes(sb, p->mem_weights);
        if (p->mem_weights != p->mem_weights_f32) {
            tune_strbuf_printf(sb, " (%s; fp32: ", tune_storage_name(p->weight_storage));
            put_bytes(sb, p->mem_weights_f32);
            tune_strbuf_puts(sb, ")");
        }
        tune_strbuf_puts(sb, ", LoRA + grads + AdamW ");
        put_bytes(sb, p->mem_lora);
        tune_strbuf_puts(sb, ", activations ");
        put_bytes(sb, p->mem_activations);
        tune_strbuf_printf(sb, " (%s gradient_checkpointing: ", p->gradient_checkpointing ? "without" : "with");
        put_bytes(sb, p->mem_activations_other);
        tune_strbuf_puts(sb, ")");
        if (p->mem_runtime > 0) {
            tune_strbuf_puts(sb, ", process with tokenizer and data ");
            put_bytes(sb, p->mem_runtime);
        }
    } else {
        tune_strbuf_puts(sb, "unknown without the model dimensions");
    }
    if (p->mem_device >= 0) {
        tune_strbuf_puts(sb, "\ndevice mem   about ");
        put_bytes(sb, p->mem_device);
        tune_strbuf_puts(sb, " on the GPU (weights, LoRA state, workspace); free now ");
        put_bytes(sb, p->device_free);
    }
    tune_strbuf_printf(sb, "\noutput       %s\nprepared     %s\nmachine      %s, %d threads, seed %ld\n"
                       "             %s\n", p->output_dir, p->prepared_dir, p->be->name, p->threads, p->seed,
                       p->backend_reason);
    if (p->data_prepared < 0) {
        char line[2048];
        tune_error_format(&p->data_error, line, sizeof line);
        tune_strbuf_printf(sb, "\ndata         not prepared, so the counts above are unknown:\n             %s\n", line);
    }
    for (int i = 0; i < p->warnings.count; i++) {
        char line[2048];
        tune_error_format(&p->warnings.items[i], line, sizeof line);
        tune_strbuf_printf(sb, "%s%s\n", i ? "             " : "\nwarnings     ", line);
    }
    return sb->oom ? TUNE_ERR_RUN : TUNE_OK;
}

/* A count, or null while unknown. */
static void json_count(cJSON *o, const char *name, long long n)
{
    if (n < 0) cJSON_AddNullToObject(o, name);
    else cJSON_AddNumberToObject(o, name, (double)n);
}

static cJSON *json_paths(char **paths, int n)
{
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; a && i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateString(paths[i]));
    return a;
}

tune_status tune_plan_to_json(const tune_plan *p, char **json, tune_error *err)
{
    cJSON *o = cJSON_CreateObject();
    if (!o) return tune_fail_run(err, NULL, "out of memory");
    cJSON *paths = cJSON_AddObjectToObject(o, "paths");
    if (paths) {
        cJSON_AddStringToObject(paths, "base_model", p->base_model);
        cJSON_AddStringToObject(paths, "model_config", p->model_config_path);
        cJSON_AddStringToObject(paths, "tokenizer", p->tokenizer_path);
        cJSON_AddStringToObject(paths, "output_dir", p->output_dir);
        cJSON_AddStringToObject(paths, "prepared_dir", p->prepared_dir);
        cJSON_AddItemToObject(paths, "train", json_paths(p->train_paths, p->n_train_paths));
        cJSON_AddItemToObject(paths, "eval", json_paths(p->eval_paths, p->n_eval_paths));
    }
    cJSON *model = cJSON_AddObjectToObject(o, "model");
    if (model) {
        cJSON_AddBoolToObject(model, "read", p->have_model);
        if (p->have_model) {
            cJSON_AddNumberToObject(model, "num_hidden_layers", p->model.num_hidden_layers);
            cJSON_AddNumberToObject(model, "hidden_size", p->model.hidden_size);
            cJSON_AddNumberToObject(model, "intermediate_size", p->model.intermediate_size);
            cJSON_AddNumberToObject(model, "num_attention_heads", p->model.num_attention_heads);
            cJSON_AddNumberToObject(model, "num_key_value_heads", p->model.num_key_value_heads);
            cJSON_AddNumberToObject(model, "head_dim", p->model.head_dim);
            cJSON_AddNumberToObject(model, "vocab_size", p->model.vocab_size);
            cJSON_AddNumberToObject(model, "parameters", (double)p->n_model_params);
        }
    }
    cJSON *lora = cJSON_AddObjectToObject(o, "lora");
    if (lora) {
        cJSON_AddNumberToObject(lora, "r", p->lora_r);
        cJSON_AddNumberToObject(lora, "alpha", p->lora_alpha);
        cJSON_AddNumberToObject(lora, "scaling", p->lora_scaling);
        cJSON_AddNumberToObject(lora, "dropout", p->lora_dropout);
        cJSON_AddBoolToObject(lora, "use_rslora", p->use_rslora);
        cJSON *t = cJSON_AddArrayToObject(lora, "target_modules");
        for (int k = 0; t && k < TUNE_N_LINEAR; k++)
            if (p->lora_target_mask & (1u << k)) cJSON_AddItemToArray(t, cJSON_CreateString(tune_linear_names[k]));
        cJSON *saved = cJSON_AddArrayToObject(lora, "modules_to_save");
        if (saved && p->lora_saved & TUNE_SAVE_EMBED) cJSON_AddItemToArray(saved, cJSON_CreateString("embed_tokens"));
        if (saved && p->lora_saved & TUNE_SAVE_LM_HEAD) cJSON_AddItemToArray(saved, cJSON_CreateString("lm_head"));
        if (p->vocab_size > 0) cJSON_AddNumberToObject(lora, "vocab_size", p->vocab_size);
        json_count(lora, "trainable_parameters", p->n_lora_params);
    }
    cJSON *steps = cJSON_AddObjectToObject(o, "steps");
    if (steps) {
        json_count(steps, "train_examples", p->n_train_examples);
        json_count(steps, "train_examples_unpacked", p->n_train_unpacked);
        cJSON_AddBoolToObject(steps, "sample_packing", p->sample_packing);
        json_count(steps, "eval_examples", p->n_eval_examples);
        json_count(steps, "train_tokens", p->n_train_tokens);
        cJSON_AddNumberToObject(steps, "micro_batch_size", (double)p->micro_batch_size);
        cJSON_AddNumberToObject(steps, "gradient_accumulation_steps", (double)p->gradient_accumulation_steps);
        cJSON_AddNumberToObject(steps, "ranks", p->ranks);
        cJSON_AddNumberToObject(steps, "batch_per_rank", (double)(p->micro_batch_size * p->gradient_accumulation_steps));
        cJSON_AddNumberToObject(steps, "global_batch",
                                (double)(p->micro_batch_size * p->gradient_accumulation_steps * p->ranks));
        cJSON_AddNumberToObject(steps, "eval_batch_size", (double)p->eval_batch_size);
        cJSON_AddNumberToObject(steps, "sequence_len", (double)p->sequence_len);
        cJSON_AddNumberToObject(steps, "num_epochs", p->num_epochs);
        json_count(steps, "max_steps", p->max_steps);
        json_count(steps, "micro_batches_per_epoch", p->micro_batches_per_epoch);
        json_count(steps, "steps_per_epoch", p->steps_per_epoch);
        json_count(steps, "total_steps", p->total_steps);
        json_count(steps, "warmup_steps", p->warmup_steps);
        cJSON_AddNumberToObject(steps, "logging_steps", (double)p->logging_steps);
        json_count(steps, "save_every", p->save_every);
        json_count(steps, "eval_every", p->eval_every);
    }
    cJSON *sched = cJSON_AddObjectToObject(o, "schedule");
    if (sched) {
        cJSON_AddStringToObject(sched, "kind", tune_config_enum_name("lr_scheduler", (int)p->schedule.kind));
        cJSON_AddNumberToObject(sched, "learning_rate", p->schedule.lr);
        cJSON_AddNumberToObject(sched, "min_lr_ratio", p->schedule.min_lr_ratio);
        json_count(sched, "warmup_steps", p->schedule.warmup_steps);
        json_count(sched, "total_steps", p->schedule.total_steps);
    }
    cJSON *mem = cJSON_AddObjectToObject(o, "memory_bytes");
    if (mem) {
        json_count(mem, "weights", p->mem_weights);
        json_count(mem, "weights_fp32", p->mem_weights_f32);
        cJSON_AddStringToObject(mem, "weight_storage", tune_storage_name(p->weight_storage));
        json_count(mem, "lora_with_grads_and_adamw", p->mem_lora);
        json_count(mem, "activations", p->mem_activations);
        json_count(mem, p->gradient_checkpointing ? "activations_without_checkpointing" : "activations_with_checkpointing",
                   p->mem_activations_other);
        json_count(mem, "process_with_data", p->mem_runtime);
        json_count(mem, "total", p->mem_total);
    }
    cJSON_AddStringToObject(o, "backend", p->be->name);
    cJSON_AddStringToObject(o, "backend_reason", p->backend_reason);
    if (p->mem_device >= 0) {
        json_count(o, "device_memory_bytes", p->mem_device);
        json_count(o, "device_free_bytes", p->device_free);
    }
    cJSON_AddNumberToObject(o, "threads", p->threads);
    cJSON_AddNumberToObject(o, "seed", (double)p->seed);
    if (p->data_prepared < 0) {
        char line[2048];
        tune_error_format(&p->data_error, line, sizeof line);
        cJSON_AddStringToObject(o, "data_error", line);
    }
    cJSON *warn = cJSON_AddArrayToObject(o, "warnings");
    for (int i = 0; warn && i < p->warnings.count; i++) {
        char line[2048];
        tune_error_format(&p->warnings.items[i], line, sizeof line);
        cJSON_AddItemToArray(warn, cJSON_CreateString(line));
    }
    *json = cJSON_Print(o);
    cJSON_Delete(o);
    if (!*json) return tune_fail_run(err, NULL, "out of memory");
    return TUNE_OK;
}
