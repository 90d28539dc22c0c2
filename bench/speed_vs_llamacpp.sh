#!/usr/bin/env bash
# Issue 18's side-by-side: our `quant ppl` against llama.cpp's perplexity loop (bench_llama_ppl over
# node-llama-cpp's libllama) on the same GGUF files of a 1.1B-parameter Llama (TinyLlama's shape,
# random weights, written by `quant synth`), the same text (wiki.test.raw), ctx 512, the same
# thread counts, each pair run back to back. Per type: tokens/s of both and their ratio, and the
# perplexity of our fast path against our fp32 reference path (--reference) on the same windows.
# Markdown on stdout, JSON lines in $OUT/speed.jsonl.
#   bash bench/speed_vs_llamacpp.sh   (OUT=dir TYPES="F16 Q8_0 ..." THREADS="1 2" CHUNKS=4 ISA=avx2 REF=1)
# ISA=avx2 runs both on AVX2 only (QUANT_ISA=avx2, llama.cpp's haswell CPU backend), as on a CPU
# without AVX-512. REF=0 skips the (slow) reference runs.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z ${Q:-} ]]; then bash scripts/build.sh >/dev/null; fi
q=${Q:-build/bin/quant}
driver=$(dirname "$q")/bench_llama_ppl
libdir=$PWD/build/peers/llama/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64
[[ -f $libdir/libllama.v0.5.0.so ]] || bash tests/peers/install.sh "$PWD/build" llama >/dev/null
out=${OUT:-build/bench/speed}
types=${TYPES:-F16 Q8_0 Q4_0 Q4_1 Q5_0 Q4_K Q6_K}
threads=${THREADS:-1 2}
chunks=${CHUNKS:-4}
text=../shared/data/wikitext-2-raw/wiki.test.raw
mkdir -p "$out"
: > "$out/speed.jsonl"
backend=()
if [[ ${ISA:-} == avx2 ]]; then
  export QUANT_ISA=avx2
  backend=(haswell)
fi

[[ -f $out/tinyllama/config.json ]] || $q synth tinyllama-1.1b -o "$out/tinyllama" --tokenizer ../shared/models/llama2-tokenizer --quiet > /dev/null
field() { sed -n "s/^ *\"$1\": \([^,]*\),\{0,1\}$/\1/p" | head -1; }

echo "| type | threads | llama.cpp tok/s | quant tok/s | ratio | ppl llama.cpp | ppl quant | ppl quant --reference | fast vs reference |"
echo "|---|---|---|---|---|---|---|---|---|"
for t in $types; do
  f=$out/$(echo "$t" | tr 'A-Z' 'a-z').gguf
  # A preset name (Q6_K, Q4_K_M...) with --pure: every matrix of its base type, output.weight Q8_0;
  # a plain type: every matrix of it, output.weight Q8_0 (our default policy).
  pure=()
  case $t in Q2_K|Q3_K_*|Q4_K_*|Q5_K_*|Q6_K|IQ4_*) pure=(--pure) ;; esac
  [[ -f $f ]] || $q convert "$out/tinyllama" --qtype "$t" "${pure[@]}" -o "$f" --quiet > /dev/null
  ref_ppl=""
  for th in $threads; do
    l=$("$driver" "$libdir" "$f" "$text" 512 "$chunks" "$th" "${backend[@]}" 2>/dev/null)
    o=$($q ppl "$f" --text "$text" --chunks "$chunks" --threads "$th" --json --quiet)
    lt=$(echo "$l" | sed 's/.*"tokens_per_s": \([0-9.]*\).*/\1/')
    lp=$(echo "$l" | sed 's/.*"ppl": \([0-9.]*\).*/\1/')
    ot=$(echo "$o" | field tokens_per_second)
    op=$(echo "$o" | field ppl)
    if [[ ${REF:-1} == 1 && -z $ref_ppl ]]; then
      ref_ppl=$($q ppl "$f" --text "$text" --chunks "$chunks" --threads "$th" --reference --json --quiet | field ppl)
    fi
    ratio=$(awk -v a="$ot" -v b="$lt" 'BEGIN { printf "%.2f", a / b }')
    delta=$([[ -n $ref_ppl ]] && awk -v a="$op" -v b="$ref_ppl" 'BEGIN { printf "%+.4f%%", 100 * (a / b - 1) }' || echo "")
    printf "| %s | %s | %.1f | %.1f | %s | %.1f | %.1f | %s | %s |\n" "$t" "$th" "$lt" "$ot" "$ratio" "$lp" "$op" \
      "$([[ -n $ref_ppl ]] && printf %.1f "$ref_ppl")" "$delta"
    echo "{\"type\": \"$t\", \"threads\": $th, \"isa\": \"${ISA:-best}\", \"llama\": $l, \"quant_tokens_per_s\": $ot, \"quant_ppl\": $op, \"reference_ppl\": ${ref_ppl:-null}}" >> "$out/speed.jsonl"
  done
done
echo
echo "CPU: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; ISA: ${ISA:-best available}"

# Random weights amplify every rounding (their perplexity is ~1e5); the fast path's agreement with
# the reference is also measured on the bundled trained model, on kjv_heldout.txt (all windows).
if [[ ${REF:-1} == 1 ]]; then
  echo
  echo "| bundled model | ppl fast | ppl --reference | fast vs reference |"
  echo "|---|---|---|---|"
  for t in Q8_0 Q4_0 Q4_1 Q5_0 Q4_K_M Q6_K Q3_K_M Q2_K; do
    f=$out/kjvwiki-$(echo "$t" | tr 'A-Z' 'a-z').gguf
    [[ -f $f ]] || $q convert models/kjvwiki-9m --qtype "$t" -o "$f" --quiet > /dev/null
    a=$($q ppl "$f" --text data/kjv/kjv_heldout.txt --json --quiet | field ppl)
    b=$($q ppl "$f" --text data/kjv/kjv_heldout.txt --reference --json --quiet | field ppl)
    printf "| %s | %.4f | %.4f | %s |\n" "$t" "$a" "$b" "$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%+.4f%%", 100 * (a / b - 1) }')"
  done
fi
