/* The LLaMA forward and backward passes in fp32, with optional LoRA
 * adapters. The base weights are frozen: backward produces gradients for the
 * LoRA parameters and the adapters' saved embed_tokens/lm_head copies only. */
#ifndef TUNE_LLAMA_H
#define TUNE_LLAMA_H

#include <stdint.h>

#include "tune/backend.h"
#include "tune/error.h"
#include "tune/lora.h"
#include "tune/model.h"

#define TUNE_IGNORE_INDEX (-100)

/* One micro-batch. Labels follow Hugging Face: logits[b, t] is scored
 * against labels[b, t + 1]; TUNE_IGNORE_INDEX is not trained. */
typedef struct tune_batch {
    int B, T;
    const int32_t *input_ids;    /* (B, T) */
    const int32_t *labels;       /* (B, T) */
    const int32_t *position_ids; /* (B, T), or NULL for 0..T-1 in every row */
    const int32_t *segment_ids;  /* (B, T), or NULL. Packed examples: attention and the
                                    loss never cross a change of segment id */
} tune_batch;

/* LoRA dropout for one micro-batch. Masks are drawn from Philox at
 * addresses derived from (seed, micro_batch, module, element), so they do not
 * depend on threads or backend: element e of module m's input keeps when the
 * word (seed, TUNE_STREAM_DROPOUT + (micro_batch << 32), (m << 40) + e) as a
 * uniform is above p. micro_batch < 2^32. p = 0 disables dropout (evaluation). */
typedef struct tune_dropout {
    float p;
    uint64_t seed;
    uint64_t micro_batch; /* global index of this micro-batch in the run */
} tune_dropout;

/* RoPE inverse frequencies as Transformers computes them in fp32, llama3
 * rescaling included (also used by the incremental decoder).
 * inv_freq: (head_dim / 2) */
void tune_rope_inv_freq(const tune_model_config *cfg, float *inv_freq);

/* Activations kept between forward and backward, sized once for batches of
 * up to B rows of up to T tokens: forward and backward allocate nothing.
 * They live where backend be computes, and the passes run there: the model
 * and adapters handed to them must be be's (tune_backend_model,
 * tune_backend_lora; on the CPU the host ones are).
 * lora: the adapters it will run with (NULL: the base model only); when
 * lora->cfg.dropout > 0 it also keeps the dropout masks (1 bit per LoRA
 * input element). checkpoint (gradient_checkpointing) keeps only each
 * layer's input; the backward recomputes the rest layer by layer, giving
 * the same gradients bit for bit for about a third more compute. */
typedef struct tune_workspace tune_workspace;

tune_status tune_workspace_create(const tune_backend *be, const tune_model_config *cfg, const tune_lora *lora,
                                  int B, int T, int checkpoint, tune_workspace **ws, tune_error *err);
void tune_workspace_free(tune_workspace *ws);
/* Bytes of backend memory a workspace for these shapes takes: n_modules
 * adapters of rank r whose inputs have dropout_in elements per token in all
 * (0 without dropout). The plan's device estimate comes from here. */
size_t tune_workspace_bytes(const tune_backend *be, const tune_model_config *cfg, int n_modules, int r,
                            size_t dropout_in, int B, int T, int checkpoint);
/* The same bytes buffer by buffer, named as the workspace's fields ("resid",
 * "q", "logits", ...; then "batch" and "dropout_masks"), in the order of
 * the one allocation. tune_workspace_bytes is their sum. */
typedef struct tune_buffer_bytes {
    const char *name;
    size_t bytes;
} tune_buffer_bytes;
#define TUNE_WORKSPACE_BUFFERS 39
void tune_workspace_buffers(const tune_backend *be, const tune_model_config *cfg, int n_modules, int r,
                            size_t dropout_in, int B, int T, int checkpoint,
                            tune_buffer_bytes list[TUNE_WORKSPACE_BUFFERS]);
/* The workspace keeps a running sum of the losses of the forward passes
 * run with loss_sum NULL (on a device it stays there: reading it is the one
 * download a training step needs). Reset sets it to 0; loss reads it. */
void tune_workspace_reset_loss(tune_workspace *ws);
tune_status tune_workspace_loss(const tune_workspace *ws, double *loss_sum, tune_error *err);

/* Forward pass. *loss_sum is the summed cross-entropy over trained targets
 * and *n_targets their count (the mean loss is their quotient). With
 * loss_sum NULL the loss is added to the workspace's running sum instead
 * (tune_workspace_loss). lora and dropout may be NULL. Logits exist only for
 * the rows with a target, a bounded chunk of rows at a time.
 * grad_scale 0 evaluates. grad_scale > 0 is a training forward (lora
 * needed): it also forms grad_scale · d(loss_sum)/d(final hidden state),
 * where the backward (tune_llama_backward) starts, and adds the gradient of
 * the adapters' lm_head copy (modules_to_save) into lora->grads. grad_scale
 * is 1 / (trained targets in the whole optimizer step), so micro-batches of
 * an accumulation add up to the gradient of the step's mean loss. */
tune_status tune_llama_forward(const tune_model *model, const tune_lora *lora, const tune_batch *batch,
                               const tune_dropout *dropout, float grad_scale, tune_workspace *ws, double *loss_sum,
                               long *n_targets, tune_error *err);

/* Every logit of the batch, for checks against a reference: a forward
 * without dropout, then logits: (B, T, V), a backend buffer of the
 * workspace's backend. No backward may follow. */
tune_status tune_llama_logits(const tune_model *model, const tune_lora *lora, const tune_batch *batch,
                              tune_workspace *ws, float *logits, tune_error *err);

/* Backward pass of the last training forward (same batch, lora and
 * dropout; once per forward): accumulates (+=) its grad_scale ·
 * d(loss_sum)/d(params) into lora->grads. */
tune_status tune_llama_backward(const tune_model *model, tune_lora *lora, const tune_batch *batch,
                                const tune_dropout *dropout, tune_workspace *ws, tune_error *err);

#endif
