#!/usr/bin/env bash
# The first run: installs only what the quant binary needs, builds only it, then quantizes the
# bundled model four ways at the same file size (llama.cpp's 4-bit rounding, quant's measured
# default recipe at 4 bits, AWQ, and a GGUF type per tensor planned into that size) and measures
# all of them against FP16 on the same held-out windows: one table, and the HTML report.
#   bash scripts/demo.sh            (CHUNKS=24 windows of kjv_heldout.txt; NSAMPLES=32 calibration windows
#                                    of 512 tokens drawn from every CALIB_EVERY=4th line, about 1 MB, of
#                                    kjv_train.txt: tokenizing all 3.9 MB takes 6 s in each of three steps)
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$(date +%s.%N)
bash scripts/deps.sh --minimal
gen=(); command -v ninja >/dev/null && gen=(-G Ninja)
# A build tree of its own when the suite's is absent: the tests' packages need not be installed.
[[ -f build/CMakeCache.txt ]] || cmake -S . -B build "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DQUANT_BUILD_TESTS=OFF >/dev/null
cmake --build build --target quant -j "$(nproc)" | grep -vE "^\[[0-9]+/[0-9]+\]" || true
t_build=$(date +%s.%N)

q=build/bin/quant
model=models/kjvwiki-9m
text=data/kjv/kjv_heldout.txt
out=build/demo
chunks=${CHUNKS:-24}
rm -rf "$out"
mkdir -p "$out"
awk -v n="${CALIB_EVERY:-4}" 'NR % n == 1' data/kjv/kjv_train.txt > "$out/calib.txt"
calib=(--calib "$out/calib.txt" --nsamples "${NSAMPLES:-32}")
# llama.cpp's own 4-bit rounding (Q4_1: 4-bit codes, a scale and a minimum per 32 weights)...
$q convert "$model" --qtype Q4_1 -o "$out/rtn-Q4_1.gguf" --quiet
# ...and the same grid (W4 g32 asym, stored as Q4_1: the same bytes per weight) chosen by a recipe.
$q quantize "$model" --bits 4 "${calib[@]}" --no-eval -o "$out/default-W4.gguf" --quiet --json > "$out/default.json"
# AWQ's full search takes minutes even here (20 scale steps and the clip search on 32 windows,
# bench/recipes.sh); the demo runs a reduced one and says so.
$q convert "$model" --method awq --bits 4 --group-size 32 "${calib[@]}" \
  --awq-grid 4 --search-windows 2 --awq-no-clip -o "$out/awq-W4.gguf" --quiet
# A type per tensor (Q4_K, Q5_K or Q6_K) with the whole file within Q4_1's bytes: the damage of
# each type on each matrix measured on 1 window here (quantize's default measures 16, on six types).
size=$(stat -c %s "$out/rtn-Q4_1.gguf")
$q quantize "$model" --target-size "$(awk -v b="$size" 'BEGIN { printf "%.6f", b / 1e6 }')" --sweep-types Q4_K,Q5_K,Q6_K \
  --sweep-chunks 1 "${calib[@]}" --no-eval -o "$out/plan.gguf" --quiet --json > "$out/plan-run.json"
recipe=$(sed -n 's/^  "recipe": "\(.*\)",$/\1/p' "$out/default.json")
$q compare "$model" "$out/rtn-Q4_1.gguf" "$out/default-W4.gguf" "$out/awq-W4.gguf" "$out/plan.gguf" \
  --label FP16 --label "RTN Q4_1 (llama.cpp)" --label "quantize default ($recipe)" --label "AWQ (reduced search)" \
  --label "quantize --target-size (Q4_1's bytes)" \
  --text "$text" --chunks "$chunks" -o "$out/report" --quiet
t_end=$(date +%s.%N)
awk -v a="$t0" -v b="$t_build" -v c="$t_end" 'BEGIN { printf "\ninstall + build %.0f s, demo %.0f s, total %.0f s\n", b - a, c - b, c - a }'
