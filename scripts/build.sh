#!/usr/bin/env bash
# Installs missing Debian packages, configures and builds into build/ (Release).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
gen=(); command -v ninja >/dev/null && gen=(-G Ninja)
[[ -f build/CMakeCache.txt ]] || cmake -S . -B build "${gen[@]}" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$(nproc)"
