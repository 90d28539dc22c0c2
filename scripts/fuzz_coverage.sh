#!/usr/bin/env bash
# Line coverage of a reader under its fuzz corpus (llvm-cov, clang's source-based coverage):
#   bash scripts/fuzz_coverage.sh TARGET [SOURCE ...]     (READER=REGEX: the reader's functions)
# Builds build-cov/ (clang, -fprofile-instr-generate -fcoverage-mapping, no sanitizers), runs
# fuzz_TARGET once over every input it has (tests/fuzz/corpus/TARGET, build-fuzz/work/TARGET,
# build-fuzz/seeds/TARGET: what scripts/fuzz.sh grew), and prints llvm-cov's line coverage of the
# SOURCE files (default: the reader's own file), of each function in them, and of the reader: the
# functions whose names match READER (default per target below; else those the target reaches).
set -euo pipefail
cd "$(dirname "$0")/.."
t=${1:?usage: fuzz_coverage.sh TARGET [SOURCE ...]}
shift
declare -A reader=([safetensors]=formats/safetensors.cpp [gguf]=formats/gguf.cpp [gguf_file]=formats/gguf.cpp
                   [config]=formats/hf.cpp [imatrix]=formats/imatrix.cpp [llama2c]=formats/llama2c.cpp
                   [llama2c_tokenizer]=formats/llama2c.cpp [onnx]=formats/onnx_reader.cpp [torch_bin]=formats/torch_bin.cpp
                   [tokenizer_json]=formats/hf_tokenizer.cpp [stats]=calibration/stats_dir.cpp)
declare -A funcs=([safetensors]='SafetensorsFile|st_dtype' [config]='parse_hf_config|parse_rope_scaling|read_json_file'
                  [gguf]='GgufFile::|read_string|scalar_size|read_scalar|align_up' [gguf_file]='GgufFile::|read_string|scalar_size|read_scalar|align_up')
re=${READER:-${funcs[$t]:-}}
sources=("$@")
[[ ${#sources[@]} -gt 0 ]] || sources=("${reader[$t]:?no default source for $t: name the files}")
bash scripts/deps.sh  # clang and llvm among them
gen=(); command -v ninja >/dev/null && gen=(-G Ninja)
flags="-fprofile-instr-generate -fcoverage-mapping -fsanitize=fuzzer-no-link -g -O1"
[[ -f build-cov/CMakeCache.txt ]] || CXX=clang++ cmake -S . -B build-cov "${gen[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DQUANT_FUZZ=ON -DQUANT_BUILD_TESTS=OFF -DCMAKE_CXX_FLAGS="$flags" -DCMAKE_EXE_LINKER_FLAGS="-fprofile-instr-generate" >/dev/null
cmake --build build-cov --target "fuzz_$t" -j "$(nproc)" >/dev/null
prof=$(mktemp -d)
inputs=()
for d in tests/fuzz/corpus/$t build-fuzz/work/$t build-fuzz/seeds/$t; do [[ -d $d ]] && inputs+=("$d"); done
[[ ${#inputs[@]} -gt 0 ]] || { echo "no inputs for $t: run scripts/fuzz.sh $t SECONDS first" >&2; exit 1; }
n=$(find "${inputs[@]}" -type f | wc -l)
LLVM_PROFILE_FILE="$prof/%p.profraw" "build-cov/bin/fuzz_$t" -runs=0 "${inputs[@]}" >/dev/null 2>&1 || true
llvm-profdata merge -sparse "$prof"/*.profraw -o "$prof/all.profdata"
echo "fuzz_$t over $n inputs (${inputs[*]})"
llvm-cov report "build-cov/bin/fuzz_$t" -instr-profile="$prof/all.profdata" "${sources[@]}" | sed -n '1,2p;/^TOTAL/p;/\.cpp/p'
# Per function; the reader: the functions READER names (a file may also hold a writer, or a loader beyond the reader).
llvm-cov report "build-cov/bin/fuzz_$t" -instr-profile="$prof/all.profdata" -show-functions "${sources[@]}" |
  c++filt | awk -v re="$re" 'NF >= 10 && $(NF-8) ~ /^[0-9]+$/ && $1 != "TOTAL" {
         name = $0; sub(/ +[0-9]+ +[0-9]+ +[0-9.]+% +[0-9]+ +[0-9]+ +[0-9.-]+% +[0-9]+ +[0-9]+ +[0-9.-]+%$/, "", name); sub(/^.*\.cxx:/, "", name)
         $2 = $(NF-8); $3 = $(NF-7); $5 = $(NF-5); $6 = $(NF-4)
         reached = re == "" ? $2 != $3 : name ~ re
         printf "  %-7s %4d/%-4d lines  %s\n", reached ? "reader" : "", $5 - $6, $5, name
         if (reached) { cov += $5 - $6; all += $5 } }
       END { printf "reader (%s): %d of %d lines, %.1f%%\n", re == "" ? "the functions reached" : re, cov, all, all ? 100 * cov / all : 0 }' |
  cut -c1-170
rm -rf "$prof"
