#!/usr/bin/env bash
# Every early stop says what happened and what to change: all examples
# longer than sequence_len (how many, the shortest and longest, the
# sequence_len that keeps them, excess_length_strategy), empty data files, an
# empty evaluation set, a validation split that takes everything, an
# unreadable record; and a config nested 100,000 deep is refused naming the
# depth limit. Needs $TUNE (the binary). Runs in a scratch folder.
set -u
source "$(dirname "$0")/lib.bash"

# Three alpaca records of 180-182 tokens with the tiny tokenizer (the
# prompt's own text is most of it).
for i in 1 2 3; do
    printf '{"instruction": "Explain the SUM function of Excel in some detail, number %d%s", "input": "", "output": "It adds numbers."}\n' \
        "$i" "$(printf '!%.0s' $(seq 1 "$i"))"
done > long.jsonl
: > empty.jsonl
printf '{"instruction": "x", "output": "y"}\n{bad json\n' > bad.jsonl
cat > a.yml <<YML
base_model: $SRC/tests/data/tiny/gqa
datasets:
  - path: long.jsonl
    type: alpaca
lora_target_linear: true
sequence_len: 16
learning_rate: 1.0e-3
output_dir: run
YML

expect 2 "$TUNE" train a.yml
has err "the datasets gave no training examples: 3 examples are longer than sequence_len 16 (the shortest "
has err "and excess_length_strategy: drop drops them: set sequence_len to "
has err "to keep them all ("
has err "keeps the shortest), or excess_length_strategy: truncate to cut them to 16 tokens"
# The numbers are the examples' own: sequence_len set to the longest trains;
# `tune plan` says the same where its counts would be.
longest=$(sed -n 's/.*set sequence_len to \([0-9]*\) to keep them all.*/\1/p' err)
shortest=$(sed -n 's/.*(\([0-9]*\) keeps the shortest).*/\1/p' err)
expect 0 "$TUNE" train a.yml --sequence_len "$longest" --max_steps 1
[ "$shortest" -lt "$longest" ] || { echo "FAIL: shortest $shortest, longest $longest"; fails=$((fails + 1)); }
expect 0 "$TUNE" plan a.yml
has out "the datasets gave no training examples: 3 examples are longer than sequence_len 16"

expect 2 "$TUNE" train a.yml --set datasets.0.path=empty.jsonl
has err "the datasets gave no training examples: the files have no records"

expect 2 "$TUNE" train a.yml --sequence_len 512 --set 'test_datasets=[{path: empty.jsonl, type: alpaca}]'
has err "the test_datasets gave no evaluation examples: the files have no records"

expect 2 "$TUNE" train a.yml --sequence_len 512 --val_set_size 3
has err "val_set_size 3 takes 3 of 3 examples and leaves none to train on: set it below 3 (a count) or below 1"

expect 2 "$TUNE" train a.yml --sequence_len 512 --set datasets.0.path=bad.jsonl
has err "bad.jsonl:2: invalid JSON in record; fix or remove the record, or set skip_bad_records: true"

expect 2 "$TUNE" train a.yml --excess_length_strategy raise
has err "more than sequence_len 16 (excess_length_strategy: raise): set sequence_len to "

# 100,000 levels of nesting: refused at the limit, naming it (the loader
# would take time quadratic in the depth).
{
    printf 'base_model: '
    head -c 100000 /dev/zero | tr '\0' '['
    echo
} > deep.yml
expect 2 "$TUNE" plan deep.yml
has err "deep.yml:1:76: the YAML nests deeper than 64 levels, tune's limit for a config"

finish early_stops
