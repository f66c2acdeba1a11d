#!/usr/bin/env bash
# tune eval --generate on the tiny model: the chrF, BLEU and Excel accuracy it
# reports equal tune compare's for model A on the same file (with the PEFT
# adapter in the chat template, and the base model with --raw), per answer
# and in total, in the summary, --json and eval_summary.csv; bad arguments
# exit 2. Needs $TUNE (the binary) and python3.
set -u
: "${TUNE:=build/tune}"
source "$(dirname "$0")/lib.bash"
M=$SRC/tests/data/tiny/gqa
A=$SRC/tests/data/tiny/peft_adapter
N=12 # new tokens: prompt and answer stay within the tiny model's 64 positions

# Alpaca records whose references call functions and write formulas (one with an input).
for i in $(seq 0 5); do
    printf '{"instruction": "Add cells %d to %d", "input": "", "output": "Use =SUM(A%d:A%d) to add them."}\n' \
        "$i" $((i + 3)) "$i" $((i + 3))
done >a.jsonl
printf '{"instruction": "Average B1 to B9", "input": "sheet 2", "output": "=AVERAGE(B1:B9)"}\n' >>a.jsonl

# scores_line FILE: compare's model A line, or eval's scores line, without the prefix and the counts after it.
scores_line() { sed -n -e 's/^tune compare: A: //p' -e 's/^scores  *\(.*\) ([0-9]* answers, .*/\1/p' "$1"; }
# same_as_compare NAME: eval's figures in NAME.txt, NAME.json, NAME/eval_summary.csv and NAME.err
# against compare's in NAME.cmp (stderr) and NAME.csv.
same_as_compare() {
    local want got
    want=$(scores_line "$1.cmp")
    got=$(scores_line "$1.txt")
    [ -n "$want" ] || { echo "FAIL: $1: compare printed no scores"; fails=$((fails + 1)); }
    [ "$got" = "$want" ] || { echo "FAIL: $1: eval '$got', compare '$want'"; fails=$((fails + 1)); }
    python3 - "$1" <<'PY' || fails=$((fails + 1))
import csv, json, re, sys
name = sys.argv[1]
fail = []
js = json.loads(open(name + ".json").read())
(row,) = csv.DictReader(open(name + "/eval_summary.csv"))
cmp = open(name + ".cmp").read()
m = re.search(r"^tune compare: A: chrF ([0-9.]+), BLEU ([0-9.]+)", cmp, re.M)
if js["scored"] != 7 or int(row["scored"]) != 7:
    fail.append("scored %s / %s, expected the 7 records with a reference" % (js["scored"], row["scored"]))
for k in ("chrf", "bleu"):
    if "%.2f" % js[k] != m.group(1 if k == "chrf" else 2):
        fail.append("%s %.4f vs compare's %s" % (k, js[k], m.group(0)))
for k in ("chrf", "bleu", "excel_functions_named", "excel_formulas_matched"):
    if k not in js or float(row[k]) != js[k]:
        fail.append("%s: csv %r, json %r" % (k, row.get(k), js.get(k)))
# Each answer: eval's progress lines and compare's chrf_a column (rows with a reference).
per_eval = re.findall(r"^tune eval: \d+/7 .* chrF ([0-9.]+)$", open(name + ".err").read(), re.M)
per_cmp = [r["chrf_a"] for r in csv.DictReader(open(name + ".csv")) if r["reference"]]
if per_eval != per_cmp:
    fail.append("per answer chrF: eval %s, compare %s" % (per_eval, per_cmp))
for f in fail:
    print("FAIL: %s: %s" % (name, f))
sys.exit(1 if fail else 0)
PY
}

# The adapter (no config_resolved.yml next to it: the chat template), as compare's model A.
expect 0 "$TUNE" compare "$M" "$M" --adapter-a "$A" --prompts a.jsonl --max_new_tokens $N --out lora.csv
cp err lora.cmp
eval_args=("$M" --data a.jsonl --sequence_len 256 --adapter "$A" --generate --max_new_tokens "$N")
expect 0 "$TUNE" eval "${eval_args[@]}" --json --out lora
cp out lora.json
cp err lora.err
expect 0 "$TUNE" eval "${eval_args[@]}" --out lora_txt
cp out lora.txt
same_as_compare lora
has lora.txt "loss        "

# The base model with --raw, as compare's model A (B has the adapter).
expect 0 "$TUNE" compare "$M" "$M" --adapter-b "$A" --raw --prompts a.jsonl --max_new_tokens $N --out raw.csv
cp err raw.cmp
expect 0 "$TUNE" eval "$M" --data a.jsonl --sequence_len 256 --generate --raw --max_new_tokens $N --json --out raw
cp out raw.json
cp err raw.err
expect 0 "$TUNE" eval "$M" --data a.jsonl --sequence_len 256 --generate --raw --max_new_tokens $N --out raw_txt
cp out raw.txt
same_as_compare raw
[ "$(scores_line raw.txt)" != "$(scores_line lora.txt)" ] || { echo "FAIL: base and adapter score alike"; fails=$((fails + 1)); }

# Without --generate the score cells are empty and the line has no scores.
expect 0 "$TUNE" eval "$M" --data a.jsonl --sequence_len 256 --json --out plain
lacks out '"chrf"'
head -1 plain/eval_summary.csv >header
has header 'model,adapter,data,examples,tokens,loss,perplexity,scored,chrf,bleu,excel_functions_named,excel_formulas_matched'
tail -1 plain/eval_summary.csv | grep -q ',,,,,$' || { echo "FAIL: score cells not empty"; fails=$((fails + 1)); }

# Bad arguments and files --generate cannot score: exit 2.
printf '{"instruction": "Add A1 to A4", "input": ""}\n' >noref.jsonl
printf '{"conversations": [{"from": "human", "value": "hi"}]}\n' >sharegpt.jsonl
for args in "--max_new_tokens 4" "--raw" "--alpaca" "--generate --max_new_tokens" "--generate --max_new_tokens -1" \
    "--generate --max_new_tokens x" "--generate --raw --alpaca" "--generate --alpaca --chat_template chatml"; do
    # shellcheck disable=SC2086
    expect 2 "$TUNE" eval "$M" --data a.jsonl --sequence_len 256 $args
done
expect 2 "$TUNE" eval "$M" --data noref.jsonl --generate
has err "no record has a reference"
expect 2 "$TUNE" eval "$M" --data sharegpt.jsonl --type sharegpt --generate
has err 'sharegpt.jsonl:1'
expect 2 "$TUNE" eval "$M" --data missing.jsonl --generate
expect 2 "$TUNE" eval x.yml --generate
has err "--generate takes MODEL --data FILE"
"$TUNE" eval --help | grep -q -- '--generate' || { echo "FAIL: --help lacks --generate"; fails=$((fails + 1)); }

finish eval_generate
