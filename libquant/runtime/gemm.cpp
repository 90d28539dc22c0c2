// Thread-count-independent GEMMs (see gemm.h).
#include "quant/gemm.h"

#include <omp.h>

#include <Eigen/Core>
#include <algorithm>

namespace quant {

namespace {
using MatF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using Map = Eigen::Map<MatF, 0, Eigen::OuterStride<>>;
using CMap = Eigen::Map<const MatF, 0, Eigen::OuterStride<>>;
constexpr int64_t kPanel = 64;

// Eigen sizes its GEMM blocks from the cache sizes CPUID reports, and the blocking sets the order
// of each product's sums: the same GPTQ run wrote other bytes on a core with a 32 KB L1d than on
// one with 48 KB (the golden hashes), at any thread count. Fixed sizes (a 48 KB L1d, 2 MB L2,
// 32 MB L3 core) make every machine write the same bytes; the block GEMM runtime does not use them.
struct EigenSingleThreaded {
  EigenSingleThreaded() {
    Eigen::setNbThreads(1);
    Eigen::setCpuCacheSizes(48 << 10, 2 << 20, 32 << 20);
  }
};
const EigenSingleThreaded kInit;
}  // namespace

void set_num_threads(int n) {
  if (n > 0) omp_set_num_threads(n);
  Eigen::setNbThreads(1);
}

namespace {
// C (=|+=) alpha * A * op(B) over fixed column panels; op(B) = B^T (b_transposed) or B.
void panel_gemm(const float* A, int64_t lda, const float* B, int64_t ldb, float* C, int64_t ldc, int64_t M, int64_t N,
                int64_t K, float alpha, bool accumulate, bool b_transposed) {
  const int64_t panels = (N + kPanel - 1) / kPanel;
  const CMap a(A, M, K, Eigen::OuterStride<>(lda));
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < panels; ++p) {
    const int64_t n0 = p * kPanel, nn = std::min(kPanel, N - n0);
    Map c(C + n0, M, nn, Eigen::OuterStride<>(ldc));
    if (!accumulate) c.setZero();
    if (b_transposed)
      c.noalias() += alpha * (a * CMap(B + n0 * ldb, nn, K, Eigen::OuterStride<>(ldb)).transpose());
    else
      c.noalias() += alpha * (a * CMap(B + n0, K, nn, Eigen::OuterStride<>(ldb)));
  }
}
}  // namespace

void gemm_nt(const float* A, int64_t lda, const float* B, int64_t ldb, float* C, int64_t ldc, int64_t M, int64_t N,
             int64_t K, float alpha, bool accumulate) {
  panel_gemm(A, lda, B, ldb, C, ldc, M, N, K, alpha, accumulate, true);
}

void gemm_nn(const float* A, int64_t lda, const float* B, int64_t ldb, float* C, int64_t ldc, int64_t M, int64_t N,
             int64_t K, float alpha, bool accumulate) {
  panel_gemm(A, lda, B, ldb, C, ldc, M, N, K, alpha, accumulate, false);
}

}  // namespace quant
