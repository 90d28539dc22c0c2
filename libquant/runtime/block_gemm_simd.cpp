// The block GEMM's SIMD tiles (see block_gemm.h): each carries its own target attribute and runs
// only after isa_supported() said yes; each gives its scalar twin's bytes (integer sums are exact,
// the float steps are the same operations in the same order).
#include <immintrin.h>

#include <cstring>

#include "quant/block_gemm.h"

namespace quant::bgemm {

namespace {
#define QUANT_AVX2 __attribute__((target("avx2,fma")))
#define QUANT_VNNI __attribute__((target("avx2,fma,avx512f,avx512bw,avx512vl,avx512vnni")))

int32_t quad(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// A tile's activation rows: rows at or past mr repeat the first (computed, never stored).
struct TileRows {
  const int8_t* q[kTileM];
  int64_t at[kTileM];  // row index into scale / bsum
  TileRows(const QActs& a, int64_t r0, int64_t mr) {
    for (int64_t r = 0; r < kTileM; ++r) {
      at[r] = r0 + (r < mr ? r : 0);
      q[r] = a.q.data() + at[r] * a.k;
    }
  }
};
// Where each tile row's sums go: acc's row, or a spare row for the repeated ones.
struct TileOut {
  alignas(64) float spare[kPanelN];
  float* row[kTileM];
  TileOut(float* acc, int64_t mr) {
    for (int64_t r = 0; r < kTileM; ++r) row[r] = r < mr ? acc + r * kPanelN : spare;
  }
};
}  // namespace

// MR rows x 64 outputs: 4·MR int32 accumulators per sub-block of SUB columns (vpdpbusd of 64
// codes x 4 broadcast activations, SUB/4 steps), started at −z·bsum, then folded into acc in
// memory. Written as loops over constant bounds that the compiler unrolls into registers.
template <int MR, int SUB>
QUANT_VNNI inline void tile_vnni_rows(const QActs& a, const TileRows& rows, int64_t b0, const Panel& p, float* const* out) {
  const int64_t kb = a.k / 32, units = p.blocks * (32 / SUB);
  for (int64_t uu = 0; uu < units; ++uu) {
    const int64_t c0 = 32 * b0 + uu * SUB, b = c0 / 32;
    int32_t bsum[MR];
    __m512i c[MR][4];
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      bsum[r] = sub_sum(a, rows.at[r], c0, SUB);
      const __m512i init = _mm512_set1_epi32(-p.z * bsum[r]);
#pragma GCC unroll 4
      for (int t = 0; t < 4; ++t) c[r][t] = init;
    }
#pragma GCC unroll 8
    for (int s = 0; s < SUB / 4; ++s) {
      const uint8_t* u = p.u[uu * (SUB / 4) + s][0];
      __m512i w[4];
#pragma GCC unroll 4
      for (int t = 0; t < 4; ++t) w[t] = _mm512_load_si512(u + 64 * t);
#pragma GCC unroll 8
      for (int r = 0; r < MR; ++r) {
        const __m512i x = _mm512_set1_epi32(quad(rows.q[r] + c0 + 4 * s));
#pragma GCC unroll 4
        for (int t = 0; t < 4; ++t) c[r][t] = _mm512_dpbusd_epi32(c[r][t], w[t], x);
      }
    }
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      const float sa = a.scale[static_cast<size_t>(rows.at[r] * kb + b)];
      const __m512 s_ = _mm512_set1_ps(sa), g = _mm512_set1_ps(sa * static_cast<float>(bsum[r]));
#pragma GCC unroll 4
      for (int t = 0; t < 4; ++t) {
        float* f = out[r] + 16 * t;  // maskz cvt: the plain one trips GCC 12's maybe-uninitialized warning
        __m512 y = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_load_ps(p.d[uu] + 16 * t), s_), _mm512_maskz_cvtepi32_ps(0xFFFF, c[r][t]), _mm512_loadu_ps(f));
        if (p.mins) y = _mm512_fmadd_ps(_mm512_load_ps(p.mn[uu] + 16 * t), g, y);
        _mm512_storeu_ps(f, y);
      }
    }
  }
}

QUANT_VNNI void tile_avx512vnni(const QActs& a, int64_t r0, int64_t mr, int64_t b0, const Panel& p, float* acc) {
  static_assert(kPanelN == 64);
  const TileRows rows(a, r0, mr);
  TileOut out(acc, mr);
  if (p.sub == 32)
    tile_vnni_rows<kTileM, 32>(a, rows, b0, p, out.row);
  else
    tile_vnni_rows<kTileM, 16>(a, rows, b0, p, out.row);
}

// Without VNNI: MR rows x 16 outputs at a time (four strips per panel), vpmaddubsw + vpmaddwd.
// Codes above 127 (Q8_0's q + 128) would overflow vpmaddubsw's int16 pairs, so for z = 128 the
// codes go back to signed q and the sign trick multiplies |x| by q·sign(x): the sum is then
// isum − 128·bsum directly, the same integer.
template <int MR, int SUB, bool SIGNED>
QUANT_AVX2 inline void tile_avx2_rows(const QActs& a, const int8_t* const* rq, const int64_t* at, int64_t b0, const Panel& p,
                                      float* const* out) {
  const int64_t kb = a.k / 32, units = p.blocks * (32 / SUB);
  const __m256i ones = _mm256_set1_epi16(1), flip = _mm256_set1_epi8(static_cast<char>(0x80));
  const int32_t z = SIGNED ? 0 : p.z;
  for (int64_t strip = 0; strip < 4; ++strip)
    for (int64_t uu = 0; uu < units; ++uu) {
      const int64_t c0 = 32 * b0 + uu * SUB, b = c0 / 32;
      int32_t bsum[MR];
      __m256i c[MR][2];
#pragma GCC unroll 8
      for (int r = 0; r < MR; ++r) {
        bsum[r] = sub_sum(a, at[r], c0, SUB);
        c[r][0] = c[r][1] = _mm256_set1_epi32(-z * bsum[r]);
      }
#pragma GCC unroll 8
      for (int s = 0; s < SUB / 4; ++s) {
        const uint8_t* u = p.u[uu * (SUB / 4) + s][16 * strip];
        __m256i w[2];
#pragma GCC unroll 2
        for (int t = 0; t < 2; ++t) {
          w[t] = _mm256_load_si256(reinterpret_cast<const __m256i*>(u + 32 * t));
          if (SIGNED) w[t] = _mm256_xor_si256(w[t], flip);
        }
#pragma GCC unroll 8
        for (int r = 0; r < MR; ++r) {
          const __m256i x = _mm256_set1_epi32(quad(rq[r] + c0 + 4 * s));
#pragma GCC unroll 2
          for (int t = 0; t < 2; ++t) {
            const __m256i prod = SIGNED ? _mm256_maddubs_epi16(_mm256_abs_epi8(x), _mm256_sign_epi8(w[t], x)) : _mm256_maddubs_epi16(w[t], x);
            c[r][t] = _mm256_add_epi32(c[r][t], _mm256_madd_epi16(prod, ones));
          }
        }
      }
#pragma GCC unroll 8
      for (int r = 0; r < MR; ++r) {
        const float sa = a.scale[static_cast<size_t>(at[r] * kb + b)];
        const __m256 s_ = _mm256_set1_ps(sa), g = _mm256_set1_ps(sa * static_cast<float>(bsum[r]));
#pragma GCC unroll 2
        for (int t = 0; t < 2; ++t) {
          float* f = out[r] + 16 * strip + 8 * t;
          __m256 y = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_load_ps(p.d[uu] + 16 * strip + 8 * t), s_), _mm256_cvtepi32_ps(c[r][t]),
                                     _mm256_loadu_ps(f));
          if (p.mins) y = _mm256_fmadd_ps(_mm256_load_ps(p.mn[uu] + 16 * strip + 8 * t), g, y);
          _mm256_storeu_ps(f, y);
        }
      }
    }
}

QUANT_AVX2 void tile_avx2(const QActs& a, int64_t r0, int64_t mr, int64_t b0, const Panel& p, float* acc) {
  static_assert(kPanelN == 64);
  const TileRows rows(a, r0, mr);
  TileOut out(acc, mr);
  // Q8_0's signed route needs |x| and two sign products live besides the accumulators: with 16 ymm
  // registers it runs as 4 + 2 rows instead of 6 (the same sums per output, in the same order).
  static_assert(kTileM == 6);
  if (p.z == 128) {
    tile_avx2_rows<4, 32, true>(a, rows.q, rows.at, b0, p, out.row);
    tile_avx2_rows<2, 32, true>(a, rows.q + 4, rows.at + 4, b0, p, out.row + 4);
  } else if (p.sub == 32) {
    tile_avx2_rows<kTileM, 32, false>(a, rows.q, rows.at, b0, p, out.row);
  } else {
    tile_avx2_rows<kTileM, 16, false>(a, rows.q, rows.at, b0, p, out.row);
  }
}

}  // namespace quant::bgemm
