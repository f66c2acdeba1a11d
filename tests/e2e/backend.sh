#!/usr/bin/env bash
# The backend key never lies: the plan and the training log name the backend
# and why; `backend: cuda` without a usable GPU (or in a build without CUDA)
# is refused with exit 2 and the reason, by train, plan, eval and generate,
# before anything is written. Where a GPU is usable, cuda and auto pick it.
# Needs $TUNE (the binary). Runs in a scratch folder.
set -u
source "$(dirname "$0")/lib.bash"

sum_records 12 >data.jsonl
{
    tiny_config "$SRC/tests/data/tiny/gqa"
    cat <<YML
micro_batch_size: 2
max_steps: 2
learning_rate: 1.0e-3
output_dir: runs/a
seed: 7
YML
} >tiny.yml

"$TUNE" --version >version.txt 2>&1
gpu=0
grep -q '^cuda: .*compute' version.txt && gpu=1

expect 0 "$TUNE" plan tiny.yml --backend cpu
has out "machine      cpu"
has out "cpu: asked for"

expect 0 "$TUNE" plan tiny.yml
if [ $gpu = 1 ]; then
    has out "machine      cuda"
    has out "device mem   about"
else
    has out "machine      cpu"
    has out "cpu: $(sed -n 's/^cuda: //p' version.txt)"
fi

if [ $gpu = 1 ]; then
    expect 0 "$TUNE" plan tiny.yml --backend cuda
    has out "machine      cuda"
else
    why=$(sed -n 's/^cuda: //p' version.txt)
    expect 2 "$TUNE" plan tiny.yml --backend cuda
    has err "backend cuda: $why"
    rm -rf runs
    expect 2 "$TUNE" train tiny.yml --backend cuda
    has err "backend cuda: $why"
    [ -e runs/a ] && { echo "FAIL: a refused run wrote into runs/a"; fails=$((fails + 1)); }
    printf 'backend: cuda\n' >>tiny.yml
    expect 2 "$TUNE" tiny.yml
    has err "tiny.yml:"
    has err "backend cuda: $why"
    expect 2 "$TUNE" eval "$SRC/tests/data/tiny/gqa" --data data.jsonl --backend cuda
    has err "backend cuda: $why"
    expect 2 "$TUNE" generate "$SRC/tests/data/tiny/gqa" --raw --backend cuda --prompt "=SUM"
    has err "backend cuda: $why"
    sed -i '$d' tiny.yml
fi

expect 0 "$TUNE" train tiny.yml --backend cpu
has err "tune: backend cpu: asked for"
[ -f runs/a/adapter_model.safetensors ] || { echo "FAIL: no adapter"; fails=$((fails + 1)); }
expect 2 "$TUNE" plan tiny.yml --backend tpu
has err "bad value 'tpu' for backend (allowed: auto, cpu, cuda"

finish backend
