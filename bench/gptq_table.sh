#!/usr/bin/env bash
# Issue 3's quality table: RTN vs GPTQ (static groups, with and without act-order) on the bundled
# model at W4 g128, W3 g128, W3 per-channel, W2 g64 (asym), calibrated on kjv_train.txt
# (128 x 512, seed 0) and on WikiText-2 valid; ablations on W3 g128 (damp 0.1, 32 samples).
# Perplexity and mean KL vs FP16, ctx 512, both protocols, on kjv_heldout.txt (all windows) and
# wiki.test.raw (first WIKI_CHUNKS windows, default 150). Markdown on stdout, JSON lines in
# build/bench/gptq/results.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh >/dev/null
q=build/bin/quant
model=models/kjvwiki-9m
out=build/bench/gptq
mkdir -p "$out"
: > "$out/results.jsonl"
kjv_train=data/kjv/kjv_train.txt
wiki_valid=../shared/data/wikitext-2/valid.txt
heldout=data/kjv/kjv_heldout.txt
wiki_test=../shared/data/wikitext-2-raw/wiki.test.raw
wiki_chunks=${WIKI_CHUNKS:-150}
field() { sed -n "s/^  \"$1\": \(.*\)$/\1/p" "$2" | tr -d ',"'; }

# name | method | grid args | extra args
rows=()
for g in "w4g128:--bits 4 --group-size 128" "w3g128:--bits 3 --group-size 128" "w3pc:--bits 3 --group-size 0" "w2g64:--bits 2 --group-size 64"; do
  n=${g%%:*} a=${g#*:}
  rows+=("$n rtn|rtn|$a --asym|")
  rows+=("$n gptq kjv|gptq|$a --asym|--calib $kjv_train")
  rows+=("$n gptq+act kjv|gptq|$a --asym|--calib $kjv_train --act-order")
  [[ -f $wiki_valid ]] && rows+=("$n gptq+act wiki|gptq|$a --asym|--calib $wiki_valid --act-order")
done
rows+=("w3g128 gptq+act kjv damp0.1|gptq|--bits 3 --group-size 128 --asym|--calib $kjv_train --act-order --damp 0.1")
rows+=("w3g128 gptq+act kjv 32samples|gptq|--bits 3 --group-size 128 --asym|--calib $kjv_train --act-order --nsamples 32")

eval_one() {  # file text proto chunks -> "ppl kl"
  local j="$out/eval.json"
  $q ppl "$1" --text "$2" --protocol "$3" --kl-base "$model" ${4:+--chunks $4} --json --quiet > "$j"
  echo "$(field ppl "$j") $(field kl_mean "$j")"
}
fp_eval() {
  local j="$out/eval.json"
  $q ppl "$model" --text "$1" --protocol "$2" ${3:+--chunks $3} --json --quiet > "$j"
  field ppl "$j"
}

texts=("$heldout")
[[ -f $wiki_test ]] && texts+=("$wiki_test")
echo "| model | kjv ppl llamacpp | kjv KL llamacpp | kjv ppl gptq | kjv KL gptq | wiki ppl llamacpp | wiki KL llamacpp | wiki ppl gptq | wiki KL gptq | convert s |"
echo "|---|---|---|---|---|---|---|---|---|---|"
line="| FP16"
for t in "${texts[@]}"; do
  c=""; [[ $t == "$wiki_test" ]] && c=$wiki_chunks
  for p in llamacpp gptq; do line+=" | $(fp_eval "$t" $p $c) | "; done
done
echo "$line | |"
for r in "${rows[@]}"; do
  IFS='|' read -r name method grid extra <<< "$r"
  f="$out/$(echo "$name" | tr ' ' '_').gguf"
  # shellcheck disable=SC2086
  $q convert "$model" --method "$method" $grid $extra -o "$f" --quiet --json > "$out/convert.json"
  secs=$(sed -n 's/^  "seconds": \(.*\),*$/\1/p' "$out/convert.json" | tail -1 | tr -d ',')
  line="| $name"
  json="{\"name\": \"$name\""
  for t in "${texts[@]}"; do
    c=""; [[ $t == "$wiki_test" ]] && c=$wiki_chunks
    for p in llamacpp gptq; do
      read -r ppl kl <<< "$(eval_one "$f" "$t" $p $c)"
      line+=" | $ppl | $kl"
      json+=", \"$(basename "$t")/$p\": {\"ppl\": $ppl, \"kl\": $kl}"
    done
  done
  echo "$line | $(printf '%.1f' "$secs") |"
  echo "$json, \"convert_seconds\": $secs}" >> "$out/results.jsonl"
done
