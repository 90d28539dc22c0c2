#!/usr/bin/env bash
# Issue 22's recipe table: every candidate recipe of `quant quantize` at 4, 3, 2 and 8 bits
# (group 32, the default of every command) on the bundled model, calibrated on the text quantize uses by
# default (data/kjv/kjv_train.txt, 128 x 512, seed 0), scored on kjv_heldout.txt and
# wiki.test.raw (first CHUNKS windows each, ctx 512, llamacpp protocol) against FP16.
# One JSON line per run in build/bench/recipes/results.jsonl (with the convert flags the recipe
# stands for); `build/bin/bench_recipes_table FILE` prints the Markdown table and the winners,
# which are what calibration/recipes.cpp must default to (tests/unit/test_recipes.cpp checks
# the committed copy, docs/recipes.jsonl).
#   bash bench/recipes.sh            (about an hour on 2 cores)
#   GRIDS="3:128" RECIPES="rtn gptq-act-damp0.1-mse" bash bench/recipes.sh   (a subset)
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -x build/bin/quant ]] || bash scripts/build.sh >/dev/null
q=${QUANT:-build/bin/quant}  # a copy keeps a long run safe from rebuilds
model=models/kjvwiki-9m
out=build/bench/recipes
mkdir -p "$out"
calib=data/kjv/kjv_train.txt
texts=(data/kjv/kjv_heldout.txt ../shared/data/wikitext-2-raw/wiki.test.raw)
chunks=${CHUNKS:-48}
grids=${GRIDS:-"4:32 3:32 2:32 8:32"}
recipes=${RECIPES:-"rtn rtn-mse gptq gptq-mse gptq-damp0.1 gptq-damp0.1-mse gptq-act gptq-act-mse gptq-act-damp0.1 gptq-act-damp0.1-mse awq awq+gptq-act-damp0.1-mse"}
res=$out/results.jsonl
[[ -n ${APPEND:-} ]] || : > "$res"
num() { sed -n "s/^  \"$1\": \(.*\)$/\1/p" "$2" | tr -d ',"' | head -1; }

# FP16 on the same windows: the "before" of every row.
line="{\"recipe\": \"fp16\", \"bits\": 16, \"group\": 0"
for t in "${texts[@]}"; do
  $q ppl "$model" --text "$t" --chunks "$chunks" --json --quiet > "$out/eval.json"
  line+=", \"$(basename "$t")\": {\"ppl\": $(num ppl "$out/eval.json"), \"ppl_stderr\": $(num ppl_stderr "$out/eval.json")}"
done
echo "$line}" >> "$res"

for g in $grids; do
  bits=${g%%:*} group=${g#*:}
  for r in $recipes; do
    f=$out/w${bits}g${group}-${r}.gguf
    flags=$($q quantize "$model" --recipe "$r" --bits "$bits" --group-size "$group" --print-flags)
    # shellcheck disable=SC2086
    $q convert "$model" $flags --calib "$calib" -o "$f" --quiet --json > "$out/convert.json"
    line="{\"recipe\": \"$r\", \"bits\": $bits, \"group\": $group, \"flags\": \"$flags\", \"convert_seconds\": $(num seconds "$out/convert.json")"
    line+=", \"file_bytes\": $(stat -c %s "$f")"
    for t in "${texts[@]}"; do
      $q ppl "$f" --text "$t" --chunks "$chunks" --kl-base "$model" --json --quiet > "$out/eval.json"
      line+=", \"$(basename "$t")\": {\"ppl\": $(num ppl "$out/eval.json"), \"kl\": $(num kl_mean "$out/eval.json"), \"top1\": $(num top1_agreement "$out/eval.json")}"
    done
    echo "$line}" | tee -a "$res"
    rm -f "$f"
  done
done
