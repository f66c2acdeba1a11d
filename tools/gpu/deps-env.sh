# shellcheck shell=bash
# Sourced by tools/gpu/check.sh (bash): unpack the .deb files that
# tools/gpu/fetch-debs.sh downloaded into a private prefix (never into /) and
# export the build environment that makes `make` find them.
# usage: source tools/gpu/deps-env.sh; tune_deps_setup DEBDIR PREFIX
# Sets TUNE_DEPS_LD (the prefix's library folders) and exports PKG_CONFIG_LIBDIR,
# PKG_CONFIG_PATH, CPATH, LIBRARY_PATH, LD_LIBRARY_PATH and PATH.

# One .deb into DEST: dpkg -x, or, where dpkg is missing, ar x + tar (or a few
# lines of Python for ar). TUNE_DEPS_NO_DPKG=1 / TUNE_DEPS_NO_AR=1 force the fallbacks.
tune_deb_extract() {
    local deb=$1 dest=$2
    if [ -z "${TUNE_DEPS_NO_DPKG:-}" ] && command -v dpkg > /dev/null; then
        dpkg -x "$deb" "$dest"
        return
    fi
    local tmp data
    tmp=$(mktemp -d)
    deb=$(readlink -f "$deb")
    if [ -z "${TUNE_DEPS_NO_AR:-}" ] && command -v ar > /dev/null; then
        (cd "$tmp" && ar x "$deb") || { rm -rf "$tmp"; return 1; }
    else
        # No binutils either: read the ar archive with Python.
        python3 - "$deb" "$tmp" <<'PY' || { rm -rf "$tmp"; return 1; }
import os, sys
data = open(sys.argv[1], "rb").read()
assert data[:8] == b"!<arch>\n", "not an ar archive"
pos = 8
while pos + 60 <= len(data):
    name = data[pos:pos + 16].decode().strip().rstrip("/")
    size = int(data[pos + 48:pos + 58].decode().strip())
    open(os.path.join(sys.argv[2], name), "wb").write(data[pos + 60:pos + 60 + size])
    pos += 60 + size + (size & 1)
PY
    fi
    data=$(ls "$tmp"/data.tar* 2> /dev/null | head -1)
    case "$data" in
        *.xz) tar -xJf "$data" -C "$dest" ;;
        *.zst) if tar --help 2>/dev/null | grep -q -- --zstd; then tar --zstd -xf "$data" -C "$dest";
               else zstd -dc "$data" | tar -xf - -C "$dest"; fi ;;
        *.gz) tar -xzf "$data" -C "$dest" ;;
        *.bz2) tar -xjf "$data" -C "$dest" ;;
        *.tar) tar -xf "$data" -C "$dest" ;;
        *) echo "deps: no data.tar in $deb" >&2; rm -rf "$tmp"; return 1 ;;
    esac
    local rc=$?
    rm -rf "$tmp"
    return $rc
}

tune_deps_setup() {
    local debs=$1 prefix=$2 deb pc arch=x86_64-linux-gnu
    ls "$debs"/*.deb > /dev/null 2>&1 || { echo "deps: no .deb files in $debs" >&2; return 1; }
    rm -rf "$prefix" && mkdir -p "$prefix" || return 1
    prefix=$(cd "$prefix" && pwd)
    for deb in "$debs"/*.deb; do
        tune_deb_extract "$deb" "$prefix" || { echo "deps: cannot unpack $deb" >&2; return 1; }
    done
    local lib=$prefix/usr/lib/$arch blas=$prefix/usr/lib/$arch/openblas-pthread
    local pcdir=$prefix/pkgconfig
    mkdir -p "$pcdir"
    # Every .pc file, with its /usr paths moved under the prefix, in one folder.
    for pc in $(find "$prefix/usr" -name '*.pc' \( -type f -o -type l \)); do
        sed -E "s#(^[A-Za-z_]+=|-I|-L)/usr([/ ]|\$)#\1$prefix/usr\2#g" "$pc" > "$pcdir/$(basename "$pc")"
    done
    # Only ours: a missing package fails here, not with a system copy.
    export PKG_CONFIG_LIBDIR=$pcdir
    export PKG_CONFIG_PATH=$pcdir
    unset PKG_CONFIG_SYSROOT_DIR
    # pkgconf counts CPATH / LIBRARY_PATH folders as system ones and drops them:
    # keep the -I / -L flags explicit anyway.
    export PKG_CONFIG_ALLOW_SYSTEM_CFLAGS=1 PKG_CONFIG_ALLOW_SYSTEM_LIBS=1
    export CPATH=$prefix/usr/include:$prefix/usr/include/$arch:$prefix/usr/include/$arch/openblas-pthread${CPATH:+:$CPATH}
    export LIBRARY_PATH=$lib:$blas${LIBRARY_PATH:+:$LIBRARY_PATH}
    TUNE_DEPS_LD=$lib:$blas
    export LD_LIBRARY_PATH=$TUNE_DEPS_LD${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    # pkg-config: the machine's own if it has one, else the unpacked pkgconf.
    if ! command -v pkg-config > /dev/null; then
        export PATH=$prefix/usr/bin:$PATH
    fi
    pkg-config --exists yaml-0.1 libcjson openblas libpcre2-8 libutf8proc check ||
        { echo "deps: pkg-config cannot resolve every package from $pcdir" >&2; return 1; }
    return 0
}
