// ggml-quants.c's quantizers under an importance matrix, step for step: quantize_row_q{2,3,4,5,6}_K_impl,
// quantize_row_iq4_nl_impl with quant_weights, and quantize_row_q{4,5}_{0,1}_impl. Each weight's
// importance is qw[col] (llama-quantize's imatrix value: mean x² of that input column) times
// sqrt(σ² + x²), σ² the row's (or super-block's) mean square, except Q6_K, which uses qw alone.
// The legacy types give their grid (pack() writes the blocks); Q8_0 ignores the importance in ggml.
#include <cmath>
#include <cstring>

#include "kquant_search.h"
#include "quant/error.h"
#include "quant/half.h"
#include "quant/pack_blocks.h"

namespace quant::detail {

namespace {

// σ² of a super-block as the k-quant impls take it: `twice` · Σx² / 256.
float block_sigma2(const float* x, bool twice) {
  float sumx2 = 0;
  for (int j = 0; j < kQK_K; ++j) sumx2 += x[j] * x[j];
  return twice ? 2 * sumx2 / kQK_K : sumx2 / kQK_K;
}

void q2_k(const float* x, const float* qw, BlockQ2_K& y) {
  uint8_t L[kQK_K], Laux[16], Ls[16], Lm[16];
  float mins[16], scales[16], sw[16] = {}, weight[16];
  const float sigma2 = block_sigma2(x, false);
  for (int j = 0; j < 16; ++j) {
    for (int l = 0; l < 16; ++l) weight[l] = qw[16 * j + l] * std::sqrt(sigma2 + x[16 * j + l] * x[16 * j + l]);
    for (int l = 0; l < 16; ++l) sw[j] += weight[l];
    scales[j] = make_qkx2_quants(16, 3, x + 16 * j, weight, L + 16 * j, &mins[j], Laux, -0.9f, 0.05f, 36, false);
  }
  const float dm = make_qp_quants(16, 15, scales, Ls, sw);
  const float mm = make_qp_quants(16, 15, mins, Lm, sw);
  y.d = f32_to_fp16(dm);
  y.dmin = f32_to_fp16(mm);
  for (int j = 0; j < 16; ++j) y.scales[j] = static_cast<uint8_t>(Ls[j] | (Lm[j] << 4));
  requantize_q2_k(x, y, L);  // on the fp16-rounded d and dmin
  pack_2bit(L, y.qs);
}

void q3_k(const float* x, const float* qw, BlockQ3_K& y) {
  int8_t L[kQK_K], Ls[16];
  float scales[16], weight[16], sw[16];
  const float sigma2 = block_sigma2(x, true);
  for (int j = 0; j < 16; ++j) {
    for (int l = 0; l < 16; ++l) weight[l] = qw[16 * j + l] * std::sqrt(sigma2 + x[16 * j + l] * x[16 * j + l]);
    float sumw = 0;
    for (int l = 0; l < 16; ++l) sumw += weight[l];
    sw[j] = sumw;
    scales[j] = make_qx_quants(16, 4, x + 16 * j, L + 16 * j, weight);
  }
  std::memset(y.scales, 0, 12);
  const float d_block = make_qx_quants(16, 32, scales, Ls, sw);
  for (int j = 0; j < 16; ++j) put_q3_scale(j, Ls[j], y.scales);
  y.d = f32_to_fp16(d_block);
  requantize_q3_k(x, y, L);
  pack_q3_k(L, y);
}

// Q4_K (nmax 15) and Q5_K (nmax 31): codes into L.
template <class Block>
void q45_k(const float* x, const float* qw, Block& y, int nmax, uint8_t* L) {
  uint8_t Laux[32], Ls[8], Lm[8];
  float weights[32], sw[8], mins[8], scales[8];
  const float sigma2 = block_sigma2(x, true);
  for (int j = 0; j < 8; ++j) {
    for (int l = 0; l < 32; ++l) weights[l] = qw[32 * j + l] * std::sqrt(sigma2 + x[32 * j + l] * x[32 * j + l]);
    float sumw = 0;
    for (int l = 0; l < 32; ++l) sumw += weights[l];
    sw[j] = sumw;
    scales[j] = make_qkx2_quants(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, -0.9f, 0.05f, 36, false);
  }
  const float d_block = make_qp_quants(8, 63, scales, Ls, sw);
  const float m_block = make_qp_quants(8, 63, mins, Lm, sw);
  std::memset(y.scales, 0, sizeof(y.scales));
  for (int j = 0; j < 8; ++j) put_scale_min(j, std::min<uint8_t>(63, Ls[j]), std::min<uint8_t>(63, Lm[j]), y.scales);
  y.d = f32_to_fp16(d_block);
  y.dmin = f32_to_fp16(m_block);
  requantize_q45_k(x, y.d, y.dmin, y.scales, nmax, L);
}

void q4_k(const float* x, const float* qw, BlockQ4_K& y) {
  uint8_t L[kQK_K];
  q45_k(x, qw, y, 15, L);
  pack_q4_k(L, y);
}

void q5_k(const float* x, const float* qw, BlockQ5_K& y) {
  uint8_t L[kQK_K];
  q45_k(x, qw, y, 31, L);
  pack_q5_k(L, y);
}

void q6_k(const float* x, const float* qw, BlockQ6_K& y) {
  int8_t L[kQK_K];
  float scales[16];
  float max_scale = 0, max_abs_scale = 0;
  for (int ib = 0; ib < 16; ++ib) {
    scales[ib] = make_qx_quants(16, 32, x + 16 * ib, L + 16 * ib, qw + 16 * ib);
    if (std::fabs(scales[ib]) > max_abs_scale) {
      max_abs_scale = std::fabs(scales[ib]);
      max_scale = scales[ib];
    }
  }
  finish_q6_k(x, L, scales, max_scale, max_abs_scale, y);
}

template <class Block, class F>
void each_block(const float* x, const float* qw, void* dst, int64_t n, int64_t per, F f) {
  auto* p = static_cast<uint8_t*>(dst);
  for (int64_t i = 0; i < n / per; ++i) {
    Block b{};
    f(x + i * per, qw + i * per, b);
    std::memcpy(p + i * sizeof(Block), &b, sizeof(Block));
  }
}

}  // namespace

void quantize_row_imatrix(TType t, const float* x, void* dst, int64_t n, const float* qw) {
  const int64_t per = traits(t).block;
  QUANT_CHECK(n % per == 0, "{}: row of {} does not tile {}-weight blocks", ttype_name(t), n, per);
  switch (t) {
    case TType::Q2_K: return each_block<BlockQ2_K>(x, qw, dst, n, per, q2_k);
    case TType::Q3_K: return each_block<BlockQ3_K>(x, qw, dst, n, per, q3_k);
    case TType::Q4_K: return each_block<BlockQ4_K>(x, qw, dst, n, per, q4_k);
    case TType::Q5_K: return each_block<BlockQ5_K>(x, qw, dst, n, per, q5_k);
    case TType::Q6_K: return each_block<BlockQ6_K>(x, qw, dst, n, per, q6_k);
    case TType::IQ4_NL:
      return each_block<BlockIQ4_NL>(x, qw, dst, n, per, [](const float* v, const float* w, BlockIQ4_NL& b) {
        quantize_iq4(v, 32, w, &b.d, b.qs, nullptr, nullptr);
      });
    case TType::IQ4_XS:
      return each_block<BlockIQ4_XS>(x, qw, dst, n, per, [](const float* v, const float* w, BlockIQ4_XS& b) {
        quantize_iq4(v, kQK_K, w, &b.d, b.qs, &b.scales_h, b.scales_l);
      });
    default: break;
  }
  fail("{} has no importance-weighted quantizer", ttype_name(t));
}

void legacy_block_imatrix(TType t, const float* x, const float* qw, float sigma2, uint8_t* codes, float& scale, float& min) {
  float weight[kQK];
  for (int j = 0; j < kQK; ++j) weight[j] = qw[j] * std::sqrt(sigma2 + x[j] * x[j]);
  if (t == TType::Q4_0 || t == TType::Q5_0) {  // quantize_row_q{4,5}_0_impl: make_qx_quants, codes 0..2·nmax−1
    const int nmax = t == TType::Q4_0 ? 8 : 16;
    int8_t L[kQK];
    scale = round_fp16(make_qx_quants(kQK, nmax, x, L, weight));
    for (int j = 0; j < kQK; ++j) codes[j] = static_cast<uint8_t>(L[j]);
    min = -static_cast<float>(nmax) * scale;
    return;
  }
  QUANT_CHECK(t == TType::Q4_1 || t == TType::Q5_1, "{} has no importance-weighted quantizer", ttype_name(t));
  uint8_t Laux[kQK];  // quantize_row_q{4,5}_1_impl: make_qkx3_quants, rmin −0.9, 36 steps of 0.05
  float neg_min = 0;
  scale = round_fp16(make_qkx2_quants(kQK, t == TType::Q4_1 ? 15 : 31, x, weight, codes, &neg_min, Laux, -0.9f, 0.05f, 36, false));
  min = round_fp16(-neg_min);
}

}  // namespace quant::detail
