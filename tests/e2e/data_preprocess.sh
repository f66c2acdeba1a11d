#!/usr/bin/env bash
# tune preprocess and tune plan on the data fixtures with the tiny test
# tokenizer: output files, counts, bad records (exit 2, file:line),
# skip_bad_records, and a plan that explains data it cannot prepare.
# Needs $TUNE (the binary). Runs in a scratch folder.
set -u
source "$(dirname "$0")/lib.bash"

D=$SRC/tests/data/data
cat > good.yml <<YML
base_model: $SRC/tests/data/tiny/gqa
datasets:
  - path: $D/alpaca.jsonl
    type: alpaca
  - path: $D/sharegpt.json
    type: sharegpt
  - path: $D/llama2.txt
    type: llama2
chat_template: chatml
sequence_len: 256
learning_rate: 1e-4
lora_target_linear: true
micro_batch_size: 2
output_dir: run
YML

# 3 alpaca records, 2 ShareGPT conversations, 2 Llama-2 conversations.
expect 0 "$TUNE" preprocess good.yml --debug 1
has out "alpaca.jsonl: 3 records, 0 skipped, 3 examples"
has out "sharegpt.json: 2 records, 0 skipped, 2 examples"
has out "llama2.txt: 2 records, 0 skipped, 2 examples"
has out "train: 7 examples, validation: 0 examples"
has out "[=][SUM][(][A][1][:][A][3][)][<|im_end|>]"  # --debug: trained tokens in brackets
for f in processed_conversations.json preprocess_report.json; do
    [ -s "run/$f" ] || { echo "FAIL: run/$f not written"; fails=$((fails + 1)); }
done
has run/preprocess_report.json '"dropped_too_long":'
has run/preprocess_report.json '"longest_example_tokens":'
has run/processed_conversations.json '"labels":'
[ -d run/prepared ] || { echo "FAIL: no prepared-data cache"; fails=$((fails + 1)); }

# tune plan prepares the data (from the cache) and shows real numbers.
expect 0 "$TUNE" plan good.yml
has out "examples     train 7, eval none"
has out "steps        per epoch 4; total 4"
has out "above the model's context length 64"
expect 0 "$TUNE" plan good.yml --sample_packing true --json
has out '"train_examples_unpacked":	7'
expect 0 "$TUNE" plan good.yml --sequence_len 48
has out "dropped as longer than sequence_len 48"
has out "keeps them all"

# A bad record: exit 2, the file and line named.
printf '{"instruction": "a", "output": "b"}\n{"instruction": 3, "output": "c"}\n' > bad.jsonl
cat > bad.yml <<YML
base_model: $SRC/tests/data/tiny/gqa
datasets:
  - path: bad.jsonl
sequence_len: 256
learning_rate: 1e-4
lora_target_linear: true
output_dir: run2
YML
expect 2 "$TUNE" preprocess bad.yml
has err "bad.jsonl:2"
[ -e run2/processed_conversations.json ] && { echo "FAIL: output written despite a bad record"; fails=$((fails + 1)); }
# tune plan still prints the plan, and says why the data is not counted.
expect 0 "$TUNE" plan bad.yml
has out "data         not prepared"
has out "bad.jsonl:2"
has out "per epoch unknown"
# skip_bad_records: the record is counted as skipped and the rest goes on.
expect 0 "$TUNE" preprocess bad.yml --skip_bad_records true
has out "bad.jsonl: 2 records, 1 skipped, 1 examples"
has err "1 bad record skipped"
has run2/preprocess_report.json "bad.jsonl"

# The shipped Excel configs load (their model is fetched separately).
for c in excel_expert excel_expert_sharegpt excel_expert_llama2; do
    (cd "$SRC" && "$TUNE" config resolve "configs/$c.yml") >out 2>err || {
        echo "FAIL: configs/$c.yml does not load"
        sed 's/^/  stderr: /' err | head -5
        fails=$((fails + 1))
    }
done
has out "type: llama2"

# --batches: the micro-batches of every step, in training order (the unit
# suite test_train checks that order against a run's), as safetensors.
check_batches() {
    python3 - "$1" > out <<'PY'
import json, struct, sys
data = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", data[:8])[0]
head = json.loads(data[8:8 + n])
def col(name):
    start, end = head[name]["data_offsets"]
    assert head[name]["dtype"] == "I32", name
    return struct.unpack(f"<{(end - start) // 4}i", data[8 + n + start:8 + n + end])
k = sum(1 for name in head if name.startswith("input_ids."))
print("micro-batches", k, "steps", *col("step"))
for i in range(k):
    B, T = head[f"input_ids.{i}"]["shape"]
    lab, seg, pos = col(f"labels.{i}"), col(f"segment_ids.{i}"), col(f"position_ids.{i}")
    # padding (segment 0) is never trained; a segment's positions count from 0
    assert all(l == -100 for l, s in zip(lab, seg) if s == 0), i
    assert all(p == 0 or (s == seg[j - 1] and p == pos[j - 1] + 1) for j, (p, s) in enumerate(zip(pos, seg)) if s), i
    targets = sum(1 for j in range(B * T) if j % T + 1 < T and lab[j + 1] != -100 and seg[j] == seg[j + 1])
    assert targets == col("targets")[i], (i, targets)
print("checked")
PY
}
expect 0 "$TUNE" preprocess good.yml --batches run/batches.safetensors
has out "wrote the micro-batches of every step to run/batches.safetensors"
check_batches run/batches.safetensors
has out "micro-batches 4 steps 0 1 2 3"
has out "checked"
expect 0 "$TUNE" preprocess good.yml --batches run/batches.safetensors --steps 2 --gradient_accumulation_steps 2
check_batches run/batches.safetensors
has out "micro-batches 4 steps 0 0 1 1"
expect 0 "$TUNE" preprocess good.yml --batches run/batches.safetensors --steps 1 --num_epochs 2 --sample_packing true
check_batches run/batches.safetensors
has out "micro-batches 1 steps 0"
has out "checked"

# Arguments.
expect 2 "$TUNE" preprocess good.yml --steps 2
has err "--steps is for --batches"
expect 2 "$TUNE" preprocess good.yml --batches run/b.safetensors --steps 0
expect 2 "$TUNE" preprocess good.yml --batches run/b.safetensors --steps x
expect 2 "$TUNE" preprocess good.yml --batches
expect 2 "$TUNE" preprocess good.yml --debug x
expect 2 "$TUNE" preprocess
expect 0 "$TUNE" preprocess --help
has out "usage: tune preprocess"

finish data_preprocess
