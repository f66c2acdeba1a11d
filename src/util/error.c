#include "tune/error.h"

#include <stdlib.h>
#include <string.h>

void tune_error_clear(tune_error *err)
{
    if (!err) return;
    memset(err, 0, sizeof *err);
    err->record = -1;
}

tune_status tune_error_vset(tune_error *err, tune_status code, const char *file,
                            int line, int col, const char *fmt, va_list ap)
{
    if (!err) return code;
    tune_error_clear(err);
    err->code = code;
    if (file) snprintf(err->file, sizeof err->file, "%s", file);
    err->line = line;
    err->col = col;
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    return code;
}

tune_status tune_error_set(tune_error *err, tune_status code, const char *file,
                           int line, int col, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    tune_error_vset(err, code, file, line, col, fmt, ap);
    va_end(ap);
    return code;
}

void tune_error_format(const tune_error *err, char *buf, size_t size)
{
    if (!err->file[0])
        snprintf(buf, size, "%s", err->message);
    else if (err->line > 0 && err->col > 0)
        snprintf(buf, size, "%s:%d:%d: %s", err->file, err->line, err->col, err->message);
    else if (err->line > 0)
        snprintf(buf, size, "%s:%d: %s", err->file, err->line, err->message);
    else if (err->record >= 0)
        snprintf(buf, size, "%s: record %ld: %s", err->file, err->record, err->message);
    else
        snprintf(buf, size, "%s: %s", err->file, err->message);
}

void tune_error_print(FILE *out, const tune_error *err)
{
    char buf[2048];
    tune_error_format(err, buf, sizeof buf);
    fprintf(out, "tune: error: %s\n", buf);
}

tune_status tune_error_list_add(tune_error_list *list, const tune_error *err)
{
    if (list->count == list->cap) {
        int cap = list->cap ? list->cap * 2 : 8;
        tune_error *items = realloc(list->items, (size_t)cap * sizeof *items);
        if (!items) return TUNE_ERR_RUN;
        list->items = items;
        list->cap = cap;
    }
    list->items[list->count++] = *err;
    return TUNE_OK;
}

tune_status tune_error_list_status(const tune_error_list *list)
{
    tune_status worst = TUNE_OK;
    for (int i = 0; i < list->count; i++)
        if (list->items[i].code > worst) worst = list->items[i].code;
    return worst;
}

void tune_error_list_free(tune_error_list *list)
{
    free(list->items);
    list->items = NULL;
    list->count = list->cap = 0;
}
