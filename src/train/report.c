/* What a run leaves for people to read: training_log.jsonl, loss.svg,
 * run_manifest.json, and the progress lines the CLI prints. */
#include <errno.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* ---- training_log.jsonl -------------------------------------------------- */

static tune_status append_line(tune_strbuf *sb, const cJSON *entry)
{
    char *line = cJSON_PrintUnformatted(entry);
    if (!line) return TUNE_ERR_RUN;
    tune_strbuf_puts(sb, line);
    tune_strbuf_puts(sb, "\n");
    cJSON_free(line);
    return sb->oom ? TUNE_ERR_RUN : TUNE_OK;
}

tune_status report_log_append(const char *output_dir, const cJSON *entry, tune_error *err)
{
    char path[4096];
    tune_status st = train_path(path, sizeof path, output_dir, "training_log.jsonl", err);
    if (st) return st;
    tune_strbuf sb = {0};
    if (append_line(&sb, entry)) {
        tune_strbuf_free(&sb);
        return tune_fail_run(err, path, "out of memory");
    }
    FILE *f = fopen(path, "a");
    if (!f) {
        tune_strbuf_free(&sb);
        return tune_fail_run(err, path, "cannot open for appending: %s", strerror(errno));
    }
    int ok = fwrite(sb.data, 1, sb.len, f) == sb.len;
    int e = errno;
    tune_strbuf_free(&sb);
    if (fclose(f) != 0 && ok) {
        ok = 0;
        e = errno;
    }
    return ok ? TUNE_OK : tune_fail_run(err, path, "write failed: %s", strerror(e));
}

tune_status report_log_rewrite(const char *output_dir, const train_state *st, tune_error *err)
{
    char path[4096];
    tune_status s = train_path(path, sizeof path, output_dir, "training_log.jsonl", err);
    if (s) return s;
    tune_strbuf sb = {0};
    tune_strbuf_puts(&sb, "");
    const cJSON *e;
    cJSON_ArrayForEach(e, st->log_history) if (append_line(&sb, e)) break;
    if (sb.oom || !sb.data) s = tune_fail_run(err, path, "out of memory");
    else s = tune_write_file_atomic(path, sb.data, sb.len, err);
    tune_strbuf_free(&sb);
    return s;
}

/* ---- loss.svg ------------------------------------------------------------ */

#define SVG_W 800
#define SVG_H 450
#define PLOT_L 72
#define PLOT_R 24
#define PLOT_T 44
#define PLOT_B 56

typedef struct series {
    double *x, *y; /* (n) */
    int n;
} series;

static int series_collect(const cJSON *hist, const char *key, series *s)
{
    const int cap = cJSON_GetArraySize(hist);
    s->n = 0;
    s->x = malloc(((size_t)cap + 1) * sizeof *s->x);
    s->y = malloc(((size_t)cap + 1) * sizeof *s->y);
    if (!s->x || !s->y) return -1;
    const cJSON *e;
    cJSON_ArrayForEach(e, hist)
    {
        const cJSON *step = cJSON_GetObjectItemCaseSensitive(e, "step");
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(e, key);
        if (!cJSON_IsNumber(step) || !cJSON_IsNumber(v) || !isfinite(v->valuedouble)) continue;
        s->x[s->n] = step->valuedouble;
        s->y[s->n] = v->valuedouble;
        s->n++;
    }
    return 0;
}

/* A "nice" tick spacing (1, 2 or 5 times a power of ten) giving about n ticks. */
static double tick_step(double range, int n)
{
    const double raw = range / n;
    const double mag = pow(10.0, floor(log10(raw)));
    const double f = raw / mag;
    return (f < 1.5 ? 1.0 : f < 3.5 ? 2.0 : f < 7.5 ? 5.0 : 10.0) * mag;
}

static void svg_series(tune_strbuf *sb, const series *s, const char *color, double x0, double x1, double y0,
                       double y1)
{
    const double pw = SVG_W - PLOT_L - PLOT_R, ph = SVG_H - PLOT_T - PLOT_B;
    if (s->n == 0) return;
    tune_strbuf_printf(sb, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"", color);
    for (int i = 0; i < s->n; i++)
        tune_strbuf_printf(sb, "%s%.1f,%.1f", i ? " " : "", PLOT_L + (s->x[i] - x0) / (x1 - x0) * pw,
                           PLOT_T + (y1 - s->y[i]) / (y1 - y0) * ph);
    tune_strbuf_puts(sb, "\"/>\n");
    for (int i = 0; i < s->n; i++)
        tune_strbuf_printf(sb, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"/>\n",
                           PLOT_L + (s->x[i] - x0) / (x1 - x0) * pw, PLOT_T + (y1 - s->y[i]) / (y1 - y0) * ph,
                           color);
}

static void svg_build(tune_strbuf *sb, const series *tr, const series *ev, long total_steps)
{
    const double pw = SVG_W - PLOT_L - PLOT_R, ph = SVG_H - PLOT_T - PLOT_B;
    double lo = INFINITY, hi = -INFINITY;
    const series *all[2] = {tr, ev};
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < all[k]->n; i++) {
            lo = fmin(lo, all[k]->y[i]);
            hi = fmax(hi, all[k]->y[i]);
        }
    if (!(lo <= hi)) lo = 0.0, hi = 1.0;
    if (hi - lo < 1e-9) lo -= 0.5, hi += 0.5;
    const double pad = 0.05 * (hi - lo);
    const double ystep = tick_step(hi - lo + 2 * pad, 5);
    const double y0 = floor((lo - pad) / ystep) * ystep, y1 = ceil((hi + pad) / ystep) * ystep;
    const double x0 = 0.0, x1 = total_steps > 0 ? (double)total_steps : 1.0;
    const double xstep = tick_step(x1 - x0, 8) < 1.0 ? 1.0 : tick_step(x1 - x0, 8);

    tune_strbuf_printf(sb,
                       "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
                       "font-family=\"sans-serif\" font-size=\"12\">\n"
                       "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n"
                       "<text x=\"%d\" y=\"24\" font-size=\"16\" text-anchor=\"middle\">Loss by step</text>\n",
                       SVG_W, SVG_H, SVG_W, SVG_H, SVG_W / 2);
    /* Grid lines and tick labels. */
    for (double y = y0; y <= y1 + ystep * 1e-6; y += ystep) {
        const double py = PLOT_T + (y1 - y) / (y1 - y0) * ph;
        tune_strbuf_printf(sb,
                           "<line x1=\"%d\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n"
                           "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%.4g</text>\n",
                           PLOT_L, py, PLOT_L + pw, py, PLOT_L - 6, py + 4, fabs(y) < ystep * 1e-6 ? 0.0 : y);
    }
    for (double x = x0; x <= x1 + xstep * 1e-6; x += xstep) {
        const double px = PLOT_L + (x - x0) / (x1 - x0) * pw;
        tune_strbuf_printf(sb,
                           "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n"
                           "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%.0f</text>\n",
                           px, PLOT_T, px, PLOT_T + ph, px, PLOT_T + ph + 18, x);
    }
    /* Axes and their labels. */
    tune_strbuf_printf(sb,
                       "<line x1=\"%d\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"black\"/>\n"
                       "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%.1f\" stroke=\"black\"/>\n"
                       "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">step</text>\n"
                       "<text x=\"18\" y=\"%.1f\" text-anchor=\"middle\" transform=\"rotate(-90 18 %.1f)\">loss</text>\n",
                       PLOT_L, PLOT_T + ph, PLOT_L + pw, PLOT_T + ph, PLOT_L, PLOT_T, PLOT_L, PLOT_T + ph,
                       PLOT_L + pw / 2, SVG_H - 10, PLOT_T + ph / 2, PLOT_T + ph / 2);
    svg_series(sb, tr, "#1f77b4", x0, x1, y0, y1);
    svg_series(sb, ev, "#ff7f0e", x0, x1, y0, y1);
    /* Legend. */
    const int lx = SVG_W - PLOT_R - 150, ly = PLOT_T + 10;
    tune_strbuf_printf(sb,
                       "<rect x=\"%d\" y=\"%d\" width=\"140\" height=\"44\" fill=\"white\" stroke=\"#999\"/>\n"
                       "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#1f77b4\" stroke-width=\"2\"/>\n"
                       "<text x=\"%d\" y=\"%d\">training loss</text>\n"
                       "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#ff7f0e\" stroke-width=\"2\"/>\n"
                       "<text x=\"%d\" y=\"%d\">validation loss</text>\n",
                       lx, ly, lx + 8, ly + 14, lx + 32, ly + 14, lx + 38, ly + 18, lx + 8, ly + 32, lx + 32,
                       ly + 32, lx + 38, ly + 36);
    if (tr->n == 0 && ev->n == 0)
        tune_strbuf_printf(sb, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">no loss logged yet</text>\n",
                           PLOT_L + pw / 2, PLOT_T + ph / 2);
    tune_strbuf_puts(sb, "</svg>\n");
}

tune_status report_loss_svg(const char *output_dir, const train_state *st, tune_error *err)
{
    char path[4096];
    tune_status s = train_path(path, sizeof path, output_dir, "loss.svg", err);
    if (s) return s;
    series tr = {0}, ev = {0};
    tune_strbuf sb = {0};
    if (series_collect(st->log_history, "loss", &tr) || series_collect(st->log_history, "eval_loss", &ev))
        s = tune_fail_run(err, path, "out of memory");
    if (!s) {
        svg_build(&sb, &tr, &ev, st->total_steps);
        s = sb.oom ? tune_fail_run(err, path, "out of memory") : tune_write_file_atomic(path, sb.data, sb.len, err);
    }
    tune_strbuf_free(&sb);
    free(tr.x);
    free(tr.y);
    free(ev.x);
    free(ev.y);
    return s;
}

/* ---- run_manifest.json --------------------------------------------------- */

/* {"path": ..., "sha256": ...} of a file. */
static tune_status file_entry(cJSON *parent, const char *key, const char *path, tune_error *err)
{
    char hex[65];
    tune_status st = tune_sha256_file_hex(path, hex, err);
    if (st) return st;
    cJSON *o = cJSON_CreateObject();
    if (!o || !cJSON_AddStringToObject(o, "path", path) || !cJSON_AddStringToObject(o, "sha256", hex) ||
        !(key ? cJSON_AddItemToObject(parent, key, o) : cJSON_AddItemToArray(parent, o))) {
        cJSON_Delete(o);
        return tune_fail_run(err, path, "out of memory");
    }
    return TUNE_OK;
}

static tune_status file_list(cJSON *root, const char *key, const char *const *files, int n, tune_error *err)
{
    cJSON *arr = cJSON_AddArrayToObject(root, key);
    if (!arr) return tune_fail_run(err, NULL, "out of memory");
    for (int i = 0; i < n; i++) {
        tune_status st = file_entry(arr, NULL, files[i], err);
        if (st) return st;
    }
    return TUNE_OK;
}

static tune_status manifest_fill(cJSON *m, const tune_train_options *o, const train_state *st, tune_error *err)
{
    char path[4096];
    tune_status s = TUNE_OK;
    cJSON_AddStringToObject(m, "tune_version", o->tune_version ? o->tune_version : "unknown");
    if (o->config_path) s = file_entry(m, "config", o->config_path, err);
    else cJSON_AddNullToObject(m, "config");
    if (!s) s = file_list(m, "data_files", o->data_files, o->n_data_files, err);
    if (!s) s = file_list(m, "model_files", o->model_files, o->n_model_files, err);
    cJSON *adapter = s ? NULL : cJSON_AddArrayToObject(m, "adapter");
    if (!s && !adapter) s = tune_fail_run(err, NULL, "out of memory");
    const char *adapter_files[2] = {"adapter_model.safetensors", "adapter_config.json"};
    for (int i = 0; i < 2 && !s; i++) {
        s = train_path(path, sizeof path, o->output_dir, adapter_files[i], err);
        if (!s) s = file_entry(adapter, NULL, path, err);
    }
    if (s) return s;
    char seed[32];
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)o->seed);
    cJSON_AddStringToObject(m, "seed", seed);
    cJSON_AddNumberToObject(m, "threads", omp_get_max_threads());
    cJSON_AddNumberToObject(m, "global_step", (double)st->global_step);
    cJSON *fin = cJSON_AddObjectToObject(m, "final");
    if (!fin) return tune_fail_run(err, NULL, "out of memory");
    cJSON_AddNumberToObject(fin, "train_loss", st->last_loss);
    cJSON_AddNumberToObject(fin, "mean_train_loss", st->loss_sum / (double)(st->global_step ? st->global_step : 1));
    if (st->last_eval_step > 0) cJSON_AddNumberToObject(fin, "eval_loss", st->last_eval);
    else cJSON_AddNullToObject(fin, "eval_loss");
    return TUNE_OK;
}

tune_status report_manifest(const tune_train_options *o, const train_state *st, tune_error *err)
{
    char path[4096];
    tune_status s = train_path(path, sizeof path, o->output_dir, "run_manifest.json", err);
    if (s) return s;
    cJSON *m = cJSON_CreateObject();
    if (!m) return tune_fail_run(err, path, "out of memory");
    s = manifest_fill(m, o, st, err);
    char *text = s ? NULL : cJSON_Print(m);
    cJSON_Delete(m);
    if (!s && !text) s = tune_fail_run(err, path, "out of memory");
    if (!s) {
        tune_strbuf sb = {0};
        tune_strbuf_puts(&sb, text);
        tune_strbuf_puts(&sb, "\n");
        s = sb.oom ? tune_fail_run(err, path, "out of memory") : tune_write_file_atomic(path, sb.data, sb.len, err);
        tune_strbuf_free(&sb);
    }
    cJSON_free(text);
    return s;
}

/* ---- progress lines -------------------------------------------------------- */

static void format_duration(char *buf, size_t size, double s)
{
    if (!(s >= 0) || s > 359999) s = 0;
    const int t = (int)(s + 0.5);
    if (t >= 3600) snprintf(buf, size, "%d:%02d:%02d", t / 3600, t / 60 % 60, t % 60);
    else snprintf(buf, size, "%02d:%02d", t / 60, t % 60);
}

static void format_bar(const tune_train_event *ev, char *buf, size_t size)
{
    enum { WIDTH = 24 };
    const double frac = ev->total_steps > 0 ? (double)ev->step / (double)ev->total_steps : 1.0;
    const int filled = (int)(frac * WIDTH);
    char bar[WIDTH * 3 + 1];
    size_t n = 0;
    for (int i = 0; i < WIDTH; i++) {
        const char *c = i < filled ? "\xe2\x96\x88" : " "; /* U+2588 full block */
        const size_t len = strlen(c);
        memcpy(bar + n, c, len);
        n += len;
    }
    bar[n] = '\0';
    const long done = ev->step - ev->first_step;
    const double per_step = done > 0 ? ev->elapsed_s / (double)done : 0.0;
    char el[32], eta[32];
    format_duration(el, sizeof el, ev->elapsed_s);
    format_duration(eta, sizeof eta, per_step * (double)(ev->total_steps - ev->step));
    snprintf(buf, size, "%3d%%|%s| %ld/%ld [%s<%s, %.2f s/step] loss %.4f lr %.3g", (int)(frac * 100), bar,
             ev->step, ev->total_steps, el, done > 0 ? eta : "?", per_step, ev->loss, ev->lr);
}

void tune_train_format_event(const tune_train_event *ev, int tty, char *buf, size_t size)
{
    if (!size) return;
    buf[0] = '\0';
    switch (ev->kind) {
    case TUNE_EVENT_START:
        if (ev->step > 0) snprintf(buf, size, "resuming at step %ld of %ld", ev->step, ev->total_steps);
        else snprintf(buf, size, "training for %ld steps", ev->total_steps);
        break;
    case TUNE_EVENT_STEP:
        if (tty) format_bar(ev, buf, size);
        break;
    case TUNE_EVENT_LOG:
        snprintf(buf, size, "step %ld/%ld epoch %.2f loss %.4f lr %.4g grad_norm %.4f tokens/s %.0f", ev->step,
                 ev->total_steps, ev->epoch, ev->loss, ev->lr, ev->grad_norm, ev->tokens_per_s);
        break;
    case TUNE_EVENT_EVAL:
        snprintf(buf, size, "step %ld/%ld eval_loss %.4f", ev->step, ev->total_steps, ev->eval_loss);
        break;
    case TUNE_EVENT_SAVE:
        snprintf(buf, size, "step %ld/%ld saved %s", ev->step, ev->total_steps, ev->path);
        break;
    case TUNE_EVENT_SKIP:
        snprintf(buf, size, "step %ld/%ld skipped, no update (on_nan_inf: skip): %s", ev->step, ev->total_steps,
                 ev->what);
        break;
    case TUNE_EVENT_END:
        snprintf(buf, size, "done: %ld steps%s, last loss %.4f, adapter in %s, peak memory %.2f GiB", ev->step,
                 ev->stopped_by_watchdog ? " (stopped by the loss watchdog: the loss stayed above "
                                           "loss_watchdog_threshold for loss_watchdog_patience steps)"
                 : ev->stopped_early    ? " (stopped early: the eval loss stopped improving)"
                                        : "",
                 ev->loss, ev->path, (double)tune_peak_rss_bytes() / (1 << 30));
        break;
    }
}
