#!/usr/bin/env bash
# Installs a real consumer of our files from npm into BUILD/peers/NAME (idempotent).
# Usage: install.sh BUILD_DIR llama|ort. Exit 3 when npm is not available.
set -euo pipefail
build=$1 name=$2
command -v npm >/dev/null || { echo "npm not found" >&2; exit 3; }
dir="$build/peers/$name"
case $name in
  llama) marker="$dir/node_modules/@node-llama-cpp/linux-x64/package.json"
         pkgs=(node-llama-cpp@3.22.1 @node-llama-cpp/linux-x64@3.22.1 --omit=optional) ;;
  ort)   marker="$dir/node_modules/onnxruntime-node/package.json"
         pkgs=(onnxruntime-node@1.30.0) ;;
  *) echo "unknown peer $name" >&2; exit 2 ;;
esac
[[ -f $marker ]] && exit 0
mkdir -p "$dir"
cd "$dir"
[[ -f package.json ]] || npm init -y >/dev/null
ONNXRUNTIME_NODE_INSTALL=skip npm install --no-audit --no-fund --loglevel=error "${pkgs[@]}" >&2
