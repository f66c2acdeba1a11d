# Shared by the e2e scripts (sourced, not run: the Makefile runs *.sh only).
# Makes $TUNE absolute, keeps the repository root in $SRC, works in a scratch
# folder removed on exit, and counts failures for `finish`.
TUNE=$(cd "$(dirname "$TUNE")" && pwd)/$(basename "$TUNE")
SRC=$(pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work" || exit 1
fails=0

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
