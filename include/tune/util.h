/* Small shared helpers: whole-file reads, atomic writes, directories,
 * growable strings, SHA-256. */
#ifndef TUNE_UTIL_H
#define TUNE_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/sha.h>

#include "tune/error.h"

/* Reads a whole file; *data is NUL-terminated (not counted in *len). */
tune_status tune_read_file(const char *path, char **data, size_t *len, tune_error *err);

/* Writes data to path through path.tmp: write, fsync, rename, fsync the
 * directory. A crash leaves the old file or the new one, never half. */
tune_status tune_write_file_atomic(const char *path, const void *data, size_t len, tune_error *err);

/* One writer per output_dir: an exclusive flock on output_dir/tune.lock
 * (output_dir and the file are created), with this process's pid written
 * into the file. The lock lasts until tune_unlock_output_dir or the end of
 * the process: the kernel drops it when its holder dies, so the file a
 * killed run left behind never blocks the next one. Another process holding
 * it: TUNE_ERR_INPUT naming its pid. *fd is the lock (-1 on error). */
#define TUNE_LOCK_FILE "tune.lock"
tune_status tune_lock_output_dir(const char *dir, int *fd, tune_error *err);
void tune_unlock_output_dir(int fd);

/* A test hook, for the end-to-end fault tests only. With the environment
 * variable TUNE_TEST_FAULT=ACTION@POINT, a process that reaches a point whose
 * name (printf-formatted) ends with POINT sends itself SIGKILL (ACTION kill:
 * a crash, nothing else runs) or SIGSTOP (ACTION stop: the test then signals
 * or kills it). Points: "after step N" (step N's update applied, before its
 * log, eval and save) and "write PATH" (half of an atomic write of PATH on
 * disk, in PATH.tmp). Unset, it costs one getenv. */
void tune_test_fault_point(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* mkdir -p. */
tune_status tune_mkdir_p(const char *path, tune_error *err);
int tune_path_exists(const char *path);
int tune_is_dir(const char *path);
/* Drops the whole pages of a read-only file mapping inside [p, p + n) from
 * memory (they are read again from the file if touched): a loader calls it
 * once a tensor has been converted, so the file never sits in memory whole. */
void tune_drop_mapped(const void *p, size_t n);
/* A buffer for weights that are streamed whole again and again (decoding):
 * 2 MiB-aligned and marked for transparent huge pages, so the stream does
 * not stall on page walks. Free with free(); NULL when out of memory. */
void *tune_alloc_weights(size_t bytes);
/* Maps in the whole pages of [p, p + n), writable, on all threads at once:
 * a buffer that is written whole at once (training's workspace) then does
 * not take a page fault per 4 KiB inside the first step (0.33 s for 800 MB
 * here, 0.10 s this way). The whole 2 MiB stretches inside it are asked
 * for as huge pages (transparent huge pages, madvise mode): each pass
 * sweeps hundreds of MB, and with 4 KiB pages it also walks the page
 * tables; the bench config's steps are about 2% faster. When the kernel
 * must first compact memory to find free huge pages, this takes up to a
 * second or two longer (0.2 s when they are free). Only hints: nothing
 * happens where the kernel lacks them. */
void tune_populate(void *p, size_t n);
/* The most resident memory this process has held so far, in bytes. */
size_t tune_peak_rss_bytes(void);
/* Seconds since this process started, as the kernel counts it from the fork
 * (an exec, like the BLAS re-execution, keeps the clock running), in steps
 * of 10 ms; negative where the system does not say. */
double tune_process_seconds(void);

/* Growable NUL-terminated string. */
typedef struct tune_strbuf {
    char *data;
    size_t len, cap;
    int oom; /* set once an allocation failed; later appends are ignored */
} tune_strbuf;

void tune_strbuf_append(tune_strbuf *sb, const char *s, size_t n);
void tune_strbuf_puts(tune_strbuf *sb, const char *s);
void tune_strbuf_printf(tune_strbuf *sb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void tune_strbuf_free(tune_strbuf *sb);
/* Appends s[0, n) as one CSV field: in double quotes, quotes doubled (RFC 4180). */
void tune_strbuf_csv_field(tune_strbuf *sb, const char *s, size_t n);

/* SHA-256 (FIPS 180-4), through OpenSSL's libcrypto. */
typedef struct tune_sha256 {
    SHA256_CTX ctx;
} tune_sha256;

void tune_sha256_init(tune_sha256 *s);
void tune_sha256_update(tune_sha256 *s, const void *data, size_t len);
void tune_sha256_final(tune_sha256 *s, uint8_t digest[32]);
/* Lower-case hex digest of a buffer / of a file's bytes. hex has 65 bytes. */
void tune_sha256_hex(const void *data, size_t len, char hex[65]);
tune_status tune_sha256_file_hex(const char *path, char hex[65], tune_error *err);

#endif
