/* Checkpoints: output_dir/checkpoint-N/ holds the adapter (PEFT files),
 * optimizer.safetensors (the AdamW moments) and trainer_state.json. The
 * folder is built as checkpoint-N.tmp and renamed, so a checkpoint-N folder
 * is always complete. */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"
#include "tune/safetensors.h"

#define OPTIMIZER_FILE "optimizer.safetensors"
#define STATE_FILE "trainer_state.json"

tune_status train_path(char *buf, size_t size, const char *dir, const char *name, tune_error *err)
{
    if (snprintf(buf, size, "%s/%s", dir, name) >= (int)size)
        return tune_fail_input(err, dir, "path too long");
    return TUNE_OK;
}

/* ---- trainer_state.json ------------------------------------------------ */

static void add_num(cJSON *o, const char *key, double x)
{
    cJSON_AddNumberToObject(o, key, x);
}

tune_status train_state_json(const train_state *st, tune_strbuf *out, tune_error *err)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *hist = o ? cJSON_Duplicate(st->log_history, 1) : NULL;
    if (!hist) {
        cJSON_Delete(o);
        return tune_fail_run(err, NULL, "out of memory writing the trainer state");
    }
    add_num(o, "global_step", (double)st->global_step);
    add_num(o, "epoch", st->epoch);
    add_num(o, "max_steps", (double)st->total_steps);
    cJSON *mb = cJSON_AddArrayToObject(o, "micro_batches_per_epoch");
    for (int e = 0; mb && e < st->n_epochs; e++) cJSON_AddItemToArray(mb, cJSON_CreateNumber((double)st->epoch_mb[e]));
    add_num(o, "gradient_accumulation_steps", st->accum);
    char seed[32];
    snprintf(seed, sizeof seed, "%" PRIu64, st->seed);
    cJSON_AddStringToObject(o, "seed", seed); /* a string: a u64 does not fit a JSON double */
    /* The next micro-batch to read. */
    cJSON *pos = cJSON_AddObjectToObject(o, "data_position");
    if (pos) {
        add_num(pos, "epoch", st->data_epoch);
        add_num(pos, "micro_batch", (double)st->data_index);
    }
    add_num(o, "logging_steps", (double)st->logging_steps);
    add_num(o, "eval_steps", (double)st->eval_steps);
    add_num(o, "save_steps", (double)st->save_steps);
    if (st->best_step > 0) {
        add_num(o, "best_metric", st->best_eval);
        add_num(o, "best_global_step", (double)st->best_step);
    } else {
        cJSON_AddNullToObject(o, "best_metric");
        cJSON_AddNullToObject(o, "best_global_step");
    }
    cJSON *acc = cJSON_AddObjectToObject(o, "loss_accumulator");
    if (acc) {
        add_num(acc, "since_last_log", st->log_loss_sum);
        add_num(acc, "steps_since_last_log", (double)st->log_n);
        add_num(acc, "total", st->loss_sum);
        add_num(acc, "last_loss", st->last_loss);
        add_num(acc, "watchdog_count", (double)st->watchdog_count);
        add_num(acc, "skipped_steps", (double)st->skipped_steps);
        add_num(acc, "evals_not_improved", (double)st->evals_not_improved);
        add_num(acc, "last_eval_loss", st->last_eval);
        add_num(acc, "last_eval_step", (double)st->last_eval_step);
    }
    cJSON_AddItemToObject(o, "log_history", hist);
    char *text = cJSON_Print(o);
    cJSON_Delete(o);
    if (!text) return tune_fail_run(err, NULL, "out of memory writing the trainer state");
    tune_strbuf_puts(out, text);
    tune_strbuf_puts(out, "\n");
    cJSON_free(text);
    return out->oom ? tune_fail_run(err, NULL, "out of memory writing the trainer state") : TUNE_OK;
}

/* A number member of o, or an error naming the file and the key. */
static tune_status get_num(const cJSON *o, const char *key, const char *path, double *x, tune_error *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(v)) return tune_fail_input(err, path, "'%s' is missing or not a number", key);
    *x = v->valuedouble;
    return TUNE_OK;
}

static tune_status get_long(const cJSON *o, const char *key, const char *path, long *x, tune_error *err)
{
    double d = 0.0;
    tune_status st = get_num(o, key, path, &d, err);
    if (st) return st;
    if (d != (double)(long)d || d < 0) return tune_fail_input(err, path, "'%s' is not a count", key);
    *x = (long)d;
    return TUNE_OK;
}

static tune_status parse_state(const cJSON *o, const char *path, train_state *st, tune_error *err)
{
    long accum = 0, data_epoch = 0;
    tune_status s = TUNE_OK;
    if (!cJSON_IsObject(o)) return tune_fail_input(err, path, "not a JSON object");
    if (!s) s = get_long(o, "global_step", path, &st->global_step, err);
    if (!s) s = get_long(o, "max_steps", path, &st->total_steps, err);
    if (!s) s = get_num(o, "epoch", path, &st->epoch, err);
    if (!s) s = get_long(o, "gradient_accumulation_steps", path, &accum, err);
    if (!s) s = get_long(o, "logging_steps", path, &st->logging_steps, err);
    if (!s) s = get_long(o, "eval_steps", path, &st->eval_steps, err);
    if (!s) s = get_long(o, "save_steps", path, &st->save_steps, err);
    if (s) return s;
    if (accum < 1 || accum > 1 << 20) return tune_fail_input(err, path, "gradient_accumulation_steps is out of range");
    st->accum = (int)accum;
    const cJSON *pos = cJSON_GetObjectItemCaseSensitive(o, "data_position");
    if (!cJSON_IsObject(pos)) return tune_fail_input(err, path, "'data_position' is missing");
    s = get_long(pos, "epoch", path, &data_epoch, err);
    if (!s) s = get_long(pos, "micro_batch", path, &st->data_index, err);
    if (s) return s;
    if (data_epoch > 1 << 30) return tune_fail_input(err, path, "'data_position.epoch' is out of range");
    st->data_epoch = (int)data_epoch;
    /* The run's epochs must have the checkpoint's micro-batch counts, or the
     * data position would mean other data. */
    const cJSON *mb = cJSON_GetObjectItemCaseSensitive(o, "micro_batches_per_epoch");
    int same = cJSON_IsArray(mb) && cJSON_GetArraySize(mb) == st->n_epochs;
    for (int e = 0; same && e < st->n_epochs; e++) {
        const cJSON *x = cJSON_GetArrayItem(mb, e);
        same = cJSON_IsNumber(x) && x->valuedouble == (double)st->epoch_mb[e];
    }
    if (!same)
        return tune_fail_input(err, path, "'micro_batches_per_epoch' differs from this run's data: resuming needs "
                                          "the same data and batch settings");
    const cJSON *seed = cJSON_GetObjectItemCaseSensitive(o, "seed");
    char *end = NULL;
    errno = 0;
    if (cJSON_IsString(seed)) st->seed = strtoull(seed->valuestring, &end, 10);
    if (!cJSON_IsString(seed) || !isdigit((unsigned char)seed->valuestring[0]) || *end || errno)
        return tune_fail_input(err, path, "'seed' is missing or not a decimal string");

    const cJSON *best = cJSON_GetObjectItemCaseSensitive(o, "best_metric");
    if (cJSON_IsNumber(best)) {
        st->best_eval = best->valuedouble;
        s = get_long(o, "best_global_step", path, &st->best_step, err);
        if (s) return s;
    }
    const cJSON *acc = cJSON_GetObjectItemCaseSensitive(o, "loss_accumulator");
    if (!cJSON_IsObject(acc)) return tune_fail_input(err, path, "'loss_accumulator' is missing");
    if (!s) s = get_num(acc, "since_last_log", path, &st->log_loss_sum, err);
    if (!s) s = get_long(acc, "steps_since_last_log", path, &st->log_n, err);
    if (!s) s = get_num(acc, "total", path, &st->loss_sum, err);
    if (!s) s = get_num(acc, "last_loss", path, &st->last_loss, err);
    if (!s) s = get_long(acc, "watchdog_count", path, &st->watchdog_count, err);
    /* Checkpoints written before steps could be skipped have none. */
    if (!s && cJSON_GetObjectItemCaseSensitive(acc, "skipped_steps"))
        s = get_long(acc, "skipped_steps", path, &st->skipped_steps, err);
    if (!s) s = get_long(acc, "evals_not_improved", path, &st->evals_not_improved, err);
    if (!s) s = get_num(acc, "last_eval_loss", path, &st->last_eval, err);
    if (!s) s = get_long(acc, "last_eval_step", path, &st->last_eval_step, err);
    if (s) return s;
    const cJSON *hist = cJSON_GetObjectItemCaseSensitive(o, "log_history");
    if (!cJSON_IsArray(hist)) return tune_fail_input(err, path, "'log_history' is missing");
    st->log_history = cJSON_Duplicate(hist, 1);
    if (!st->log_history) return tune_fail_run(err, path, "out of memory");
    return TUNE_OK;
}

/* ---- folders ----------------------------------------------------------- */

/* N when name is "checkpoint-N" followed by suffix exactly, else -1. */
static long checkpoint_number(const char *name, const char *suffix)
{
    static const char prefix[] = "checkpoint-";
    if (strncmp(name, prefix, sizeof prefix - 1) != 0) return -1;
    const char *p = name + sizeof prefix - 1;
    if (!isdigit((unsigned char)*p)) return -1;
    char *end;
    errno = 0;
    const long n = strtol(p, &end, 10);
    if (errno || strcmp(end, suffix) != 0) return -1;
    return n;
}

/* Removes a folder of plain files (checkpoints have no subfolders). */
static tune_status remove_flat_dir(const char *dir, tune_error *err)
{
    DIR *d = opendir(dir);
    if (!d) return errno == ENOENT ? TUNE_OK : tune_fail_run(err, dir, "cannot open: %s", strerror(errno));
    struct dirent *e;
    tune_status st = TUNE_OK;
    while (!st && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char path[4096];
        st = train_path(path, sizeof path, dir, e->d_name, err);
        if (!st && unlink(path) != 0) st = tune_fail_run(err, path, "cannot remove: %s", strerror(errno));
    }
    closedir(d);
    if (!st && rmdir(dir) != 0) st = tune_fail_run(err, dir, "cannot remove: %s", strerror(errno));
    return st;
}

/* Makes a rename inside dir durable. */
static void sync_dir(const char *dir)
{
    const int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0) return; /* the rename itself already happened */
    fsync(fd);
    close(fd);
}

typedef struct ckpt_list {
    long *steps;
    int n;
} ckpt_list;

static int cmp_long(const void *a, const void *b)
{
    const long x = *(const long *)a, y = *(const long *)b;
    return (x > y) - (x < y);
}

/* The complete checkpoints of output_dir, oldest first. */
static tune_status list_checkpoints(const char *output_dir, ckpt_list *out, tune_error *err)
{
    out->steps = NULL;
    out->n = 0;
    DIR *d = opendir(output_dir);
    if (!d) return errno == ENOENT ? TUNE_OK : tune_fail_run(err, output_dir, "cannot open: %s", strerror(errno));
    int cap = 0;
    struct dirent *e;
    tune_status st = TUNE_OK;
    while (!st && (e = readdir(d))) {
        const long n = checkpoint_number(e->d_name, "");
        char path[4096], state[4200];
        if (n < 0 || train_path(path, sizeof path, output_dir, e->d_name, NULL) ||
            train_path(state, sizeof state, path, STATE_FILE, NULL) || !tune_path_exists(state))
            continue;
        if (out->n == cap) {
            cap = cap ? 2 * cap : 16;
            long *grown = realloc(out->steps, (size_t)cap * sizeof *grown);
            if (!grown) {
                st = tune_fail_run(err, output_dir, "out of memory");
                break;
            }
            out->steps = grown;
        }
        out->steps[out->n++] = n;
    }
    closedir(d);
    if (st) {
        free(out->steps);
        out->steps = NULL;
        out->n = 0;
        return st;
    }
    if (out->n) qsort(out->steps, (size_t)out->n, sizeof *out->steps, cmp_long);
    return TUNE_OK;
}

int tune_train_latest_checkpoint(const char *output_dir, char *path, size_t size)
{
    ckpt_list l;
    if (list_checkpoints(output_dir, &l, NULL) || l.n == 0) return 0;
    const int ok = snprintf(path, size, "%s/checkpoint-%ld", output_dir, l.steps[l.n - 1]) < (int)size;
    free(l.steps);
    return ok;
}

tune_status checkpoint_prune(const char *output_dir, int limit, tune_error *err)
{
    ckpt_list l;
    tune_status st = list_checkpoints(output_dir, &l, err);
    for (int i = 0; !st && i + limit < l.n; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/checkpoint-%ld", output_dir, l.steps[i]);
        st = remove_flat_dir(path, err);
    }
    free(l.steps);
    if (!st) sync_dir(output_dir);
    return st;
}

tune_status checkpoint_remove_partial(const char *output_dir, tune_error *err)
{
    DIR *d = opendir(output_dir);
    if (!d) return errno == ENOENT ? TUNE_OK : tune_fail_run(err, output_dir, "cannot open: %s", strerror(errno));
    struct dirent *e;
    tune_status st = TUNE_OK;
    while (!st && (e = readdir(d))) {
        if (checkpoint_number(e->d_name, ".tmp") < 0 && checkpoint_number(e->d_name, ".old") < 0) continue;
        char path[4096];
        st = train_path(path, sizeof path, output_dir, e->d_name, err);
        if (!st) st = remove_flat_dir(path, err);
    }
    closedir(d);
    return st;
}

/* ---- writing and reading a checkpoint ----------------------------------- */

static tune_status write_contents(const char *dir, const train_state *st, const tune_lora *lora,
                                  const float *exp_avg, const float *exp_avg_sq, const char *base_model,
                                  tune_error *err)
{
    char path[4096];
    tune_status s = tune_lora_save_peft(lora, dir, base_model, err);
    if (s) return s;
    const tune_st_entry moments[2] = {
        {.name = "exp_avg", .dtype = TUNE_DT_F32, .ndim = 1, .shape = {(int64_t)lora->n_params}, .f32 = exp_avg},
        {.name = "exp_avg_sq", .dtype = TUNE_DT_F32, .ndim = 1, .shape = {(int64_t)lora->n_params},
         .f32 = exp_avg_sq},
    };
    s = train_path(path, sizeof path, dir, OPTIMIZER_FILE, err);
    if (!s) s = tune_st_write(path, moments, 2, err);
    if (s) return s;
    tune_strbuf json = {0};
    s = train_state_json(st, &json, err);
    if (!s) s = train_path(path, sizeof path, dir, STATE_FILE, err);
    if (!s) s = tune_write_file_atomic(path, json.data, json.len, err);
    tune_strbuf_free(&json);
    return s;
}

tune_status checkpoint_write(const char *output_dir, const train_state *st, const tune_lora *lora,
                             const float *exp_avg, const float *exp_avg_sq, const char *base_model,
                             char *path, size_t size, tune_error *err)
{
    char tmp[4096], old[4096];
    if (snprintf(path, size, "%s/checkpoint-%ld", output_dir, st->global_step) >= (int)size ||
        snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp ||
        snprintf(old, sizeof old, "%s.old", path) >= (int)sizeof old)
        return tune_fail_input(err, output_dir, "path too long");
    tune_status s = remove_flat_dir(tmp, err);
    if (s) return s;
    s = write_contents(tmp, st, lora, exp_avg, exp_avg_sq, base_model, err);
    if (s) {
        remove_flat_dir(tmp, NULL); /* frees what a full disk needs back; the error is the write's */
        return s;
    }
    /* A checkpoint of the same step from an earlier run (resumed from an
     * older checkpoint) is replaced: moved aside, then removed. */
    const int replacing = tune_is_dir(path);
    if (replacing && rename(path, old) != 0)
        return tune_fail_run(err, path, "cannot move aside: %s", strerror(errno));
    if (rename(tmp, path) != 0) return tune_fail_run(err, tmp, "cannot rename to %s: %s", path, strerror(errno));
    sync_dir(output_dir);
    return replacing ? remove_flat_dir(old, err) : TUNE_OK;
}

static tune_status read_moments(const char *dir, const tune_lora *lora, float *exp_avg, float *exp_avg_sq,
                                tune_error *err)
{
    char path[4096];
    tune_status s = train_path(path, sizeof path, dir, OPTIMIZER_FILE, err);
    tune_st_file *f = NULL;
    if (!s) s = tune_st_open(path, &f, err);
    if (s) return s;
    const char *names[2] = {"exp_avg", "exp_avg_sq"};
    float *dst[2] = {exp_avg, exp_avg_sq};
    const int64_t shape[1] = {(int64_t)lora->n_params};
    for (int i = 0; i < 2 && !s; i++) {
        const tune_st_tensor *t = tune_st_find(f, names[i]);
        if (!t) s = tune_fail_input(err, path, "tensor '%s' is missing", names[i]);
        else if (t->dtype != TUNE_DT_F32) s = tune_fail_input(err, path, "tensor '%s' is not F32", names[i]);
        if (!s) s = tune_st_expect_shape(t, 1, shape, err);
        if (!s) s = tune_st_read_f32(t, dst[i], err);
    }
    tune_st_close(f);
    return s;
}

tune_status checkpoint_read(const char *dir, const tune_model_config *mcfg, train_state *st, tune_lora *lora,
                            float *exp_avg, float *exp_avg_sq, tune_error *err)
{
    char path[4096];
    if (!tune_is_dir(dir)) return tune_fail_input(err, dir, "checkpoint folder not found");
    tune_status s = train_path(path, sizeof path, dir, STATE_FILE, err);
    char *text = NULL;
    size_t len;
    if (!s) s = tune_read_file(path, &text, &len, err);
    if (s) return s;
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    if (!root) return tune_fail_input(err, path, "not valid JSON");
    train_state parsed = *st;
    parsed.log_history = NULL;
    s = parse_state(root, path, &parsed, err);
    cJSON_Delete(root);
    if (!s) s = tune_lora_load_peft(lora, mcfg, dir, err);
    if (!s) s = read_moments(dir, lora, exp_avg, exp_avg_sq, err);
    if (s) {
        cJSON_Delete(parsed.log_history);
        return s;
    }
    *st = parsed;
    return TUNE_OK;
}
