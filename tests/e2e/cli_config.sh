#!/usr/bin/env bash
# CLI exit codes and messages for the config, plan and train verbs.
# Needs $TUNE (the binary). Runs in a scratch folder.
set -u
source "$(dirname "$0")/lib.bash"

mkdir -p models/smol data
cp "$SRC/tests/data/plan/smollm2-135m/config.json" models/smol/
: > data/train.jsonl
cat > good.yml <<'YML'
base_model: models/smol
datasets:
  - path: data/train.jsonl
    type: alpaca
learning_rate: 2e-4
lora_target_linear: true
lora_r: 16
output_dir: runs/run
YML
cat > bad.yml <<'YML'
base_model: models/smol
datasets:
  - path: data/train.jsonl
learning_rate: 2e-4
lora_target_linear: true
lora_alpah: 16
lr_scheduler: cosin
YML

# Verbs, flags, version.
expect 2 "$TUNE" frobnicate
has err "unknown verb 'frobnicate'"
expect 2 "$TUNE" --bogus
has err "unknown option '--bogus'"
expect 2 "$TUNE"
expect 0 "$TUNE" --help
has out "usage: tune CONFIG.yml"
expect 0 "$TUNE" --version
has out "(git "
rev=$(sed -n 's/.*(git \([0-9a-f]*\).*/\1/p' out)
if [ ${#rev} -lt 7 ]; then
    echo "FAIL: --version shows no git revision: $(cat out)"
    fails=$((fails + 1))
elif git -C "$SRC" rev-parse --git-dir >/dev/null 2>&1 && ! git -C "$SRC" cat-file -e "$rev^{commit}" 2>/dev/null; then
    echo "FAIL: --version revision $rev is not a commit of this repository"
    fails=$((fails + 1))
fi
for verb in train plan config; do
    expect 0 "$TUNE" "$verb" --help
    has out "usage: tune"
done

# config keys / resolve.
expect 0 "$TUNE" config keys
has out "lora_target_linear"
expect 0 "$TUNE" config keys --markdown
has out "| \`chat_template_date\` | string | \`\"26 Jul 2024\"\` |"
expect 2 "$TUNE" config keys --bogus
expect 2 "$TUNE" config nonsense
expect 0 "$TUNE" config resolve good.yml --lr 1e-4 --set datasets.0.type=completion
has out "learning_rate: 0.0001"
has out "# command line --lr"
has out "    type: completion"
has out "# good.yml:7:1"
cp out resolved.yml
expect 0 "$TUNE" config resolve resolved.yml
sed 's/ *#.*$//' resolved.yml > a.txt
sed 's/ *#.*$//' out > b.txt
if ! cmp -s a.txt b.txt; then
    echo "FAIL: resolving a resolved config changed values"
    diff a.txt b.txt | head -10
    fails=$((fails + 1))
fi

# Bad configs and overrides: exit 2, every error with its position.
expect 2 "$TUNE" config resolve bad.yml
has err "bad.yml:6:1: unknown key 'lora_alpah' (did you mean 'lora_alpha'?)"
has err "bad.yml:7:15: bad value 'cosin' for lr_scheduler"
expect 2 "$TUNE" plan bad.yml
has err "bad.yml:6:1:"
expect 2 "$TUNE" bad.yml
has err "bad.yml:7:15:"
expect 2 "$TUNE" plan good.yml --lora_alpah 3
has err "command line: --lora_alpah: unknown option (did you mean '--lora_alpha'?)"
expect 2 "$TUNE" plan good.yml --lr -5
has err "command line: --lr: learning_rate must be in (0, 10], got -5"
expect 2 "$TUNE" plan good.yml --trust_remote_code true
has err "trust_remote_code: not supported yet"
expect 2 "$TUNE" plan missing.yml
has err "missing.yml"
printf 'base_model: m\n\tlearning_rate: 1\n' > tab.yml
expect 2 "$TUNE" plan tab.yml
has err "tab.yml:2:1: invalid YAML"
expect 2 "$TUNE" plan good.yml --model models/none.gguf
has err "command line: --model: base_model: 'models/none.gguf' does not exist"

# plan
expect 0 "$TUNE" plan good.yml
has out "targets q_proj k_proj v_proj o_proj gate_proj up_proj down_proj"
has out "unknown until the data stage"
has out "trainable parameters: 4,884,480"
expect 0 "$TUNE" plan good.yml --json --max_steps 40 --warmup_ratio 0.1
has out "\"total_steps\":	40"
has out "\"warmup_steps\":	4"

# train: a model folder without a tokenizer stops at the data stage, before loading weights.
expect 2 "$TUNE" train good.yml --seed 5
has err "no tokenizer.json"
expect 2 "$TUNE" good.yml --output_dir runs/two
has err "no tokenizer.json"
expect 2 "$TUNE" train
has err "expected a config file"

finish cli_config
