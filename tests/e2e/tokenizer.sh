#!/usr/bin/env bash
# tune tokenize / tune tokens end to end ($TUNE is the binary).
set -euo pipefail
D=tests/data/tokenizer
TUNE=$(cd "$(dirname "$TUNE")" && pwd)/$(basename "$TUNE")
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tune-e2e-tok-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

# Readable form: ids as HF gives them (with <|begin_of_text|> from the template).
out=$("$TUNE" tokenize "$D/llama3" "엑셀 =SUM(A1:A3)")
echo "$out" | grep -q '^tokens:  \["<|begin_of_text|>", ' || fail "tokenize: no BOS in: $out"
echo "$out" | grep -q '^decoded: "<|begin_of_text|>엑셀 =SUM(A1:A3)"$' || fail "tokenize: round trip: $out"
out=$("$TUNE" tokenize "$D/llama3/tokenizer.json" "엑셀" --no-special)
echo "$out" | grep -q 'begin_of_text' && fail "--no-special still adds BOS"

# JSONL: the first corpus lines give the golden ids.
head -n 50 "$D/corpus.jsonl" | "$TUNE" tokenize "$D/sp_norm" --jsonl > "$tmp/out.jsonl"
[ "$(wc -l < "$tmp/out.jsonl")" -eq 50 ] || fail "jsonl: expected 50 lines"
paste -d'\t' <(sed 's/.*"ids": \(\[[^]]*\]\).*/\1/; s/ //g' "$tmp/out.jsonl") \
             <(head -n 50 "$D/sp_norm/golden.jsonl" | sed 's/^{"ids":\(\[[^]]*\]\).*/\1/') |
    awk -F'\t' '$1 != $2 { print "line " NR ": " $1 " vs " $2; bad = 1 } END { exit bad }' || fail "jsonl ids differ from golden"
printf 'not json\n' | "$TUNE" tokenize "$D/sp_norm" --jsonl > /dev/null 2>&1 && fail "bad JSONL line accepted"

# tokens: table and CSV.
(cd "$tmp" && "$TUNE" tokens "$OLDPWD/$D/smollm2" > table.txt)
grep -q '<|im_start|>.*bos' "$tmp/table.txt" || fail "tokens: <|im_start|> not marked bos"
grep -q '^2,"<|im_end|>",yes,no,no,no,no,eos+pad,yes$' "$tmp/special_tokens_analysis.csv" || fail "tokens: csv row for <|im_end|>"
"$TUNE" tokens "$D/llama3" --out "$tmp/sub" > /dev/null
[ -f "$tmp/sub/special_tokens_analysis.csv" ] || fail "tokens --out"

# Arguments.
"$TUNE" tokenize --help > /dev/null || fail "tokenize --help"
"$TUNE" tokens --help > /dev/null || fail "tokens --help"
set +e
"$TUNE" tokenize "$D/llama3" > /dev/null 2>&1; [ $? -eq 2 ] || fail "tokenize without text: exit 2"
"$TUNE" tokenize "$D/llama3" x --bogus > /dev/null 2>&1; [ $? -eq 2 ] || fail "unknown option: exit 2"
"$TUNE" tokens /nonexistent > /dev/null 2>&1; [ $? -eq 2 ] || fail "missing model: exit 2"
echo "tokenizer e2e: ok"
