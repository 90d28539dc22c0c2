#!/usr/bin/env bash
# Issue 17's table: llama.cpp's own presets with its importance matrix (llama_model_quantize from
# node-llama-cpp's libllama, run on our F32 GGUF with an imatrix of the same calibration windows)
# against ours at the same sizes: the same RTN (identical bytes), GPTQ onto the super-block grids,
# GPTQ with the imatrix for the super-block fits, and per-tensor type plans (quant sweep --qtypes
# over every matrix, token_embd and output included, then quant plan at llama.cpp's tensor bytes
# less 4 KB for our larger metadata, then GPTQ onto the planned types). The sweep measures on 16
# windows of kjv_train.txt (training text, not the texts of the table). Calibration kjv_train.txt 128 x 512 (seed 0);
# perplexity, mean KL vs FP16 and top-1, llamacpp protocol, ctx 512, on kjv_heldout.txt (all
# windows) and the first WIKI_CHUNKS (100) windows of wiki.test.raw. Markdown on stdout, JSON
# lines in $OUT/results.jsonl.
#   bash bench/kquant_table.sh   (Q=path/to/quant, OUT=dir, WIKI_CHUNKS=100, ROWS=regex, REUSE_SWEEP=1)
# Needs the peers the tests install (build/peers/llama) and build/bin/llama_quantize_shim.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z ${Q:-} ]]; then bash scripts/build.sh >/dev/null; fi
q=${Q:-build/bin/quant}
shim=$(dirname "$q")/llama_quantize_shim
lib=build/peers/llama/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64/libllama.v0.5.0.so
[[ -f $lib ]] || bash tests/peers/install.sh "$PWD/build" llama >/dev/null
model=models/kjvwiki-9m
out=${OUT:-build/bench/kquant}
mkdir -p "$out"
: > "$out/results.jsonl"
calib=data/kjv/kjv_train.txt
cal="--calib $calib --nsamples 128 --seqlen 512"
heldout=data/kjv/kjv_heldout.txt
wiki_test=../shared/data/wikitext-2-raw/wiki.test.raw
wiki_chunks=${WIKI_CHUNKS:-100}
field() { sed -n "s/^  \"$1\": \(.*\)$/\1/p" "$2" | tr -d ',"'; }

# The calibration pass once: our imatrix (which llama.cpp's quantizer reads) and the F32 GGUF.
t0=$(date +%s.%N)
rm -rf "$out/stats"
$q calibrate "$model" $cal -o "$out/stats" --imatrix "$out/imatrix.gguf" --quiet > /dev/null
imatrix_s=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
$q convert "$model" --qtype F32 -o "$out/f32.gguf" --quiet > /dev/null
# The per-tensor damage of each type, once, for the plans (GPTQ onto the type, the rest FP).
t0=$(date +%s.%N)
[[ ${REUSE_SWEEP:-0} == 1 && -f $out/sweep.json ]] || $q sweep "$model" --stats "$out/stats" --method gptq --qtypes Q2_K,Q3_K,Q4_K,Q5_K,Q6_K,Q8_0 --text "$calib" --chunks 16 --spread \
  -o "$out/sweep.json" --quiet > /dev/null
sweep_s=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')

# name | how: "fp" (the model), "llama FTYPE" (llama.cpp's preset + imatrix), or convert args
rows=("FP16|fp")
for p in "Q4_K_M 15" "Q3_K_M 12" "Q2_K 10" "IQ4_XS 30"; do
  n=${p% *} ft=${p#* }
  rows+=("llama.cpp $n + imatrix|llama $ft")
  rows+=("ours $n RTN + imatrix|--qtype $n --imatrix $out/imatrix.gguf")
  rows+=("ours $n GPTQ|--qtype $n --method gptq $cal")
  rows+=("ours $n GPTQ + imatrix|--qtype $n --method gptq --imatrix $out/imatrix.gguf $cal")
  if [[ $n != IQ4_XS ]]; then
    rows+=("ours $n-size plan GPTQ|plan $n")
    rows+=("ours $n-size plan GPTQ + imatrix|plan $n --imatrix $out/imatrix.gguf")
  fi
done
rows+=("ours W4 g32 asym (Q4_1) GPTQ|--bits 4 --group-size 32 --asym --method gptq $cal")

texts=("$heldout")
[[ -f $wiki_test ]] && texts+=("$wiki_test")
params=$($q inspect "$out/f32.gguf" --json | sed -n 's/^  "params": \([0-9]*\).*/\1/p')
echo "imatrix: $imatrix_s s (128 x 512 tokens); type sweep: $sweep_s s; CPU: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) threads"
echo
echo "| file | bytes | bpw | kjv ppl (Δ) | kjv KL | kjv top-1 | wiki ppl (Δ) | wiki KL | wiki top-1 | convert s |"
echo "|---|---|---|---|---|---|---|---|---|---|"
declare -A fp lt lb
labels=()
for r in "${rows[@]}"; do
  IFS='|' read -r name how <<< "$r"
  [[ $name == FP16 || $name =~ ${ROWS:-.} ]] || continue
  f=$model secs=""
  if [[ $how == llama* ]]; then
    f="$out/$(echo "$name" | tr ' +.' '___').gguf"
    t0=$(date +%s.%N)
    "$shim" "$lib" "$out/f32.gguf" "$f" "${how#llama }" -1 0 "$out/imatrix.gguf" > "$out/shim.log" 2>&1
    secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    preset=${name#llama.cpp } preset=${preset% + imatrix}
    lt[$preset]=$($q inspect "$f" --json | field tensor_bytes /dev/stdin)
    lb[$preset]=$(stat -c %s "$f")
  elif [[ $how == plan* ]]; then
    read -r -a extra <<< "${how#plan }"
    preset=${extra[0]}
    [[ -n ${lt[$preset]:-} ]] || { echo "$name needs the llama.cpp $preset row first" >&2; exit 1; }
    # The plan's budget is tensor data; our header (tokenizer, provenance) is then measured on
    # the file and the budget set to our tensor bytes less any excess over llama.cpp's file (at most twice).
    target=$(awk -v b="${lt[$preset]}" 'BEGIN { printf "%.6f", (b - 4096) / 1e6 }')
    f="$out/$(echo "$name" | tr ' +.()' '_____').gguf"
    for _ in 1 2 3; do
      $q plan "$out/sweep.json" --target-size "$target" -o "$out/plan-$preset.json" --quiet > /dev/null
      # shellcheck disable=SC2086
      $q convert "$model" --plan "$out/plan-$preset.json" $cal "${extra[@]:1}" -o "$f" --quiet --json > "$out/convert.json"
      over=$(( $(stat -c %s "$f") - ${lb[$preset]} ))
      (( over > 0 )) || break
      ours=$($q inspect "$f" --json | field tensor_bytes /dev/stdin)
      target=$(awk -v t="$ours" -v o="$over" 'BEGIN { printf "%.6f", (t - o - 64) / 1e6 }')
    done
    secs=$(field seconds "$out/convert.json")
  elif [[ $how != fp ]]; then
    f="$out/$(echo "$name" | tr ' +.()' '_____').gguf"
    # shellcheck disable=SC2086
    $q convert "$model" $how -o "$f" --quiet --json > "$out/convert.json"
    secs=$(field seconds "$out/convert.json")
  fi
  secs=${secs:+$(printf '%.1f' "$secs")}
  bytes=$(stat -c %s "$f" 2>/dev/null || du -sb "$f" | cut -f1)
  [[ $how == fp ]] && bytes=$(du -sb "$model"/*.safetensors | awk '{ s += $1 } END { print s }')
  bpw=$(awk -v b="$bytes" -v p="$params" 'BEGIN { printf "%.3f", 8 * b / p }')
  line="| $name | $bytes | $bpw"
  for t in "${texts[@]}"; do
    c=""; [[ $t == "$wiki_test" ]] && c=$wiki_chunks
    j="$out/eval.json"
    # shellcheck disable=SC2086
    $q ppl "$f" --text "$t" --kl-base "$model" ${c:+--chunks $c} --json --quiet > "$j"
    if [[ $t == "$heldout" && $how != fp ]]; then cp "$j" "$out/eval-${#labels[@]}.json"; labels+=("$name"); fi
    ppl=$(field ppl "$j") kl=$(field kl_mean "$j") top=$(field top1_agreement "$j")
    [[ $name == FP16 ]] && fp[$t]=$ppl
    rel=$(awk -v a="$ppl" -v b="${fp[$t]}" 'BEGIN { printf "%+.3f%%", 100 * (a / b - 1) }')
    line+=" | $(printf '%.4f' "$ppl") ($rel) | $(printf '%.6f' "$kl") | $(awk -v x="$top" 'BEGIN { printf "%.2f%%", 100 * x }')"
    echo "{\"name\": \"$name\", \"text\": \"$t\", \"bytes\": $bytes, \"ppl\": $ppl, \"kl\": $kl, \"top1\": $top, \"convert_seconds\": \"$secs\"}" >> "$out/results.jsonl"
  done
  echo "$line | $secs |"
done

# One page with every file on kjv_heldout: perplexity and KL against size, Pareto fronts.
imports=()
for i in "${!labels[@]}"; do imports+=("$out/eval-$i.json"); done
$q compare "$model" "${imports[@]}" --text "$heldout" --label FP16 "${labels[@]}" -o "$out/report" --quiet > /dev/null
echo
echo "report: $out/report/report.html"
