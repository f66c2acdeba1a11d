#!/usr/bin/env bash
# Encode throughput, single-threaded: tune's tokenizer against Hugging Face
# `tokenizers` on the same corpus (tests/data/tokenizer/corpus.jsonl).
# Needs the Python package tokenizers (PYTHON names the interpreter).
# usage: tools/bench/tokenizer_bench.sh [MODEL_DIR ...]   (run from the repository root after `make`)
set -euo pipefail
PYTHON=${PYTHON:-python3}
PASSES=${PASSES:-5}
CORPUS=tests/data/tokenizer/corpus.jsonl
BIN=build/tokenizer_bench
[ -f build/libtune.a ] || { echo "build first: make" >&2; exit 2; }
CFLAGS_PKG=$(pkg-config --cflags libcjson libpcre2-8 libutf8proc)
LIBS_PKG=$(pkg-config --libs libcjson libpcre2-8 libutf8proc yaml-0.1 openblas)
cc -O2 -std=c11 -D_GNU_SOURCE -Iinclude $CFLAGS_PKG -o "$BIN" tools/bench/tokenizer_bench.c build/libtune.a $LIBS_PKG -fopenmp -lm
if [ $# -eq 0 ]; then set -- tests/data/tokenizer/smollm2 tests/data/tokenizer/llama3 tests/data/tokenizer/sp_norm; fi
printf '%-34s %10s %12s %14s %8s\n' model "tune MB/s" "HF MB/s" "HF batch MB/s" ratio
for model in "$@"; do
    read -r _ tune_mbs tokens bytes _ < <("$BIN" "$model" "$CORPUS" "$PASSES")
    read -r hf_mbs hf_batch hf_tokens < <(RAYON_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false "$PYTHON" - "$model" "$CORPUS" "$PASSES" <<'PY'
import json, sys, time
from tokenizers import Tokenizer
model, corpus, passes = sys.argv[1], sys.argv[2], int(sys.argv[3])
tok = Tokenizer.from_file(model + "/tokenizer.json")
lines = [json.loads(l) for l in open(corpus, encoding="utf-8")]
nbytes = sum(len(s.encode("utf-8")) for s in lines)
t0 = time.perf_counter()
for _ in range(passes):
    for s in lines:
        n = len(tok.encode(s).ids)
dt = time.perf_counter() - t0
t0 = time.perf_counter()
for _ in range(passes):
    enc = tok.encode_batch(lines)
db = time.perf_counter() - t0
print("%.2f %.2f %d" % (nbytes * passes / dt / 1e6, nbytes * passes / db / 1e6, sum(len(e.ids) for e in enc)))
PY
)
    [ "$tokens" = "$hf_tokens" ] || echo "warning: token counts differ ($tokens vs $hf_tokens)" >&2
    ratio=$(awk -v a="$tune_mbs" -v b="$hf_batch" 'BEGIN { printf "%.2fx", a / b }')
    printf '%-34s %10s %12s %14s %8s\n' "$(basename "$model")" "$tune_mbs" "$hf_mbs" "$hf_batch" "$ratio"
done
echo "corpus: $(wc -l < "$CORPUS") strings, $bytes bytes, $PASSES passes; ratio = tune / HF encode_batch (1 thread)"
