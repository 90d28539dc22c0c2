#!/usr/bin/env bash
# The main job on the bundled model: RTN INT4 (Q4_0) to GGUF, then perplexity before and after.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
model=models/kjvwiki-9m
text=data/kjv/kjv_heldout.txt
out=build/demo
mkdir -p "$out"
q=build/bin/quant
$q convert "$model" --qtype Q4_0 -o "$out/kjvwiki-9m-Q4_0.gguf"
$q ppl "$model" --text "$text" --json --quiet > "$out/ppl-fp16.json"
$q ppl "$out/kjvwiki-9m-Q4_0.gguf" --text "$text" --kl-base "$model" --json --quiet > "$out/ppl-q4_0.json"
field() { sed -n "s/^  \"$1\": \(.*\)$/\1/p" "$2" | tr -d ',"'; }
echo
echo "Perplexity on $text ($(field protocol "$out/ppl-fp16.json") protocol, ctx $(field ctx "$out/ppl-fp16.json"), $(field tokens_scored "$out/ppl-fp16.json") tokens scored)"
awk -v fp="$(field ppl "$out/ppl-fp16.json")" -v fpsize="$(stat -c %s $model/model.safetensors)" \
    -v q="$(field ppl "$out/ppl-q4_0.json")" -v qsize="$(stat -c %s "$out/kjvwiki-9m-Q4_0.gguf")" \
    -v kl="$(field kl_mean "$out/ppl-q4_0.json")" -v top1="$(field top1_agreement "$out/ppl-q4_0.json")" 'BEGIN {
  printf "%-20s %9s %10s %9s %11s %8s\n", "model", "size MB", "ppl", "delta", "mean KL", "top-1"
  printf "%-20s %9.2f %10.4f %9s %11s %8s\n", "FP16 safetensors", fpsize / 1e6, fp, "", "", ""
  printf "%-20s %9.2f %10.4f %+8.2f%% %11.6f %7.2f%%\n", "RTN Q4_0 GGUF", qsize / 1e6, q, 100 * (q / fp - 1), kl, 100 * top1
}'
