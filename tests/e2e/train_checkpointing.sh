#!/usr/bin/env bash
# gradient_checkpointing: the same losses and adapter bytes as the run
# without it (the backward recomputes each layer with the same kernels),
# with dropout and packing, and a plan that shows both memory figures.
# Needs $TUNE (the binary). Runs in a scratch folder.
set -u
source "$(dirname "$0")/lib.bash"

sum_records 24 > data.jsonl
{ tiny_config "$SRC/tests/data/tiny/gqa"; cat <<YML
lora_dropout: 0.1
sample_packing: true
micro_batch_size: 2
gradient_accumulation_steps: 2
max_steps: 6
learning_rate: 1.0e-3
logging_steps: 1
seed: 3
YML
} > plain.yml
sed 's/^seed: 3/seed: 3\ngradient_checkpointing: true/' plain.yml > ckpt.yml

expect 0 "$TUNE" plan ckpt.yml
has out "(without gradient_checkpointing: "
expect 0 "$TUNE" plan plain.yml
has out "(with gradient_checkpointing: "
expect 0 "$TUNE" plain.yml --output_dir plain
expect 0 "$TUNE" ckpt.yml --output_dir ckpt
cmp -s plain/adapter_model.safetensors ckpt/adapter_model.safetensors ||
    { echo "FAIL: gradient_checkpointing changed the adapter"; fails=$((fails + 1)); }
losses() { grep -o '"loss":[^,]*' "$1/training_log.jsonl"; }
[ "$(losses plain)" = "$(losses ckpt)" ] && [ -n "$(losses plain)" ] ||
    { echo "FAIL: gradient_checkpointing changed the losses"; fails=$((fails + 1)); }
has ckpt/config_resolved.yml "gradient_checkpointing: true"

finish train_checkpointing
