#!/usr/bin/env bash
# tune bench-serve against tune serve on the tiny model: every request answered, the
# summary's counts and percentiles consistent with the per-request CSV, answers scored
# against the references (chrF, BLEU, Excel accuracy), the cost per 1,000 tokens, an SVG;
# failed requests are counted and make the exit status 1; bad arguments exit 2.
set -uo pipefail
: "${TUNE:=build/tune}"
source tests/e2e/lib.bash
source "$SRC/tests/e2e/serve_lib.bash"
trap 'serve_cleanup; rm -rf "$work"' EXIT
M=$SRC/tests/data/tiny/gqa
A=$SRC/tests/data/tiny/peft_adapter

serve_start bench "$M" --adapter ex="$A" --slots 2
python3 - <<'PY'
import json
with open("prompts.jsonl", "w") as f:
    for i in range(10):
        f.write(json.dumps({"instruction": f"=SUM(A1:A{i + 2}) 합계는?", "input": "",
                            "output": f"=SUM(A1:A{i + 2})로 구합니다."}) + "\n")
PY
expect 0 "$TUNE" bench-serve "$URL/v1" --prompts prompts.jsonl --model ex --concurrency 3 --max_tokens 8 \
    --cost-per-hour 1.5 --compare-price 0.002 --out run
has out "requests        10 ok, 0 errors, 3 at once"
has out "latency         p50"
has out "per 1,000 output tokens at \$1.50 an hour; hosted \$0.002000"
has out "scores          chrF"
python3 - <<'PY' || fails=$((fails + 1))
import csv, json
s = json.load(open("run.json"))
rows = list(csv.DictReader(open("run.csv", newline="")))
assert s["model"] == "ex" and s["requests"] == s["ok"] == 10 and s["errors"] == 0, s
assert len(rows) == 10 and all(r["ok"] == "1" and r["http_status"] == "200" for r in rows)
assert all(int(r["completion_tokens"]) == 8 for r in rows), [r["completion_tokens"] for r in rows]
assert s["output_tokens"] == 80
lat = sorted(float(r["latency_s"]) for r in rows)
assert lat[0] <= s["latency_s"]["p50"] <= s["latency_s"]["p95"] <= s["latency_s"]["p99"] <= lat[-1], s
assert all(0 < float(r["ttft_s"]) <= float(r["latency_s"]) for r in rows)
assert abs(s["cost_per_1k_tokens_usd"] - 1.5 / 3600 * s["wall_s"] / 0.08) < 1e-6, s
assert s["scored"] == 10 and "chrf" in s and "bleu" in s and "excel_formulas_matched" in s, s
assert all(r["reference"].startswith("=SUM(") and r["chrf"] and r["bleu"] for r in rows)
assert open("run.svg").read().startswith("<svg")
PY
# Without --model, the first listed (the base); an unknown model: every request fails, exit 1.
expect 0 "$TUNE" bench-serve "$URL" --prompts prompts.jsonl --limit 2 --max_tokens 4 --out base
python3 -c 'import json; s = json.load(open("base.json")); assert s["model"] == "gqa" and s["ok"] == 2, s' ||
    fails=$((fails + 1))
expect 1 "$TUNE" bench-serve "$URL" --prompts prompts.jsonl --model nope --limit 3 --out bad
has err "HTTP 404"
python3 -c 'import json; s = json.load(open("bad.json")); assert s["errors"] == 3 and s["latency_s"] is None, s' ||
    fails=$((fails + 1))
serve_stop
# Nobody listening: the run cannot start.
expect 1 "$TUNE" bench-serve "$URL" --prompts prompts.jsonl --out gone
expect 2 "$TUNE" bench-serve "$URL" --prompts prompts.jsonl --concurrency 0
expect 2 "$TUNE" bench-serve --prompts prompts.jsonl
expect 2 "$TUNE" bench-serve "$URL"
finish serve_bench
