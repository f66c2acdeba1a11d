#!/usr/bin/env bash
# Training with added tokens on the tiny model: `tokens:` grow the vocabulary,
# embed_tokens and lm_head train as PEFT modules_to_save, the extended
# tokenizer.json (+ tokenizer_config.json) lands next to the adapter; eval, generate and
# merge use such adapters with that tokenizer; new tokens without lora_modules_to_save
# are a config error. Needs $TUNE. Runs in a scratch folder.
set -u
source "$(dirname "$0")/lib.bash"
fail() {
    echo "FAIL: $*"
    fails=$((fails + 1))
}

for i in $(seq 0 11); do
    printf '{"text": "엑셀 시트 %d: =SUM(A%d:A%d)"}\n' "$i" "$i" $((i + 3))
done > data.jsonl
cat > tiny.yml <<YML
base_model: $SRC/tests/data/tiny/gqa
datasets:
  - path: data.jsonl
    type: completion
adapter: lora
lora_r: 4
lora_alpha: 8
lora_target_modules: [q_proj, v_proj]
lora_modules_to_save: [embed_tokens, lm_head]
tokens: [엑셀, 시트]
sequence_len: 64
micro_batch_size: 2
max_steps: 4
learning_rate: 1.0e-3
logging_steps: 1
output_dir: runs/a
seed: 3
YML

if ! "$TUNE" train tiny.yml >out.txt 2>err.txt; then
    fail "training exited $?"
    sed 's/^/  | /' err.txt | tail -5
fi
for f in adapter_model.safetensors adapter_config.json tokenizer.json tokenizer_config.json; do
    [ -e "runs/a/$f" ] || fail "runs/a/$f missing"
done
V=$(grep -o '"vocab_size": *[0-9]*' "$SRC/tests/data/tiny/gqa/config.json" | grep -o '[0-9]*$')
# the adapter holds both grown matrices, (V + 2) x hidden, under PEFT's names
for name in base_model.model.model.embed_tokens.weight base_model.model.lm_head.weight; do
    grep -aq "\"$name\":{\"dtype\":\"F32\",\"shape\":\[$((V + 2)),64\]" runs/a/adapter_model.safetensors ||
        fail "$name (V+2 rows) not in the adapter"
done
tr -d ' \n' <runs/a/adapter_config.json | grep -q '"modules_to_save":\["embed_tokens","lm_head"\]' ||
    fail "adapter_config.json: modules_to_save"
grep -q '"content": *"엑셀"' runs/a/tokenizer.json || fail "tokenizer.json lacks 엑셀"
grep -q "\"id\": *$((V + 1))" runs/a/tokenizer.json || fail "tokenizer.json lacks id $((V + 1))"

# the plan shows the saved modules at the grown vocabulary
"$TUNE" plan tiny.yml >plan.txt 2>&1 || fail "tune plan exited $?"
grep -q "modules_to_save embed_tokens lm_head (vocabulary $((V + 2)))" plan.txt || fail "plan: modules_to_save line"

# a run resumed from a checkpoint ends with the same adapter (saved modules and their optimizer state)
sed -e 's#runs/a#runs/r#' tiny.yml >resume.yml
echo "save_steps: 2" >>resume.yml
"$TUNE" train resume.yml >out.txt 2>err.txt || fail "run with checkpoints exited $?"
rm -f runs/r/adapter_model.safetensors runs/r/checkpoint-4/adapter_model.safetensors
rm -rf runs/r/checkpoint-4
"$TUNE" train resume.yml --resume_from_checkpoint runs/r/checkpoint-2 >out.txt 2>err.txt ||
    fail "resume exited $?"
cmp -s runs/a/adapter_model.safetensors runs/r/adapter_model.safetensors ||
    fail "the resumed run's adapter differs from the uninterrupted one"

# tune eval reads such an adapter with its own tokenizer: the added tokens are single ids
# (fewer tokens than the base tokenizer makes of the same text) and the trained model
# scores the training text better than the base
"$TUNE" eval "$SRC/tests/data/tiny/gqa" --data data.jsonl --type completion --json >base.json 2>err.txt ||
    fail "eval of the base exited $?"
"$TUNE" eval "$SRC/tests/data/tiny/gqa" --data data.jsonl --type completion --adapter runs/a --json >tuned.json 2>err.txt ||
    fail "eval with the modules_to_save adapter exited $?"
python3 - base.json tuned.json <<'PY' || fail "eval with the adapter: not fewer tokens and a lower loss"
import json, sys
base, tuned = (json.load(open(p)) for p in sys.argv[1:])
assert tuned["tokens"] < base["tokens"], (base, tuned)
assert tuned["loss"] < base["loss"], (base, tuned)
PY

# tune merge writes the grown, untied model with the adapter's tokenizer, and the merged
# folder generates exactly what the base with the adapter does
"$TUNE" merge "$SRC/tests/data/tiny/gqa" runs/a merged --dtype f32 >out.txt 2>err.txt || fail "merge exited $?"
tr -d ' \n\t' <merged/config.json | grep -q "\"vocab_size\":$((V + 2))" || fail "merged config.json: vocab_size"
tr -d ' \n\t' <merged/config.json | grep -q '"tie_word_embeddings":false' || fail "merged config.json: tie_word_embeddings"
grep -q '"content": *"엑셀"' merged/tokenizer.json || fail "the merged tokenizer lacks 엑셀"
"$TUNE" generate "$SRC/tests/data/tiny/gqa" --adapter runs/a --raw --prompt "엑셀 시트" --max_new_tokens 6 >gen_adapter.txt 2>err.txt ||
    fail "generate with the adapter exited $?"
"$TUNE" generate merged --raw --prompt "엑셀 시트" --max_new_tokens 6 >gen_merged.txt 2>err.txt ||
    fail "generate with the merged folder exited $?"
cmp -s gen_adapter.txt gen_merged.txt || fail "the merged folder generates differently from base + adapter"

# new tokens need trained embeddings
sed -e '/lora_modules_to_save/d' -e 's#runs/a#runs/b#' tiny.yml >bad.yml
"$TUNE" train bad.yml >out.txt 2>err.txt
rc=$?
[ "$rc" = 2 ] || fail "without lora_modules_to_save: exit $rc, want 2"
grep -q "lora_modules_to_save" err.txt || fail "the error does not name lora_modules_to_save"

[ "$fails" = 0 ] && echo "train_vocab: ok"
exit $((fails > 0))
