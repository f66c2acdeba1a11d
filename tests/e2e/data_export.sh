#!/usr/bin/env bash
# tune export: round trips between alpaca, sharegpt and llama2, the product
# filters, and argument errors. Needs $TUNE (the binary). Runs in a scratch folder.
set -u
source "$(dirname "$0")/lib.bash"
same() {
    if ! cmp -s "$1" "$2"; then
        echo "FAIL: $1 and $2 differ"
        diff "$1" "$2" | head -6
        fails=$((fails + 1))
    fi
}

# export.jsonl: r1..r4 carry the product fields (r3 edited), r5 has none.
E=$SRC/tests/data/data/export.jsonl

# Round trips keep every record's text and product fields.
expect 0 "$TUNE" export --from alpaca --to sharegpt --include_edited "$E" a.sharegpt.json
has out "read 5 records, wrote 5, filtered out 0"
has a.sharegpt.json '"from":	"human"'
has a.sharegpt.json '"value":	"=AVERAGE(B:B)"'
has a.sharegpt.json '"task_type":	"PIVOT"'
expect 0 "$TUNE" export --from sharegpt --to alpaca --include_edited a.sharegpt.json back.jsonl
has out "wrote 5"
expect 0 "$TUNE" export --from alpaca --to sharegpt --include_edited back.jsonl again.sharegpt.json
same a.sharegpt.json again.sharegpt.json
has back.jsonl '"instruction":"합계 수식?","input":"","output":"=SUM(A1:A10)","id":"r1"'
expect 0 "$TUNE" export --from alpaca --to llama2 --include_edited "$E" a.llama2.txt
has a.llama2.txt "<s>[INST] Pivot by month. [/INST] Insert > PivotTable, Rows: 월. </s>"
[ "$(grep -c '^<s>\[INST\]' a.llama2.txt)" = 5 ] || { echo "FAIL: a.llama2.txt lacks 5 records"; fails=$((fails + 1)); }
expect 0 "$TUNE" export --from llama2 --to alpaca a.llama2.txt l.jsonl
expect 0 "$TUNE" export --from alpaca --to llama2 l.jsonl again.llama2.txt
same a.llama2.txt again.llama2.txt

# Filters. Edited records are left out unless asked for.
expect 0 "$TUNE" export --from alpaca --to alpaca "$E" f.jsonl
has out "read 5 records, wrote 4, filtered out 1"
lacks f.jsonl '"id":"r3"'
expect 0 "$TUNE" export --from alpaca --to alpaca --include_edited --min_quality_score 0.85 "$E" f.jsonl
has out "wrote 2, filtered out 3"
has f.jsonl '"id":"r1"'
has f.jsonl '"id":"r4"'
expect 0 "$TUNE" export --from alpaca --to alpaca --include_edited --min_rating 4 "$E" f.jsonl
has out "wrote 3, filtered out 2"
expect 0 "$TUNE" export --from alpaca --to alpaca --task_types FORMULA,PIVOT "$E" f.jsonl
has out "wrote 2, filtered out 3" # r3 is FORMULA but edited
expect 0 "$TUNE" export --from alpaca --to alpaca --include_edited --limit 2 "$E" f.jsonl
has out "wrote 2"
lacks f.jsonl '"id":"r3"'

# What does not convert, and bad arguments.
expect 0 "$TUNE" export --from llama2 --to sharegpt "$SRC/tests/data/data/llama2.txt" multi.json
expect 2 "$TUNE" export --from sharegpt --to alpaca multi.json x.jsonl
has err "multi.json"
has err "single user/assistant exchange"
expect 2 "$TUNE" export --from alpaca --to parquet "$E" x
has err "unknown format 'parquet'"
expect 2 "$TUNE" export --from alpaca "$E" x
expect 2 "$TUNE" export --from alpaca --to sharegpt --min_rating lots "$E" x
expect 2 "$TUNE" export --from alpaca --to sharegpt missing.jsonl x
printf '{"instruction": "a", "output": "b"}\nnot json\n' > bad.jsonl
expect 2 "$TUNE" export --from alpaca --to sharegpt bad.jsonl x
has err "bad.jsonl:2"
expect 0 "$TUNE" export --help
has out "usage: tune export"

finish data_export
