#!/usr/bin/env bash
# tune merge: tiny model + PEFT adapter -> Hugging Face folder; argument errors exit 2.
set -euo pipefail
: "${TUNE:=build/tune}"
D=tests/data/tiny
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$TUNE" merge --help | grep -q "usage: tune merge"
"$TUNE" merge "$D/gqa" "$D/peft_adapter" "$work/out" --dtype f32 2>"$work/log"
for f in config.json model.safetensors generation_config.json tokenizer.json tokenizer_config.json; do
    [ -s "$work/out/$f" ] || { echo "missing $f"; exit 1; }
done
[ ! -e "$work/out.tmp" ]
grep -q '"float32"' "$work/out/config.json"
# bf16 by default: 2 bytes per weight, so the file is about half the f32 one
"$TUNE" merge "$D/gqa" "$D/peft_adapter" "$work/bf16" 2>/dev/null
f32=$(stat -c %s "$work/out/model.safetensors"); bf16=$(stat -c %s "$work/bf16/model.safetensors")
[ $((bf16 * 2)) -lt $((f32 + 4096)) ] && [ $((bf16 * 2)) -gt $((f32 - 8192)) ]

expect_rc() { # expect_rc CODE ARGS...: the command exits with CODE
    local want=$1; shift
    set +e; "$TUNE" "$@" >/dev/null 2>"$work/err"; local rc=$?; set -e
    [ "$rc" -eq "$want" ] || { echo "tune $*: exit $rc, expected $want"; cat "$work/err"; exit 1; }
}
expect_rc 2 merge "$D/gqa" "$D/peft_adapter"                       # OUT missing
expect_rc 2 merge "$D/gqa" "$D/peft_adapter" "$work/x" --dtype f16  # bad dtype
expect_rc 2 merge "$D/gqa" "$D/peft_adapter" "$work/out"            # OUT exists
grep -q "already exists" "$work/err"
expect_rc 2 merge "$D/tied" "$D/peft_adapter" "$work/y"             # adapter of another shape
[ ! -e "$work/y" ] && [ ! -e "$work/y.tmp" ]
echo "generate_merge: ok"
