#!/usr/bin/env bash
# Issue 4's quality table: FP16, RTN, GPTQ (act-order), AWQ and AWQ+GPTQ at W4 g128 and W3 g128
# (asym), calibrated on kjv_train.txt (128 x 512, seed 0); and W8A8 per token (int8 weights per
# output channel, int8 activations, integer GEMMs): no smoothing vs SmoothQuant alpha 0.5 vs
# auto. Perplexity, mean KL vs FP16 and top-1, llamacpp protocol, ctx 512, on kjv_heldout.txt
# (all windows) and wiki.test.raw (first WIKI_CHUNKS windows, default 150). Markdown on stdout,
# JSON lines in $OUT/results.jsonl.
#   bash bench/awq_table.sh     (Q=path/to/quant to use a built binary, OUT=dir, WIKI_CHUNKS=150, ROWS=regex)
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z ${Q:-} ]]; then bash scripts/build.sh >/dev/null; fi
q=${Q:-build/bin/quant}
model=models/kjvwiki-9m
out=${OUT:-build/bench/awq}
mkdir -p "$out"
: > "$out/results.jsonl"
calib=data/kjv/kjv_train.txt
heldout=data/kjv/kjv_heldout.txt
wiki_test=../shared/data/wikitext-2-raw/wiki.test.raw
wiki_chunks=${WIKI_CHUNKS:-150}
field() { sed -n "s/^  \"$1\": \(.*\)$/\1/p" "$2" | tr -d ',"'; }

# name | convert args ("" = the FP16 model itself) | ppl args
rows=("FP16||")
for g in "W4 g128:--bits 4 --group-size 128 --asym" "W3 g128:--bits 3 --group-size 128 --asym"; do
  n=${g%%:*} a=${g#*:}
  rows+=("$n RTN|$a|")
  rows+=("$n GPTQ act-order|--method gptq $a --act-order --calib $calib|")
  rows+=("$n AWQ|--method awq $a --calib $calib|")
  rows+=("$n AWQ+GPTQ|--method awq+gptq $a --act-order --calib $calib|")
done
rows+=("W8A8 per-token, no smoothing||--act-bits 8 --act-quant per-token")
rows+=("W8A8 per-token, SmoothQuant 0.5|--method smoothquant --alpha 0.5 --qtype F16 --calib $calib|--act-bits 8 --act-quant per-token")
rows+=("W8A8 per-token, SmoothQuant auto|--method smoothquant --alpha auto --qtype F16 --calib $calib|--act-bits 8 --act-quant per-token")
rows+=("W8A8 per-tensor, no smoothing||--act-bits 8 --act-quant per-tensor")
rows+=("W8A8 per-tensor, SmoothQuant 0.5|--method smoothquant --alpha 0.5 --qtype F16 --calib $calib|--act-bits 8 --act-quant per-tensor")
rows+=("Q8_0 + SmoothQuant 0.5, int8 acts per 32-block|--method smoothquant --alpha 0.5 --qtype Q8_0 --calib $calib|--act-bits 8 --act-quant per-block")

texts=("$heldout")
[[ -f $wiki_test ]] && texts+=("$wiki_test")
echo "| model | kjv ppl | kjv KL | kjv top-1 | wiki ppl | wiki KL | wiki top-1 | convert s |"
echo "|---|---|---|---|---|---|---|---|"
declare -A fp
for r in "${rows[@]}"; do
  IFS='|' read -r name conv pplargs <<< "$r"
  [[ $name == FP16 || $name =~ ${ROWS:-.} ]] || continue
  f=$model secs=""
  if [[ -n $conv ]]; then
    f="$out/$(echo "$name" | tr ' ,+.' '____').gguf"
    # shellcheck disable=SC2086
    $q convert "$model" $conv -o "$f" --quiet --json > "$out/convert.json"
    secs=$(field seconds "$out/convert.json")
  fi
  line="| $name"
  for t in "${texts[@]}"; do
    c=""; [[ $t == "$wiki_test" ]] && c=$wiki_chunks
    j="$out/eval.json"
    # shellcheck disable=SC2086
    $q ppl "$f" --text "$t" --kl-base "$model" ${c:+--chunks $c} $pplargs --json --quiet > "$j"
    ppl=$(field ppl "$j") kl=$(field kl_mean "$j") top=$(field top1_agreement "$j")
    [[ $name == FP16 ]] && fp[$t]=$ppl
    rel=$(awk -v a="$ppl" -v b="${fp[$t]}" 'BEGIN { printf "%+.2f%%", 100 * (a / b - 1) }')
    line+=" | $(printf '%.3f' "$ppl") ($rel) | $(printf '%.5f' "$kl") | $(awk -v x="$top" 'BEGIN { printf "%.2f%%", 100 * x }')"
    echo "{\"name\": \"$name\", \"text\": \"$t\", \"ppl\": $ppl, \"kl\": $kl, \"top1\": $top, \"convert_seconds\": \"$secs\"}" >> "$out/results.jsonl"
  done
  echo "$line | ${secs:+$(printf '%.0f' "$secs")} |"
done
