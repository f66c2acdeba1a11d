/* Trains the LoRA adapter of tests/data/smollm2/adapter with tune's own
 * training loop on the real default model, for make_smollm2_golden.py
 * --train-adapter (which builds and runs this program; PEFT then loads the
 * result and its logits become the golden the real-model test compares
 * tune's against).
 *
 *   train_smollm2_adapter MODEL.gguf GOLDEN.safetensors OUT_DIR
 *
 * Data: the four golden sequences (prompt + greedy continuation, "P.input_ids"
 * then "P.greedy_ids" of GOLDEN), one per micro-batch, every token trained.
 * LoRA r 2, alpha 4, on q_proj, v_proj and down_proj (attention, the narrower
 * GQA value projection and the MLP; r 2 so that a transposed A or B cannot
 * pass unnoticed, and small enough to commit), initialised from Philox seed
 * 7. AdamW lr 2e-3 (constant), betas (0.9, 0.999), eps 1e-8, weight decay
 * 0.01, clipping at 1.0, 2 micro-batches per step, 8 steps: enough to move
 * the logits by several units. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tune/llama.h"
#include "tune/lora.h"
#include "tune/safetensors.h"
#include "tune/train.h"

#define N_SEQ 4
#define MAX_T 128
#define STEPS 8

static const char *const PROMPTS[N_SEQ] = {"excel_ko", "excel_en", "english", "code"};

typedef struct sequences {
    int32_t ids[N_SEQ][MAX_T]; /* (N_SEQ, MAX_T); labels are the ids themselves */
    int n[N_SEQ];
} sequences;

static long count(void *ctx, int epoch, tune_error *err)
{
    (void)ctx, (void)epoch, (void)err;
    return N_SEQ;
}

static tune_status get(void *ctx, int epoch, long index, tune_batch *batch, tune_error *err)
{
    (void)epoch, (void)err;
    const sequences *s = ctx;
    *batch = (tune_batch){.B = 1, .T = s->n[index], .input_ids = s->ids[index], .labels = s->ids[index]};
    return TUNE_OK;
}

/* Appends golden tensor "<prompt>.<what>" to seq (n ids so far). */
static tune_status append(const tune_st_file *f, const char *prompt, const char *what, int32_t *seq, int *n,
                          tune_error *err)
{
    char name[64];
    snprintf(name, sizeof name, "%s.%s", prompt, what);
    const tune_st_tensor *t = tune_st_find(f, name);
    if (!t) return tune_fail_input(err, NULL, "golden file: no tensor %s", name);
    if (t->numel > (size_t)(MAX_T - *n)) return tune_fail_input(err, NULL, "%s: too long", name);
    tune_status st = tune_st_read_i32(t, seq + *n, err);
    *n += (int)t->numel;
    return st;
}

static tune_status run(const char *model_path, const char *golden_path, const char *out, tune_error *err)
{
    static sequences seqs;
    tune_st_file *golden = NULL;
    tune_status st = tune_st_open(golden_path, &golden, err);
    for (int i = 0; i < N_SEQ && st == TUNE_OK; i++) {
        st = append(golden, PROMPTS[i], "input_ids", seqs.ids[i], &seqs.n[i], err);
        if (st == TUNE_OK) st = append(golden, PROMPTS[i], "greedy_ids", seqs.ids[i], &seqs.n[i], err);
    }
    tune_st_close(golden);
    if (st) return st;

    tune_model model;
    if ((st = tune_model_load(model_path, &model, err))) return st;
    const tune_lora_config lc = {.r = 2, .alpha = 4.0f, .dropout = 0.0f, .use_rslora = 0,
                                 .target_mask = 1u << TUNE_Q_PROJ | 1u << TUNE_V_PROJ | 1u << TUNE_DOWN_PROJ};
    tune_lora *lora = NULL;
    st = tune_lora_create(&model.cfg, &lc, NULL, 7, &lora, err);
    if (st == TUNE_OK) {
        double lr[STEPS];
        for (int i = 0; i < STEPS; i++) lr[i] = 2e-3;
        const tune_batch_source src = {.ctx = &seqs, .max_B = 1, .max_T = MAX_T, .count = count, .get = get};
        const tune_train_options o = {
            .output_dir = out, .total_steps = STEPS, .lr = lr, .gradient_accumulation_steps = 2,
            .adam_beta1 = 0.9, .adam_beta2 = 0.999, .adam_epsilon = 1e-8, .weight_decay = 0.01,
            .max_grad_norm = 1.0, .seed = 42, .logging_steps = 1,
            .base_model_name_or_path = "SmolLM2-135M-Instruct.Q4_1.gguf", .tune_version = "reference"};
        st = tune_train_run(&o, &src, NULL, &model, lora, err);
    }
    tune_lora_free(lora);
    tune_model_free(&model);
    return st;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: train_smollm2_adapter MODEL.gguf GOLDEN.safetensors OUT_DIR\n");
        return 2;
    }
    tune_error err = {0};
    const tune_status st = run(argv[1], argv[2], argv[3], &err);
    if (st) {
        tune_error_print(stderr, &err);
        return (int)st;
    }
    printf("wrote %s\n", argv[3]);
    return 0;
}
