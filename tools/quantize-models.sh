#!/usr/bin/env bash
# Make other quantisations of the default model with llama.cpp's llama-quantize:
# models/SmolLM2-135M-Instruct.{Q4_K_M,Q5_K_M,Q6_K,Q8_0}.gguf.
#
# Usage: tools/quantize-models.sh [SOURCE_GGUF]      (from the repository root)
#
#   SOURCE_GGUF   default models/SmolLM2-135M-Instruct.Q4_1.gguf (`make model`)
#
# Environment:
#   LLAMACPP_BIN  folder with llama-quantize (and llama-simple for CHECK=1);
#                 default $HOME/.cache/tune-llamacpp/bin, as tools/bench/llamacpp.sh builds it
#   PYTHON        a Python with gguf and numpy (and torch + transformers for
#                 CHECK=1); default python3
#   TYPES         default "Q4_K_M Q5_K_M Q6_K Q8_0" (any llama-quantize type name)
#   FORCE=1       remake files that already exist (otherwise they are kept)
#   KEEP_F32=1    keep the F32 intermediate as models/<name>.F32.gguf
#   CHECK=1       afterwards load every output in Transformers and in llama.cpp
#                 (llama-simple), greedy 12 tokens each, and compare the texts
#
# The source is already quantised, so llama-quantize would need
# --allow-requantize (quantising 4-bit values again). Instead every tensor is
# first dequantised to F32 with gguf-py (tools/reference/gguf_dequantize.py:
# metadata, tensor order and names kept) and each type is made from that F32
# file: what llama.cpp's own Q4_K_M etc. would be if the original weights
# were those Q4_1 values. The outputs therefore carry the Q4_1 rounding plus
# their own; they are test and benchmark inputs, not better models.
#
# At the end the tensor types of each output are printed
# (tools/reference/check_quant_gguf.py). Output names: <stem>.<TYPE>.gguf next
# to the source, where <stem> is the source name without its last
# ".<type>.gguf" part.
set -euo pipefail

SRC="${1:-models/SmolLM2-135M-Instruct.Q4_1.gguf}"
BIN="${LLAMACPP_BIN:-$HOME/.cache/tune-llamacpp/bin}"
PYTHON="${PYTHON:-python3}"
TYPES="${TYPES:-Q4_K_M Q5_K_M Q6_K Q8_0}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

[ -f "$SRC" ] || { echo "quantize-models.sh: $SRC not found (make model fetches the default)" >&2; exit 1; }
[ -x "$BIN/llama-quantize" ] || {
    echo "quantize-models.sh: no llama-quantize in $BIN (build it: tools/bench/llamacpp.sh, or set LLAMACPP_BIN)" >&2
    exit 1
}
"$PYTHON" -c "import gguf, numpy" 2>/dev/null || {
    echo "quantize-models.sh: $PYTHON lacks gguf/numpy (pip install gguf numpy; or set PYTHON)" >&2
    exit 1
}

dir=$(dirname "$SRC")
base=$(basename "$SRC" .gguf)
stem="${base%.*}"           # SmolLM2-135M-Instruct.Q4_1 -> SmolLM2-135M-Instruct
[ "$stem" != "$base" ] || stem="$base"

todo=()
outs=()
for t in $TYPES; do
    out="$dir/$stem.$t.gguf"
    outs+=("$out")
    if [ -f "$out" ] && [ "${FORCE:-0}" != 1 ]; then
        echo "keeping $out (FORCE=1 remakes it)" >&2
    else
        todo+=("$t")
    fi
done

if [ "${#todo[@]}" -gt 0 ]; then
    if [ "${KEEP_F32:-0}" = 1 ]; then
        f32="$dir/$stem.F32.gguf"
    else
        tmp=$(mktemp -d "${TMPDIR:-/tmp}/quantize-models.XXXXXX")
        trap 'rm -rf "$tmp"' EXIT
        f32="$tmp/$stem.F32.gguf"
    fi
    if [ ! -f "$f32" ]; then
        "$PYTHON" "$HERE/reference/gguf_dequantize.py" "$SRC" "$f32"
    fi
    threads=$(nproc 2>/dev/null || echo 2)
    for t in "${todo[@]}"; do
        out="$dir/$stem.$t.gguf"
        log="$out.log"
        echo "llama-quantize $t -> $out" >&2
        if ! "$BIN/llama-quantize" "$f32" "$out.tmp" "$t" "$threads" >"$log" 2>&1; then
            tail -n 20 "$log" >&2
            rm -f "$out.tmp"
            exit 1
        fi
        mv "$out.tmp" "$out"
        grep -E "quant size|fallback" "$log" | sed 's/^llama_model_quantize_impl: /  /' >&2 || true
        rm -f "$log"
    done
fi

check_args=()
if [ "${CHECK:-0}" = 1 ]; then
    check_args=(--transformers)
    [ -x "$BIN/llama-simple" ] && check_args+=(--llama-simple "$BIN/llama-simple")
fi
"$PYTHON" "$HERE/reference/check_quant_gguf.py" "${check_args[@]}" "${outs[@]}"
