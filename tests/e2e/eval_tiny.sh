#!/usr/bin/env bash
# tune eval on the tiny model: an alpaca file with and without a PEFT adapter
# (different losses, parseable --json, eval_summary.csv), a config after a
# short training run (the same figure as the trainer's final eval_loss), and
# bad arguments (exit 2). Needs $TUNE (the binary). Runs in a scratch folder.
set -u
TUNE=$(cd "$(dirname "$TUNE")" && pwd)/$(basename "$TUNE")
SRC=$(pwd)
MODEL=$SRC/tests/data/tiny/gqa
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
fails=0
fail() {
    echo "FAIL: $*"
    fails=$((fails + 1))
}

# json_num KEY FILE: the number after "KEY": on the file's first line.
json_num() { sed -n "1s/.*\"$1\": *\([-0-9.eE+]*\).*/\1/p" "$2"; }

# Alpaca's prompt is about 110 tiny-tokenizer tokens, more than the model's
# context of 64 (the default sequence_len here): the alpaca runs set 256.
for i in $(seq 0 11); do
    printf '{"instruction": "Add cells %d to %d", "input": "", "output": "=SUM(A%d:A%d)"}\n' \
        "$i" $((i + 3)) "$i" $((i + 3))
done > a.jsonl

"$TUNE" eval "$MODEL" --data a.jsonl --sequence_len 256 --json --out base >base.json 2>err.txt || fail "eval (base) exited $?"
"$TUNE" eval "$MODEL" --data a.jsonl --sequence_len 256 --adapter "$SRC/tests/data/tiny/peft_adapter" --json --out lora \
    >lora.json 2>>err.txt || fail "eval (adapter) exited $?"
[ "$(wc -l <base.json)" -eq 1 ] || fail "--json printed more than one line"
if ! grep -Eq '^\{"loss": [0-9.eE+-]+, "perplexity": [0-9.eE+-]+, "tokens": [0-9]+, "examples": 12\}$' base.json; then
    fail "unexpected --json line: $(cat base.json)"
fi
lb=$(json_num loss base.json)
ll=$(json_num loss lora.json)
[ -n "$lb" ] && [ -n "$ll" ] && [ "$lb" != "$ll" ] || fail "adapter did not change the loss ($lb vs $ll)"
awk -v l="$lb" -v p="$(json_num perplexity base.json)" 'BEGIN { exit !(p > 0 && (p - exp(l)) ^ 2 < 1e-12 * p * p) }' ||
    fail "perplexity is not exp(loss)"
for d in base lora; do
    [ -f $d/eval_summary.csv ] || fail "$d/eval_summary.csv missing"
done
head -1 base/eval_summary.csv | grep -q '^model,adapter,data,examples,tokens,loss,perplexity,' || fail "csv header"
grep -q 'peft_adapter' lora/eval_summary.csv || fail "csv does not name the adapter"
# A record with a long answer is truncated (keeping trained tokens) and counted.
{
    cat a.jsonl
    printf '{"instruction": "List cells", "input": "", "output": "%s"}\n' "$(seq -s ' ' 1 60)"
} > long.jsonl
"$TUNE" eval "$MODEL" --data long.jsonl --sequence_len 160 --out short >short.txt 2>short.err ||
    fail "eval --sequence_len 160 exited $?"
grep -q '^tune: 1 examples longer than sequence_len 160 were truncated' short.err || fail "truncation not reported"

# A short training run: eval of its config with its adapter is its final eval_loss.
for i in $(seq 0 39); do
    printf '{"text": "=SUM(A%d:A%d) adds cells %d to %d."}\n' "$i" $((i + 3)) "$i" $((i + 3))
done > data.jsonl
# Without --sequence_len the MODEL form stays within the model's context (64).
"$TUNE" eval "$MODEL" --data data.jsonl --type completion --json --out comp >comp.json 2>comp.err ||
    fail "eval --type completion exited $?"
grep -q 'context length' comp.err && fail "default sequence_len exceeds the model's context"
grep -q '"examples": 40}' comp.json || fail "completion eval: $(cat comp.json)"
cat > tiny.yml <<YML
base_model: $MODEL
datasets:
  - path: data.jsonl
    type: completion
val_set_size: 8
adapter: lora
lora_r: 4
lora_alpha: 8
lora_target_linear: true
sequence_len: 64
micro_batch_size: 2
eval_batch_size: 3
max_steps: 6
learning_rate: 1.0e-3
logging_steps: 2
eval_steps: 3
output_dir: runs/a
seed: 7
YML
if "$TUNE" train tiny.yml >train.out 2>train.err; then
    want=$(grep '"eval_loss"' runs/a/training_log.jsonl | tail -1 | sed 's/.*"eval_loss": *\([-0-9.eE+]*\).*/\1/')
    "$TUNE" eval tiny.yml --adapter runs/a --json --out runs/a >cfg.json 2>>err.txt || fail "eval of the config exited $?"
    got=$(json_num loss cfg.json)
    echo "trainer final eval_loss $want, tune eval $got"
    awk -v a="$want" -v b="$got" 'BEGIN { d = a - b; exit !(a != "" && b != "" && d * d <= 1e-24 * a * a) }' ||
        fail "eval loss $got differs from the trainer's final eval_loss $want"
    "$TUNE" eval tiny.yml --json --out base_cfg >base_cfg.json 2>>err.txt || fail "eval of the config (base) exited $?"
    [ "$(json_num loss base_cfg.json)" != "$got" ] || fail "base and trained adapter give the same loss"
else
    fail "training exited $?"
    tail -5 train.err
fi

# Bad arguments: exit 2.
for args in "" "$MODEL" "$MODEL --data" "$MODEL --data a.jsonl --bogus" "$MODEL --data a.jsonl --type nope" \
    "$MODEL --data missing.jsonl" "tiny.yml --adapter" "tiny.yml --no_such_key 1"; do
    # shellcheck disable=SC2086
    "$TUNE" eval $args >/dev/null 2>&1
    rc=$?
    [ $rc -eq 2 ] || fail "tune eval $args exited $rc, expected 2"
done
"$TUNE" eval --help | grep -q 'usage: tune eval' || fail "--help"

if [ $fails -ne 0 ]; then
    sed 's/^/  | /' err.txt | tail -5
    exit 1
fi
echo "eval_tiny: ok"
