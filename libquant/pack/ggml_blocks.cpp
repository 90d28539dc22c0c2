// ggml block types: reference quantizers, pack/unpack between QuantWeight and bytes, and row
// dequantization. This file is the byte-layout spec; pack_blocks.h holds the structs.
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>

#include "quant/error.h"
#include "quant/half.h"
#include "quant/kquants.h"
#include "quant/pack_blocks.h"
#include "quant/quant_weight.h"
#include "kquant_search.h"

namespace quant {

const TTypeTraits* ttype_traits(uint32_t id) {
  for (const auto& t : kTTypes)
    if (static_cast<uint32_t>(t.type) == id) return &t;
  return nullptr;
}

const TTypeTraits& traits(TType t) {
  const TTypeTraits* tr = ttype_traits(static_cast<uint32_t>(t));
  if (!tr) fail("unknown tensor type id {}", static_cast<uint32_t>(t));
  return *tr;
}

std::optional<TType> ttype_from_name(std::string_view name) {
  for (const auto& t : kTTypes) {
    if (t.name.size() != name.size()) continue;
    bool eq = true;
    for (size_t i = 0; i < name.size(); ++i)
      eq = eq && std::toupper(static_cast<unsigned char>(name[i])) == t.name[i];
    if (eq) return t.type;
  }
  return std::nullopt;
}

int64_t row_bytes(TType t, int64_t n) {
  const auto& tr = traits(t);
  QUANT_CHECK(n % tr.block == 0, "row of {} elements does not tile {} blocks of {}", n, tr.name,
              tr.block);
  return n / tr.block * tr.block_bytes;
}

double type_bpw(TType t) {
  const auto& tr = traits(t);
  return 8.0 * static_cast<double>(tr.block_bytes) / static_cast<double>(tr.block);
}

namespace {

uint32_t load_qh(const uint8_t* qh) {
  uint32_t v;
  std::memcpy(&v, qh, 4);
  return v;
}

// Element j of a 5-bit 32-block: its low nibble (qs, nibble_code) and its high bit (qh).
inline int q5_code(const uint8_t* qs, uint32_t qh, int j) {
  return nibble_code(qs, j) | static_cast<int>(((qh >> j) & 1u) << 4);
}

uint32_t high_bits(const int* codes) {
  uint32_t qh = 0;
  for (int j = 0; j < kQK; ++j) qh |= static_cast<uint32_t>((codes[j] >> 4) & 1) << j;
  return qh;
}

}  // namespace

void dequantize_row(TType t, const void* src, float* y, int64_t n) {
  if (is_kquant(t)) return dequantize_kquant(t, src, y, n);
  const auto* p = static_cast<const uint8_t*>(src);
  switch (t) {
    case TType::F32:
      std::memcpy(y, p, static_cast<size_t>(n) * 4);
      return;
    case TType::F16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, p + 2 * i, 2);
        y[i] = fp16_to_f32(h);
      }
      return;
    case TType::BF16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, p + 2 * i, 2);
        y[i] = bf16_to_f32(h);
      }
      return;
    case TType::I32:
      fail("an I32 tensor holds integers, not weights: it cannot be read as one");
    default:
      break;
  }
  QUANT_CHECK(n % kQK == 0, "row of {} does not tile {} blocks", n, ttype_name(t));
  const int64_t nb = n / kQK;
  for (int64_t b = 0; b < nb; ++b, y += kQK) {
    switch (t) {
      case TType::Q4_0: {
        BlockQ4_0 blk;
        std::memcpy(&blk, p + b * sizeof(blk), sizeof(blk));
        const float d = fp16_to_f32(blk.d);
        for (int j = 0; j < kQK; ++j) y[j] = static_cast<float>(nibble_code(blk.qs, j) - 8) * d;
        break;
      }
      case TType::Q4_1: {
        BlockQ4_1 blk;
        std::memcpy(&blk, p + b * sizeof(blk), sizeof(blk));
        const float d = fp16_to_f32(blk.d), m = fp16_to_f32(blk.m);
        for (int j = 0; j < kQK; ++j) y[j] = static_cast<float>(nibble_code(blk.qs, j)) * d + m;
        break;
      }
      case TType::Q5_0: {
        BlockQ5_0 blk;
        std::memcpy(&blk, p + b * sizeof(blk), sizeof(blk));
        const float d = fp16_to_f32(blk.d);
        const uint32_t qh = load_qh(blk.qh);
        for (int j = 0; j < kQK; ++j) y[j] = static_cast<float>(q5_code(blk.qs, qh, j) - 16) * d;
        break;
      }
      case TType::Q5_1: {
        BlockQ5_1 blk;
        std::memcpy(&blk, p + b * sizeof(blk), sizeof(blk));
        const float d = fp16_to_f32(blk.d), m = fp16_to_f32(blk.m);
        const uint32_t qh = load_qh(blk.qh);
        for (int j = 0; j < kQK; ++j) y[j] = static_cast<float>(q5_code(blk.qs, qh, j)) * d + m;
        break;
      }
      case TType::Q8_0: {
        BlockQ8_0 blk;
        std::memcpy(&blk, p + b * sizeof(blk), sizeof(blk));
        const float d = fp16_to_f32(blk.d);
        for (int j = 0; j < kQK; ++j) y[j] = static_cast<float>(blk.qs[j]) * d;
        break;
      }
      default:
        fail("cannot dequantize type {}", ttype_name(t));
    }
  }
}

// --- ggml reference quantizers (quantize_row_*_ref), into the logical form ---

QuantWeight quantize_ggml(TType t, const float* w, int64_t rows, int64_t cols, const float* importance) {
  if (is_kquant(t)) {
    PackedTensor p{t, rows, cols, std::vector<uint8_t>(static_cast<size_t>(rows * row_bytes(t, cols)))};
    for (int64_t r = 0; r < rows; ++r) quantize_kquant(t, w + r * cols, p.data.data() + r * row_bytes(t, cols), cols, importance);
    return unpack(p);
  }
  if (t == TType::Q8_0) importance = nullptr;  // ggml's quantize_q8_0 ignores it
  QUANT_CHECK(cols % kQK == 0, "{}: row of {} does not tile 32-blocks", ttype_name(t), cols);
  QuantWeight q;
  q.rows = rows;
  q.cols = cols;
  q.group = kQK;
  q.bits = (t == TType::Q8_0) ? 8 : (t == TType::Q5_0 || t == TType::Q5_1) ? 5 : 4;
  q.sym = (t == TType::Q4_0 || t == TType::Q5_0 || t == TType::Q8_0);
  QUANT_CHECK(t == TType::Q4_0 || t == TType::Q4_1 || t == TType::Q5_0 || t == TType::Q5_1 ||
                  t == TType::Q8_0,
              "no ggml reference quantizer for {}", ttype_name(t));
  const int64_t nb = cols / kQK;
  q.codes.resize(static_cast<size_t>(rows * cols));
  q.scales.resize(static_cast<size_t>(rows * nb));
  q.mins.resize(static_cast<size_t>(rows * nb));
  for (int64_t r = 0; r < rows; ++r) {
    float sigma2 = 0;  // quantize_row_*_impl's mean square of the row, in float as ggml sums it
    if (importance) {
      for (int64_t j = 0; j < cols; ++j) sigma2 += w[r * cols + j] * w[r * cols + j];
      sigma2 /= static_cast<float>(cols);
    }
    for (int64_t b = 0; b < nb; ++b) {
      const float* x = w + r * cols + b * kQK;
      uint8_t* c = q.codes.data() + r * cols + b * kQK;
      float d = 0.0f, mn = 0.0f;
      if (importance) {
        detail::legacy_block_imatrix(t, x, importance + b * kQK, sigma2, c, d, mn);
      } else if (t == TType::Q4_0 || t == TType::Q5_0) {
        // d = (signed value of largest magnitude) / -2^(bits-1): that value maps to code 0.
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < kQK; ++j)
          if (amax < std::fabs(x[j])) {
            amax = std::fabs(x[j]);
            max = x[j];
          }
        const float half = (t == TType::Q4_0) ? 8.0f : 16.0f;
        const int top = (t == TType::Q4_0) ? 15 : 31;
        d = max / -half;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        for (int j = 0; j < kQK; ++j)
          c[j] = static_cast<uint8_t>(
              std::min(top, static_cast<int>(static_cast<int8_t>(x[j] * id + (half + 0.5f)))));
        d = round_fp16(d);
        mn = -half * d;
      } else if (t == TType::Q4_1 || t == TType::Q5_1) {
        float min = FLT_MAX, max = -FLT_MAX;
        for (int j = 0; j < kQK; ++j) {
          min = std::min(min, x[j]);
          max = std::max(max, x[j]);
        }
        const int top = (t == TType::Q4_1) ? 15 : 31;
        d = (max - min) / static_cast<float>(top);
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        for (int j = 0; j < kQK; ++j) {
          const float v = (x[j] - min) * id + 0.5f;
          // ggml clamps Q4_1 codes to 15 but casts Q5_1 codes straight to uint8.
          c[j] = (t == TType::Q4_1)
                     ? static_cast<uint8_t>(std::min(top, static_cast<int>(static_cast<int8_t>(v))))
                     : static_cast<uint8_t>(v);
        }
        d = round_fp16(d);
        mn = round_fp16(min);
      } else {  // Q8_0
        float amax = 0.0f;
        for (int j = 0; j < kQK; ++j) amax = std::max(amax, std::fabs(x[j]));
        d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        for (int j = 0; j < kQK; ++j)
          c[j] = static_cast<uint8_t>(static_cast<int>(std::round(x[j] * id)) + 128);
        d = round_fp16(d);
        mn = -128.0f * d;
      }
      q.scales[static_cast<size_t>(r * nb + b)] = d;
      q.mins[static_cast<size_t>(r * nb + b)] = mn;
    }
  }
  return q;
}

// --- pack / unpack ---

namespace {

struct BlockParams {
  float scale, min;
  const uint8_t* codes;
};

// Integer zero point implied by min = -zero * scale, or -1 if min is not such a multiple. A
// block of zeros (scale 0, min 0) keeps its codes in the type's own zero point `native`.
int integer_zero(float scale, float min, int native) {
  if (scale == 0.0f) return min == 0.0f ? native : -1;
  const double z = -static_cast<double>(min) / scale;
  const double zr = std::nearbyint(z);
  if (zr < 0 || zr > 255) return -1;
  if (static_cast<float>(-zr * scale) != min) return -1;
  return static_cast<int>(zr);
}

}  // namespace

PackedTensor pack_float(const float* w, int64_t rows, int64_t cols, TType type) {
  PackedTensor p;
  p.type = type;
  p.rows = rows;
  p.cols = cols;
  const int64_t n = rows * cols;
  p.data.resize(static_cast<size_t>(n * traits(type).block_bytes));
  switch (type) {
    case TType::F32:
      std::memcpy(p.data.data(), w, static_cast<size_t>(n) * 4);
      break;
    case TType::F16:
      for (int64_t i = 0; i < n; ++i) {
        const uint16_t h = f32_to_fp16(w[i]);
        std::memcpy(p.data.data() + 2 * i, &h, 2);
      }
      break;
    case TType::BF16:
      for (int64_t i = 0; i < n; ++i) {
        const uint16_t h = f32_to_bf16(w[i]);
        std::memcpy(p.data.data() + 2 * i, &h, 2);
      }
      break;
    default:
      fail("pack_float: {} is not a float type", ttype_name(type));
  }
  return p;
}

PackedTensor pack(const QuantWeight& q, TType type) {
  QUANT_CHECK(q.g_idx.empty(), "a grid with act-order g_idx (groups not contiguous) has no ggml block type");
  if (is_kquant(type)) {
    QUANT_CHECK(q.cols % traits(type).block == 0 && static_cast<int64_t>(q.kblocks.size()) == q.rows * row_bytes(type, q.cols),
                "pack {}: the grid carries no {} super-blocks (quantize it with quantize_ggml)", ttype_name(type), ttype_name(type));
    return PackedTensor{type, q.rows, q.cols, q.kblocks};
  }
  if (!is_quantized(type)) {
    std::vector<float> w(static_cast<size_t>(q.rows * q.cols));
    q.dequantize(w.data());
    return pack_float(w.data(), q.rows, q.cols, type);
  }
  QUANT_CHECK(q.cols % kQK == 0, "pack {}: {} columns do not tile 32-blocks", ttype_name(type),
              q.cols);
  QUANT_CHECK(q.group % kQK == 0, "pack {}: group {} is not a multiple of 32", ttype_name(type),
              q.group);
  PackedTensor p;
  p.type = type;
  p.rows = q.rows;
  p.cols = q.cols;
  const int64_t nb = q.cols / kQK;
  const size_t bb = static_cast<size_t>(traits(type).block_bytes);
  p.data.resize(static_cast<size_t>(q.rows * nb) * bb);
  const int64_t ng = q.n_groups();
  for (int64_t r = 0; r < q.rows; ++r) {
    for (int64_t b = 0; b < nb; ++b) {
      const int64_t g = b * kQK / q.group;
      const float scale = q.scales[static_cast<size_t>(r * ng + g)];
      const float min = q.mins[static_cast<size_t>(r * ng + g)];
      const uint8_t* src = q.codes.data() + r * q.cols + b * kQK;
      uint8_t* dst = p.data.data() + static_cast<size_t>(r * nb + b) * bb;
      int codes[kQK];
      auto fail_range = [&](int lo, int hi) {
        fail("pack {}: row {} block {}: code out of [{}, {}] (bits {}, scale {}, min {})",
             ttype_name(type), r, b, lo, hi, q.bits, scale, min);
      };
      if (type == TType::Q4_1 || type == TType::Q5_1) {
        const int top = (type == TType::Q4_1) ? 15 : 31;
        for (int j = 0; j < kQK; ++j) {
          codes[j] = src[j];
          if (codes[j] > top) fail_range(0, top);
        }
        if (type == TType::Q4_1) {
          BlockQ4_1 blk{f32_to_fp16(scale), f32_to_fp16(min), {}};
          put_nibbles(blk.qs, codes);
          std::memcpy(dst, &blk, sizeof(blk));
        } else {
          BlockQ5_1 blk{f32_to_fp16(scale), f32_to_fp16(min), {}, {}};
          const uint32_t qh = high_bits(codes);
          std::memcpy(blk.qh, &qh, 4);
          put_nibbles(blk.qs, codes);
          std::memcpy(dst, &blk, sizeof(blk));
        }
        continue;
      }
      // Offset-free types store code - zero around their own fixed zero point.
      const int native = (type == TType::Q4_0) ? 8 : (type == TType::Q5_0) ? 16 : 128;
      const int zero = integer_zero(scale, min, native);
      QUANT_CHECK(zero >= 0, "pack {}: row {} group {}: min {} is not -zero*scale (scale {})",
                  ttype_name(type), r, g, min, scale);
      const int fixed = (type == TType::Q4_0) ? 8 : (type == TType::Q5_0) ? 16 : 0;
      const int lo = (type == TType::Q8_0) ? -128 : 0;
      const int hi = (type == TType::Q4_0) ? 15 : (type == TType::Q5_0) ? 31 : 127;
      for (int j = 0; j < kQK; ++j) {
        codes[j] = static_cast<int>(src[j]) - zero + fixed;
        if (codes[j] < lo || codes[j] > hi) fail_range(lo, hi);
      }
      const uint16_t d = f32_to_fp16(scale);
      if (type == TType::Q4_0) {
        BlockQ4_0 blk{d, {}};
        put_nibbles(blk.qs, codes);
        std::memcpy(dst, &blk, sizeof(blk));
      } else if (type == TType::Q5_0) {
        BlockQ5_0 blk{d, {}, {}};
        const uint32_t qh = high_bits(codes);
        std::memcpy(blk.qh, &qh, 4);
        put_nibbles(blk.qs, codes);
        std::memcpy(dst, &blk, sizeof(blk));
      } else if (type == TType::Q8_0) {
        BlockQ8_0 blk{d, {}};
        for (int j = 0; j < kQK; ++j) blk.qs[j] = static_cast<int8_t>(codes[j]);
        std::memcpy(dst, &blk, sizeof(blk));
      } else {
        fail("pack: unsupported type {}", ttype_name(type));
      }
    }
  }
  return p;
}

QuantWeight unpack(const PackedTensor& p) {
  QUANT_CHECK(is_quantized(p.type), "unpack: {} is not a block type", ttype_name(p.type));
  if (is_kquant(p.type)) {
    const int64_t rb = row_bytes(p.type, p.cols), g = kquant_group(p.type), ng = p.cols / g;
    QUANT_CHECK(p.cols % traits(p.type).block == 0 && static_cast<int64_t>(p.data.size()) == p.rows * rb, "unpack {}: {} bytes for {}x{}",
                ttype_name(p.type), p.data.size(), p.rows, p.cols);
    QuantWeight q;
    q.rows = p.rows;
    q.cols = p.cols;
    q.group = g;
    q.bits = kquant_bits(p.type);
    q.sym = p.type != TType::Q2_K && p.type != TType::Q4_K && p.type != TType::Q5_K;  // integer zero (or none, IQ4)
    if (is_nonlinear(p.type)) q.levels.assign(std::begin(kIQ4Levels), std::end(kIQ4Levels));
    q.codes.resize(static_cast<size_t>(p.rows * p.cols));
    q.scales.resize(static_cast<size_t>(p.rows * ng));
    q.mins.resize(q.scales.size());
    for (int64_t r = 0; r < p.rows; ++r)
      kquant_grid(p.type, p.data.data() + r * rb, p.cols, q.codes.data() + r * p.cols, q.scales.data() + r * ng, q.mins.data() + r * ng);
    q.kblocks = p.data;
    return q;
  }
  const int64_t nb = p.cols / kQK;
  const size_t bb = static_cast<size_t>(traits(p.type).block_bytes);
  QUANT_CHECK(p.data.size() == static_cast<size_t>(p.rows * nb) * bb,
              "unpack {}: {} bytes for {}x{}", ttype_name(p.type), p.data.size(), p.rows, p.cols);
  QuantWeight q;
  q.rows = p.rows;
  q.cols = p.cols;
  q.group = kQK;
  q.bits = (p.type == TType::Q8_0) ? 8 : (p.type == TType::Q5_0 || p.type == TType::Q5_1) ? 5 : 4;
  q.sym = (p.type == TType::Q4_0 || p.type == TType::Q5_0 || p.type == TType::Q8_0);
  q.codes.resize(static_cast<size_t>(p.rows * p.cols));
  q.scales.resize(static_cast<size_t>(p.rows * nb));
  q.mins.resize(static_cast<size_t>(p.rows * nb));
  for (int64_t i = 0; i < p.rows * nb; ++i) {
    const uint8_t* src = p.data.data() + static_cast<size_t>(i) * bb;
    uint8_t* c = q.codes.data() + i * kQK;
    float d = 0, m = 0;
    switch (p.type) {
      case TType::Q4_0: {
        BlockQ4_0 blk;
        std::memcpy(&blk, src, sizeof(blk));
        d = fp16_to_f32(blk.d);
        m = -8.0f * d;
        for (int j = 0; j < kQK; ++j) c[j] = static_cast<uint8_t>(nibble_code(blk.qs, j));
        break;
      }
      case TType::Q4_1: {
        BlockQ4_1 blk;
        std::memcpy(&blk, src, sizeof(blk));
        d = fp16_to_f32(blk.d);
        m = fp16_to_f32(blk.m);
        for (int j = 0; j < kQK; ++j) c[j] = static_cast<uint8_t>(nibble_code(blk.qs, j));
        break;
      }
      case TType::Q5_0: {
        BlockQ5_0 blk;
        std::memcpy(&blk, src, sizeof(blk));
        d = fp16_to_f32(blk.d);
        m = -16.0f * d;
        const uint32_t qh = load_qh(blk.qh);
        for (int j = 0; j < kQK; ++j) c[j] = static_cast<uint8_t>(q5_code(blk.qs, qh, j));
        break;
      }
      case TType::Q5_1: {
        BlockQ5_1 blk;
        std::memcpy(&blk, src, sizeof(blk));
        d = fp16_to_f32(blk.d);
        m = fp16_to_f32(blk.m);
        const uint32_t qh = load_qh(blk.qh);
        for (int j = 0; j < kQK; ++j) c[j] = static_cast<uint8_t>(q5_code(blk.qs, qh, j));
        break;
      }
      case TType::Q8_0: {
        BlockQ8_0 blk;
        std::memcpy(&blk, src, sizeof(blk));
        d = fp16_to_f32(blk.d);
        m = -128.0f * d;
        for (int j = 0; j < kQK; ++j) c[j] = static_cast<uint8_t>(blk.qs[j] + 128);
        break;
      }
      default:
        fail("unpack: unsupported type {}", ttype_name(p.type));
    }
    q.scales[static_cast<size_t>(i)] = d;
    q.mins[static_cast<size_t>(i)] = m;
  }
  return q;
}

}  // namespace quant
