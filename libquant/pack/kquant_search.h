// ggml-quants.c's scale searches, shared by the reference (kquants.cpp) and the
// importance-weighted (kquants_imatrix.cpp) block quantizers. Internal to libquant/pack; compiled
// without fused multiply-add like the rest of ggml's arithmetic here.
#pragma once

#include <cstdint>
#include <cstring>

#include "quant/kquants.h"

namespace quant::detail {

constexpr float kGroupMaxEps = 1e-15f;

// ggml's nearest_int: round to nearest (ties to even) through the float mantissa.
inline int nearest_int(float f) {
  float v = f + 12582912.f;
  int32_t i;
  std::memcpy(&i, &v, 4);
  return (i & 0x007fffff) - 0x00400000;
}

// The largest |x[i]| (first one on ties), with its signed value in `max`.
float abs_max(const float* x, int n, float& max);

// ggml's best_index_int8 over the IQ4 levels: the nearest level (ties to the upper one).
int best_level(float x);

// Scale and min of n weights on codes 0..nmax: weighted least squares over nstep+1 candidate
// inverse scales (rmin + rdelta·is + nmax)/(max − min), error squared or absolute (use_mad);
// the min is kept ≤ 0 and returned negated. (ggml's make_qkx3_quants is this with non-null
// weights, as every caller passes them.)
float make_qkx2_quants(int n, int nmax, const float* x, const float* weights, uint8_t* L, float* the_min, uint8_t* Laux,
                       float rmin, float rdelta, int nstep, bool use_mad);

// Symmetric scale of n weights on codes −nmax..nmax−1 (stored + nmax): the weighted least
// squares scale over 18 perturbed inverse scales (ggml's rmse_type 1; qw null: weights x²).
float make_qx_quants(int n, int nmax, const float* x, int8_t* L, const float* qw);

// Q3_K's reference sub-block scale: min-max, then up to 5 passes moving single codes where the
// x²-weighted fit improves. Codes stored + nmax.
float make_q3_quants(int n, int nmax, const float* x, int8_t* L);

// A non-negative scale for n non-negative values on codes 0..nmax (the sub-block scales and
// mins of Q2_K / Q4_K / Q5_K under an importance matrix): 9 candidate scales by weighted error,
// then up to 5 passes moving single codes.
float make_qp_quants(int n, int nmax, const float* x, uint8_t* L, const float* quant_weights);

// quantize_row_iq4_nl_impl for one super-block of n weights in sub-blocks of 32 (n = 32: IQ4_NL,
// one fp16 scale; n = 256: IQ4_XS, 6-bit sub-block scales under d = −max_scale/32), ntry 7 as
// quantize_iq4_nl/_xs pass it. qw: the importance of these n weights, or null (weights x²).
void quantize_iq4(const float* x, int n, const float* qw, uint16_t* dh, uint8_t* q4, uint16_t* scales_h, uint8_t* scales_l);

// Q4_K / Q5_K's 12 bytes of eight 6-bit scale and min codes.
inline void put_scale_min(int j, uint8_t ls, uint8_t lm, uint8_t* s) {
  if (j < 4) {
    s[j] = ls;
    s[j + 4] = lm;
  } else {
    s[j + 4] = static_cast<uint8_t>((ls & 0xF) | ((lm & 0xF) << 4));
    s[j - 4] |= static_cast<uint8_t>((ls >> 4) << 6);
    s[j] |= static_cast<uint8_t>((lm >> 4) << 6);
  }
}

// The two bits of weights j+l, j+l+32, j+l+64, j+l+96 in one byte (Q2_K, Q3_K).
inline void pack_2bit(const uint8_t* L, uint8_t* qs) {
  for (int j = 0; j < kQK_K; j += 128)
    for (int l = 0; l < 32; ++l)
      qs[j / 4 + l] = static_cast<uint8_t>(L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) | (L[j + l + 96] << 6));
}

// Q3_K's 6-bit scale code l (0..63, the scale is d·(l − 32)) of sub-block j into its 12 bytes
// (which start zeroed).
inline void put_q3_scale(int j, int l, uint8_t* s) {
  if (j < 8)
    s[j] = static_cast<uint8_t>(s[j] | (l & 0xF));
  else
    s[j - 8] = static_cast<uint8_t>(s[j - 8] | ((l & 0xF) << 4));
  s[j % 4 + 8] = static_cast<uint8_t>(s[j % 4 + 8] | ((l >> 4) << (2 * (j / 4))));
}

// The codes again on the block's stored (fp16-rounded) scales, as every ggml k-quantizer ends:
// Q2_K 0..3, Q3_K 0..7 (stored + 4), Q4_K / Q5_K 0..nmax.
void requantize_q2_k(const float* x, const BlockQ2_K& y, uint8_t* L);
void requantize_q3_k(const float* x, const BlockQ3_K& y, int8_t* L);
void requantize_q45_k(const float* x, uint16_t d, uint16_t dmin, const uint8_t* scales, int nmax, uint8_t* L);

// Block layouts shared by both quantizers (kquants.cpp): codes L (Q3_K: 0..7, Q4_K: 0..15,
// Q5_K: 0..31) into the block; Q6_K from its sub-block scales on (the codes are redone on the
// stored scales).
void pack_q3_k(const int8_t* L, BlockQ3_K& y);
void pack_q4_k(const uint8_t* L, BlockQ4_K& y);
void pack_q5_k(const uint8_t* L, BlockQ5_K& y);
void pack_q6_k(const int8_t* L, BlockQ6_K& y);  // codes 0..63
void pack_iq4(const uint8_t* L, int n, uint8_t* q4);  // n level indices, nibbles per 32
void finish_q6_k(const float* x, int8_t* L, const float* scales, float max_scale, float max_abs_scale, BlockQ6_K& y);

// One row of n weights under an importance matrix (qw: one value per weight of the row):
// ggml's quantize_* with quant_weights, for the k-quants and IQ4.
void quantize_row_imatrix(TType t, const float* x, void* dst, int64_t n, const float* qw);
// One 32-block of Q4_0 / Q4_1 / Q5_0 / Q5_1 as quantize_row_*_impl fits it under the importance
// qw (sigma2: the row's mean square): the codes it stores, its fp16-rounded scale, and the min
// (Q4_0 / Q5_0: −8 / −16 times the scale; Q4_1 / Q5_1: the fp16-rounded m).
void legacy_block_imatrix(TType t, const float* x, const float* qw, float sigma2, uint8_t* codes, float& scale, float& min);

}  // namespace quant::detail
