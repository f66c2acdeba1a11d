#!/usr/bin/env bash
# tune on one NVIDIA GPU, in one run: build, per-operation test, CPU-vs-GPU
# parity, determinism, resume, and speed against Transformers + PEFT.
# Run from the repository root: bash tools/gpu/check.sh   (README.md beside it)
#
# Everything measured goes under $OUT (default ./gpu-out), at most 8 files:
#   summary.txt  the table printed last     build.log  phases 0-1
#   ops.log      phase 2 (test_backend)     parity.log phase 4
#   bench.log    phase 5                    bench.json phase 5 figures
#   info.txt     versions, GPU, `tune --version`, `tune plan`
# Models and run folders go to $SCRATCH (default /tmp/tune-gpu).
# Every phase runs under `timeout`, the whole under BUDGET_S seconds (470); a
# failing phase is reported and the next one runs; exit status 1 if any failed.
# Without nvidia-smi the GPU phases are skipped (build and CPU runs still run).
#
# Knobs (environment): OUT SCRATCH BUDGET_S PYTHON CUDA_BUILD(auto|0|1) JOBS
#   CPU_THREADS PARITY_STEPS BENCH_STEPS BENCH_MODELS("smollm2 llama1b")
#   BENCH_RESERVE_S (200: kept for phase 5 while phases 3-4 run)
#   LLAMA1B_B LLAMA1B_T SMOLLM2_B SMOLLM2_T TOL
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 2
ROOT=$(pwd)
T0=$SECONDS
BUDGET_S=${BUDGET_S:-470}
OUT=${OUT:-./gpu-out}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
SCRATCH=${SCRATCH:-/tmp/tune-gpu}
mkdir -p "$SCRATCH" && SCRATCH=$(cd "$SCRATCH" && pwd)
rm -f "$OUT"/{summary.txt,build.log,ops.log,parity.log,bench.log,bench.json,info.txt}
BUILD=build/gpu
TUNE=$BUILD/tune
JOBS=${JOBS:-$(nproc)}
CPU_THREADS=${CPU_THREADS:-$(nproc)}
PARITY_STEPS=${PARITY_STEPS:-20}
HALF=$(( PARITY_STEPS / 2 )); [ "$HALF" -lt 1 ] && HALF=1   # checkpoint and resume step
BENCH_STEPS=${BENCH_STEPS:-30}
BENCH_MODELS=${BENCH_MODELS-smollm2 llama1b}   # empty: no benchmark
LLAMA1B_B=${LLAMA1B_B:-4}
LLAMA1B_T=${LLAMA1B_T:-2048}
SMOLLM2_B=${SMOLLM2_B:-8}
SMOLLM2_T=${SMOLLM2_T:-2048}
TOL=${TOL:-1e-4}
PYTHON=${PYTHON:-python3}
ORIG_LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}
INFO=$OUT/info.txt
PARITY=$OUT/parity.log
BENCH=$OUT/bench.log
LOGS=$SCRATCH/logs
mkdir -p "$LOGS"
[ -d /usr/local/cuda/bin ] && PATH=$PATH:/usr/local/cuda/bin

# ---- bookkeeping -------------------------------------------------------------
FAILED=0
ROWS=()      # "phase|status|seconds|note"
EXTRA=()     # lines for the summary's second part
record() {   # PHASE STATUS START_SECONDS NOTE
    ROWS+=("$1|$2|$(( SECONDS - $3 ))|$4")
    [ "$2" = FAIL ] && FAILED=1
    printf '[%4ds] %-14s %-5s %s\n' $(( SECONDS - T0 )) "$1" "$2" "$4"
}
RESERVE=0   # seconds kept for later phases (phase 5) while phases 3-4 run
left() { echo $(( BUDGET_S - (SECONDS - T0) )); }
# A phase's timeout: what it asks for, cut to the time left (minus a reserve
# for the summary), at least 5 s.
tmo() {
    local want=$1 l
    l=$(( $(left) - 10 - RESERVE ))
    [ "$l" -lt "$want" ] && want=$l
    [ "$want" -lt 5 ] && want=5
    echo "$want"
}
# Python without the unpacked libraries on its library path (torch and numpy
# bring their own).
py() { LD_LIBRARY_PATH=$ORIG_LD_LIBRARY_PATH "$PYTHON" "$@"; }
HAVE_GPU=0
if command -v nvidia-smi > /dev/null && nvidia-smi -L > /dev/null 2>&1; then HAVE_GPU=1; fi
HAVE_TORCH=0
py -c 'import torch, safetensors' > /dev/null 2>&1 && HAVE_TORCH=1

{
    echo "== date: $(date -u +%FT%TZ)   git: $(git describe --always --dirty 2>/dev/null || echo unknown)"
    echo "== nproc: $(nproc)   budget: ${BUDGET_S}s"
    if [ "$HAVE_GPU" = 1 ]; then
        nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv 2>&1
    else
        echo "== no GPU (nvidia-smi missing or failing): GPU phases are skipped"
    fi
    command -v nvcc > /dev/null && nvcc --version | tail -2
    py -c 'import sys; print("python", sys.version.split()[0])
for m in ("torch", "transformers", "peft", "safetensors", "numpy"):
    try:
        print(m, __import__(m).__version__)
    except Exception as e:
        print(m, "missing:", e)' 2>&1
} > "$INFO"
cat "$INFO"

# ---- phase 0: dependencies ----------------------------------------------------
t=$SECONDS
{
    if ls gpu-debs/*.deb > /dev/null 2>&1; then
        # shellcheck source=tools/gpu/deps-env.sh
        source tools/gpu/deps-env.sh
        if tune_deps_setup gpu-debs "$SCRATCH/deps"; then
            echo "deps: $(ls gpu-debs/*.deb | wc -l) packages unpacked into $SCRATCH/deps"
            echo "PKG_CONFIG_LIBDIR=$PKG_CONFIG_LIBDIR"
            echo "CPATH=$CPATH"
            echo "LIBRARY_PATH=$LIBRARY_PATH"
            echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
            echo "pkg-config: $(command -v pkg-config)"
            deps_ok=1
        else
            deps_ok=0
        fi
    elif pkg-config --exists yaml-0.1 libcjson openblas libpcre2-8 libutf8proc check 2> /dev/null; then
        echo "deps: no gpu-debs/, the machine's own packages are complete"
        deps_ok=1
    else
        echo "deps: no gpu-debs/ (run tools/gpu/fetch-debs.sh where apt-get works) and pkg-config lacks packages"
        deps_ok=0
    fi
} > "$OUT/build.log" 2>&1 < /dev/null
# ({ } > file runs in this shell, so the exports stay.)
if [ "${deps_ok:-0}" = 1 ]; then record deps PASS "$t" "$(ls gpu-debs/*.deb 2>/dev/null | wc -l) debs"
else record deps FAIL "$t" "see build.log"; fi

# ---- phase 1: build ------------------------------------------------------------
t=$SECONDS
CUDA_BUILD=${CUDA_BUILD:-auto}
if [ "$CUDA_BUILD" = auto ]; then
    if command -v nvcc > /dev/null; then CUDA_BUILD=1; else CUDA_BUILD=0; fi
fi
MAKEVARS=("BUILD=$BUILD")
[ "$CUDA_BUILD" = 1 ] && MAKEVARS+=(CUDA=1)
echo "== make -j$JOBS ${MAKEVARS[*]} all" >> "$OUT/build.log"
if timeout "$(tmo 240)" make -j"$JOBS" "${MAKEVARS[@]}" all >> "$OUT/build.log" 2>&1 < /dev/null &&
   [ -x "$TUNE" ]; then
    record build PASS "$t" "CUDA=$CUDA_BUILD"
else
    record build FAIL "$t" "CUDA=$CUDA_BUILD; tail of build.log below"
    echo "---- build.log (tail)"; tail -30 "$OUT/build.log"
    { for r in "${ROWS[@]}"; do IFS='|' read -r p s d n <<< "$r"; printf '%-14s %-5s %5ss  %s\n' "$p" "$s" "$d" "$n"; done; } > "$OUT/summary.txt"
    cat "$OUT/summary.txt"
    exit 1
fi
{
    echo "== $TUNE --version"; "$TUNE" --version 2>&1
    echo "== ldd $TUNE"; ldd "$TUNE" 2>&1
} >> "$INFO"

# ---- phase 2: per-operation test ---------------------------------------------
t=$SECONDS
TB=$BUILD/tests/test_backend
echo "== make ${MAKEVARS[*]} $TB" > "$OUT/ops.log"
timeout "$(tmo 90)" make -j"$JOBS" "${MAKEVARS[@]}" "$TB" >> "$OUT/ops.log" 2>&1 < /dev/null
tbrc=$?
[ -x "$TB" ] || tbrc=1
if [ "$tbrc" != 0 ]; then
    record ops FAIL "$t" "test_backend did not build (see ops.log)"
elif [ "$HAVE_GPU" = 0 ]; then
    record ops SKIP "$t" "no GPU"
else
    echo "== CK_DEFAULT_TIMEOUT=900 TUNE_TEST_DATA=tests/data $TB" >> "$OUT/ops.log"
    CK_DEFAULT_TIMEOUT=900 TUNE_TEST_DATA=tests/data timeout "$(tmo 90)" "$TB" >> "$OUT/ops.log" 2>&1 < /dev/null
    rc=$?
    line=$(grep -E '^[0-9]+%: Checks:' "$OUT/ops.log" | tail -1)
    if [ $rc = 0 ]; then record ops PASS "$t" "${line:-rc 0}"
    else record ops FAIL "$t" "rc $rc ${line}"; fi
    # Per-case figures: "CASE rel err X" and "CASE bit-exact|DIFFERENT" lines.
    n_exact=$(grep -c 'bit-exact$' "$OUT/ops.log")
    n_diff=$(grep -c 'DIFFERENT$' "$OUT/ops.log")
    n_rel=$(grep -c ' rel err ' "$OUT/ops.log")
    n_skip=$(grep -c '^SKIPPED' "$OUT/ops.log")
    EXTRA+=("-- ops: $n_rel cases with a relative error, $n_exact bit-exact, $n_diff DIFFERENT, $n_skip skipped; largest errors:")
    mapfile -t figs < <(grep ' rel err ' "$OUT/ops.log" | awk '{print $NF "\t" $0}' | sort -g -r | cut -f2- | head -12)
    [ ${#figs[@]} -gt 0 ] && EXTRA+=("${figs[@]}")
    mapfile -t figs < <(grep 'DIFFERENT$' "$OUT/ops.log" | head -10)
    [ ${#figs[@]} -gt 0 ] && EXTRA+=("${figs[@]}")
fi

# ---- phase 3: models with random weights --------------------------------------
t=$SECONDS
# Keep time for phase 5 (the benchmark) while making models and checking parity.
[ "$HAVE_GPU" = 1 ] && [ -n "${BENCH_MODELS// }" ] && RESERVE=${BENCH_RESERVE_S:-200}
MODELS=$SCRATCH/models
want_models=()
if [ "$HAVE_TORCH" = 1 ]; then
    want_models=(smollm2)
    [ "$HAVE_GPU" = 1 ] && case " $BENCH_MODELS " in *" llama1b "*) want_models+=(llama1b) ;; esac
    todo=()
    for m in "${want_models[@]}"; do
        # Reuse a folder from an earlier run of this script (same generator).
        [ -f "$MODELS/$m/model.safetensors" ] && [ "$MODELS/$m/model.safetensors" -nt tools/gpu/make_models.py ] || todo+=("$m")
    done
    if [ ${#todo[@]} = 0 ] ||
       timeout "$(tmo 150)" env LD_LIBRARY_PATH="$ORIG_LD_LIBRARY_PATH" "$PYTHON" tools/gpu/make_models.py "$MODELS" "${todo[@]}" > "$LOGS/models.log" 2>&1 < /dev/null; then
        record models PASS "$t" "${want_models[*]}${todo[*]:+ (made: ${todo[*]})}"
    else
        rm -rf "${todo[@]/#/$MODELS/}"
        record models FAIL "$t" "$(tail -1 "$LOGS/models.log")"
    fi
else
    record models SKIP "$t" "no torch/safetensors in $PYTHON: random-weight models not made"
fi
have_model() { [ -f "$MODELS/$1/model.safetensors" ] && [ -f "$MODELS/$1/config.json" ]; }
model_path() { case $1 in gqa|tied|llama3rope) echo "$ROOT/tests/data/tiny/$1" ;; *) echo "$MODELS/$1" ;; esac; }

# ---- config writer ------------------------------------------------------------
# write_cfg FILE MODEL_DIR BACKEND OUTPUT_DIR SEQ [extra yaml lines...]
write_cfg() {
    local file=$1 model=$2 backend=$3 outdir=$4 seq=$5
    shift 5
    mkdir -p "$(dirname "$file")"
    cat > "$file" <<YML
base_model: $model
datasets:
  - path: $ROOT/datasets/excel_expert/train.jsonl
    type: alpaca
adapter: lora
lora_r: 16
lora_alpha: 32
lora_target_linear: true
sequence_len: $seq
excess_length_strategy: truncate
sample_packing: true
backend: $backend
threads: $CPU_THREADS
output_dir: $outdir
YML
    local l
    for l in "$@"; do echo "$l" >> "$file"; done
}
# parity_cfg FILE MODEL BACKEND OUTDIR [extra yaml lines...]
# Tiny models (context 64, 384-token byte vocabulary): sequence_len 128, and
# train_on_inputs, since truncation to 128 tokens leaves no response tokens.
parity_cfg() {
    local file=$1 model=$2 backend=$3 outdir=$4 seq=512 extra=()
    shift 4
    case $model in gqa|tied|llama3rope) seq=128; extra=("train_on_inputs: true") ;; esac
    write_cfg "$file" "$(model_path "$model")" "$backend" "$outdir" "$seq" \
        "lora_dropout: 0.05" "micro_batch_size: 2" "gradient_accumulation_steps: 2" \
        "learning_rate: 1.0e-3" "lr_scheduler: cosine" "logging_steps: 1" "save_steps: $HALF" \
        "max_steps: $PARITY_STEPS" "seed: 42" "${extra[@]}" "$@"
}
# run_tune NAME CONFIG WANT_SECONDS: stdout+stderr to $LOGS/NAME.log
run_tune() {
    local name=$1 cfg=$2 want=$3 rc
    timeout "$(tmo "$want")" "$TUNE" "$cfg" > "$LOGS/$name.log" 2>&1 < /dev/null
    rc=$?
    if [ $rc != 0 ]; then
        { echo "!! $name: tune exited $rc ($( [ $rc = 124 ] && echo timeout )); tail of its log:"
          tail -15 "$LOGS/$name.log"; } >> "$PARITY"
    fi
    return $rc
}

# ---- phase 4: CPU vs GPU parity, determinism, resume ----------------------------
WORK=$SCRATCH/work
rm -rf "$WORK" && mkdir -p "$WORK"
: > "$PARITY"
PAR_MODELS=(gqa tied llama3rope)
have_model smollm2 && PAR_MODELS+=(smollm2)
if [ "$HAVE_GPU" = 1 ]; then B2=cuda; else B2=cpu; fi
echo "== parity: backend cpu ($CPU_THREADS threads) vs $B2, $PARITY_STEPS steps, tolerance $TOL" >> "$PARITY"
[ "$HAVE_GPU" = 0 ] && echo "== no GPU: cpu vs cpu, a self-test of the comparison" >> "$PARITY"
for m in "${PAR_MODELS[@]}"; do
    t=$SECONDS
    want=60; [ "$m" = smollm2 ] && want=150
    parity_cfg "$WORK/$m-cpu.yml" "$m" cpu "$WORK/$m-cpu"
    parity_cfg "$WORK/$m-$B2-run.yml" "$m" "$B2" "$WORK/$m-$B2-run"
    if ! run_tune "$m-cpu" "$WORK/$m-cpu.yml" "$want"; then
        record "par-$m" FAIL "$t" "cpu run failed (parity.log)"; continue
    fi
    if ! run_tune "$m-$B2-run" "$WORK/$m-$B2-run.yml" "$want"; then
        record "par-$m" FAIL "$t" "$B2 run failed (parity.log)"; continue
    fi
    res=$(py tools/gpu/compare_runs.py "$m cpu-vs-$B2" "$WORK/$m-cpu" "$WORK/$m-$B2-run" --tol "$TOL" 2>&1)
    rc=$?
    echo "$res" >> "$PARITY"
    if [ $rc = 0 ]; then record "par-$m" PASS "$t" "$(echo "$res" | tail -1 | cut -d' ' -f3-)"
    else record "par-$m" FAIL "$t" "$(echo "$res" | tail -1 | cut -c1-150)"; fi
done

# Determinism and resume on the largest parity model, on the GPU (or the CPU).
DM=gqa; have_model smollm2 && DM=smollm2
A=$WORK/$DM-$B2-run
t=$SECONDS
if [ -f "$A/adapter_model.safetensors" ]; then
    B=$WORK/$DM-$B2-again
    parity_cfg "$WORK/$DM-$B2-again.yml" "$DM" "$B2" "$B"
    if run_tune "$DM-$B2-again" "$WORK/$DM-$B2-again.yml" 150; then
        if cmp "$A/adapter_model.safetensors" "$B/adapter_model.safetensors" >> "$PARITY" 2>&1; then
            record rerun PASS "$t" "$DM $B2: two runs, byte-identical adapters"
        else
            record rerun FAIL "$t" "$DM $B2: adapters of two runs differ"
        fi
        echo "== rerun $DM $B2: $(sha256sum "$A/adapter_model.safetensors" "$B/adapter_model.safetensors" | awk '{printf "%s ", substr($1,1,16)}')" >> "$PARITY"
        t=$SECONDS
        if [ -d "$B/checkpoint-$HALF" ]; then
            rm -f "$B/adapter_model.safetensors"
            parity_cfg "$WORK/$DM-$B2-resume.yml" "$DM" "$B2" "$B" "resume_from_checkpoint: $B/checkpoint-$HALF"
            if run_tune "$DM-$B2-resume" "$WORK/$DM-$B2-resume.yml" 100 &&
               grep -q "resuming at step $HALF" "$LOGS/$DM-$B2-resume.log" &&
               cmp "$A/adapter_model.safetensors" "$B/adapter_model.safetensors" >> "$PARITY" 2>&1; then
                record resume PASS "$t" "$DM $B2: resumed at step $HALF, byte-identical to the uninterrupted run"
            else
                record resume FAIL "$t" "$DM $B2: resumed run failed or differs (parity.log)"
            fi
        else
            record resume FAIL "$t" "no $B/checkpoint-$HALF"
        fi
    else
        record rerun FAIL "$t" "second $DM $B2 run failed"
    fi
else
    record rerun FAIL "$t" "no $DM $B2 adapter to compare"
fi
# Inference on the GPU: eval's loss and greedy generation with the adapter
# the GPU trained, on the CPU and on the GPU (eval within the tolerance;
# generation compared token for token, a difference reported, not failed:
# random weights make near-ties likely).
t=$SECONDS
if [ -f "$A/adapter_model.safetensors" ]; then
    M=$(model_path "$DM")
    # The Excel eval set; the tiny models (64 positions) get short completion records.
    data=$ROOT/datasets/excel_expert/eval.jsonl; type=alpaca; seq=512
    case $DM in gqa|tied|llama3rope)
        data=$WORK/infer.jsonl; type=completion; seq=64
        for i in 1 2 3 4 5 6; do printf '{"text": "=SUM(A%d:A%d) adds cells %d to %d."}\n' $i $((i + 4)) $i $((i + 4)); done > "$data" ;;
    esac
    for be in cpu "$B2"; do
        timeout "$(tmo 60)" "$TUNE" eval "$M" --data "$data" --type "$type" --sequence_len "$seq" \
            --adapter "$A" --backend "$be" --json --out "$WORK/eval-$be" > "$WORK/eval-$be.json" 2>> "$LOGS/infer.log" < /dev/null
        timeout "$(tmo 60)" "$TUNE" generate "$M" --adapter "$A" --raw --prompt "=SUM(A1:A10) adds" \
            --max_new_tokens 24 --backend "$be" > "$WORK/gen-$be.txt" 2>> "$LOGS/infer.log" < /dev/null
    done
    res=$(py - "$WORK/eval-cpu.json" "$WORK/eval-$B2.json" "$WORK/gen-cpu.txt" "$WORK/gen-$B2.txt" "$TOL" <<'PY' 2>&1
import json, sys
a, b = (json.loads(open(p).read()) for p in sys.argv[1:3])
rel = abs(a["loss"] - b["loss"]) / abs(a["loss"])
ga, gb = (open(p, encoding="utf-8", errors="replace").read() for p in sys.argv[3:5])
same = "identical" if ga == gb else "differs after %d chars" % next(i for i in range(min(len(ga), len(gb)) + 1) if ga[i:i+1] != gb[i:i+1])
print("eval loss cpu %.9g gpu %.9g rel %.2e; greedy text %s" % (a["loss"], b["loss"], rel, same))
sys.exit(0 if rel <= float(sys.argv[5]) else 1)
PY
)
    rc=$?
    echo "== inference $DM: $res" >> "$PARITY"
    if [ $rc = 0 ]; then record infer PASS "$t" "$DM: $res"; else record infer FAIL "$t" "$DM: $res (infer.log)"; fi
else
    record infer FAIL "$t" "no $DM $B2 adapter to run"
fi

# tune plan for a CUDA config, into info.txt.
{
    echo "== $TUNE plan (a cuda parity config)"
    parity_cfg "$WORK/plan.yml" "$DM" cuda "$WORK/plan-out"
    cat "$WORK/plan.yml"
    echo "--"
    timeout 60 "$TUNE" plan "$WORK/plan.yml" 2>&1 < /dev/null
} >> "$INFO"

# ---- phase 5: speed against Transformers + PEFT -----------------------------------
RESERVE=0
: > "$BENCH"
smi_idle() { nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits 2>/dev/null | head -1; }
smi_start() { nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 > "$1" 2>/dev/null & SMI_PID=$!; }
smi_stop() { kill "$SMI_PID" 2>/dev/null; wait "$SMI_PID" 2>/dev/null; sort -n "$1" | tail -1; }
BENCH_ROWS=$SCRATCH/bench_rows.jsonl
: > "$BENCH_ROWS"
for m in $BENCH_MODELS; do
    t=$SECONDS
    if [ "$HAVE_GPU" = 0 ]; then record "bench-$m" SKIP "$t" "no GPU"; continue; fi
    if ! have_model "$m"; then record "bench-$m" FAIL "$t" "no $m model (phase 3)"; continue; fi
    case $m in
        llama1b) b=$LLAMA1B_B; T=$LLAMA1B_T; want=150 ;;
        *) b=$SMOLLM2_B; T=$SMOLLM2_T; want=90 ;;
    esac
    echo "== $m: micro-batch $b x $T, 1 + $BENCH_STEPS steps, fp32" >> "$BENCH"
    out=$WORK/bench-$m
    write_cfg "$WORK/bench-$m.yml" "$MODELS/$m" cuda "$out" "$T" \
        "lora_dropout: 0.0" "pad_to_sequence_len: true" "train_on_inputs: true" "micro_batch_size: $b" \
        "gradient_accumulation_steps: 1" "learning_rate: 1.0e-4" "lr_scheduler: constant" \
        "logging_steps: 1" "save_steps: 100000" "max_steps: $(( BENCH_STEPS + 1 ))" "seed: 1"
    idle=$(smi_idle)
    smi_start "$SCRATCH/smi-tune-$m"
    timeout "$(tmo "$want")" "$TUNE" "$WORK/bench-$m.yml" > "$LOGS/bench-tune-$m.log" 2>&1 < /dev/null
    trc=$?
    tpeak=$(smi_stop "$SCRATCH/smi-tune-$m")
    echo "tune: rc $trc, nvidia-smi idle ${idle} MiB, peak ${tpeak} MiB" >> "$BENCH"
    [ $trc != 0 ] && tail -15 "$LOGS/bench-tune-$m.log" >> "$BENCH"
    idle2=$(smi_idle)
    smi_start "$SCRATCH/smi-peer-$m"
    timeout "$(tmo "$want")" env LD_LIBRARY_PATH="$ORIG_LD_LIBRARY_PATH" "$PYTHON" tools/gpu/peer_peft_train.py \
        "$MODELS/$m" --batch "$b" --seq "$T" --steps "$BENCH_STEPS" > "$LOGS/bench-peer-$m.json" 2> "$LOGS/bench-peer-$m.err" < /dev/null
    prc=$?
    ppeak=$(smi_stop "$SCRATCH/smi-peer-$m")
    echo "peer: rc $prc, nvidia-smi idle ${idle2} MiB, peak ${ppeak} MiB" >> "$BENCH"
    [ $prc != 0 ] && tail -15 "$LOGS/bench-peer-$m.err" >> "$BENCH"
    py - "$m" "$MODELS/$m/config.json" "$out/training_log.jsonl" "$LOGS/bench-peer-$m.json" \
        "$b" "$T" "$trc" "$prc" "${idle:-0}" "${tpeak:-0}" "${idle2:-0}" "${ppeak:-0}" >> "$BENCH_ROWS" 2>> "$BENCH" <<'PY'
import json, sys
(name, cfgp, logp, peerp, b, T, trc, prc, idle, tpeak, idle2, ppeak) = sys.argv[1:]
b, T = int(b), int(T)
c = json.load(open(cfgp))
H, I, L, V = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"], c["vocab_size"]
hd = c.get("head_dim") or H // c["num_attention_heads"]
q, kv, r = c["num_attention_heads"] * hd, c["num_key_value_heads"] * hd, 16
frozen = L * (2 * H * q + 2 * H * kv + 3 * H * I)
lm_head = V * H
lora = L * r * ((H + q) + 2 * (H + kv) + (q + H) + 2 * (H + I) + (I + H))
flops_tok = 4 * (frozen + lm_head) + 6 * lora + 6 * L * T * q
row = {"model": name, "batch": b, "seq": T, "frozen_linear_params": frozen, "lm_head_params": lm_head,
       "lora_params": lora, "flops_per_token": flops_tok, "tune_rc": int(trc), "peer_rc": int(prc)}
try:
    rows = {}
    for line in open(logp):
        d = json.loads(line)
        if "tokens_per_second" in d:
            rows[int(d["step"])] = float(d["tokens_per_second"])
    timed = [v for s, v in sorted(rows.items()) if s >= 2]
    if timed:
        row["tune_tokens_per_s"] = sum(timed) / len(timed)
        row["tune_steps_timed"] = len(timed)
except OSError:
    pass
row["tune_smi_peak_mib"] = max(0, int(tpeak or 0) - int(idle or 0))
try:
    p = json.loads(open(peerp).read().strip().splitlines()[-1])
    row["peer"] = p
    row["peer_tokens_per_s"] = p["tokens_per_s"]
    row["peer_max_allocated_mib"] = p["max_memory_allocated_mib"]
except Exception:
    pass
row["peer_smi_peak_mib"] = max(0, int(ppeak or 0) - int(idle2 or 0))
if "tune_tokens_per_s" in row:
    row["tune_tflops"] = row["tune_tokens_per_s"] * flops_tok / 1e12
    row["tune_share_of_67tflops"] = row["tune_tflops"] / 67.0
    row["tune_share_pct"] = 100 * row["tune_share_of_67tflops"]
if "tune_tokens_per_s" in row and "peer_tokens_per_s" in row:
    row["speed_ratio_tune_over_peer"] = row["tune_tokens_per_s"] / row["peer_tokens_per_s"]
if row["tune_smi_peak_mib"] and row["peer_smi_peak_mib"]:
    row["memory_ratio_tune_over_peer"] = row["tune_smi_peak_mib"] / row["peer_smi_peak_mib"]
print(json.dumps(row))
PY
    line=$(py -c '
import json, sys
r = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
f = lambda k, fmt: (fmt % r[k]) if k in r else "-"
print("%s: tune %s tok/s (%s TFLOP/s, %s of 67), peer %s tok/s, speed x%s, mem x%s (%s vs %s MiB), %.3g GFLOP/token"
      % (r["model"], f("tune_tokens_per_s", "%.0f"), f("tune_tflops", "%.1f"), f("tune_share_pct", "%.0f%%"),
         f("peer_tokens_per_s", "%.0f"), f("speed_ratio_tune_over_peer", "%.2f"), f("memory_ratio_tune_over_peer", "%.2f"),
         f("tune_smi_peak_mib", "%d"), f("peer_smi_peak_mib", "%d"), r["flops_per_token"] / 1e9))' "$BENCH_ROWS" 2>&1)
    echo "$line" >> "$BENCH"
    if [ "$trc" = 0 ] && [ "$prc" = 0 ]; then record "bench-$m" PASS "$t" "$line"
    else record "bench-$m" FAIL "$t" "tune rc $trc, peer rc $prc: $line"; fi
done
if [ -s "$BENCH_ROWS" ]; then
    py -c 'import json,sys; print(json.dumps([json.loads(l) for l in open(sys.argv[1]) if l.strip()], indent=1))' "$BENCH_ROWS" > "$OUT/bench.json"
fi

# ---- summary --------------------------------------------------------------------
{
    echo "tune GPU check: $(git describe --always --dirty 2>/dev/null), $( [ "$HAVE_GPU" = 1 ] && nvidia-smi --query-gpu=name --format=csv,noheader | head -1 || echo "no GPU"), $(( SECONDS - T0 )) s"
    printf '%-14s %-5s %6s  %s\n' phase status time note
    for r in "${ROWS[@]}"; do
        IFS='|' read -r p s d n <<< "$r"
        printf '%-14s %-5s %5ss  %s\n' "$p" "$s" "$d" "$n"
    done
    [ ${#EXTRA[@]} -gt 0 ] && printf '%s\n' "${EXTRA[@]}"
    echo "result: $([ $FAILED = 0 ] && echo PASS || echo FAIL)   (details: $OUT)"
} > "$OUT/summary.txt"
echo
cat "$OUT/summary.txt"
exit $FAILED
