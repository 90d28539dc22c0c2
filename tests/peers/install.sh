#!/usr/bin/env bash
# Installs a real consumer of our files from npm into BUILD/peers/NAME (idempotent, and safe
# when several tests call it at once: ctest runs them in parallel).
# Usage: install.sh BUILD_DIR llama|ort. Exit 3 when npm is not available.
set -euo pipefail
build=$1 name=$2
command -v npm >/dev/null || { echo "npm not found" >&2; exit 3; }
case $name in
  llama) pkgs=(node-llama-cpp@3.22.1 @node-llama-cpp/linux-x64@3.22.1 --omit=optional) ;;
  ort)   pkgs=(onnxruntime-node@1.30.0) ;;
  *) echo "unknown peer $name" >&2; exit 2 ;;
esac
dir="$build/peers/$name"
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
exec 9>"$build/peers/.$name.lock"
flock 9                      # one installer at a time; the others wait, then find the stamp
stamp="$dir/.installed-${pkgs[0]}"
[[ -f $stamp ]] && exit 0
cd "$dir"
[[ -f package.json ]] || npm init -y >/dev/null
ONNXRUNTIME_NODE_INSTALL=skip npm install --no-audit --no-fund --loglevel=error "${pkgs[@]}" >&2
touch "$stamp"               # only after npm succeeded
