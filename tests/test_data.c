/* The data stage: reading errors, formats and their masks, length rules,
 * split / shuffle determinism, packing, cache invalidation, export.
 * A toy tokenizer stands in for the real one: one id per byte (byte + 10)
 * and one id per special-token text; optionally it merges "ab" into one
 * token so that tokenizing in pieces can differ from tokenizing whole. */
#include <cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"
#include "tune/data.h"
#include "tune/tokenizer.h"

/* ------------------------------------------------------------ toy tokenizer */

static const char *const SPECIALS[] = {"<s>", "</s>", "<|im_start|>", "<|im_end|>", "<|begin_of_text|>",
                                       "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>"};
#define N_SPECIALS (int)(sizeof SPECIALS / sizeof SPECIALS[0])
#define TOY_BOS 1
#define TOY_EOS 2
#define TOY_AB 300
#define BYTE(c) ((int32_t)(unsigned char)(c) + 10)

typedef struct { int merge_ab; } toy;

static tune_status toy_encode(void *ctx, const char *s, size_t len, int add_special, int32_t **ids, size_t *n,
                              size_t *cap, tune_error *err)
{
    (void)err;
    const toy *t = ctx;
    for (size_t i = 0; i <= len; i++) {
        if (*n + 2 > *cap) {
            *cap = *cap ? *cap * 2 : 64;
            *ids = realloc(*ids, *cap * sizeof **ids);
            ck_assert_ptr_nonnull(*ids);
        }
        if (i == 0 && add_special) (*ids)[(*n)++] = TOY_BOS;
        if (i == len) break;
        int matched = 0;
        for (int k = 0; k < N_SPECIALS && !matched; k++) {
            size_t m = strlen(SPECIALS[k]);
            if (i + m <= len && !memcmp(s + i, SPECIALS[k], m)) {
                (*ids)[(*n)++] = k + 1;
                i += m - 1;
                matched = 1;
            }
        }
        if (matched) continue;
        if (t->merge_ab && i + 1 < len && s[i] == 'a' && s[i + 1] == 'b') {
            (*ids)[(*n)++] = TOY_AB;
            i++;
            continue;
        }
        (*ids)[(*n)++] = BYTE(s[i]);
    }
    return TUNE_OK;
}

static tune_status toy_decode(void *ctx, const int32_t *ids, size_t n, tune_strbuf *out, tune_error *err)
{
    (void)ctx;
    (void)err;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] >= 1 && ids[i] <= N_SPECIALS) tune_strbuf_puts(out, SPECIALS[ids[i] - 1]);
        else if (ids[i] == TOY_AB) tune_strbuf_puts(out, "ab");
        else {
            char c = (char)(ids[i] - 10);
            tune_strbuf_append(out, &c, 1);
        }
    }
    /* a cut UTF-8 character shows as U+FFFD, as real decoders do */
    size_t bad;
    if (out->data && !tune_utf8_valid(out->data, out->len, &bad)) {
        out->len = bad;
        tune_strbuf_puts(out, "\xEF\xBF\xBD");
    }
    return TUNE_OK;
}

static toy TOY = {0}, TOY_MERGE = {1};
static tune_data_tokenizer tokenizer(toy *t)
{
    tune_data_tokenizer k = {t, toy_encode, NULL, TOY_EOS, -1, ""};
    snprintf(k.fingerprint, sizeof k.fingerprint, "%s", t->merge_ab ? "toy-merge" : "toy");
    return k;
}

/* ------------------------------------------------------------ helpers */

static char tmpdir[256];

static void make_tmpdir(void)
{
    const char *base = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/tune_test_data_XXXXXX", base && *base ? base : P_tmpdir);
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static const char *tmpfile_with(const char *name, const char *content)
{
    static char path[8][512];
    static int next;
    char *p = path[next++ % 8];
    snprintf(p, 512, "%s/%s", tmpdir, name);
    FILE *f = fopen(p, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(content, 1, strlen(content), f), strlen(content));
    ck_assert_int_eq(fclose(f), 0);
    return p;
}

static const char *fixture(const char *name)
{
    static char path[8][512];
    static int next;
    char *p = path[next++ % 8];
    snprintf(p, 512, "%s/data/%s", test_data_dir(), name);
    return p;
}

static tune_data_options base_options(const tune_dataset_options *ds, int n)
{
    tune_data_options o;
    memset(&o, 0, sizeof o);
    o.datasets = ds;
    o.n_datasets = n;
    o.chat_template.id = TUNE_TEMPLATE_LLAMA3;
    o.chat_template.opt = tune_template_default_options(TUNE_TEMPLATE_LLAMA3);
    o.sequence_len = 4096;
    o.excess = TUNE_DATA_EXCESS_DROP;
    o.seed = 42;
    return o;
}

static tune_dataset_options dataset(const char *type, const char *const *files, int n_files)
{
    tune_dataset_options d;
    tune_error err;
    ck_assert_int_eq(tune_dataset_options_init(&d, type, &err), TUNE_OK);
    d.files = files;
    d.n_files = n_files;
    return d;
}

/* Appends byte ids of s to ids (labels: masked or trained). */
static size_t expect_bytes(int32_t *ids, int32_t *labels, size_t at, const char *s, int trained)
{
    for (const char *p = s; *p; p++, at++) {
        ids[at] = BYTE(*p);
        labels[at] = trained ? ids[at] : TUNE_IGNORE_INDEX;
    }
    return at;
}

static size_t expect_id(int32_t *ids, int32_t *labels, size_t at, int32_t id, int trained)
{
    ids[at] = id;
    labels[at] = trained ? id : TUNE_IGNORE_INDEX;
    return at + 1;
}

static void assert_example(const tune_example_set *s, size_t i, const int32_t *ids, const int32_t *labels, size_t n)
{
    const tune_example *x = &s->items[i];
    ck_assert_int_eq(x->n, (int)n);
    for (size_t k = 0; k < n; k++) {
        ck_assert_msg(s->ids[x->offset + k] == ids[k], "example %zu token %zu: id %d, want %d", i, k,
                      s->ids[x->offset + k], ids[k]);
        ck_assert_msg(s->labels[x->offset + k] == labels[k], "example %zu token %zu: label %d, want %d", i, k,
                      s->labels[x->offset + k], labels[k]);
    }
}

/* Reads one file and returns the first error. */
static tune_error read_error(const char *path, tune_data_format fmt)
{
    tune_record_list recs = {0};
    tune_error err;
    tune_error_clear(&err);
    ck_assert_int_eq(tune_data_read_file(path, fmt, &recs, NULL, &err), TUNE_ERR_INPUT);
    tune_record_list_free(&recs);
    return err;
}

/* Prepares one dataset and returns the error. */
static tune_error prepare_error(tune_dataset_options *d, tune_template_id tpl)
{
    tune_data_options o = base_options(d, 1);
    o.chat_template.id = tpl;
    tune_data_tokenizer tok = tokenizer(&TOY);
    tune_prepared p;
    tune_error err;
    tune_error_clear(&err);
    ck_assert_int_eq(tune_data_prepare(&o, &tok, NULL, 0, &p, &err), TUNE_ERR_INPUT);
    return err;
}

/* ------------------------------------------------------------ reading */

START_TEST(test_read_errors_name_file_line_field)
{
    make_tmpdir();
    const char *f = tmpfile_with("a.jsonl", "{\"instruction\": \"x\", \"output\": \"y\"}\n"
                                            "\n"
                                            "{\"instruction\": \"x\", \"output\": \"y\"\n");
    tune_error e = read_error(f, TUNE_FORMAT_ALPACA);
    ck_assert_str_eq(e.file, f);
    ck_assert_int_eq(e.line, 3);
    ck_assert_int_eq(e.record, 1);
    ck_assert_ptr_nonnull(strstr(e.message, "invalid JSON"));

    f = tmpfile_with("u.jsonl", "{\"instruction\": \"x\", \"output\": \"y\"}\n{\"instruction\": \"\xff\"}\n");
    e = read_error(f, TUNE_FORMAT_ALPACA);
    ck_assert_int_eq(e.line, 2);
    ck_assert_ptr_nonnull(strstr(e.message, "UTF-8"));

    /* JSON array: record index and the line where it starts */
    f = tmpfile_with("arr.json", "[\n {\"a\": 1},\n {\"a\": \n   2,},\n {\"a\": 3}\n]\n");
    e = read_error(f, TUNE_FORMAT_CHAT);
    ck_assert_int_eq(e.record, 1);
    ck_assert_int_eq(e.line, 4);

    f = tmpfile_with("notarr.json", "[\n {\"a\": 1},\n 7\n]\n");
    e = read_error(f, TUNE_FORMAT_CHAT);
    ck_assert_int_eq(e.record, 1);
    ck_assert_ptr_nonnull(strstr(e.message, "not a JSON object"));

    f = tmpfile_with("open.json", "[\n {\"a\": 1},\n {\"a\": [1, 2}\n");
    e = read_error(f, TUNE_FORMAT_CHAT);
    ck_assert_int_eq(e.code, TUNE_ERR_INPUT);
}
END_TEST

START_TEST(test_field_errors)
{
    make_tmpdir();
    const char *files[1];
    files[0] = tmpfile_with("m.jsonl", "{\"instruction\": \"x\", \"output\": \"y\"}\n{\"instruction\": \"x\"}\n");
    tune_dataset_options d = dataset("alpaca", files, 1);
    tune_error e = prepare_error(&d, TUNE_TEMPLATE_LLAMA3);
    ck_assert_int_eq(e.line, 2);
    ck_assert_int_eq(e.record, 1);
    ck_assert_ptr_nonnull(strstr(e.message, "missing field 'output'"));

    files[0] = tmpfile_with("t.jsonl", "{\"instruction\": 5, \"output\": \"y\"}\n");
    d = dataset("alpaca", files, 1);
    e = prepare_error(&d, TUNE_TEMPLATE_LLAMA3);
    ck_assert_int_eq(e.line, 1);
    ck_assert_ptr_nonnull(strstr(e.message, "'instruction' must be a string"));

    files[0] = tmpfile_with("c.jsonl", "{\"messages\": []}\n");
    d = dataset("chat_template", files, 1);
    e = prepare_error(&d, TUNE_TEMPLATE_LLAMA3);
    ck_assert_ptr_nonnull(strstr(e.message, "empty conversation"));

    files[0] = tmpfile_with("r.jsonl", "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, "
                                       "{\"role\": \"bot\", \"content\": \"b\"}]}\n");
    d = dataset("chat_template", files, 1);
    e = prepare_error(&d, TUNE_TEMPLATE_LLAMA3);
    ck_assert_ptr_nonnull(strstr(e.message, "messages[1].role"));
    ck_assert_ptr_nonnull(strstr(e.message, "'bot'"));

    files[0] = tmpfile_with("k.jsonl", "{\"messages\": [{\"role\": \"user\"}]}\n");
    d = dataset("chat_template", files, 1);
    e = prepare_error(&d, TUNE_TEMPLATE_LLAMA3);
    ck_assert_ptr_nonnull(strstr(e.message, "messages[0]: missing field 'content'"));

    /* Llama-2 needs alternating roles */
    files[0] = tmpfile_with("alt.jsonl", "{\"x\": 1}\n{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, "
                                         "{\"role\": \"user\", \"content\": \"b\"}]}\n");
    d = dataset("chat_template", files, 1);
    d.field_messages = "messages";
    e = prepare_error(&d, TUNE_TEMPLATE_LLAMA2);
    ck_assert_int_eq(e.line, 1); /* the first record lacks 'messages' */
    files[0] = tmpfile_with("alt2.jsonl", "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, "
                                          "{\"role\": \"user\", \"content\": \"b\"}]}\n");
    e = prepare_error(&d, TUNE_TEMPLATE_LLAMA2);
    ck_assert_str_eq(e.file, files[0]);
    ck_assert_int_eq(e.line, 1);
    ck_assert_ptr_nonnull(strstr(e.message, "alternate"));
}
END_TEST

START_TEST(test_skip_bad_records_counts_reasons)
{
    make_tmpdir();
    const char *files[] = {tmpfile_with("s.jsonl", "{\"instruction\": \"a\", \"output\": \"b\"}\n"
                                                   "not json\n"
                                                   "{\"instruction\": \"a\"}\n"
                                                   "{\"instruction\": \"\xc3\x28\", \"output\": \"b\"}\n"
                                                   "{\"instruction\": \"c\", \"output\": \"d\"}\n")};
    tune_dataset_options d = dataset("alpaca", files, 1);
    tune_data_options o = base_options(&d, 1);
    o.skip_bad_records = 1;
    tune_data_tokenizer tok = tokenizer(&TOY);
    tune_prepared p;
    tune_error err;
    ck_assert_int_eq(tune_data_prepare(&o, &tok, NULL, 0, &p, &err), TUNE_OK);
    ck_assert_int_eq(p.train.count, 2);
    ck_assert_int_eq(p.report.datasets[0].records, 5);
    ck_assert_int_eq(p.report.datasets[0].skipped, 3);
    ck_assert_int_eq(p.report.skipped.count, 3);
    ck_assert_int_eq(p.report.skipped.items[0].line, 2);
    ck_assert_int_eq(p.report.skipped.items[1].line, 3);
    ck_assert_ptr_nonnull(strstr(p.report.skipped.items[1].message, "output"));
    ck_assert_int_eq(p.report.skipped.items[2].line, 4);
    /* the surviving records keep their record numbers */
    ck_assert_int_eq(p.train.items[1].record, 4);
    tune_prepared_free(&p);
}
END_TEST

/* ------------------------------------------------------------ formats and masks */

START_TEST(test_alpaca_exact_labels)
{
    const char *files[] = {fixture("alpaca.jsonl")};
    tune_dataset_options d = dataset("alpaca", files, 1);
    tune_data_options o = base_options(&d, 1);
    tune_data_tokenizer tok = tokenizer(&TOY);
    for (int inputs = 0; inputs < 2; inputs++) {
        o.train_on_inputs = inputs;
        tune_prepared p;
        tune_error err;
        ck_assert_int_eq(tune_data_prepare(&o, &tok, NULL, 0, &p, &err), TUNE_OK);
        ck_assert_int_eq(p.train.count, 3);
        int32_t ids[1024], labels[1024];
        /* BOS once (the prompt is encoded with special tokens), prompt, response, EOS */
        size_t n = expect_id(ids, labels, 0, TOY_BOS, inputs);
        n = expect_bytes(ids, labels, n,
                         "Below is an instruction that describes a task. Write a response that appropriately "
                         "completes the request.\n\n### Instruction:\nSum A1:A3.\n\n### Response:\n",
                         inputs);
        n = expect_bytes(ids, labels, n, "=SUM(A1:A3)", 1);
        n = expect_id(ids, labels, n, TOY_EOS, 1);
        assert_example(&p.train, 0, ids, labels, n);
        n = expect_id(ids, labels, 0, TOY_BOS, inputs);
        n = expect_bytes(ids, labels, n,
                         "Below is an instruction that describes a task, paired with an input that provides "
                         "further context. Write a response that appropriately completes the request.\n\n"
                         "### Instruction:\n합계를 구하세요.\n\n### Input:\nA1:A10 매출\n\n### Response:\n",
                         inputs);
        n = expect_bytes(ids, labels, n, "=SUM(A1:A10)", 1);
        n = expect_id(ids, labels, n, TOY_EOS, 1);
        assert_example(&p.train, 1, ids, labels, n);
        tune_prepared_free(&p);
    }
}
END_TEST

START_TEST(test_chat_llama3_exact_labels)
{
    make_tmpdir();
    const char *files[] = {tmpfile_with("c.jsonl", "{\"messages\": [{\"role\": \"system\", \"content\": \"S\"}, "
                                                   "{\"role\": \"user\", \"content\": \"Q\"}, "
                                                   "{\"role\": \"assistant\", \"content\": \" A \"}]}\n")};
    tune_dataset_options d = dataset("chat_template", files, 1);
    tune_data_options o = base_options(&d, 1);
    tune_data_tokenizer tok = tokenizer(&TOY);
    const tune_data_train_on_eos modes[] = {TUNE_DATA_EOS_TURN, TUNE_DATA_EOS_NONE, TUNE_DATA_EOS_ALL};
    for (int m = 0; m < 3; m++) {
        d.train_on_eos = modes[m];
        tune_prepared p;
        tune_error err;
        ck_assert_int_eq(tune_data_prepare(&o, &tok, NULL, 0, &p, &err), TUNE_OK);
        int all = modes[m] == TUNE_DATA_EOS_ALL, eos = modes[m] != TUNE_DATA_EOS_NONE;
        int32_t ids[256], labels[256];
        size_t n = expect_id(ids, labels, 0, 5, 0); /* <|begin_of_text|> as text, no second BOS */
        n = expect_id(ids, labels, n, 7, 0);
        n = expect_bytes(ids, labels, n, "system", 0);
        n = expect_id(ids, labels, n, 8, 0);
        n = expect_bytes(ids, labels, n, "\n\nS", 0);
        n = expect_id(ids, labels, n, 6, all);
        n = expect_id(ids, labels, n, 7, 0);
        n = expect_bytes(ids, labels, n, "user", 0);
        n = expect_id(ids, labels, n, 8, 0);
        n = expect_bytes(ids, labels, n, "\n\nQ", 0);
        n = expect_id(ids, labels, n, 6, all);
        n = expect_id(ids, labels, n, 7, 0);
        n = expect_bytes(ids, labels, n, "assistant", 0);
        n = expect_id(ids, labels, n, 8, 0);
        n = expect_bytes(ids, labels, n, "\n\n", 0);
        n = expect_bytes(ids, labels, n, "A", 1); /* trimmed by the template */
        n = expect_id(ids, labels, n, 6, eos);
        assert_example(&p.train, 0, ids, labels, n);
        ck_assert_int_eq(p.report.datasets[0].boundary_mismatch, 0);
        tune_prepared_free(&p);
    }
}
END_TEST

START_TEST(test_sharegpt_chatml_labels)
{
    const char *files[] = {fixture("sharegpt.json")};
    tune_dataset_options d = dataset("sharegpt", files, 1);
    tune_data_options o = base_options(&d, 1);
    o.chat_template.id = TUNE_TEMPLATE_CHATML;
    o.chat_template.opt = tune_template_default_options(TUNE_TEMPLATE_CHATML);
    tune_data_tokenizer tok = tokenizer(&TOY);
    tune_prepared p;
    tune_error err;
    ck_assert_int_eq(tune_data_prepare(&o, &tok, NULL, 1, &p, &err), TUNE_OK);
    ck_assert_int_eq(p.train.count, 2);
    ck_assert_str_eq(p.texts[1].data, "<|im_start|>user\nQ1<|im_end|>\n<|im_start|>assistant\nA1<|im_end|>\n"
                                      "<|im_start|>user\nQ2<|im_end|>\n<|im_start|>assistant\nA2<|im_end|>\n");
    int32_t ids[256], labels[256];
    size_t n = 0;
    const char *turns[][2] = {{"user", "Q1"}, {"assistant", "A1"}, {"user", "Q2"}, {"assistant", "A2"}};
    for (int t = 0; t < 4; t++) {
        int train = t % 2 == 1;
        n = expect_id(ids, labels, n, 3, 0);
        n = expect_bytes(ids, labels, n, turns[t][0], 0);
        n = expect_bytes(ids, labels, n, "\n", 0);
        n = expect_bytes(ids, labels, n, turns[t][1], train);
        n = expect_id(ids, labels, n, 4, train);
        n = expect_bytes(ids, labels, n, "\n", 0);
    }
    assert_example(&p.train, 1, ids, labels, n);
    ck_assert_int_eq(p.report.datasets[0].trained_tokens, (5 + 1) + (2 + 1) * 2);
    tune_prepared_free(&p);
}
END_TEST

START_TEST(test_llama2_text_records)
{
    const char *files[] = {fixture("llama2.txt")};
    tune_dataset_options d = dataset("llama2", files, 1);
    tune_data_options o = base_options(&d, 1);
    o.chat_template.opt = tune_template_default_options(TUNE_TEMPLATE_LLAMA2); /* a tokenizer with <s> / </s> */
    tune_data_tokenizer tok = tokenizer(&TOY);
    tune_prepared p;
    tune_error err;
    ck_assert_int_eq(tune_data_prepare(&o, &tok, NULL, 1, &p, &err), TUNE_OK);
    ck_assert_int_eq(p.train.count, 2);
    ck_assert_str_eq(p.texts[0].data,
                     "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello </s><s>[INST] More [/INST] Sure </s>");
    int32_t ids[256], labels[256];
    size_t n = expect_id(ids, labels, 0, TOY_BOS, 0);
    n = expect_bytes(ids, labels, n, "[INST] Q [/INST] ", 0);
    n = expect_bytes(ids, labels, n, "A", 1);
    n = expect_bytes(ids, labels, n, " ", 0);
    n = expect_id(ids, labels, n, TOY_EOS, 1);
    assert_example(&p.train, 1, ids, labels, n);
    tune_prepared_free(&p);

    tune_chat_message *m;
    int k;
    char *storage;
    const char *bad = "<s>[INST] Q [/INST] A </s><s>[INST] Q2";
    ck_assert_int_eq(tune_llama2_parse(bad, strlen(bad), &m, &k, &storage, &err), TUNE_ERR_INPUT);
    ck_assert_ptr_nonnull(strstr(err.message, "turn 2"));
}
END_TEST

/* Llama-2-chat text for a tokenizer whose EOS is not "</s>" (the tiny
 * tokenizer: <|im_start|> / <|im_end|>): the record's literal <s> and </s>
 * are parsed as markers, and every reply ends with the EOS id, trained. */
START_TEST(test_llama2_text_trains_tokenizer_eos)
{
    char path[512];
    snprintf(path, sizeof path, "%s/tiny/tokenizer", test_data_dir());
    tune_tokenizer *tk;
    tune_data_tokenizer dt;
    tune_error err;
    ck_assert_int_eq(tune_tokenizer_load(path, &tk, &err), TUNE_OK);
    ck_assert_int_eq(tune_data_tokenizer_wrap(tk, path, &dt, &err), TUNE_OK);
    const tune_special_ids *sp = tune_tokenizer_specials(tk);
    ck_assert_int_ge(sp->eos, 0);
    ck_assert_str_eq(tune_tokenizer_id_to_token(tk, sp->eos), "<|im_end|>");
    tune_dataset_options d = dataset("llama2", NULL, 0);
    tune_data_options o = base_options(&d, 1);
    /* as the plan sets them: the tokenizer's BOS/EOS texts */
    o.chat_template.opt.bos = tune_tokenizer_id_to_token(tk, sp->bos);
    o.chat_template.opt.eos = tune_tokenizer_id_to_token(tk, sp->eos);
    char text[] = "<s>[INST] Sum A1 to A3 [/INST] =SUM(A1:A3) </s><s>[INST] And B? [/INST] =SUM(B1:B3) </s>";
    tune_record rec = {.text = text, .text_len = strlen(text), .file = "mem", .line = 1};
    tune_formatted f;
    ck_assert_int_eq(tune_data_format_record(&rec, &d, &o, &f, &err), TUNE_OK);
    ck_assert_str_eq(f.text.data, "<|im_start|>[INST] Sum A1 to A3 [/INST] =SUM(A1:A3) <|im_end|>"
                                  "<|im_start|>[INST] And B? [/INST] =SUM(B1:B3) <|im_end|>");
    int32_t *ids, *labels;
    size_t n;
    int mismatch;
    ck_assert_int_eq(tune_data_tokenize(&f, &dt, &ids, &labels, &n, &mismatch, &err), TUNE_OK);
    int eos_trained = 0, eos_seen = 0;
    for (size_t k = 0; k < n; k++) {
        if (ids[k] == sp->eos) {
            eos_seen++;
            eos_trained += labels[k] == sp->eos;
        }
    }
    ck_assert_int_eq(eos_seen, 2);
    ck_assert_int_eq(eos_trained, 2);
    /* the last trained token is the EOS id, and no trained text spells "</s>" */
    size_t last = n;
    while (last > 0 && labels[last - 1] == TUNE_IGNORE_INDEX) last--;
    ck_assert_uint_gt(last, 0);
    ck_assert_int_eq(labels[last - 1], sp->eos);
    ck_assert_ptr_null(strstr(f.text.data, "</s>"));
    free(ids);
    free(labels);
    tune_formatted_free(&f);
    tune_tokenizer_free(tk);
}
END_TEST

START_TEST(test_completion_chunks)
{
    const char *files[] = {fixture("completion.txt")};
    tune_dataset_options d = dataset("completion", files, 1);
    tune_data_options o = base_options(&d, 1);
    o.sequence_len = 4;
    tune_data_tokenizer tok = tokenizer(&TOY);
    tune_prepared p;
    tune_error err;
    ck_assert_int_eq(tune_data_prepare(&o, &tok, NULL, 0, &p, &err), TUNE_OK);
    /* BOS + 10 bytes + EOS = 12 tokens -> 3 chunks of 4, all trained */
    ck_assert_int_eq(p.train.count, 3);
    ck_assert_int_eq(p.train.ids[0], TOY_BOS);
    ck_assert_int_eq(p.train.ids[11], TOY_EOS);
    for (size_t i = 0; i < p.train.n_tokens; i++) ck_assert_int_eq(p.train.labels[i], p.train.ids[i]);
    tune_prepared_free(&p);
}
END_TEST

START_TEST(test_pieces_vs_whole_tokenization)
{
    /* The merging tokenizer joins "ab". Inside a piece the merge is the
     * same whether the text is cut or not: pieces and whole agree. */
    make_tmpdir();
    const char *files[] = {tmpfile_with("c.jsonl", "{\"messages\": [{\"role\": \"user\", \"content\": \"xab\"}, "
                                                   "{\"role\": \"assistant\", \"content\": \"ab\"}]}\n")};
    tune_dataset_options d = dataset("chat_template", files, 1);
    tune_data_options o = base_options(&d, 1);
    o.chat_template.id = TUNE_TEMPLATE_VICUNA; /* "... ASSISTANT: ab</s>" */
    tune_data_tokenizer tok = tokenizer(&TOY_MERGE);
    tune_prepared p;
    tune_error err;
    ck_assert_int_eq(tune_data_prepare(&o, &tok, NULL, 0, &p, &err), TUNE_OK);
    ck_assert_int_eq(p.report.datasets[0].boundary_mismatch, 0);
    const tune_example *x = &p.train.items[0];
    ck_assert_int_eq(p.train.ids[x->offset + (size_t)x->n - 2], TOY_AB);
    ck_assert_int_eq(p.train.labels[x->offset + (size_t)x->n - 2], TOY_AB);
    tune_prepared_free(&p);

    /* A cut through a merge: pieces "xa" | "b" give x a b, the whole text
     * x ab. The whole text's ids are kept. */
    tune_formatted f = {0};
    tune_strbuf_puts(&f.text, "xab");
    tune_text_piece pieces[] = {{TUNE_PIECE_TEXT, 0, 2, 0, 0}, {TUNE_PIECE_TEXT, 2, 3, 1, 0}};
    f.pieces = pieces;
    f.n_pieces = 2;
    f.tokenize_whole = 1;
    int32_t *ids, *labels;
    size_t n;
    int mismatch;
    ck_assert_int_eq(tune_data_tokenize(&f, &tok, &ids, &labels, &n, &mismatch, &err), TUNE_OK);
    ck_assert_int_eq(mismatch, 1);
    ck_assert_uint_eq(n, 2); /* the whole text's ids: 'x', 'ab' */
    ck_assert_int_eq(ids[0], BYTE('x'));
    ck_assert_int_eq(ids[1], TOY_AB);
    ck_assert_int_eq(labels[0], TUNE_IGNORE_INDEX);
    ck_assert_int_eq(labels[1], TOY_AB); /* the straddling token goes to the piece it completes in */
    free(ids);
    free(labels);
    tune_strbuf_free(&f.text);
}
END_TEST

/* ------------------------------------------------------------ shaping */

START_TEST(test_excess_length_strategies)
{
    const char *files[] = {fixture("alpaca.jsonl")};
    tune_dataset_options d = dataset("alpaca", files, 1);
    tune_data_options o = base_options(&d, 1);
    tune_data_tokenizer tok = tokenizer(&TOY);
    o.sequence_len = 250; /* records 0 and 2 (163 tokens) fit; record 1 (255, prompt 242) does not */
    tune_prepared p;
    tune_error err;
    o.excess = TUNE_DATA_EXCESS_DROP;
    ck_assert_msg(tune_data_prepare(&o, &tok, NULL, 0, &p, &err) == TUNE_OK, "%s", err.message);
    ck_assert_int_eq(p.train.count, 2);
    ck_assert_int_eq(p.report.datasets[0].dropped_long, 1);
    ck_assert_int_eq(p.train.items[1].record, 2);
    tune_prepared_free(&p);
    o.excess = TUNE_DATA_EXCESS_TRUNCATE;
    ck_assert_int_eq(tune_data_prepare(&o, &tok, NULL, 0, &p, &err), TUNE_OK);
    ck_assert_int_eq(p.train.count, 3);
    ck_assert_int_eq(p.train.items[1].n, 250);
    ck_assert_int_eq(p.report.datasets[0].truncated, 1);
    ck_assert_int_eq(p.train.labels[p.train.items[1].offset + 241], TUNE_IGNORE_INDEX);
    ck_assert_int_ne(p.train.labels[p.train.items[1].offset + 242], TUNE_IGNORE_INDEX);
    tune_prepared_free(&p);
    /* cut inside the prompt: nothing left to train, so it is dropped and counted */
    o.sequence_len = 200;
    ck_assert_int_eq(tune_data_prepare(&o, &tok, NULL, 0, &p, &err), TUNE_OK);
    ck_assert_int_eq(p.train.count, 2);
    ck_assert_int_eq(p.report.datasets[0].dropped_untrained, 1);
    tune_prepared_free(&p);
    o.sequence_len = 250;
    o.excess = TUNE_DATA_EXCESS_RAISE;
    ck_assert_int_eq(tune_data_prepare(&o, &tok, NULL, 0, &p, &err), TUNE_ERR_INPUT);
    ck_assert_int_eq(err.line, 2);
    ck_assert_int_eq(err.record, 1);
    ck_assert_str_eq(err.file, files[0]);
    ck_assert_ptr_nonnull(strstr(err.message, "255 tokens, more than sequence_len 250"));
}
END_TEST

static const char *many_records(int n)
{
    tune_strbuf sb = {0};
    for (int i = 0; i < n; i++)
        tune_strbuf_printf(&sb, "{\"instruction\": \"q%d\", \"output\": \"%.*s\"}\n", i, 1 + i % 7, "abcdefg");
    const char *f = tmpfile_with("many.jsonl", sb.data);
    tune_strbuf_free(&sb);
    return f;
}

START_TEST(test_split_deterministic)
{
    make_tmpdir();
    const char *files[] = {many_records(40)};
    tune_dataset_options d = dataset("alpaca", files, 1);
    tune_data_options o = base_options(&d, 1);
    tune_data_tokenizer tok = tokenizer(&TOY);
    o.val_set_size = 0.1;
    tune_prepared a, b, c;
    tune_error err;
    ck_assert_int_eq(tune_data_prepare(&o, &tok, NULL, 0, &a, &err), TUNE_OK);
    ck_assert_int_eq(tune_data_prepare(&o, &tok, NULL, 0, &b, &err), TUNE_OK);
    ck_assert_int_eq(a.val.count, 4);
    ck_assert_int_eq(a.train.count, 36);
    for (size_t i = 0; i < 4; i++) ck_assert_int_eq(a.val.items[i].record, b.val.items[i].record);
    /* both parts keep file order */
    for (size_t i = 1; i < a.train.count; i++) ck_assert_int_lt(a.train.items[i - 1].record, a.train.items[i].record);
    o.seed = 7;
    ck_assert_int_eq(tune_data_prepare(&o, &tok, NULL, 0, &c, &err), TUNE_OK);
    int same = 1;
    for (size_t i = 0; i < 4; i++) same &= a.val.items[i].record == c.val.items[i].record;
    ck_assert_msg(!same, "another seed picks another validation set");
    tune_prepared_free(&c);
    o.val_set_size = 5; /* a count */
    ck_assert_int_eq(tune_data_prepare(&o, &tok, NULL, 0, &c, &err), TUNE_OK);
    ck_assert_int_eq(c.val.count, 5);
    tune_prepared_free(&c);
    o.val_set_size = 40;
    ck_assert_int_eq(tune_data_prepare(&o, &tok, NULL, 0, &c, &err), TUNE_ERR_INPUT);
    tune_prepared_free(&a);
    tune_prepared_free(&b);
}
END_TEST

START_TEST(test_shuffle_per_epoch)
{
    size_t p0[50], p0b[50], p1[50], seen[50] = {0};
    tune_data_permutation(42, 3, 0, p0, 50);
    tune_data_permutation(42, 3, 0, p0b, 50);
    tune_data_permutation(42, 3, 1, p1, 50);
    ck_assert(!memcmp(p0, p0b, sizeof p0));
    ck_assert(memcmp(p0, p1, sizeof p0));
    for (int i = 0; i < 50; i++) seen[p1[i]]++;
    for (int i = 0; i < 50; i++) ck_assert_uint_eq(seen[i], 1);
    /* epoch 1 does not depend on having computed epoch 0 first: a fresh batcher agrees */
}
END_TEST

/* A set of examples with lengths lens[], ids = 1000*example + position. */
static void build_set(tune_example_set *s, const int *lens, int n)
{
    memset(s, 0, sizeof *s);
    size_t total = 0;
    for (int i = 0; i < n; i++) total += (size_t)lens[i];
    s->items = calloc((size_t)n, sizeof *s->items);
    s->ids = calloc(total, sizeof *s->ids);
    s->labels = calloc(total, sizeof *s->labels);
    size_t at = 0;
    for (int i = 0; i < n; i++) {
        s->items[i] = (tune_example){at, lens[i], 0, i};
        for (int k = 0; k < lens[i]; k++, at++) {
            s->ids[at] = 1000 * i + k;
            s->labels[at] = k == 0 ? TUNE_IGNORE_INDEX : s->ids[at];
        }
    }
    s->count = s->cap = (size_t)n;
    s->n_tokens = s->tok_cap = total;
}

START_TEST(test_packing_rows_positions)
{
    const int lens[] = {5, 3, 6, 2, 4, 8};
    tune_example_set s;
    build_set(&s, lens, 6);
    tune_batch_options bo = {.micro_batch_size = 2, .sequence_len = 8, .sample_packing = 1, .pad_id = -7};
    tune_batcher *b;
    tune_error err;
    ck_assert_int_eq(tune_batcher_create(&s, &bo, &b, &err), TUNE_OK);
    /* no shuffle, first-fit decreasing (longest first): rows [8] [6,2] [5,3] [4] */
    ck_assert_int_eq(tune_batcher_rows(b, 0, &err), 4);
    ck_assert_int_eq(tune_batcher_count(b, 0, &err), 2);
    tune_batch mb;
    ck_assert_int_eq(tune_batcher_get(b, 0, 1, &mb, &err), TUNE_OK);
    ck_assert_int_eq(mb.B, 2);
    ck_assert_int_eq(mb.T, 8);
    /* row 1 of batch 1: example 4 (4 tokens) then 4 pads */
    const int32_t want_ids[8] = {4000, 4001, 4002, 4003, -7, -7, -7, -7};
    const int32_t want_pos[8] = {0, 1, 2, 3, 0, 1, 2, 3};
    const int32_t want_seg[8] = {1, 1, 1, 1, 0, 0, 0, 0};
    for (int t = 0; t < 8; t++) {
        ck_assert_int_eq(mb.input_ids[8 + t], want_ids[t]);
        ck_assert_int_eq(mb.position_ids[8 + t], want_pos[t]);
        ck_assert_int_eq(mb.segment_ids[8 + t], want_seg[t]);
        if (t >= 4) ck_assert_int_eq(mb.labels[8 + t], TUNE_IGNORE_INDEX);
    }
    /* row 0 of batch 1: example 0 (positions 0..4, segment 1) then example 1 (0..2, segment 2) */
    const int32_t pos0[8] = {0, 1, 2, 3, 4, 0, 1, 2};
    const int32_t seg0[8] = {1, 1, 1, 1, 1, 2, 2, 2};
    for (int t = 0; t < 8; t++) {
        ck_assert_int_eq(mb.position_ids[t], pos0[t]);
        ck_assert_int_eq(mb.segment_ids[t], seg0[t]);
    }
    ck_assert_int_eq(mb.input_ids[5], 1000);
    ck_assert_int_eq(mb.labels[5], TUNE_IGNORE_INDEX);
    /* batch 0: example 5 fills row 0; row 1 holds example 2 then example 3 */
    ck_assert_int_eq(tune_batcher_get(b, 0, 0, &mb, &err), TUNE_OK);
    ck_assert_int_eq(mb.input_ids[0], 5000);
    ck_assert_int_eq(mb.input_ids[7], 5007);
    ck_assert_int_eq(mb.input_ids[8], 2000);
    ck_assert_int_eq(mb.input_ids[14], 3000);
    ck_assert_int_eq(mb.segment_ids[14], 2);
    ck_assert_int_eq(tune_batcher_get(b, 0, 2, &mb, &err), TUNE_ERR_RUN);
    tune_batcher_free(b);

    /* shuffled: every example appears exactly once per epoch, rows never overflow,
     * and epoch 3 is the same whether or not other epochs were built first */
    bo.shuffle = 1;
    bo.seed = 11;
    tune_batcher *b2, *b3;
    ck_assert_int_eq(tune_batcher_create(&s, &bo, &b2, &err), TUNE_OK);
    ck_assert_int_eq(tune_batcher_create(&s, &bo, &b3, &err), TUNE_OK);
    ck_assert_int_ge(tune_batcher_count(b2, 0, &err), 1);
    long nb = tune_batcher_count(b2, 3, &err);
    ck_assert_int_eq(nb, tune_batcher_count(b3, 3, &err));
    int count[6] = {0};
    for (long i = 0; i < nb; i++) {
        tune_batch x, y;
        ck_assert_int_eq(tune_batcher_get(b2, 3, i, &x, &err), TUNE_OK);
        size_t size = (size_t)x.B * (size_t)x.T;
        int32_t *copy = malloc(size * sizeof *copy);
        memcpy(copy, x.input_ids, size * sizeof *copy);
        ck_assert_int_eq(tune_batcher_get(b3, 3, i, &y, &err), TUNE_OK);
        ck_assert(!memcmp(copy, y.input_ids, size * sizeof *copy));
        for (size_t t = 0; t < size; t++)
            if (copy[t] >= 0 && copy[t] % 1000 == 0) count[copy[t] / 1000]++;
        free(copy);
    }
    for (int i = 0; i < 6; i++) ck_assert_int_eq(count[i], 1);
    /* packing happens once: every epoch has the same number of micro-batches */
    for (int e = 0; e < 5; e++) ck_assert_int_eq(tune_batcher_count(b2, e, &err), nb);
    tune_batcher_free(b2);
    tune_batcher_free(b3);

    /* unpacked, padded to the longest in the batch or to sequence_len */
    bo.sample_packing = 0;
    bo.shuffle = 0;
    ck_assert_int_eq(tune_batcher_create(&s, &bo, &b, &err), TUNE_OK);
    ck_assert_int_eq(tune_batcher_count(b, 0, &err), 3);
    ck_assert_int_eq(tune_batcher_get(b, 0, 0, &mb, &err), TUNE_OK);
    ck_assert_int_eq(mb.T, 5);
    ck_assert_int_eq(mb.input_ids[5 + 3], -7);
    tune_batcher_free(b);
    bo.pad_to_sequence_len = 1;
    ck_assert_int_eq(tune_batcher_create(&s, &bo, &b, &err), TUNE_OK);
    ck_assert_int_eq(tune_batcher_get(b, 0, 0, &mb, &err), TUNE_OK);
    ck_assert_int_eq(mb.T, 8);
    tune_batcher_free(b);
    free(s.items);
    free(s.ids);
    free(s.labels);
}
END_TEST

START_TEST(test_cache_invalidation)
{
    make_tmpdir();
    char cache[512];
    snprintf(cache, sizeof cache, "%s/prepared", tmpdir);
    const char *files[] = {tmpfile_with("d.jsonl", "{\"instruction\": \"a\", \"output\": \"b\"}\n")};
    tune_dataset_options d = dataset("alpaca", files, 1);
    tune_data_options o = base_options(&d, 1);
    tune_data_tokenizer tok = tokenizer(&TOY);
    tune_prepared p;
    tune_error err;
    /* preprocess (keep_text) does not read the cache but writes it */
    ck_assert_int_eq(tune_data_prepare(&o, &tok, cache, 1, &p, &err), TUNE_OK);
    ck_assert_int_eq(p.report.from_cache, 0);
    size_t n0 = p.train.n_tokens;
    tune_prepared_free(&p);
    ck_assert_int_eq(tune_data_prepare(&o, &tok, cache, 0, &p, &err), TUNE_OK);
    ck_assert_int_eq(p.report.from_cache, 1);
    ck_assert_uint_eq(p.train.n_tokens, n0);
    ck_assert_int_eq(p.report.datasets[0].examples, 1);
    tune_prepared_free(&p);
    /* changed content, same name and size */
    tmpfile_with("d.jsonl", "{\"instruction\": \"a\", \"output\": \"c\"}\n");
    ck_assert_int_eq(tune_data_prepare(&o, &tok, cache, 0, &p, &err), TUNE_OK);
    ck_assert_int_eq(p.report.from_cache, 0);
    ck_assert_int_eq(p.train.ids[p.train.n_tokens - 2], BYTE('c'));
    tune_prepared_free(&p);
    /* each of these changes tokens and must miss the cache */
    char k0[65], k[65];
    ck_assert_int_eq(tune_data_cache_key(&o, &tok, k0, &err), TUNE_OK);
    tune_data_options o2 = o;
    o2.sequence_len = 100;
    ck_assert_int_eq(tune_data_cache_key(&o2, &tok, k, &err), TUNE_OK);
    ck_assert_str_ne(k, k0);
    o2 = o;
    o2.train_on_inputs = 1;
    ck_assert_int_eq(tune_data_cache_key(&o2, &tok, k, &err), TUNE_OK);
    ck_assert_str_ne(k, k0);
    o2 = o;
    o2.chat_template.id = TUNE_TEMPLATE_CHATML;
    ck_assert_int_eq(tune_data_cache_key(&o2, &tok, k, &err), TUNE_OK);
    ck_assert_str_ne(k, k0);
    tune_data_tokenizer tok2 = tokenizer(&TOY_MERGE);
    ck_assert_int_eq(tune_data_cache_key(&o, &tok2, k, &err), TUNE_OK);
    ck_assert_str_ne(k, k0);
    ck_assert_int_eq(tune_data_cache_key(&o, &tok, k, &err), TUNE_OK);
    ck_assert_str_eq(k, k0);
    /* a damaged cache file is rebuilt, not trusted */
    char path[700];
    snprintf(path, sizeof path, "%s/%s.tunedata", cache, k0);
    ck_assert_int_eq(tune_write_file_atomic(path, "TUNEDAT1junk", 12, &err), TUNE_OK);
    ck_assert_int_eq(tune_data_prepare(&o, &tok, cache, 0, &p, &err), TUNE_OK);
    ck_assert_int_eq(p.report.from_cache, 0);
    tune_prepared_free(&p);
}
END_TEST


/* ------------------------------------------------------------ export */

static char *slurp(const char *path)
{
    char *d;
    size_t n;
    tune_error err;
    ck_assert_int_eq(tune_read_file(path, &d, &n, &err), TUNE_OK);
    return d;
}

static const tune_export_filter NO_FILTER = {-1, -1, NULL, 0, -1, 1};

START_TEST(test_export_round_trips)
{
    make_tmpdir();
    char a[512], b[512], c[512];
    snprintf(a, sizeof a, "%s/a.json", tmpdir);
    snprintf(b, sizeof b, "%s/b.txt", tmpdir);
    snprintf(c, sizeof c, "%s/c.jsonl", tmpdir);
    tune_export_stats st;
    tune_error err;
    /* alpaca -> sharegpt -> alpaca keeps every field */
    ck_assert_int_eq(tune_data_export(fixture("export.jsonl"), TUNE_EXPORT_ALPACA, a, TUNE_EXPORT_SHAREGPT, &NO_FILTER,
                                      &st, &err), TUNE_OK);
    ck_assert_int_eq(st.written, 5);
    ck_assert_int_eq(tune_data_export(a, TUNE_EXPORT_SHAREGPT, c, TUNE_EXPORT_ALPACA, &NO_FILTER, &st, &err), TUNE_OK);
    char *orig = slurp(fixture("export.jsonl")), *back = slurp(c);
    /* compare record by record as JSON */
    char *p = orig, *q = back;
    for (int i = 0; i < 5; i++) {
        char *pe = strchr(p, '\n'), *qe = strchr(q, '\n');
        ck_assert(pe && qe);
        cJSON *x = cJSON_ParseWithLength(p, (size_t)(pe - p)), *y = cJSON_ParseWithLength(q, (size_t)(qe - q));
        ck_assert_msg(cJSON_Compare(x, y, 1), "record %d differs after the round trip", i);
        cJSON_Delete(x);
        cJSON_Delete(y);
        p = pe + 1;
        q = qe + 1;
    }
    free(orig);
    free(back);

    /* sharegpt (multi-turn, system) -> llama2 -> sharegpt is exact */
    ck_assert_int_eq(tune_data_export(fixture("sharegpt.json"), TUNE_EXPORT_SHAREGPT, b, TUNE_EXPORT_LLAMA2,
                                      &NO_FILTER, &st, &err), TUNE_OK);
    char *text = slurp(b);
    ck_assert_str_eq(text, "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello </s>\n"
                           "<s>[INST] Q1 [/INST] A1 </s><s>[INST] Q2 [/INST] A2 </s>\n");
    free(text);
    ck_assert_int_eq(tune_data_export(b, TUNE_EXPORT_LLAMA2, a, TUNE_EXPORT_SHAREGPT, &NO_FILTER, &st, &err), TUNE_OK);
    char *x = slurp(a), *y = slurp(fixture("sharegpt.json"));
    cJSON *jx = cJSON_Parse(x), *jy = cJSON_Parse(y);
    ck_assert(cJSON_Compare(jx, jy, 1));
    cJSON_Delete(jx);
    cJSON_Delete(jy);
    free(x);
    free(y);

    /* llama2 text -> alpaca: the single-turn record converts, the multi-turn one is refused by name */
    ck_assert_int_eq(tune_data_export(b, TUNE_EXPORT_LLAMA2, c, TUNE_EXPORT_ALPACA, &NO_FILTER, &st, &err),
                     TUNE_ERR_INPUT);
    ck_assert_int_eq(err.record, 1);
    ck_assert_int_eq(err.line, 6);
}
END_TEST

START_TEST(test_export_filters)
{
    make_tmpdir();
    char out[512];
    snprintf(out, sizeof out, "%s/o.jsonl", tmpdir);
    tune_export_stats st;
    tune_error err;
    tune_export_filter f = {-1, -1, NULL, 0, -1, 0};
    /* default: edited records are left out */
    ck_assert_int_eq(tune_data_export(fixture("export.jsonl"), TUNE_EXPORT_ALPACA, out, TUNE_EXPORT_ALPACA, &f, &st,
                                      &err), TUNE_OK);
    ck_assert_int_eq(st.read, 5);
    ck_assert_int_eq(st.written, 4);
    f.min_quality_score = 0.85; /* r1, r4; r5 has no score */
    ck_assert_int_eq(tune_data_export(fixture("export.jsonl"), TUNE_EXPORT_ALPACA, out, TUNE_EXPORT_ALPACA, &f, &st,
                                      &err), TUNE_OK);
    ck_assert_int_eq(st.written, 2);
    f.min_quality_score = -1;
    f.min_rating = 4;
    f.include_edited = 1; /* r1, r3, r4 */
    ck_assert_int_eq(tune_data_export(fixture("export.jsonl"), TUNE_EXPORT_ALPACA, out, TUNE_EXPORT_ALPACA, &f, &st,
                                      &err), TUNE_OK);
    ck_assert_int_eq(st.written, 3);
    const char *types[] = {"FORMULA", "CHART"};
    f.task_types = types;
    f.n_task_types = 2; /* r1, r3 (r2 has rating 3) */
    ck_assert_int_eq(tune_data_export(fixture("export.jsonl"), TUNE_EXPORT_ALPACA, out, TUNE_EXPORT_ALPACA, &f, &st,
                                      &err), TUNE_OK);
    ck_assert_int_eq(st.written, 2);
    f.limit = 1;
    ck_assert_int_eq(tune_data_export(fixture("export.jsonl"), TUNE_EXPORT_ALPACA, out, TUNE_EXPORT_ALPACA, &f, &st,
                                      &err), TUNE_OK);
    ck_assert_int_eq(st.written, 1);
    char *text = slurp(out);
    ck_assert_ptr_nonnull(strstr(text, "\"id\":\"r1\""));
    ck_assert_ptr_null(strstr(text, "r3"));
    free(text);
}
END_TEST

START_TEST(test_preprocess_outputs)
{
    make_tmpdir();
    const char *files[] = {fixture("alpaca.jsonl")};
    tune_dataset_options d = dataset("alpaca", files, 1);
    d.name = "alpaca.jsonl";
    tune_data_options o = base_options(&d, 1);
    o.val_set_size = 0.3; /* ceil(0.9): one example */
    tune_data_tokenizer tok = tokenizer(&TOY);
    tune_prepared p;
    tune_error err;
    ck_assert_int_eq(tune_data_prepare(&o, &tok, NULL, 1, &p, &err), TUNE_OK);
    char path[512];
    snprintf(path, sizeof path, "%s/processed_conversations.json", tmpdir);
    ck_assert_int_eq(tune_data_write_processed(&p, path, &err), TUNE_OK);
    char *text = slurp(path);
    cJSON *j = cJSON_Parse(text);
    free(text);
    ck_assert_int_eq(cJSON_GetArraySize(j), 3);
    cJSON *last = cJSON_GetArrayItem(j, 2);
    ck_assert_str_eq(cJSON_GetObjectItem(last, "split")->valuestring, "validation");
    cJSON *first = cJSON_GetArrayItem(j, 0);
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItem(first, "labels")), p.train.items[0].n);
    ck_assert_ptr_nonnull(strstr(cJSON_GetObjectItem(first, "text")->valuestring, "### Response:\n"));
    ck_assert_int_eq(cJSON_GetArrayItem(cJSON_GetObjectItem(first, "labels"), 0)->valueint, TUNE_IGNORE_INDEX);
    cJSON_Delete(j);
    snprintf(path, sizeof path, "%s/preprocess_report.json", tmpdir);
    ck_assert_int_eq(tune_data_write_report(&p, path, &err), TUNE_OK);
    text = slurp(path);
    j = cJSON_Parse(text);
    free(text);
    cJSON *total = cJSON_GetObjectItem(j, "total");
    ck_assert_int_eq(cJSON_GetObjectItem(total, "records")->valueint, 3);
    ck_assert_int_eq(cJSON_GetObjectItem(total, "examples")->valueint, 3);
    ck_assert_int_eq(cJSON_GetObjectItem(j, "validation_examples")->valueint, 1);
    cJSON_Delete(j);
    tune_strbuf sb = {0};
    ck_assert_int_eq(tune_data_debug_example(&p, 0, &tok, 0, &sb, &err), TUNE_OK);
    /* masked tokens plain, trained ones bracketed; without decode each token shows its id */
    ck_assert_ptr_nonnull(strstr(sb.data, "<1><76>"));
    ck_assert_ptr_nonnull(strstr(sb.data, "[<2>]\n"));
    tune_strbuf_free(&sb);
    /* with a decoder: text, multi-byte characters whole, trained tokens bracketed */
    tok.decode = toy_decode;
    memset(&sb, 0, sizeof sb);
    size_t korean = 0; /* the example of record 1, in train or validation */
    for (size_t i = 0; i < p.train.count + p.val.count; i++)
        if ((i < p.train.count ? p.train.items[i] : p.val.items[i - p.train.count]).record == 1) korean = i;
    ck_assert_int_eq(tune_data_debug_example(&p, korean, &tok, 0, &sb, &err), TUNE_OK);
    ck_assert_ptr_nonnull(strstr(sb.data, "### Instruction:\n합계를 구하세요."));
    ck_assert_ptr_nonnull(strstr(sb.data, "[=][S][U][M]"));
    ck_assert_ptr_nonnull(strstr(sb.data, "[</s>]\n"));
    tune_strbuf_free(&sb);
    tune_prepared_free(&p);
}
END_TEST

START_TEST(test_truncated_inputs_never_crash)
{
    /* Every prefix of valid JSON, JSONL and Llama-2 files reads as records or
     * as an input error, never a crash or an out-of-bounds read (ASan). */
    make_tmpdir();
    const char *names[] = {"sharegpt.json", "alpaca.jsonl", "llama2.txt"};
    const tune_data_format fmts[] = {TUNE_FORMAT_CHAT, TUNE_FORMAT_ALPACA, TUNE_FORMAT_LLAMA2};
    for (int k = 0; k < 3; k++) {
        char *full = slurp(fixture(names[k]));
        size_t n = strlen(full);
        for (size_t cut = 0; cut <= n; cut++) {
            char name[64];
            snprintf(name, sizeof name, "cut%s", strchr(names[k], '.'));
            char *part = strndup(full, cut);
            const char *f = tmpfile_with(name, part);
            free(part);
            tune_record_list recs = {0};
            tune_error err;
            tune_status st = tune_data_read_file(f, fmts[k], &recs, NULL, &err);
            ck_assert(st == TUNE_OK || st == TUNE_ERR_INPUT);
            tune_dataset_options d = dataset(k == 0 ? "sharegpt" : k == 1 ? "alpaca" : "llama2", &f, 1);
            tune_data_options o = base_options(&d, 1);
            for (size_t i = 0; i < recs.count; i++) {
                tune_formatted fm;
                st = tune_data_format_record(&recs.items[i], &d, &o, &fm, &err);
                ck_assert(st == TUNE_OK || st == TUNE_ERR_INPUT);
                tune_formatted_free(&fm);
            }
            tune_record_list_free(&recs);
        }
        free(full);
    }
}
END_TEST

START_TEST(test_test_datasets_are_validation)
{
    const char *train_files[] = {fixture("alpaca.jsonl")}, *test_files[] = {fixture("sharegpt.json")};
    tune_dataset_options d[2] = {dataset("alpaca", train_files, 1), dataset("sharegpt", test_files, 1)};
    tune_data_options o = base_options(d, 1);
    o.test_datasets = &d[1];
    o.n_test_datasets = 1;
    tune_data_tokenizer tok = tokenizer(&TOY);
    tune_prepared p;
    tune_error err;
    ck_assert_int_eq(tune_data_prepare(&o, &tok, NULL, 0, &p, &err), TUNE_OK);
    ck_assert_int_eq(p.train.count, 3);
    ck_assert_int_eq(p.val.count, 2);
    ck_assert_int_eq(p.val.items[0].dataset, 1);
    ck_assert_int_eq(p.report.n_datasets, 2);
    tune_prepared_free(&p);
    o.val_set_size = 0.5;
    ck_assert_int_eq(tune_data_prepare(&o, &tok, NULL, 0, &p, &err), TUNE_ERR_INPUT);
}
END_TEST

START_TEST(test_resolve_files)
{
    make_tmpdir();
    tmpfile_with("train.jsonl", "{}\n");
    tmpfile_with("eval.jsonl", "{}\n");
    tmpfile_with("train-2.json", "[]\n");
    tmpfile_with("README.md", "x\n");
    char **files;
    int n;
    tune_error err;
    ck_assert_int_eq(tune_data_resolve_files(tmpdir, NULL, 0, "train", &files, &n, &err), TUNE_OK);
    ck_assert_int_eq(n, 2);
    ck_assert_ptr_nonnull(strstr(files[0], "/train-2.json"));
    ck_assert_ptr_nonnull(strstr(files[1], "/train.jsonl"));
    tune_data_files_free(files, n);
    ck_assert_int_eq(tune_data_resolve_files(tmpdir, NULL, 0, "test", &files, &n, &err), TUNE_OK);
    ck_assert_int_eq(n, 3); /* no file of that split: all data files */
    tune_data_files_free(files, n);
    const char *df[] = {"eval.jsonl"};
    ck_assert_int_eq(tune_data_resolve_files(tmpdir, df, 1, "train", &files, &n, &err), TUNE_OK);
    ck_assert_int_eq(n, 1);
    ck_assert_ptr_nonnull(strstr(files[0], "/eval.jsonl"));
    tune_data_files_free(files, n);
    const char *missing[] = {"nope.jsonl"};
    ck_assert_int_eq(tune_data_resolve_files(tmpdir, missing, 1, "train", &files, &n, &err), TUNE_ERR_INPUT);
    ck_assert_ptr_nonnull(strstr(err.file, "nope.jsonl"));
    ck_assert_int_eq(tune_data_resolve_files(fixture("alpaca.jsonl"), NULL, 0, "train", &files, &n, &err), TUNE_OK);
    ck_assert_int_eq(n, 1);
    tune_data_files_free(files, n);
}
END_TEST

START_TEST(test_record_system_field)
{
    make_tmpdir();
    const char *files[] = {tmpfile_with("s.jsonl",
                                        "{\"system\": \"R\", \"messages\": [{\"role\": \"human\", \"content\": \"Q\"}, "
                                        "{\"role\": \"gpt\", \"content\": \"A\"}]}\n"
                                        "{\"messages\": [{\"role\": \"user\", \"content\": \"Q\"}, "
                                        "{\"role\": \"assistant\", \"content\": \"A\"}]}\n")};
    tune_dataset_options d = dataset("chat_template", files, 1);
    tune_data_options o = base_options(&d, 1);
    o.chat_template.id = TUNE_TEMPLATE_CHATML;
    o.default_system_message = "D";
    tune_data_tokenizer tok = tokenizer(&TOY);
    tune_prepared p;
    tune_error err;
    ck_assert_int_eq(tune_data_prepare(&o, &tok, NULL, 1, &p, &err), TUNE_OK);
    ck_assert_str_eq(p.texts[0].data, "<|im_start|>system\nR<|im_end|>\n<|im_start|>user\nQ<|im_end|>\n"
                                      "<|im_start|>assistant\nA<|im_end|>\n");
    ck_assert_str_eq(p.texts[1].data, "<|im_start|>system\nD<|im_end|>\n<|im_start|>user\nQ<|im_end|>\n"
                                      "<|im_start|>assistant\nA<|im_end|>\n");
    tune_prepared_free(&p);
}
END_TEST

/* Limits (docs/limits.md): a conversation of more than TUNE_DATA_MAX_MESSAGES
 * messages is refused naming its record (a Jinja template's spans take time
 * quadratic in the messages); one of exactly that many is formatted. */
START_TEST(test_conversation_length_limit)
{
    tune_dataset_options d = dataset("chat_template", NULL, 0);
    tune_data_options o = base_options(&d, 1);
    for (int n = TUNE_DATA_MAX_MESSAGES; n <= TUNE_DATA_MAX_MESSAGES + 1; n++) {
        tune_strbuf json = {0};
        tune_strbuf_puts(&json, "{\"messages\": [");
        for (int i = 0; i < n; i++)
            tune_strbuf_printf(&json, "%s{\"role\": \"%s\", \"content\": \"m\"}", i ? ", " : "",
                               i % 2 ? "assistant" : "user");
        tune_strbuf_puts(&json, "]}");
        tune_record rec = {.json = cJSON_Parse(json.data), .file = "c.jsonl", .line = 7, .index = 3};
        ck_assert_ptr_nonnull(rec.json);
        tune_formatted f;
        tune_error err;
        tune_status st = tune_data_format_record(&rec, &d, &o, &f, &err);
        if (n == TUNE_DATA_MAX_MESSAGES) {
            ck_assert_int_eq(st, TUNE_OK);
        } else {
            ck_assert_int_eq(st, TUNE_ERR_INPUT);
            ck_assert_str_eq(err.file, "c.jsonl");
            ck_assert_int_eq(err.line, 7);
            ck_assert_int_eq(err.record, 3);
            ck_assert_ptr_nonnull(strstr(err.message, "a conversation of 1025 messages, more than tune's limit of 1024"));
        }
        tune_formatted_free(&f);
        cJSON_Delete(rec.json);
        tune_strbuf_free(&json);
    }
}
END_TEST

/* The records of a long JSON array keep their lines (counted once as the
 * reader goes, not from the start of the file for every record). */
START_TEST(test_long_json_array_lines)
{
    tune_strbuf json = {0};
    tune_strbuf_puts(&json, "[\n");
    for (int i = 0; i < 5000; i++) tune_strbuf_puts(&json, "{\"text\": \"a\"},\n");
    tune_strbuf_puts(&json, "\n{\"text\": \"b\"},\n7\n]\n");
    tune_record_list recs = {0};
    tune_error err;
    ck_assert_int_eq(tune_data_read_buffer("long.json", json.data, json.len, TUNE_FORMAT_COMPLETION, &recs, NULL, &err),
                     TUNE_ERR_INPUT);
    ck_assert_uint_eq(recs.count, 5001);
    ck_assert_int_eq(recs.items[4999].line, 5001);
    ck_assert_int_eq(recs.items[5000].line, 5003);
    ck_assert_int_eq(err.line, 5004);
    ck_assert_int_eq(err.record, 5001);
    ck_assert_ptr_nonnull(strstr(err.message, "not a JSON object"));
    tune_record_list_free(&recs);
    tune_strbuf_free(&json);
}
END_TEST

/* ------------------------------------------------------------ real tokenizers */

/* Token ids against apply_chat_template(tokenize=True) / Axolotl-style alpaca
 * encodings with the test tokenizers (tests/data/data/template_ids_golden.json,
 * tools/reference/make_template_golden.py --ids). */
START_TEST(test_ids_match_transformers)
{
    char path[512];
    tune_error err;
    cJSON *g = test_read_json("data/template_ids_golden.json");
    const char *names[2] = {"llama3", "smollm2"};
    tune_tokenizer *toks[2];
    tune_data_tokenizer dt[2];
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "%s/tokenizer/%s", test_data_dir(), names[i]);
        ck_assert_int_eq(tune_tokenizer_load(path, &toks[i], &err), TUNE_OK);
        ck_assert_int_eq(tune_data_tokenizer_wrap(toks[i], path, &dt[i], &err), TUNE_OK);
    }
    int checked = 0, mismatched = 0;
    cJSON *e;
    cJSON_ArrayForEach(e, cJSON_GetObjectItem(g, "template_ids"))
    {
        int t = !strcmp(cJSON_GetObjectItem(e, "tokenizer")->valuestring, "smollm2");
        tune_template_id id;
        ck_assert(tune_template_from_name(cJSON_GetObjectItem(e, "template")->valuestring, &id));
        cJSON *conv = cJSON_GetArrayItem(cJSON_GetObjectItem(g, "conversations"),
                                         cJSON_GetObjectItem(e, "conversation")->valueint);
        cJSON *obj = cJSON_CreateObject();
        cJSON_AddItemToObject(obj, "messages", cJSON_Duplicate(conv, 1));
        tune_record rec = {.json = obj, .file = "golden", .line = 1, .index = checked};
        tune_dataset_options d = dataset("chat_template", NULL, 0);
        tune_data_options o = base_options(&d, 1);
        o.chat_template.id = id;
        o.chat_template.opt.bos = cJSON_GetObjectItem(e, "bos")->valuestring;
        o.chat_template.opt.eos = cJSON_GetObjectItem(e, "eos")->valuestring;
        o.chat_template.opt.date = "26 Jul 2024";
        tune_formatted f;
        ck_assert_int_eq(tune_data_format_record(&rec, &d, &o, &f, &err), TUNE_OK);
        ck_assert_str_eq(f.text.data, cJSON_GetObjectItem(e, "text")->valuestring);
        int32_t *ids, *labels;
        size_t n;
        int mismatch;
        ck_assert_int_eq(tune_data_tokenize(&f, &dt[t], &ids, &labels, &n, &mismatch, &err), TUNE_OK);
        mismatched += mismatch;
        cJSON *want = cJSON_GetObjectItem(e, "ids");
        ck_assert_int_eq((int)n, cJSON_GetArraySize(want));
        for (size_t k = 0; k < n; k++) ck_assert_int_eq(ids[k], cJSON_GetArrayItem(want, (int)k)->valueint);
        /* the last trained token is the end-of-turn marker of the last reply */
        size_t last = n;
        while (last > 0 && labels[last - 1] == TUNE_IGNORE_INDEX) last--;
        ck_assert_uint_gt(last, 0);
        free(ids);
        free(labels);
        tune_formatted_free(&f);
        cJSON_Delete(obj);
        checked++;
    }
    ck_assert_int_eq(checked, 36);
    /* byte-level BPE merges the space before a reply into it (llama2, vicuna): those use the whole-text ids */
    ck_assert_int_gt(mismatched, 0);
    cJSON_ArrayForEach(e, cJSON_GetObjectItem(g, "alpaca_ids"))
    {
        int t = !strcmp(cJSON_GetObjectItem(e, "tokenizer")->valuestring, "smollm2");
        tune_record rec = {.json = cJSON_GetObjectItem(e, "record"), .file = "golden", .line = 1};
        tune_dataset_options d = dataset("alpaca", NULL, 0);
        tune_data_options o = base_options(&d, 1);
        tune_formatted f;
        ck_assert_int_eq(tune_data_format_record(&rec, &d, &o, &f, &err), TUNE_OK);
        int32_t *ids, *labels;
        size_t n;
        int mismatch;
        ck_assert_int_eq(tune_data_tokenize(&f, &dt[t], &ids, &labels, &n, &mismatch, &err), TUNE_OK);
        cJSON *want = cJSON_GetObjectItem(e, "ids");
        int prompt = cJSON_GetObjectItem(e, "prompt_len")->valueint;
        ck_assert_int_eq((int)n, cJSON_GetArraySize(want));
        for (size_t k = 0; k < n; k++) {
            ck_assert_int_eq(ids[k], cJSON_GetArrayItem(want, (int)k)->valueint);
            ck_assert_int_eq(labels[k], (int)k < prompt ? TUNE_IGNORE_INDEX : ids[k]);
        }
        ck_assert_int_eq(ids[n - 1], dt[t].eos_id);
        free(ids);
        free(labels);
        tune_formatted_free(&f);
    }
    for (int i = 0; i < 2; i++) tune_tokenizer_free(toks[i]);
    cJSON_Delete(g);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("data");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_read_errors_name_file_line_field);
    tcase_add_test(tc, test_field_errors);
    tcase_add_test(tc, test_skip_bad_records_counts_reasons);
    tcase_add_test(tc, test_alpaca_exact_labels);
    tcase_add_test(tc, test_chat_llama3_exact_labels);
    tcase_add_test(tc, test_sharegpt_chatml_labels);
    tcase_add_test(tc, test_llama2_text_records);
    tcase_add_test(tc, test_llama2_text_trains_tokenizer_eos);
    tcase_add_test(tc, test_completion_chunks);
    tcase_add_test(tc, test_pieces_vs_whole_tokenization);
    tcase_add_test(tc, test_excess_length_strategies);
    tcase_add_test(tc, test_split_deterministic);
    tcase_add_test(tc, test_shuffle_per_epoch);
    tcase_add_test(tc, test_packing_rows_positions);
    tcase_add_test(tc, test_cache_invalidation);
    tcase_add_test(tc, test_export_round_trips);
    tcase_add_test(tc, test_export_filters);
    tcase_add_test(tc, test_preprocess_outputs);
    tcase_add_test(tc, test_truncated_inputs_never_crash);
    tcase_add_test(tc, test_test_datasets_are_validation);
    tcase_add_test(tc, test_resolve_files);
    tcase_add_test(tc, test_record_system_field);
    tcase_add_test(tc, test_conversation_length_limit);
    tcase_add_test(tc, test_long_json_array_lines);
    tcase_add_test(tc, test_ids_match_transformers);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
