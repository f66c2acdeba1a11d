#!/usr/bin/env bash
# Training end to end on the tiny model: outputs, byte-identical reruns,
# a run killed with SIGKILL and resumed, resume from an explicit checkpoint,
# save_total_limit, and a run the loss watchdog ends (adapter written, exit 0).
# Needs $TUNE (the binary). Runs in a scratch folder.
set -u
source "$(dirname "$0")/lib.bash"
fail() {
    echo "FAIL: $*"
    fails=$((fails + 1))
}

# 40 short completion records; the tiny model has 64 positions.
for i in $(seq 0 39); do
    printf '{"text": "=SUM(A%d:A%d) adds cells %d to %d."}\n' "$i" $((i + 3)) "$i" $((i + 3))
done > data.jsonl
cat > tiny.yml <<YML
base_model: $SRC/tests/data/tiny/gqa
datasets:
  - path: data.jsonl
    type: completion
val_set_size: 8
adapter: lora
lora_r: 4
lora_alpha: 8
lora_dropout: 0.1
lora_target_linear: true
sequence_len: 64
micro_batch_size: 2
gradient_accumulation_steps: 2
max_steps: 120
learning_rate: 1.0e-3
lr_scheduler: cosine
warmup_steps: 3
logging_steps: 5
eval_steps: 10
save_steps: 10
save_total_limit: 2
output_dir: runs/a
seed: 7
YML

# train ARGS...: runs tune train quietly; its status is the function's.
train() {
    "$TUNE" train tiny.yml "$@" >out.txt 2>err.txt
}

if ! train; then
    fail "training exited $?"
    sed 's/^/  | /' err.txt | tail -5
fi
for f in adapter_model.safetensors adapter_config.json trainer_state.json run_manifest.json loss.svg \
    training_log.jsonl checkpoint-110/optimizer.safetensors checkpoint-120/trainer_state.json; do
    [ -e "runs/a/$f" ] || fail "runs/a/$f missing"
done
n=$(ls -d runs/a/checkpoint-* 2>/dev/null | wc -l)
[ "$n" = 2 ] || fail "save_total_limit 2 left $n checkpoints"
grep -q '"eval_loss"' runs/a/training_log.jsonl || fail "no eval_loss in training_log.jsonl"
grep -q '"peft_type": "LORA"' runs/a/adapter_config.json || fail "adapter_config.json is not PEFT's"
sha=$(sha256sum runs/a/adapter_model.safetensors | cut -d' ' -f1)
grep -q "$sha" runs/a/run_manifest.json || fail "run_manifest.json lacks the adapter's sha256"

# Same config, same bytes.
train --output_dir runs/b || fail "rerun exited $?"
cmp -s runs/a/adapter_model.safetensors runs/b/adapter_model.safetensors || fail "rerun adapter differs"

# Killed with SIGKILL once checkpoint-10 exists, then resumed.
"$TUNE" train tiny.yml --output_dir runs/c >/dev/null 2>&1 &
pid=$!
for _ in $(seq 1 3000); do
    [ -d runs/c/checkpoint-10 ] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.01
done
kill -KILL "$pid" 2>/dev/null
wait "$pid" 2>/dev/null
[ -d runs/c/checkpoint-10 ] || fail "the run to interrupt wrote no checkpoint"
train --output_dir runs/c --auto_resume_from_checkpoints true || fail "auto resume exited $?"
cmp -s runs/a/adapter_model.safetensors runs/c/adapter_model.safetensors || fail "resumed adapter differs"

# An explicit checkpoint of another run's folder continues that run.
train --output_dir runs/d --resume_from_checkpoint runs/a/checkpoint-110 || fail "resume_from_checkpoint exited $?"
cmp -s runs/a/adapter_model.safetensors runs/d/adapter_model.safetensors || fail "resume_from_checkpoint differs"
grep -q "resuming at step 110" err.txt out.txt || fail "no 'resuming at step 110' line"

# The loss watchdog (the loss never gets below 0.1): ends the run after 12
# steps as Axolotl does, with exit 0, the reason, and the final adapter.
train --output_dir runs/e --loss_watchdog_threshold 0.1 --loss_watchdog_patience 12
status=$?
[ "$status" = 0 ] || fail "watchdog run exited $status, expected 0"
grep -q "done: 12 steps (stopped by the loss watchdog" err.txt out.txt ||
    fail "no clear watchdog message: $(tail -1 err.txt)"
[ -e runs/e/adapter_model.safetensors ] || fail "the watchdog-stopped run wrote no adapter"
grep -q '"stopped_by_loss_watchdog":true' runs/e/training_log.jsonl || fail "training_log.jsonl lacks the reason"

[ "$fails" = 0 ] && echo "train_resume: ok"
exit $((fails > 0))
