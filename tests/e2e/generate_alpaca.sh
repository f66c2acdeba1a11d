#!/usr/bin/env bash
# An adapter trained on alpaca data answers through the prompt it was trained
# with: tune generate and tune compare pick the alpaca prompt from the run's
# config_resolved.yml (saying so), --alpaca gives the same prompt explicitly,
# it equals the alpaca text fed raw, chat says it uses the chat template instead,
# and compare answers as generate does and
# scores the answers against the "output" references with chrF. On the default
# model (the alpaca preamble alone passes the tiny models' 64 positions):
# skipped when it is absent.
set -euo pipefail
: "${TUNE:=build/tune}"
M=$(pwd)/models/SmolLM2-135M-Instruct.Q4_1.gguf
if [ ! -f "$M" ]; then
    echo "generate_alpaca: skipped ($M is absent; 'make model' fetches it)"
    exit 0
fi
source "$(dirname "$0")/lib.bash"
for i in $(seq 0 7); do
    printf '{"instruction": "Add up A%d to A%d.", "input": "", "output": "=SUM(A%d:A%d)"}\n' "$i" $((i + 3)) "$i" $((i + 3))
done >train.jsonl
cat >tiny.yml <<YML
base_model: $M
datasets:
  - path: train.jsonl
    type: alpaca
adapter: lora
lora_r: 4
lora_alpha: 8
lora_target_modules: [q_proj, v_proj]
sequence_len: 128
micro_batch_size: 2
gradient_accumulation_steps: 1
max_steps: 2
learning_rate: 1.0e-3
output_dir: out
YML
"$TUNE" tiny.yml >train.log 2>&1 || { echo "training failed"; tail train.log; exit 1; }

# the default for this adapter is the alpaca prompt, with a note
auto=$("$TUNE" generate "$M" --adapter out --prompt "Add up A5 to A8." --max_new_tokens 12 2>gen.log)
grep -q "note: the model: the adapter was trained on alpaca data" gen.log
[ -n "$auto" ]
explicit=$("$TUNE" generate "$M" --adapter out --alpaca --prompt "Add up A5 to A8." --max_new_tokens 12 2>/dev/null)
[ "$explicit" = "$auto" ]
preamble="Below is an instruction that describes a task. Write a response that appropriately completes the request."
# (the trailing x keeps command substitution from eating the prompt's final newline)
text=$(printf '%s\n\n### Instruction:\nAdd up A5 to A8.\n\n### Response:\nx' "$preamble")
raw=$("$TUNE" generate "$M" --adapter out --raw --max_new_tokens 12 --prompt "${text%x}" 2>/dev/null)
[ "$raw" = "$auto" ]
# with an input the prompt has the ### Input: section (the raw text again equals it)
with_input=$("$TUNE" generate "$M" --adapter out --prompt "Add up A5 to A8." --input "sheet 2" --max_new_tokens 12 2>/dev/null)
preamble_in="Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request."
text=$(printf '%s\n\n### Instruction:\nAdd up A5 to A8.\n\n### Input:\nsheet 2\n\n### Response:\nx' "$preamble_in")
raw_in=$("$TUNE" generate "$M" --adapter out --raw --max_new_tokens 12 --prompt "${text%x}" 2>/dev/null)
[ "$with_input" = "$raw_in" ]

# compare: A is the base in its chat template, B the adapter in its alpaca prompt, as generate
printf '{"instruction": "Add up A5 to A8.", "input": "", "output": "%s"}\n{"instruction": "Add up A11 to A14.", "output": "=SUM(A11:A14)"}\n' "$auto" >eval.jsonl
"$TUNE" compare "$M" "$M" --adapter-b out --prompts eval.jsonl --max_new_tokens 12 2>cmp.log
grep -q "note: model B: the adapter was trained on alpaca data" cmp.log
grep -q "chrF against the 2 references: A [0-9.]*, B [0-9.]*;" cmp.log || { cat cmp.log; exit 1; }
python3 - <<'PY'
import csv
rows = list(csv.DictReader(open("model_comparison_results.csv", newline="")))
assert float(rows[0]["chrf_b"]) == 100.0, rows[0]  # B's answer is generate's, its own reference
PY

# chat keeps the chat template and says how to ask the adapter its own way
printf 'hi\n/exit\n' | "$TUNE" chat "$M" --adapter out --max_new_tokens 4 >/dev/null 2>chat.log
grep -q "note: the adapter was trained on alpaca prompts" chat.log

# bad combinations are usage errors
set +e
"$TUNE" generate "$M" --adapter out --alpaca --raw --prompt x >/dev/null 2>err.txt; rc1=$?
"$TUNE" generate "$M" --adapter out --system "be brief" --prompt x >/dev/null 2>err2.txt; rc2=$?
set -e
[ "$rc1" = 2 ] && grep -q "exclude each other" err.txt
[ "$rc2" = 2 ] && grep -q "alpaca prompt has no system message" err2.txt
echo "generate_alpaca: ok"
