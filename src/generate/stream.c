/* Streaming of generated text: a byte-level tokenizer may end a token in the
 * middle of a UTF-8 character, and a stop string may arrive split over
 * several tokens, so text is handed out only once it can no longer change
 * meaning. */
#include "tune/generate.h"

#include <string.h>

void tune_text_stream_init(tune_text_stream *ts, const char *const *stops, int n_stops)
{
    memset(ts, 0, sizeof *ts);
    ts->stops = stops;
    ts->n_stops = n_stops;
}

/* Length of the UTF-8 character at s (n ≥ 1 bytes available): its byte count
 * when valid and complete, 0 when invalid, -1 when it is a valid beginning
 * cut short by the end of the buffer. Rejects overlong forms, surrogates and
 * values past U+10FFFF, as a strict decoder does. */
static int utf8_char(const unsigned char *s, size_t n)
{
    const unsigned c = s[0];
    int len;
    unsigned lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else
        return 0;
    for (int i = 1; i < len; i++) {
        if ((size_t)i >= n) return -1;
        const unsigned b = s[i];
        if (i == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF)) return 0;
    }
    return len;
}

/* Appends s[0, n) to out with invalid bytes as U+FFFD. Without flush, an
 * incomplete character at the end is left for later. Returns bytes consumed. */
static size_t append_utf8(const char *s, size_t n, int flush, tune_strbuf *out)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, run = 0; /* run: start of the valid bytes not yet appended */
    while (i < n) {
        const int len = utf8_char(u + i, n - i);
        if (len > 0) {
            i += (size_t)len;
            continue;
        }
        if (len < 0 && !flush) break;
        tune_strbuf_append(out, s + run, i - run);
        tune_strbuf_puts(out, "\xEF\xBF\xBD");
        run = ++i;
    }
    tune_strbuf_append(out, s + run, i - run);
    return i;
}

void tune_text_stream_push(tune_text_stream *ts, const char *text, size_t len, int final, tune_strbuf *out)
{
    /* A lossy decoder shows a character still incomplete as U+FFFD at the end: it may change. */
    while (!final && len >= 3 && !memcmp(text + len - 3, "\xEF\xBF\xBD", 3)) len -= 3;
    if (ts->stopped || len <= ts->done) return;
    /* No match can begin before done: a possible beginning was never handed out. */
    size_t limit = len;
    for (int i = 0; i < ts->n_stops; i++) {
        if (!ts->stops[i][0]) continue;
        const char *hit = memmem(text + ts->done, len - ts->done, ts->stops[i], strlen(ts->stops[i]));
        if (hit && (size_t)(hit - text) < limit) {
            limit = (size_t)(hit - text);
            ts->stopped = 1;
        }
    }
    if (ts->stopped) {
        ts->stop_at = limit;
        final = 1;
    } else if (!final) {
        /* hold back the longest end of the text that begins a stop string */
        size_t hold = 0;
        for (int i = 0; i < ts->n_stops; i++) {
            const size_t m = strlen(ts->stops[i]);
            if (m == 0) continue;
            for (size_t k = m - 1 < len - ts->done ? m - 1 : len - ts->done; k > hold; k--)
                if (!memcmp(text + len - k, ts->stops[i], k)) {
                    hold = k;
                    break;
                }
        }
        limit = len - hold;
    }
    ts->done += append_utf8(text + ts->done, limit - ts->done, final, out);
}
