// ggml's super-block types (ggml-common.h), each struct once: the k-quants (256 weights with
// two-level scales) and the non-linear IQ4 types. Their quantizers follow ggml's
// quantize_row_*_ref / quantize_* step for step (pack/kquants.cpp), so that the bytes agree
// with llama.cpp's; the layouts are in docs/formats.md.
#pragma once

#include <cstdint>

#include "quant/qtype.h"

namespace quant {

inline constexpr int kQK_K = 256;

// Q2_K: 16 sub-blocks of 16, x = d·(sc & 15)·q − dmin·(sc >> 4), q 2-bit. qs: for each 128
// weights, byte l holds weights l, l+32, l+64, l+96 in bit pairs 0, 2, 4, 6.
struct BlockQ2_K {
  uint8_t scales[kQK_K / 16];
  uint8_t qs[kQK_K / 4];
  uint16_t d, dmin;
};
// Q3_K: 16 sub-blocks of 16, x = d·(sc − 32)·(q − 4), q 3-bit: two low bits in qs as Q2_K,
// the high bit of weight j in hmask[j % 32] bit j / 32; sc 6-bit, packed in scales[12].
struct BlockQ3_K {
  uint8_t hmask[kQK_K / 8];
  uint8_t qs[kQK_K / 4];
  uint8_t scales[12];
  uint16_t d;
};
// Q4_K: 8 sub-blocks of 32, x = d·sc·q − dmin·m (sc, m 6-bit in scales[12], get_scale_min).
// For each 64 weights byte l holds weight l (low nibble) and l + 32 (high nibble).
struct BlockQ4_K {
  uint16_t d, dmin;
  uint8_t scales[12];
  uint8_t qs[kQK_K / 2];
};
// Q5_K: Q4_K plus a fifth bit: weight l + 64k (l < 32) has its high bit in qh[l] bit 2k, weight
// l + 32 + 64k in bit 2k + 1.
struct BlockQ5_K {
  uint16_t d, dmin;
  uint8_t scales[12];
  uint8_t qh[kQK_K / 8];
  uint8_t qs[kQK_K / 2];
};
// Q6_K: 16 sub-blocks of 16, x = d·sc·(q − 32), sc int8. Per 128 weights: ql[l] low nibbles of
// l (low) and l + 64 (high), ql[l + 32] of l + 32 and l + 96; qh[l] bits 2k..2k+1 are the top
// two bits of weight l + 32k.
struct BlockQ6_K {
  uint8_t ql[kQK_K / 2];
  uint8_t qh[kQK_K / 4];
  int8_t scales[kQK_K / 16];
  uint16_t d;
};
// IQ4_NL: blocks of 32, x = d·kIQ4Levels[q]; byte j holds weights j (low) and j + 16 (high).
struct BlockIQ4_NL {
  uint16_t d;
  uint8_t qs[16];
};
// IQ4_XS: 8 sub-blocks of 32, x = d·(ls − 32)·kIQ4Levels[q]; ls 6-bit: low nibble in scales_l
// (sub-block 2i low, 2i + 1 high), top two bits in scales_h bits 2j..2j+1; qs as IQ4_NL per 32.
struct BlockIQ4_XS {
  uint16_t d;
  uint16_t scales_h;
  uint8_t scales_l[kQK_K / 64];
  uint8_t qs[kQK_K / 2];
};
static_assert(sizeof(BlockQ2_K) == 84);
static_assert(sizeof(BlockQ3_K) == 110);
static_assert(sizeof(BlockQ4_K) == 144);
static_assert(sizeof(BlockQ5_K) == 176);
static_assert(sizeof(BlockQ6_K) == 210);
static_assert(sizeof(BlockIQ4_NL) == 18);
static_assert(sizeof(BlockIQ4_XS) == 136);

// ggml's kvalues_iq4nl: the 16 levels of both IQ4 types.
inline constexpr int8_t kIQ4Levels[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

// The types quantized here rather than as legacy 32-blocks (pack/ggml_blocks.cpp).
inline bool is_kquant(TType t) {
  return t == TType::Q2_K || t == TType::Q3_K || t == TType::Q4_K || t == TType::Q5_K || t == TType::Q6_K ||
         t == TType::IQ4_NL || t == TType::IQ4_XS;
}
inline bool is_nonlinear(TType t) { return t == TType::IQ4_NL || t == TType::IQ4_XS; }

// Q3_K's 6-bit scale code of sub-block j (0..15) from its 12 packed bytes: the scale is d·(code − 32).
inline int get_q3_scale(int j, const uint8_t* q) {
  const int lo = j < 8 ? q[j] & 0xF : q[j - 8] >> 4;
  return lo | (((q[8 + j % 4] >> (2 * (j / 4))) & 3) << 4);
}

// Scale and min code j (0..7) of a Q4_K/Q5_K block's 12 packed bytes.
inline void get_scale_min(int j, const uint8_t* q, uint8_t& sc, uint8_t& m) {
  if (j < 4) {
    sc = q[j] & 63;
    m = q[j + 4] & 63;
  } else {
    sc = static_cast<uint8_t>((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
    m = static_cast<uint8_t>((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
  }
}

// n weights (a multiple of the type's block) to fp32, as ggml's dequantize_row_* computes them.
void dequantize_kquant(TType t, const void* src, float* y, int64_t n);
// What llama.cpp's quantizer (ggml_quantize_chunk) writes for one row of n weights: without an
// importance matrix quantize_row_*_ref for the k-quants, quantize_iq4_* (7 scale tries) for
// IQ4; with one (`importance`: n values, llama-quantize's per-column mean x²) the
// quantize_row_*_impl variants.
void quantize_kquant(TType t, const float* x, void* dst, int64_t n, const float* importance = nullptr);
// Code, scale and min of every weight of one row as a grid, value = scale·code + min (for IQ4:
// scale·level[code], min 0), in sub-blocks of kquant_group: the values dequantize gives.
void kquant_grid(TType t, const void* src, int64_t n, uint8_t* codes, float* scales, float* mins);
int kquant_group(TType t);
int kquant_bits(TType t);
// Replaces the codes of one block (kquant_grid's codes, for one block's weights) and keeps its
// scales: GPTQ's codes on the grid it fitted.
void kquant_set_codes(TType t, void* block, const uint8_t* codes);

}  // namespace quant
