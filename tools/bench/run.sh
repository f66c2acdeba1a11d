#!/usr/bin/env bash
# `make bench`: tune against its peer (Transformers + PEFT) on this machine, in
# one run, reported as ratios. Timings never decide a test; this prints figures.
#   1. LoRA training on the default model (SmolLM2-135M-Instruct, r 16 on all
#      seven linear layers, micro-batch BATCH x SEQ tokens, STEPS steps after
#      one warm-up step), tune and the peer on the same micro-batches,
#      REPEATS runs each, alternating (tools/bench/train.sh): medians of
#      tokens/s and peak memory, the time from launch to the first step, the
#      sgemm ceiling of each and the share of it their model FLOPs reach, the
#      first-step losses (equal: the same batches); also written as
#      bench/results/train-<date>-<commit>.json.
#   2. Peak memory of one training step on Llama-3.2-1B's shapes with fp32,
#      load_in_8bit and QLoRA base weights (sequence QSEQ); then training on
#      those shapes at sequence LSEQ: tokens/s and peak memory, without and
#      with gradient_checkpointing.
#   3. Tokenizer encode throughput (tools/bench/tokenizer_bench.sh).
#   4. CPU data parallelism: 2 ranks x 1 thread against 1 rank x 1 and x 2
#      threads (tools/bench/parallel.sh; needs a build with MPI=1).
# Needs `make model`, and a Python with torch, transformers, peft, gguf and
# tokenizers (PYTHON names it; without them only tune's figures are printed).
# REPEATS (default 3) and OUT_DIR (default bench/results) go to train.sh.
# usage: tools/bench/run.sh BUILD/tune
set -euo pipefail
TUNE=${1:-build/tune}
PYTHON=${PYTHON:-python3}
MODEL=${MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
BATCH=${BATCH:-4}
SEQ=${SEQ:-256}
STEPS=${STEPS:-4}
QSEQ=${QSEQ:-1024}
LSEQ=${LSEQ:-2048}
THREADS=${THREADS:-$(nproc)}
[ -f "$MODEL" ] || { echo "bench: $MODEL is missing (run: make model)" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cat > "$work/bench.yml" <<YML
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
gradient_accumulation_steps: 1
max_steps: $((STEPS + 1))
learning_rate: 1.0e-4
lr_scheduler: constant
logging_steps: 1
save_steps: 1000
threads: $THREADS
output_dir: $work/out
dataset_prepared_path: $work/prepared
seed: 1
YML
MODEL="$MODEL" BATCH="$BATCH" SEQ="$SEQ" STEPS="$STEPS" THREADS="$THREADS" PYTHON="$PYTHON" \
    bash tools/bench/train.sh "$TUNE" "$work/bench.yml"

echo
echo "== Quantised base weights: peak memory of one training step on Llama-3.2-1B's shapes (random weights),"
echo "   sequence $QSEQ, r 16 on every linear layer: fp32, load_in_8bit (Q8_0), QLoRA (NF4)"
if "$PYTHON" tools/gpu/make_models.py "$work/models" llama1b > "$work/make.log" 2>&1; then
    sed -e "s#^base_model: .*#base_model: $work/models/llama1b#" -e "s#^sequence_len: .*#sequence_len: $QSEQ#" \
        -e "s#^micro_batch_size: .*#micro_batch_size: 1#" -e "s#^max_steps: .*#max_steps: 1#" \
        -e "s#^output_dir: .*#output_dir: $work/q#" "$work/bench.yml" > "$work/q.yml"
    for v in "fp32:" "load_in_8bit:--load_in_8bit true" "qlora:--load_in_4bit true --adapter qlora"; do
        name=${v%%:*}
        rm -rf "$work/q"
        # shellcheck disable=SC2086 # the flags split on purpose
        if /usr/bin/time -f '%M %e' -o "$work/q.rss" "$TUNE" "$work/q.yml" ${v#*:} > /dev/null 2> "$work/q.err"; then
            read -r rss secs < "$work/q.rss"
            printf '%-22s peak %6d MiB  (%s s with loading)\n' "$name" $((rss / 1024)) "$secs"
        else
            echo "$name: failed ($(tail -1 "$work/q.err"))"
        fi
    done
    echo
    echo "== Llama-3.2-1B's shapes at sequence $LSEQ (fp32 base, r 16 on every linear layer): tokens/s of the"
    echo "   second step and peak memory, without and with gradient_checkpointing"
    sed -e "s#^sequence_len: .*#sequence_len: $LSEQ#" -e "s#^max_steps: .*#max_steps: 2#" "$work/q.yml" > "$work/l.yml"
    for v in "plain:" "gradient_checkpointing:--gradient_checkpointing true"; do
        name=${v%%:*}
        rm -rf "$work/q"
        # shellcheck disable=SC2086 # the flags split on purpose
        if /usr/bin/time -f '%M' -o "$work/l.rss" "$TUNE" "$work/l.yml" ${v#*:} > /dev/null 2> "$work/l.err"; then
            tps=$(grep -o '"tokens_per_second":[0-9.]*' "$work/q/training_log.jsonl" | tail -1 | cut -d: -f2)
            printf '%-22s %12.1f tokens/s  peak %6d MiB\n' "$name" "$tps" $(($(cat "$work/l.rss") / 1024))
        else
            echo "$name: failed ($(tail -1 "$work/l.err"))"
        fi
    done
else
    echo "not run: tools/gpu/make_models.py needs torch ($(tail -1 "$work/make.log"))"
fi

echo
echo "== Tokenizer encode throughput (single thread)"
PYTHON="$PYTHON" bash tools/bench/tokenizer_bench.sh || echo "tokenizer bench: not run"

echo
# This build when it has MPI, else build/mpi/tune (make MPI=1 BUILD=build/mpi).
"$TUNE" --version | grep -q '^mpi: Open MPI' && mpi_tune=$TUNE || mpi_tune=build/mpi/tune
PYTHON="$PYTHON" MODEL="$MODEL" BATCH="$BATCH" SEQ="$SEQ" STEPS="$STEPS" bash tools/bench/parallel.sh "$mpi_tune" ||
    echo "parallel bench: not run"
