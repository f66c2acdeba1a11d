#!/usr/bin/env bash
# tune serve on the default model (SmolLM2-135M-Instruct Q4_1; `make model`) with its
# test adapter: greedy chat answers equal tune generate's for the base and the adapter,
# streamed or not, while both slots are busy; SIGTERM in the middle of a request lets
# it finish whole and exits 0. Skipped when the model is absent.
set -uo pipefail
: "${TUNE:=build/tune}"
M=models/SmolLM2-135M-Instruct.Q4_1.gguf
if [ ! -f "$M" ]; then
    echo "serve_smollm2: skipped ($M is absent; 'make model' fetches it)"
    exit 0
fi
source tests/e2e/lib.bash
source "$SRC/tests/e2e/serve_lib.bash"
trap 'serve_cleanup; rm -rf "$work"' EXIT
M=$SRC/$M
A=$SRC/tests/data/smollm2/adapter
q="엑셀에서 VLOOKUP은 무엇을 하나요?"
"$TUNE" generate "$M" --prompt "$q" --max_new_tokens 24 >want_base 2>/dev/null
"$TUNE" generate "$M" --adapter "$A" --prompt "$q" --max_new_tokens 24 >want_excel 2>/dev/null

serve_start smollm2 "$M" --adapter excel="$A" --slots 2 --shutdown-wait 600
# chat MODEL STREAM OUT: the answer's text in OUT.
chat() {
    local stream=False
    [ "$2" = 1 ] && stream=True
    curl -sN "$URL/v1/chat/completions" -d "$(python3 -c 'import json,sys; print(json.dumps({"model": sys.argv[1],
        "messages": [{"role": "user", "content": sys.argv[2]}], "max_tokens": 24, "temperature": 0,
        "stream": sys.argv[3] == "True"}))' "$1" "$q" $stream)" >"$3.raw"
    python3 - "$3.raw" "$3" <<'PY'
import json, sys
raw = open(sys.argv[1]).read()
if raw.startswith("data: "):
    events = [e[6:] for e in raw.split("\n\n") if e.startswith("data: ")]
    assert events[-1] == "[DONE]"
    text = "".join(json.loads(e)["choices"][0]["delta"].get("content", "") for e in events[:-1])
else:
    text = json.loads(raw)["choices"][0]["message"]["content"]
open(sys.argv[2], "w").write(text)
PY
}
pids=()
for i in 1 2 3 4; do
    m=base; [ $((i % 2)) = 0 ] && m=excel
    name=$m; [ $m = base ] && name=SmolLM2-135M-Instruct.Q4_1.gguf
    chat $name $((i / 3)) got$i &
    pids+=($!)
done
wait "${pids[@]}"
for i in 1 2 3 4; do
    want=want_base; [ $((i % 2)) = 0 ] && want=want_excel
    cmp -s got$i $want || { echo "FAIL: answer $i differs from tune generate's"; cat got$i; echo; cat $want; echo; fails=$((fails + 1)); }
done

# SIGTERM while a long answer is being generated: it is finished and sent, then exit 0.
curl -s "$URL/v1/chat/completions" -d '{"model": "excel", "messages": [{"role": "user", "content": "Explain SUMIFS."}],
    "max_tokens": 96, "temperature": 0}' >late &
client=$!
# SIGTERM once the server runs it (not on a clock: a slow build may not have accepted it yet).
for _ in $(seq 1 6000); do
    curl -s "$URL/metrics" | grep -q '^tune_requests_running [1-9]' && break
    sleep 0.1
done
serve_stop
wait $client
python3 -c 'import json; j = json.load(open("late")); assert j["usage"]["completion_tokens"] > 0, j' ||
    { echo "FAIL: the request in flight at SIGTERM was not answered"; head -c 300 late; fails=$((fails + 1)); }
[ "$SERVE_RC" = 0 ] || { echo "FAIL: tune serve exited $SERVE_RC after SIGTERM"; fails=$((fails + 1)); }
finish serve_smollm2
