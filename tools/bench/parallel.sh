#!/usr/bin/env bash
# `make bench`, CPU data-parallel scaling: LoRA training on the default model
# with one global batch (micro-batch BATCH x SEQ, 2 micro-batches a step) as
#   1 rank x 1 thread, 2 ranks x 1 thread (mpirun), 1 rank x 2 threads,
# reported in tokens/s (mean of STEPS steps after a warm-up step) and as
# ratios. The three adapters are compared too (the 2-rank one must equal the
# 1-rank ones: same global batch). Timings never decide a test.
# Needs a build with MPI (MPI_TUNE, default build/mpi/tune: make MPI=1
# BUILD=build/mpi) and mpirun; otherwise it says it was skipped.
# usage: tools/bench/parallel.sh [MPI_TUNE]
set -euo pipefail
TUNE=${1:-${MPI_TUNE:-build/mpi/tune}}
PYTHON=${PYTHON:-python3}
MODEL=${MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
BATCH=${BATCH:-4}
SEQ=${SEQ:-256}
STEPS=${STEPS:-4}
echo "== CPU data parallelism: micro-batch $BATCH x $SEQ, 2 micro-batches per step, $STEPS timed steps"
if ! [ -x "$TUNE" ] || ! "$TUNE" --version | grep -q '^mpi: Open MPI' || ! command -v mpirun >/dev/null; then
    echo "skipped: needs a build with MPI ($TUNE: make MPI=1 BUILD=build/mpi) and mpirun"
    exit 0
fi
[ -f "$MODEL" ] || { echo "skipped: $MODEL is missing (run: make model)"; exit 0; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cat > "$work/p.yml" <<YML
base_model: $MODEL
datasets:
  - path: datasets/excel_expert/train.jsonl
    type: alpaca
adapter: lora
lora_r: 16
lora_alpha: 32
lora_dropout: 0.0
lora_target_linear: true
sequence_len: $SEQ
excess_length_strategy: truncate
sample_packing: true
pad_to_sequence_len: true
micro_batch_size: $BATCH
max_steps: $((STEPS + 1))
learning_rate: 1.0e-4
lr_scheduler: constant
logging_steps: 1
save_steps: 1000
seed: 1
YML

# run NAME RANKS THREADS ACCUM: trains; prints its mean tokens/s after the warm-up step.
run() {
    local name=$1 ranks=$2 threads=$3 accum=$4
    local cmd=("$TUNE" train "$work/p.yml" --output_dir "$work/$name" --threads "$threads"
               --gradient_accumulation_steps "$accum")
    if [ "$ranks" -gt 1 ]; then
        OMP_NUM_THREADS=$threads mpirun --allow-run-as-root --oversubscribe --bind-to none -np "$ranks" "${cmd[@]}" \
            > /dev/null 2> "$work/$name.err" || { tail -3 "$work/$name.err" >&2; exit 1; }
    else
        OMP_NUM_THREADS=$threads "${cmd[@]}" > /dev/null 2> "$work/$name.err" || { tail -3 "$work/$name.err" >&2; exit 1; }
    fi
    "$PYTHON" - "$work/$name/training_log.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"tokens_per_second"' in l]
timed = [r["tokens_per_second"] for r in rows[1:]]  # the first step warms up
print(sum(timed) / len(timed))
PY
}

one=$(run r1t1 1 1 2)
two=$(run r2t1 2 1 1)
thr=$(run r1t2 1 2 2)
printf '%-24s %10.1f tokens/s\n' "1 rank x 1 thread" "$one" "2 ranks x 1 thread" "$two" "1 rank x 2 threads" "$thr"
"$PYTHON" -c 'import sys; o,t,h=map(float,sys.argv[1:]); print(f"ratio: 2 ranks / 1 rank {t/o:.2f}x; 2 ranks x 1 thread / 1 rank x 2 threads {t/h:.2f}x")' \
    "$one" "$two" "$thr"
cmp -s "$work/r1t1/adapter_model.safetensors" "$work/r2t1/adapter_model.safetensors" &&
    echo "adapters: 2 ranks = 1 rank, byte for byte" || echo "adapters: 2 ranks differ from 1 rank (unexpected)"
