// gemm_nt_stored: the fp32 GEMM on F32/F16/BF16 weights as stored (see gemm.h). A file of its
// own so gemm.cpp stays free of the model types (bench_gemm_f32_v4 builds it alone).
#include <immintrin.h>

#include <Eigen/Core>
#include <algorithm>
#include <cstring>
#include <vector>

#include "quant/error.h"
#include "quant/gemm.h"
#include "quant/half.h"
#include "quant/model.h"

namespace quant {

namespace {
using MatF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using Map = Eigen::Map<MatF, 0, Eigen::OuterStride<>>;
using CMap = Eigen::Map<const MatF, 0, Eigen::OuterStride<>>;
constexpr int64_t kPanel = 64;  // gemm.cpp's panel: the same Eigen products, the same bytes
}  // namespace

namespace {
// One stored row to fp32: F16 eight at a time with F16C where the build has it.
void row_to_f32(TType t, const uint8_t* src, float* dst, int64_t k) {
  int64_t i = 0;
  if (t == TType::F32) {
    std::memcpy(dst, src, static_cast<size_t>(k) * 4);
    return;
  }
  if (t == TType::F16) {
#ifdef __F16C__
    for (; i + 8 <= k; i += 8)
      _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 2 * i))));
#endif
    for (; i < k; ++i) {
      uint16_t h;
      std::memcpy(&h, src + 2 * i, 2);
      dst[i] = fp16_to_f32(h);
    }
    return;
  }
  for (; i < k; ++i) {  // BF16: the high half of an fp32
    uint16_t h;
    std::memcpy(&h, src + 2 * i, 2);
    dst[i] = bf16_to_f32(h);
  }
}
}  // namespace

bool gemm_stored_supports(int type) {
  const auto t = static_cast<TType>(type);
  return t == TType::F32 || t == TType::F16 || t == TType::BF16;
}

void gemm_nt_stored(const float* A, int64_t M, const StoredMatrix& w, float* C, bool accumulate) {
  QUANT_CHECK(gemm_stored_supports(static_cast<int>(w.type)), "fp32 GEMM on stored {} weights", ttype_name(w.type));
  const int64_t N = w.n, K = w.k, panels = (N + kPanel - 1) / kPanel;
  const CMap a(A, M, K, Eigen::OuterStride<>(K));
#pragma omp parallel
  {
    std::vector<float> buf(static_cast<size_t>(kPanel * K));
#pragma omp for schedule(static)
    for (int64_t p = 0; p < panels; ++p) {
      const int64_t n0 = p * kPanel, nn = std::min(kPanel, N - n0);
      for (int64_t j = 0; j < nn; ++j) row_to_f32(w.type, w.row(n0 + j), buf.data() + j * K, K);
      Map c(C + n0, M, nn, Eigen::OuterStride<>(N));
      if (!accumulate) c.setZero();
      c.noalias() += 1.0f * (a * CMap(buf.data(), nn, K, Eigen::OuterStride<>(K)).transpose());
    }
  }
}

}  // namespace quant
