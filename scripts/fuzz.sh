#!/usr/bin/env bash
# Runs one libFuzzer target (tests/fuzz/targets.h) for SECONDS under ASan + UBSan:
#   bash scripts/fuzz.sh TARGET SECONDS      (TARGET: gguf gguf_file safetensors config imatrix llama2c llama2c_tokenizer policy bitplan sweep)
# Builds build-fuzz/ with clang, makes seed inputs with our own writers (build-fuzz/seeds/TARGET),
# fuzzes with tests/fuzz/corpus/TARGET (inputs worth keeping: every crasher, minimized, goes
# there; the normal suite replays that directory) and tests/fuzz/dict/TARGET.dict when present.
# Prints libFuzzer's final stats line; exits non-zero on a crash, leaving crash-* in build-fuzz/.
set -euo pipefail
cd "$(dirname "$0")/.."
t=${1:?usage: fuzz.sh TARGET SECONDS}
secs=${2:?usage: fuzz.sh TARGET SECONDS}
bash scripts/deps.sh  # clang among them
[[ -f build/bin/quant ]] || bash scripts/build.sh >/dev/null
gen=(); command -v ninja >/dev/null && gen=(-G Ninja)
san="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fsanitize=fuzzer-no-link -g -O1"
[[ -f build-fuzz/CMakeCache.txt ]] || CXX=clang++ cmake -S . -B build-fuzz "${gen[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DQUANT_FUZZ=ON -DQUANT_BUILD_TESTS=OFF -DCMAKE_CXX_FLAGS="$san" -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" >/dev/null
cmake --build build-fuzz --target "fuzz_$t" -j "$(nproc)" >/dev/null

# Seeds: small valid files of each format, written by our own tools.
q=build/bin/quant
seeds=build-fuzz/seeds/$t
stories=../shared/models/stories260K
if [[ ! -d $seeds ]]; then
  mkdir -p "$seeds"
  s=$(mktemp -d)
  case $t in
    gguf|gguf_file)
      for ty in Q4_0 Q8_0 F16; do $q convert "$stories/stories260K.bin" --tokenizer "$stories/tok512.bin" --qtype "$ty" -o "$seeds/$ty.gguf" --quiet >/dev/null; done ;;
    safetensors)
      $q calibrate models/kjvwiki-9m --calib data/kjv/kjv_heldout.txt --nsamples 2 --seqlen 64 -o "$s/st" --quiet >/dev/null
      cp "$s/st/blk.0.safetensors" "$seeds/" ;;
    config) cp models/kjvwiki-9m/config.json "$seeds/" ;;
    imatrix)
      $q calibrate models/kjvwiki-9m --calib data/kjv/kjv_heldout.txt --nsamples 2 --seqlen 64 --imatrix "$seeds/im.gguf" --quiet >/dev/null
      $q calibrate models/kjvwiki-9m --calib data/kjv/kjv_heldout.txt --nsamples 2 --seqlen 64 --imatrix "$seeds/im.dat" --quiet >/dev/null ;;
    llama2c) cp "$stories/stories260K.bin" "$seeds/" ;;
    llama2c_tokenizer) cp "$stories/tok512.bin" "$seeds/" ;;
    policy) printf '[{"match": "*_norm.weight", "qtype": "F32"}, {"match": "blk.*.attn_v.weight", "qtype": "Q6_K"}, {"match": "*", "qtype": "int4 g128 asym"}]' > "$seeds/policy.json" ;;
    sweep|bitplan)
      $q sweep models/kjvwiki-9m --calib data/kjv/kjv_heldout.txt --nsamples 2 --seqlen 64 --proxy-only --method rtn --bits 2,4 \
        --granularity kind -o "$s/sweep.json" --quiet >/dev/null
      $q plan "$s/sweep.json" --linear-bpw 3 -o "$s/plan.json" --quiet >/dev/null
      if [[ $t == sweep ]]; then cp "$s/sweep.json" "$seeds/"; else cp "$s/plan.json" "$seeds/"; fi ;;
  esac
  rm -rf "$s"
fi
corpus=tests/fuzz/corpus/$t
mkdir -p "$corpus"
dict=tests/fuzz/dict/$t.dict
work=build-fuzz/work/$t
mkdir -p "$work"
cd build-fuzz
args=(-max_total_time="$secs" -print_final_stats=1 -rss_limit_mb=2048 -timeout=10 -max_len=2000000)
[[ -f ../$dict ]] && args+=(-dict="../$dict")
# New inputs go to work/ (scratch); crashers are written here as crash-*; add them to the corpus by hand.
"./bin/fuzz_$t" "${args[@]}" "work/$t" "../$corpus" "seeds/$t" 2>&1 | tee "fuzz-$t.log" | grep -E "^(stat::|#[0-9]+ +DONE|==[0-9]+==ERROR|SUMMARY)" || true
grep -q "ERROR" "fuzz-$t.log" && exit 1
exit 0
