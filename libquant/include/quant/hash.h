// FNV-1a, 64 bits: the cheap fingerprints of our own records (a sweep's model identity, the
// tokenizer key of a cached text). Not for anything adversarial.
#pragma once

#include <cstddef>
#include <cstdint>

namespace quant {

inline constexpr uint64_t kFnv1aOffset = 1469598103934665603ull;

inline uint64_t fnv1a(uint64_t h, const void* p, size_t n) {
  const auto* b = static_cast<const uint8_t*>(p);
  for (size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 1099511628211ull;
  return h;
}

}  // namespace quant
