/* The real default model, SmolLM2-135M-Instruct (Q4_1 GGUF), through tune
 * against Transformers on the same file (tests/data/smollm2, made by
 * tools/reference/make_smollm2_golden.py), for four prompts: the tokenizer
 * read from the GGUF (ids and decoded text). Without the
 * model file (`make model` fetches it) each test says that it was skipped
 * and passes: the tiny models cover every code path. */
#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"
#include "tune/tokenizer.h"
#include "tune/util.h"

#define MODEL_PATH "models/SmolLM2-135M-Instruct.Q4_1.gguf"

static const char *const PROMPTS[] = {"excel_ko", "excel_en", "english", "code"};
enum { N_PROMPTS = sizeof PROMPTS / sizeof PROMPTS[0] };

/* 1 when the model file is there; otherwise says so plainly. */
static int have_model(void)
{
    if (access(MODEL_PATH, R_OK) == 0) return 1;
    printf("SKIPPED: " MODEL_PATH " absent (run make model)\n");
    fflush(stdout);
    return 0;
}

/* The JSON string member key of obj. */
static const char *json_str(const cJSON *obj, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    ck_assert_msg(cJSON_IsString(v), "golden.json: \"%s\" is not a string", key);
    return v->valuestring;
}

/* Encoding each prompt's text gives its ids; decoding the ids gives the text
 * back, and the greedy continuation decodes as Transformers decodes it. */
START_TEST(smollm2_tokenizer_matches_transformers)
{
    if (!have_model()) return;
    tune_error err = {0};
    tune_tokenizer *tok = NULL;
    ck_assert_msg(tune_tokenizer_load(MODEL_PATH, &tok, &err) == TUNE_OK, "%s", err.message);
    char path[1024], *json = NULL;
    size_t len = 0;
    snprintf(path, sizeof path, "%s/smollm2/golden.json", test_data_dir());
    ck_assert_msg(tune_read_file(path, &json, &len, &err) == TUNE_OK, "%s", err.message);
    cJSON *doc = cJSON_ParseWithLength(json, len);
    ck_assert_msg(doc != NULL, "%s: not JSON", path);
    const cJSON *prompts = cJSON_GetObjectItemCaseSensitive(doc, "prompts");
    ck_assert_int_eq(cJSON_GetArraySize(prompts), N_PROMPTS);
    const cJSON *p;
    tune_ids ids = {0};
    cJSON_ArrayForEach(p, prompts) {
        const char *name = json_str(p, "name"), *text = json_str(p, "text");
        const cJSON *want = cJSON_GetObjectItemCaseSensitive(p, "input_ids");
        ck_assert_msg(tune_tokenizer_encode(tok, text, strlen(text), 0, &ids, &err) == TUNE_OK, "%s", err.message);
        ck_assert_msg(ids.n == (size_t)cJSON_GetArraySize(want), "%s: %zu ids, Transformers %d", name, ids.n,
                      cJSON_GetArraySize(want));
        for (size_t i = 0; i < ids.n; i++)
            ck_assert_msg(ids.ids[i] == cJSON_GetArrayItem(want, (int)i)->valueint, "%s: id %zu is %d, Transformers %d",
                          name, i, ids.ids[i], cJSON_GetArrayItem(want, (int)i)->valueint);
        char *back = NULL;
        size_t n_back = 0;
        ck_assert_msg(tune_tokenizer_decode(tok, ids.ids, ids.n, 0, &back, &n_back, &err) == TUNE_OK, "%s",
                      err.message);
        ck_assert_msg(n_back == strlen(text) && memcmp(back, text, n_back) == 0, "%s: decodes to \"%s\"", name, back);
        free(back);

        const cJSON *gen = cJSON_GetObjectItemCaseSensitive(p, "greedy_ids");
        int32_t g[64];
        const int n_gen = cJSON_GetArraySize(gen);
        ck_assert_int_le(n_gen, 64);
        for (int i = 0; i < n_gen; i++) g[i] = cJSON_GetArrayItem(gen, i)->valueint;
        const char *gen_text = json_str(p, "greedy_text");
        ck_assert_msg(tune_tokenizer_decode(tok, g, (size_t)n_gen, 0, &back, &n_back, &err) == TUNE_OK, "%s",
                      err.message);
        ck_assert_msg(n_back == strlen(gen_text) && memcmp(back, gen_text, n_back) == 0,
                      "%s: continuation decodes to \"%s\", Transformers \"%s\"", name, back, gen_text);
        free(back);
    }
    tune_ids_free(&ids);
    cJSON_Delete(doc);
    free(json);
    tune_tokenizer_free(tok);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("real_model");
    TCase *tc = tcase_create("smollm2");
    tcase_add_test(tc, smollm2_tokenizer_matches_transformers);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
