#include "tune/util.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

tune_status tune_read_file(const char *path, char **data, size_t *len, tune_error *err)
{
    *data = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return tune_fail_input(err, path, "cannot open: %s", strerror(errno));
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        if (n + 1 >= cap) {
            char *grown = realloc(buf, cap * 2);
            if (!grown) { free(buf); buf = NULL; break; }
            buf = grown;
            cap *= 2;
        }
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0) break;
    }
    int read_failed = ferror(f);
    fclose(f);
    if (!buf) return tune_fail_run(err, path, "out of memory reading the file");
    if (read_failed) { free(buf); return tune_fail_input(err, path, "read error"); }
    buf[n] = '\0';
    *data = buf;
    *len = n;
    return TUNE_OK;
}

static tune_status fsync_parent_dir(const char *path, tune_error *err)
{
    char *copy = strdup(path);
    if (!copy) return tune_fail_run(err, path, "out of memory");
    int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY);
    free(copy);
    if (fd < 0) return tune_fail_run(err, path, "cannot open its directory: %s", strerror(errno));
    fsync(fd); /* some file systems refuse fsync on directories; the rename already happened */
    close(fd);
    return TUNE_OK;
}

/* 0, or -1 with errno set. */
static int write_all(int fd, const char *p, size_t left)
{
    while (left > 0) {
        const ssize_t w = write(fd, p, left);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += w;
        left -= (size_t)w;
    }
    return 0;
}

tune_status tune_write_file_atomic(const char *path, const void *data, size_t len, tune_error *err)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp)
        return tune_fail_input(err, path, "path too long");
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return tune_fail_run(err, tmp, "cannot create: %s", strerror(errno));
    /* In two halves, so that a test can crash the process between them. */
    const size_t half = len / 2;
    int failed = write_all(fd, data, half);
    if (!failed) {
        tune_test_fault_point("write %s", path);
        failed = write_all(fd, (const char *)data + half, len - half);
    }
    if (failed) {
        const int e = errno;
        close(fd);
        unlink(tmp);
        return tune_fail_run(err, tmp, "write failed: %s", strerror(e));
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        int e = errno;
        unlink(tmp);
        return tune_fail_run(err, tmp, "fsync/close failed: %s", strerror(e));
    }
    if (rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return tune_fail_run(err, path, "rename failed: %s", strerror(e));
    }
    return fsync_parent_dir(path, err);
}

/* The pid recorded in a lock file, or 0. */
static long lock_holder(int fd)
{
    char buf[32];
    const ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    if (n <= 0) return 0;
    buf[n] = 0;
    return strtol(buf, NULL, 10);
}

tune_status tune_lock_output_dir(const char *dir, int *fd_out, tune_error *err)
{
    *fd_out = -1;
    char path[4096];
    if (snprintf(path, sizeof path, "%s/" TUNE_LOCK_FILE, dir) >= (int)sizeof path)
        return tune_fail_input(err, dir, "path too long");
    tune_status st = tune_mkdir_p(dir, err);
    if (st) return st;
    const int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return tune_fail_run(err, path, "cannot create the lock file: %s", strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        const int e = errno;
        const long holder = e == EWOULDBLOCK ? lock_holder(fd) : 0;
        close(fd);
        if (e != EWOULDBLOCK) return tune_fail_run(err, path, "cannot lock: %s", strerror(e));
        char pid[32] = "a pid not yet written";
        if (holder > 0) snprintf(pid, sizeof pid, "pid %ld", holder);
        return tune_fail_input(err, dir,
                               "output_dir is in use by another tune run (%s holds %s): one run writes into an "
                               "output_dir at a time; wait for it to end, or choose another output_dir",
                               pid, path);
    }
    /* The pid, for the message above; written before the old text is cut
     * off, so a reader never finds the file empty. */
    char pid[32];
    const int n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (pwrite(fd, pid, (size_t)n, 0) != n || ftruncate(fd, n) != 0) {
        const int e = errno;
        close(fd);
        return tune_fail_run(err, path, "cannot write: %s", strerror(e));
    }
    *fd_out = fd;
    return TUNE_OK;
}

void tune_unlock_output_dir(int fd)
{
    if (fd >= 0) close(fd); /* closing drops the lock; the file stays, harmless */
}

tune_status tune_mkdir_p(const char *path, tune_error *err)
{
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
        return tune_fail_input(err, path, "path too long");
    for (char *p = buf + 1; ; p++) {
        if (*p == '/' || *p == '\0') {
            char saved = *p;
            *p = '\0';
            if (mkdir(buf, 0755) != 0 && errno != EEXIST)
                return tune_fail_run(err, buf, "cannot create directory: %s", strerror(errno));
            *p = saved;
            if (saved == '\0') break;
        }
    }
    if (!tune_is_dir(path)) return tune_fail_run(err, path, "exists and is not a directory");
    return TUNE_OK;
}

int tune_path_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

int tune_is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

void tune_strbuf_append(tune_strbuf *sb, const char *s, size_t n)
{
    if (sb->oom) return;
    if (sb->len + n + 1 > sb->cap) {
        size_t cap = sb->cap ? sb->cap : 256;
        while (cap < sb->len + n + 1) cap *= 2;
        char *grown = realloc(sb->data, cap);
        if (!grown) { sb->oom = 1; return; }
        sb->data = grown;
        sb->cap = cap;
    }
    memcpy(sb->data + sb->len, s, n);
    sb->len += n;
    sb->data[sb->len] = '\0';
}

void tune_strbuf_puts(tune_strbuf *sb, const char *s) { tune_strbuf_append(sb, s, strlen(s)); }

void tune_strbuf_csv_field(tune_strbuf *sb, const char *s, size_t n)
{
    tune_strbuf_puts(sb, "\"");
    for (const char *q; n && (q = memchr(s, '"', n));) {
        tune_strbuf_append(sb, s, (size_t)(q - s) + 1);
        tune_strbuf_puts(sb, "\"");
        n -= (size_t)(q - s) + 1;
        s = q + 1;
    }
    tune_strbuf_append(sb, s, n);
    tune_strbuf_puts(sb, "\"");
}

void tune_strbuf_printf(tune_strbuf *sb, const char *fmt, ...)
{
    char small[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n < sizeof small) { tune_strbuf_append(sb, small, (size_t)n); return; }
    char *big = malloc((size_t)n + 1);
    if (!big) { sb->oom = 1; return; }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    tune_strbuf_append(sb, big, (size_t)n);
    free(big);
}

void tune_strbuf_free(tune_strbuf *sb)
{
    free(sb->data);
    memset(sb, 0, sizeof *sb);
}

size_t tune_peak_rss_bytes(void)
{
    struct rusage ru;
    return getrusage(RUSAGE_SELF, &ru) == 0 ? (size_t)ru.ru_maxrss * 1024 : 0; /* Linux reports KiB */
}

double tune_process_seconds(void)
{
    char buf[1024];
    FILE *f = fopen("/proc/self/stat", "r");
    if (!f) return -1.0;
    const size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    /* Field 22, start time in clock ticks after boot; the command name
     * (field 2, in parentheses) may hold spaces, so count from its end. */
    const char *p = strrchr(buf, ')');
    for (int field = 2; p && field < 22; field++) p = strchr(p + 1, ' ');
    struct timespec now;
    const long hz = sysconf(_SC_CLK_TCK);
    if (!p || hz <= 0 || clock_gettime(CLOCK_BOOTTIME, &now)) return -1.0;
    const double started = (double)strtoull(p + 1, NULL, 10) / (double)hz;
    return (double)now.tv_sec + 1e-9 * (double)now.tv_nsec - started;
}

void tune_drop_mapped(const void *p, size_t n)
{
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE), start = ((uintptr_t)p + page - 1) & ~(page - 1),
                    end = ((uintptr_t)p + n) & ~(page - 1);
    if (end > start) madvise((void *)start, end - start, MADV_DONTNEED); /* only a hint: failure changes nothing */
}

void tune_populate(void *p, size_t n)
{
    const uintptr_t huge = (uintptr_t)2 << 20, h0 = ((uintptr_t)p + huge - 1) & ~(huge - 1),
                    h1 = ((uintptr_t)p + n) & ~(huge - 1);
    if (h1 > h0) madvise((void *)h0, h1 - h0, MADV_HUGEPAGE);
#ifdef MADV_POPULATE_WRITE
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE), start = (uintptr_t)p & ~(page - 1),
                    end = ((uintptr_t)p + n + page - 1) & ~(page - 1), chunk = (uintptr_t)16 << 20;
#pragma omp parallel for schedule(dynamic)
    for (uintptr_t at = start; at < end; at += chunk)
        madvise((void *)at, end - at < chunk ? end - at : chunk, MADV_POPULATE_WRITE);
#else
    (void)p, (void)n;
#endif
}

void *tune_alloc_weights(size_t bytes)
{
    const size_t huge = (size_t)2 << 20;
    void *p = NULL;
    if (posix_memalign(&p, huge, bytes ? bytes : 1) != 0) return NULL;
    if (bytes >= huge) madvise(p, bytes & ~(huge - 1), MADV_HUGEPAGE); /* whole huge pages of it; a hint, ignored without THP */
    return p;
}
