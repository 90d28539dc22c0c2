#!/usr/bin/env bash
# Perplexity of the bundled model per storage type, on the held-out KJV text and on WikiText-2
# test (when ../shared has it), llamacpp protocol, ctx 512; plus time and tokens/s of quant ppl.
# Usage: bench/ppl_table.sh [--chunks N]  (default: every chunk). Prints a Markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh >/dev/null
q=build/bin/quant
model=models/kjvwiki-9m
out=build/bench
mkdir -p "$out"
extra=("$@")
texts=(data/kjv/kjv_heldout.txt)
[[ -f ../shared/data/wikitext-2-raw/wiki.test.raw ]] && texts+=(../shared/data/wikitext-2-raw/wiki.test.raw)
declare -A spec=([Q8_0]="--qtype Q8_0" [Q4_1]="--qtype Q4_1" [Q4_0]="--qtype Q4_0" [INT3_g32]="--bits 3 --group-size 32 --asym")
for t in Q8_0 Q4_1 Q4_0 INT3_g32; do
  # shellcheck disable=SC2086
  $q convert "$model" ${spec[$t]} -o "$out/kjv-$t.gguf" --quiet >/dev/null
done
field() { sed -n "s/^  \"$1\": \(.*\)$/\1/p" "$2" | tr -d ',"'; }
for text in "${texts[@]}"; do
  name=$(basename "$text")
  echo
  echo "### $name (llamacpp protocol, ctx 512)"
  echo
  echo "| model | file MB | ppl | Δppl | mean KL | top-1 | tokens scored | time s | tokens/s |"
  echo "|---|---|---|---|---|---|---|---|---|"
  $q ppl "$model" --text "$text" --json --quiet "${extra[@]}" > "$out/fp16-$name.json"
  fp=$(field ppl "$out/fp16-$name.json")
  printf '| FP16 | %.2f | %.4f | | | | %s | %.1f | %.0f |\n' "$(awk "BEGIN{print $(stat -c %s $model/model.safetensors)/1e6}")" \
    "$fp" "$(field tokens_scored "$out/fp16-$name.json")" "$(field seconds "$out/fp16-$name.json")" \
    "$(field tokens_per_second "$out/fp16-$name.json")"
  for t in Q8_0 Q4_1 Q4_0 INT3_g32; do
    f="$out/kjv-$t.gguf"
    $q ppl "$f" --text "$text" --kl-base "$model" --json --quiet "${extra[@]}" > "$out/$t-$name.json"
    j="$out/$t-$name.json"
    awk -v t="$t" -v mb="$(stat -c %s "$f")" -v p="$(field ppl "$j")" -v fp="$fp" -v kl="$(field kl_mean "$j")" \
        -v top="$(field top1_agreement "$j")" -v n="$(field tokens_scored "$j")" -v s="$(field seconds "$j")" \
        -v tps="$(field tokens_per_second "$j")" \
        'BEGIN { printf "| RTN %s | %.2f | %.4f | %+.2f%% | %.5f | %.2f%% | %d | %.1f | %.0f |\n", t, mb / 1e6, p, 100 * (p / fp - 1), kl, 100 * top, n, s, tps }'
  done
done
echo
echo "(time and tokens/s of the rows with --kl-base include evaluating the FP16 base model too)"
