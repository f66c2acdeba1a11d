/* The data stage: records → formatter (alpaca | chat_template | llama2 |
 * completion) → text pieces marked trained / not trained → token ids and
 * labels (-100 = not trained) → length limit → train/validation split →
 * per-epoch shuffle → packing → micro-batches.
 *
 * The module takes plain values (tune_data_options), never the config; the
 * plan maps the config onto them. The stages before tokenization (reading,
 * validating, formatting) work without a tokenizer. */
#ifndef TUNE_DATA_H
#define TUNE_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "tune/error.h"
#include "tune/llama.h"
#include "tune/template.h"
#include "tune/util.h"

/* ---------------------------------------------------------------- options */

typedef enum {
    TUNE_FORMAT_ALPACA,     /* instruction / input / output */
    TUNE_FORMAT_CHAT,       /* chat_template and sharegpt: a list of messages */
    TUNE_FORMAT_LLAMA2,     /* Llama-2-chat text: <s>[INST] ... [/INST] ... </s> */
    TUNE_FORMAT_COMPLETION, /* raw text, chunked to sequence_len, all trained */
} tune_data_format;

typedef enum {
    TUNE_DATA_EOS_TURN, /* the end-of-turn marker of every trained turn (default) */
    TUNE_DATA_EOS_ALL,  /* of every turn */
    TUNE_DATA_EOS_LAST, /* of the last trained turn only */
    TUNE_DATA_EOS_NONE,
} tune_data_train_on_eos;

typedef enum { TUNE_DATA_EXCESS_DROP, TUNE_DATA_EXCESS_TRUNCATE, TUNE_DATA_EXCESS_RAISE } tune_data_excess;

#define TUNE_DATA_MAX_ROLES 16
/* Most messages in one conversation (chat records, Llama-2-chat turns). */
#define TUNE_DATA_MAX_MESSAGES 1024

/* A source role name and the role it means (system, user or assistant). */
typedef struct tune_data_role_map {
    const char *from;
    const char *to;
} tune_data_role_map;

/* One `datasets:` entry. Strings are borrowed (they must outlive the call). */
typedef struct tune_dataset_options {
    const char *name;          /* shown in the report (the config's path) */
    const char *const *files;  /* local files, read and merged in order */
    int n_files;
    tune_data_format format;
    /* alpaca fields */
    const char *field_instruction, *field_input, *field_output;
    /* chat fields: the message list, and each message's role/content keys
     * (message_property_mappings); field_system: a record-level system
     * message used when the conversation has none */
    const char *field_messages, *field_role, *field_content, *field_system;
    tune_data_role_map roles[TUNE_DATA_MAX_ROLES]; /* source → role names (default human→user, gpt→assistant) */
    int n_roles;
    const char *roles_to_train[4]; /* default: {"assistant"} */
    int n_roles_to_train;
    tune_data_train_on_eos train_on_eos;
    /* completion / llama2: the text field of JSON records */
    const char *field;
    /* chat: template for this entry; NULL uses tune_data_options.chat_template
     * (llama2 text always renders with the llama2 template) */
    const tune_template *chat_template;
} tune_dataset_options;

/* Fills o with the defaults of a dataset `type:` ("alpaca", "sharegpt",
 * "chat_template", "llama2", "completion"): field names (sharegpt:
 * conversations, from/value), roles (human→user, gpt→assistant),
 * roles_to_train [assistant], train_on_eos turn.
 * Files and name are left for the caller. Unknown type → TUNE_ERR_INPUT. */
tune_status tune_dataset_options_init(tune_dataset_options *o, const char *type, tune_error *err);

typedef struct tune_data_options {
    const tune_dataset_options *datasets;
    int n_datasets;
    const tune_dataset_options *test_datasets; /* when given, the validation set (no split; val_set_size must be 0) */
    int n_test_datasets;
    tune_template chat_template;          /* with the tokenizer's BOS/EOS texts and the fixed date */
    const char *default_system_message;        /* prepended to conversations without one; NULL none */
    int sequence_len;
    tune_data_excess excess;
    int train_on_inputs;
    int skip_bad_records;
    double val_set_size;                       /* <= 1: fraction; > 1: count; 0: none */
    uint64_t seed;
} tune_data_options;

/* The files a dataset entry reads, in order: path itself when it is a file;
 * in a folder, data_files (relative to it) when given, else the folder
 * SPLIT/ when it exists, else the .json/.jsonl/.txt files named SPLIT.* or
 * SPLIT-* (all of them when none is), sorted by name. */
tune_status tune_data_resolve_files(const char *path, const char *const *data_files, int n_data_files,
                                    const char *split, char ***files, int *n_files, tune_error *err);
void tune_data_files_free(char **files, int n);

/* --------------------------------------------------------------- records */

/* One record as read: a JSON object (JSON / JSONL) or a text (plain text). */
typedef struct tune_record {
    void *json;       /* cJSON *, or NULL for text records */
    char *text;       /* text record (NUL-terminated), or NULL */
    size_t text_len;
    const char *file; /* borrowed from the options */
    int line;         /* 1-based line where the record starts */
    long index;       /* 0-based record index in its file */
} tune_record;

typedef struct tune_record_list {
    tune_record *items;
    size_t count, cap;
} tune_record_list;

/* Reads one file: ".json" (an array of objects, or one object), ".jsonl"
 * (one object per line; blank lines ignored), ".txt" and anything else
 * (text: for TUNE_FORMAT_LLAMA2 a record starts at each line that begins
 * with "<s>[INST]"; otherwise the whole file is one record). UTF-8 is
 * validated. A bad record fails with TUNE_ERR_INPUT naming file, line and
 * record — or, when skipped is not NULL, is added there and reading goes on. */
tune_status tune_data_read_file(const char *path, tune_data_format format, tune_record_list *out,
                                tune_error_list *skipped, tune_error *err);
/* The same for bytes already in memory (data[0..len), need not be
 * NUL-terminated): path names them in errors and its suffix picks the reader. */
tune_status tune_data_read_buffer(const char *path, const char *data, size_t len, tune_data_format format,
                                  tune_record_list *out, tune_error_list *skipped, tune_error *err);
void tune_record_list_free(tune_record_list *list);

/* Checks that s[0..n) is valid UTF-8; on failure *bad_offset is the first bad byte. */
int tune_utf8_valid(const char *s, size_t n, size_t *bad_offset);

/* ------------------------------------------------------------ formatting */

typedef enum { TUNE_PIECE_TEXT, TUNE_PIECE_EOS } tune_piece_kind;

/* A run of the rendered text, or the EOS token appended by id (alpaca). */
typedef struct tune_text_piece {
    tune_piece_kind kind;
    size_t start, end;  /* byte range in text (TEXT) */
    int train;          /* 1: its tokens are trained */
    int add_special;    /* encode with the tokenizer's BOS/EOS rules (alpaca prompt) */
} tune_text_piece;

/* A formatted example: the rendered text cut into pieces that cover it in
 * order. Chat pieces are cut at message-content and end-of-turn boundaries. */
typedef struct tune_formatted {
    tune_strbuf text;
    tune_text_piece *pieces;
    int n_pieces, cap;
    int tokenize_whole; /* pieces are a split of one text that must tokenize as a whole (chat, llama2) */
} tune_formatted;

/* Formats one record. Errors (TUNE_ERR_INPUT) name the record's file, line,
 * record index and the field. */
/* Appends the prompt an alpaca record is trained with (Axolotl's alpaca
 * prompter: the preamble, "### Instruction:", "### Input:" when input is
 * non-empty, "### Response:\n"); the answer follows it. input may be NULL. */
void tune_data_alpaca_prompt(const char *instruction, const char *input, tune_strbuf *out);
tune_status tune_data_format_record(const tune_record *rec, const tune_dataset_options *ds,
                                    const tune_data_options *opt, tune_formatted *out, tune_error *err);
void tune_formatted_free(tune_formatted *f);

/* Parses a Llama-2-chat text into messages (system first when present).
 * Contents point into a copy owned by *storage (free it). */
tune_status tune_llama2_parse(const char *text, size_t len, tune_chat_message **msgs, int *n, char **storage,
                              tune_error *err);

/* ------------------------------------------------------------ tokenizing */

/* What the data stage needs from a tokenizer; the plan wraps tune_tokenizer
 * in it. encode appends the ids of text[0..len) to *ids (realloc'd; *n ids,
 * *cap allocated); add_special adds BOS/EOS as the tokenizer's post-processor
 * does. */
typedef struct tune_data_tokenizer {
    void *ctx;
    tune_status (*encode)(void *ctx, const char *text, size_t len, int add_special, int32_t **ids, size_t *n,
                          size_t *cap, tune_error *err);
    /* Appends the text of ids[0..n) to out (for --debug); may be NULL. */
    tune_status (*decode)(void *ctx, const int32_t *ids, size_t n, tune_strbuf *out, tune_error *err);
    int32_t eos_id;
    int32_t pad_id;          /* -1: pad with eos */
    char fingerprint[65];    /* SHA-256 of the tokenizer file bytes: part of the cache key */
} tune_data_tokenizer;

struct tune_tokenizer;
/* The data stage's tokenizer over a loaded tune_tokenizer (tune/tokenizer.h);
 * path is where it was loaded from (its files make the fingerprint). tok
 * must outlive out. */
tune_status tune_data_tokenizer_wrap(struct tune_tokenizer *tok, const char *path, tune_data_tokenizer *out,
                                     tune_error *err);

/* ids and labels (TUNE_IGNORE_INDEX where not trained) of a formatted
 * example. Pieces of a tokenize_whole example are tokenized one by one and
 * checked against the whole text's ids; when the two differ (a merge across a
 * boundary), the whole text's ids are kept and each token is given the
 * training flag of the piece its prefix tokenization ends in, and
 * *boundary_mismatch is set. */
tune_status tune_data_tokenize(const tune_formatted *f, const tune_data_tokenizer *tok, int32_t **ids,
                               int32_t **labels, size_t *n, int *boundary_mismatch, tune_error *err);

/* -------------------------------------------------------- prepared data */

typedef struct tune_example {
    size_t offset;   /* into the set's ids/labels */
    int32_t n;
    int32_t dataset; /* index into the options' datasets (test_datasets follow them) */
    int64_t record;  /* record index in its dataset (over its files in order) */
} tune_example;

typedef struct tune_example_set {
    tune_example *items;
    size_t count, cap;
    int32_t *ids;    /* (total tokens) */
    int32_t *labels; /* (total tokens) */
    size_t n_tokens, tok_cap;
} tune_example_set;

typedef struct tune_dataset_report {
    char name[256];
    long records, skipped, examples, tokens, trained_tokens;
    long truncated, dropped_long, dropped_untrained, boundary_mismatch;
    long longest; /* tokens of the longest example before the length limit (0: none) */
} tune_dataset_report;

typedef struct tune_data_report {
    tune_dataset_report *datasets; /* (n_datasets + n_test_datasets) */
    int n_datasets;
    tune_error_list skipped;       /* one entry per skipped record, with its reason */
    long train_examples, val_examples;
    int from_cache;
    char cache_key[65];
} tune_data_report;

typedef struct tune_prepared {
    tune_example_set train, val;
    tune_data_report report;
    tune_strbuf *texts;  /* rendered text per example (train then val) when keep_text; else NULL */
} tune_prepared;

/* Reads, formats, tokenizes, applies the length rule and splits. When
 * cache_dir is not NULL, a prepared set is looked up and stored there under
 * the SHA-256 of everything that changes tokens (file contents, options,
 * template, tokenizer fingerprint, sequence_len, train_on_inputs, split).
 * keep_text keeps each example's rendered text (for `tune preprocess`): the
 * cache is then not read (it holds no texts) but is still written. */
tune_status tune_data_prepare(const tune_data_options *opt, const tune_data_tokenizer *tok, const char *cache_dir,
                              int keep_text, tune_prepared *out, tune_error *err);
void tune_prepared_free(tune_prepared *p);

/* The cache key prepare uses (hex, 65 bytes). */
tune_status tune_data_cache_key(const tune_data_options *opt, const tune_data_tokenizer *tok, char hex[65],
                                tune_error *err);

/* ------------------------------------------------------ preprocess output */

/* processed_conversations.json: per example (train, then validation) its
 * dataset, record, split, rendered text (when kept), input_ids and labels. */
tune_status tune_data_write_processed(const tune_prepared *p, const char *path, tune_error *err);
/* preprocess_report.json: per dataset records, skipped (with reasons),
 * examples, tokens, trained tokens, truncated, dropped; and totals. */
tune_status tune_data_write_report(const tune_prepared *p, const char *path, tune_error *err);
/* The same report as a few lines of text. */
void tune_data_report_text(const tune_prepared *p, tune_strbuf *out);
/* Example i token by token: trained tokens in green (color) or [brackets],
 * masked ones plain, each as its text when tok->decode is set (tokens that
 * hold part of a UTF-8 character are shown together with the rest of it),
 * else as <id>. */
tune_status tune_data_debug_example(const tune_prepared *p, size_t i, const tune_data_tokenizer *tok, int color,
                                    tune_strbuf *out, tune_error *err);

/* ------------------------------------------------- order and micro-batches */

/* Philox Fisher–Yates permutation of 0..n-1 for (seed, stream, epoch). */
void tune_data_permutation(uint64_t seed, uint64_t stream, uint64_t epoch, size_t *perm, size_t n);

typedef struct tune_batch_options {
    int micro_batch_size;
    int sequence_len;
    int sample_packing;      /* several examples per row, first-fit decreasing, packed once */
    int pad_to_sequence_len; /* pad every batch to sequence_len, not to its longest row */
    int shuffle;             /* per-epoch shuffle with (seed, epoch) */
    int32_t pad_id;          /* the tokenizer's pad id, or its EOS id when it has none */
    uint64_t seed;
} tune_batch_options;

typedef struct tune_batcher tune_batcher;

/* The set must outlive the batcher. */
tune_status tune_batcher_create(const tune_example_set *set, const tune_batch_options *opt, tune_batcher **out,
                                tune_error *err);
/* Micro-batches in an epoch (the same in every epoch: rows are built once). */
long tune_batcher_count(tune_batcher *b, int epoch, tune_error *err);
/* Rows in an epoch (examples, or packed rows). */
long tune_batcher_rows(tune_batcher *b, int epoch, tune_error *err);
/* Micro-batch `index` of epoch `epoch`. The arrays stay valid until the
 * next call on b. Depends only on (seed, epoch, index) and the set. */
tune_status tune_batcher_get(tune_batcher *b, int epoch, long index, tune_batch *out, tune_error *err);
void tune_batcher_free(tune_batcher *b);

/* ---------------------------------------------------------------- export */

typedef enum { TUNE_EXPORT_ALPACA, TUNE_EXPORT_SHAREGPT, TUNE_EXPORT_LLAMA2 } tune_export_format;

/* Product export filters, applied to records that carry the fields
 * quality_score (number), rating (number), task_type (string) and edited
 * (bool). A record without a field a filter needs does not pass that filter. */
typedef struct tune_export_filter {
    double min_quality_score; /* < 0: off */
    double min_rating;        /* < 0: off */
    const char *const *task_types; /* NULL: off */
    int n_task_types;
    long limit;               /* < 0: no limit */
    int include_edited;       /* 0: records with edited=true are left out */
} tune_export_filter;

typedef struct tune_export_stats {
    long read, written, filtered;
} tune_export_stats;

/* Converts in_path (alpaca JSONL, ShareGPT JSON array, Llama-2-chat text)
 * into out_path in another of them, written atomically. */
tune_status tune_data_export(const char *in_path, tune_export_format from, const char *out_path,
                             tune_export_format to, const tune_export_filter *filter, tune_export_stats *stats,
                             tune_error *err);
/* "alpaca", "sharegpt", "llama2". 0 when unknown. */
int tune_export_format_from_name(const char *name, tune_export_format *f);

#endif
