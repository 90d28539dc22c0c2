#!/usr/bin/env bash
# Installs missing Debian packages, configures and builds into build/ (Release).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
gen=(); command -v ninja >/dev/null && gen=(-G Ninja)
# (A tree the demo configured without the tests gets them back.)
if [[ ! -f build/CMakeCache.txt ]]; then
  cmake -S . -B build "${gen[@]}" -DCMAKE_BUILD_TYPE=Release >/dev/null
elif grep -q "^QUANT_BUILD_TESTS:BOOL=OFF" build/CMakeCache.txt; then
  cmake -S . -B build -DQUANT_BUILD_TESTS=ON >/dev/null
fi
cmake --build build -j "$(nproc)"
