#!/usr/bin/env bash
# tune generate / chat / compare on the tiny model: the greedy text equals
# Transformers' (tests/data/generate/golden.json), stop strings cut the text,
# the chat template path and chat on piped stdin give it too, compare writes a proper CSV
# (with chrF columns when the prompts carry references); bad arguments exit 2.
set -euo pipefail
: "${TUNE:=build/tune}"
M=tests/data/tiny/gqa
A=tests/data/tiny/peft_adapter
G=tests/data/generate/golden.json
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The golden prompt (the tiny ChatML rendering) fed raw: no BOS is added by this tokenizer.
prompt=$(python3 -c 'import json,sys; sys.stdout.write(json.load(open(sys.argv[1]))["prompt"])' "$G"; printf x)
prompt=${prompt%x}
golden() { python3 -c 'import json,sys; sys.stdout.write(json.load(open(sys.argv[1]))["runs"][sys.argv[2]]["text"])' "$G" "$1"; }

"$TUNE" generate "$M" --raw --prompt "$prompt" --max_new_tokens 16 >"$work/base" 2>"$work/log"
golden base >"$work/want"
cmp "$work/base" "$work/want" || { echo "base text differs from Transformers"; od -c "$work/base" | head; exit 1; }
grep -q "16 new tokens" "$work/log"
"$TUNE" generate "$M" --adapter "$A" --raw --prompt "$prompt" --max_new_tokens 16 >"$work/adapter" 2>/dev/null
golden adapter >"$work/want"
cmp "$work/adapter" "$work/want"
"$TUNE" generate "$M" --raw --prompt "$prompt" --max_new_tokens 16 --repetition_penalty 1.5 >"$work/pen" 2>/dev/null
golden penalty >"$work/want"
cmp "$work/pen" "$work/want"

# --stop: the text ends right before the stop string, which is not printed
"$TUNE" generate "$M" --raw --prompt "$prompt" --max_new_tokens 16 --stop " d" >"$work/stop" 2>"$work/log"
[ "$(cat "$work/stop")" = "$(golden base | sed 's/ d.*//')" ]
grep -q "stopped at stop string" "$work/log"

# sampling is reproducible from the seed
s1=$("$TUNE" generate "$M" --raw --prompt "$prompt" --temperature 0.9 --top_k 40 --seed 7 --max_new_tokens 12 2>/dev/null | od -An -tx1)
s2=$("$TUNE" generate "$M" --raw --prompt "$prompt" --temperature 0.9 --top_k 40 --seed 7 --max_new_tokens 12 2>/dev/null | od -An -tx1)
s3=$("$TUNE" generate "$M" --raw --prompt "$prompt" --temperature 0.9 --top_k 40 --seed 8 --max_new_tokens 12 2>/dev/null | od -An -tx1)
[ "$s1" = "$s2" ] && [ "$s1" != "$s3" ]

# compare: base vs base + adapter, CSV quoting of commas, quotes and newlines-free prompts
printf '=SUM(A1:A10)\nsay "hi", please\n\n' >"$work/prompts.txt"
"$TUNE" compare "$M" "$M" --adapter-b "$A" --prompts "$work/prompts.txt" --out "$work/cmp.csv" --max_new_tokens 6 2>/dev/null
head -1 "$work/cmp.csv" | grep -q '^prompt,answer_a,answer_b,tokens_a,tokens_b,seconds_a,seconds_b'
grep -q '^"say ""hi"", please",' "$work/cmp.csv"
[ "$(grep -c ',6,6,' "$work/cmp.csv")" -eq 2 ]
printf '{"instruction": "=SUM(A1:A10)", "input": ""}\n{"prompt": "x"}\n' >"$work/prompts.jsonl"
"$TUNE" compare "$M" "$M" --prompts "$work/prompts.jsonl" --out "$work/cmp2.csv" --max_new_tokens 3 2>/dev/null
grep -q '^"=SUM(A1:A10)",' "$work/cmp2.csv"

# compare with reference answers ("output" as in an Alpaca file, or "reference"): chrF columns,
# 100 for an answer equal to its reference, empty cells for a prompt without one, a summary line.
python3 - "$G" "$work/refs.jsonl" <<'PY'
import json, sys
g = json.load(open(sys.argv[1]))
with open(sys.argv[2], "w") as f:
    f.write(json.dumps({"prompt": g["prompt"], "output": g["runs"]["base"]["text"]}) + "\n")
    f.write(json.dumps({"prompt": "x"}) + "\n")
    f.write(json.dumps({"prompt": g["prompt"], "reference": "unrelated words"}) + "\n")
PY
"$TUNE" compare "$M" "$M" --adapter-b "$A" --raw --prompts "$work/refs.jsonl" --out "$work/cmp3.csv" --max_new_tokens 16 2>"$work/log"
python3 - "$work/cmp3.csv" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1], newline="")))
assert list(rows[0])[-5:] == ["reference", "chrf_a", "chrf_b", "bleu_a", "bleu_b"], list(rows[0])
assert float(rows[0]["chrf_a"]) == 100.0 and float(rows[0]["chrf_b"]) < 100.0, rows[0]
assert float(rows[0]["bleu_a"]) > 99.99 and float(rows[0]["bleu_b"]) < 100.0, rows[0]
assert rows[1]["reference"] == rows[1]["chrf_a"] == rows[1]["chrf_b"] == rows[1]["bleu_b"] == "", rows[1]
assert rows[2]["reference"] == "unrelated words" and float(rows[2]["chrf_a"]) < 30, rows[2]
PY
grep -q "chrF against the 2 references: A [0-9.]*, B [0-9.]*; closer: A on 2, B on 0, tied on 0" "$work/log"
grep -q "tune compare: A: chrF [0-9.]*, BLEU [0-9.]*" "$work/log"

# The same model with the common ChatML template source (one tune recognises; it renders
# exactly as the tiny model's own): the default prompt path gives Transformers' text too.
cp -r "$M" "$work/chatml"
python3 - "$work/chatml/tokenizer_config.json" <<'PY'
import json, sys
p = sys.argv[1]
c = json.load(open(p))
c["chat_template"] = ("{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}"
                      "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
                      "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
json.dump(c, open(p, "w"))
PY
question=$(python3 -c 'import json,sys; sys.stdout.write(json.load(open(sys.argv[1]))["messages"][0]["content"])' "$G")
"$TUNE" generate "$work/chatml" --prompt "$question" --max_new_tokens 16 >"$work/tpl" 2>/dev/null
golden base >"$work/want"
cmp "$work/tpl" "$work/want"

# --chat_template picks the built-in renderer for a model whose own is not recognised
"$TUNE" generate "$M" --chat_template chatml --prompt "$question" --max_new_tokens 16 >"$work/tpl2" 2>/dev/null
cmp "$work/tpl2" "$work/want"

# chat on piped stdin: the first reply is Transformers' greedy text; the second turn passes
# the 64 positions and is dropped with a message; after /reset the same question gets the
# same reply (the cache prefix is reused and rewound correctly); /exit ends.
printf '%s\n%s\n/reset\n%s\n/exit\nnot read\n' "$question" "$question" "$question" |
    "$TUNE" chat "$work/chatml" --temperature 0 --repetition_penalty 1 --max_new_tokens 16 >"$work/chat" 2>"$work/chatlog"
{ golden base; echo; echo; golden base; echo; } >"$work/want"
cmp "$work/chat" "$work/want" || { echo "chat transcript differs"; cat "$work/chat" "$work/chatlog"; exit 1; }
grep -q "max_position_embeddings" "$work/chatlog"
grep -q "new conversation" "$work/chatlog"

expect_rc() { # expect_rc CODE ARGS...: the command exits with CODE
    local want=$1; shift
    set +e; "$TUNE" "$@" >/dev/null 2>"$work/err" </dev/null; local rc=$?; set -e
    [ "$rc" -eq "$want" ] || { echo "tune $*: exit $rc, expected $want"; cat "$work/err"; exit 1; }
}
expect_rc 0 generate --help
expect_rc 0 chat --help
expect_rc 0 compare --help
expect_rc 2 generate "$M"                                        # no --prompt
expect_rc 2 generate "$M" --prompt hi --top_p 0                  # bad value
expect_rc 2 generate "$M" --prompt hi --temperature warm
expect_rc 2 generate "$M" --prompt hi --bogus
expect_rc 0 generate "$M" --prompt hi --max_new_tokens 2         # the tiny model's own template runs as Jinja
expect_rc 2 generate "$M" --raw --prompt "$prompt" --max_new_tokens 40  # passes max_position_embeddings (64)
grep -q "max_position_embeddings" "$work/err"
expect_rc 2 generate tests/data/nonexistent --raw --prompt hi
expect_rc 2 compare "$M" --prompts "$work/prompts.txt"
# A model without a chat template: generate wants --raw, chat refuses.
cp -r "$M" "$work/untemplated"
python3 -c 'import json,sys; p=sys.argv[1]; c=json.load(open(p)); del c["chat_template"]; json.dump(c, open(p, "w"))' \
    "$work/untemplated/tokenizer_config.json"
expect_rc 2 generate "$work/untemplated" --prompt hi
grep -q -- "--raw" "$work/err"
expect_rc 2 chat "$work/untemplated"
grep -q -- "--chat_template" "$work/err"
expect_rc 2 generate "$M" --chat_template nope --prompt hi
printf '{"text": 1}\n' >"$work/bad.jsonl"
expect_rc 2 compare "$M" "$M" --prompts "$work/bad.jsonl" --out "$work/x.csv"
grep -q "bad.jsonl:1" "$work/err"
printf '{"prompt": "x"}\n{"prompt": "y", "output": 5}\n' >"$work/bad.jsonl"
expect_rc 2 compare "$M" "$M" --prompts "$work/bad.jsonl" --out "$work/x.csv"
grep -q 'bad.jsonl:2.*"output" must be a string' "$work/err"
[ ! -e "$work/x.csv" ]
echo "generate_cli: ok"
