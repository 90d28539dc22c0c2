// Integer GEMM drivers, packing, activation quantization, the scalar reference kernels and
// run-time ISA dispatch. SIMD kernels: int_gemm_simd.cpp.
#include "quant/int_gemm.h"

#include <omp.h>

#include <algorithm>
#include <iterator>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "quant/error.h"
#include "quant/pack_blocks.h"

namespace quant {

namespace igemm {
namespace {
// Every ISA's kernels in one table (as XNNPACK's gemm-config): the dots, the tiles, and so which
// panels the packers build at load. Indexed by Isa; a null tile runs the dots instead.
struct IsaKernels {
  Isa isa;
  const char* name;
  W8Dots w8;
  W4Dots w4, w8b;
  W8Tile w8_tile;
  W4Tile w4_tile;
};
constexpr IsaKernels kKernels[] = {
    {Isa::Scalar, "scalar", w8_dots_ref, w4_dots_ref, w8b_dots_ref, nullptr, w4_tile_ref},
    {Isa::Avx2, "avx2", w8_dots_avx2, w4_dots_avx2, w8b_dots_avx2, nullptr, w4_tile_avx2},
    {Isa::Avx512Vnni, "avx512vnni", w8_dots_avx512vnni, w4_dots_avx512vnni, w8b_dots_avx512vnni, w8_tile_avx512vnni, w4_tile_avx512vnni},
};
static_assert(std::size(kKernels) == 3 && kKernels[0].isa == Isa::Scalar && kKernels[1].isa == Isa::Avx2 &&
              kKernels[2].isa == Isa::Avx512Vnni);  // indexed by Isa

const IsaKernels& supported(Isa isa) {
  QUANT_CHECK(isa_supported(isa), "this CPU does not support {}", isa_name(isa));
  return kKernels[static_cast<int>(isa)];
}

// Whether a CPU feature level at or below the best supported one has a kernel: the packers
// build a tile's panels at load only where a tile can use them.
template <class F>
bool some_supported_isa_has(F IsaKernels::*member) {
  for (const IsaKernels& k : kKernels)
    if (k.*member && k.isa != Isa::Scalar && isa_supported(k.isa)) return true;
  return false;
}
}  // namespace

W8Dots w8_dots(Isa isa) { return supported(isa).w8; }
W4Dots w4_dots(Isa isa) { return supported(isa).w4; }
W4Dots w8b_dots(Isa isa) { return supported(isa).w8b; }
W8Tile w8_tile(Isa isa) { return supported(isa).w8_tile; }
W4Tile w4_tile(Isa isa) { return supported(isa).w4_tile; }
}  // namespace igemm

const char* isa_name(Isa isa) {
  const auto i = static_cast<size_t>(isa);
  return i < std::size(igemm::kKernels) ? igemm::kKernels[i].name : "?";
}

bool isa_supported(Isa isa) {
  __builtin_cpu_init();
  switch (isa) {
    case Isa::Scalar: return true;
    case Isa::Avx2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case Isa::Avx512Vnni:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
             __builtin_cpu_supports("avx512vnni");
  }
  return false;
}

Isa best_isa() {
  Isa cap = Isa::Avx512Vnni;
  if (const char* e = std::getenv("QUANT_ISA")) {
    const std::string v(e);
    if (v == "scalar") cap = Isa::Scalar;
    else if (v == "avx2") cap = Isa::Avx2;
    else QUANT_CHECK(v == "avx512vnni", "QUANT_ISA={} (scalar, avx2, avx512vnni)", v);
    QUANT_CHECK(isa_supported(cap), "QUANT_ISA={}: this CPU does not support {} (unset QUANT_ISA, or ask for a lower level)", v,
                isa_name(cap));
  }
  for (Isa i : {Isa::Avx512Vnni, Isa::Avx2})
    if (static_cast<int>(i) <= static_cast<int>(cap) && isa_supported(i)) return i;
  return Isa::Scalar;
}

const char* act_quant_name(ActQuant g) {
  switch (g) {
    case ActQuant::PerToken: return "per-token";
    case ActQuant::PerTensor: return "per-tensor";
    case ActQuant::PerBlock: return "per-block";
  }
  return "?";
}

ActQuant parse_act_quant(const std::string& s) {
  for (ActQuant g : {ActQuant::PerToken, ActQuant::PerTensor, ActQuant::PerBlock})
    if (s == act_quant_name(g)) return g;
  fail("activation quantization {} (per-token, per-tensor, per-block)", s);
}

QActs quantize_acts(const float* x, int64_t m, int64_t k, ActQuant g) {
  QUANT_CHECK(k % kQBlock == 0, "int8 activations: {} columns are not a multiple of 32", k);
  QActs a;
  a.m = m;
  a.k = k;
  a.per_block = g == ActQuant::PerBlock;
  const int64_t kb = k / kQBlock;
  a.q.resize(static_cast<size_t>(m * k));
  a.scale.resize(static_cast<size_t>(m * kb));
  a.bsum.resize(static_cast<size_t>(m * kb));
  a.bsum16.resize(static_cast<size_t>(m * 2 * kb));
  float tensor_max = 0;  // per-tensor: the max over every row (fixed order: deterministic)
  if (g == ActQuant::PerTensor)
    for (int64_t i = 0; i < m * k; ++i) tensor_max = std::max(tensor_max, std::fabs(x[i]));
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < m; ++r) {
    const float* xr = x + r * k;
    auto fill = [&](int64_t c0, int64_t c1, float amax) {
      const float s = amax / 127.0f, inv = s != 0.0f ? 1.0f / s : 0.0f;
      for (int64_t c = c0; c < c1; ++c)
        a.q[static_cast<size_t>(r * k + c)] = static_cast<int8_t>(std::clamp(std::nearbyint(xr[c] * inv), -127.0f, 127.0f));
      return s;
    };
    if (g == ActQuant::PerBlock) {
      for (int64_t b = 0; b < kb; ++b) {
        float amax = 0;
        for (int64_t c = b * kQBlock; c < (b + 1) * kQBlock; ++c) amax = std::max(amax, std::fabs(xr[c]));
        a.scale[static_cast<size_t>(r * kb + b)] = fill(b * kQBlock, (b + 1) * kQBlock, amax);
      }
    } else {
      float amax = tensor_max;
      if (g == ActQuant::PerToken)
        for (int64_t c = 0; c < k; ++c) amax = std::max(amax, std::fabs(xr[c]));
      const float s = fill(0, k, amax);
      for (int64_t b = 0; b < kb; ++b) a.scale[static_cast<size_t>(r * kb + b)] = s;
    }
    for (int64_t h = 0; h < 2 * kb; ++h) {
      int32_t s = 0;
      for (int64_t c = h * 16; c < (h + 1) * 16; ++c) s += a.q[static_cast<size_t>(r * k + c)];
      a.bsum16[static_cast<size_t>(r * 2 * kb + h)] = s;
    }
    for (int64_t b = 0; b < kb; ++b)
      a.bsum[static_cast<size_t>(r * kb + b)] = a.bsum16[static_cast<size_t>(r * 2 * kb + 2 * b)] + a.bsum16[static_cast<size_t>(r * 2 * kb + 2 * b + 1)];
  }
  return a;
}

W8Weights quantize_w8(const float* w, int64_t n, int64_t k) {
  QUANT_CHECK(k % kQBlock == 0, "W8: {} columns are not a multiple of 32", k);
  W8Weights o;
  o.n = n;
  o.k = k;
  o.q.resize(static_cast<size_t>(n * k));
  o.scale.resize(static_cast<size_t>(n));
  o.wsum.resize(static_cast<size_t>(n));
  for (int64_t r = 0; r < n; ++r) {
    float amax = 0;
    for (int64_t c = 0; c < k; ++c) amax = std::max(amax, std::fabs(w[r * k + c]));
    const float s = amax / 127.0f, inv = s != 0.0f ? 1.0f / s : 0.0f;
    int32_t sum = 0;
    for (int64_t c = 0; c < k; ++c) {
      const auto q = static_cast<int8_t>(std::clamp(std::nearbyint(w[r * k + c] * inv), -127.0f, 127.0f));
      o.q[static_cast<size_t>(r * k + c)] = q;
      sum += q;
    }
    o.scale[static_cast<size_t>(r)] = s;
    o.wsum[static_cast<size_t>(r)] = sum;
  }
  if (igemm::some_supported_isa_has(&igemm::IsaKernels::w8_tile)) o.panels = igemm::pack_w8_panels(o.q.data(), n, k);
  return o;
}

W4Weights pack_w4(const uint8_t* codes, const float* scales, const float* mins, int64_t n, int64_t k, int64_t group) {
  QUANT_CHECK(k % kQBlock == 0 && group % kQBlock == 0 && k % group == 0,
              "W4: {} columns with groups of {} do not tile 32-blocks", k, group);
  W4Weights o;
  o.n = n;
  o.k = k;
  const int64_t kb = k / kQBlock, ng = k / group;
  o.nib.assign(static_cast<size_t>(n * kb * 16), 0);
  o.d.resize(static_cast<size_t>(n * kb));
  o.mn.resize(static_cast<size_t>(n * kb));
  for (int64_t r = 0; r < n; ++r)
    for (int64_t b = 0; b < kb; ++b) {
      const int64_t g = b * kQBlock / group;
      o.d[static_cast<size_t>(r * kb + b)] = scales[r * ng + g];
      o.mn[static_cast<size_t>(r * kb + b)] = mins[r * ng + g];
      uint8_t* dst = o.nib.data() + (r * kb + b) * 16;
      const uint8_t* src = codes + r * k + b * kQBlock;
      for (int j = 0; j < static_cast<int>(kQBlock); ++j) QUANT_CHECK(src[j] < 16, "W4: code above 15 at row {} block {}", r, b);
      put_nibbles(dst, src);
    }
  if (igemm::some_supported_isa_has(&igemm::IsaKernels::w4_tile)) igemm::pack_w4_panels(o);
  return o;
}

W8BlockWeights pack_w8_blocks(const uint8_t* codes, const float* scales, const float* mins, int64_t n, int64_t k,
                              int64_t group, int bits) {
  QUANT_CHECK(k % kQBlock == 0 && group % kQBlock == 0 && k % group == 0 && bits >= 2 && bits <= 8,
              "W8 blocks: {} columns with groups of {} ({} bits) do not tile 32-blocks", k, group, bits);
  W8BlockWeights o;
  o.n = n;
  o.k = k;
  const int64_t kb = k / kQBlock, ng = k / group;
  const int z0 = 1 << (bits - 1);
  o.q.resize(static_cast<size_t>(n * k));
  o.d.resize(static_cast<size_t>(n * kb));
  o.mn.resize(static_cast<size_t>(n * kb));
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t b = 0; b < kb; ++b) {
      const int64_t g = b * kQBlock / group;
      const float d = scales[r * ng + g], m = mins[r * ng + g];
      o.d[static_cast<size_t>(r * kb + b)] = d;
      // Integer-zero grids (min = -z0 * d) give exactly 0 here.
      o.mn[static_cast<size_t>(r * kb + b)] = m == -static_cast<float>(z0) * d ? 0.0f : m + static_cast<float>(z0) * d;
    }
    for (int64_t c = 0; c < k; ++c) {
      const int q = static_cast<int>(codes[r * k + c]) - z0;
      QUANT_CHECK(q >= -127 && q <= 127, "W8 blocks: code {} at row {} column {} leaves int8's symmetric range", q + z0, r, c);
      o.q[static_cast<size_t>(r * k + c)] = static_cast<int8_t>(q);
    }
  }
  return o;
}

namespace igemm {

void w8b_dots_ref(const int8_t* a, const uint8_t* wb, int64_t k, int32_t* out) {
  const auto* w = reinterpret_cast<const int8_t*>(wb);
  const int64_t kb = k / kQBlock;
  for (int64_t c = 0; c < kNc; ++c)
    for (int64_t b = 0; b < kb; ++b) {
      int32_t s = 0;
      for (int64_t j = 0; j < kQBlock; ++j) s += static_cast<int32_t>(a[b * kQBlock + j]) * w[c * k + b * kQBlock + j];
      out[c * kb + b] = s;
    }
}

void w8_dots_ref(const int8_t* a, const int8_t* w, const int32_t*, int64_t k, int32_t* out) {
  for (int64_t c = 0; c < kNc; ++c) {
    int32_t s = 0;
    for (int64_t i = 0; i < k; ++i) s += static_cast<int32_t>(a[i]) * w[c * k + i];
    out[c] = s;
  }
}

void w4_dots_ref(const int8_t* a, const uint8_t* nib, int64_t k, int32_t* out) {
  const int64_t kb = k / kQBlock;
  for (int64_t c = 0; c < kNc; ++c)
    for (int64_t b = 0; b < kb; ++b) {
      const uint8_t* q = nib + (c * kb + b) * 16;
      const int8_t* x = a + b * kQBlock;
      int32_t s = 0;
      for (int j = 0; j < static_cast<int>(kQBlock); ++j) s += nibble_code(q, j) * x[j];
      out[c * kb + b] = s;
    }
}

void pack_w4_panels(W4Weights& w) {
  const int64_t n = w.n, k = w.k, kb = k / kQBlock, np = (n + kTileN - 1) / kTileN;
  w.panels.assign(static_cast<size_t>(np * kTileN * k / 2), 0);
  w.pd.assign(static_cast<size_t>(np * kTileN * kb), 0.0f);
  w.pmn.assign(w.pd.size(), 0.0f);
  for (int64_t r = 0; r < n; ++r) {
    const int64_t p = r / kTileN, j = r % kTileN;
    uint8_t* dst = w.panels.data() + p * kTileN * k / 2;
    for (int64_t c = 0; c < k; ++c) {
      const uint8_t code = static_cast<uint8_t>(nibble_code(w.nib.data() + (r * kb + c / kQBlock) * 16, static_cast<int>(c % kQBlock)));
      const int64_t s = c / 8, i = c % 8;
      dst[s * 4 * kTileN + j * 4 + i % 4] |= static_cast<uint8_t>(i < 4 ? code : code << 4);
    }
    for (int64_t b = 0; b < kb; ++b) {
      w.pd[static_cast<size_t>((p * kb + b) * kTileN + j)] = w.d[static_cast<size_t>(r * kb + b)];
      w.pmn[static_cast<size_t>((p * kb + b) * kTileN + j)] = w.mn[static_cast<size_t>(r * kb + b)];
    }
  }
}

void w4_tile_ref(const int8_t* a, int64_t lda, int64_t mr, const float* sa, const int32_t* bs, int64_t ls, const uint8_t* panel,
                 const float* pd, const float* pmn, int64_t k, float* y) {
  const int64_t kb = k / kQBlock;
  for (int64_t r = 0; r < mr; ++r)
    for (int64_t j = 0; j < kTileN; ++j) {
      float acc = 0;
      for (int64_t b = 0; b < kb; ++b) {
        int32_t isum = 0;
        for (int64_t c = b * kQBlock; c < (b + 1) * kQBlock; ++c) {
          const uint8_t byte = panel[(c / 8) * 4 * kTileN + j * 4 + c % 4];
          isum += static_cast<int32_t>(c % 8 < 4 ? byte & 0xF : byte >> 4) * a[r * lda + c];
        }
        const float s = sa[r * ls + b];
        acc = acc + std::fma(pd[b * kTileN + j] * s, static_cast<float>(isum), (pmn[b * kTileN + j] * s) * static_cast<float>(bs[r * ls + b]));
      }
      y[r * kTileN + j] = acc;
    }
}

std::vector<int8_t> pack_w8_panels(const int8_t* q, int64_t n, int64_t k) {
  QUANT_CHECK(k % 4 == 0, "W8 panels: {} columns are not a multiple of 4", k);
  const int64_t np = (n + kTileN - 1) / kTileN;
  std::vector<int8_t> p(static_cast<size_t>(np * kTileN * k), 0);
  for (int64_t r = 0; r < n; ++r) {
    int8_t* dst = p.data() + (r / kTileN) * kTileN * k + (r % kTileN) * 4;
    for (int64_t c = 0; c < k; ++c) dst[(c / 4) * 4 * kTileN + c % 4] = q[r * k + c];
  }
  return p;
}

void w8_tile_ref(const uint8_t* au, int64_t lda, int64_t mr, const int8_t* panel, int64_t k, int32_t* c) {
  for (int64_t r = 0; r < mr; ++r)
    for (int64_t j = 0; j < kTileN; ++j) {
      int32_t s = 0;
      for (int64_t i = 0; i < k; ++i) s += static_cast<int32_t>(au[r * lda + i]) * panel[(i / 4) * 4 * kTileN + j * 4 + i % 4];
      c[r * kTileN + j] = s;
    }
}

}  // namespace igemm

namespace {
constexpr int64_t kNChunk = 64;  // columns per task: 64 weight rows stay in L2 while all activation rows pass

// W8A8 through the VNNI tiles: each task is one 64-row weight panel (k/16 KB, stays in L2)
// against every activation row, 6 rows at a time; same int32 sums, same epilogue as the dots.
void gemm_w8a8_tiles(const QActs& a, const W8Weights& w, float* y, igemm::W8Tile tile) {
  QUANT_CHECK(!w.panels.empty(), "W8A8: weights were packed without VNNI panels");
  const int64_t M = a.m, N = w.n, K = a.k, kb = K / kQBlock;
  // Σ (a + 128) w stays below 2^31: 255 · 127 · K.
  QUANT_CHECK(K <= 65536, "W8A8: {} columns overflow the int32 sums of the VNNI tiles", K);
  std::vector<uint8_t> au(a.q.size());
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < M; ++r)
    for (int64_t c = 0; c < K; ++c) au[static_cast<size_t>(r * K + c)] = static_cast<uint8_t>(a.q[static_cast<size_t>(r * K + c)] ^ 0x80);
  const int64_t np = (N + igemm::kTileN - 1) / igemm::kTileN;
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < np; ++p) {
    const int64_t n0 = p * igemm::kTileN, nn = std::min(igemm::kTileN, N - n0);
    const int8_t* panel = w.panels.data() + p * igemm::kTileN * K;
    int32_t c[igemm::kTileM * igemm::kTileN];
    for (int64_t m0 = 0; m0 < M; m0 += igemm::kTileM) {
      const int64_t mr = std::min(igemm::kTileM, M - m0);
      tile(au.data() + m0 * K, K, mr, panel, K, c);
      for (int64_t r = 0; r < mr; ++r) {
        const float sa = a.scale[static_cast<size_t>((m0 + r) * kb)];
        for (int64_t j = 0; j < nn; ++j) {
          const int32_t dot = c[r * igemm::kTileN + j] - 128 * w.wsum[static_cast<size_t>(n0 + j)];
          y[(m0 + r) * N + n0 + j] = (sa * w.scale[static_cast<size_t>(n0 + j)]) * static_cast<float>(dot);
        }
      }
    }
  }
}

}  // namespace

void gemm_w8a8(const QActs& a, const W8Weights& w, float* y, Isa isa) {
  QUANT_CHECK(a.k == w.k, "W8A8: activations have {} columns, weights {}", a.k, w.k);
  QUANT_CHECK(!a.per_block, "W8A8 takes per-row activation scales (per token or per tensor)");
  // Tiles of 6 rows from 6 activation rows on; fewer (decoding) stream the weights through the dots.
  if (const igemm::W8Tile tile = igemm::w8_tile(isa); tile && a.m >= igemm::kTileM) return gemm_w8a8_tiles(a, w, y, tile);
  const auto dots = igemm::w8_dots(isa);
  const int64_t M = a.m, N = w.n, K = a.k, kb = K / kQBlock;
  const int64_t chunks = (N + kNChunk - 1) / kNChunk;
#pragma omp parallel for schedule(static)
  for (int64_t ch = 0; ch < chunks; ++ch) {
    const int64_t n0 = ch * kNChunk, n1 = std::min(N, n0 + kNChunk);
    int32_t out[igemm::kNc];
    for (int64_t m = 0; m < M; ++m) {
      const int8_t* ar = a.q.data() + m * K;
      const float sa = a.scale[static_cast<size_t>(m * kb)];
      for (int64_t n = n0; n < n1; n += igemm::kNc) {
        if (n + igemm::kNc <= n1)
          dots(ar, w.q.data() + n * K, w.wsum.data() + n, K, out);
        else
          for (int64_t c = n; c < n1; ++c) {  // tail: one row at a time through the reference
            int32_t s = 0;
            for (int64_t i = 0; i < K; ++i) s += static_cast<int32_t>(ar[i]) * w.q[static_cast<size_t>(c * K + i)];
            out[c - n] = s;
          }
        for (int64_t c = n; c < std::min(n1, n + igemm::kNc); ++c)
          y[m * N + c] = (sa * w.scale[static_cast<size_t>(c)]) * static_cast<float>(out[c - n]);
      }
    }
  }
}

namespace {

// The blocked driver shared by W4A8 and blocked W8A8: kernels give per-block int32 sums for kNc
// weight rows; `row_bytes` bytes of packed weights per row; the epilogue runs in block order.
void gemm_blocks(const QActs& a, int64_t N, const uint8_t* wp, int64_t row_bytes, const float* wd, const float* wmn,
                 igemm::W4Dots dots, igemm::W4Dots ref, float* y) {
  const int64_t M = a.m, K = a.k, kb = K / kQBlock;
  const int64_t chunks = (N + kNChunk - 1) / kNChunk;
#pragma omp parallel for schedule(static)
  for (int64_t ch = 0; ch < chunks; ++ch) {
    const int64_t n0 = ch * kNChunk, n1 = std::min(N, n0 + kNChunk);
    std::vector<int32_t> out(static_cast<size_t>(igemm::kNc * kb));
    std::vector<uint8_t> pad;
    for (int64_t m = 0; m < M; ++m) {
      const int8_t* ar = a.q.data() + m * K;
      const float* sa = a.scale.data() + m * kb;
      const int32_t* bs = a.bsum.data() + m * kb;
      for (int64_t n = n0; n < n1; n += igemm::kNc) {
        const int64_t nc = std::min(igemm::kNc, n1 - n);
        if (nc == igemm::kNc) {
          dots(ar, wp + n * row_bytes, K, out.data());
        } else {  // tail rows through the reference, padded by repeating the last row
          pad.resize(static_cast<size_t>(igemm::kNc * row_bytes));
          for (int64_t c = 0; c < igemm::kNc; ++c)
            std::memcpy(pad.data() + c * row_bytes, wp + (n + std::min(c, nc - 1)) * row_bytes, static_cast<size_t>(row_bytes));
          ref(ar, pad.data(), K, out.data());
        }
        // acc += fma(d·sa, isum, (mn·sa)·bsum), written out (no contraction left to the compiler):
        // the W4 VNNI tile computes the same sequence (same bytes). Four named chains, b outer.
        static_assert(igemm::kNc == 4);
        float acc0 = 0, acc1 = 0, acc2 = 0, acc3 = 0;
        const float* d0 = wd + n * kb;
        const float* m0 = wmn + n * kb;
        const int64_t r1 = std::min<int64_t>(1, nc - 1) * kb, r2 = std::min<int64_t>(2, nc - 1) * kb, r3 = std::min<int64_t>(3, nc - 1) * kb;
        const int32_t* o = out.data();
        for (int64_t b = 0; b < kb; ++b) {
          const float s = sa[b], bsf = static_cast<float>(bs[b]);
          acc0 = acc0 + std::fma(d0[b] * s, static_cast<float>(o[b]), (m0[b] * s) * bsf);
          acc1 = acc1 + std::fma(d0[r1 + b] * s, static_cast<float>(o[kb + b]), (m0[r1 + b] * s) * bsf);
          acc2 = acc2 + std::fma(d0[r2 + b] * s, static_cast<float>(o[2 * kb + b]), (m0[r2 + b] * s) * bsf);
          acc3 = acc3 + std::fma(d0[r3 + b] * s, static_cast<float>(o[3 * kb + b]), (m0[r3 + b] * s) * bsf);
        }
        const float acc[igemm::kNc] = {acc0, acc1, acc2, acc3};
        for (int64_t c = 0; c < nc; ++c) y[m * N + n + c] = acc[c];
      }
    }
  }
}

// W4A8 through the tiles (VNNI or AVX2): one 64-row panel per task against every activation
// row, 6 at a time; the tile folds each block's int32 sum into float as the blocked drivers do.
void gemm_w4a8_tiles(const QActs& a, const W4Weights& w, float* y, Isa isa) {
  const igemm::W4Tile tile = igemm::w4_tile(isa);
  const int64_t M = a.m, N = w.n, K = a.k, kb = K / kQBlock;
  const int64_t np = (N + igemm::kTileN - 1) / igemm::kTileN;
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < np; ++p) {
    const int64_t n0 = p * igemm::kTileN, nn = std::min(igemm::kTileN, N - n0);
    const uint8_t* panel = w.panels.data() + p * igemm::kTileN * K / 2;
    const float* pd = w.pd.data() + p * kb * igemm::kTileN;
    const float* pmn = w.pmn.data() + p * kb * igemm::kTileN;
    alignas(64) float t[igemm::kTileM * igemm::kTileN];
    for (int64_t m0 = 0; m0 < M; m0 += igemm::kTileM) {
      const int64_t mr = std::min(igemm::kTileM, M - m0);
      tile(a.q.data() + m0 * K, K, mr, a.scale.data() + m0 * kb, a.bsum.data() + m0 * kb, kb, panel, pd, pmn, K, t);
      for (int64_t r = 0; r < mr; ++r) std::copy_n(t + r * igemm::kTileN, nn, y + (m0 + r) * N + n0);
    }
  }
}

}  // namespace

void gemm_w4a8(const QActs& a, const W4Weights& w, float* y, Isa isa) {
  QUANT_CHECK(a.k == w.k, "W4A8: activations have {} columns, weights {}", a.k, w.k);
  if (isa != Isa::Scalar && a.m >= igemm::kTileM && !w.panels.empty()) return gemm_w4a8_tiles(a, w, y, isa);
  gemm_blocks(a, w.n, w.nib.data(), w.k / 2, w.d.data(), w.mn.data(), igemm::w4_dots(isa), igemm::w4_dots_ref, y);
}

void gemm_w8a8_blocks(const QActs& a, const W8BlockWeights& w, float* y, Isa isa) {
  QUANT_CHECK(a.k == w.k, "W8A8: activations have {} columns, weights {}", a.k, w.k);
  gemm_blocks(a, w.n, reinterpret_cast<const uint8_t*>(w.q.data()), w.k, w.d.data(), w.mn.data(), igemm::w8b_dots(isa),
              igemm::w8b_dots_ref, y);
}

}  // namespace quant
