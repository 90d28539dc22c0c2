// The readers that take outside bytes, each as one function of a file's bytes: the bodies of the
// libFuzzer targets (fuzz_main.cpp, scripts/fuzz.sh) and of the corpus replay in the normal suite
// (test_corpus.cpp). A refused file (quant::Error) is a normal outcome; any other exception, a
// crash or a sanitizer report is a bug.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace qfuzz {

struct Target {
  const char* name;       // "gguf", "safetensors", ...
  const char* file_name;  // what the bytes are written as (the readers take paths; some look at the name)
  void (*read)(const std::string& path);
};

const std::vector<Target>& targets();
const Target& target(const std::string& name);  // throws std::invalid_argument for an unknown name

// Writes the bytes to a per-process scratch file named as the target wants and reads it.
// Returns true when the reader accepted the file, false when it refused it with quant::Error.
bool run_bytes(const Target& t, const uint8_t* data, size_t size);

}  // namespace qfuzz
