// The block GEMM (quantized GGUF matrices on their stored blocks): every SIMD tile writes its
// scalar twin's bytes, on every type and on shapes that do not tile (rows past the last panel,
// a last tile of fewer rows, a last chunk of fewer blocks), and the result is the float product
// of the dequantized weights and the dequantized int8 activations.
#include <omp.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <random>

#include "quant/block_gemm.h"
#include "quant/gemm.h"
#include "quant/quant_weight.h"

using namespace quant;

namespace {

struct Case {
  TType type;
  int64_t m, n, k;
};

PackedTensor random_weights(TType t, int64_t n, int64_t k, std::mt19937& rng) {
  std::normal_distribution<float> nd(0.0f, 0.05f);
  std::vector<float> w(static_cast<size_t>(n * k));
  for (auto& x : w) x = nd(rng) + 0.01f;  // a mean away from 0 exercises the mins
  return pack(quantize_ggml(t, w.data(), n, k, nullptr), t);
}

}  // namespace

TEST_CASE("block GEMM: SIMD tiles equal the scalar twin and the result is the dequantized product", "[block_gemm]") {
  std::mt19937 rng(7);
  for (const Case& c : {Case{TType::Q4_0, 7, 70, 96}, Case{TType::Q4_1, 13, 64, 320}, Case{TType::Q5_0, 6, 130, 288},
                        Case{TType::Q5_1, 1, 65, 32}, Case{TType::Q8_0, 11, 100, 416}, Case{TType::Q4_K, 5, 71, 512},
                        Case{TType::Q5_K, 8, 129, 256}, Case{TType::Q6_K, 7, 66, 512}, Case{TType::Q3_K, 6, 64, 256},
                        Case{TType::Q2_K, 13, 67, 768}}) {
    INFO(ttype_name(c.type) << " m " << c.m << " n " << c.n << " k " << c.k);
    REQUIRE(block_gemm_supports(c.type));
    const PackedTensor p = random_weights(c.type, c.n, c.k, rng);
    StoredMatrix w{c.type, c.n, c.k, p.data.data(), row_bytes(c.type, c.k), {}};
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::vector<float> x(static_cast<size_t>(c.m * c.k));
    for (auto& v : x) v = nd(rng);
    x[3] = 40.0f;  // an outlier: one block with a large scale
    const QActs a = quantize_acts(x.data(), c.m, c.k, ActQuant::PerBlock);

    std::vector<float> ref(static_cast<size_t>(c.m * c.n));
    block_gemm(a, w, ref.data(), Isa::Scalar);
    for (Isa isa : {Isa::Avx2, Isa::Avx512Vnni}) {
      if (!isa_supported(isa)) {
        WARN("this CPU lacks " << isa_name(isa) << ": its tile is not exercised here");
        continue;
      }
      std::vector<float> y(ref.size(), -1.0f);
      block_gemm(a, w, y.data(), isa);
      CHECK(std::memcmp(y.data(), ref.data(), y.size() * sizeof(float)) == 0);
    }

    // Against the product of the dequantized operands, in double.
    std::vector<float> wf(static_cast<size_t>(c.k));
    double worst = 0;
    for (int64_t j = 0; j < c.n; ++j) {
      dequantize_row(c.type, w.row(j), wf.data(), c.k);
      for (int64_t r = 0; r < c.m; ++r) {
        double s = 0, mag = 0;
        for (int64_t i = 0; i < c.k; ++i) {
          const double xa = static_cast<double>(a.scale[static_cast<size_t>(r * (c.k / 32) + i / 32)]) * a.q[static_cast<size_t>(r * c.k + i)];
          s += xa * wf[static_cast<size_t>(i)];
          mag += std::fabs(xa * wf[static_cast<size_t>(i)]);
        }
        worst = std::max(worst, std::fabs(s - ref[static_cast<size_t>(r * c.n + j)]) / (mag + 1e-30));
      }
    }
    CHECK(worst < 1e-5);
  }
}

TEST_CASE("block GEMM: rows read through a row map (ggml's interleaved q/k rows)", "[block_gemm]") {
  std::mt19937 rng(3);
  const int64_t n = 96, k = 64, m = 4;
  const PackedTensor p = random_weights(TType::Q4_0, n, k, rng);
  StoredMatrix plain{TType::Q4_0, n, k, p.data.data(), row_bytes(TType::Q4_0, k), {}};
  StoredMatrix mapped = plain;
  for (int64_t r = 0; r < n; ++r) mapped.row_map.push_back(static_cast<int32_t>((r * 5) % n));  // 5 is prime to 96
  std::vector<float> x(static_cast<size_t>(m * k), 0.5f);
  x[1] = -2.0f;
  const QActs a = quantize_acts(x.data(), m, k, ActQuant::PerBlock);
  std::vector<float> y0(static_cast<size_t>(m * n)), y1(y0.size());
  block_gemm(a, plain, y0.data(), best_isa());
  block_gemm(a, mapped, y1.data(), best_isa());
  for (int64_t r = 0; r < m; ++r)
    for (int64_t j = 0; j < n; ++j) CHECK(y1[static_cast<size_t>(r * n + j)] == y0[static_cast<size_t>(r * n + (j * 5) % n)]);
}

TEST_CASE("fp32 GEMM on stored F16/BF16/F32 weights equals gemm_nt on the converted matrix", "[block_gemm]") {
  std::mt19937 rng(11);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  const int64_t m = 9, n = 150, k = 72;
  std::vector<float> x(static_cast<size_t>(m * k)), w(static_cast<size_t>(n * k));
  for (auto& v : x) v = nd(rng);
  for (auto& v : w) v = nd(rng);
  for (TType t : {TType::F16, TType::BF16, TType::F32}) {
    INFO(ttype_name(t));
    const PackedTensor p = pack_float(w.data(), n, k, t);
    StoredMatrix sm{t, n, k, p.data.data(), row_bytes(t, k), {}};
    std::vector<float> wf(w.size());
    dequantize_row(t, p.data.data(), wf.data(), n * k);
    for (bool acc : {false, true}) {
      std::vector<float> y0(static_cast<size_t>(m * n), 0.25f), y1 = y0;
      gemm_nt(x.data(), k, wf.data(), k, y0.data(), n, m, n, k, 1.0f, acc);
      gemm_nt_stored(x.data(), m, sm, y1.data(), acc);
      CHECK(std::memcmp(y0.data(), y1.data(), y0.size() * sizeof(float)) == 0);
    }
  }
}

TEST_CASE("block GEMM: the same bytes at 1, 2 and 3 threads", "[block_gemm][determinism]") {
  std::mt19937 rng(5);
  const int64_t m = 19, n = 300, k = 512;
  const PackedTensor p = random_weights(TType::Q4_K, n, k, rng);
  StoredMatrix w{TType::Q4_K, n, k, p.data.data(), row_bytes(TType::Q4_K, k), {}};
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(m * k));
  for (auto& v : x) v = nd(rng);
  const QActs a = quantize_acts(x.data(), m, k, ActQuant::PerBlock);
  const int before = omp_get_max_threads();
  std::vector<std::vector<float>> ys;
  for (int threads : {1, 2, 3}) {
    omp_set_num_threads(threads);
    ys.emplace_back(static_cast<size_t>(m * n));
    block_gemm(a, w, ys.back().data(), best_isa());
  }
  omp_set_num_threads(before);
  for (size_t i = 1; i < ys.size(); ++i) CHECK(std::memcmp(ys[i].data(), ys[0].data(), ys[0].size() * sizeof(float)) == 0);
}
