# Shared by the e2e scripts (sourced, not run: the Makefile runs *.sh only).
# Makes $TUNE absolute, keeps the repository root in $SRC, works in a scratch
# folder removed on exit, and counts failures for `finish`.
TUNE=$(cd "$(dirname "$TUNE")" && pwd)/$(basename "$TUNE")
SRC=$(pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work" || exit 1
fails=0

# sum_records N: N short completion records (the tiny models have 64 positions).
sum_records() {
    for i in $(seq 0 $(($1 - 1))); do
        printf '{"text": "=SUM(A%d:A%d) adds cells %d to %d."}\n' "$i" $((i + 3)) "$i" $((i + 3))
    done
}
# tiny_config BASE: the head of a LoRA run on a tiny model (completion data
# in data.jsonl, r 4 on every linear layer, 64 positions); callers append
# their own keys.
tiny_config() {
    cat <<YML
base_model: $1
datasets:
  - path: data.jsonl
    type: completion
adapter: lora
lora_r: 4
lora_alpha: 8
lora_target_linear: true
sequence_len: 64
YML
}

# expect CODE CMD... : runs CMD, checks its exit status, keeps stdout/stderr in out/err.
expect() {
    local want=$1
    shift
    "$@" >out 2>err
    local got=$?
    if [ "$got" != "$want" ]; then
        echo "FAIL: '$*' exited $got, expected $want"
        sed 's/^/  stderr: /' err | head -5
        fails=$((fails + 1))
    fi
}
# has FILE TEXT: FILE contains TEXT (fixed string).
has() {
    if ! grep -qF -- "$2" "$1"; then
        echo "FAIL: $1 lacks '$2'"
        sed 's/^/  | /' "$1" | head -8
        fails=$((fails + 1))
    fi
}
# lacks FILE TEXT: FILE does not contain TEXT.
lacks() {
    if grep -qF -- "$2" "$1"; then
        echo "FAIL: $1 has '$2'"
        fails=$((fails + 1))
    fi
}
# finish NAME: the closing line, and exit 1 when anything failed.
finish() {
    if [ "$fails" -ne 0 ]; then
        echo "$1: $fails failure(s)"
        exit 1
    fi
    echo "$1: all passed"
}
