#!/usr/bin/env bash
# Installs every build and test dependency of tune from Debian's packages.
# Idempotent: quiet and quick when everything is present.
set -euo pipefail
PACKAGES=(build-essential pkg-config libyaml-dev libcjson-dev libopenblas-dev
          libpcre2-dev libutf8proc-dev check libomp-dev python3 python3-pip unzip time
          libmicrohttpd-dev libcurl4-openssl-dev libssl-dev curl chromium-headless-shell
          libopenmpi-dev openmpi-bin
          clang libclang-rt-dev)  # make fuzz: clang, its libFuzzer and sanitizer runtimes
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
echo "installing: ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
