// GPTQ speed from a given Hessian: seconds per layer and the GFLOP/s of the trailing-update
// GEMM, for LLaMA-7B's 4096 x 4096 (q/k/v/o) and 11008 x 4096 (gate/up) shapes.
// Usage: bench_gptq [--threads N]. Prints one line per shape and a JSON summary.
#include <omp.h>

#include <Eigen/Core>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>

#include "quant/gemm.h"
#include "quant/gptq.h"

int main(int argc, char** argv) {
  for (int i = 1; i + 1 < argc; ++i)
    if (std::string(argv[i]) == "--threads") {
      quant::set_num_threads(std::stoi(argv[i + 1]));
    }
  using MatF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const int64_t K = 4096;
  // A Hessian with real structure: H = 2 B B^T / n + diagonal, B random K x 512 (cheap to
  // build, correlated, full rank through the diagonal). GPTQ's cost does not depend on H's values.
  std::mt19937 rng(0);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  MatF B(K, 512);
  for (int64_t i = 0; i < B.size(); ++i) B.data()[i] = nd(rng);
  MatF Hf = (2.0f / 512.0f) * B * B.transpose();
  std::vector<double> H(static_cast<size_t>(K * K));
  for (int64_t i = 0; i < K; ++i)
    for (int64_t j = 0; j < K; ++j) H[static_cast<size_t>(i * K + j)] = Hf(i, j) + (i == j ? 0.5 : 0.0);
  std::printf("threads %d\n", omp_get_max_threads());
  std::string json = "[";
  for (int64_t rows : {int64_t{4096}, int64_t{11008}}) {
    std::vector<float> W(static_cast<size_t>(rows * K));
    for (auto& w : W) w = 0.02f * nd(rng);
    quant::GptqOptions o;
    o.grid = {4, 128, false};
    const auto t0 = std::chrono::steady_clock::now();
    const quant::GptqResult r = quant::gptq_quantize(W.data(), rows, K, H, o, "bench");
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("gptq %5ld x %ld int4 g128: %.2f s (trailing-update GEMM %.1f GFLOP/s)\n", static_cast<long>(rows),
                static_cast<long>(K), s, r.gemm_gflops);
    json += (json.size() > 1 ? "," : "") + std::string("{\"rows\":") + std::to_string(rows) + ",\"cols\":" + std::to_string(K) +
            ",\"seconds\":" + std::to_string(s) + ",\"gemm_gflops\":" + std::to_string(r.gemm_gflops) + "}";
  }
  std::printf("%s]\n", json.c_str());
  return 0;
}
