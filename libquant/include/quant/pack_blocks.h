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

static_assert(sizeof(BlockQ4_0) == 18);
static_assert(sizeof(BlockQ4_1) == 20);
static_assert(sizeof(BlockQ5_0) == 22);
static_assert(sizeof(BlockQ5_1) == 24);
static_assert(sizeof(BlockQ8_0) == 34);

}  // namespace quant
