// One libFuzzer target per reader: built with -DQFUZZ_TARGET="gguf" etc. by scripts/fuzz.sh.
#include "targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const qfuzz::Target& t = qfuzz::target(QFUZZ_TARGET);
  qfuzz::run_bytes(t, data, size);
  return 0;
}
