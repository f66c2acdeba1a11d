/* Latency figures: Prometheus histograms for /metrics, percentiles and an
 * SVG histogram for tune bench-serve. */
#include "tune/serve.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* From a fast token (tens of ms) to a long answer on a CPU (minutes). */
const double TUNE_HIST_BOUNDS[TUNE_HIST_BUCKETS] = {0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, INFINITY};

void tune_histogram_add(tune_histogram *h, double v)
{
    int b = 0;
    while (b < TUNE_HIST_BUCKETS - 1 && v > TUNE_HIST_BOUNDS[b]) b++;
    h->count[b]++;
    h->total++;
    h->sum += v;
}

void tune_histogram_render(const tune_histogram *h, const char *name, const char *help, tune_strbuf *out)
{
    tune_strbuf_printf(out, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    long cumulative = 0;
    for (int b = 0; b < TUNE_HIST_BUCKETS; b++) {
        cumulative += h->count[b];
        if (isinf(TUNE_HIST_BOUNDS[b])) tune_strbuf_printf(out, "%s_bucket{le=\"+Inf\"} %ld\n", name, cumulative);
        else tune_strbuf_printf(out, "%s_bucket{le=\"%g\"} %ld\n", name, TUNE_HIST_BOUNDS[b], cumulative);
    }
    tune_strbuf_printf(out, "%s_sum %.6f\n%s_count %ld\n", name, h->sum, name, h->total);
}

double tune_percentile(const double *sorted, size_t n, double p)
{
    const double rank = p / 100.0 * (double)(n - 1);
    const size_t lo = (size_t)floor(rank), hi = lo + 1 < n ? lo + 1 : lo;
    return sorted[lo] + (rank - (double)lo) * (sorted[hi] - sorted[lo]);
}

void tune_svg_histogram(const double *values, size_t n, int bins, const char *title, const char *xlabel,
                        tune_strbuf *out)
{
    double lo = values[0], hi = values[0];
    for (size_t i = 1; i < n; i++) {
        if (values[i] < lo) lo = values[i];
        if (values[i] > hi) hi = values[i];
    }
    if (hi <= lo) hi = lo + 1e-3; /* all equal: one narrow bin holds them */
    long *count = calloc((size_t)bins, sizeof *count);
    if (!count) {
        out->oom = 1;
        return;
    }
    long most = 1;
    for (size_t i = 0; i < n; i++) {
        int b = (int)((values[i] - lo) / (hi - lo) * bins);
        if (b >= bins) b = bins - 1;
        if (++count[b] > most) most = count[b];
    }
    const int W = 640, H = 360, left = 56, right = 16, top = 40, bottom = 56;
    const double pw = W - left - right, ph = H - top - bottom, bw = pw / bins;
    tune_strbuf_printf(out,
                       "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
                       "font-family=\"sans-serif\" font-size=\"12\">\n"
                       "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n"
                       "<text x=\"%d\" y=\"24\" font-size=\"15\">%s</text>\n",
                       W, H, W, H, left, title);
    for (int b = 0; b < bins; b++) {
        const double h = ph * (double)count[b] / (double)most;
        tune_strbuf_printf(out, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"#4a7bd0\">"
                                "<title>%.3f-%.3f: %ld</title></rect>\n",
                           left + b * bw + 1, top + ph - h, bw - 2, h, lo + (hi - lo) * b / bins,
                           lo + (hi - lo) * (b + 1) / bins, count[b]);
    }
    tune_strbuf_printf(out,
                       "<line x1=\"%d\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"black\"/>\n"
                       "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%.0f\" stroke=\"black\"/>\n",
                       left, top + ph, left + pw, top + ph, left, top, left, top + ph);
    for (int t = 0; t <= 4; t++) {
        const double x = left + pw * t / 4, y = top + ph - ph * t / 4;
        tune_strbuf_printf(out, "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"middle\">%.3g</text>\n", x, top + ph + 16,
                           lo + (hi - lo) * t / 4);
        tune_strbuf_printf(out, "<text x=\"%d\" y=\"%.0f\" text-anchor=\"end\">%.3g</text>\n", left - 6, y + 4,
                           (double)most * t / 4);
    }
    tune_strbuf_printf(out,
                       "<text x=\"%.0f\" y=\"%d\" text-anchor=\"middle\">%s</text>\n"
                       "<text x=\"14\" y=\"%.0f\" transform=\"rotate(-90 14 %.0f)\" text-anchor=\"middle\">"
                       "requests</text>\n</svg>\n",
                       left + pw / 2, H - 12, xlabel, top + ph / 2, top + ph / 2);
    free(count);
}
