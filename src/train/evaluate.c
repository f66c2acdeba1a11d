/* Evaluation: the mean loss over a batch source, shared by the training
 * loop (eval_loss) and `tune eval`, so both report the same figure. */
#include "internal.h"

tune_status train_get_batch(const tune_batch_source *src, const char *what, int epoch, long index, tune_batch *b,
                            tune_error *err)
{
    tune_status st = src->get(src->ctx, epoch, index, b, err);
    if (st) return st;
    if (b->B < 1 || b->T < 1 || b->B > src->max_B || b->T > src->max_T || !b->input_ids || !b->labels)
        return tune_fail_run(err, NULL, "%s micro-batch %ld of epoch %d is %d x %d, outside 1..%d x 1..%d", what,
                             index, epoch, b->B, b->T, src->max_B, src->max_T);
    return TUNE_OK;
}

tune_status tune_evaluate_on(const tune_backend *be, const tune_model *model, tune_lora *lora,
                             const tune_batch_source *eval, double *loss, long *n_targets, tune_error *err)
{
    tune_model dmodel;
    tune_lora dlora;
    tune_workspace *ws = NULL;
    tune_status st = tune_backend_model(be, model, &dmodel, err);
    if (st) return st;
    if (lora) st = tune_backend_lora(be, lora, &dlora, err);
    if (!st) { /* nothing runs a backward here: one layer's activations at a time (checkpointing's layout) */
        st = tune_workspace_create(be, &model->cfg, lora ? &dlora : NULL, eval->max_B, eval->max_T, 1, &ws, err);
        if (!st) st = tune_evaluate(&dmodel, lora ? &dlora : NULL, eval, ws, loss, n_targets, err);
        tune_workspace_free(ws);
        if (lora) tune_backend_lora_free(be, &dlora, lora);
    }
    tune_backend_model_free(be, &dmodel, model);
    return st;
}

tune_status tune_evaluate(const tune_model *model, const tune_lora *lora, const tune_batch_source *eval,
                          tune_workspace *ws, double *loss, long *n_targets, tune_error *err)
{
    long n = 0;
    const long n_mb = eval->count(eval->ctx, 0, err);
    if (n_mb < 0) return err ? err->code : TUNE_ERR_RUN;
    if (n_mb == 0) return tune_fail_input(err, NULL, "the evaluation set is empty");
    tune_workspace_reset_loss(ws);
    for (long i = 0; i < n_mb; i++) {
        tune_batch b;
        tune_status st = train_get_batch(eval, "evaluation", 0, i, &b, err);
        long nt;
        if (!st) st = tune_llama_forward(model, lora, &b, NULL, 0.0f, ws, NULL, &nt, err);
        if (st) return st;
        n += nt;
    }
    double sum; /* summed in the workspace, micro-batch by micro-batch */
    tune_status st = tune_workspace_loss(ws, &sum, err);
    if (st) return st;
    if (n == 0) return tune_fail_input(err, NULL, "the evaluation set has no trained tokens");
    *loss = sum / (double)n;
    *n_targets = n;
    return TUNE_OK;
}
