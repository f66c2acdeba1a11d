#!/usr/bin/env bash
# Decoding speed, tune against llama.cpp, on this machine, side by side.
#
# Usage: tools/bench/decode.sh TUNE                 (from the repository root)
#   e.g. LLAMACPP_BIN=$HOME/.cache/tune-llamacpp/bin tools/bench/decode.sh build/tune
#
# For each model (default models/SmolLM2-135M-Instruct.{Q4_1,Q4_K_M,Q8_0}.gguf;
# `make model` and tools/quantize-models.sh make them):
#   llama.cpp  llama-bench -m MODEL -p 0 -n 128 -t THREADS -r REPS -o json:
#              tg128, 128 tokens decoded one at a time after an empty prompt,
#              EOS ignored; the figure is the median of llama-bench's
#              REPS samples (its mean is in the JSON too).
#   tune       TUNE generate MODEL --raw --prompt PROMPT --max_new_tokens 128
#              (greedy) with OMP_NUM_THREADS=THREADS, TUNE_REPS times after one
#              warm-up run; the figure is the median of the "N new tokens in
#              S s (X tokens/s)" lines tune prints on stderr. tune has no flag to
#              ignore EOS: the default prompt (a numbered list) makes SmolLM2
#              write all 128 tokens; the JSON records the count of each run.
#              Its time (tune_lm_generate's clock) also covers the prompt's
#              forward (22 tokens with the default prompt), which tg128 does
#              not have: tune's figure is slightly pessimistic.
# A model tune cannot load (e.g. a quantisation type it does not read yet) is
# reported with its error, and the other figures are still taken.
#
# Prints a table (model, llama.cpp tg128 tok/s, tune tok/s, tune/llama.cpp) and
# writes bench/results/decode-<UTC date>-<commit>.json: machine (CPU model
# from /proc/cpuinfo, nproc), commit (with "-dirty" when the tree has local
# changes to src, include or Makefile), the tune binary's SHA-256 and time
# (it may be older than the commit), the load average after the run, date,
# settings and every figure.
#
# Environment: LLAMACPP_BIN (folder with llama-bench; default
# $HOME/.cache/tune-llamacpp/bin, built by tools/bench/llamacpp.sh), THREADS
# (default nproc), REPS (llama-bench repetitions, default 5), TUNE_REPS
# (default 3), N_GEN (default 128), MODELS (space-separated paths), PROMPT,
# OUT_DIR (default bench/results), PYTHON (python3; standard library only),
# LLAMA_BENCH_ARGS (extra llama-bench options, e.g. "--poll 0").
# Timings vary with the machine's other load: run it on an idle machine, and
# compare figures only within one run. llama.cpp's threads spin at their
# barriers, so with THREADS = every core and another busy process its tg128
# collapses (seen: samples from 1 to 119 tokens/s on 2 shared cores, while
# THREADS=1 gave a steady 50-63); the samples and the load average are in the
# JSON to tell such a run apart.
set -euo pipefail

TUNE="${1:?usage: tools/bench/decode.sh TUNE_BINARY}"
BIN="${LLAMACPP_BIN:-$HOME/.cache/tune-llamacpp/bin}"
THREADS="${THREADS:-$(nproc)}"
REPS="${REPS:-5}"
TUNE_REPS="${TUNE_REPS:-3}"
N_GEN="${N_GEN:-128}"
OUT_DIR="${OUT_DIR:-bench/results}"
PYTHON="${PYTHON:-python3}"
LLAMA_BENCH_ARGS="${LLAMA_BENCH_ARGS:-}"
MODELS="${MODELS:-models/SmolLM2-135M-Instruct.Q4_1.gguf models/SmolLM2-135M-Instruct.Q4_K_M.gguf models/SmolLM2-135M-Instruct.Q8_0.gguf}"
PROMPT="${PROMPT:-Here is a list of the 50 largest cities in the world, with their population:
1.}"

[ -x "$TUNE" ] || { echo "decode.sh: $TUNE is not an executable (make builds build/tune)" >&2; exit 2; }
[ -x "$BIN/llama-bench" ] || {
    echo "decode.sh: no llama-bench in $BIN (tools/bench/llamacpp.sh builds it; or set LLAMACPP_BIN)" >&2
    exit 2
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

commit=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
if [ "$commit" != unknown ] && ! git diff --quiet HEAD -- src include Makefile 2>/dev/null; then
    commit="$commit-dirty"
fi
date_utc=$(date -u +%Y-%m-%dT%H:%M:%SZ)
cpu=$(grep -m1 '^model name' /proc/cpuinfo 2>/dev/null | sed 's/^model name[[:space:]]*:[[:space:]]*//' || echo unknown)
ncpu=$(nproc)

i=0
for m in $MODELS; do
    i=$((i + 1))
    name=$(basename "$m" .gguf)
    echo "[$name]" >&2
    if [ ! -f "$m" ]; then
        echo "missing" >"$work/$i.missing"
        echo "  missing: $m (make model; tools/quantize-models.sh)" >&2
        continue
    fi
    echo "  llama-bench tg$N_GEN, $THREADS threads, $REPS repetitions ..." >&2
    # shellcheck disable=SC2086
    if ! "$BIN/llama-bench" -m "$m" -p 0 -n "$N_GEN" -t "$THREADS" -r "$REPS" -o json $LLAMA_BENCH_ARGS \
        >"$work/$i.llama.json" 2>"$work/$i.llama.err"; then
        tail -n 5 "$work/$i.llama.err" >&2
    fi
    echo "  tune generate, $N_GEN new tokens, OMP_NUM_THREADS=$THREADS, 1 warm-up + $TUNE_REPS runs ..." >&2
    : >"$work/$i.tune.txt"
    for r in $(seq 0 "$TUNE_REPS"); do
        if OMP_NUM_THREADS="$THREADS" "$TUNE" generate "$m" --raw --prompt "$PROMPT" \
            --max_new_tokens "$N_GEN" >/dev/null 2>"$work/$i.tune.err"; then
            line=$(grep 'tune generate: .* new tokens in' "$work/$i.tune.err" | tail -n1)
            [ "$r" -gt 0 ] && echo "$line" >>"$work/$i.tune.txt"
            [ "$r" -gt 0 ] && echo "    $line" >&2
        else
            tail -n 3 "$work/$i.tune.err" | tr '\n' ' ' >"$work/$i.tune.error"
            echo "    tune failed: $(cat "$work/$i.tune.error")" >&2
            break
        fi
    done
done

mkdir -p "$OUT_DIR"
out="$OUT_DIR/decode-$(date -u +%Y%m%d)-$commit.json"
n=1
while [ -e "$out" ]; do
    n=$((n + 1))
    out="$OUT_DIR/decode-$(date -u +%Y%m%d)-$commit-$n.json"
done

WORK="$work" LLAMA_BENCH_ARGS="$LLAMA_BENCH_ARGS" MODELS="$MODELS" OUT="$out" COMMIT="$commit" DATE="$date_utc" CPU="$cpu" NCPU="$ncpu" \
    THREADS="$THREADS" REPS="$REPS" TUNE_REPS="$TUNE_REPS" N_GEN="$N_GEN" PROMPT="$PROMPT" TUNE="$TUNE" \
    "$PYTHON" - <<'PY'
import json, os, re, statistics

env = os.environ
work = env["WORK"]
rows = []
for i, m in enumerate(env["MODELS"].split(), 1):
    row = {"model": os.path.basename(m), "path": m}
    p = lambda suffix: os.path.join(work, f"{i}.{suffix}")
    if os.path.exists(p("missing")):
        row["error"] = "model file missing"
        rows.append(row)
        continue
    try:
        bench = json.load(open(p("llama.json")))[0]
        row["llamacpp"] = {"tokens_per_s": statistics.median(bench["samples_ts"]), "mean": bench["avg_ts"],
                           "stddev": bench["stddev_ts"], "samples": bench["samples_ts"], "model_type": bench["model_type"],
                           "model_size": bench["model_size"], "n_threads": bench["n_threads"],
                           "n_gen": bench["n_gen"], "build": f'{bench["build_number"]} {bench["build_commit"]}'}
    except (OSError, ValueError, IndexError, KeyError):
        err = open(p("llama.err")).read()[-500:] if os.path.exists(p("llama.err")) else ""
        row["llamacpp"] = {"error": err.strip() or "no output"}
    runs = []
    for line in open(p("tune.txt")) if os.path.exists(p("tune.txt")) else []:
        mm = re.search(r"(\d+) prompt tokens, (\d+) new tokens in ([\d.]+) s \(([\d.]+) tokens/s\)(?:, stopped at (\S+))?", line)
        if mm:
            runs.append({"prompt_tokens": int(mm[1]), "new_tokens": int(mm[2]), "seconds": float(mm[3]),
                         "tokens_per_s": float(mm[4]), "stopped_at": mm[5]})
    if runs:
        row["tune"] = {"tokens_per_s": statistics.median(r["tokens_per_s"] for r in runs),
                       "mean": statistics.mean(r["tokens_per_s"] for r in runs), "runs": runs}
    elif os.path.exists(p("tune.error")):
        row["tune"] = {"error": open(p("tune.error")).read().strip()}
    else:
        row["tune"] = {"error": "no timing line"}
    a, b = row.get("llamacpp", {}).get("tokens_per_s"), row["tune"].get("tokens_per_s")
    row["ratio_tune_over_llamacpp"] = b / a if a and b else None
    rows.append(row)

import datetime, hashlib
tune_bin = {"sha256": hashlib.sha256(open(env["TUNE"], "rb").read()).hexdigest(),
            "modified": datetime.datetime.fromtimestamp(os.path.getmtime(env["TUNE"]), datetime.timezone.utc)
            .strftime("%Y-%m-%dT%H:%M:%SZ")}
load = os.getloadavg() if hasattr(os, "getloadavg") else None
doc = {"benchmark": "decode", "date": env["DATE"], "commit": env["COMMIT"],
       "machine": {"cpu": env["CPU"], "nproc": int(env["NCPU"]), "loadavg_after": load},
       "tune_binary": tune_bin,
       "settings": {"threads": int(env["THREADS"]), "n_gen": int(env["N_GEN"]), "llamacpp_repetitions": int(env["REPS"]),
                    "tune_runs": int(env["TUNE_REPS"]), "tune_prompt": env["PROMPT"], "tune": env["TUNE"],
                    "llamacpp": f"llama-bench -p 0 -n {env['N_GEN']} -t {env['THREADS']} -r {env['REPS']} "
                                + env.get("LLAMA_BENCH_ARGS", ""),
                    "tune_command": f"generate MODEL --raw --prompt PROMPT --max_new_tokens {env['N_GEN']}"},
       "results": rows}
with open(env["OUT"], "w") as f:
    json.dump(doc, f, indent=1, ensure_ascii=False)
    f.write("\n")

fmt = "{:<34} {:>16} {:>12} {:>8}"
print(f"decode speed, {env['THREADS']} threads, {env['CPU']} (nproc {env['NCPU']}), commit {env['COMMIT']}")
print(fmt.format("model", f"llama.cpp tg{env['N_GEN']}", "tune", "ratio"))
for r in rows:
    l = r.get("llamacpp", {}).get("tokens_per_s")
    t = r.get("tune", {}).get("tokens_per_s") if "tune" in r else None
    ls = f"{l:.1f} tok/s" if l else "error"
    ts = f"{t:.1f} tok/s" if t else "error"
    if t and r["tune"]["runs"] and any(x["new_tokens"] != int(env["N_GEN"]) for x in r["tune"]["runs"]):
        ts += "*"
    rs = f"{r['ratio_tune_over_llamacpp']:.2f}" if r.get("ratio_tune_over_llamacpp") else "-"
    print(fmt.format(r["model"], ls, ts, rs))
    for side in ("llamacpp", "tune"):
        if "error" in r.get(side, {}):
            print(f"    {side}: {r[side]['error'][:200]}")
    if "error" in r:
        print(f"    {r['error']}")
print("medians of the runs; ratio = tune / llama.cpp tokens/s (* = tune stopped before the full count)")
print("wrote", env["OUT"])
PY
