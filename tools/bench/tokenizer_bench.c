/* Encode throughput of tune's tokenizer on a corpus of JSON-string lines.
 * Built and run by tools/bench/tokenizer_bench.sh; prints one line:
 *   tune <MB/s> <tokens> <bytes per pass> <passes>  */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tune/tokenizer.h"
#include "tune/util.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: tokenizer_bench MODEL CORPUS.jsonl PASSES\n");
        return 2;
    }
    int passes = atoi(argv[3]);
    tune_tokenizer *tok;
    tune_error err;
    char *data;
    size_t len;
    if (tune_tokenizer_load(argv[1], &tok, &err) != TUNE_OK || tune_read_file(argv[2], &data, &len, &err) != TUNE_OK) {
        tune_error_print(stderr, &err);
        return 1;
    }
    size_t n = 0, cap = 0, bytes = 0;
    char **text = NULL;
    size_t *tlen = NULL;
    for (char *s = data; *s;) {
        char *e = strchr(s, '\n');
        size_t l = e ? (size_t)(e - s) : strlen(s);
        if (n == cap) {
            cap = cap ? 2 * cap : 1024;
            text = realloc(text, cap * sizeof *text);
            tlen = realloc(tlen, cap * sizeof *tlen);
            if (!text || !tlen) return 1;
        }
        if (tune_json_string_decode(s, l, &text[n], &tlen[n], &err) != TUNE_OK) {
            tune_error_print(stderr, &err);
            return 1;
        }
        bytes += tlen[n++];
        if (!e) break;
        s = e + 1;
    }
    tune_ids ids = {0};
    size_t tokens = 0;
    double t0 = now();
    for (int p = 0; p < passes; p++)
        for (size_t i = 0; i < n; i++) {
            if (tune_tokenizer_encode(tok, text[i], tlen[i], 1, &ids, &err) != TUNE_OK) {
                tune_error_print(stderr, &err);
                return 1;
            }
            tokens += ids.n;
        }
    double dt = now() - t0;
    printf("tune %.2f %zu %zu %d\n", (double)bytes * passes / dt / 1e6, tokens / (size_t)passes, bytes, passes);
    for (size_t i = 0; i < n; i++) free(text[i]);
    free(text);
    free(tlen);
    free(data);
    tune_ids_free(&ids);
    tune_tokenizer_free(tok);
    return 0;
}
