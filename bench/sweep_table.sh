#!/usr/bin/env bash
# Issue 6's figures: a GPTQ tensor-granularity sweep of the bundled model over bits 2,3,4,8
# (calibration kjv_train.txt 128 x 512, damage measured on wiki.test.raw, ctx 512, the first
# CHUNKS windows), plans at 3.5 and 4.5 bits per weight, uniform GPTQ INT3 / INT4 g128 with the
# same token_embd / output treatment (Q8_0), and one compare report over the whole text.
# The sweep measures on CHUNKS windows spread evenly over the text (--spread), not its first ones.
# The 4.5 plan twice: free to use every width, and with --bits 4,8 (no unit below uniform's 4 bits).
#   bash bench/sweep_table.sh            (Q=path/to/quant OUT=dir CHUNKS=40 EVAL_CHUNKS=0 SPREAD= to override;
#                                         REUSE_SWEEP=1 keeps an existing OUT/sweep.json)
set -euo pipefail
cd "$(dirname "$0")/.."
Q=${Q:-build/bin/quant}
M=models/kjvwiki-9m
OUT=${OUT:-build/sweep-bench}
CHUNKS=${CHUNKS:-40}
EVAL_CHUNKS=${EVAL_CHUNKS:-0}   # 0: the whole text in the compare report
SPREAD=${SPREAD---spread}
WIKI=../shared/data/wikitext-2-raw/wiki.test.raw
CALIB=data/kjv/kjv_train.txt
[[ -f $WIKI ]] || { echo "sweep_table: $WIKI is absent (../shared)" >&2; exit 1; }
mkdir -p "$OUT"
t0=$(date +%s)
[[ -n ${REUSE_SWEEP:-} && -f $OUT/sweep.json ]] || $Q sweep $M --method gptq --calib $CALIB --text $WIKI --bits 2,3,4,8 --group-size 128 --granularity tensor \
  --chunks "$CHUNKS" $SPREAD -o "$OUT/sweep.json" > "$OUT/sweep.txt"
t1=$(date +%s)
for b in 3.5 4.5; do $Q plan "$OUT/sweep.json" --linear-bpw $b -o "$OUT/plan-$b.json" > "$OUT/plan-$b.txt"; done
$Q plan "$OUT/sweep.json" --linear-bpw 4.5 --bits 4,8 -o "$OUT/plan-4.5-w48.json" > "$OUT/plan-4.5-w48.txt"
echo '[{"match": "token_embd.weight", "qtype": "Q8_0"}]' > "$OUT/rest.json"
for b in 3 4; do
  $Q convert $M --method gptq --calib $CALIB --bits $b --group-size 128 --asym --policy "$OUT/rest.json" --quiet \
    -o "$OUT/gptq-int$b-g128.gguf" > /dev/null
done
for b in 3.5 4.5 4.5-w48; do
  $Q convert $M --plan "$OUT/plan-$b.json" --calib $CALIB --quiet -o "$OUT/gptq-plan-$b.gguf" > /dev/null
done
chunks=(); [[ $EVAL_CHUNKS != 0 ]] && chunks=(--chunks "$EVAL_CHUNKS")
$Q compare $M "$OUT/gptq-int3-g128.gguf" "$OUT/gptq-plan-3.5.gguf" "$OUT/gptq-int4-g128.gguf" "$OUT/gptq-plan-4.5.gguf" \
  "$OUT/gptq-plan-4.5-w48.gguf" \
  --label FP16 --label "GPTQ INT3 g128" --label "plan 3.5 bpw" --label "GPTQ INT4 g128" --label "plan 4.5 bpw" \
  --label "plan 4.5 bpw, bits 4,8" \
  --text $WIKI "${chunks[@]}" --sweep "$OUT/sweep.json" --quiet -o "$OUT/report" > "$OUT/report.txt"
t2=$(date +%s)
cat "$OUT/plan-3.5.txt" | tail -3
cat "$OUT/plan-4.5.txt" | tail -3
cat "$OUT/plan-4.5-w48.txt" | tail -3
tail -4 "$OUT/sweep.txt"
cat "$OUT/report.txt"
echo "sweep $((t1 - t0)) s; plans, conversions and report $((t2 - t1)) s"
