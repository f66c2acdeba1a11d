#!/usr/bin/env bash
# The default model (SmolLM2-135M-Instruct, Q4_1 GGUF; `make model`) answers through its
# own chat template: greedy generate and a piped chat turn. Skipped when it is absent.
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
echo "generate_smollm2: ok"
