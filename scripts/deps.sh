#!/usr/bin/env bash
# Installs the Debian packages the build and the tests need, only those missing.
# Idempotent: a second run on a provisioned machine installs nothing and takes < 1 s.
set -euo pipefail

# --minimal: only what the quant binary builds from (scripts/demo.sh); otherwise also the test
# suite's (Catch2, LibTorch, the peers' node, headless Chromium, clang for the fuzzers).
build_packages=(
  build-essential cmake ninja-build pkg-config
  libeigen3-dev nlohmann-json3-dev libcli11-dev libfmt-dev
  libsentencepiece-dev libpcre2-dev
  libprotobuf-dev protobuf-compiler libonnx-dev
)
packages=("${build_packages[@]}")
if [[ ${1:-} != --minimal ]]; then
  packages+=(catch2 libbenchmark-dev python3-onnx libtorch-dev libopenblas0-pthread nodejs npm chromium clang)
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
# nodejs may come from outside Debian (a node binary already on PATH is fine).
if command -v node >/dev/null && command -v npm >/dev/null; then
  filtered=()
  for p in "${missing[@]}"; do [[ $p == nodejs || $p == npm ]] || filtered+=("$p"); done
  missing=("${filtered[@]}")
fi

if ((${#missing[@]} == 0)); then
  exit 0
fi

echo "deps: installing ${missing[*]}" >&2
sudo_cmd=()
if [[ $(id -u) != 0 ]]; then sudo_cmd=(sudo); fi
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
