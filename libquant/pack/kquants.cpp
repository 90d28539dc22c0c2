// The super-block quantizers of ggml-quants.c without an importance matrix, step for step:
// quantize_row_q{2,3,4,5,6}_K_ref, and quantize_row_iq4_nl_impl as quantize_iq4_nl / _xs call it
// (the searches in kquant_search.cpp; with an importance matrix: kquants_imatrix.cpp). Compiled
// without fused multiply-add (CMakeLists.txt): ggml-base is, and one fused rounding flips a scale.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "quant/error.h"
#include "quant/half.h"
#include "quant/kquants.h"
#include "kquant_search.h"

namespace quant {

namespace {

using namespace detail;

void quantize_q2_k(const float* x, BlockQ2_K& y) {
  uint8_t L[kQK_K], Laux[16];
  float weights[16], mins[16], scales[16];
  const float q4scale = 15.f;
  float max_scale = 0, max_min = 0;
  for (int j = 0; j < 16; ++j) {
    for (int l = 0; l < 16; ++l) weights[l] = std::fabs(x[16 * j + l]);
    scales[j] = make_qkx2_quants(16, 3, x + 16 * j, weights, L + 16 * j, &mins[j], Laux, -0.5f, 0.1f, 15, true);
    max_scale = std::max(max_scale, scales[j]);
    max_min = std::max(max_min, mins[j]);
  }
  if (max_scale > 0) {
    const float iscale = q4scale / max_scale;
    for (int j = 0; j < 16; ++j) y.scales[j] = static_cast<uint8_t>(nearest_int(iscale * scales[j]));
    y.d = f32_to_fp16(max_scale / q4scale);
  } else {
    std::memset(y.scales, 0, sizeof(y.scales));
    y.d = f32_to_fp16(0.f);
  }
  if (max_min > 0) {
    const float iscale = q4scale / max_min;
    for (int j = 0; j < 16; ++j) y.scales[j] = static_cast<uint8_t>(y.scales[j] | (nearest_int(iscale * mins[j]) << 4));
    y.dmin = f32_to_fp16(max_min / q4scale);
  } else {
    y.dmin = f32_to_fp16(0.f);
  }
  requantize_q2_k(x, y, L);
  pack_2bit(L, y.qs);
}

void quantize_q3_k(const float* x, BlockQ3_K& y) {
  int8_t L[kQK_K];
  float scales[16];
  float max_scale = 0, amax = 0;
  for (int j = 0; j < 16; ++j) {
    scales[j] = make_q3_quants(16, 4, x + 16 * j, L + 16 * j);
    const float scale = std::fabs(scales[j]);
    if (scale > amax) {
      amax = scale;
      max_scale = scales[j];
    }
  }
  std::memset(y.scales, 0, 12);
  if (max_scale) {
    const float iscale = -32.f / max_scale;
    for (int j = 0; j < 16; ++j) {
      const int8_t l = static_cast<int8_t>(nearest_int(iscale * scales[j]));
      put_q3_scale(j, std::max<int>(-32, std::min<int>(31, l)) + 32, y.scales);
    }
    y.d = f32_to_fp16(1 / iscale);
  } else {
    y.d = f32_to_fp16(0.f);
  }
  requantize_q3_k(x, y, L);
  pack_q3_k(L, y);
}

// Q4_K and Q5_K: eight sub-blocks of 32 on codes 0..nmax, weights av_x + |x|.
template <class Block>
void quantize_q45_k(const float* x, Block& y, int nmax, float rmin, int nstep, uint8_t* L) {
  uint8_t Laux[32];
  float weights[32], mins[8], scales[8];
  float max_scale = 0, max_min = 0;
  for (int j = 0; j < 8; ++j) {
    float sum_x2 = 0;
    for (int l = 0; l < 32; ++l) sum_x2 += x[32 * j + l] * x[32 * j + l];
    const float av_x = std::sqrt(sum_x2 / 32);
    for (int l = 0; l < 32; ++l) weights[l] = av_x + std::fabs(x[32 * j + l]);
    scales[j] = make_qkx2_quants(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, rmin, 0.1f, nstep, false);
    max_scale = std::max(max_scale, scales[j]);
    max_min = std::max(max_min, mins[j]);
  }
  const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
  const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
  std::memset(y.scales, 0, sizeof(y.scales));
  for (int j = 0; j < 8; ++j)
    put_scale_min(j, static_cast<uint8_t>(std::min(63, nearest_int(inv_scale * scales[j]))),
                  static_cast<uint8_t>(std::min(63, nearest_int(inv_min * mins[j]))), y.scales);
  y.d = f32_to_fp16(max_scale / 63.f);
  y.dmin = f32_to_fp16(max_min / 63.f);
  requantize_q45_k(x, y.d, y.dmin, y.scales, nmax, L);
}

void quantize_q4_k(const float* x, BlockQ4_K& y) {
  uint8_t L[kQK_K];
  quantize_q45_k(x, y, 15, -1.f, 20, L);
  pack_q4_k(L, y);
}

void quantize_q5_k(const float* x, BlockQ5_K& y) {
  uint8_t L[kQK_K];
  quantize_q45_k(x, y, 31, -0.5f, 15, L);
  pack_q5_k(L, y);
}

void quantize_q6_k(const float* x, BlockQ6_K& y) {
  int8_t L[kQK_K];
  float scales[16];
  float max_scale = 0, max_abs_scale = 0;
  for (int ib = 0; ib < 16; ++ib) {
    scales[ib] = make_qx_quants(16, 32, x + 16 * ib, L + 16 * ib, nullptr);
    if (std::fabs(scales[ib]) > max_abs_scale) {
      max_abs_scale = std::fabs(scales[ib]);
      max_scale = scales[ib];
    }
  }
  finish_q6_k(x, L, scales, max_scale, max_abs_scale, y);
}

template <class Block, class F>
void each_block(const float* x, void* dst, int64_t n, int64_t per, F f) {
  auto* p = static_cast<uint8_t*>(dst);
  for (int64_t i = 0; i < n / per; ++i) {
    Block b{};
    f(x + i * per, b);
    std::memcpy(p + i * sizeof(Block), &b, sizeof(Block));
  }
}

}  // namespace

namespace detail {

void requantize_q2_k(const float* x, const BlockQ2_K& y, uint8_t* L) {
  for (int j = 0; j < 16; ++j) {
    const float d = fp16_to_f32(y.d) * (y.scales[j] & 0xF);
    if (!d) continue;
    const float dm = fp16_to_f32(y.dmin) * (y.scales[j] >> 4);
    for (int ii = 0; ii < 16; ++ii)
      L[16 * j + ii] = static_cast<uint8_t>(std::max(0, std::min(3, nearest_int((x[16 * j + ii] + dm) / d))));
  }
}

void requantize_q3_k(const float* x, const BlockQ3_K& y, int8_t* L) {
  for (int j = 0; j < 16; ++j) {
    const float d = fp16_to_f32(y.d) * (get_q3_scale(j, y.scales) - 32);
    if (!d) continue;
    for (int ii = 0; ii < 16; ++ii)
      L[16 * j + ii] = static_cast<int8_t>(std::max(-4, std::min(3, nearest_int(x[16 * j + ii] / d))) + 4);
  }
}

void requantize_q45_k(const float* x, uint16_t dd, uint16_t dmin, const uint8_t* scales, int nmax, uint8_t* L) {
  for (int j = 0; j < 8; ++j) {
    uint8_t sc, m;
    get_scale_min(j, scales, sc, m);
    const float d = fp16_to_f32(dd) * sc;
    if (!d) continue;
    const float dm = fp16_to_f32(dmin) * m;
    for (int ii = 0; ii < 32; ++ii)
      L[32 * j + ii] = static_cast<uint8_t>(std::max(0, std::min(nmax, nearest_int((x[32 * j + ii] + dm) / d))));
  }
}

void pack_q3_k(const int8_t* L, BlockQ3_K& y) {
  std::memset(y.hmask, 0, sizeof(y.hmask));
  uint8_t U[kQK_K];
  for (int j = 0; j < kQK_K; ++j) {  // high bit of weight j: hmask[j % 32] bit j / 32
    U[j] = static_cast<uint8_t>(L[j]);
    if (U[j] > 3) {
      y.hmask[j % 32] = static_cast<uint8_t>(y.hmask[j % 32] | (1 << (j / 32)));
      U[j] = static_cast<uint8_t>(U[j] - 4);
    }
  }
  pack_2bit(U, y.qs);
}

void pack_q4_k(const uint8_t* L, BlockQ4_K& y) {
  uint8_t* q = y.qs;
  for (int j = 0; j < kQK_K; j += 64, q += 32)
    for (int l = 0; l < 32; ++l) q[l] = static_cast<uint8_t>(L[j + l] | (L[j + l + 32] << 4));
}

void pack_q5_k(const uint8_t* L, BlockQ5_K& y) {
  std::memset(y.qh, 0, sizeof(y.qh));
  uint8_t* ql = y.qs;
  uint8_t m1 = 1, m2 = 2;
  for (int n = 0; n < kQK_K; n += 64, ql += 32, m1 = static_cast<uint8_t>(m1 << 2), m2 = static_cast<uint8_t>(m2 << 2))
    for (int j = 0; j < 32; ++j) {
      int l1 = L[n + j], l2 = L[n + j + 32];
      if (l1 > 15) l1 -= 16, y.qh[j] |= m1;
      if (l2 > 15) l2 -= 16, y.qh[j] |= m2;
      ql[j] = static_cast<uint8_t>(l1 | (l2 << 4));
    }
}

void pack_q6_k(const int8_t* L, BlockQ6_K& y) {
  uint8_t* ql = y.ql;
  uint8_t* qh = y.qh;
  for (int j = 0; j < kQK_K; j += 128, ql += 64, qh += 32)
    for (int l = 0; l < 32; ++l) {
      const uint8_t q1 = L[j + l] & 0xF, q2 = L[j + l + 32] & 0xF, q3 = L[j + l + 64] & 0xF, q4 = L[j + l + 96] & 0xF;
      ql[l] = static_cast<uint8_t>(q1 | (q3 << 4));
      ql[l + 32] = static_cast<uint8_t>(q2 | (q4 << 4));
      qh[l] = static_cast<uint8_t>((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) | ((L[j + l + 64] >> 4) << 4) |
                                   ((L[j + l + 96] >> 4) << 6));
    }
}

void finish_q6_k(const float* x, int8_t* L, const float* scales, float max_scale, float max_abs_scale, BlockQ6_K& y) {
  if (max_abs_scale < kGroupMaxEps) {
    std::memset(&y, 0, sizeof(y));
    return;
  }
  const float iscale = -128.f / max_scale;
  y.d = f32_to_fp16(1 / iscale);
  for (int ib = 0; ib < 16; ++ib) y.scales[ib] = static_cast<int8_t>(std::min(127, nearest_int(iscale * scales[ib])));
  for (int j = 0; j < 16; ++j) {
    const float d = fp16_to_f32(y.d) * y.scales[j];
    if (!d) continue;
    for (int ii = 0; ii < 16; ++ii)
      L[16 * j + ii] = static_cast<int8_t>(std::max(-32, std::min(31, nearest_int(x[16 * j + ii] / d))) + 32);
  }
  pack_q6_k(L, y);
}

void pack_iq4(const uint8_t* L, int n, uint8_t* q4) {
  for (int i = 0; i < n / 32; ++i)
    for (int j = 0; j < 16; ++j) q4[16 * i + j] = static_cast<uint8_t>(L[32 * i + j] | (L[32 * i + 16 + j] << 4));
}

}  // namespace detail

void quantize_kquant(TType t, const float* x, void* dst, int64_t n, const float* importance) {
  if (importance) return detail::quantize_row_imatrix(t, x, dst, n, importance);
  const int64_t per = traits(t).block;
  QUANT_CHECK(is_kquant(t) && n % per == 0, "{}: row of {} does not tile {}-weight blocks", ttype_name(t), n, per);
  switch (t) {
    case TType::Q2_K: return each_block<BlockQ2_K>(x, dst, n, per, quantize_q2_k);
    case TType::Q3_K: return each_block<BlockQ3_K>(x, dst, n, per, quantize_q3_k);
    case TType::Q4_K: return each_block<BlockQ4_K>(x, dst, n, per, quantize_q4_k);
    case TType::Q5_K: return each_block<BlockQ5_K>(x, dst, n, per, quantize_q5_k);
    case TType::Q6_K: return each_block<BlockQ6_K>(x, dst, n, per, quantize_q6_k);
    case TType::IQ4_NL:
      return each_block<BlockIQ4_NL>(x, dst, n, per, [](const float* v, BlockIQ4_NL& b) { quantize_iq4(v, 32, nullptr, &b.d, b.qs, nullptr, nullptr); });
    case TType::IQ4_XS:
      return each_block<BlockIQ4_XS>(x, dst, n, per, [](const float* v, BlockIQ4_XS& b) {
        quantize_iq4(v, kQK_K, nullptr, &b.d, b.qs, &b.scales_h, b.scales_l);
      });
    default: break;
  }
  fail("{} is not a super-block type", ttype_name(t));
}

void kquant_set_codes(TType t, void* block, const uint8_t* codes) {
  using namespace detail;
  int8_t L[kQK_K];
  switch (t) {
    case TType::Q2_K: return pack_2bit(codes, static_cast<BlockQ2_K*>(block)->qs);
    case TType::Q3_K:
      for (int j = 0; j < kQK_K; ++j) L[j] = static_cast<int8_t>(codes[j]);
      return pack_q3_k(L, *static_cast<BlockQ3_K*>(block));
    case TType::Q4_K: return pack_q4_k(codes, *static_cast<BlockQ4_K*>(block));
    case TType::Q5_K: return pack_q5_k(codes, *static_cast<BlockQ5_K*>(block));
    case TType::Q6_K:
      for (int j = 0; j < kQK_K; ++j) L[j] = static_cast<int8_t>(codes[j]);
      return pack_q6_k(L, *static_cast<BlockQ6_K*>(block));
    case TType::IQ4_NL: return pack_iq4(codes, 32, static_cast<BlockIQ4_NL*>(block)->qs);
    case TType::IQ4_XS: return pack_iq4(codes, kQK_K, static_cast<BlockIQ4_XS*>(block)->qs);
    default: break;
  }
  fail("{} is not a super-block type", ttype_name(t));
}

}  // namespace quant
