// The integer GEMM kernels: every SIMD kernel equals its scalar twin exactly (integer sums),
// and the GEMMs equal the float product of their dequantized operands.
#include <catch2/catch.hpp>
#include <functional>
#include <numeric>
#include <random>

#include "quant/int_gemm.h"
#include "quant/quant_weight.h"

using namespace quant;

namespace {

std::vector<Isa> simd_isas() {
  std::vector<Isa> out;
  for (Isa i : {Isa::Avx2, Isa::Avx512Vnni}) {
    if (isa_supported(i))
      out.push_back(i);
    else
      WARN("this CPU lacks " << isa_name(i) << ": its kernels are not exercised here");
  }
  return out;
}

std::vector<int8_t> random_i8(size_t n, std::mt19937& rng) {
  std::uniform_int_distribution<int> d(-127, 127);
  std::vector<int8_t> v(n);
  for (auto& x : v) x = static_cast<int8_t>(d(rng));
  // The extremes and zero, where sign tricks and offsets go wrong.
  if (n >= 4) {
    v[0] = 127;
    v[1] = -127;
    v[2] = 0;
    v[n - 1] = -127;
  }
  return v;
}

// Runs `gemm(y, isa)` on every ISA; all must write the same bytes. Returns the result.
std::vector<float> same_on_every_isa(const std::vector<Isa>& isas, size_t size, const std::function<void(float*, Isa)>& gemm) {
  std::vector<std::vector<float>> ys;
  for (Isa isa : isas) {
    ys.emplace_back(size);
    gemm(ys.back().data(), isa);
    CHECK(ys.back() == ys.front());
  }
  return ys.front();
}

// y [M][N] equals the double product of dequantized activations xd [M][K] and weights wd [N][K].
void check_float_product(const std::vector<float>& y, const std::vector<double>& xd, const std::vector<double>& wd, int64_t M,
                         int64_t N, int64_t K) {
  for (int64_t r = 0; r < M; ++r)
    for (int64_t n = 0; n < N; ++n) {
      double s = 0, mag = 0;
      for (int64_t c = 0; c < K; ++c) {
        s += xd[static_cast<size_t>(r * K + c)] * wd[static_cast<size_t>(n * K + c)];
        mag += std::fabs(xd[static_cast<size_t>(r * K + c)] * wd[static_cast<size_t>(n * K + c)]);
      }
      CHECK(std::fabs(y[static_cast<size_t>(r * N + n)] - s) <= 1e-5 * mag + 1e-6);
    }
}

std::vector<double> dequantized(const QuantWeight& q) {
  std::vector<float> f(static_cast<size_t>(q.rows * q.cols));
  q.dequantize(f.data());
  return {f.begin(), f.end()};
}

}  // namespace

TEST_CASE("int8 and int4 dot kernels equal their scalar twins exactly", "[unit][int-gemm]") {
  std::mt19937 rng(11);
  for (Isa isa : simd_isas()) {
    for (int64_t k : {32, 64, 96, 4096, 4128}) {
      CAPTURE(isa_name(isa), k);
      const auto a = random_i8(static_cast<size_t>(k), rng);
      const auto w = random_i8(static_cast<size_t>(igemm::kNc * k), rng);
      std::vector<int32_t> wsum(igemm::kNc, 0);
      for (int64_t c = 0; c < igemm::kNc; ++c)
        for (int64_t i = 0; i < k; ++i) wsum[static_cast<size_t>(c)] += w[static_cast<size_t>(c * k + i)];
      int32_t ref[igemm::kNc], got[igemm::kNc];
      igemm::w8_dots_ref(a.data(), w.data(), wsum.data(), k, ref);
      igemm::w8_dots(isa)(a.data(), w.data(), wsum.data(), k, got);
      CHECK(std::vector<int32_t>(ref, ref + igemm::kNc) == std::vector<int32_t>(got, got + igemm::kNc));
      // All-extreme rows: |a| = |w| = 127 everywhere, the int16 headroom case.
      std::vector<int8_t> ae(static_cast<size_t>(k), -127), we(static_cast<size_t>(igemm::kNc * k), 127);
      std::vector<int32_t> wse(igemm::kNc, static_cast<int32_t>(127 * k));
      igemm::w8_dots_ref(ae.data(), we.data(), wse.data(), k, ref);
      igemm::w8_dots(isa)(ae.data(), we.data(), wse.data(), k, got);
      CHECK(got[0] == -127 * 127 * k);
      CHECK(std::vector<int32_t>(ref, ref + igemm::kNc) == std::vector<int32_t>(got, got + igemm::kNc));

      std::uniform_int_distribution<int> byte(0, 255);
      std::vector<uint8_t> nib(static_cast<size_t>(igemm::kNc * k / 2));
      for (auto& x : nib) x = static_cast<uint8_t>(byte(rng));
      std::vector<int32_t> r4(static_cast<size_t>(igemm::kNc * k / 32)), g4(r4.size());
      igemm::w4_dots_ref(a.data(), nib.data(), k, r4.data());
      igemm::w4_dots(isa)(a.data(), nib.data(), k, g4.data());
      CHECK(r4 == g4);
      const auto w8b = random_i8(static_cast<size_t>(igemm::kNc * k), rng);
      const auto* w8p = reinterpret_cast<const uint8_t*>(w8b.data());
      igemm::w8b_dots_ref(a.data(), w8p, k, r4.data());
      igemm::w8b_dots(isa)(a.data(), w8p, k, g4.data());
      CHECK(r4 == g4);
    }
  }
}

TEST_CASE("the VNNI W8A8 tile equals its scalar twin exactly, panels hold the weight rows", "[unit][int-gemm]") {
  if (!isa_supported(Isa::Avx512Vnni)) {
    WARN("this CPU lacks avx512vnni: the W8A8 tile is not exercised here");
    return;
  }
  std::mt19937 rng(17);
  std::uniform_int_distribution<int> byte(0, 255);
  for (int64_t k : {4, 32, 4096, 4132}) {
    for (int64_t n : {1, 64, 70}) {
      CAPTURE(k, n);
      const auto w = random_i8(static_cast<size_t>(n * k), rng);
      const auto panels = igemm::pack_w8_panels(w.data(), n, k);
      const int64_t np = (n + igemm::kTileN - 1) / igemm::kTileN;
      REQUIRE(panels.size() == static_cast<size_t>(np * igemm::kTileN * k));
      const int64_t lda = k + 8;  // a row stride other than k
      std::vector<uint8_t> au(static_cast<size_t>(igemm::kTileM * lda));
      for (auto& x : au) x = static_cast<uint8_t>(byte(rng));
      au[0] = 255;
      au[1] = 0;
      for (int64_t p = 0; p < np; ++p)
        for (int64_t mr = 1; mr <= igemm::kTileM; ++mr) {
          CAPTURE(p, mr);
          const int8_t* panel = panels.data() + p * igemm::kTileN * k;
          std::vector<int32_t> ref(static_cast<size_t>(igemm::kTileM * igemm::kTileN), -1), got = ref;
          igemm::w8_tile_ref(au.data(), lda, mr, panel, k, ref.data());
          igemm::w8_tile_avx512vnni(au.data(), lda, mr, panel, k, got.data());
          CHECK(got == ref);
          // The panel is a relayout: row j of the tile is weight row p * 64 + j (zero past n).
          for (int64_t j = 0; j < igemm::kTileN; ++j) {
            int32_t s = 0;
            const int64_t row = p * igemm::kTileN + j;
            if (row < n)
              for (int64_t i = 0; i < k; ++i) s += static_cast<int32_t>(au[static_cast<size_t>(i)]) * w[static_cast<size_t>(row * k + i)];
            CHECK(ref[static_cast<size_t>(j)] == s);
          }
        }
    }
  }
  // The int32 headroom: all activations 255 against all weights -127 over the largest k.
  const int64_t k = 65536;
  std::vector<int8_t> w(static_cast<size_t>(igemm::kTileN * k), -127);
  std::vector<uint8_t> au(static_cast<size_t>(k), 255);
  std::vector<int32_t> got(static_cast<size_t>(igemm::kTileM * igemm::kTileN));
  igemm::w8_tile_avx512vnni(au.data(), k, 1, igemm::pack_w8_panels(w.data(), igemm::kTileN, k).data(), k, got.data());
  CHECK(got[0] == -255 * 127 * k);
  CHECK(got[63] == -255 * 127 * k);
}

TEST_CASE("the W4A8 tiles (VNNI, AVX2) equal their scalar twin exactly, panels hold the codes, d and mn of the weight rows", "[unit][int-gemm]") {
  std::mt19937 rng(23);
  std::uniform_int_distribution<int> code(0, 15);
  std::normal_distribution<float> nd(0, 1);
  for (int64_t k : {32, 256, 4128}) {
    for (int64_t n : {1, 64, 70}) {
      CAPTURE(k, n);
      const int64_t kb = k / 32;
      std::vector<uint8_t> codes(static_cast<size_t>(n * k));
      for (auto& c : codes) c = static_cast<uint8_t>(code(rng));
      codes[0] = 15;
      std::vector<float> sc(static_cast<size_t>(n * kb)), mn(sc.size());
      for (size_t i = 0; i < sc.size(); ++i) sc[i] = 0.01f * std::fabs(nd(rng)) + 1e-3f, mn[i] = -0.1f * std::fabs(nd(rng));
      W4Weights w = pack_w4(codes.data(), sc.data(), mn.data(), n, k, 32);
      igemm::pack_w4_panels(w);  // also where the CPU lacks VNNI: the layout and the twin are plain C++
      const int64_t np = (n + igemm::kTileN - 1) / igemm::kTileN;
      REQUIRE(w.panels.size() == static_cast<size_t>(np * igemm::kTileN * k / 2));
      const int64_t lda = k + 16;  // a row stride other than k
      auto acts = random_i8(static_cast<size_t>(igemm::kTileM * lda), rng);
      acts[0] = -127;
      std::vector<float> sa(static_cast<size_t>(igemm::kTileM * kb));
      std::vector<int32_t> bs(sa.size());
      for (int64_t r = 0; r < igemm::kTileM; ++r)
        for (int64_t b = 0; b < kb; ++b) {
          sa[static_cast<size_t>(r * kb + b)] = 0.02f * std::fabs(nd(rng)) + 1e-3f;
          int32_t t = 0;
          for (int64_t c = b * 32; c < (b + 1) * 32; ++c) t += acts[static_cast<size_t>(r * lda + c)];
          bs[static_cast<size_t>(r * kb + b)] = t;
        }
      for (int64_t p = 0; p < np; ++p)
        for (int64_t mr = 1; mr <= igemm::kTileM; ++mr) {
          CAPTURE(p, mr);
          const uint8_t* panel = w.panels.data() + p * igemm::kTileN * k / 2;
          const float* pd = w.pd.data() + p * kb * igemm::kTileN;
          const float* pmn = w.pmn.data() + p * kb * igemm::kTileN;
          std::vector<float> ref(static_cast<size_t>(igemm::kTileM * igemm::kTileN), -1.0f), got = ref;
          igemm::w4_tile_ref(acts.data(), lda, mr, sa.data(), bs.data(), kb, panel, pd, pmn, k, ref.data());
          for (Isa isa : simd_isas()) {
            CAPTURE(isa_name(isa));
            std::fill(got.begin(), got.end(), -1.0f);
            igemm::w4_tile(isa)(acts.data(), lda, mr, sa.data(), bs.data(), kb, panel, pd, pmn, k, got.data());
            CHECK(std::equal(got.begin(), got.begin() + mr * igemm::kTileN, ref.begin()));
          }
          // The panel is a relayout: tile column j is weight row p * 64 + j (0 past n), within
          // float rounding of Σ_b sa (d Σ code·a + mn bsum) in double.
          for (int64_t r = 0; r < mr; ++r)
            for (int64_t j = 0; j < igemm::kTileN; ++j) {
              const int64_t row = p * igemm::kTileN + j;
              double s = 0, mag = 0;
              if (row < n)
                for (int64_t b = 0; b < kb; ++b) {
                  double isum = 0;
                  for (int64_t c = b * 32; c < (b + 1) * 32; ++c)
                    isum += static_cast<double>(codes[static_cast<size_t>(row * k + c)]) * acts[static_cast<size_t>(r * lda + c)];
                  const size_t e = static_cast<size_t>(r * kb + b), g = static_cast<size_t>(row * kb + b);
                  const double t = sa[e] * (sc[g] * isum + mn[g] * bs[e]);
                  s += t;
                  mag += std::fabs(sa[e] * sc[g] * isum) + std::fabs(sa[e] * mn[g] * bs[e]);
                }
              CHECK(std::fabs(ref[static_cast<size_t>(r * igemm::kTileN + j)] - s) <= 1e-5 * mag + 1e-9);
            }
        }
    }
  }
  if (!isa_supported(Isa::Avx512Vnni)) WARN("this CPU lacks avx512vnni: the VNNI W4A8 tile is not exercised here");
}

TEST_CASE("W8A8 and W4A8 GEMMs: every ISA gives the same bytes, equal to the dequantized float product", "[unit][int-gemm]") {
  std::mt19937 rng(5);
  std::normal_distribution<float> nd(0, 1);
  std::vector<Isa> isas = {Isa::Scalar};
  for (Isa i : simd_isas()) isas.push_back(i);
  // M = 13, N = 70: not multiples of the 6 x 64 and 4-row tiles; M = 3: below VNNI's tile rows.
  for (int64_t M : {13, 3})
  for (ActQuant aq : {ActQuant::PerToken, ActQuant::PerTensor, ActQuant::PerBlock}) {
    CAPTURE(M, act_quant_name(aq));
    const int64_t N = 70, K = 256;
    std::vector<float> x(static_cast<size_t>(M * K)), w(static_cast<size_t>(N * K));
    for (auto& v : x) v = nd(rng);
    for (auto& v : w) v = 0.05f * nd(rng);
    x[3] = 40.0f;  // an outlier channel
    const bool per_block = aq == ActQuant::PerBlock;
    const QActs a = quantize_acts(x.data(), M, K, aq);
    std::vector<double> xd(x.size());  // dequantized activations
    for (int64_t r = 0; r < M; ++r)
      for (int64_t c = 0; c < K; ++c)
        xd[static_cast<size_t>(r * K + c)] = static_cast<double>(a.scale[static_cast<size_t>(r * (K / 32) + c / 32)]) *
                                             a.q[static_cast<size_t>(r * K + c)];
    // W4A8 from an asymmetric int4 g64 grid.
    const QuantWeight g = rtn_grid(w.data(), N, K, GridSpec{4, 64, false});
    const W4Weights w4 = pack_w4(g.codes.data(), g.scales.data(), g.mins.data(), N, K, g.group);
    std::vector<float> y4 = same_on_every_isa(isas, static_cast<size_t>(M * N), [&](float* y, Isa isa) { gemm_w4a8(a, w4, y, isa); });
    check_float_product(y4, xd, dequantized(g), M, N, K);
    // Blocked W8A8 from ggml's Q8_0 (codes - 128, d per block) and Q5_1 (float mins).
    for (TType t : {TType::Q8_0, TType::Q5_1}) {
      const QuantWeight qg = quantize_ggml(t, w.data(), N, K);
      const W8BlockWeights wb = pack_w8_blocks(qg.codes.data(), qg.scales.data(), qg.mins.data(), N, K, qg.group, qg.bits);
      const auto yb = same_on_every_isa(isas, static_cast<size_t>(M * N), [&](float* y, Isa isa) { gemm_w8a8_blocks(a, wb, y, isa); });
      check_float_product(yb, xd, dequantized(qg), M, N, K);
    }
    if (per_block) {
      CHECK_THROWS_WITH(gemm_w8a8(a, quantize_w8(w.data(), N, K), y4.data(), Isa::Scalar), Catch::Contains("per-row"));
      continue;
    }
    const W8Weights w8 = quantize_w8(w.data(), N, K);
    const auto y8 = same_on_every_isa(isas, static_cast<size_t>(M * N), [&](float* y, Isa isa) { gemm_w8a8(a, w8, y, isa); });
    std::vector<double> w8d(w.size());
    for (size_t i = 0; i < w8d.size(); ++i)
      w8d[i] = static_cast<double>(w8.scale[i / static_cast<size_t>(K)]) * w8.q[i];
    check_float_product(y8, xd, w8d, M, N, K);
  }
}

TEST_CASE("int8 activation quantization: symmetric, |q| <= 127, scales per row or per block", "[unit][int-gemm]") {
  const std::vector<float> x = {0.5f, -1.0f, 0.25f, 0.0f, 2.0f, -2.0f, 1e-3f, 0.0f};
  std::vector<float> row(64, 0.0f);
  std::copy(x.begin(), x.end(), row.begin());
  row[40] = 10.0f;
  const QActs t = quantize_acts(row.data(), 1, 64, ActQuant::PerToken);
  CHECK(t.scale[0] == Approx(10.0f / 127));
  CHECK(t.scale[1] == t.scale[0]);
  CHECK(t.q[40] == 127);
  const QActs b = quantize_acts(row.data(), 1, 64, ActQuant::PerBlock);
  CHECK(b.scale[0] == Approx(2.0f / 127));
  CHECK(b.q[4] == 127);
  CHECK(b.q[5] == -127);
  CHECK(b.q[1] == -64);  // -1 / (2/127) = -63.5 rounds to even
  CHECK(b.bsum[0] == std::accumulate(b.q.begin(), b.q.begin() + 32, 0));
  CHECK_THROWS_WITH(quantize_acts(row.data(), 1, 60, ActQuant::PerToken), Catch::Contains("multiple of 32"));
  std::vector<float> two(64, 1.0f);
  two[63] = 4.0f;  // row 1's max sets both rows' scale per tensor
  const QActs pt = quantize_acts(two.data(), 2, 32, ActQuant::PerTensor);
  CHECK(pt.scale[0] == pt.scale[1]);
  CHECK(pt.scale[0] == Approx(4.0f / 127));
}

#include "../common.h"
#include "quant/formats/gguf_model.h"
#include "quant/formats/loader.h"
#include "quant/runtime.h"
#include "quant/calibration/text.h"

TEST_CASE("Integer runtime (act-bits 8): the runtime's integer linears give the same logits on every ISA, close to float activations",
          "[e2e][int-gemm]") {
  qt::TempDir tmp;
  LoadedModel fp = load_model(qt::bundled_model());
  const Policy pol = Policy::defaults(QuantSpec::parse("Q4_0"));
  {
    RtnTensors src(*fp.weights, resolve_policy(pol, fp.weights->tensors()));
    write_gguf_model(fp, pol, src, tmp / "q4.gguf", {});
  }
  LoadedModel q4 = load_model(tmp / "q4.gguf");
  const auto toks = fp.tokenizer->encode(read_text(qt::repo("data/kjv/kjv_heldout.txt")), true);
  const std::vector<int32_t> win(toks.begin(), toks.begin() + 128);
  // F16 weights -> per-channel W8A8; Q4_0 -> W4A8 (+ blocked W8A8 for the Q8_0 head).
  for (const LoadedModel* m : {&fp, &q4})
    for (ActQuant aq : {ActQuant::PerToken, ActQuant::PerBlock}) {
      CAPTURE(m->path, act_quant_name(aq));
      LlamaRuntime flt(m->config, *m->weights);
      std::vector<float> ref;
      flt.forward(win, 0, ref);
      std::vector<std::vector<float>> outs;
      std::vector<Isa> isas = {Isa::Scalar};
      for (Isa i : {Isa::Avx2, Isa::Avx512Vnni})
        if (isa_supported(i)) isas.push_back(i);
      for (Isa isa : isas) {
        RuntimeOptions o;
        o.act_bits = 8;
        o.act_quant = aq;
        o.isa = isa;
        LlamaRuntime rt(m->config, *m->weights, o);
        outs.emplace_back();
        rt.forward(win, 0, outs.back());
        CHECK(outs.back() == outs.front());
      }
      const int64_t V = m->config.vocab;
      int64_t agree = 0;
      for (size_t t = 0; t < win.size(); ++t) {
        const float* a = ref.data() + t * V;
        const float* b = outs[0].data() + t * V;
        agree += (std::max_element(a, a + V) - a) == (std::max_element(b, b + V) - b);
      }
      CHECK(static_cast<double>(agree) / static_cast<double>(win.size()) >= 0.9);
    }
}
