/* Errors: library code never prints or exits; it fills a tune_error and
 * returns a status. Only the CLI decides what to print and the exit code. */
#ifndef TUNE_ERROR_H
#define TUNE_ERROR_H

#include <stdarg.h>
#include <stdio.h>

/* Status codes double as the process exit codes the CLI uses. */
typedef enum {
    TUNE_OK = 0,
    TUNE_ERR_RUN = 1,   /* failure while running (I/O, out of memory, NaN loss) */
    TUNE_ERR_INPUT = 2, /* bad input: config, data record, model file, argument */
    /* Stopped on request (SIGINT/SIGTERM) after writing a checkpoint: not an
     * exit code itself; the CLI exits 128 + the signal's number, as shells do. */
    TUNE_INTERRUPTED = 3,
} tune_status;

typedef struct tune_error {
    tune_status code;
    char message[1024];
    char file[512]; /* empty when the error is not about a file */
    int line, col;  /* 1-based; 0 when unknown */
    long record;    /* 0-based record index in a data file; -1 when none */
} tune_error;

/* A list of errors, for stages that report every problem in one run. */
typedef struct tune_error_list {
    tune_error *items;
    int count, cap;
} tune_error_list;

void tune_error_clear(tune_error *err);

/* Fills err (when not NULL) and returns code. file may be NULL. */
tune_status tune_error_set(tune_error *err, tune_status code, const char *file,
                           int line, int col, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
tune_status tune_error_vset(tune_error *err, tune_status code, const char *file,
                            int line, int col, const char *fmt, va_list ap);

/* Shorthands for the two common cases. */
#define tune_fail_input(err, file, ...) tune_error_set((err), TUNE_ERR_INPUT, (file), 0, 0, __VA_ARGS__)
#define tune_fail_run(err, file, ...) tune_error_set((err), TUNE_ERR_RUN, (file), 0, 0, __VA_ARGS__)

/* "file:line:col: message", "file: record N: message" or "message". */
void tune_error_format(const tune_error *err, char *buf, size_t size);
void tune_error_print(FILE *out, const tune_error *err);

/* Appends a copy of err; returns TUNE_ERR_RUN only when out of memory. */
tune_status tune_error_list_add(tune_error_list *list, const tune_error *err);
/* The highest code in the list (TUNE_OK when empty). */
tune_status tune_error_list_status(const tune_error_list *list);
void tune_error_list_free(tune_error_list *list);

#endif
