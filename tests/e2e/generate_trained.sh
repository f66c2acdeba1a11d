#!/usr/bin/env bash
# The whole path on the tiny model: tune trains an adapter, tune generate
# answers with it (the text it learned, ended by EOS), tune merge folds it into
# the weights, and the merged folder answers the same; tune compare sets base
# and adapter side by side.
set -euo pipefail
: "${TUNE:=build/tune}"
source "$(dirname "$0")/lib.bash"
M=$SRC/tests/data/tiny/gqa
sum_records 40 >data.jsonl
{
    tiny_config "$M"
    cat <<YML
micro_batch_size: 4
gradient_accumulation_steps: 1
max_steps: 150
learning_rate: 1.0e-2
output_dir: out
YML
} >tiny.yml
"$TUNE" tiny.yml >train.log 2>&1 || { echo "training failed"; tail train.log; exit 1; }

base=$("$TUNE" generate "$M" --raw --prompt "=SUM(A5:A8)" --max_new_tokens 16 2>/dev/null)
tuned=$("$TUNE" generate "$M" --adapter out --raw --prompt "=SUM(A5:A8)" --max_new_tokens 16 2>gen.log)
case "$tuned" in " adds cells "*) ;; *) echo "the adapter did not teach the pattern: '$tuned'"; exit 1 ;; esac
[ "$tuned" != "$base" ]
grep -q "stopped at end of sequence" gen.log

"$TUNE" merge "$M" out merged --dtype f32 2>/dev/null
[ "$("$TUNE" generate merged --raw --prompt "=SUM(A5:A8)" --max_new_tokens 16 2>/dev/null)" = "$tuned" ]

printf '=SUM(A5:A8)\n=SUM(A1:A4)\n' >prompts.txt
# --raw: the adapter learnt plain completions, not chat turns (the tiny model has a template)
"$TUNE" compare "$M" "$M" --adapter-b out --prompts prompts.txt --raw --max_new_tokens 16 2>/dev/null
[ -s model_comparison_results.csv ]
grep -q '^"=SUM(A5:A8)",.*," adds cells ' model_comparison_results.csv
echo "generate_trained: ok"
