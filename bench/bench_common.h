// What bench_kernels and bench_gemm_f32_v4 share: inputs, the GOP/s counters and the FP32 GEMM
// benchmark (quant::gemm_nt, compiled for whatever ISA the including executable is built for).
#pragma once

#include <benchmark/benchmark.h>
#include <omp.h>

#include <random>
#include <string>
#include <vector>

#include "quant/gemm.h"

namespace quant_bench {

inline std::vector<float> random_weights(int64_t n) {
  std::mt19937 rng(0);
  std::normal_distribution<float> d(0.0f, 0.02f);
  std::vector<float> w(static_cast<size_t>(n));
  for (auto& x : w) x = d(rng);
  return w;
}

// GOP/s of `macs` multiply-accumulates per iteration: 2 ops (multiply, add) each, as FLOP/s counts them.
inline void set_rate(benchmark::State& st, double macs) {
  st.counters["GOP/s"] = benchmark::Counter(2.0 * macs * static_cast<double>(st.iterations()), benchmark::Counter::kIsRate,
                                            benchmark::Counter::kIs1000);
  st.counters["threads"] = omp_get_max_threads();
}

inline void set_ops(benchmark::State& st, int64_t M, int64_t N, int64_t K) { set_rate(st, static_cast<double>(M * N * K)); }

// The FP32 GEMM on args {M, K = N}.
inline void gemm_f32(benchmark::State& st, const std::string& label) {
  const int64_t M = st.range(0), N = st.range(1), K = st.range(1);
  const auto a = random_weights(M * K), w = random_weights(N * K);
  std::vector<float> y(static_cast<size_t>(M * N));
  for (auto _ : st) {
    quant::gemm_nt(a.data(), K, w.data(), K, y.data(), N, M, N, K, 1.0f, false);
    benchmark::DoNotOptimize(y.data());
  }
  set_ops(st, M, N, K);
  st.SetLabel(label);
}

}  // namespace quant_bench
