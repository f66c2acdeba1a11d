/* Chat template renderers against Transformers' renderings of the real Jinja
 * templates (tests/data/data/templates_golden.json, made by
 * tools/reference/make_template_golden.py). */
#include <cJSON.h>
#include <string.h>

#include "testutil.h"
#include "tune/template.h"
#include "tune/util.h"

static cJSON *load_golden(void)
{
    char path[512], *text;
    size_t len;
    tune_error err;
    snprintf(path, sizeof path, "%s/data/templates_golden.json", test_data_dir());
    ck_assert_int_eq(tune_read_file(path, &text, &len, &err), TUNE_OK);
    cJSON *g = cJSON_ParseWithLength(text, len);
    free(text);
    ck_assert_ptr_nonnull(g);
    return g;
}

/* Converts one golden conversation; returns the message count. */
static int conversation(cJSON *g, int index, tune_chat_message *msgs, int cap)
{
    cJSON *conv = cJSON_GetArrayItem(cJSON_GetObjectItem(g, "conversations"), index);
    int n = 0;
    cJSON *m;
    cJSON_ArrayForEach(m, conv)
    {
        ck_assert_int_lt(n, cap);
        msgs[n].role = cJSON_GetObjectItem(m, "role")->valuestring;
        msgs[n].content = cJSON_GetObjectItem(m, "content")->valuestring;
        n++;
    }
    return n;
}

START_TEST(test_render_matches_transformers)
{
    cJSON *g = load_golden();
    cJSON *tpl;
    int checked = 0;
    cJSON_ArrayForEach(tpl, cJSON_GetObjectItem(g, "templates"))
    {
        tune_template_id id;
        ck_assert_msg(tune_template_from_name(tpl->string, &id), "unknown template %s", tpl->string);
        tune_template_options o = {cJSON_GetObjectItem(tpl, "bos")->valuestring,
                                   cJSON_GetObjectItem(tpl, "eos")->valuestring, NULL};
        cJSON *c;
        cJSON_ArrayForEach(c, cJSON_GetObjectItem(tpl, "cases"))
        {
            tune_chat_message msgs[8];
            tune_message_span spans[8];
            int n = conversation(g, cJSON_GetObjectItem(c, "conversation")->valueint, msgs, 8);
            cJSON *date = cJSON_GetObjectItem(c, "date");
            o.date = cJSON_IsString(date) ? date->valuestring : NULL;
            tune_strbuf out = {0};
            tune_error err;
            ck_assert_int_eq(tune_template_render(id, &o, msgs, n, cJSON_IsTrue(cJSON_GetObjectItem(c,
                                                                          "add_generation_prompt")),
                                                  &out, spans, &err),
                             TUNE_OK);
            const char *want = cJSON_GetObjectItem(c, "text")->valuestring;
            ck_assert_msg(!strcmp(out.data, want), "%s case %d:\n got: %s\nwant: %s", tpl->string, checked,
                          out.data, want);
            /* Every span lies inside the text, in order, and an assistant span is its stripped content. */
            size_t prev = 0;
            for (int i = 0; i < n; i++) {
                ck_assert(spans[i].start <= spans[i].end && spans[i].end <= spans[i].eot_start &&
                          spans[i].eot_start <= spans[i].eot_end && spans[i].eot_end <= out.len);
                ck_assert(spans[i].start >= prev);
                prev = spans[i].eot_end;
                if (!strcmp(msgs[i].role, "assistant")) {
                    size_t len;
                    const char *s = tune_text_strip(msgs[i].content, strlen(msgs[i].content), &len);
                    size_t got = spans[i].end - spans[i].start;
                    int trims = id == TUNE_TEMPLATE_LLAMA3 || id == TUNE_TEMPLATE_LLAMA3_1 ||
                                id == TUNE_TEMPLATE_LLAMA2;
                    if (!trims) {
                        s = msgs[i].content;
                        len = strlen(s);
                    }
                    ck_assert_uint_eq(got, len);
                    ck_assert(!memcmp(out.data + spans[i].start, s, len));
                    ck_assert_uint_gt(spans[i].eot_end, spans[i].eot_start); /* every template ends a reply */
                }
            }
            tune_strbuf_free(&out);
            checked++;
        }
    }
    ck_assert_int_ge(checked, 60);
    cJSON_Delete(g);
}
END_TEST

START_TEST(test_recognize_known_sources)
{
    cJSON *g = load_golden();
    cJSON *tpl;
    cJSON_ArrayForEach(tpl, cJSON_GetObjectItem(g, "templates"))
    {
        tune_template_id want, got;
        tune_error err;
        ck_assert(tune_template_from_name(tpl->string, &want));
        const char *src = cJSON_GetObjectItem(tpl, "source")->valuestring;
        ck_assert_int_eq(tune_template_recognize(src, &got, &err), TUNE_OK);
        ck_assert_int_eq(got, want);
        /* Re-indented with Jinja's whitespace control, it is still recognised. */
        tune_strbuf sb = {0};
        for (const char *p = src; *p; p++) {
            if (p[0] == '{' && p[1] == '%' && p[2] != '-') {
                tune_strbuf_puts(&sb, "\n  {%- ");
                p++;
                continue;
            }
            tune_strbuf_append(&sb, p, 1);
        }
        ck_assert_int_eq(tune_template_recognize(sb.data, &got, &err), TUNE_OK);
        ck_assert_int_eq(got, want);
        tune_strbuf_free(&sb);
    }
    cJSON_Delete(g);
}
END_TEST

START_TEST(test_unknown_template_error)
{
    tune_template_id id;
    tune_error err;
    const char *src = "{% for m in messages %}<|user|>{{ m['content'] }}{% endfor %}";
    ck_assert_int_eq(tune_template_recognize(src, &id, &err), TUNE_ERR_INPUT);
    ck_assert_ptr_nonnull(strstr(err.message, "<|user|>"));
    ck_assert_ptr_nonnull(strstr(err.message, "chat_template"));
}
END_TEST

START_TEST(test_llama2_rejects_non_alternating)
{
    tune_chat_message m[] = {{"user", "a"}, {"user", "b"}};
    tune_strbuf out = {0};
    tune_error err;
    ck_assert_int_eq(tune_template_render(TUNE_TEMPLATE_LLAMA2, NULL, m, 2, 0, &out, NULL, &err), TUNE_ERR_INPUT);
    ck_assert_ptr_nonnull(strstr(err.message, "alternate"));
    tune_strbuf_free(&out);
    tune_chat_message s[] = {{"user", "a"}, {"system", "b"}};
    ck_assert_int_eq(tune_template_render(TUNE_TEMPLATE_CHATML, NULL, s, 2, 0, &out, NULL, &err), TUNE_ERR_INPUT);
    tune_strbuf_free(&out);
}
END_TEST

START_TEST(test_strip_like_python)
{
    size_t n;
    const char *s = tune_text_strip("\xe3\x80\x80 \t a b \xc2\xa0\n", 13, &n);
    ck_assert_uint_eq(n, 3);
    ck_assert(!memcmp(s, "a b", 3));
    tune_text_strip(" \n ", 3, &n);
    ck_assert_uint_eq(n, 0);
}
END_TEST

START_TEST(test_names)
{
    tune_template_id id;
    ck_assert(tune_template_from_name("llama3_2", &id) && id == TUNE_TEMPLATE_LLAMA3_1);
    ck_assert(tune_template_from_name("vicuna_v1.1", &id) && id == TUNE_TEMPLATE_VICUNA);
    ck_assert(!tune_template_from_name("jinja", &id));
    for (int i = 0; i < TUNE_N_TEMPLATES; i++) {
        ck_assert(tune_template_from_name(tune_template_name((tune_template_id)i), &id));
        ck_assert_int_eq(id, i);
    }
}
END_TEST

START_TEST(test_resolve)
{
    cJSON *g = load_golden();
    cJSON *t = cJSON_GetObjectItem(cJSON_GetObjectItem(g, "templates"), "smollm2");
    const char *smol = cJSON_GetObjectItem(t, "source")->valuestring;
    tune_template_id id;
    tune_error err;
    ck_assert_int_eq(tune_template_resolve("tokenizer_default", smol, &id, &err), TUNE_OK);
    ck_assert_int_eq(id, TUNE_TEMPLATE_SMOLLM2);
    ck_assert_int_eq(tune_template_resolve("chatml", smol, &id, &err), TUNE_OK);
    ck_assert_int_eq(id, TUNE_TEMPLATE_SMOLLM2);
    const char *l31 = cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(g, "templates"), "llama3_2"),
                                          "source")->valuestring;
    ck_assert_int_eq(tune_template_resolve("llama3", l31, &id, &err), TUNE_OK);
    ck_assert_int_eq(id, TUNE_TEMPLATE_LLAMA3_1);
    ck_assert_int_eq(tune_template_resolve("llama3", smol, &id, &err), TUNE_OK);
    ck_assert_int_eq(id, TUNE_TEMPLATE_LLAMA3);
    ck_assert_int_eq(tune_template_resolve("chatml", NULL, &id, &err), TUNE_OK);
    ck_assert_int_eq(id, TUNE_TEMPLATE_CHATML);
    ck_assert_int_eq(tune_template_resolve("tokenizer_default", NULL, &id, &err), TUNE_ERR_INPUT);
    /* A template tune has no renderer for runs as Jinja; a fallback applies only without one. */
    ck_assert_int_eq(tune_template_resolve("tokenizer_default", "{{ x }}", &id, &err), TUNE_OK);
    ck_assert_int_eq(id, TUNE_TEMPLATE_JINJA);
    ck_assert_int_eq(tune_template_resolve("tokenizer_default_fallback_zephyr", "{{ x }}", &id, &err), TUNE_OK);
    ck_assert_int_eq(id, TUNE_TEMPLATE_JINJA);
    ck_assert_int_eq(tune_template_resolve("tokenizer_default_fallback_zephyr", NULL, &id, &err), TUNE_OK);
    ck_assert_int_eq(id, TUNE_TEMPLATE_ZEPHYR);
    ck_assert_int_eq(tune_template_resolve("jinja", smol, &id, &err), TUNE_OK);
    ck_assert_int_eq(id, TUNE_TEMPLATE_JINJA);
    ck_assert_int_eq(tune_template_resolve("jinja2", NULL, &id, &err), TUNE_ERR_INPUT);
    ck_assert_ptr_nonnull(strstr(err.message, "'jinja2'"));
    cJSON_Delete(g);
}
END_TEST

/* Each built-in's real Jinja source, run by the engine with spans found
 * Axolotl's way (renders up to each message with placeholders), gives the
 * built-in renderer's text and exactly its spans, which were written by
 * hand from each template's structure. */
START_TEST(test_jinja_spans_match_builtin_spans)
{
    cJSON *g = load_golden();
    cJSON *tpl;
    int checked = 0;
    cJSON_ArrayForEach(tpl, cJSON_GetObjectItem(g, "templates"))
    {
        tune_template builtin = {0}, jinja;
        tune_error err;
        ck_assert(tune_template_from_name(tpl->string, &builtin.id));
        const char *src = cJSON_GetObjectItem(tpl, "source")->valuestring;
        ck_assert_int_eq(tune_template_open("jinja", NULL, src, tpl->string, &jinja, &err), TUNE_OK);
        builtin.opt = (tune_template_options){cJSON_GetObjectItem(tpl, "bos")->valuestring,
                                              cJSON_GetObjectItem(tpl, "eos")->valuestring, "26 Jul 2024"};
        jinja.opt = builtin.opt;
        for (int c = 0; c < cJSON_GetArraySize(cJSON_GetObjectItem(g, "conversations")); c++) {
            tune_chat_message msgs[8];
            tune_message_span want[8], got[8];
            int n = conversation(g, c, msgs, 8);
            tune_strbuf a = {0}, b = {0};
            tune_strbuf_puts(&b, "prefix:"); /* spans are offsets into out, after what it held */
            tune_status sa = tune_chat_render(&builtin, msgs, n, 0, &a, want, &err);
            tune_status sb = tune_chat_render(&jinja, msgs, n, 0, &b, got, &err);
            ck_assert_int_eq(sa, sb);
            if (sa == TUNE_OK) {
                ck_assert_str_eq(a.data, b.data + 7);
                for (int i = 0; i < n; i++) {
                    /* A template that folds the system message into the first user turn
                     * (Llama 2) writes nothing for it alone: no span, as in Axolotl. */
                    if (!strcmp(msgs[i].role, "system") && got[i].start == got[i].end) continue;
                    ck_assert_msg(got[i].start == want[i].start + 7 && got[i].end == want[i].end + 7,
                                  "%s conversation %d message %d: content [%zu, %zu), built-in [%zu, %zu)", tpl->string,
                                  c, i, got[i].start - 7, got[i].end - 7, want[i].start, want[i].end);
                    if (!strcmp(msgs[i].role, "assistant"))
                        ck_assert_msg(got[i].eot_start == want[i].eot_start + 7 && got[i].eot_end == want[i].eot_end + 7,
                                      "%s conversation %d message %d: end of turn [%zu, %zu), built-in [%zu, %zu)",
                                      tpl->string, c, i, got[i].eot_start - 7, got[i].eot_end - 7, want[i].eot_start,
                                      want[i].eot_end);
                }
                checked++;
            }
            tune_strbuf_free(&a);
            tune_strbuf_free(&b);
        }
        tune_template_close(&jinja);
    }
    ck_assert_int_ge(checked, 30);
    cJSON_Delete(g);
}
END_TEST

/* A template's raise_exception stops the render with its message quoted. */
START_TEST(test_jinja_raise_is_quoted)
{
    tune_template t;
    tune_error err;
    const char *src = "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
                      "{% endif %}{% for m in messages %}{{ m['content'] }}{% endfor %}";
    ck_assert_int_eq(tune_template_open("jinja", NULL, src, "gemma.jinja", &t, &err), TUNE_OK);
    t.opt.date = "26 Jul 2024";
    tune_chat_message m[] = {{"system", "s"}, {"user", "u"}};
    tune_strbuf out = {0};
    ck_assert_int_eq(tune_chat_render(&t, m, 2, 0, &out, NULL, &err), TUNE_ERR_INPUT);
    ck_assert_ptr_nonnull(strstr(err.message, "\"System role not supported\""));
    ck_assert_ptr_nonnull(strstr(err.message, "gemma.jinja:1:"));
    tune_strbuf_free(&out);
    ck_assert_int_eq(tune_chat_render(&t, m + 1, 1, 0, &out, NULL, &err), TUNE_OK);
    ck_assert_str_eq(out.data, "u");
    tune_strbuf_free(&out);
    tune_template_close(&t);
    /* chat_template: jinja without a template says what is missing. */
    ck_assert_int_eq(tune_template_open("jinja", NULL, NULL, NULL, &t, &err), TUNE_ERR_INPUT);
    ck_assert_ptr_nonnull(strstr(err.message, "chat_template_jinja"));
}
END_TEST

/* A template that writes a message differently once more follow cannot be
 * cut into spans: an error, never wrong labels. */
START_TEST(test_jinja_unstable_prefix_is_an_error)
{
    tune_template t;
    tune_error err;
    const char *src = "{% for m in messages %}{% if loop.last %}{{ m['content'] }}{% else %}{{ m['content'] | upper }}"
                      "{% endif %};{% endfor %}";
    ck_assert_int_eq(tune_template_open("jinja", NULL, src, "t.jinja", &t, &err), TUNE_OK);
    t.opt.date = "26 Jul 2024";
    t.opt.eos = ";";
    tune_chat_message m[] = {{"user", "q"}, {"assistant", "a"}};
    tune_message_span sp[2];
    tune_strbuf out = {0};
    ck_assert_int_eq(tune_chat_render(&t, m, 2, 0, &out, NULL, &err), TUNE_OK);
    ck_assert_str_eq(out.data, "Q;a;");
    tune_strbuf_free(&out);
    ck_assert_int_eq(tune_chat_render(&t, m, 2, 0, &out, sp, &err), TUNE_ERR_INPUT);
    ck_assert_ptr_nonnull(strstr(err.message, "message 0 (user)"));
    tune_strbuf_free(&out);
    tune_template_close(&t);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("template");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_render_matches_transformers);
    tcase_add_test(tc, test_recognize_known_sources);
    tcase_add_test(tc, test_unknown_template_error);
    tcase_add_test(tc, test_llama2_rejects_non_alternating);
    tcase_add_test(tc, test_strip_like_python);
    tcase_add_test(tc, test_names);
    tcase_add_test(tc, test_resolve);
    tcase_add_test(tc, test_jinja_spans_match_builtin_spans);
    tcase_add_test(tc, test_jinja_raise_is_quoted);
    tcase_add_test(tc, test_jinja_unstable_prefix_is_an_error);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
