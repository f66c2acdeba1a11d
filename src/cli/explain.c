/* tune explain CONFIG [--json] [--all] [overrides]: one training step of
 * the experiment taken apart (tune_plan_explain runs it; this file prints):
 * every operation of forward, backward and optimizer with its shape, FLOPs,
 * bytes moved, time and share of the step; the totals against the sgemm
 * ceiling; the memory of every buffer. */
#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tune/cli.h"
#include "tune/plan.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: tune explain CONFIG.yml [--json] [--all] [--key value ...]\n\n"
            "Runs one optimizer step of the experiment (its data, model, adapters and\n"
            "backend, through the training loop) and prints its anatomy: every operation of\n"
            "forward, backward and optimizer in order, with its shape, FLOPs, bytes moved,\n"
            "measured time and share of the step; the totals against the machine's sgemm\n"
            "rate, measured in the same run; the model FLOPs per token and the share of the\n"
            "sgemm ceiling they reach (recomputation counts as overhead); and the memory of\n"
            "every buffer: the weights as stored, the LoRA parameters, gradients and AdamW\n"
            "moments, and the workspace. The step is the second where the plan has two (the\n"
            "first runs unrecorded: it also pays for first touches of memory and caches).\n"
            "Nothing is written into output_dir (the prepared-data cache excepted).\n\n"
            "The table folds the operations that repeat across layers and micro-batches into\n"
            "one row (calls, summed time); --all prints each one. --json prints everything,\n"
            "every operation on its own: {\"step_seconds\", \"ops\": [{\"pass\", \"layer\",\n"
            "\"name\", \"op\", \"shape\", \"flops\", \"bytes\", \"seconds\"}, ...], \"memory\": {...}, ...}.\n");
}

/* v with an SI prefix: "12.3G", "46". */
static void si(char *buf, size_t size, double v)
{
    static const char *const prefix[] = {"", "k", "M", "G", "T", "P"};
    int p = 0;
    while (v >= 999.5 && p < 5) {
        v /= 1000.0;
        p++;
    }
    snprintf(buf, size, "%.3g%s", v, prefix[p]);
}

/* s left-aligned in width columns: UTF-8 characters (×, ·, ᵀ) take one each. */
static void put_left(const char *s, int width)
{
    int chars = 0;
    for (const char *p = s; *p; p++) chars += ((unsigned char)*p & 0xC0) != 0x80;
    printf("%s%*s", s, width > chars ? width - chars : 1, "");
}

/* "812 ms", "20.41 s". */
static void secs(char *buf, size_t size, double s)
{
    if (s < 1.0) snprintf(buf, size, "%.3g ms", 1e3 * s);
    else snprintf(buf, size, "%.4g s", s);
}

/* The same operation of every layer and micro-batch, as one row: the same
 * pass, label and operation, and inside a layer the same place among the
 * operations of that name under the label (a LoRA module's two matmuls
 * stay apart).
 * Micro-batches of other lengths give other shapes: the row shows the
 * first, and "…" when there were others. */
typedef struct row {
    const tune_trace_op *first;
    int nth;    /* the place */
    char shape[128];
    int varied; /* calls of other shapes */
    int lo, hi; /* layers */
    long calls;
    double flops, bytes, seconds;
} row;

static int same_label(const tune_trace_op *a, const tune_trace_op *b)
{
    return a->what == b->what || (a->what && b->what && !strcmp(a->what, b->what));
}

static int same_row(const row *r, const tune_trace_op *op, int nth)
{
    const tune_trace_op *f = r->first;
    return f->pass == op->pass && (f->layer < 0) == (op->layer < 0) && f->op == op->op && same_label(f, op) &&
           r->nth == nth;
}

/* The trace's rows: folded, or one per operation (all). NULL when out of memory. */
static row *fold(const tune_trace *t, int all, size_t *n_rows)
{
    row *rows = malloc((t->n ? t->n : 1) * sizeof *rows);
    if (!rows) return NULL;
    size_t n = 0, run = 0; /* where the current label's run of operations began */
    for (size_t i = 0; i < t->n; i++) {
        const tune_trace_op *op = &t->ops[i];
        if (i && (op->pass != op[-1].pass || op->layer != op[-1].layer || !same_label(op, &op[-1]))) run = i;
        int nth = 0; /* inside a layer: outside, the same label's operations fold whatever their place */
        for (size_t j = run; op->layer >= 0 && j < i; j++) nth += t->ops[j].op == op->op;
        char shape[128];
        tune_trace_op_shape(op, shape, sizeof shape);
        size_t k = all ? n : 0;
        while (k < n && !same_row(&rows[k], op, nth)) k++;
        row *r = &rows[k];
        if (k == n) {
            *r = (row){.first = op, .nth = nth, .lo = op->layer, .hi = op->layer};
            snprintf(r->shape, sizeof r->shape, "%s", shape);
            n++;
        }
        r->varied |= strcmp(r->shape, shape) != 0;
        if (op->layer < r->lo) r->lo = op->layer;
        if (op->layer > r->hi) r->hi = op->layer;
        r->calls++;
        r->flops += op->flops;
        r->bytes += op->bytes;
        r->seconds += op->seconds;
    }
    *n_rows = n;
    return rows;
}

static void row_name(const row *r, char *buf, size_t size)
{
    tune_trace_op op = *r->first;
    op.layer = -1;
    char base[160], layers[32] = "";
    tune_trace_op_name(&op, base, sizeof base);
    if (r->lo >= 0 && r->lo == r->hi) snprintf(layers, sizeof layers, "layer %d ", r->lo);
    else if (r->lo >= 0) snprintf(layers, sizeof layers, "layers %d-%d ", r->lo, r->hi);
    snprintf(buf, size, "%s%s", layers, base);
}

static double ops_seconds(const tune_trace *t, int pass)
{
    double s = 0.0;
    for (size_t i = 0; i < t->n; i++)
        if (pass < 0 || (int)t->ops[i].pass == pass) s += t->ops[i].seconds;
    return s;
}

static double ops_flops(const tune_trace *t)
{
    double f = 0.0;
    for (size_t i = 0; i < t->n; i++) f += t->ops[i].flops;
    return f;
}

static size_t total_bytes(const tune_buffer_bytes *b, int n)
{
    size_t s = 0;
    for (int i = 0; i < n; i++) s += b[i].bytes;
    return s;
}

static int print_text(const tune_plan *plan, const char *config, const tune_explain *x, int all)
{
    const tune_trace *t = &x->trace;
    size_t n_rows;
    row *rows = fold(t, all, &n_rows);
    if (!rows) {
        fprintf(stderr, "tune explain: error: out of memory\n");
        return 1;
    }
    const double step = t->seconds, fpt = tune_model_flops_per_token(&x->model, x->lora_params, x->T);
    printf("tune explain: one optimizer step of %s (step %d%s)\n", config, x->step,
           x->step > 1 ? "; the first warms the caches" : ", the only one: cold caches and first page touches");
    printf("%d micro-batch%s of %d × %d tokens (%ld tokens); loss %.4f, grad norm %.4f\n", x->micro_batches,
           x->micro_batches == 1 ? "" : "es", x->B, x->T, x->tokens, x->loss, x->grad_norm);
    printf("backend %s, %d threads; gradient checkpointing %s\n\n", plan->be->name, plan->threads,
           plan->gradient_checkpointing ? "on" : "off");
    printf("%-9s  ", "pass");
    put_left("operation", 44);
    put_left("shape", 36);
    printf("%6s %7s %8s %10s %6s\n", "calls", "FLOP", "bytes", "ms", "share");
    for (size_t i = 0; i < n_rows; i++) {
        const row *r = &rows[i];
        char name[200], flops[32], bytes[32];
        row_name(r, name, sizeof name);
        si(flops, sizeof flops, r->flops);
        si(bytes, sizeof bytes, r->bytes);
        printf("%-9s  ", tune_pass_name(r->first->pass));
        put_left(name, 44);
        char shape[140];
        snprintf(shape, sizeof shape, "%s%s", r->shape, r->varied ? " …" : "");
        put_left(shape, 36);
        printf("%6ld %7s %7sB %10.3f %5.1f%%\n", r->calls, flops, bytes, 1e3 * r->seconds,
               step > 0 ? 100.0 * r->seconds / step : 0.0);
    }
    free(rows);

    const double ops = ops_seconds(t, -1), executed = ops_flops(t), ceiling = x->sgemm_gflops * 1e9;
    char a[32], b[32], c[32];
    printf("\nby pass    ");
    for (int p = TUNE_PASS_FORWARD; p <= TUNE_PASS_OPTIMIZER; p++) {
        const double s = ops_seconds(t, p);
        secs(a, sizeof a, s);
        if (s > 0) printf("  %s %s (%.1f%%)", tune_pass_name((tune_pass)p), a, step > 0 ? 100.0 * s / step : 0.0);
    }
    secs(a, sizeof a, step);
    secs(b, sizeof b, ops);
    printf("\nstep        %s, %.0f tokens/s; its operations take %s (%.1f%% of it)\n", a,
           step > 0 ? x->tokens / step : 0.0, b, step > 0 ? 100.0 * ops / step : 0.0);
    printf("sgemm       %.1f GFLOP/s: the ceiling (%d×%d×%d through the %s backend's matmul, best of 3)\n",
           x->sgemm_gflops, x->sgemm_n, x->sgemm_n, x->sgemm_n, plan->be->name);
    si(a, sizeof a, executed);
    printf("executed    %s FLOP at %.2f GFLOP/s, %.1f%% of the ceiling (recomputation included)\n", a,
           step > 0 ? executed / step / 1e9 : 0.0, step > 0 ? 100.0 * executed / step / ceiling : 0.0);
    si(a, sizeof a, fpt);
    si(b, sizeof b, tune_model_flops_per_token(&x->model, 0.0, 0) / 4.0);
    si(c, sizeof c, x->lora_params);
    printf("model FLOPs %s FLOP per token at T %d = 4 × %s parameters (frozen linear and lm_head)\n"
           "            + 6 × %s LoRA parameters + 6 × %d layers × %d × %d (causal attention)\n",
           a, x->T, b, c, x->model.num_hidden_layers, x->T, x->model.num_attention_heads * x->model.head_dim);
    const double achieved = step > 0 ? x->model_flops / step : 0.0;
    si(a, sizeof a, x->model_flops);
    printf("achieved    %s FLOP of model FLOPs in the step: %.2f GFLOP/s, %.1f%% of the sgemm ceiling\n", a,
           achieved / 1e9, ceiling > 0 ? 100.0 * achieved / ceiling : 0.0);

    printf("\nmemory (where the step computes)          MiB\n");
    for (int i = 0; i < TUNE_EXPLAIN_STATE; i++)
        printf("  %-38s %9.2f\n", x->state[i].name, x->state[i].bytes / 1048576.0);
    const size_t ws = total_bytes(x->workspace, TUNE_WORKSPACE_BUFFERS);
    printf("  %-38s %9.2f\n", "workspace", ws / 1048576.0);
    for (int i = 0; i < TUNE_WORKSPACE_BUFFERS; i++)
        if (x->workspace[i].bytes) printf("    %-36s %9.2f\n", x->workspace[i].name, x->workspace[i].bytes / 1048576.0);
    printf("  %-38s %9.2f\n", "total", (total_bytes(x->state, TUNE_EXPLAIN_STATE) + ws) / 1048576.0);
    return 0;
}

/* Each operation into the array ops; 0 when out of memory. */
static int ops_json(cJSON *ops, const tune_trace *t)
{
    for (size_t i = 0; i < t->n; i++) {
        const tune_trace_op *op = &t->ops[i];
        char name[200], shape[128];
        tune_trace_op_name(op, name, sizeof name);
        tune_trace_op_shape(op, shape, sizeof shape);
        cJSON *o = cJSON_CreateObject();
        if (!o || !cJSON_AddItemToArray(ops, o)) {
            cJSON_Delete(o);
            return 0;
        }
        if (!cJSON_AddStringToObject(o, "pass", tune_pass_name(op->pass)) ||
            !cJSON_AddNumberToObject(o, "layer", op->layer) || !cJSON_AddStringToObject(o, "name", name) ||
            !cJSON_AddStringToObject(o, "op", op->op) || !cJSON_AddStringToObject(o, "shape", shape) ||
            !cJSON_AddNumberToObject(o, "flops", op->flops) || !cJSON_AddNumberToObject(o, "bytes", op->bytes) ||
            !cJSON_AddNumberToObject(o, "seconds", op->seconds))
            return 0;
    }
    return 1;
}

/* {"weights_fp32": ..., ..., "workspace": {"resid": ..., ...}, "workspace_total": ..., "total": ...} into m. */
static int memory_json(cJSON *m, const tune_explain *x)
{
    int ok = 1;
    for (int i = 0; ok && i < TUNE_EXPLAIN_STATE; i++)
        ok = cJSON_AddNumberToObject(m, x->state[i].name, (double)x->state[i].bytes) != NULL;
    cJSON *ws = ok ? cJSON_AddObjectToObject(m, "workspace") : NULL;
    for (int i = 0; ws && i < TUNE_WORKSPACE_BUFFERS; i++)
        if (!cJSON_AddNumberToObject(ws, x->workspace[i].name, (double)x->workspace[i].bytes)) ws = NULL;
    const size_t w = total_bytes(x->workspace, TUNE_WORKSPACE_BUFFERS);
    return ws && cJSON_AddNumberToObject(m, "workspace_total", (double)w) &&
           cJSON_AddNumberToObject(m, "total", (double)(w + total_bytes(x->state, TUNE_EXPLAIN_STATE)));
}

static int print_json(const tune_plan *plan, const char *config, const tune_explain *x)
{
    const tune_trace *t = &x->trace;
    const double step = t->seconds, achieved = step > 0 ? x->model_flops / step / 1e9 : 0.0;
    cJSON *j = cJSON_CreateObject(), *sgemm = NULL, *ops = NULL, *mem = NULL;
    const int ok =
        j && cJSON_AddStringToObject(j, "config", config) && cJSON_AddStringToObject(j, "backend", plan->be->name) &&
        cJSON_AddNumberToObject(j, "threads", plan->threads) &&
        cJSON_AddBoolToObject(j, "gradient_checkpointing", plan->gradient_checkpointing) &&
        cJSON_AddNumberToObject(j, "step", x->step) && cJSON_AddNumberToObject(j, "micro_batches", x->micro_batches) &&
        cJSON_AddNumberToObject(j, "micro_batch_size", x->B) && cJSON_AddNumberToObject(j, "sequence_len", x->T) &&
        cJSON_AddNumberToObject(j, "tokens", x->tokens) && cJSON_AddNumberToObject(j, "loss", x->loss) &&
        cJSON_AddNumberToObject(j, "grad_norm", x->grad_norm) &&
        cJSON_AddNumberToObject(j, "step_seconds", step) &&
        cJSON_AddNumberToObject(j, "ops_seconds", ops_seconds(t, -1)) &&
        cJSON_AddNumberToObject(j, "flops", ops_flops(t)) && (sgemm = cJSON_AddObjectToObject(j, "sgemm")) &&
        cJSON_AddNumberToObject(sgemm, "n", x->sgemm_n) &&
        cJSON_AddNumberToObject(sgemm, "gflops", x->sgemm_gflops) &&
        cJSON_AddNumberToObject(j, "model_flops_per_token",
                                tune_model_flops_per_token(&x->model, x->lora_params, x->T)) &&
        /* its terms: 4 × frozen + 6 × LoRA parameters + 6 × layers × T × attention width */
        cJSON_AddNumberToObject(j, "frozen_params", tune_model_flops_per_token(&x->model, 0.0, 0) / 4.0) &&
        cJSON_AddNumberToObject(j, "lora_params", x->lora_params) &&
        cJSON_AddNumberToObject(j, "layers", x->model.num_hidden_layers) &&
        cJSON_AddNumberToObject(j, "attention_width", x->model.num_attention_heads * x->model.head_dim) &&
        cJSON_AddNumberToObject(j, "model_flops", x->model_flops) &&
        cJSON_AddNumberToObject(j, "achieved_gflops", achieved) &&
        cJSON_AddNumberToObject(j, "achieved_fraction", x->sgemm_gflops > 0 ? achieved / x->sgemm_gflops : 0.0) &&
        (ops = cJSON_AddArrayToObject(j, "ops")) && ops_json(ops, t) && (mem = cJSON_AddObjectToObject(j, "memory")) &&
        memory_json(mem, x);
    char *text = ok ? cJSON_PrintUnformatted(j) : NULL;
    cJSON_Delete(j);
    if (!text) {
        fprintf(stderr, "tune explain: error: out of memory\n");
        return 1;
    }
    printf("%s\n", text);
    free(text);
    return 0;
}

int tune_cli_explain(int argc, char **argv)
{
    if (tune_cli_wants_help(argc, argv)) {
        usage(stdout);
        return 0;
    }
    /* Drop --json and --all; the rest is the config and its overrides. */
    int json = 0, all = 0, n = 0;
    char **args = malloc((size_t)argc * sizeof *args);
    if (!args) return 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json")) json = 1;
        else if (!strcmp(argv[i], "--all")) all = 1;
        else args[n++] = argv[i];
    }
    tune_config cfg;
    tune_plan plan;
    int rc = tune_cli_load_plan("explain", n, args, &cfg, &plan);
    free(args);
    if (rc) return rc;
    const tune_run_hooks hooks = {.on_planned = tune_cli_on_planned, .on_note = tune_cli_on_note};
    tune_explain x;
    tune_error err;
    tune_error_clear(&err);
    if (tune_plan_explain(&plan, &cfg, &hooks, &x, &err)) {
        tune_error_print(stderr, &err);
        rc = err.code ? (int)err.code : 1;
    } else {
        rc = json ? print_json(&plan, cfg.config_path, &x) : print_text(&plan, cfg.config_path, &x, all);
    }
    tune_explain_free(&x);
    tune_plan_free(&plan);
    tune_config_free(&cfg);
    return rc;
}
