// SIMD integer dot kernels. Each function carries its own target attribute and is called only
// after isa_supported() said yes, so the binary runs on CPUs without AVX-512. Every kernel
// returns the same int32 sums as its _ref twin in int_gemm.cpp (integer arithmetic is exact).
#include <immintrin.h>

#include <cstring>

#include "quant/int_gemm.h"

namespace quant::igemm {

namespace {

#define QUANT_AVX2 __attribute__((target("avx2,fma")))
#define QUANT_VNNI __attribute__((target("avx2,fma,avx512f,avx512bw,avx512vl,avx512vnni")))

QUANT_AVX2 inline int32_t hsum_avx2(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
  return _mm_cvtsi128_si32(s);
}

// Four vectors of 8 int32 -> their four totals.
QUANT_AVX2 inline __m128i hsum4_avx2(__m256i p0, __m256i p1, __m256i p2, __m256i p3) {
  const __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(p0, p1), _mm256_hadd_epi32(p2, p3));
  return _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
}

// Block b's sums of the kNc = 4 rows into out[c][kb].
QUANT_AVX2 inline void store_block_sums(__m128i s, int32_t* out, int64_t kb, int64_t b) {
  alignas(16) int32_t v[4];
  _mm_store_si128(reinterpret_cast<__m128i*>(v), s);
  for (int64_t c = 0; c < kNc; ++c) out[c * kb + b] = v[c];
}

// 32 4-bit codes of a block in element order: low nibbles are elements 0..15, high 16..31.
QUANT_AVX2 inline __m256i unpack_nibbles(const uint8_t* q) {
  const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q));
  const __m128i m = _mm_set1_epi8(0x0F);
  return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(b, 4), m), _mm_and_si128(b, m));
}

// A W4 tile's activation rows: rows at or past mr read row 0 again (rs[r] = 0: its scale and
// block sums too) and are not stored, so a short last tile costs a full one.
inline void tile_rows(const int8_t* a, int64_t lda, int64_t mr, const int8_t** row, int64_t* rs) {
  for (int64_t r = 0; r < kTileM; ++r) {
    rs[r] = r < mr ? r : 0;
    row[r] = a + rs[r] * lda;
  }
}

}  // namespace

QUANT_AVX2 void w8_dots_avx2(const int8_t* a, const int8_t* w, const int32_t*, int64_t k, int32_t* out) {
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i acc[kNc];
  for (auto& x : acc) x = _mm256_setzero_si256();
  for (int64_t i = 0; i < k; i += 32) {
    const __m256i av = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + i));
    const __m256i aabs = _mm256_abs_epi8(av);
    for (int64_t c = 0; c < kNc; ++c) {
      const __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + c * k + i));
      // |a| * (w with a's sign): u8 x s8 pairs stay below 2 * 127 * 127 in int16.
      const __m256i p16 = _mm256_maddubs_epi16(aabs, _mm256_sign_epi8(wv, av));
      acc[c] = _mm256_add_epi32(acc[c], _mm256_madd_epi16(p16, ones));
    }
  }
  for (int64_t c = 0; c < kNc; ++c) out[c] = hsum_avx2(acc[c]);
}

QUANT_AVX2 void w4_dots_avx2(const int8_t* a, const uint8_t* nib, int64_t k, int32_t* out) {
  const int64_t kb = k / kQBlock;
  const __m256i ones = _mm256_set1_epi16(1);
  for (int64_t b = 0; b < kb; ++b) {
    const __m256i av = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + b * kQBlock));
    __m256i p[kNc];
    for (int64_t c = 0; c < kNc; ++c)  // codes 0..15 (u8) x activations (s8)
      p[c] = _mm256_madd_epi16(_mm256_maddubs_epi16(unpack_nibbles(nib + (c * kb + b) * 16), av), ones);
    store_block_sums(hsum4_avx2(p[0], p[1], p[2], p[3]), out, kb, b);
  }
}

QUANT_AVX2 void w8b_dots_avx2(const int8_t* a, const uint8_t* wb, int64_t k, int32_t* out) {
  const auto* w = reinterpret_cast<const int8_t*>(wb);
  const int64_t kb = k / kQBlock;
  const __m256i ones = _mm256_set1_epi16(1);
  for (int64_t b = 0; b < kb; ++b) {
    const __m256i av = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + b * kQBlock));
    const __m256i aabs = _mm256_abs_epi8(av);
    __m256i p[kNc];
    for (int64_t c = 0; c < kNc; ++c) {
      const __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + c * k + b * kQBlock));
      p[c] = _mm256_madd_epi16(_mm256_maddubs_epi16(aabs, _mm256_sign_epi8(wv, av)), ones);
    }
    store_block_sums(hsum4_avx2(p[0], p[1], p[2], p[3]), out, kb, b);
  }
}

QUANT_VNNI void w8b_dots_avx512vnni(const int8_t* a, const uint8_t* wb, int64_t k, int32_t* out) {
  const auto* w = reinterpret_cast<const int8_t*>(wb);
  const int64_t kb = k / kQBlock;
  for (int64_t b = 0; b < kb; ++b) {
    const __m256i av = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + b * kQBlock));
    const __m256i aabs = _mm256_abs_epi8(av);
    __m256i p[kNc];
    for (int64_t c = 0; c < kNc; ++c) {  // |a| (u8) x (w with a's sign) (s8), accumulated in int32
      const __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + c * k + b * kQBlock));
      p[c] = _mm256_dpbusd_epi32(_mm256_setzero_si256(), aabs, _mm256_sign_epi8(wv, av));
    }
    store_block_sums(hsum4_avx2(p[0], p[1], p[2], p[3]), out, kb, b);
  }
}

QUANT_VNNI void w8_dots_avx512vnni(const int8_t* a, const int8_t* w, const int32_t* wsum, int64_t k, int32_t* out) {
  // dpbusd multiplies u8 x s8: a + 128 (a ^ 0x80) is unsigned; Σ(a+128)w - 128 Σw = Σ a w.
  // Named accumulators: GCC spills an array of them to the stack on every step.
  static_assert(kNc == 4);
  const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
  __m512i s0 = _mm512_setzero_si512(), s1 = s0, s2 = s0, s3 = s0;
  int64_t i = 0;
  for (; i + 64 <= k; i += 64) {
    const __m512i au = _mm512_xor_si512(_mm512_loadu_si512(a + i), flip);
    s0 = _mm512_dpbusd_epi32(s0, au, _mm512_loadu_si512(w + i));
    s1 = _mm512_dpbusd_epi32(s1, au, _mm512_loadu_si512(w + k + i));
    s2 = _mm512_dpbusd_epi32(s2, au, _mm512_loadu_si512(w + 2 * k + i));
    s3 = _mm512_dpbusd_epi32(s3, au, _mm512_loadu_si512(w + 3 * k + i));
  }
  if (i < k) {  // k % 64 == 32: the last 32 columns through the low halves
    const __mmask64 lo = 0xFFFFFFFFull;
    const __m512i au = _mm512_xor_si512(_mm512_maskz_loadu_epi8(lo, a + i), flip);
    s0 = _mm512_dpbusd_epi32(s0, au, _mm512_maskz_loadu_epi8(lo, w + i));
    s1 = _mm512_dpbusd_epi32(s1, au, _mm512_maskz_loadu_epi8(lo, w + k + i));
    s2 = _mm512_dpbusd_epi32(s2, au, _mm512_maskz_loadu_epi8(lo, w + 2 * k + i));
    s3 = _mm512_dpbusd_epi32(s3, au, _mm512_maskz_loadu_epi8(lo, w + 3 * k + i));
  }
  // Lane sums through memory: GCC 12 warns inside _mm512_reduce_add_epi32 and the 512-bit extracts.
  const auto total = [](__m512i v) QUANT_VNNI {
    alignas(64) int32_t lanes[16];
    _mm512_store_si512(lanes, v);
    int32_t t = 0;
    for (int32_t x : lanes) t += x;
    return t;
  };
  out[0] = total(s0) - 128 * wsum[0];
  out[1] = total(s1) - 128 * wsum[1];
  out[2] = total(s2) - 128 * wsum[2];
  out[3] = total(s3) - 128 * wsum[3];
}

QUANT_VNNI void w4_dots_avx512vnni(const int8_t* a, const uint8_t* nib, int64_t k, int32_t* out) {
  const int64_t kb = k / kQBlock;
  for (int64_t b = 0; b < kb; ++b) {
    const __m256i av = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + b * kQBlock));
    __m256i p[kNc];
    for (int64_t c = 0; c < kNc; ++c)  // codes (u8) x activations (s8), four products per int32 lane
      p[c] = _mm256_dpbusd_epi32(_mm256_setzero_si256(), unpack_nibbles(nib + (c * kb + b) * 16), av);
    store_block_sums(hsum4_avx2(p[0], p[1], p[2], p[3]), out, kb, b);
  }
}

// 6 activation rows x 64 weight rows: per step of 4 columns, 4 zmm of weights, one broadcast of
// 4 activation bytes per row and 24 vpdpbusd into 24 accumulators held in named registers (GCC
// spills an array of them to the stack on every step). Rows at or past mr read row 0 again and
// are not stored, so a short last tile costs a full one.
QUANT_VNNI void w8_tile_avx512vnni(const uint8_t* au, int64_t lda, int64_t mr, const int8_t* panel, int64_t k, int32_t* c) {
  static_assert(kTileM == 6 && kTileN == 64);
  const uint8_t* row[kTileM];
  for (int64_t r = 0; r < kTileM; ++r) row[r] = au + (r < mr ? r : 0) * lda;
#define QUANT_ACC(r) __m512i c##r##0 = _mm512_setzero_si512(), c##r##1 = c##r##0, c##r##2 = c##r##0, c##r##3 = c##r##0
  QUANT_ACC(0); QUANT_ACC(1); QUANT_ACC(2); QUANT_ACC(3); QUANT_ACC(4); QUANT_ACC(5);
#undef QUANT_ACC
  for (int64_t s = 0; s < k / 4; ++s) {
    const int8_t* p = panel + s * 4 * kTileN;
    const __m512i w0 = _mm512_loadu_si512(p), w1 = _mm512_loadu_si512(p + 64), w2 = _mm512_loadu_si512(p + 128),
                  w3 = _mm512_loadu_si512(p + 192);
#define QUANT_ROW(r)                                              \
  {                                                               \
    int32_t quad;                                                 \
    std::memcpy(&quad, row[r] + 4 * s, 4);                        \
    const __m512i b = _mm512_set1_epi32(quad);                    \
    c##r##0 = _mm512_dpbusd_epi32(c##r##0, b, w0);                \
    c##r##1 = _mm512_dpbusd_epi32(c##r##1, b, w1);                \
    c##r##2 = _mm512_dpbusd_epi32(c##r##2, b, w2);                \
    c##r##3 = _mm512_dpbusd_epi32(c##r##3, b, w3);                \
  }
    QUANT_ROW(0) QUANT_ROW(1) QUANT_ROW(2) QUANT_ROW(3) QUANT_ROW(4) QUANT_ROW(5)
#undef QUANT_ROW
  }
  const __m512i out[kTileM][4] = {{c00, c01, c02, c03}, {c10, c11, c12, c13}, {c20, c21, c22, c23},
                                  {c30, c31, c32, c33}, {c40, c41, c42, c43}, {c50, c51, c52, c53}};
  for (int64_t r = 0; r < mr; ++r)
    for (int t = 0; t < 4; ++t) _mm512_storeu_si512(c + r * kTileN + t * 16, out[r][t]);
}

// W4A8, 6 activation rows x 64 weight rows. Per 32-block: 4 steps of 8 columns, each 4 zmm of
// panel bytes whose low nibbles (columns 8s..8s+3) and high nibbles (8s+4..8s+7) are the u8
// operands of 2 x 24 vpdpbusd against broadcast activation quads into 24 named int32
// accumulators; then each row's block sums fold into the float tile (in L1) with
// acc + fma(d·sa, isum, (mn·sa)·bsum), the scalar twin's order.
QUANT_VNNI void w4_tile_avx512vnni(const int8_t* a, int64_t lda, int64_t mr, const float* sa, const int32_t* bs, int64_t ls,
                                   const uint8_t* panel, const float* pd, const float* pmn, int64_t k, float* y) {
  static_assert(kTileM == 6 && kTileN == 64);
  const int8_t* row[kTileM];
  int64_t rs[kTileM];
  tile_rows(a, lda, mr, row, rs);
  alignas(64) float acc[kTileM * kTileN] = {};
  const __m512i m4 = _mm512_set1_epi8(0x0F);
  const int64_t kb = k / 32;
  for (int64_t b = 0; b < kb; ++b) {
#define QUANT_ACC(r) __m512i c##r##0 = _mm512_setzero_si512(), c##r##1 = c##r##0, c##r##2 = c##r##0, c##r##3 = c##r##0
    QUANT_ACC(0); QUANT_ACC(1); QUANT_ACC(2); QUANT_ACC(3); QUANT_ACC(4); QUANT_ACC(5);
#undef QUANT_ACC
    for (int64_t s = 4 * b; s < 4 * b + 4; ++s) {
      const uint8_t* p = panel + s * 4 * kTileN;
      for (int half = 0; half < 2; ++half) {
        const int sh = 4 * half;
        const __m512i w0 = _mm512_and_si512(_mm512_srli_epi16(_mm512_loadu_si512(p), sh), m4);
        const __m512i w1 = _mm512_and_si512(_mm512_srli_epi16(_mm512_loadu_si512(p + 64), sh), m4);
        const __m512i w2 = _mm512_and_si512(_mm512_srli_epi16(_mm512_loadu_si512(p + 128), sh), m4);
        const __m512i w3 = _mm512_and_si512(_mm512_srli_epi16(_mm512_loadu_si512(p + 192), sh), m4);
#define QUANT_ROW(r)                                              \
  {                                                               \
    int32_t quad;                                                 \
    std::memcpy(&quad, row[r] + 8 * s + sh, 4);                   \
    const __m512i q = _mm512_set1_epi32(quad);                    \
    c##r##0 = _mm512_dpbusd_epi32(c##r##0, w0, q);                \
    c##r##1 = _mm512_dpbusd_epi32(c##r##1, w1, q);                \
    c##r##2 = _mm512_dpbusd_epi32(c##r##2, w2, q);                \
    c##r##3 = _mm512_dpbusd_epi32(c##r##3, w3, q);                \
  }
        QUANT_ROW(0) QUANT_ROW(1) QUANT_ROW(2) QUANT_ROW(3) QUANT_ROW(4) QUANT_ROW(5)
#undef QUANT_ROW
      }
    }
    const float* d = pd + b * kTileN;
    const float* mn = pmn + b * kTileN;
#define QUANT_FOLD(r)                                                                               \
  {                                                                                                 \
    const __m512 s_ = _mm512_set1_ps(sa[rs[r] * ls + b]);                                           \
    const __m512 bsum = _mm512_set1_ps(static_cast<float>(bs[rs[r] * ls + b]));                     \
    const __m512i c_[4] = {c##r##0, c##r##1, c##r##2, c##r##3};                                     \
    for (int t = 0; t < 4; ++t) {                                                                   \
      float* f = acc + (r) * kTileN + 16 * t;                                                       \
      const __m512 u = _mm512_mul_ps(_mm512_mul_ps(_mm512_loadu_ps(mn + 16 * t), s_), bsum);                  \
      const __m512 v = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_loadu_ps(d + 16 * t), s_), _mm512_maskz_cvtepi32_ps(0xFFFF, c_[t]), u); \
      _mm512_store_ps(f, _mm512_add_ps(_mm512_load_ps(f), v));                                    \
    }                                                                                               \
  }
    QUANT_FOLD(0) QUANT_FOLD(1) QUANT_FOLD(2) QUANT_FOLD(3) QUANT_FOLD(4) QUANT_FOLD(5)
#undef QUANT_FOLD
  }
  std::memcpy(y, acc, static_cast<size_t>(mr * kTileN) * sizeof(float));
}

// W4A8 without VNNI: the same panels and fold, 6 rows x 16 weight rows at a time (four strips
// per 64-row panel): per half step one 32-byte load and shift + mask per 8 rows, then per
// activation row vpmaddubsw (codes u8 x activations s8, pairs below 2 * 15 * 127 in int16),
// vpmaddwd by ones and an add into 12 named accumulators.
QUANT_AVX2 void w4_tile_avx2(const int8_t* a, int64_t lda, int64_t mr, const float* sa, const int32_t* bs, int64_t ls,
                             const uint8_t* panel, const float* pd, const float* pmn, int64_t k, float* y) {
  static_assert(kTileM == 6 && kTileN == 64);
  const int8_t* row[kTileM];
  int64_t rs[kTileM];
  tile_rows(a, lda, mr, row, rs);
  alignas(32) float acc[kTileM * kTileN] = {};
  const __m256i m4 = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1);
  const int64_t kb = k / 32;
  for (int64_t strip = 0; strip < 4; ++strip)
    for (int64_t b = 0; b < kb; ++b) {
#define QUANT_ACC(r) __m256i c##r##0 = _mm256_setzero_si256(), c##r##1 = c##r##0
      QUANT_ACC(0); QUANT_ACC(1); QUANT_ACC(2); QUANT_ACC(3); QUANT_ACC(4); QUANT_ACC(5);
#undef QUANT_ACC
      for (int64_t s = 4 * b; s < 4 * b + 4; ++s) {
        const uint8_t* p = panel + s * 4 * kTileN + strip * 64;
        for (int half = 0; half < 2; ++half) {
          const int sh = 4 * half;
          const __m128i cnt = _mm_cvtsi32_si128(sh);
          const __m256i w0 = _mm256_and_si256(_mm256_srl_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)), cnt), m4);
          const __m256i w1 = _mm256_and_si256(_mm256_srl_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 32)), cnt), m4);
#define QUANT_ROW(r)                                                                          \
  {                                                                                           \
    int32_t quad;                                                                             \
    std::memcpy(&quad, row[r] + 8 * s + sh, 4);                                               \
    const __m256i q = _mm256_set1_epi32(quad);                                                \
    c##r##0 = _mm256_add_epi32(c##r##0, _mm256_madd_epi16(_mm256_maddubs_epi16(w0, q), ones)); \
    c##r##1 = _mm256_add_epi32(c##r##1, _mm256_madd_epi16(_mm256_maddubs_epi16(w1, q), ones)); \
  }
          QUANT_ROW(0) QUANT_ROW(1) QUANT_ROW(2) QUANT_ROW(3) QUANT_ROW(4) QUANT_ROW(5)
#undef QUANT_ROW
        }
      }
      const float* d = pd + b * kTileN + strip * 16;
      const float* mn = pmn + b * kTileN + strip * 16;
#define QUANT_FOLD(r)                                                                                         \
  {                                                                                                           \
    const __m256 s_ = _mm256_set1_ps(sa[rs[r] * ls + b]);                                                     \
    const __m256 bsum = _mm256_set1_ps(static_cast<float>(bs[rs[r] * ls + b]));                               \
    const __m256i c_[2] = {c##r##0, c##r##1};                                                                 \
    for (int t = 0; t < 2; ++t) {                                                                             \
      float* f = acc + (r) * kTileN + strip * 16 + 8 * t;                                                     \
      const __m256 u = _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(mn + 8 * t), s_), bsum);                   \
      const __m256 v = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_loadu_ps(d + 8 * t), s_), _mm256_cvtepi32_ps(c_[t]), u); \
      _mm256_store_ps(f, _mm256_add_ps(_mm256_load_ps(f), v));                                                \
    }                                                                                                         \
  }
      QUANT_FOLD(0) QUANT_FOLD(1) QUANT_FOLD(2) QUANT_FOLD(3) QUANT_FOLD(4) QUANT_FOLD(5)
#undef QUANT_FOLD
    }
  std::memcpy(y, acc, static_cast<size_t>(mr * kTileN) * sizeof(float));
}

}  // namespace quant::igemm
