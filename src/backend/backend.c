/* What every backend shares: mirrors of host arrays, the model and the
 * adapters where the backend computes; and the CUDA entry points of a build
 * without CUDA. */
#include "tune/backend.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef TUNE_CUDA
const tune_backend *tune_backend_cuda(char *why, size_t why_size)
{
    snprintf(why, why_size, "this tune was built without CUDA (rebuild with `make CUDA=1`)");
    return NULL;
}

void tune_backend_cuda_describe(char *buf, size_t size)
{
    tune_backend_cuda(buf, size);
}

void tune_backend_cuda_pick(int ordinal) { (void)ordinal; }
#endif

tune_status tune_backend_select(tune_backend_kind kind, const tune_backend **be, char *why, size_t why_size,
                                tune_error *err)
{
    *be = NULL;
    char gpu[384];
    const tune_backend *cuda = kind == TUNE_BACKEND_CPU ? NULL : tune_backend_cuda(gpu, sizeof gpu);
    if (kind == TUNE_BACKEND_CUDA && !cuda)
        return tune_fail_input(err, NULL, "backend cuda: %s", gpu);
    if (cuda) {
        *be = cuda;
        snprintf(why, why_size, "cuda: %s", gpu);
    } else {
        *be = tune_backend_cpu();
        if (kind == TUNE_BACKEND_CPU)
            snprintf(why, why_size, "cpu: asked for");
        else
            snprintf(why, why_size, "cpu: %s", gpu);
    }
    return TUNE_OK;
}

void *tune_backend_mirror(const tune_backend *be, void *host, size_t bytes)
{
    if (!be->device) return host;
    void *buf = be->alloc(bytes ? bytes : 1);
    if (buf && be->upload(buf, host, bytes)) {
        be->release(buf);
        return NULL;
    }
    return buf;
}

void tune_backend_unmirror(const tune_backend *be, void *buf, const void *host)
{
    if (be->device && buf != host) be->release(buf);
}

int tune_backend_fetch(const tune_backend *be, void *host, const void *buf, size_t bytes)
{
    return be->device ? be->download(host, buf, bytes) : 0;
}

tune_status tune_backend_failed(const tune_backend *be, const char *doing, tune_error *err)
{
    char why[512];
    be->finish(why, sizeof why);
    return tune_fail_run(err, NULL, "%s backend failed %s: %s", be->name, doing, why[0] ? why : "unknown error");
}

/* p's place in the allocation that starts at from, moved to the one at to. */
static void *rebase(void *p, const void *from, void *to)
{
    return p ? (char *)to + ((const char *)p - (const char *)from) : NULL;
}

static void rebase_weight(tune_weight *w, const tune_model *host, const tune_model *view)
{
    w->f32 = rebase(w->f32, host->storage, view->storage);
    w->blocks = rebase(w->blocks, host->blocks, view->blocks);
}

tune_status tune_backend_model(const tune_backend *be, const tune_model *host, tune_model *view, tune_error *err)
{
    *view = *host;
    if (!be->device) return TUNE_OK;
    view->layers = NULL;
    view->storage = tune_backend_mirror(be, host->storage, host->n_floats * sizeof(float));
    view->blocks = host->n_block_bytes ? tune_backend_mirror(be, host->blocks, host->n_block_bytes) : NULL;
    view->layers = malloc((size_t)host->cfg.num_hidden_layers * sizeof *view->layers);
    if (!view->storage || (host->n_block_bytes && !view->blocks) || !view->layers) {
        tune_backend_model_free(be, view, host);
        return tune_fail_run(err, NULL, "out of %s memory for the model's %.2f GB of weights", be->name,
                             (double)tune_model_bytes(host) / 1e9);
    }
    rebase_weight(&view->embed, host, view);
    rebase_weight(&view->lm_head, host, view);
    view->final_norm = rebase(host->final_norm, host->storage, view->storage);
    for (int l = 0; l < host->cfg.num_hidden_layers; l++) {
        const tune_layer *h = &host->layers[l];
        tune_layer *v = &view->layers[l];
        *v = *h;
        v->attn_norm = rebase(h->attn_norm, host->storage, view->storage);
        v->ffn_norm = rebase(h->ffn_norm, host->storage, view->storage);
        for (int k = 0; k < TUNE_N_LINEAR; k++) rebase_weight(&v->w[k], host, view);
    }
    return TUNE_OK;
}

void tune_backend_model_free(const tune_backend *be, tune_model *view, const tune_model *host)
{
    if (!be->device) return;
    if (view->storage) tune_backend_unmirror(be, view->storage, host->storage);
    if (view->blocks) tune_backend_unmirror(be, view->blocks, host->blocks);
    free(view->layers);
    view->storage = NULL;
    view->blocks = NULL;
    view->layers = NULL;
}

tune_status tune_backend_lora(const tune_backend *be, tune_lora *host, tune_lora *view, tune_error *err)
{
    *view = *host;
    const size_t bytes = host->n_params * sizeof(float);
    if (!be->device) {
        memset(view->grads, 0, bytes);
        return TUNE_OK;
    }
    view->params = tune_backend_mirror(be, host->params, bytes);
    view->grads = be->alloc(bytes ? bytes : 1);
    if (!view->params || !view->grads) {
        tune_backend_lora_free(be, view, host);
        return tune_fail_run(err, NULL, "out of %s memory for the adapters' %.2f GB", be->name, 2.0 * bytes / 1e9);
    }
    be->zero(view->grads, bytes);
    return TUNE_OK;
}

void tune_backend_lora_free(const tune_backend *be, tune_lora *view, const tune_lora *host)
{
    if (!be->device) return;
    if (view->params) tune_backend_unmirror(be, view->params, host->params);
    if (view->grads) be->release(view->grads);
    view->params = view->grads = NULL;
}
