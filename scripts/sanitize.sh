#!/usr/bin/env bash
# The test suite under AddressSanitizer + UndefinedBehaviorSanitizer (GCC, the compiler of the
# normal build), in build-asan/:
#   bash scripts/sanitize.sh [CTEST_ARGS ...]     e.g. -R "golden|fuzz" or -LE peers
# Every library, the quant CLI the tests run, the test binary and the llama.cpp shims are built
# with -fsanitize=address,undefined (any UB report is fatal); the LibTorch reference tests are
# left out (LibTorch is not built with ASan). A sanitizer report fails its test: ASan's exit code
# is 1, the same as a refused input, so the tests' "one error line" checks catch the report.
# Leaks are checked in our processes; libllama, dlopen'ed by the shims, is not ours
# (tests/sanitize/lsan.supp).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
gen=(); command -v ninja >/dev/null && gen=(-G Ninja)
san="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
[[ -f build-asan/CMakeCache.txt ]] || cmake -S . -B build-asan "${gen[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DQUANT_BUILD_TORCH_TESTS=OFF -DCMAKE_CXX_FLAGS="$san" -DCMAKE_EXE_LINKER_FLAGS="$san" -DCMAKE_SHARED_LINKER_FLAGS="$san" >/dev/null
cmake --build build-asan -j "$(nproc)" --target quant quant_tests llama_quantize_shim llama_logprobs_shim
# The peers (node-llama-cpp, onnxruntime-node) are not built here: share the normal build's download.
[[ -d build/peers && ! -e build-asan/peers ]] && ln -s ../build/peers build-asan/peers
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:strict_string_checks=1:detect_stack_use_after_return=1:check_initialization_order=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export LSAN_OPTIONS="suppressions=$PWD/tests/sanitize/lsan.supp:print_suppressions=0"
cd build-asan
ctest --output-on-failure -j "$(nproc)" --timeout 3600 "$@"
