/* PEFT adapter files: reading PEFT's own output, writing the same bytes,
 * round trips, and clear errors for adapters that do not fit. */
#include <cJSON.h>
#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"
#include "tune/lora.h"
#include "tune/safetensors.h"
#include "tune/util.h"

#define ALL_LINEAR ((1u << TUNE_N_LINEAR) - 1)

static char tmp_dir[64];

static void setup(void)
{
    snprintf(tmp_dir, sizeof tmp_dir, "%s/tune-adapter-XXXXXX", P_tmpdir);
    ck_assert_ptr_nonnull(mkdtemp(tmp_dir));
}

static void teardown(void)
{
    DIR *d = opendir(tmp_dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        char p[512];
        if (e->d_name[0] == '.') continue;
        snprintf(p, sizeof p, "%s/%s", tmp_dir, e->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(tmp_dir);
}

static void data_path(char *buf, size_t size, const char *rel)
{
    ck_assert_int_lt(snprintf(buf, size, "%s/%s", test_data_dir(), rel), (int)size);
}

static void tmp_path(char *buf, size_t size, const char *name)
{
    ck_assert_int_lt(snprintf(buf, size, "%s/%s", tmp_dir, name), (int)size);
}

static tune_model_config gqa_config(void)
{
    char path[512];
    data_path(path, sizeof path, "tiny/gqa");
    tune_model_config c;
    tune_error err;
    ck_assert_msg(tune_model_config_load(path, &c, &err) == TUNE_OK, "%s", err.message);
    return c;
}

/* An adapter for the tiny gqa model: r 4, alpha 8, every linear layer. */
static tune_lora *gqa_lora(const tune_model_config *mc, float dropout)
{
    const tune_lora_config lc = {.r = 4, .alpha = 8.0f, .dropout = dropout, .target_mask = ALL_LINEAR};
    tune_lora *lora;
    tune_error err;
    ck_assert_int_eq(tune_lora_create(mc, &lc, NULL, 3, &lora, &err), TUNE_OK);
    return lora;
}

static char *read_all(const char *path, size_t *len)
{
    char *data;
    tune_error err;
    ck_assert_msg(tune_read_file(path, &data, len, &err) == TUNE_OK, "%s", err.message);
    return data;
}

static int same_file(const char *a, const char *b)
{
    size_t na, nb;
    char *x = read_all(a, &na), *y = read_all(b, &nb);
    const int same = na == nb && !memcmp(x, y, na);
    free(x);
    free(y);
    return same;
}

/* PEFT's own adapter loads, with exactly the golden's values. */
START_TEST(loads_peft_adapter)
{
    const tune_model_config mc = gqa_config();
    char dir[512], golden[512];
    data_path(dir, sizeof dir, "tiny/peft_adapter");
    tune_lora_config lc;
    unsigned char sel[2 * TUNE_N_LINEAR];
    tune_error err;
    ck_assert_msg(tune_lora_read_peft_config(dir, &mc, &lc, sel, &err) == TUNE_OK, "%s", err.message);
    ck_assert_int_eq(lc.r, 4);
    ck_assert_float_eq(lc.alpha, 8.0f);
    ck_assert_uint_eq(lc.target_mask, ALL_LINEAR);
    for (int i = 0; i < 2 * TUNE_N_LINEAR; i++) ck_assert_int_eq(sel[i], 1);
    tune_lora *lora;
    ck_assert_int_eq(tune_lora_create(&mc, &lc, sel, 1, &lora, &err), TUNE_OK);
    ck_assert_msg(tune_lora_load_peft(lora, &mc, dir, &err) == TUNE_OK, "%s", err.message);

    data_path(golden, sizeof golden, "tiny/gqa/golden.safetensors");
    tune_st_file *g;
    ck_assert_int_eq(tune_st_open(golden, &g, &err), TUNE_OK);
    for (int i = 0; i < lora->n_modules; i++) {
        const tune_lora_module *m = &lora->modules[i];
        for (int ab = 0; ab < 2; ab++) {
            char path[128], name[256];
            tune_linear_module_path(m->layer, m->kind, path, sizeof path);
            snprintf(name, sizeof name, "base_model.model.%s.lora_%c.weight", path, ab ? 'B' : 'A');
            const tune_st_tensor *t = tune_st_find(g, name);
            ck_assert_ptr_nonnull(t);
            ck_assert(!memcmp(t->data, lora->params + (ab ? m->b_offset : m->a_offset), t->nbytes));
        }
    }
    tune_st_close(g);
    tune_lora_free(lora);
}
END_TEST

/* What tune writes is what PEFT writes: the same safetensors bytes, and an
 * adapter_config.json whose every key has PEFT's value. */
START_TEST(writes_peft_layout)
{
    const tune_model_config mc = gqa_config();
    char dir[512], path[512], ours[512];
    data_path(dir, sizeof dir, "tiny/peft_adapter");
    tune_lora *lora = gqa_lora(&mc, 0.0f);
    tune_error err;
    ck_assert_int_eq(tune_lora_load_peft(lora, &mc, dir, &err), TUNE_OK);
    ck_assert_msg(tune_lora_save_peft(lora, tmp_dir, "tests/data/tiny/gqa", &err) == TUNE_OK, "%s", err.message);

    data_path(path, sizeof path, "tiny/peft_adapter/adapter_model.safetensors");
    tmp_path(ours, sizeof ours, "adapter_model.safetensors");
    ck_assert_msg(same_file(path, ours), "adapter_model.safetensors differs from PEFT's");

    size_t n;
    data_path(path, sizeof path, "tiny/peft_adapter/adapter_config.json");
    char *text = read_all(path, &n);
    cJSON *peft = cJSON_Parse(text);
    free(text);
    tmp_path(ours, sizeof ours, "adapter_config.json");
    text = read_all(ours, &n);
    cJSON *mine = cJSON_Parse(text);
    free(text);
    ck_assert(peft && mine);
    int keys = 0;
    const cJSON *item;
    cJSON_ArrayForEach(item, mine)
    {
        const cJSON *theirs = cJSON_GetObjectItemCaseSensitive(peft, item->string);
        ck_assert_msg(theirs != NULL, "PEFT has no key %s", item->string);
        if (!strcmp(item->string, "target_modules")) { /* PEFT writes a set: compare as sets */
            ck_assert_int_eq(cJSON_GetArraySize(item), cJSON_GetArraySize(theirs));
            const cJSON *t;
            cJSON_ArrayForEach(t, item)
            {
                int found = 0;
                const cJSON *u;
                cJSON_ArrayForEach(u, theirs) found |= !strcmp(t->valuestring, u->valuestring);
                ck_assert_msg(found, "target %s not in PEFT's list", t->valuestring);
            }
        } else {
            ck_assert_msg(cJSON_Compare(item, theirs, 1), "key %s differs from PEFT's", item->string);
        }
        keys++;
    }
    ck_assert_int_eq(keys, 24); /* REFERENCE.md's key set */
    cJSON_Delete(peft);
    cJSON_Delete(mine);
    tune_lora_free(lora);
}
END_TEST

/* save -> load gives the same weights; saving them again, the same bytes. */
START_TEST(round_trip_is_exact)
{
    const tune_model_config mc = gqa_config();
    tune_lora *a = gqa_lora(&mc, 0.05f);
    for (size_t i = 0; i < a->n_params; i++) a->params[i] = (float)((double)i * 1e-3 - 0.7) / 3.0f;
    tune_error err;
    ck_assert_int_eq(tune_lora_save_peft(a, tmp_dir, NULL, &err), TUNE_OK);
    char path[512], copy[512];
    tmp_path(path, sizeof path, "adapter_config.json");
    size_t n;
    char *text = read_all(path, &n);
    ck_assert_ptr_nonnull(strstr(text, "\"lora_dropout\": 0.05,"));
    ck_assert_ptr_nonnull(strstr(text, "\"base_model_name_or_path\": null,"));
    free(text);

    tune_lora_config lc;
    unsigned char sel[2 * TUNE_N_LINEAR];
    ck_assert_int_eq(tune_lora_read_peft_config(tmp_dir, &mc, &lc, sel, &err), TUNE_OK);
    ck_assert_float_eq(lc.dropout, 0.05f);
    tune_lora *b;
    ck_assert_int_eq(tune_lora_create(&mc, &lc, sel, 9, &b, &err), TUNE_OK);
    ck_assert_int_eq(tune_lora_load_peft(b, &mc, tmp_dir, &err), TUNE_OK);
    ck_assert_uint_eq(a->n_params, b->n_params);
    ck_assert(!memcmp(a->params, b->params, a->n_params * sizeof(float)));

    tmp_path(path, sizeof path, "adapter_model.safetensors");
    tmp_path(copy, sizeof copy, "first.safetensors");
    ck_assert_int_eq(rename(path, copy), 0);
    ck_assert_int_eq(tune_lora_save_peft(b, tmp_dir, NULL, &err), TUNE_OK);
    ck_assert(same_file(path, copy));
    tune_lora_free(a);
    tune_lora_free(b);
}
END_TEST

/* An adapter on some layers only is written with full module paths, which
 * PEFT matches exactly, and reads back to the same selection. */
START_TEST(partial_selection_round_trip)
{
    const tune_model_config mc = gqa_config();
    unsigned char sel[2 * TUNE_N_LINEAR] = {0};
    sel[TUNE_Q_PROJ] = 1;                   /* layer 0 q_proj */
    sel[TUNE_N_LINEAR + TUNE_V_PROJ] = 1;   /* layer 1 v_proj */
    const tune_lora_config lc = {.r = 2, .alpha = 4.0f, .use_rslora = 1};
    tune_lora *lora;
    tune_error err;
    ck_assert_int_eq(tune_lora_create(&mc, &lc, sel, 5, &lora, &err), TUNE_OK);
    ck_assert_int_eq(tune_lora_save_peft(lora, tmp_dir, "m", &err), TUNE_OK);
    char path[512];
    tmp_path(path, sizeof path, "adapter_config.json");
    size_t n;
    char *text = read_all(path, &n);
    ck_assert_ptr_nonnull(strstr(text, "\"model.layers.0.self_attn.q_proj\""));
    ck_assert_ptr_nonnull(strstr(text, "\"use_rslora\": true"));
    free(text);
    tune_lora_config back;
    unsigned char got[2 * TUNE_N_LINEAR];
    ck_assert_int_eq(tune_lora_read_peft_config(tmp_dir, &mc, &back, got, &err), TUNE_OK);
    ck_assert(!memcmp(sel, got, sizeof sel));
    ck_assert_int_eq(back.use_rslora, 1);
    ck_assert_int_eq(tune_lora_load_peft(lora, &mc, tmp_dir, &err), TUNE_OK);
    /* An adapter over every layer does not fit this one. */
    tune_lora *all = gqa_lora(&mc, 0.0f);
    all->cfg.r = 2;
    all->cfg.alpha = 4.0f;
    all->cfg.use_rslora = 1;
    ck_assert_int_eq(tune_lora_load_peft(all, &mc, tmp_dir, &err), TUNE_ERR_INPUT);
    ck_assert_msg(strstr(err.message, "model.layers.0.self_attn.k_proj") != NULL, "%s", err.message);
    tune_lora_free(all);
    tune_lora_free(lora);
}
END_TEST

/* Writes adapter_model.safetensors from lora's tensors in dtype, with
 * infix (".default" or "") in the names, skipping tensor `skip`, giving
 * tensor `bad_shape` a wrong shape, and adding a tensor `extra`. */
static void write_tensors(const tune_lora *lora, tune_dtype dtype, const char *infix, int skip, int bad_shape,
                          const char *extra)
{
    const int n = 2 * lora->n_modules;
    tune_st_entry *e = calloc((size_t)n + 1, sizeof *e);
    char(*names)[256] = calloc((size_t)n + 1, sizeof *names);
    ck_assert(e && names);
    int k = 0;
    for (int i = 0; i < n; i++) {
        if (i == skip) continue;
        const tune_lora_module *m = &lora->modules[i / 2];
        const int ab = i % 2;
        char path[128];
        tune_linear_module_path(m->layer, m->kind, path, sizeof path);
        snprintf(names[k], sizeof names[k], "base_model.model.%s.lora_%c%s.weight", path, ab ? 'B' : 'A', infix);
        e[k] = (tune_st_entry){.name = names[k], .dtype = dtype, .ndim = 2,
                               .shape = {ab ? m->out : lora->cfg.r, ab ? lora->cfg.r : m->in},
                               .f32 = lora->params + (ab ? m->b_offset : m->a_offset)};
        if (i == bad_shape) e[k].shape[0] = 1;
        k++;
    }
    if (extra)
        e[k++] = (tune_st_entry){.name = extra, .dtype = TUNE_DT_F32, .ndim = 1, .shape = {1}, .f32 = lora->params};
    char path[512];
    tmp_path(path, sizeof path, "adapter_model.safetensors");
    tune_error err;
    ck_assert_int_eq(tune_st_write(path, e, k, &err), TUNE_OK);
    free(e);
    free(names);
}

static void expect_load_error(tune_lora *lora, const tune_model_config *mc, const char *file, const char *words)
{
    tune_error err;
    ck_assert_int_eq(tune_lora_load_peft(lora, mc, tmp_dir, &err), TUNE_ERR_INPUT);
    ck_assert_msg(strstr(err.message, words) != NULL, "message: %s", err.message);
    ck_assert_msg(strstr(err.file, file) != NULL, "file: %s", err.file);
}

START_TEST(accepts_default_names_and_rejects_bad_tensors)
{
    const tune_model_config mc = gqa_config();
    tune_lora *lora = gqa_lora(&mc, 0.0f);
    tune_error err;
    ck_assert_int_eq(tune_lora_save_peft(lora, tmp_dir, NULL, &err), TUNE_OK);

    write_tensors(lora, TUNE_DT_F32, ".default", -1, -1, NULL);
    ck_assert_msg(tune_lora_load_peft(lora, &mc, tmp_dir, &err) == TUNE_OK, "%s", err.message);

    /* A bf16 adapter (PEFT saves in the model's dtype) is widened to fp32. */
    for (size_t i = 0; i < lora->n_params; i++) lora->params[i] = 1.0f + (float)i * 0x1p-12f;
    write_tensors(lora, TUNE_DT_BF16, "", -1, -1, NULL);
    ck_assert_msg(tune_lora_load_peft(lora, &mc, tmp_dir, &err) == TUNE_OK, "%s", err.message);
    ck_assert_float_eq(lora->params[0], 1.0f);
    ck_assert_float_eq(lora->params[1], 1.0f); /* 1 + 2^-12 rounds to 1 in bf16 */

    write_tensors(lora, TUNE_DT_F32, "", 3, -1, NULL);
    expect_load_error(lora, &mc, "adapter_model.safetensors",
                      "'base_model.model.model.layers.0.self_attn.k_proj.lora_B.weight' is missing");
    write_tensors(lora, TUNE_DT_F32, "", -1, 4, NULL);
    expect_load_error(lora, &mc, "adapter_model.safetensors", "v_proj.lora_A.weight': expected shape (4, 64)");
    write_tensors(lora, TUNE_DT_F32, "", -1, -1, "base_model.model.lm_head.lora_A.weight");
    expect_load_error(lora, &mc, "adapter_model.safetensors", "'base_model.model.lm_head.lora_A.weight' is not");
    tune_lora_free(lora);
}
END_TEST

static void write_config(const char *json)
{
    char path[512];
    tmp_path(path, sizeof path, "adapter_config.json");
    tune_error err;
    ck_assert_int_eq(tune_write_file_atomic(path, json, strlen(json), &err), TUNE_OK);
}

START_TEST(rejects_configs_that_do_not_fit)
{
    const tune_model_config mc = gqa_config();
    tune_lora *lora = gqa_lora(&mc, 0.0f);
    tune_error err;
    ck_assert_int_eq(tune_lora_save_peft(lora, tmp_dir, NULL, &err), TUNE_OK);
    write_config("{\"peft_type\":\"LORA\",\"r\":8,\"lora_alpha\":8,\"target_modules\":\"all-linear\"}");
    expect_load_error(lora, &mc, "adapter_config.json", "r is 8, the configuration says 4");
    write_config("{\"peft_type\":\"LORA\",\"r\":4,\"lora_alpha\":8,\"target_modules\":[\"q_proj\"],"
                 "\"use_dora\":true}");
    expect_load_error(lora, &mc, "adapter_config.json", "use_dora");
    write_config("{\"peft_type\":\"LORA\",\"r\":4,\"lora_alpha\":8,\"target_modules\":[\"lm_head\"]}");
    expect_load_error(lora, &mc, "adapter_config.json", "lm_head");
    write_config("{\"peft_type\":\"PREFIX_TUNING\"}");
    expect_load_error(lora, &mc, "adapter_config.json", "peft_type");
    write_config("{\"peft_type\":");
    expect_load_error(lora, &mc, "adapter_config.json", "not valid JSON");

    /* A pickle-only adapter gets a pointer to safetensors. */
    write_config("{\"peft_type\":\"LORA\",\"r\":4,\"lora_alpha\":8,\"target_modules\":\"all-linear\"}");
    char path[512];
    tmp_path(path, sizeof path, "adapter_model.safetensors");
    unlink(path);
    tmp_path(path, sizeof path, "adapter_model.bin");
    ck_assert_int_eq(tune_write_file_atomic(path, "x", 1, &err), TUNE_OK);
    expect_load_error(lora, &mc, "adapter_model.bin", "safetensors");
    tune_lora_free(lora);
}
END_TEST

static Suite *adapter_suite(void)
{
    Suite *s = suite_create("adapter");
    TCase *tc = tcase_create("peft");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, loads_peft_adapter);
    tcase_add_test(tc, writes_peft_layout);
    tcase_add_test(tc, round_trip_is_exact);
    tcase_add_test(tc, partial_selection_round_trip);
    tcase_add_test(tc, accepts_default_names_and_rejects_bad_tensors);
    tcase_add_test(tc, rejects_configs_that_do_not_fit);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return run_suite(adapter_suite());
}
