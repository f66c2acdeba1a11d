/* Built-in chat template renderers. Each one follows its Jinja source (kept in
 * tools/reference/make_template_golden.py) statement by statement; the
 * comments quote the part of the source each line reproduces. */
#include "tune/template.h"

#include <stdlib.h>
#include <string.h>

static const char *const NAMES[TUNE_N_TEMPLATES] = {
    "llama3", "llama3_1", "llama2", "chatml", "smollm2", "vicuna_v1.1", "zephyr", "alpaca",
};

static const char SMOLLM2_SYSTEM[] = "You are a helpful AI assistant named SmolLM, trained by Hugging Face";
static const char VICUNA_SYSTEM[] =
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives "
    "helpful, detailed, and polite answers to the user's questions.";

const char *tune_template_name(tune_template_id id)
{
    if (id == TUNE_TEMPLATE_JINJA) return "jinja";
    return (unsigned)id < TUNE_N_TEMPLATES ? NAMES[id] : "unknown";
}

int tune_template_from_name(const char *name, tune_template_id *id)
{
    static const struct { const char *alias; tune_template_id id; } ALIASES[] = {
        {"llama3_2", TUNE_TEMPLATE_LLAMA3_1},
        {"vicuna", TUNE_TEMPLATE_VICUNA},
        {"vicuna_v1_1", TUNE_TEMPLATE_VICUNA},
    };
    for (int i = 0; i < TUNE_N_TEMPLATES; i++)
        if (!strcmp(name, NAMES[i])) {
            *id = (tune_template_id)i;
            return 1;
        }
    for (size_t i = 0; i < sizeof ALIASES / sizeof ALIASES[0]; i++)
        if (!strcmp(name, ALIASES[i].alias)) {
            *id = ALIASES[i].id;
            return 1;
        }
    return 0;
}

tune_template_options tune_template_default_options(tune_template_id id)
{
    tune_template_options o = {"<s>", "</s>", TUNE_TEMPLATE_DEFAULT_DATE};
    if (id == TUNE_TEMPLATE_LLAMA3 || id == TUNE_TEMPLATE_LLAMA3_1) {
        o.bos = "<|begin_of_text|>";
        o.eos = "<|eot_id|>";
    } else if (id == TUNE_TEMPLATE_CHATML || id == TUNE_TEMPLATE_SMOLLM2) {
        o.bos = "<|im_start|>";
        o.eos = "<|im_end|>";
    }
    return o;
}

/* ---- Python str.isspace() over UTF-8 ---- */

/* Length of the whitespace character at s (0 when s does not start with one). */
static size_t space_len(const unsigned char *s, size_t n)
{
    if (n == 0) return 0;
    unsigned c = s[0];
    if (c == ' ' || (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x1F)) return 1;
    if (c == 0xC2 && n >= 2 && (s[1] == 0x85 || s[1] == 0xA0)) return 2;
    if (n >= 3) {
        unsigned cp = ((c & 0x0Fu) << 12) | ((s[1] & 0x3Fu) << 6) | (s[2] & 0x3Fu);
        if ((c & 0xF0) != 0xE0) return 0;
        if (cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 ||
            cp == 0x202F || cp == 0x205F || cp == 0x3000)
            return 3;
    }
    return 0;
}

/* Start of the whitespace run that ends at s + n (n when none). */
static size_t trailing_space_start(const unsigned char *s, size_t n)
{
    size_t end = n;
    for (;;) {
        size_t k = 0;
        for (size_t w = 1; w <= 3 && w <= end; w++)
            if (space_len(s + end - w, w) == w) {
                k = w;
                break;
            }
        if (!k) return end;
        end -= k;
    }
}

const char *tune_text_strip(const char *s, size_t n, size_t *len)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t a = 0, k;
    while (a < n && (k = space_len(u + a, n - a)) > 0) a += k;
    size_t b = a + trailing_space_start(u + a, n - a);
    *len = b - a;
    return s + a;
}

/* ---- rendering helpers ---- */

static void put(tune_strbuf *out, const char *s)
{
    tune_strbuf_puts(out, s);
}

/* Appends content (trimmed when trim is set) and records its span. */
static void put_content(tune_strbuf *out, const char *content, int trim, tune_message_span *sp)
{
    size_t n = strlen(content);
    const char *s = content;
    if (trim) s = tune_text_strip(content, n, &n);
    sp->start = out->len;
    tune_strbuf_append(out, s, n);
    sp->end = out->len;
    sp->eot_start = sp->eot_end = sp->end;
}

static void put_eot(tune_strbuf *out, const char *eot, tune_message_span *sp)
{
    sp->eot_start = out->len;
    put(out, eot);
    sp->eot_end = out->len;
}

static int is_role(const tune_chat_message *m, const char *role)
{
    return m->role && !strcmp(m->role, role);
}

static tune_status check_roles(const tune_chat_message *msgs, int n, tune_error *err)
{
    for (int i = 0; i < n; i++) {
        if (!msgs[i].content || !msgs[i].role)
            return tune_error_set(err, TUNE_ERR_INPUT, NULL, 0, 0, "message %d has no role or content", i);
        if (is_role(&msgs[i], "system") && i != 0)
            return tune_error_set(err, TUNE_ERR_INPUT, NULL, 0, 0,
                                  "message %d: a system message is only allowed first", i);
        if (!is_role(&msgs[i], "system") && !is_role(&msgs[i], "user") && !is_role(&msgs[i], "assistant"))
            return tune_error_set(err, TUNE_ERR_INPUT, NULL, 0, 0,
                                  "message %d: unknown role '%s' (expected system, user or assistant)", i,
                                  msgs[i].role);
    }
    return TUNE_OK;
}

/* '<|start_header_id|>' + role + '<|end_header_id|>\n\n' + content | trim + '<|eot_id|>' */
static void llama3_message(tune_strbuf *out, const tune_chat_message *m, tune_message_span *sp)
{
    put(out, "<|start_header_id|>");
    put(out, m->role);
    put(out, "<|end_header_id|>\n\n");
    put_content(out, m->content, 1, sp);
    put_eot(out, "<|eot_id|>", sp);
}

static void render_llama3(const tune_template_options *o, const tune_chat_message *msgs, int n, int gen,
                          tune_strbuf *out, tune_message_span *sp)
{
    put(out, o->bos);
    for (int i = 0; i < n; i++) llama3_message(out, &msgs[i], &sp[i]);
    if (gen) put(out, "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

static void render_llama3_1(const tune_template_options *o, const tune_chat_message *msgs, int n, int gen,
                            tune_strbuf *out, tune_message_span *sp)
{
    put(out, o->bos);
    /* The system block is always written; without a system message it is empty. */
    put(out, "<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: ");
    put(out, o->date ? o->date : TUNE_TEMPLATE_DEFAULT_DATE);
    put(out, "\n\n");
    int first = 0;
    if (n > 0 && is_role(&msgs[0], "system")) {
        put_content(out, msgs[0].content, 1, &sp[0]);
        put_eot(out, "<|eot_id|>", &sp[0]);
        first = 1;
    } else {
        put(out, "<|eot_id|>");
    }
    for (int i = first; i < n; i++) llama3_message(out, &msgs[i], &sp[i]);
    if (gen) put(out, "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

static tune_status render_llama2(const tune_template_options *o, const tune_chat_message *msgs, int n,
                                 tune_strbuf *out, tune_message_span *sp, tune_error *err)
{
    int first = n > 0 && is_role(&msgs[0], "system");
    for (int i = first; i < n; i++) {
        int k = i - first; /* loop.index0 */
        if (is_role(&msgs[i], "user") != (k % 2 == 0))
            return tune_error_set(err, TUNE_ERR_INPUT, NULL, 0, 0,
                                  "message %d: Llama-2 conversations must alternate user/assistant/user/...", i);
        if (is_role(&msgs[i], "user")) {
            put(out, o->bos);
            put(out, "[INST] ");
            if (k == 0 && first) {
                /* ('<<SYS>>\n' + system + '\n<</SYS>>\n\n' + content).strip(): the string
                 * starts with '<<SYS>>', so only its end can be stripped. */
                size_t base = out->len;
                put(out, "<<SYS>>\n");
                size_t sys_start = out->len;
                put(out, msgs[0].content);
                size_t sys_end = out->len;
                put(out, "\n<</SYS>>\n\n");
                size_t user_start = out->len;
                put(out, msgs[i].content);
                if (out->oom) return tune_error_set(err, TUNE_ERR_RUN, NULL, 0, 0, "out of memory");
                out->len = base + trailing_space_start((const unsigned char *)out->data + base, out->len - base);
                out->data[out->len] = 0;
                sp[0].start = sys_start < out->len ? sys_start : out->len;
                sp[0].end = sys_end < out->len ? sys_end : out->len;
                sp[0].eot_start = sp[0].eot_end = sp[0].end;
                sp[i].start = user_start < out->len ? user_start : out->len;
                sp[i].end = sp[i].eot_start = sp[i].eot_end = out->len;
            } else {
                put_content(out, msgs[i].content, 1, &sp[i]);
            }
            put(out, " [/INST]");
        } else {
            put(out, " ");
            put_content(out, msgs[i].content, 1, &sp[i]);
            put(out, " ");
            put_eot(out, o->eos, &sp[i]);
        }
    }
    return TUNE_OK;
}

static void render_chatml(const tune_chat_message *msgs, int n, int gen, int smollm2, tune_strbuf *out,
                          tune_message_span *sp)
{
    if (smollm2 && n > 0 && !is_role(&msgs[0], "system")) {
        put(out, "<|im_start|>system\n");
        put(out, SMOLLM2_SYSTEM);
        put(out, "<|im_end|>\n");
    }
    for (int i = 0; i < n; i++) {
        put(out, "<|im_start|>");
        put(out, msgs[i].role);
        put(out, "\n");
        put_content(out, msgs[i].content, 0, &sp[i]);
        put_eot(out, "<|im_end|>", &sp[i]);
        put(out, "\n");
    }
    if (gen) put(out, "<|im_start|>assistant\n");
}

static void render_vicuna(const tune_chat_message *msgs, int n, int gen, tune_strbuf *out, tune_message_span *sp)
{
    int first = n > 0 && is_role(&msgs[0], "system");
    if (first)
        put_content(out, msgs[0].content, 0, &sp[0]);
    else
        put(out, VICUNA_SYSTEM);
    put(out, " ");
    for (int i = first; i < n; i++) {
        if (is_role(&msgs[i], "user")) {
            put(out, "USER: ");
            put_content(out, msgs[i].content, 0, &sp[i]);
            put(out, " ");
        } else {
            put(out, "ASSISTANT: ");
            put_content(out, msgs[i].content, 0, &sp[i]);
            put_eot(out, "</s>", &sp[i]);
        }
    }
    if (gen) put(out, "ASSISTANT:");
}

static void render_zephyr(const tune_template_options *o, const tune_chat_message *msgs, int n, int gen,
                          tune_strbuf *out, tune_message_span *sp)
{
    for (int i = 0; i < n; i++) {
        put(out, is_role(&msgs[i], "user") ? "<|user|>\n" : is_role(&msgs[i], "system") ? "<|system|>\n"
                                                                                        : "<|assistant|>\n");
        put_content(out, msgs[i].content, 0, &sp[i]);
        put_eot(out, o->eos, &sp[i]);
        put(out, "\n");
    }
    if (gen && n > 0) put(out, "<|assistant|>\n");
}

static void render_alpaca(const tune_template_options *o, const tune_chat_message *msgs, int n, int gen,
                          tune_strbuf *out, tune_message_span *sp)
{
    put(out, o->bos);
    for (int i = 0; i < n; i++) {
        if (is_role(&msgs[i], "system")) {
            put_content(out, msgs[i].content, 0, &sp[i]);
        } else if (is_role(&msgs[i], "user")) {
            put(out, "### Instruction:\n");
            put_content(out, msgs[i].content, 0, &sp[i]);
        } else {
            put(out, "### Response:\n");
            put_content(out, msgs[i].content, 0, &sp[i]);
            put_eot(out, o->eos, &sp[i]);
        }
        if (i + 1 < n) put(out, "\n\n");
    }
    if (gen) put(out, "\n\n### Response:\n");
}

tune_status tune_template_render(tune_template_id id, const tune_template_options *opt,
                                 const tune_chat_message *msgs, int n, int add_generation_prompt,
                                 tune_strbuf *out, tune_message_span *spans, tune_error *err)
{
    if (n <= 0) return tune_error_set(err, TUNE_ERR_INPUT, NULL, 0, 0, "empty conversation");
    if ((unsigned)id >= TUNE_N_TEMPLATES)
        return tune_error_set(err, TUNE_ERR_RUN, NULL, 0, 0, "unknown chat template id %d", (int)id);
    tune_status st = check_roles(msgs, n, err);
    if (st) return st;
    tune_template_options o = tune_template_default_options(id);
    if (opt) {
        if (opt->bos) o.bos = opt->bos;
        if (opt->eos) o.eos = opt->eos;
        if (opt->date) o.date = opt->date;
    }
    tune_message_span *sp = spans;
    tune_message_span local[16];
    if (!sp) {
        if (n > 16) {
            sp = calloc((size_t)n, sizeof *sp);
            if (!sp) return tune_error_set(err, TUNE_ERR_RUN, NULL, 0, 0, "out of memory");
        } else {
            sp = local;
        }
    }
    memset(sp, 0, (size_t)n * sizeof *sp);
    switch (id) {
    case TUNE_TEMPLATE_LLAMA3: render_llama3(&o, msgs, n, add_generation_prompt, out, sp); break;
    case TUNE_TEMPLATE_LLAMA3_1: render_llama3_1(&o, msgs, n, add_generation_prompt, out, sp); break;
    case TUNE_TEMPLATE_LLAMA2: st = render_llama2(&o, msgs, n, out, sp, err); break;
    case TUNE_TEMPLATE_CHATML: render_chatml(msgs, n, add_generation_prompt, 0, out, sp); break;
    case TUNE_TEMPLATE_SMOLLM2: render_chatml(msgs, n, add_generation_prompt, 1, out, sp); break;
    case TUNE_TEMPLATE_VICUNA: render_vicuna(msgs, n, add_generation_prompt, out, sp); break;
    case TUNE_TEMPLATE_ZEPHYR: render_zephyr(&o, msgs, n, add_generation_prompt, out, sp); break;
    case TUNE_TEMPLATE_ALPACA: render_alpaca(&o, msgs, n, add_generation_prompt, out, sp); break;
    default: break;
    }
    if (sp != spans && sp != local) free(sp);
    if (!st && out->oom) st = tune_error_set(err, TUNE_ERR_RUN, NULL, 0, 0, "out of memory rendering a chat template");
    return st;
}

/* ---- recognising a model's template ---- */

static const struct {
    const char *sha256;
    tune_template_id id;
    const char *what;
} KNOWN[] = {
    {"065d2c5e13237e5dd6496260bfad0bc5aac7088317140d13c6e23373c61b64fc", TUNE_TEMPLATE_LLAMA3, "Llama 3 instruct"},
    {"b98614af181315875dfc0c6f3c3edd74bfb523d975262448087c7611d895b3b4", TUNE_TEMPLATE_LLAMA3_1, "Llama 3.1 instruct"},
    {"8bbf53b924688632283b961c3ca118ebc4b860d6263dd930bf62ccc6af788ed7", TUNE_TEMPLATE_LLAMA3_1, "Llama 3.2 instruct"},
    {"da7b918aa5dd5707ac535fd1778536efe8323b726cc23b9be47c4d865148e090", TUNE_TEMPLATE_LLAMA2, "Llama-2-chat"},
    {"1751cf9b9de9604008ca174932dc8079f0d2aa4455487225f3ac02c0d8d04cab", TUNE_TEMPLATE_CHATML, "ChatML"},
    {"b85639e34583e4599bb8912c5855e3be3643d9c886812e5db075bfa1056aeaad", TUNE_TEMPLATE_SMOLLM2, "SmolLM2 ChatML"},
    {"a24475e2977dd9505bfd2d05c75bb81a7c196156751164b3d2553e068de32eb2", TUNE_TEMPLATE_VICUNA, "Vicuna v1.1"},
    {"8705a1897ece1a1b355e1f4d36687f331d6680f5d897d1ae314b3fc506e136b8", TUNE_TEMPLATE_ZEPHYR, "Zephyr"},
    {"e9882f5fd3adcd3a067aefa4b640fd32c7bc7d6d51dac242f3eae3d02f290b96", TUNE_TEMPLATE_ALPACA, "Alpaca"},
};

void tune_template_fingerprint(const char *source, char hex[65])
{
    tune_sha256 h;
    tune_sha256_init(&h);
    for (const char *p = source; *p;) {
        /* '{%-' -> '{%', '{{-' -> '{{', '-%}' -> '%}', '-}}' -> '}}' */
        if ((p[0] == '{' && (p[1] == '%' || p[1] == '{') && p[2] == '-')) {
            tune_sha256_update(&h, p, 2);
            p += 3;
            continue;
        }
        if (p[0] == '-' && ((p[1] == '%' && p[2] == '}') || (p[1] == '}' && p[2] == '}'))) {
            p++;
            continue;
        }
        if (!(*p == ' ' || (*p >= '\t' && *p <= '\r'))) tune_sha256_update(&h, p, 1);
        p++;
    }
    uint8_t d[32];
    tune_sha256_final(&h, d);
    for (int i = 0; i < 32; i++) {
        static const char X[] = "0123456789abcdef";
        hex[2 * i] = X[d[i] >> 4];
        hex[2 * i + 1] = X[d[i] & 15];
    }
    hex[64] = 0;
}

tune_status tune_template_recognize(const char *source, tune_template_id *id, tune_error *err)
{
    char hex[65];
    tune_template_fingerprint(source, hex);
    for (size_t i = 0; i < sizeof KNOWN / sizeof KNOWN[0]; i++)
        if (!strcmp(hex, KNOWN[i].sha256)) {
            *id = KNOWN[i].id;
            return TUNE_OK;
        }
    char head[81];
    size_t n = 0;
    for (const char *p = source; *p && n < 80; p++) head[n++] = (*p == '\n') ? ' ' : *p;
    head[n] = 0;
    return tune_error_set(err, TUNE_ERR_INPUT, NULL, 0, 0,
                          "the model's chat template is not one tune knows (\"%s%s\", fingerprint %.16s); set "
                          "chat_template: to one of llama3, llama3_1, llama2, chatml, smollm2, vicuna_v1.1, "
                          "zephyr, alpaca",
                          head, source[n] ? "..." : "", hex);
}

tune_status tune_template_resolve(const char *name, const char *model_source, tune_template_id *id,
                                  tune_error *err)
{
    static const char FALLBACK[] = "tokenizer_default_fallback_";
    const char *fallback = NULL;
    if (name && !strncmp(name, FALLBACK, sizeof FALLBACK - 1)) fallback = name + sizeof FALLBACK - 1;
    if (!name || !*name || !strcmp(name, "tokenizer_default") || (fallback && model_source)) {
        if (!model_source)
            return tune_error_set(err, TUNE_ERR_INPUT, NULL, 0, 0,
                                  "chat_template: tokenizer_default, but the model has no chat template; set "
                                  "chat_template: to one of llama3, llama3_1, llama2, chatml, smollm2, "
                                  "vicuna_v1.1, zephyr, alpaca, or to jinja with chat_template_jinja:");
        /* A template tune renders in C gives the same text without the engine. */
        if (tune_template_recognize(model_source, id, NULL) != TUNE_OK) *id = TUNE_TEMPLATE_JINJA;
        return TUNE_OK;
    }
    if (fallback) name = fallback;
    if (!strcmp(name, "jinja")) {
        *id = TUNE_TEMPLATE_JINJA;
        return TUNE_OK;
    }
    if (!tune_template_from_name(name, id))
        return tune_error_set(err, TUNE_ERR_INPUT, NULL, 0, 0,
                              "unknown chat_template '%s' (expected tokenizer_default, "
                              "tokenizer_default_fallback_NAME, jinja or one of llama3, llama3_1, llama3_2, "
                              "llama2, chatml, smollm2, vicuna_v1.1, zephyr, alpaca)",
                              name);
    /* A family name picks the member the model itself uses. */
    tune_template_id model;
    if (model_source && tune_template_recognize(model_source, &model, NULL) == TUNE_OK &&
        ((*id == TUNE_TEMPLATE_CHATML && model == TUNE_TEMPLATE_SMOLLM2) ||
         (*id == TUNE_TEMPLATE_LLAMA3 && model == TUNE_TEMPLATE_LLAMA3_1)))
        *id = model;
    return TUNE_OK;
}
