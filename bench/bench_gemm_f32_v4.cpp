// The FP32 GEMM of bench_kernels (quant::gemm_nt: Eigen panels) compiled for x86-64-v4, so the
// integer GEMMs are also measured against Eigen's AVX-512 code on CPUs that have it. A separate
// executable: libquant itself is built for x86-64-v3 and must run on CPUs without AVX-512.
//   build/bin/bench_gemm_f32_v4   (exits with a message on a CPU without AVX-512)
#include <benchmark/benchmark.h>
#include <immintrin.h>
#include <omp.h>

#include <cstdio>

#include "bench_common.h"

namespace {

void BM_GemmF32Avx512(benchmark::State& st) { quant_bench::gemm_f32(st, "fp32 eigen x86-64-v4"); }
BENCHMARK(BM_GemmF32Avx512)->Args({512, 4096})->Args({1, 4096})->Unit(benchmark::kMillisecond)->UseRealTime();

// Peak fp32 rate with zmm FMAs: independent vfmadd231ps chains.
void BM_PeakF32Fma512(benchmark::State& st) {
  for (auto _ : st) {
#pragma omp parallel
    {
      const __m512 a = _mm512_set1_ps(1.0001f), b = _mm512_set1_ps(0.9999f);
      // Named accumulators: GCC copies an array of them between registers on every step.
      __m512 c0 = _mm512_setzero_ps(), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0, c6 = c0, c7 = c0, c8 = c0, c9 = c0,
             c10 = c0, c11 = c0;
      for (int i = 0; i < (1 << 20); ++i) {
#define QUANT_STEP(c) c = _mm512_fmadd_ps(a, b, c);
        QUANT_STEP(c0) QUANT_STEP(c1) QUANT_STEP(c2) QUANT_STEP(c3) QUANT_STEP(c4) QUANT_STEP(c5)
        QUANT_STEP(c6) QUANT_STEP(c7) QUANT_STEP(c8) QUANT_STEP(c9) QUANT_STEP(c10) QUANT_STEP(c11)
#undef QUANT_STEP
      }
      for (const __m512& x : {c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11}) benchmark::DoNotOptimize(x);
    }
  }
  quant_bench::set_rate(st, 16.0 * 12 * (1 << 20) * omp_get_max_threads());
}
BENCHMARK(BM_PeakF32Fma512)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

int main(int argc, char** argv) {
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("avx512f")) {
    std::fprintf(stderr, "bench_gemm_f32_v4: this CPU has no AVX-512; nothing to measure\n");
    return 0;
  }
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
