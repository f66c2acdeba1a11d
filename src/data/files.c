/* Which files a dataset entry reads: `path` (a file or a folder), its
 * `data_files` and its `split`. */
#include <dirent.h>
#include <stdlib.h>
#include <string.h>

#include "tune/data.h"

static int data_ext(const char *name)
{
    const char *dot = strrchr(name, '.');
    return dot && (!strcmp(dot, ".json") || !strcmp(dot, ".jsonl") || !strcmp(dot, ".ndjson") || !strcmp(dot, ".txt"));
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static char *join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

/* Data files directly in dir, sorted; with split, only those named
 * SPLIT.ext or SPLIT-*.ext (when there are any). */
static tune_status list_dir(const char *dir, const char *split, char ***out, int *n_out, tune_error *err)
{
    DIR *d = opendir(dir);
    if (!d) return tune_fail_input(err, dir, "cannot open the dataset folder");
    char **names = NULL;
    int n = 0, cap = 0, n_split = 0;
    struct dirent *e;
    tune_status st = TUNE_OK;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.' || !data_ext(e->d_name)) continue;
        char *path = join(dir, e->d_name);
        if (!path || tune_is_dir(path)) {
            free(path);
            if (!path) st = tune_fail_run(err, dir, "out of memory");
            if (st) break;
            continue;
        }
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            char **p = realloc(names, (size_t)cap * sizeof *p);
            if (!p) {
                free(path);
                st = tune_fail_run(err, dir, "out of memory");
                break;
            }
            names = p;
        }
        names[n++] = path;
        size_t k = split ? strlen(split) : 0;
        if (k && !strncmp(e->d_name, split, k) && (e->d_name[k] == '.' || e->d_name[k] == '-')) n_split++;
    }
    closedir(d);
    if (!st && n_split > 0) {
        /* keep the split's files only */
        int m = 0;
        size_t k = strlen(split);
        for (int i = 0; i < n; i++) {
            const char *base = names[i] + strlen(dir) + 1;
            if (!strncmp(base, split, k) && (base[k] == '.' || base[k] == '-')) names[m++] = names[i];
            else free(names[i]);
        }
        n = m;
    }
    if (!st && n == 0) st = tune_fail_input(err, dir, "no .json, .jsonl or .txt files in the dataset folder");
    if (st) {
        for (int i = 0; i < n; i++) free(names[i]);
        free(names);
        return st;
    }
    qsort(names, (size_t)n, sizeof *names, cmp_str);
    *out = names;
    *n_out = n;
    return TUNE_OK;
}

tune_status tune_data_resolve_files(const char *path, const char *const *data_files, int n_data_files,
                                    const char *split, char ***files, int *n_files, tune_error *err)
{
    *files = NULL;
    *n_files = 0;
    if (!tune_path_exists(path)) return tune_fail_input(err, path, "dataset path does not exist");
    if (!tune_is_dir(path)) {
        if (n_data_files > 0)
            return tune_fail_input(err, path, "data_files needs path to be a folder (path is a file)");
        char **one = malloc(sizeof *one);
        if (!one || !(one[0] = strdup(path))) {
            free(one);
            return tune_fail_run(err, path, "out of memory");
        }
        *files = one;
        *n_files = 1;
        return TUNE_OK;
    }
    if (n_data_files == 0) {
        /* a folder laid out by split: PATH/SPLIT/ */
        if (split && *split) {
            char *sub = join(path, split);
            if (!sub) return tune_fail_run(err, path, "out of memory");
            tune_status st = TUNE_OK;
            int found = tune_is_dir(sub);
            if (found) st = list_dir(sub, NULL, files, n_files, err);
            free(sub);
            if (found) return st;
        }
        return list_dir(path, split, files, n_files, err);
    }
    char **list = calloc((size_t)n_data_files, sizeof *list);
    if (!list) return tune_fail_run(err, path, "out of memory");
    for (int i = 0; i < n_data_files; i++) {
        list[i] = join(path, data_files[i]);
        tune_status st = TUNE_OK;
        if (!list[i]) st = tune_fail_run(err, path, "out of memory");
        else if (!tune_path_exists(list[i]) || tune_is_dir(list[i]))
            st = tune_fail_input(err, list[i], "data_files entry is not a file in the dataset folder");
        if (st) {
            tune_data_files_free(list, i + 1);
            return st;
        }
    }
    *files = list;
    *n_files = n_data_files;
    return TUNE_OK;
}

void tune_data_files_free(char **files, int n)
{
    for (int i = 0; files && i < n; i++) free(files[i]);
    free(files);
}
