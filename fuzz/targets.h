/* Fuzz targets: one function per parser of outside input, each feeding one
 * input through the same entry points tune uses on real files. The libFuzzer
 * harnesses (fuzz/libfuzzer.c, `make fuzz`) and the Check suite that replays
 * the saved crashers (tests/test_fuzz_regressions.c) both call them.
 *
 * A target returns normally for any input, accepted or refused; a bug shows
 * as a sanitizer report, a leak, a hang, or abort() where a target checks a
 * property the parser promises (tune_fuzz_check). */
#ifndef TUNE_FUZZ_TARGETS_H
#define TUNE_FUZZ_TARGETS_H

#include <stddef.h>
#include <stdint.h>

/* X(name): fuzz/<name>.c defines tune_fuzz_<name>; its saved inputs live in
 * tests/data/fuzz_regressions/<name>/. */
#define TUNE_FUZZ_TARGETS(X)                                                                                      \
    X(config)                                                                                                     \
    X(data_json)                                                                                                  \
    X(data_llama2)                                                                                                \
    X(safetensors)                                                                                                \
    X(safetensors_index)                                                                                          \
    X(gguf)                                                                                                       \
    X(tokenizer_json)                                                                                             \
    X(tokenizer_config)                                                                                           \
    X(encode)                                                                                                     \
    X(jinja)                                                                                                      \
    X(chat_template)                                                                                              \
    X(peft_config)                                                                                                \
    X(model_config)

#define TUNE_FUZZ_DECLARE(name) void tune_fuzz_##name(const uint8_t *data, size_t size);
TUNE_FUZZ_TARGETS(TUNE_FUZZ_DECLARE)
#undef TUNE_FUZZ_DECLARE

/* ---- shared by the targets (fuzz/common.c) ---- */

/* The fixtures folder: $TUNE_TEST_DATA, else tests/data. */
const char *tune_fuzz_data_dir(void);
/* "<fixtures>/rel" into buf (size bytes). */
void tune_fuzz_data_path(char *buf, size_t size, const char *rel);
/* A private folder under $TMPDIR (else /tmp), made on first use, removed
 * with what it holds at exit. */
const char *tune_fuzz_tmpdir(void);
/* Writes data[0, size) to tmpdir/name (plainly: no fsync); the path goes
 * into buf. name may be "folder/file": targets whose loaders read a whole
 * folder keep theirs apart. Aborts when the file cannot be written. */
void tune_fuzz_write_tmp(const char *name, const void *data, size_t size, char *buf, size_t buf_size);
/* A NUL-terminated malloc'd copy of data[0, size); aborts when out of memory. */
char *tune_fuzz_cstr(const uint8_t *data, size_t size);
/* Aborts with a message when cond is false: a broken promise of a parser. */
void tune_fuzz_check(int cond, const char *what);

/* fuzz/records.c: formats rec as a dataset of `type` ("alpaca", "llama2",
 * ...), chat records with chat template number `template` (the built-ins,
 * then two Jinja templates; any int, taken modulo their number), and
 * tokenizes the result with tests/data/tiny/tokenizer. */
struct tune_record;
void tune_fuzz_format_record(const struct tune_record *rec, const char *type, int template);

#endif
