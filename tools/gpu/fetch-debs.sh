#!/usr/bin/env bash
# Download (never install) the Debian packages tune needs to build and link on a
# machine that has none of them: the -dev packages (headers, .pc files, .so
# links), their runtime libraries, Check (unit tests) and pkgconf. Run from the
# repository root on a Debian machine with apt-get and a mirror; the .deb files
# land in gpu-debs/ (ignored by git), which tools/gpu/check.sh unpacks into a
# private prefix with dpkg -x (or ar + tar).
# usage: bash tools/gpu/fetch-debs.sh [DIR]
set -euo pipefail
DIR=${1:-gpu-debs}
PKGS=(
    # yaml-0.1
    libyaml-dev libyaml-0-2
    # libcjson
    libcjson-dev libcjson1
    # openblas: Debian splits it into a metapackage and a threading flavour;
    # the pthread flavour carries the .pc file, cblas.h and libopenblas.so.
    libopenblas-dev libopenblas-pthread-dev libopenblas0 libopenblas0-pthread
    libgfortran5 libquadmath0
    # libpcre2-8 (the 16/32/posix .so links in -dev stay dangling: unused)
    libpcre2-dev libpcre2-8-0
    # libutf8proc
    libutf8proc-dev libutf8proc2
    # libcrypto (SHA-256)
    libssl-dev libssl3
    # check (unit tests): libcheck_pic.a, and its Requires: libsubunit
    check libsubunit-dev libsubunit0
    # pkg-config itself, in case the machine lacks it
    pkgconf pkgconf-bin libpkgconf3
)
command -v apt-get > /dev/null || { echo "fetch-debs: needs apt-get (a Debian machine)" >&2; exit 2; }
[ "$(dpkg --print-architecture 2>/dev/null || echo amd64)" = amd64 ] ||
    echo "fetch-debs: warning: not amd64; the GPU machine is x86_64" >&2
mkdir -p "$DIR"
rm -f "$DIR"/*.deb
( cd "$DIR" && apt-get download "${PKGS[@]}" )
echo "== $(ls "$DIR"/*.deb | wc -l) packages in $DIR:"
ls -l "$DIR"/*.deb | awk '{printf "  %8d  %s\n", $5, $NF}'
du -sh "$DIR" | awk '{print "== total: " $1}'
# The newest glibc symbol version the shared libraries ask for: the GPU
# machine's glibc must be at least this.
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
for d in "$DIR"/*.deb; do dpkg -x "$d" "$tmp"; done
if command -v objdump > /dev/null; then
    need=$(find "$tmp" -name '*.so*' -type f -exec objdump -T {} + 2>/dev/null |
           grep -o 'GLIBC_[0-9.]*' | sort -t. -k1,1 -k2,2n -k3,3n -u | tail -1)
    echo "== newest glibc symbol needed: ${need:-none} (this machine: $(ldd --version | head -1 | awk '{print $NF}'))"
fi
