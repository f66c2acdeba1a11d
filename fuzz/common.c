/* Helpers the fuzz targets share: fixtures, a private temporary folder for
 * parsers that read files by path, and the abort that reports a broken
 * promise. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "targets.h"

const char *tune_fuzz_data_dir(void)
{
    const char *d = getenv("TUNE_TEST_DATA");
    return d && *d ? d : "tests/data";
}

void tune_fuzz_data_path(char *buf, size_t size, const char *rel)
{
    snprintf(buf, size, "%s/%s", tune_fuzz_data_dir(), rel);
}

static char tmpdir[64];

/* Removes dir and what it holds: files, and folders of files. */
static void remove_tree(const char *dir)
{
    DIR *d = opendir(dir);
    for (struct dirent *e; d && (e = readdir(d));) {
        char path[512];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        if (e->d_type == DT_DIR) remove_tree(path);
        else unlink(path);
    }
    if (d) closedir(d);
    rmdir(dir);
}

static void remove_tmpdir(void)
{
    remove_tree(tmpdir);
}

const char *tune_fuzz_tmpdir(void)
{
    if (!tmpdir[0]) {
        const char *base = getenv("TMPDIR");
        snprintf(tmpdir, sizeof tmpdir, "%s/tune-fuzz-XXXXXX", base && *base && strlen(base) < 40 ? base : "/tmp");
        tune_fuzz_check(mkdtemp(tmpdir) != NULL, "cannot make a temporary folder");
        atexit(remove_tmpdir);
    }
    return tmpdir;
}

void tune_fuzz_write_tmp(const char *name, const void *data, size_t size, char *buf, size_t buf_size)
{
    const char *slash = strchr(name, '/');
    if (slash) { /* a folder of its own */
        snprintf(buf, buf_size, "%s/%.*s", tune_fuzz_tmpdir(), (int)(slash - name), name);
        mkdir(buf, 0700);
    }
    snprintf(buf, buf_size, "%s/%s", tune_fuzz_tmpdir(), name);
    FILE *f = fopen(buf, "wb");
    int ok = f && fwrite(data, 1, size, f) == size;
    if (f) ok = !fclose(f) && ok;
    tune_fuzz_check(ok, "cannot write a temporary file");
}

char *tune_fuzz_cstr(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    tune_fuzz_check(s != NULL, "out of memory");
    if (size) memcpy(s, data, size);
    s[size] = 0;
    return s;
}

void tune_fuzz_check(int cond, const char *what)
{
    if (cond) return;
    fprintf(stderr, "fuzz target: %s\n", what);
    abort();
}
