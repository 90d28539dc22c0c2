// Reading the super-block types: ggml's dequantize_row_* (same products, same order) and the
// same values as a grid of codes, sub-block scales and mins (layouts in kquants.h).
#include <cstring>

#include "quant/error.h"
#include "quant/half.h"
#include "quant/kquants.h"

namespace quant {

namespace {

// One decoded block: its codes (up to 256), and per sub-block the factor a and offset b that
// ggml multiplies them with: x = a·code − b (Q3_K a·(code − 4), Q6_K a·(code − 32), IQ4
// a·level[code]; see value()).
struct Decoded {
  uint8_t codes[kQK_K];
  float a[16], b[16];
};

void decode_q2_k(const BlockQ2_K& x, Decoded& o) {
  const float d = fp16_to_f32(x.d), min = fp16_to_f32(x.dmin);
  for (int j = 0; j < 16; ++j) {
    o.a[j] = d * (x.scales[j] & 0xF);
    o.b[j] = min * (x.scales[j] >> 4);
  }
  for (int w = 0; w < kQK_K; ++w) o.codes[w] = (x.qs[(w / 128) * 32 + w % 32] >> (2 * ((w % 128) / 32))) & 3;
}

void decode_q3_k(const BlockQ3_K& x, Decoded& o) {
  const float d_all = fp16_to_f32(x.d);
  for (int j = 0; j < 16; ++j) {
    o.a[j] = d_all * (get_q3_scale(j, x.scales) - 32);
    o.b[j] = 0;  // x = dl·(code − 4): offset applied in value()
  }
  for (int w = 0; w < kQK_K; ++w) {
    const int lo = (x.qs[(w / 128) * 32 + w % 32] >> (2 * ((w % 128) / 32))) & 3;
    o.codes[w] = static_cast<uint8_t>(lo | (((x.hmask[w % 32] >> (w / 32)) & 1) << 2));
  }
}

void decode_q45_k(uint16_t dd, uint16_t dm, const uint8_t* scales, Decoded& o) {
  const float d = fp16_to_f32(dd), min = fp16_to_f32(dm);
  for (int j = 0; j < 8; ++j) {
    uint8_t sc, m;
    get_scale_min(j, scales, sc, m);
    o.a[j] = d * sc;
    o.b[j] = min * m;
  }
}

void decode_q4_k(const BlockQ4_K& x, Decoded& o) {
  decode_q45_k(x.d, x.dmin, x.scales, o);
  for (int w = 0; w < kQK_K; ++w) {
    const uint8_t q = x.qs[(w / 64) * 32 + w % 32];
    o.codes[w] = (w % 64) < 32 ? q & 0xF : q >> 4;
  }
}

void decode_q5_k(const BlockQ5_K& x, Decoded& o) {
  decode_q45_k(x.d, x.dmin, x.scales, o);
  for (int w = 0; w < kQK_K; ++w) {
    const uint8_t q = x.qs[(w / 64) * 32 + w % 32];
    const int hi = (x.qh[w % 32] >> (w / 32)) & 1;  // weight l + 32k: bit k
    o.codes[w] = static_cast<uint8_t>(((w % 64) < 32 ? q & 0xF : q >> 4) | (hi << 4));
  }
}

void decode_q6_k(const BlockQ6_K& x, Decoded& o) {
  const float d = fp16_to_f32(x.d);
  for (int j = 0; j < 16; ++j) {
    o.a[j] = d * x.scales[j];
    o.b[j] = 0;  // x = a·(code − 32)
  }
  for (int w = 0; w < kQK_K; ++w) {
    const int h = w / 128, l = w % 32, k = (w % 128) / 32;  // weight l + 32k of half h
    const uint8_t ql = x.ql[64 * h + l + 32 * (k % 2)];
    const int lo = k < 2 ? ql & 0xF : ql >> 4;
    o.codes[w] = static_cast<uint8_t>(lo | (((x.qh[32 * h + l] >> (2 * k)) & 3) << 4));
  }
}

void decode_iq4_nibbles(const uint8_t* qs, int n, uint8_t* codes) {
  for (int i = 0; i < n / 32; ++i)
    for (int j = 0; j < 16; ++j) {
      codes[32 * i + j] = qs[16 * i + j] & 0xF;
      codes[32 * i + j + 16] = qs[16 * i + j] >> 4;
    }
}

void decode_iq4_xs(const BlockIQ4_XS& x, Decoded& o) {
  const float d = fp16_to_f32(x.d);
  for (int ib = 0; ib < 8; ++ib) {
    const int ls = ((x.scales_l[ib / 2] >> 4 * (ib % 2)) & 0xF) | (((x.scales_h >> 2 * ib) & 3) << 4);
    o.a[ib] = d * (ls - 32);
    o.b[ib] = 0;
  }
  decode_iq4_nibbles(x.qs, kQK_K, o.codes);
}

// Decodes block i of a row of type t; returns the weights per block.
int decode(TType t, const uint8_t* row, int64_t i, Decoded& o) {
  const auto get = [&](auto& blk) {
    std::memcpy(&blk, row + i * static_cast<int64_t>(sizeof(blk)), sizeof(blk));
    return blk;
  };
  switch (t) {
    case TType::Q2_K: { BlockQ2_K b; decode_q2_k(get(b), o); return kQK_K; }
    case TType::Q3_K: { BlockQ3_K b; decode_q3_k(get(b), o); return kQK_K; }
    case TType::Q4_K: { BlockQ4_K b; decode_q4_k(get(b), o); return kQK_K; }
    case TType::Q5_K: { BlockQ5_K b; decode_q5_k(get(b), o); return kQK_K; }
    case TType::Q6_K: { BlockQ6_K b; decode_q6_k(get(b), o); return kQK_K; }
    case TType::IQ4_XS: { BlockIQ4_XS b; decode_iq4_xs(get(b), o); return kQK_K; }
    case TType::IQ4_NL: {
      BlockIQ4_NL b;
      get(b);
      o.a[0] = fp16_to_f32(b.d);
      o.b[0] = 0;
      decode_iq4_nibbles(b.qs, 32, o.codes);
      return 32;
    }
    default: break;
  }
  fail("{} is not a super-block type", ttype_name(t));
}

// ggml's expression for weight w of a decoded block.
inline float value(TType t, const Decoded& o, int w, int g) {
  const int j = w / g, c = o.codes[w];
  switch (t) {
    case TType::Q3_K: return o.a[j] * (c - 4);
    case TType::Q6_K: return o.a[j] * (c - 32);
    case TType::IQ4_NL:
    case TType::IQ4_XS: return o.a[j] * kIQ4Levels[c];
    default: return o.a[j] * c - o.b[j];
  }
}

}  // namespace

int kquant_group(TType t) { return t == TType::Q2_K || t == TType::Q3_K || t == TType::Q6_K ? 16 : 32; }

int kquant_bits(TType t) {
  switch (t) {
    case TType::Q2_K: return 2;
    case TType::Q3_K: return 3;
    case TType::Q5_K: return 5;
    case TType::Q6_K: return 6;
    default: return 4;
  }
}

void dequantize_kquant(TType t, const void* src, float* y, int64_t n) {
  const int64_t per = traits(t).block;
  QUANT_CHECK(is_kquant(t) && n % per == 0, "{}: row of {} does not tile {}-weight blocks", ttype_name(t), n, per);
  const int g = kquant_group(t);
  Decoded o;
  for (int64_t i = 0; i < n / per; ++i) {
    decode(t, static_cast<const uint8_t*>(src), i, o);
    for (int w = 0; w < per; ++w) y[i * per + w] = value(t, o, w, g);
  }
}

void kquant_grid(TType t, const void* src, int64_t n, uint8_t* codes, float* scales, float* mins) {
  const int64_t per = traits(t).block;
  QUANT_CHECK(is_kquant(t) && n % per == 0, "{}: row of {} does not tile {}-weight blocks", ttype_name(t), n, per);
  const int g = kquant_group(t), sub = static_cast<int>(per) / g;
  const int zero = t == TType::Q3_K ? 4 : t == TType::Q6_K ? 32 : 0;
  Decoded o;
  for (int64_t i = 0; i < n / per; ++i) {
    decode(t, static_cast<const uint8_t*>(src), i, o);
    std::memcpy(codes + i * per, o.codes, static_cast<size_t>(per));
    for (int j = 0; j < sub; ++j) {
      scales[i * sub + j] = o.a[j];
      mins[i * sub + j] = zero ? -(zero * o.a[j]) : -o.b[j];
    }
  }
}

}  // namespace quant
