// Micro-benchmarks: packers and row dequantizers (GGUF evaluation), and the integer GEMMs of
// the W8A8 / W4A8 runtime per ISA next to the FP32 GEMM (Eigen, our fixed-panel gemm_nt) on
// the same shapes, with the machine's peak int8 multiply-add rate for reference.
//   build/bin/bench_kernels --benchmark_filter='Gemm|Peak'
#include <benchmark/benchmark.h>
#include <immintrin.h>
#include <omp.h>

#include <functional>
#include <memory>

#include "bench_common.h"
#include "quant/int_gemm.h"
#include "quant/quant_weight.h"

namespace {

using quant_bench::random_weights;
using quant_bench::set_ops;
using quant_bench::set_rate;

void BM_QuantizeGgml(benchmark::State& st) {
  const auto type = static_cast<quant::TType>(st.range(0));
  const int64_t rows = 256, cols = 4096;
  const auto w = random_weights(rows * cols);
  for (auto _ : st) {
    auto p = quant::pack(quant::quantize_ggml(type, w.data(), rows, cols), type);
    benchmark::DoNotOptimize(p.data.data());
  }
  st.SetItemsProcessed(st.iterations() * rows * cols);
  st.SetLabel(std::string(quant::ttype_name(type)));
}
BENCHMARK(BM_QuantizeGgml)->Arg(2)->Arg(3)->Arg(8);

void BM_DequantizeRow(benchmark::State& st) {
  const auto type = static_cast<quant::TType>(st.range(0));
  const int64_t cols = 4096;
  const auto w = random_weights(cols);
  const auto p = quant::pack(quant::quantize_ggml(type, w.data(), 1, cols), type);
  std::vector<float> out(cols);
  for (auto _ : st) {
    quant::dequantize_row(type, p.data.data(), out.data(), cols);
    benchmark::DoNotOptimize(out.data());
  }
  st.SetItemsProcessed(st.iterations() * cols);
  st.SetLabel(std::string(quant::ttype_name(type)));
}
BENCHMARK(BM_DequantizeRow)->Arg(2)->Arg(3)->Arg(8);

// --- GEMMs: args {M, K = N, isa} ---

void BM_GemmF32(benchmark::State& st) { quant_bench::gemm_f32(st, "fp32 eigen"); }
BENCHMARK(BM_GemmF32)->Args({512, 4096})->Args({1, 4096})->Unit(benchmark::kMillisecond)->UseRealTime();

// An integer GEMM benchmark: `setup(x, w, M, N, K)` packs and returns the call to time.
void run_int_gemm(benchmark::State& st,
                  const std::function<std::function<void(float*, quant::Isa)>(const std::vector<float>&, const std::vector<float>&,
                                                                              int64_t, int64_t, int64_t)>& setup) {
  const int64_t M = st.range(0), N = st.range(1), K = st.range(1);
  const auto isa = static_cast<quant::Isa>(st.range(2));
  if (!quant::isa_supported(isa)) {
    st.SkipWithError((std::string(quant::isa_name(isa)) + " not supported by this CPU").c_str());
    return;
  }
  const auto gemm = setup(random_weights(M * K), random_weights(N * K), M, N, K);
  std::vector<float> y(static_cast<size_t>(M * N));
  for (auto _ : st) {
    gemm(y.data(), isa);
    benchmark::DoNotOptimize(y.data());
  }
  set_ops(st, M, N, K);
  st.SetLabel(quant::isa_name(isa));
}

void BM_GemmW8A8(benchmark::State& st) {
  run_int_gemm(st, [](const std::vector<float>& x, const std::vector<float>& w, int64_t M, int64_t N, int64_t K) {
    auto a = std::make_shared<quant::QActs>(quant::quantize_acts(x.data(), M, K, quant::ActQuant::PerToken));
    auto w8 = std::make_shared<quant::W8Weights>(quant::quantize_w8(w.data(), N, K));
    return [a, w8](float* y, quant::Isa isa) { quant::gemm_w8a8(*a, *w8, y, isa); };
  });
}

void BM_GemmW4A8(benchmark::State& st) {
  run_int_gemm(st, [](const std::vector<float>& x, const std::vector<float>& w, int64_t M, int64_t N, int64_t K) {
    auto a = std::make_shared<quant::QActs>(quant::quantize_acts(x.data(), M, K, quant::ActQuant::PerToken));
    const quant::QuantWeight g = quant::rtn_grid(w.data(), N, K, quant::GridSpec{4, 128, false});
    auto w4 = std::make_shared<quant::W4Weights>(quant::pack_w4(g.codes.data(), g.scales.data(), g.mins.data(), N, K, g.group));
    return [a, w4](float* y, quant::Isa isa) { quant::gemm_w4a8(*a, *w4, y, isa); };
  });
}

void int_gemm_args(benchmark::internal::Benchmark* b) {
  for (int isa : {0, 1, 2})
    for (int64_t m : {512, 1}) {
      if (isa == 0 && m == 512) continue;  // the scalar twin is the specification, not a contender
      b->Args({m, 4096, isa});
    }
  b->Unit(benchmark::kMillisecond)->UseRealTime();
}
BENCHMARK(BM_GemmW8A8)->Apply(int_gemm_args);
BENCHMARK(BM_GemmW4A8)->Apply(int_gemm_args);

// Peak int8 multiply-add rate: independent vpmaddubsw + vpmaddwd + vpaddd chains in registers
// on every thread (the AVX2 sequence our W8A8 kernel issues per 32 products).
__attribute__((target("avx2"))) void BM_PeakInt8Avx2(benchmark::State& st) {
  for (auto _ : st) {
#pragma omp parallel
    {
      const __m256i ones = _mm256_set1_epi16(1), b = _mm256_set1_epi8(5);
      // Eight chains with their own activations (else the products are common subexpressions),
      // in named registers (GCC copies an array of them between registers on every step).
      __m256i a0 = _mm256_set1_epi8(1), a1 = _mm256_set1_epi8(2), a2 = _mm256_set1_epi8(3), a3 = _mm256_set1_epi8(4),
              a4 = _mm256_set1_epi8(5), a5 = _mm256_set1_epi8(6), a6 = _mm256_set1_epi8(7), a7 = _mm256_set1_epi8(8);
      __m256i c0 = _mm256_setzero_si256(), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0, c6 = c0, c7 = c0;
      for (int i = 0; i < (1 << 20); ++i) {
        // An empty asm that claims to change the activations: the products cannot leave the loop.
        asm volatile("" : "+x"(a0), "+x"(a1), "+x"(a2), "+x"(a3), "+x"(a4), "+x"(a5), "+x"(a6), "+x"(a7));
#define QUANT_STEP(c, a) c = _mm256_add_epi32(c, _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), ones));
        QUANT_STEP(c0, a0) QUANT_STEP(c1, a1) QUANT_STEP(c2, a2) QUANT_STEP(c3, a3)
        QUANT_STEP(c4, a4) QUANT_STEP(c5, a5) QUANT_STEP(c6, a6) QUANT_STEP(c7, a7)
#undef QUANT_STEP
      }
      for (const __m256i& x : {c0, c1, c2, c3, c4, c5, c6, c7}) benchmark::DoNotOptimize(x);
    }
  }
  set_rate(st, 32.0 * 8 * (1 << 20) * omp_get_max_threads());
}
BENCHMARK(BM_PeakInt8Avx2)->Unit(benchmark::kMillisecond)->UseRealTime();

// Peak int8 rate with AVX-512 VNNI: independent vpdpbusd zmm chains (64 products each), the
// instruction of the W8A8 tile.
__attribute__((target("avx512f,avx512bw,avx512vnni"))) void BM_PeakInt8Vnni(benchmark::State& st) {
  if (!quant::isa_supported(quant::Isa::Avx512Vnni)) {
    st.SkipWithError("avx512vnni not supported by this CPU");
    return;
  }
  for (auto _ : st) {
#pragma omp parallel
    {
      const __m512i a = _mm512_set1_epi8(3), b = _mm512_set1_epi8(5);
      __m512i c0 = _mm512_setzero_si512(), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0, c6 = c0, c7 = c0, c8 = c0, c9 = c0,
              c10 = c0, c11 = c0;
      for (int i = 0; i < (1 << 20); ++i) {
#define QUANT_STEP(c) c = _mm512_dpbusd_epi32(c, a, b);
        QUANT_STEP(c0) QUANT_STEP(c1) QUANT_STEP(c2) QUANT_STEP(c3) QUANT_STEP(c4) QUANT_STEP(c5)
        QUANT_STEP(c6) QUANT_STEP(c7) QUANT_STEP(c8) QUANT_STEP(c9) QUANT_STEP(c10) QUANT_STEP(c11)
#undef QUANT_STEP
      }
      for (const __m512i& x : {c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11}) benchmark::DoNotOptimize(x);
    }
  }
  set_rate(st, 64.0 * 12 * (1 << 20) * omp_get_max_threads());
}
BENCHMARK(BM_PeakInt8Vnni)->Unit(benchmark::kMillisecond)->UseRealTime();

// Peak fp32 FMA rate for comparison: independent vfmadd231ps chains.
__attribute__((target("avx2,fma"))) void BM_PeakF32Fma(benchmark::State& st) {
  for (auto _ : st) {
#pragma omp parallel
    {
      __m256 a = _mm256_set1_ps(1.0001f), b = _mm256_set1_ps(0.9999f);
      __m256 c0 = _mm256_setzero_ps(), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0, c6 = c0, c7 = c0, c8 = c0, c9 = c0;
      for (int i = 0; i < (1 << 20); ++i) {
#define QUANT_STEP(c) c = _mm256_fmadd_ps(a, b, c);
        QUANT_STEP(c0) QUANT_STEP(c1) QUANT_STEP(c2) QUANT_STEP(c3) QUANT_STEP(c4)
        QUANT_STEP(c5) QUANT_STEP(c6) QUANT_STEP(c7) QUANT_STEP(c8) QUANT_STEP(c9)
#undef QUANT_STEP
      }
      for (const __m256& x : {c0, c1, c2, c3, c4, c5, c6, c7, c8, c9}) benchmark::DoNotOptimize(x);
    }
  }
  set_rate(st, 8.0 * 10 * (1 << 20) * omp_get_max_threads());
}
BENCHMARK(BM_PeakF32Fma)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
