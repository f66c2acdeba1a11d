#!/usr/bin/env bash
# The chat page (GET /) in a headless browser: it lists the base and the
# adapter, asks the adapter, and shows the streamed answer, which equals
# `tune generate`'s greedy answer for the same prompt; a screenshot of it is
# kept in $TUNE_SCREENSHOT_DIR when that is set. Skips without
# chromium-headless-shell (or chromium).
set -uo pipefail
: "${TUNE:=build/tune}"
source tests/e2e/lib.bash
source "$SRC/tests/e2e/serve_lib.bash"
trap 'serve_cleanup; rm -rf "$work"' EXIT
M=$SRC/tests/data/tiny/gqa
A=$SRC/tests/data/tiny/peft_adapter

browser=$(command -v chromium-headless-shell || command -v chromium || true)
if [ -z "$browser" ]; then
    echo "serve_page: skipped (no chromium-headless-shell or chromium)"
    exit 0
fi
serve_start page "$M" --adapter ex="$A"
want=$("$TUNE" generate "$M" --adapter "$A" --prompt "Hi" --max_new_tokens 8 2>/dev/null)
# --virtual-time-budget lets the page's fetches and the stream finish before the DOM is taken.
shot() {
    "$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=900,600 \
        --virtual-time-budget=60000 "$@" "$URL/?model=ex&prompt=Hi&max_tokens=8" 2>/dev/null
}
# Virtual time stops for a pending fetch but not for a response body still
# streaming in: against a slow server (the sanitizer build) the budget can
# run out before the last token, about one try in three. Up to 10 tries;
# each takes a fraction of a second.
for try in $(seq 1 10); do
    shot --dump-dom > dom.html
    grep -q 'data-done="1"' dom.html && break
done
has dom.html '<option value="ex">ex (adapter)</option>'
has dom.html 'data-done="1"'
python3 - "$want" dom.html <<'PY' || { echo "FAIL: the page's answer is not tune generate's"; fails=$((fails + 1)); }
import html, re, sys
want, dom = sys.argv[1], open(sys.argv[2]).read()
answers = [html.unescape(m) for m in re.findall(r'id="answer-\d+"[^>]*><span class="who">[^<]*</span><span>(.*?)</span>',
                                                 dom, re.S)]
print("page answer:", repr(answers[-1] if answers else None), "generate:", repr(want))
sys.exit(0 if answers and answers[-1] == want else 1)
PY
shot --screenshot="$work/page.png" >/dev/null
[ -s "$work/page.png" ] || { echo "FAIL: no screenshot"; fails=$((fails + 1)); }
if [ -n "${TUNE_SCREENSHOT_DIR:-}" ]; then cp "$work/page.png" "$TUNE_SCREENSHOT_DIR/serve_page.png"; fi
serve_stop
[ "$SERVE_RC" = 0 ] || { echo "FAIL: tune serve exited $SERVE_RC on SIGTERM"; fails=$((fails + 1)); }
finish serve_page
