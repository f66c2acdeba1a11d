/* LoRA adapters: layout, PEFT default initialisation, target matching. */
#include <math.h>
#include <string.h>

#include "testutil.h"
#include "tune/lora.h"
#include "tune/rng.h"

/* SmolLM2-135M's shapes, cut to 3 layers. */
static tune_model_config smol(void)
{
    tune_model_config c;
    memset(&c, 0, sizeof c);
    c.vocab_size = 49152;
    c.hidden_size = 576;
    c.intermediate_size = 1536;
    c.num_hidden_layers = 3;
    c.num_attention_heads = 9;
    c.num_key_value_heads = 3;
    c.head_dim = 64;
    return c;
}

START_TEST(layout_and_default_init)
{
    const tune_model_config mc = smol();
    const tune_lora_config lc = {.r = 8, .alpha = 16.0f, .dropout = 0.05f,
                                 .target_mask = (1u << TUNE_Q_PROJ) | (1u << TUNE_V_PROJ) | (1u << TUNE_DOWN_PROJ)};
    tune_lora *lora;
    tune_error err;
    ck_assert_int_eq(tune_lora_create(&mc, &lc, NULL, 42, &lora, &err), TUNE_OK);
    ck_assert_int_eq(lora->n_modules, 9);
    ck_assert_float_eq(lora->scaling, 2.0f);
    /* layer-major, kind order; A then B of each module, back to back */
    const int kinds[3] = {TUNE_Q_PROJ, TUNE_V_PROJ, TUNE_DOWN_PROJ}, outs[3] = {576, 192, 576}, ins[3] = {576, 576, 1536};
    size_t off = 0;
    for (int m = 0; m < 9; m++) {
        const tune_lora_module *mod = &lora->modules[m];
        ck_assert_int_eq(mod->layer, m / 3);
        ck_assert_int_eq(mod->kind, kinds[m % 3]);
        ck_assert_int_eq(mod->out, outs[m % 3]);
        ck_assert_int_eq(mod->in, ins[m % 3]);
        ck_assert_uint_eq(mod->a_offset, off);
        ck_assert_uint_eq(mod->b_offset, off + (size_t)8 * mod->in);
        off += (size_t)8 * (mod->in + mod->out);
        ck_assert_int_eq(lora->index[mod->layer * TUNE_N_LINEAR + mod->kind], m);
    }
    ck_assert_uint_eq(lora->n_params, off);
    ck_assert_int_eq(lora->index[1 * TUNE_N_LINEAR + TUNE_K_PROJ], -1);
    /* A ~ U(-1/sqrt(in), 1/sqrt(in)) from the running Philox index; B = 0; grads 0 */
    uint64_t i = 0;
    double sum2 = 0.0;
    size_t n_a = 0;
    for (int m = 0; m < 9; m++) {
        const tune_lora_module *mod = &lora->modules[m];
        const float bound = 1.0f / sqrtf((float)mod->in);
        for (size_t e = 0; e < (size_t)8 * mod->in; e++, i++) {
            const float a = lora->params[mod->a_offset + e];
            ck_assert_float_eq(a, (2.0f * tune_rng_uniform(42, TUNE_STREAM_LORA_INIT, i) - 1.0f) * bound);
            ck_assert(fabsf(a) <= bound);
            sum2 += (double)a * a / ((double)bound * bound);
            n_a++;
        }
        for (size_t e = 0; e < (size_t)8 * mod->out; e++) ck_assert_float_eq(lora->params[mod->b_offset + e], 0.0f);
    }
    ck_assert_double_eq_tol(sum2 / n_a, 1.0 / 3.0, 0.01); /* variance of U(-1, 1) */
    for (size_t e = 0; e < lora->n_params; e++) ck_assert_float_eq(lora->grads[e], 0.0f);
    tune_lora_free(lora);
}
END_TEST

START_TEST(rslora_scaling_and_bad_configs)
{
    const tune_model_config mc = smol();
    tune_lora_config lc = {.r = 16, .alpha = 16.0f, .use_rslora = 1, .target_mask = 1};
    tune_lora *lora;
    tune_error err;
    ck_assert_int_eq(tune_lora_create(&mc, &lc, NULL, 1, &lora, &err), TUNE_OK);
    ck_assert_float_eq(lora->scaling, 4.0f);
    tune_lora_free(lora);
    lc.r = 0;
    ck_assert_int_eq(tune_lora_create(&mc, &lc, NULL, 1, &lora, &err), TUNE_ERR_INPUT);
    ck_assert_ptr_null(lora);
    lc.r = 8;
    lc.dropout = 1.0f;
    ck_assert_int_eq(tune_lora_create(&mc, &lc, NULL, 1, &lora, &err), TUNE_ERR_INPUT);
    lc.dropout = 0.0f;
    lc.target_mask = 0;
    ck_assert_int_eq(tune_lora_create(&mc, &lc, NULL, 1, &lora, &err), TUNE_ERR_INPUT);
}
END_TEST

static int count(const unsigned char *sel, int n)
{
    int c = 0;
    for (int i = 0; i < n; i++) c += sel[i];
    return c;
}

START_TEST(names_match_as_peft_lists_do)
{
    const tune_model_config mc = smol();
    unsigned char sel[3 * TUNE_N_LINEAR];
    tune_error err;
    const char *qv[] = {"q_proj", "v_proj"};
    ck_assert_int_eq(tune_lora_select_names(&mc, qv, 2, sel, &err), TUNE_OK);
    ck_assert_int_eq(count(sel, 21), 6);
    for (int l = 0; l < 3; l++) {
        ck_assert_int_eq(sel[l * TUNE_N_LINEAR + TUNE_Q_PROJ], 1);
        ck_assert_int_eq(sel[l * TUNE_N_LINEAR + TUNE_V_PROJ], 1);
    }
    /* a dotted suffix and a full path select single modules */
    const char *paths[] = {"layers.1.mlp.down_proj", "model.layers.2.self_attn.o_proj"};
    ck_assert_int_eq(tune_lora_select_names(&mc, paths, 2, sel, &err), TUNE_OK);
    ck_assert_int_eq(count(sel, 21), 2);
    ck_assert_int_eq(sel[1 * TUNE_N_LINEAR + TUNE_DOWN_PROJ], 1);
    ck_assert_int_eq(sel[2 * TUNE_N_LINEAR + TUNE_O_PROJ], 1);
    /* the match is on whole name components; unknown names are errors naming the target */
    const char *bad[] = {"q_proj", "proj"};
    ck_assert_int_eq(tune_lora_select_names(&mc, bad, 2, sel, &err), TUNE_ERR_INPUT);
    ck_assert_ptr_nonnull(strstr(err.message, "'proj'"));
    const char *head[] = {"lm_head"};
    ck_assert_int_eq(tune_lora_select_names(&mc, head, 1, sel, &err), TUNE_ERR_INPUT);
    ck_assert_ptr_nonnull(strstr(err.message, "lm_head"));
    ck_assert_int_eq(tune_lora_select_names(&mc, NULL, 0, sel, &err), TUNE_ERR_INPUT);
}
END_TEST

START_TEST(regex_must_match_whole_path)
{
    const tune_model_config mc = smol();
    unsigned char sel[3 * TUNE_N_LINEAR];
    tune_error err;
    ck_assert_int_eq(tune_lora_select_regex(&mc, "model\\.layers\\.0\\.self_attn\\.(q|v)_proj", sel, &err), TUNE_OK);
    ck_assert_int_eq(count(sel, 21), 2);
    ck_assert_int_eq(sel[TUNE_Q_PROJ], 1);
    ck_assert_int_eq(sel[TUNE_V_PROJ], 1);
    ck_assert_int_eq(tune_lora_select_regex(&mc, ".*\\.mlp\\..*", sel, &err), TUNE_OK);
    ck_assert_int_eq(count(sel, 21), 9);
    ck_assert_int_eq(tune_lora_select_regex(&mc, "all-linear", sel, &err), TUNE_OK);
    ck_assert_int_eq(count(sel, 21), 21);
    /* a bare name is not a full match */
    ck_assert_int_eq(tune_lora_select_regex(&mc, "q_proj", sel, &err), TUNE_ERR_INPUT);
    ck_assert_ptr_nonnull(strstr(err.message, "q_proj"));
    ck_assert_int_eq(tune_lora_select_regex(&mc, "model.(layers", sel, &err), TUNE_ERR_INPUT);
    ck_assert_ptr_nonnull(strstr(err.message, "invalid regex"));
}
END_TEST

START_TEST(selection_drives_creation)
{
    const tune_model_config mc = smol();
    unsigned char sel[3 * TUNE_N_LINEAR];
    tune_error err;
    ck_assert_int_eq(tune_lora_select_regex(&mc, "model\\.layers\\.[12]\\.mlp\\.up_proj", sel, &err), TUNE_OK);
    const tune_lora_config lc = {.r = 4, .alpha = 8.0f};
    tune_lora *lora;
    ck_assert_int_eq(tune_lora_create(&mc, &lc, sel, 3, &lora, &err), TUNE_OK);
    ck_assert_int_eq(lora->n_modules, 2);
    ck_assert_int_eq(lora->modules[0].layer, 1);
    ck_assert_int_eq(lora->modules[1].layer, 2);
    ck_assert_uint_eq(lora->cfg.target_mask, 1u << TUNE_UP_PROJ);
    tune_lora_free(lora);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("lora");
    TCase *tc = tcase_create("lora");
    tcase_add_test(tc, layout_and_default_init);
    tcase_add_test(tc, rslora_scaling_and_bad_configs);
    tcase_add_test(tc, names_match_as_peft_lists_do);
    tcase_add_test(tc, regex_must_match_whole_path);
    tcase_add_test(tc, selection_drives_creation);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
