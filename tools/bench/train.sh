#!/usr/bin/env bash
# LoRA training speed, tune against Transformers + PEFT on the same
# micro-batches: the first part of `make bench` (tools/bench/run.sh).
#
# usage: tools/bench/train.sh TUNE CONFIG      (from the repository root)
#
# CONFIG trains STEPS + 1 steps with logging_steps 1 on MODEL; the first step
# warms up, the others are timed. Its dataset_prepared_path is filled by step
# 1 below, so every run finds a warm data cache.
#   1. tune preprocess CONFIG --batches: the micro-batches of every step, in
#      training order, for the peer (tools/bench/peer_lora_train.py).
#   2. REPEATS rounds, alternating, each:
#        tune explain CONFIG --json  the sgemm ceiling (2048x2048x2048 through
#                                    tune's BLAS, best of 3) and the model FLOPs
#                                    per token, measured in this run;
#        tune CONFIG                 tokens/s of the timed steps (the log's
#                                    tokens_per_second), peak RSS, the time from
#                                    launch to the first step's log line
#                                    (elapsed_s) and the first step's loss;
#        the peer                    the same figures, and torch.matmul's rate
#                                    on the same product and the model's shapes.
#      tune runs with OPENBLAS_CORETYPE unset (it picks its own kernels).
#   3. tools/bench/train_report.py: the table (medians), the first-step loss
#      check (equal losses prove equal batches) and
#      OUT_DIR/train-<UTC date>-<commit>.json with every run's figures.
# Environment: PYTHON (the peer's: torch, transformers, peft, gguf), MODEL,
# BATCH, SEQ, STEPS, THREADS (for the record; CONFIG holds them), REPEATS
# (default 3), OUT_DIR (default bench/results).
set -euo pipefail
TUNE=${1:?usage: tools/bench/train.sh TUNE CONFIG}
CONFIG=${2:?usage: tools/bench/train.sh TUNE CONFIG}
PYTHON=${PYTHON:-python3}
REPEATS=${REPEATS:-3}
OUT_DIR=${OUT_DIR:-bench/results}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

tune() { env -u OPENBLAS_CORETYPE "$TUNE" "$@"; }
echo "== LoRA training: $MODEL, micro-batch $BATCH x $SEQ, $STEPS timed steps after 1 warm-up, $THREADS threads," \
     "$REPEATS runs each, alternating"
tune preprocess "$CONFIG" --batches "$work/batches.safetensors" > /dev/null 2> "$work/preprocess.err" ||
    { cat "$work/preprocess.err" >&2; exit 1; }
for r in $(seq 1 "$REPEATS"); do
    echo "   run $r: tune explain, tune, peer" >&2
    tune explain "$CONFIG" --json > "$work/explain.$r.json" 2> "$work/explain.$r.err" ||
        { cat "$work/explain.$r.err" >&2; exit 1; }
    /usr/bin/time -f '%M %e' -o "$work/tune.$r.time" env -u OPENBLAS_CORETYPE "$TUNE" "$CONFIG" \
        --output_dir "$work/tune.$r" > /dev/null 2> "$work/tune.$r.err" || { cat "$work/tune.$r.err" >&2; exit 1; }
    /usr/bin/time -f '%M %e' -o "$work/peer.$r.time" "$PYTHON" tools/bench/peer_lora_train.py "$MODEL" \
        "$work/batches.safetensors" --threads "$THREADS" > "$work/peer.$r.json" 2> "$work/peer.$r.err" ||
        rm -f "$work/peer.$r.json" # the report names the error
done
WORK="$work" REPEATS="$REPEATS" TUNE="$TUNE" MODEL="$MODEL" BATCH="$BATCH" SEQ="$SEQ" STEPS="$STEPS" \
    THREADS="$THREADS" OUT_DIR="$OUT_DIR" "$PYTHON" tools/bench/train_report.py
