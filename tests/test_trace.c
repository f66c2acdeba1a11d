/* The tracing backend (tune explain): the FLOP and byte formulas, the model
 * FLOPs per token, and a traced forward/backward of the tiny model: the
 * operations in pass order with their labels, FLOPs that add up to the
 * formulas, gradients identical to an untraced run, and the workspace's
 * buffer table. Nothing here depends on timing beyond the operations'
 * times lying inside the recorded window. */
#include <math.h>

#include "testutil.h"
#include "tune/llama.h"

START_TEST(cost_formulas)
{
    tune_cost c = tune_cost_matmul(3, 5, 7, 0);
    ck_assert(c.flops == 2.0 * 3 * 5 * 7);
    ck_assert(c.bytes == 4.0 * (3 * 7 + 7 * 5 + 3 * 5));
    ck_assert(tune_cost_matmul(3, 5, 7, 1).bytes == 4.0 * (3 * 7 + 7 * 5 + 2 * 3 * 5)); /* c read and written */

    /* (rows 96, cols 64): fp32 reads 4 bytes a value, Q4_1 20 bytes a block of 32 */
    const tune_weight f = {TUNE_Q_F32, 96, 64, NULL, NULL}, q = {TUNE_Q4_1, 96, 64, NULL, NULL};
    c = tune_cost_weight_matmul(&f, 10, 0, 0);
    ck_assert(c.flops == 2.0 * 10 * 96 * 64);
    ck_assert(c.bytes == 4.0 * 96 * 64 + 4.0 * 10 * (64 + 96));
    c = tune_cost_weight_matmul(&q, 10, 1, 1); /* dx (10, 64) += dy (10, 96) · W */
    ck_assert(c.flops == 2.0 * 10 * 96 * 64);
    ck_assert(c.bytes == 96.0 * 2 * 20 + 4.0 * 10 * (96 + 2 * 64));

    /* causal: q·kᵀ and p·v over half of T×T, per head */
    const tune_attention_shape s = {2, 128, 8, 2, 64};
    const double fwd = 2.0 * 2.0 * 2 * 8 * 128.0 * 128 * 64 / 2.0;
    ck_assert(tune_cost_attention(&s, 0).flops == fwd);
    ck_assert(tune_cost_attention(&s, 1).flops == 2.0 * fwd);
    ck_assert(tune_cost_attention(&s, 1).bytes > tune_cost_attention(&s, 0).bytes);
}
END_TEST

static tune_model_config tiny_config(void)
{
    /* tests/data/tiny/gqa */
    tune_model_config c = {.vocab_size = 384, .hidden_size = 64, .intermediate_size = 160, .num_hidden_layers = 2,
                           .num_attention_heads = 4, .num_key_value_heads = 2, .head_dim = 16};
    return c;
}

START_TEST(model_flops_per_token)
{
    const tune_model_config c = tiny_config();
    /* per layer q 64·64, k and v 32·64, o 64·64, gate, up and down 160·64; lm_head 384·64 */
    const double frozen = 2.0 * (4096 + 2048 + 2048 + 4096 + 3 * 10240) + 384 * 64;
    ck_assert(tune_model_flops_per_token(&c, 0, 0) == 4 * frozen);
    /* r 4 on every linear: 4·(in + out) each, 4480 per layer */
    ck_assert(tune_model_flops_per_token(&c, 8960, 26) == 4 * frozen + 6 * 8960 + 6.0 * 2 * 26 * 64);
    ck_assert(tune_model_flops_per_token(&c, 8960, 26) == 516096);
}
END_TEST

/* The tiny model with LoRA r 4 on every linear layer, and one batch of 2 × 16. */
typedef struct fixture {
    tune_model model;
    tune_lora *lora;
    int32_t ids[32], labels[32];
    tune_batch batch;
} fixture;

static void fixture_open(fixture *f)
{
    char dir[1024];
    tune_error err;
    snprintf(dir, sizeof dir, "%s/tiny/gqa", test_data_dir());
    ck_assert_msg(tune_model_load(dir, &f->model, &err) == TUNE_OK, "%s", err.message);
    const tune_lora_config lc = {.r = 4, .alpha = 8.0f, .target_mask = 0x7f};
    ck_assert_int_eq(tune_lora_create(&f->model.cfg, &lc, NULL, 3, &f->lora, &err), TUNE_OK);
    for (size_t i = 0; i < f->lora->n_params; i++) f->lora->params[i] = 0.01f * (float)(i % 13) - 0.06f;
    for (int i = 0; i < 32; i++) {
        f->ids[i] = (i * 37 + 11) % 384;
        f->labels[i] = i % 16 < 3 ? -100 : f->ids[i];
    }
    f->batch = (tune_batch){2, 16, f->ids, f->labels, NULL, NULL};
}

static void fixture_close(fixture *f)
{
    tune_lora_free(f->lora);
    tune_model_free(&f->model);
}

/* A training forward and backward on be, recorded when be traces; the gradients into grads. */
static void run_pass(fixture *f, const tune_backend *be, int checkpoint, float *grads)
{
    tune_workspace *ws;
    tune_error err;
    double loss;
    long n;
    ck_assert_int_eq(tune_workspace_create(be, &f->model.cfg, f->lora, 2, 16, checkpoint, &ws, &err), TUNE_OK);
    memset(f->lora->grads, 0, f->lora->n_params * sizeof(float));
    tune_trace_record(1);
    ck_assert_int_eq(tune_llama_forward(&f->model, f->lora, &f->batch, NULL, 0.05f, ws, &loss, &n, &err), TUNE_OK);
    ck_assert_int_eq(n, 2 * 13); /* labels 3..15 of each row score the tokens before them */
    ck_assert_int_eq(tune_llama_backward(&f->model, f->lora, &f->batch, NULL, ws, &err), TUNE_OK);
    tune_trace_record(0);
    memcpy(grads, f->lora->grads, f->lora->n_params * sizeof(float));
    tune_workspace_free(ws);
}

/* The traced pass: its trace in t (checked for what every trace holds). */
static void traced_pass(fixture *f, int checkpoint, tune_trace *t, float *grads)
{
    const tune_backend *traced;
    tune_error err;
    ck_assert_int_eq(tune_trace_open(tune_backend_cpu(), t, &traced, &err), TUNE_OK);
    tune_trace dup;
    const tune_backend *other;
    ck_assert_int_eq(tune_trace_open(tune_backend_cpu(), &dup, &other, &err), TUNE_ERR_RUN); /* one at a time */
    run_pass(f, traced, checkpoint, grads);
    tune_trace_close();
    ck_assert(!t->oom);
    ck_assert_uint_gt(t->n, 100);
    /* the operations ran one after another inside the recorded window */
    double sum = 0.0;
    for (size_t i = 0; i < t->n; i++) {
        ck_assert(t->ops[i].seconds >= 0.0);
        sum += t->ops[i].seconds;
    }
    ck_assert(sum <= t->seconds);
}

static double flops_of(const tune_trace *t, tune_pass pass, const char *op, int in_layers)
{
    double s = 0.0;
    for (size_t i = 0; i < t->n; i++)
        if (t->ops[i].pass == pass && !strcmp(t->ops[i].op, op) && (t->ops[i].layer >= 0) == in_layers)
            s += t->ops[i].flops;
    return s;
}

START_TEST(traced_step_in_order)
{
    fixture f;
    fixture_open(&f);
    float *plain = malloc(f.lora->n_params * sizeof(float)), *traced = malloc(f.lora->n_params * sizeof(float));
    ck_assert(plain && traced);
    run_pass(&f, tune_backend_cpu(), 0, plain);
    tune_trace t;
    traced_pass(&f, 0, &t, traced);
    ck_assert_mem_eq(plain, traced, f.lora->n_params * sizeof(float)); /* tracing changes nothing */

    /* every layer's forward operation before every layer's backward one; no recomputation */
    size_t last_fwd = 0, first_bwd = t.n;
    for (size_t i = 0; i < t.n; i++) {
        const tune_trace_op *op = &t.ops[i];
        ck_assert(op->pass != TUNE_PASS_RECOMPUTE);
        if (op->layer < 0) continue;
        if (op->pass == TUNE_PASS_FORWARD) last_fwd = i;
        if (op->pass == TUNE_PASS_BACKWARD && i < first_bwd) first_bwd = i;
    }
    ck_assert_uint_lt(last_fwd, first_bwd);
    char name[128], shape[128];
    tune_trace_op_name(&t.ops[0], name, sizeof name);
    ck_assert_str_eq(name, "input upload");
    int found = 0;
    for (size_t i = 0; i < t.n && !found; i++) {
        tune_trace_op_name(&t.ops[i], name, sizeof name);
        if (strcmp(name, "layer 1 q_proj weight_matmul") || t.ops[i].pass != TUNE_PASS_FORWARD) continue;
        tune_trace_op_shape(&t.ops[i], shape, sizeof shape);
        ck_assert_str_eq(shape, "32×64 · (64×64)ᵀ F32");
        found = 1;
    }
    ck_assert(found);

    /* the frozen matmuls: x·Wᵀ forward and dy·W backward over every layer, 2·N·(parameters) each,
     * but for layer 0's q, k and v backward: nothing reads the gradient of the model's input */
    const double N = 32, per_layer = 4096 + 2048 + 2048 + 4096 + 3 * 10240, M = 26; /* M: target rows */
    const double qkv = 4096 + 2048 + 2048;
    ck_assert(flops_of(&t, TUNE_PASS_FORWARD, "weight_matmul", 1) == 2 * N * 2 * per_layer);
    ck_assert(flops_of(&t, TUNE_PASS_BACKWARD, "weight_matmul", 1) == 2 * N * (2 * per_layer - qkv));
    ck_assert(flops_of(&t, TUNE_PASS_FORWARD, "weight_matmul", 0) == 2 * M * 384 * 64); /* lm_head on the targets */
    ck_assert(flops_of(&t, TUNE_PASS_BACKWARD, "weight_matmul", 0) == 2 * M * 384 * 64);
    /* LoRA: forward x·Aᵀ and u·Bᵀ, 2·N·r·(in + out); backward dB, du, dA and dx, twice that
     * less layer 0's dx of q, k and v (2·N·r·in each; r 4, in 64) */
    ck_assert(flops_of(&t, TUNE_PASS_FORWARD, "matmul", 1) == 2 * N * 8960);
    ck_assert(flops_of(&t, TUNE_PASS_BACKWARD, "matmul", 1) == 4 * N * 8960 - 3 * 2 * N * 4 * 64);
    const double att = 2.0 * 2 * 4 * 16.0 * 16 * 16; /* 2·B·H·T²·hd per layer */
    ck_assert(flops_of(&t, TUNE_PASS_FORWARD, "attention_forward", 1) == 2 * att);
    ck_assert(flops_of(&t, TUNE_PASS_BACKWARD, "attention_backward", 1) == 2 * 2 * att);
    const tune_trace_op *last = &t.ops[t.n - 1];
    tune_trace_op_name(last, name, sizeof name);
    ck_assert_str_eq(name, "layer 0 v_proj matmul"); /* the backward ends at the first layer's last dA */
    tune_trace_free(&t);
    free(plain);
    free(traced);
    fixture_close(&f);
}
END_TEST

START_TEST(checkpointing_recomputes_the_forward)
{
    fixture f;
    fixture_open(&f);
    float *plain = malloc(f.lora->n_params * sizeof(float)), *traced = malloc(f.lora->n_params * sizeof(float));
    ck_assert(plain && traced);
    run_pass(&f, tune_backend_cpu(), 1, plain);
    tune_trace t;
    traced_pass(&f, 1, &t, traced);
    ck_assert_mem_eq(plain, traced, f.lora->n_params * sizeof(float));
    /* each layer's forward runs again inside the backward: the same matmuls, counted as recomputation */
    const char *ops[] = {"weight_matmul", "matmul", "attention_forward", "rmsnorm_forward"};
    for (int i = 0; i < 4; i++)
        ck_assert(flops_of(&t, TUNE_PASS_RECOMPUTE, ops[i], 1) == flops_of(&t, TUNE_PASS_FORWARD, ops[i], 1));
    tune_trace_free(&t);
    free(plain);
    free(traced);
    fixture_close(&f);
}
END_TEST

/* On a device the clipping's spans are a device buffer: the trace reads a copy to count the values. */
START_TEST(device_clip_counts_its_values)
{
    const tune_backend *emu = test_device_emulation(), *traced;
    const tune_span spans[2] = {{0, 40}, {40, 24}};
    float host[64];
    for (int i = 0; i < 64; i++) host[i] = 0.5f;
    float *grads = emu->alloc(sizeof host);
    tune_span *dspans = emu->alloc(sizeof spans);
    ck_assert(grads && dspans && !emu->upload(grads, host, sizeof host) && !emu->upload(dspans, spans, sizeof spans));
    tune_trace t;
    tune_error err;
    ck_assert_int_eq(tune_trace_open(emu, &t, &traced, &err), TUNE_OK);
    tune_trace_record(1);
    tune_backend_label(traced, TUNE_PASS_OPTIMIZER, -1, NULL);
    ck_assert_float_eq(traced->clip_grad_norm(grads, dspans, 2, 0.0f), 4.0f); /* sqrt(64 · 0.25) */
    tune_trace_record(0);
    tune_trace_close();
    ck_assert_uint_eq(t.n, 1);
    char name[64], shape[64];
    tune_trace_op_name(&t.ops[0], name, sizeof name);
    tune_trace_op_shape(&t.ops[0], shape, sizeof shape);
    ck_assert_str_eq(name, "clip_grad_norm");
    ck_assert_str_eq(shape, "64 values in 2 tensors");
    ck_assert(t.ops[0].pass == TUNE_PASS_OPTIMIZER && t.ops[0].flops == 2 * 64);
    tune_trace_free(&t);
    emu->release(grads);
    emu->release(dspans);
}
END_TEST

START_TEST(workspace_buffers_add_up)
{
    const tune_model_config c = tiny_config();
    for (int ckpt = 0; ckpt < 2; ckpt++) {
        tune_buffer_bytes list[TUNE_WORKSPACE_BUFFERS];
        tune_workspace_buffers(tune_backend_cpu(), &c, 14, 4, 2 * 1000, 2, 64, ckpt, list);
        size_t sum = 0;
        for (int i = 0; i < TUNE_WORKSPACE_BUFFERS; i++) {
            ck_assert_ptr_nonnull(list[i].name);
            for (int k = 0; k < i; k++) ck_assert_str_ne(list[i].name, list[k].name);
            sum += list[i].bytes;
        }
        ck_assert_uint_eq(sum, tune_workspace_bytes(tune_backend_cpu(), &c, 14, 4, 2 * 1000, 2, 64, ckpt));
        ck_assert_str_eq(list[1].name, "resid");
        ck_assert_uint_eq(list[1].bytes, 3 * 2 * 64 * 64 * sizeof(float)); /* (L + 1, N, C) */
        ck_assert_str_eq(list[2].name, "resid2");
        ck_assert_uint_eq(list[2].bytes, (ckpt ? 1 : 2) * 2 * 64 * 64 * sizeof(float)); /* one layer's with it */
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("trace");
    TCase *t = tcase_create("trace");
    tcase_set_timeout(t, 60);
    tcase_add_test(t, cost_formulas);
    tcase_add_test(t, model_flops_per_token);
    tcase_add_test(t, traced_step_in_order);
    tcase_add_test(t, checkpointing_recomputes_the_forward);
    tcase_add_test(t, device_clip_counts_its_values);
    tcase_add_test(t, workspace_buffers_add_up);
    suite_add_tcase(s, t);
    return run_suite(s);
}
