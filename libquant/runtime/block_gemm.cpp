// The block GEMM's driver, panel unpackers and scalar tile (see block_gemm.h).
#include "quant/block_gemm.h"

#include <emmintrin.h>
#include <omp.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <memory>

#include "quant/error.h"
#include "quant/half.h"
#include "quant/kquants.h"
#include "quant/pack_blocks.h"

namespace quant {

namespace bgemm {
namespace {
uint32_t load_u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
}  // namespace

// One 32-block of a row as codes u (0..255) and the factors of its one or two sub-blocks:
// w = d[s]·(u − z) + mn[s] (d[1], mn[1]: types with sub-blocks of 16).
struct Block32 {
  uint8_t u[32];
  float d[2], mn[2];
};

namespace {
// 16 bytes of ggml nibbles to 32 codes: low nibbles are elements 0..15, high ones 16..31 (SSE2).
void nibbles(const uint8_t* qs, uint8_t* u) {
  const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs)), m = _mm_set1_epi8(0x0F);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(u), _mm_and_si128(b, m));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(u + 16), _mm_and_si128(_mm_srli_epi16(b, 4), m));
}

// Bit i of the 32 bits qh as 0x10 in byte i, ORed into u (Q5's fifth bit).
void fifth_bits(uint32_t qh, uint8_t* u) {
  static const auto table = [] {
    std::array<uint64_t, 256> t{};
    for (int v = 0; v < 256; ++v)
      for (int i = 0; i < 8; ++i)
        if ((v >> i) & 1) t[static_cast<size_t>(v)] |= uint64_t{0x10} << (8 * i);
    return t;
  }();
  for (int k = 0; k < 4; ++k) {
    uint64_t v;
    std::memcpy(&v, u + 8 * k, 8);
    v |= table[(qh >> (8 * k)) & 0xFF];
    std::memcpy(u + 8 * k, &v, 8);
  }
}

}  // namespace

// Block `bi` (in 32-columns) of a stored row, per type: the layouts of pack_blocks.h / kquants.h.
void decode(TType t, const uint8_t* row, int64_t bi, Block32& o) {
  switch (t) {
    case TType::Q4_0: {
      const auto* x = reinterpret_cast<const BlockQ4_0*>(row) + bi;
      nibbles(x->qs, o.u);
      o.d[0] = fp16_to_f32(x->d), o.mn[0] = 0;
      return;
    }
    case TType::Q4_1: {
      const auto* x = reinterpret_cast<const BlockQ4_1*>(row) + bi;
      nibbles(x->qs, o.u);
      o.d[0] = fp16_to_f32(x->d), o.mn[0] = fp16_to_f32(x->m);
      return;
    }
    case TType::Q5_0: {
      const auto* x = reinterpret_cast<const BlockQ5_0*>(row) + bi;
      nibbles(x->qs, o.u);
      fifth_bits(load_u32(x->qh), o.u);
      o.d[0] = fp16_to_f32(x->d), o.mn[0] = 0;
      return;
    }
    case TType::Q5_1: {
      const auto* x = reinterpret_cast<const BlockQ5_1*>(row) + bi;
      nibbles(x->qs, o.u);
      fifth_bits(load_u32(x->qh), o.u);
      o.d[0] = fp16_to_f32(x->d), o.mn[0] = fp16_to_f32(x->m);
      return;
    }
    case TType::Q8_0: {
      const auto* x = reinterpret_cast<const BlockQ8_0*>(row) + bi;
      const __m128i flip = _mm_set1_epi8(static_cast<char>(0x80));  // q + 128
      for (int h = 0; h < 2; ++h)
        _mm_storeu_si128(reinterpret_cast<__m128i*>(o.u + 16 * h),
                         _mm_xor_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x->qs + 16 * h)), flip));
      o.d[0] = fp16_to_f32(x->d), o.mn[0] = 0;
      return;
    }
    case TType::Q4_K:
    case TType::Q5_K: {
      const int64_t sb = bi / 8, j = bi % 8;  // super-block, sub-block of 32
      const uint8_t *scales, *qs, *qh = nullptr;
      uint16_t d, dmin;
      if (t == TType::Q4_K) {
        const auto* x = reinterpret_cast<const BlockQ4_K*>(row) + sb;
        scales = x->scales, qs = x->qs, d = x->d, dmin = x->dmin;
      } else {
        const auto* x = reinterpret_cast<const BlockQ5_K*>(row) + sb;
        scales = x->scales, qs = x->qs, qh = x->qh, d = x->d, dmin = x->dmin;
      }
      uint8_t sc, m;
      get_scale_min(static_cast<int>(j), scales, sc, m);
      const uint8_t* q = qs + 32 * (j / 2);  // weights 64p + l (low nibble) and 64p + 32 + l (high)
      const __m128i mask = _mm_set1_epi8(0x0F);
      for (int h = 0; h < 2; ++h) {
        __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q + 16 * h));
        if (j % 2) v = _mm_srli_epi16(v, 4);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(o.u + 16 * h), _mm_and_si128(v, mask));
      }
      if (qh)
        for (int l = 0; l < 32; ++l) o.u[l] = static_cast<uint8_t>(o.u[l] | (((qh[l] >> j) & 1) << 4));
      o.d[0] = fp16_to_f32(d) * sc, o.mn[0] = -(fp16_to_f32(dmin) * m);
      return;
    }
    case TType::Q6_K: {  // x = d·sc·(q − 32) per 16; layout in kquants.h
      const auto* x = reinterpret_cast<const BlockQ6_K*>(row) + bi / 8;
      const float d = fp16_to_f32(x->d);
      for (int i = 0; i < 32; ++i) {
        const int w = static_cast<int>(bi % 8) * 32 + i, h = w / 128, l = w % 32, k = (w % 128) / 32;
        const uint8_t ql = x->ql[64 * h + l + 32 * (k % 2)];
        const int lo = k < 2 ? ql & 0xF : ql >> 4;
        o.u[i] = static_cast<uint8_t>(lo | (((x->qh[32 * h + l] >> (2 * k)) & 3) << 4));
      }
      for (int s = 0; s < 2; ++s) o.d[s] = d * x->scales[(bi % 8) * 2 + s], o.mn[s] = 0;
      return;
    }
    case TType::Q3_K: {  // x = d·(sc − 32)·(q − 4) per 16, q = 2 low bits | high bit << 2
      const auto* x = reinterpret_cast<const BlockQ3_K*>(row) + bi / 8;
      const float d = fp16_to_f32(x->d);
      for (int i = 0; i < 32; ++i) {
        const int w = static_cast<int>(bi % 8) * 32 + i;
        const int lo = (x->qs[(w / 128) * 32 + w % 32] >> (2 * ((w % 128) / 32))) & 3;
        o.u[i] = static_cast<uint8_t>(lo | (((x->hmask[w % 32] >> (w / 32)) & 1) << 2));
      }
      for (int s = 0; s < 2; ++s) o.d[s] = d * static_cast<float>(get_q3_scale(static_cast<int>(bi % 8) * 2 + s, x->scales) - 32), o.mn[s] = 0;
      return;
    }
    case TType::Q2_K: {  // x = d·sc·q − dmin·m per 16
      const auto* x = reinterpret_cast<const BlockQ2_K*>(row) + bi / 8;
      const float d = fp16_to_f32(x->d), dmin = fp16_to_f32(x->dmin);
      for (int i = 0; i < 32; ++i) {
        const int w = static_cast<int>(bi % 8) * 32 + i;
        o.u[i] = static_cast<uint8_t>((x->qs[(w / 128) * 32 + w % 32] >> (2 * ((w % 128) / 32))) & 3);
      }
      for (int s = 0; s < 2; ++s) {
        const uint8_t sc = x->scales[(bi % 8) * 2 + s];
        o.d[s] = d * static_cast<float>(sc & 0xF), o.mn[s] = -(dmin * static_cast<float>(sc >> 4));
      }
      return;
    }
    default: fail("block GEMM: no kernel for {}", ttype_name(t));
  }
}

int sub_block(TType t) { return t == TType::Q2_K || t == TType::Q3_K || t == TType::Q6_K ? 16 : 32; }

namespace {
int32_t code_offset(TType t) {
  switch (t) {
    case TType::Q4_0: return 8;
    case TType::Q5_0: return 16;
    case TType::Q8_0: return 128;
    case TType::Q3_K: return 4;
    case TType::Q6_K: return 32;
    default: return 0;
  }
}

}  // namespace

void unpack_panel(const StoredMatrix& w, int64_t j0, int64_t c0, int64_t blocks, Panel& p) {
  p.z = code_offset(w.type);
  p.mins = w.type == TType::Q4_1 || w.type == TType::Q5_1 || w.type == TType::Q2_K || w.type == TType::Q4_K || w.type == TType::Q5_K;
  p.sub = sub_block(w.type);
  p.blocks = blocks;
  const int units = 32 / p.sub;
  const int64_t rows = std::min(kPanelN, w.n - j0);
  Block32 blk{};
  for (int64_t jj = 0; jj < kPanelN; ++jj) {
    if (jj >= rows) {
      for (int64_t bb = 0; bb < blocks; ++bb) {
        for (int s = 0; s < 8; ++s) std::memset(p.u[bb * 8 + s][jj], 0, 4);
        for (int h = 0; h < units; ++h) p.d[bb * units + h][jj] = 0, p.mn[bb * units + h][jj] = 0;
      }
      continue;
    }
    const uint8_t* row = w.row(j0 + jj);
    for (int64_t bb = 0; bb < blocks; ++bb) {
      decode(w.type, row, c0 / 32 + bb, blk);
      for (int s = 0; s < 8; ++s) std::memcpy(p.u[bb * 8 + s][jj], blk.u + 4 * s, 4);
      for (int h = 0; h < units; ++h) p.d[bb * units + h][jj] = blk.d[h], p.mn[bb * units + h][jj] = blk.mn[h];
    }
  }
}

void tile_ref(const QActs& a, int64_t r0, int64_t mr, int64_t b0, const Panel& p, float* acc) {
  const int64_t kb = a.k / 32, units = p.blocks * (32 / p.sub);
  for (int64_t r = 0; r < mr; ++r) {
    const int8_t* q = a.q.data() + (r0 + r) * a.k;
    for (int64_t uu = 0; uu < units; ++uu) {  // sub-blocks of the chunk, in order
      const int64_t c0 = 32 * b0 + uu * p.sub, b = c0 / 32;
      const float sa = a.scale[static_cast<size_t>((r0 + r) * kb + b)];
      const int32_t bsum = sub_sum(a, r0 + r, c0, p.sub);
      const float g = sa * static_cast<float>(bsum);
      for (int64_t jj = 0; jj < kPanelN; ++jj) {
        int32_t c = -p.z * bsum;
        for (int i = 0; i < p.sub; ++i) {
          const int64_t e = uu * p.sub + i;  // column within the chunk
          c += p.u[e / 4][jj][e % 4] * q[c0 + i];
        }
        float& y = acc[r * kPanelN + jj];
        y = std::fma(p.d[uu][jj] * sa, static_cast<float>(c), y);
        if (p.mins) y = std::fma(p.mn[uu][jj], g, y);
      }
    }
  }
}

}  // namespace bgemm

namespace {
bool finite(const bgemm::Block32& b) {
  return std::isfinite(b.d[0]) && std::isfinite(b.mn[0]) && std::isfinite(b.d[1]) && std::isfinite(b.mn[1]);
}
}  // namespace

bool find_non_finite(const StoredMatrix& w, int64_t& row, int64_t& col) {
  const bool blocks = block_gemm_supports(w.type);
  QUANT_CHECK(blocks || w.type == TType::F32 || w.type == TType::F16 || w.type == TType::BF16, "find_non_finite: {}", ttype_name(w.type));
  int64_t first = w.n;  // the lowest bad row, whatever the thread count
#pragma omp parallel
  {
    std::vector<float> buf(blocks ? 0 : static_cast<size_t>(w.k));
    bgemm::Block32 blk{};
#pragma omp for schedule(static) reduction(min : first)
    for (int64_t r = 0; r < w.n; ++r) {
      bool bad = false;
      if (blocks) {
        for (int64_t b = 0; b < w.k / 32 && !bad; ++b) {
          bgemm::decode(w.type, w.row(r), b, blk);
          bad = !finite(blk);
        }
      } else {
        dequantize_row(w.type, w.row(r), buf.data(), w.k);
        for (float v : buf) bad = bad || !std::isfinite(v);
      }
      if (bad) first = std::min(first, r);
    }
  }
  if (first == w.n) return false;
  row = first, col = 0;
  if (blocks) {
    bgemm::Block32 blk{};
    while (col < w.k) {
      bgemm::decode(w.type, w.row(row), col / 32, blk);
      if (!finite(blk)) break;
      col += 32;
    }
  } else {
    std::vector<float> buf(static_cast<size_t>(w.k));
    dequantize_row(w.type, w.row(row), buf.data(), w.k);
    while (col < w.k && std::isfinite(buf[static_cast<size_t>(col)])) ++col;
  }
  return true;
}

bool block_gemm_supports(TType t) {
  return t == TType::Q4_0 || t == TType::Q4_1 || t == TType::Q5_0 || t == TType::Q5_1 || t == TType::Q8_0 || t == TType::Q2_K ||
         t == TType::Q3_K || t == TType::Q4_K || t == TType::Q5_K || t == TType::Q6_K;
}

void block_gemm(const QActs& a, const StoredMatrix& w, float* y, Isa isa, bool accumulate) {
  using namespace bgemm;
  QUANT_CHECK(block_gemm_supports(w.type), "block GEMM: no kernel for {}", ttype_name(w.type));
  QUANT_CHECK(a.k == w.k && w.k % 32 == 0, "block GEMM: activations of {} columns against {} x {} weights", a.k, w.n, w.k);
  const Tile run = tile(isa);
  const int64_t m = a.m, n = w.n, kb = w.k / 32, panels = (n + kPanelN - 1) / kPanelN;
  const int64_t chunk_blocks = kChunkK / 32;
#pragma omp parallel
  {
    auto panel = std::make_unique<Panel>();
    std::vector<float> acc(static_cast<size_t>(m * kPanelN));
#pragma omp for schedule(static)
    for (int64_t pi = 0; pi < panels; ++pi) {
      const int64_t j0 = pi * kPanelN, nc = std::min(kPanelN, n - j0);
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (int64_t b0 = 0; b0 < kb; b0 += chunk_blocks) {
        const int64_t blocks = std::min(chunk_blocks, kb - b0);
        unpack_panel(w, j0, 32 * b0, blocks, *panel);
        for (int64_t r0 = 0; r0 < m; r0 += kTileM) run(a, r0, std::min(kTileM, m - r0), b0, *panel, acc.data() + r0 * kPanelN);
      }
      for (int64_t r = 0; r < m; ++r) {
        const float* src = acc.data() + r * kPanelN;
        float* dst = y + r * n + j0;
        if (accumulate)
          for (int64_t j = 0; j < nc; ++j) dst[j] += src[j];
        else
          std::memcpy(dst, src, static_cast<size_t>(nc) * sizeof(float));
      }
    }
  }
}

namespace bgemm {
Tile tile(Isa isa) {
  QUANT_CHECK(isa_supported(isa), "this CPU does not support {}", isa_name(isa));
  switch (isa) {
    case Isa::Avx512Vnni: return tile_avx512vnni;
    case Isa::Avx2: return tile_avx2;
    default: return tile_ref;
  }
}
}  // namespace bgemm

}  // namespace quant
