#include <cJSON.h>
#include <ftw.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"
#include "tune/model.h"
#include "tune/util.h"

static void fixture_path(char *buf, size_t size, const char *name)
{
    snprintf(buf, size, "%s/model_load/%s", test_data_dir(), name);
}

/* The weight a Hugging Face tensor name refers to, and its element count. */
static const float *weight_of(const tune_model *m, const char *name, size_t *numel)
{
    const tune_model_config *c = &m->cfg;
    size_t C = (size_t)c->hidden_size, V = (size_t)c->vocab_size;
    if (strcmp(name, "model.embed_tokens.weight") == 0) { *numel = V * C; return m->embed.f32; }
    if (strcmp(name, "lm_head.weight") == 0) { *numel = V * C; return m->lm_head.f32; }
    if (strcmp(name, "model.norm.weight") == 0) { *numel = C; return m->final_norm; }
    int l, used = 0;
    ck_assert_int_eq(sscanf(name, "model.layers.%d.%n", &l, &used), 1);
    ck_assert(l >= 0 && l < c->num_hidden_layers);
    const char *rest = name + used;
    if (strcmp(rest, "input_layernorm.weight") == 0) { *numel = C; return m->layers[l].attn_norm; }
    if (strcmp(rest, "post_attention_layernorm.weight") == 0) { *numel = C; return m->layers[l].ffn_norm; }
    for (int k = 0; k < TUNE_N_LINEAR; k++) {
        char path[128], full[160];
        tune_linear_module_path(l, (tune_linear_kind)k, path, sizeof path);
        snprintf(full, sizeof full, "%s.weight", path);
        if (strcmp(full, name) == 0) {
            int out, in;
            tune_linear_shape(c, (tune_linear_kind)k, &out, &in);
            *numel = (size_t)out * (size_t)in;
            return m->layers[l].w[k].f32;
        }
    }
    ck_abort_msg("unknown tensor %s", name);
    return NULL;
}

/* Loads a fixture folder and compares every weight with what PyTorch read. */
static void check_against_golden(const char *name, tune_model *m)
{
    char dir[512], golden_path[600];
    fixture_path(dir, sizeof dir, name);
    tune_error err;
    ck_assert_msg(tune_model_load(dir, m, &err) == TUNE_OK, "%s: %s", err.file, err.message);
    snprintf(golden_path, sizeof golden_path, "%s/golden.json", dir);
    char *text;
    size_t len;
    ck_assert_int_eq(tune_read_file(golden_path, &text, &len, &err), TUNE_OK);
    cJSON *golden = cJSON_Parse(text);
    free(text);
    ck_assert_ptr_nonnull(golden);
    int count = 0;
    const cJSON *t;
    cJSON_ArrayForEach(t, golden) {
        size_t numel;
        const float *w = weight_of(m, t->string, &numel);
        size_t want_numel = 1;
        const cJSON *d;
        cJSON_ArrayForEach(d, cJSON_GetObjectItem(t, "shape")) want_numel *= (size_t)d->valuedouble;
        ck_assert_uint_eq(numel, want_numel);
        ck_assert(w >= m->storage && w + numel <= m->storage + m->n_floats);
        int i = 0;
        cJSON_ArrayForEach(d, cJSON_GetObjectItem(t, "first")) {
            ck_assert_msg(w[i] == (float)d->valuedouble, "%s[%d]: %g, torch %g", t->string, i, w[i], d->valuedouble);
            i++;
        }
        double sum = 0, abs_sum = 0;
        for (size_t k = 0; k < numel; k++) { sum += w[k]; abs_sum += fabs(w[k]); }
        double want = cJSON_GetObjectItem(t, "sum")->valuedouble;
        ck_assert_msg(fabs(sum - want) <= 1e-9 * (1 + abs_sum), "%s: sum %.17g, torch %.17g", t->string, sum, want);
        count++;
    }
    ck_assert_int_eq(count, 3 + 9 * m->cfg.num_hidden_layers);
    cJSON_Delete(golden);
}

START_TEST(tied_fp32_folder)
{
    tune_model m;
    check_against_golden("tied", &m);
    const tune_model_config *c = &m.cfg;
    ck_assert_int_eq(c->vocab_size, 64);
    ck_assert_int_eq(c->hidden_size, 16);
    ck_assert_int_eq(c->intermediate_size, 32);
    ck_assert_int_eq(c->num_hidden_layers, 2);
    ck_assert_int_eq(c->num_attention_heads, 4);
    ck_assert_int_eq(c->num_key_value_heads, 2);
    ck_assert_int_eq(c->head_dim, 4);
    ck_assert_int_eq(c->max_position_embeddings, 128);
    ck_assert_float_eq(c->rms_norm_eps, 1e-5f);
    ck_assert_double_eq(c->rope_theta, 10000.0);
    ck_assert_int_eq(c->rope_type, TUNE_ROPE_DEFAULT);
    ck_assert_int_eq(c->tie_word_embeddings, 1);
    ck_assert_int_eq(c->bos_token_id, 1);
    ck_assert_int_eq(c->n_eos_token_ids, 1);
    ck_assert_int_eq(c->eos_token_ids[0], 2);
    ck_assert_int_eq(c->pad_token_id, -1);
    ck_assert_str_eq(c->torch_dtype, "float32");
    ck_assert_ptr_eq(m.lm_head.f32, m.embed.f32);
    /* 64·16 embed + 2 × (2·16 norms + 16·16·2 q/o + 8·16·2 k/v + 3·32·16) + 16 */
    ck_assert_uint_eq(m.n_floats, 64 * 16 + 2 * (32 + 512 + 256 + 1536) + 16);
    tune_model_free(&m);
    ck_assert_ptr_null(m.storage);
}
END_TEST

START_TEST(untied_bf16_folder_with_llama3_rope)
{
    tune_model m;
    check_against_golden("untied_bf16", &m);
    const tune_model_config *c = &m.cfg;
    ck_assert_int_eq(c->tie_word_embeddings, 0);
    ck_assert_ptr_ne(m.lm_head.f32, m.embed.f32);
    ck_assert_double_eq(c->rope_theta, 500000.0);
    ck_assert_int_eq(c->rope_type, TUNE_ROPE_LLAMA3);
    ck_assert_double_eq(c->rope_factor, 32.0);
    ck_assert_double_eq(c->rope_low_freq_factor, 1.0);
    ck_assert_double_eq(c->rope_high_freq_factor, 4.0);
    ck_assert_int_eq(c->rope_original_max_position_embeddings, 64);
    ck_assert_int_eq(c->bos_token_id, 5);
    ck_assert_int_eq(c->n_eos_token_ids, 2);
    ck_assert_int_eq(c->eos_token_ids[1], 7);
    ck_assert_str_eq(c->torch_dtype, "bfloat16");
    ck_assert_uint_eq(m.n_floats, 2 * 64 * 16 + 2 * (32 + 512 + 256 + 1536) + 16);
    tune_model_free(&m);
}
END_TEST

START_TEST(sharded_f16_folder)
{
    tune_model m;
    check_against_golden("sharded_f16", &m);
    ck_assert_str_eq(m.cfg.torch_dtype, "float16");
    tune_model_free(&m);
    tune_model_config cfg;
    char dir[512];
    fixture_path(dir, sizeof dir, "sharded_f16");
    tune_error err;
    ck_assert_int_eq(tune_model_config_load(dir, &cfg, &err), TUNE_OK);
    ck_assert_int_eq(cfg.vocab_size, 64);
}
END_TEST

START_TEST(linear_shapes_and_paths)
{
    tune_model_config c = {.hidden_size = 576, .intermediate_size = 1536, .num_attention_heads = 9,
                           .num_key_value_heads = 3, .head_dim = 64};
    static const int want[TUNE_N_LINEAR][2] = {{576, 576}, {192, 576}, {192, 576}, {576, 576},
                                               {1536, 576}, {1536, 576}, {576, 1536}};
    for (int k = 0; k < TUNE_N_LINEAR; k++) {
        int out, in;
        tune_linear_shape(&c, (tune_linear_kind)k, &out, &in);
        ck_assert_int_eq(out, want[k][0]);
        ck_assert_int_eq(in, want[k][1]);
    }
    char buf[128];
    tune_linear_module_path(3, TUNE_Q_PROJ, buf, sizeof buf);
    ck_assert_str_eq(buf, "model.layers.3.self_attn.q_proj");
    tune_linear_module_path(29, TUNE_DOWN_PROJ, buf, sizeof buf);
    ck_assert_str_eq(buf, "model.layers.29.mlp.down_proj");
    ck_assert_str_eq(tune_linear_names[TUNE_GATE_PROJ], "gate_proj");
}
END_TEST

/* ------------------------------------------------ config.json variants */

static char tmpdir[64];

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static void remove_tmpdir(void)
{
    if (tmpdir[0]) nftw(tmpdir, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
    tmpdir[0] = '\0';
}

/* A folder holding config.json = json, and optionally a copy of a fixture's weights. */
static const char *folder_with(const char *json, const char *weights_from)
{
    if (!tmpdir[0]) {
        snprintf(tmpdir, sizeof tmpdir, "%s/tune-model-XXXXXX", P_tmpdir);
        ck_assert_ptr_nonnull(mkdtemp(tmpdir));
    }
    static char path[600];
    tune_error err;
    snprintf(path, sizeof path, "%s/config.json", tmpdir);
    ck_assert_int_eq(tune_write_file_atomic(path, json, strlen(json), &err), TUNE_OK);
    if (weights_from) {
        char src[600], *data;
        size_t len;
        fixture_path(src, sizeof src, weights_from);
        strcat(src, "/model.safetensors");
        ck_assert_int_eq(tune_read_file(src, &data, &len, &err), TUNE_OK);
        snprintf(path, sizeof path, "%s/model.safetensors", tmpdir);
        ck_assert_int_eq(tune_write_file_atomic(path, data, len, &err), TUNE_OK);
        free(data);
    }
    return tmpdir;
}

#define TINY "\"vocab_size\":64,\"hidden_size\":16,\"intermediate_size\":32,\"num_hidden_layers\":2," \
             "\"num_attention_heads\":4"

static void expect_config(const char *json, tune_model_config *cfg)
{
    tune_error err;
    tune_status st = tune_model_config_load(folder_with(json, NULL), cfg, &err);
    ck_assert_msg(st == TUNE_OK, "%s: %s", json, err.message);
}

static void expect_config_error(const char *json, const char *frag)
{
    tune_model_config cfg;
    tune_error err;
    const char *dir = folder_with(json, NULL);
    ck_assert_int_eq(tune_model_config_load(dir, &cfg, &err), TUNE_ERR_INPUT);
    ck_assert_msg(strstr(err.file, "config.json"), "file '%s'", err.file);
    ck_assert_msg(strstr(err.message, frag), "'%s' lacks '%s'", err.message, frag);
}

START_TEST(config_variants)
{
    tune_model_config c;
    /* Defaults when keys are absent, as LlamaConfig has them. */
    expect_config("{\"model_type\":\"llama\"," TINY "}", &c);
    ck_assert_int_eq(c.num_key_value_heads, 4);
    ck_assert_int_eq(c.head_dim, 4);
    ck_assert_double_eq(c.rope_theta, 10000.0);
    ck_assert_float_eq(c.rms_norm_eps, 1e-6f);
    ck_assert_int_eq(c.tie_word_embeddings, 0);
    ck_assert_int_eq(c.max_position_embeddings, 2048);
    ck_assert_int_eq(c.bos_token_id, 1);
    ck_assert_int_eq(c.eos_token_ids[0], 2);
    ck_assert_int_eq(c.pad_token_id, -1);
    ck_assert_str_eq(c.torch_dtype, "");

    /* SmolLM2-style: older keys at the top level, rope_scaling null. */
    expect_config("{\"architectures\":[\"LlamaForCausalLM\"],\"model_type\":\"llama\",\"vocab_size\":49152,"
                  "\"hidden_size\":576,\"intermediate_size\":1536,\"num_hidden_layers\":30,"
                  "\"num_attention_heads\":9,\"num_key_value_heads\":3,\"rope_theta\":100000,"
                  "\"rope_scaling\":null,\"rms_norm_eps\":1e-05,\"tie_word_embeddings\":true,"
                  "\"bos_token_id\":1,\"eos_token_id\":2,\"pad_token_id\":2,\"torch_dtype\":\"bfloat16\","
                  "\"max_position_embeddings\":8192,\"attention_bias\":false,\"mlp_bias\":false,"
                  "\"hidden_act\":\"silu\",\"head_dim\":64}", &c);
    ck_assert_int_eq(c.head_dim, 64);
    ck_assert_double_eq(c.rope_theta, 100000.0);
    ck_assert_int_eq(c.rope_type, TUNE_ROPE_DEFAULT);
    ck_assert_int_eq(c.tie_word_embeddings, 1);
    ck_assert_int_eq(c.pad_token_id, 2);
    ck_assert_str_eq(c.torch_dtype, "bfloat16");

    /* Llama 3.2-style rope_scaling at the top level, and the old "type" name. */
    const char *l32 = "{\"model_type\":\"llama\"," TINY ",\"rope_theta\":500000.0,\"eos_token_id\":[128001,128008,128009],"
                      "\"bos_token_id\":128000,\"rope_scaling\":{\"factor\":32.0,\"high_freq_factor\":4.0,"
                      "\"low_freq_factor\":1.0,\"original_max_position_embeddings\":8192,\"rope_type\":\"llama3\"}}";
    expect_config(l32, &c);
    ck_assert_int_eq(c.rope_type, TUNE_ROPE_LLAMA3);
    ck_assert_double_eq(c.rope_theta, 500000.0);
    ck_assert_int_eq(c.rope_original_max_position_embeddings, 8192);
    ck_assert_int_eq(c.n_eos_token_ids, 3);
    ck_assert_int_eq(c.eos_token_ids[2], 128009);
    expect_config("{\"model_type\":\"llama\"," TINY ",\"rope_scaling\":{\"type\":\"llama3\",\"factor\":8,"
                  "\"low_freq_factor\":1,\"high_freq_factor\":4,\"original_max_position_embeddings\":8192}}", &c);
    ck_assert_int_eq(c.rope_type, TUNE_ROPE_LLAMA3);
    ck_assert_double_eq(c.rope_factor, 8.0);
    expect_config("{\"model_type\":\"llama\"," TINY ",\"rope_parameters\":{\"rope_type\":\"default\",\"rope_theta\":20000}}", &c);
    ck_assert_double_eq(c.rope_theta, 20000.0);
    ck_assert_int_eq(c.rope_type, TUNE_ROPE_DEFAULT);
    expect_config("{\"model_type\":\"llama\"," TINY ",\"bos_token_id\":null,\"eos_token_id\":null}", &c);
    ck_assert_int_eq(c.bos_token_id, -1);
    ck_assert_int_eq(c.n_eos_token_ids, 0);

    /* Architecture-only files and Mistral without a sliding window. */
    expect_config("{\"architectures\":[\"LlamaForCausalLM\"]," TINY "}", &c);
    expect_config("{\"model_type\":\"mistral\"," TINY ",\"sliding_window\":null}", &c);

    expect_config_error("{\"model_type\":\"gpt2\"," TINY "}", "'model_type' is 'gpt2'");
    expect_config_error("{" TINY "}", "'model_type' is missing");
    expect_config_error("{\"model_type\":\"mistral\"," TINY ",\"sliding_window\":4096}", "'sliding_window'");
    expect_config_error("{\"model_type\":\"llama\"," TINY ",\"attention_bias\":true}", "'attention_bias' is true");
    expect_config_error("{\"model_type\":\"llama\"," TINY ",\"mlp_bias\":true}", "'mlp_bias' is true");
    expect_config_error("{\"model_type\":\"llama\"," TINY ",\"hidden_act\":\"gelu\"}", "'hidden_act'");
    expect_config_error("{\"model_type\":\"llama\"," TINY ",\"rope_scaling\":{\"rope_type\":\"yarn\",\"factor\":4}}",
                        "'rope_scaling.rope_type' is 'yarn'");
    expect_config_error("{\"model_type\":\"llama\"," TINY ",\"rope_parameters\":{\"rope_type\":\"llama3\",\"factor\":4}}",
                        "'rope_parameters.low_freq_factor' is missing");
    expect_config_error("{\"model_type\":\"llama\"," TINY ",\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":8,"
                        "\"low_freq_factor\":1,\"high_freq_factor\":4}}",
                        "'rope_scaling.original_max_position_embeddings' must be a positive integer");
    expect_config_error("{\"model_type\":\"llama\"," TINY ",\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":\"8\"}}",
                        "'rope_scaling.factor' must be a positive number");
    expect_config_error("{\"model_type\":\"llama\",\"vocab_size\":64}", "'hidden_size' is missing");
    expect_config_error("{\"model_type\":\"llama\"," TINY ",\"num_key_value_heads\":3}",
                        "'num_key_value_heads' must divide");
    expect_config_error("{\"model_type\":\"llama\"," TINY ",\"num_key_value_heads\":\"2\"}", "'num_key_value_heads' must be an integer");
    expect_config_error("{\"model_type\":\"llama\"," TINY ",\"head_dim\":5}", "'head_dim' must be even");
    expect_config_error("{\"model_type\":\"llama\"," TINY ",\"rms_norm_eps\":-1}", "'rms_norm_eps' must be a positive");
    expect_config_error("{\"model_type\":\"llama\"," TINY ",\"tie_word_embeddings\":1}", "'tie_word_embeddings' must be true or false");
    expect_config_error("{\"model_type\":\"llama\"," TINY ",\"eos_token_id\":[1,\"x\"]}", "'eos_token_id'");
    expect_config_error("{\"model_type\":\"llama\",\"vocab_size\":64,\"hidden_size\":1e300}", "'hidden_size' must be an integer");
    expect_config_error("[1]", "not a JSON object");
    expect_config_error("{\"model_type\":", "not valid JSON");
}
END_TEST

START_TEST(weight_errors_name_the_tensor)
{
    tune_model m;
    tune_error err;
    /* Untied config over a file without lm_head.weight. */
    const char *dir = folder_with("{\"model_type\":\"llama\"," TINY ",\"num_key_value_heads\":2}", "tied");
    ck_assert_int_eq(tune_model_load(dir, &m, &err), TUNE_ERR_INPUT);
    ck_assert_ptr_nonnull(strstr(err.message, "'lm_head.weight' is missing and tie_word_embeddings is false"));
    ck_assert_ptr_null(m.storage);
    /* Shapes are checked against the config. */
    dir = folder_with("{\"model_type\":\"llama\",\"vocab_size\":64,\"hidden_size\":16,\"intermediate_size\":48,"
                      "\"num_hidden_layers\":2,\"num_attention_heads\":4,\"num_key_value_heads\":2,"
                      "\"tie_word_embeddings\":true}", "tied");
    ck_assert_int_eq(tune_model_load(dir, &m, &err), TUNE_ERR_INPUT);
    ck_assert_ptr_nonnull(strstr(err.file, "model.safetensors"));
    ck_assert_str_eq(err.message, "tensor 'model.layers.0.mlp.gate_proj.weight': expected shape (48, 16), found (32, 16)");
    /* More layers than the file has. */
    dir = folder_with("{\"model_type\":\"llama\",\"vocab_size\":64,\"hidden_size\":16,\"intermediate_size\":32,"
                      "\"num_hidden_layers\":3,\"num_attention_heads\":4,\"num_key_value_heads\":2,"
                      "\"tie_word_embeddings\":true}", "tied");
    ck_assert_int_eq(tune_model_load(dir, &m, &err), TUNE_ERR_INPUT);
    ck_assert_str_eq(err.message, "tensor 'model.layers.2.input_layernorm.weight' is missing");
    /* A folder without weights. */
    char path[600];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    ck_assert_int_eq(remove(path), 0);
    ck_assert_int_eq(tune_model_load(dir, &m, &err), TUNE_ERR_INPUT);
    ck_assert_ptr_nonnull(strstr(err.message, "no model.safetensors"));
}
END_TEST

START_TEST(paths_that_are_not_hf_folders)
{
    tune_model m;
    tune_model_config c;
    tune_error err;
    const char *dir = folder_with("{}", NULL);
    char path[600];
    snprintf(path, sizeof path, "%s/model.gguf", dir);
    ck_assert_int_eq(tune_write_file_atomic(path, "GGUF", 4, &err), TUNE_OK);
    ck_assert_int_eq(tune_model_load(path, &m, &err), TUNE_ERR_INPUT);
    ck_assert_ptr_nonnull(strstr(err.message, "file ends inside the header"));
    ck_assert_int_eq(tune_model_config_load(path, &c, &err), TUNE_ERR_INPUT);
    ck_assert_ptr_nonnull(strstr(err.message, "file ends inside the header"));
    ck_assert_int_eq(tune_model_load("/nonexistent/model", &m, &err), TUNE_ERR_INPUT);
    ck_assert_str_eq(err.file, "/nonexistent/model");
    snprintf(path, sizeof path, "%s/config.json", dir);
    ck_assert_int_eq(tune_model_load(path, &m, &err), TUNE_ERR_INPUT);
    ck_assert_ptr_nonnull(strstr(err.message, "expected a Hugging Face folder"));
    ck_assert_int_eq(remove(path), 0);
    ck_assert_int_eq(tune_model_config_load(dir, &c, &err), TUNE_ERR_INPUT);
    ck_assert_ptr_nonnull(strstr(err.message, "config.json is missing"));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("model_load");
    TCase *tc = tcase_create("core");
    tcase_add_checked_fixture(tc, NULL, remove_tmpdir);
    tcase_add_test(tc, tied_fp32_folder);
    tcase_add_test(tc, untied_bf16_folder_with_llama3_rope);
    tcase_add_test(tc, sharded_f16_folder);
    tcase_add_test(tc, linear_shapes_and_paths);
    tcase_add_test(tc, config_variants);
    tcase_add_test(tc, weight_errors_name_the_tensor);
    tcase_add_test(tc, paths_that_are_not_hf_folders);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
