#!/usr/bin/env bash
# The default model (SmolLM2-135M-Instruct, Q4_1 GGUF; `make model`) answers through its
# own chat template: greedy generate and a piped chat turn. Merged with an adapter, the
# folder carries the GGUF's tokenizer (tokenizer.json + tokenizer_config.json with the chat
# template) and answers exactly as the GGUF with the adapter applied. Skipped when it is absent.
set -euo pipefail
: "${TUNE:=build/tune}"
M=models/SmolLM2-135M-Instruct.Q4_1.gguf
if [ ! -f "$M" ]; then
    echo "generate_smollm2: skipped ($M is absent; 'make model' fetches it)"
    exit 0
fi
out=$("$TUNE" generate "$M" --prompt "What is the capital of France?" --max_new_tokens 12 2>/dev/null)
case "$out" in *Paris*) ;; *) echo "unexpected answer: $out"; exit 1 ;; esac
out=$(printf 'What is the capital of France?\n' | "$TUNE" chat "$M" --temperature 0 --max_new_tokens 12 2>/dev/null)
case "$out" in *Paris*) ;; *) echo "unexpected chat answer: $out"; exit 1 ;; esac
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
A=tests/data/smollm2/adapter
"$TUNE" merge "$M" "$A" "$work/merged" --dtype f32 2>/dev/null
[ -s "$work/merged/tokenizer.json" ] && grep -q '"chat_template"' "$work/merged/tokenizer_config.json"
q="엑셀에서 VLOOKUP은 무엇을 하나요?"
"$TUNE" generate "$M" --adapter "$A" --prompt "$q" --max_new_tokens 24 >"$work/adapter.txt" 2>/dev/null
"$TUNE" generate "$work/merged" --prompt "$q" --max_new_tokens 24 >"$work/merged.txt" 2>/dev/null
cmp "$work/adapter.txt" "$work/merged.txt" || { echo "merged folder answers differently"; cat "$work/adapter.txt" "$work/merged.txt"; exit 1; }
echo "generate_smollm2: ok"
