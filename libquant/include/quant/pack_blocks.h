// On-disk ggml block structs: the byte-layout spec (ggml-common.h). Little-endian.
#pragma once

#include <cstdint>

namespace quant {

inline constexpr int kQK = 32;  // elements per block of every legacy type

// x = d * (q - 8); byte j: element j in the low nibble, element j+16 in the high nibble.
struct BlockQ4_0 {
  uint16_t d;
  uint8_t qs[kQK / 2];
};
// x = d * q + m; nibbles as Q4_0.
struct BlockQ4_1 {
  uint16_t d, m;
  uint8_t qs[kQK / 2];
};
// x = d * (q - 16); low nibbles as Q4_0; bit j of qh (u32) is bit 4 of element j.
struct BlockQ5_0 {
  uint16_t d;
  uint8_t qh[4];
  uint8_t qs[kQK / 2];
};
// x = d * q + m; nibbles and qh as Q5_0.
struct BlockQ5_1 {
  uint16_t d, m;
  uint8_t qh[4];
  uint8_t qs[kQK / 2];
};
// x = d * q, q signed.
struct BlockQ8_0 {
  uint16_t d;
  int8_t qs[kQK];
};

// ggml's nibble order, for every 32-block of 4-bit codes (Q4_x, the low bits of Q5_x, the W4
// kernels' repacking): byte j holds element j in its low nibble and element j + 16 in its high one.
inline int nibble_code(const uint8_t* qs, int j) { return j < kQK / 2 ? (qs[j] & 0x0F) : (qs[j - kQK / 2] >> 4); }
template <class Code>
void put_nibbles(uint8_t* qs, const Code* codes) {
  for (int j = 0; j < kQK / 2; ++j) qs[j] = static_cast<uint8_t>((codes[j] & 0x0F) | ((codes[j + kQK / 2] & 0x0F) << 4));
}

static_assert(sizeof(BlockQ4_0) == 18);
static_assert(sizeof(BlockQ4_1) == 20);
static_assert(sizeof(BlockQ5_0) == 22);
static_assert(sizeof(BlockQ5_1) == 24);
static_assert(sizeof(BlockQ8_0) == 34);

}  // namespace quant
