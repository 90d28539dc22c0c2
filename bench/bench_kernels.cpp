// Micro-benchmarks of the packers and row dequantizers (the hot path of GGUF evaluation).
#include <benchmark/benchmark.h>

#include <random>

#include "quant/quant_weight.h"

namespace {

std::vector<float> random_weights(int64_t n) {
  std::mt19937 rng(0);
  std::normal_distribution<float> d(0.0f, 0.02f);
  std::vector<float> w(static_cast<size_t>(n));
  for (auto& x : w) x = d(rng);
  return w;
}

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

}  // namespace

BENCHMARK_MAIN();
