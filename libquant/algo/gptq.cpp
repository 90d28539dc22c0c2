// GPTQ with lazy batches (gptq.py's fasterquant), dead columns, damping with automatic retry,
// act-order with static groups. The grid is rtn_grid's (GPTQ's quant.py) or a ggml super-block
// type's (gptq_grid.cpp).
#include "quant/gptq.h"

#include <Eigen/Cholesky>
#include <Eigen/Core>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>

#include "quant/error.h"
#include "quant/gemm.h"
#include "gptq_grid.h"

namespace quant {

namespace {
using MatF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
}  // namespace

bool inverse_cholesky_upper(std::vector<float>& hv, int64_t n) {
  // Reverse rows and columns (P H P), factor P H P = L L^T; then H = R R^T with R = P L P upper,
  // so H^-1 = (R^-1)^T R^-1 and U = R^-1 is the upper factor with U^T U = H^-1.
  Eigen::Map<MatF> h(hv.data(), n, n);
  h.reverseInPlace();  // in place throughout: H's array and U's are the only k x k arrays
  Eigen::LLT<Eigen::Ref<MatF>, Eigen::Lower> llt(h);
  if (llt.info() != Eigen::Success) return false;
  h.reverseInPlace();  // R = P L P in the upper triangle (the strict lower one is not read)
  // U = R^-1 by fixed column chunks: columns [j0, j1) of U are zero below row j1, so each chunk
  // solves R[0:j1, 0:j1] X = I[0:j1, j0:j1] on its own (results independent of threads).
  MatF u = MatF::Zero(n, n);
  constexpr int64_t kChunk = 64;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t ci = chunks - 1; ci >= 0; --ci) {  // largest first
    const int64_t j0 = ci * kChunk, j1 = std::min(n, j0 + kChunk);
    MatF x = MatF::Zero(j1, j1 - j0);
    for (int64_t j = j0; j < j1; ++j) x(j, j - j0) = 1.0f;
    h.topLeftCorner(j1, j1).triangularView<Eigen::Upper>().solveInPlace(x);
    u.block(0, j0, j1, j1 - j0) = x;
  }
  for (int64_t i = 0; i < n; ++i)
    if (!(u(i, i) > 0.0f) || !std::isfinite(u(i, i))) return false;
  h = u.triangularView<Eigen::Upper>();
  return true;
}

GptqResult gptq_quantize(const float* w_in, int64_t rows, int64_t cols, const std::vector<double>& h_in,
                         const GptqOptions& o, const std::string& name) {
  QUANT_CHECK(static_cast<int64_t>(h_in.size()) == cols * cols, "tensor {}: H has {} entries, expected {}x{}", name,
              h_in.size(), cols, cols);
  return gptq_quantize(w_in, rows, cols, std::vector<float>(h_in.begin(), h_in.end()), o, name);
}

GptqResult gptq_quantize(const float* w_in, int64_t rows, int64_t cols, const std::vector<float>& h_in,
                         const GptqOptions& o, const std::string& name) {
  const auto t0 = std::chrono::steady_clock::now();
  QUANT_CHECK(static_cast<int64_t>(h_in.size()) == cols * cols, "tensor {}: H has {} entries, expected {}x{}", name,
              h_in.size(), cols, cols);
  const bool kgrid = o.ktype != TType::F32;
  QUANT_CHECK(kgrid || GridSpec::valid_bits(o.grid.bits), "tensor {}: bits {} outside 2..8", name, o.grid.bits);
  GptqResult res;

  MatF W = Eigen::Map<const MatF>(w_in, rows, cols);
  // diag(H); H itself is read from h_in when Hinv is built (no k x k copy kept beside it).
  std::vector<float> diag(static_cast<size_t>(cols));
  for (int64_t c = 0; c < cols; ++c) {
    diag[static_cast<size_t>(c)] = h_in[static_cast<size_t>(c * cols + c)];
    QUANT_CHECK(std::isfinite(diag[static_cast<size_t>(c)]), "tensor {}: H has a non-finite diagonal at {}", name, c);
  }
  check_finite_weights(W.data(), rows, cols, name);

  // Dead inputs: never seen by the calibration data. Their weights cannot matter; zero them.
  for (int64_t c = 0; c < cols; ++c)
    if (diag[static_cast<size_t>(c)] == 0.0f) {
      diag[static_cast<size_t>(c)] = 1.0f;
      W.col(c).setZero();
      ++res.dead_columns;
    }

  // The grid: GPTQ's integer grid per group, or a super-block type fitted per super-block with
  // the importance of each input (an imatrix, else diag(H)). Static groups are fitted up front
  // on the natural-order weights, so the stored layout stays group = column / group_size even
  // under act-order; otherwise each group (super-block) is fitted when its first column is
  // reached, from the already-updated weights.
  std::unique_ptr<detail::SweepGrid> grid;
  if (kgrid) {
    std::vector<float> imp(static_cast<size_t>(cols));
    for (int64_t c = 0; c < cols; ++c) imp[static_cast<size_t>(c)] = o.importance ? o.importance[c] : diag[static_cast<size_t>(c)];
    grid = detail::kquant_sweep_grid(o.ktype, rows, cols, std::move(imp));
  } else {
    grid = detail::integer_sweep_grid(rows, cols, o.grid);
  }
  const int64_t group = grid->span();
  const bool static_groups = o.act_order || (!kgrid && (o.static_groups || group == cols));
  if (static_groups)
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; c += group) grid->fit(r, c, W.data() + r * cols + c, std::min(group, cols - c));

  std::vector<int64_t> perm(static_cast<size_t>(cols));
  std::iota(perm.begin(), perm.end(), 0);
  if (o.act_order) {
    std::stable_sort(perm.begin(), perm.end(), [&](int64_t a, int64_t b) {
      return diag[static_cast<size_t>(a)] > diag[static_cast<size_t>(b)];
    });
    MatF Wp(rows, cols);
    for (int64_t c = 0; c < cols; ++c) Wp.col(c) = W.col(perm[static_cast<size_t>(c)]);
    W.swap(Wp);
  }

  double mean_diag = 0;
  for (int64_t c = 0; c < cols; ++c) mean_diag += diag[static_cast<size_t>(perm[static_cast<size_t>(c)])];
  mean_diag /= static_cast<double>(cols);
  std::vector<float> Hinv;
  for (double damp = o.damp;; damp += o.damp_step) {
    QUANT_CHECK(damp <= o.damp_max + 1e-9, "tensor {}: Hessian is not positive definite even with damping {:.2f} of mean diag(H)",
                name, damp - o.damp_step);
    // H in the solve's column order (dead inputs' diagonal 1), damped.
    Hinv.resize(static_cast<size_t>(cols * cols));
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < cols; ++i) {
      const int64_t pi = perm[static_cast<size_t>(i)];
      for (int64_t j = 0; j < cols; ++j) Hinv[static_cast<size_t>(i * cols + j)] = h_in[static_cast<size_t>(pi * cols + perm[static_cast<size_t>(j)])];
      Hinv[static_cast<size_t>(i * cols + i)] = diag[static_cast<size_t>(pi)];
    }
    const float lambda = static_cast<float>(damp * mean_diag);
    for (int64_t c = 0; c < cols; ++c) Hinv[static_cast<size_t>(c * cols + c)] += lambda;
    if (inverse_cholesky_upper(Hinv, cols)) {
      res.damp_used = damp;
      break;
    }
    ++res.retries;
  }
  Eigen::Map<const MatF> U(Hinv.data(), cols, cols);

  Eigen::Matrix<uint8_t, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> Q(rows, cols);  // codes, permuted order
  double gemm_flops = 0, gemm_seconds = 0;
  // A super-block fitted at a lazy block's start sees every update so far: blocks of its width.
  const int64_t B = kgrid && !static_groups ? std::max<int64_t>(group, o.block / group * group) : std::max<int64_t>(1, o.block);
  std::vector<double> row_loss(static_cast<size_t>(rows));
  for (int64_t i1 = 0; i1 < cols; i1 += B) {
    const int64_t i2 = std::min(i1 + B, cols), count = i2 - i1;
    MatF W1 = W.middleCols(i1, count);
    MatF Err1(rows, count);
    // Rows are independent inside a lazy block: fixed chunks of rows per thread.
#pragma omp parallel for schedule(static)
    for (int64_t r0 = 0; r0 < rows; r0 += 32) {
      const int64_t r1 = std::min(rows, r0 + 32);
      std::vector<float> gbuf(static_cast<size_t>(group));
      for (int64_t i = 0; i < count; ++i) {
        const int64_t c = i1 + i;  // permuted column index
        const float d = U(c, c);
        if (!static_groups && c % group == 0) {
          // Fit on the current values: columns of this lazy block carry their in-block updates.
          const int64_t len = std::min(group, cols - c), n_in = std::min(len, i2 - c);
          for (int64_t r = r0; r < r1; ++r) {
            for (int64_t j = 0; j < n_in; ++j) gbuf[static_cast<size_t>(j)] = W1(r, i + j);
            for (int64_t j = n_in; j < len; ++j) gbuf[static_cast<size_t>(j)] = W(r, c + j);
            grid->fit(r, c, gbuf.data(), len);
          }
        }
        const int64_t nc = perm[static_cast<size_t>(c)];  // natural-order column
        const float* urow = Hinv.data() + c * cols + c;
        for (int64_t r = r0; r < r1; ++r) {
          float* w1 = &W1(r, 0);
          const float wv = w1[i];
          float qv = 0;
          Q(r, c) = grid->quantize(r, nc, wv, qv);
          const float e = (wv - qv) / d;
          row_loss[static_cast<size_t>(r)] += static_cast<double>(wv - qv) * (wv - qv) / (static_cast<double>(d) * d);
          Err1(r, i) = e;
          // Spread this column's error over the rest of the lazy block.
          for (int64_t j = i + 1; j < count; ++j) w1[j] -= e * urow[j - i];
        }
      }
    }
    if (i2 < cols) {
      const auto g0 = std::chrono::steady_clock::now();
      gemm_nn(Err1.data(), count, Hinv.data() + i1 * cols + i2, cols, W.data() + i2, cols, rows, cols - i2, count, -1.0f, true);
      gemm_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - g0).count();
      gemm_flops += 2.0 * static_cast<double>(rows) * static_cast<double>(count) * static_cast<double>(cols - i2);
    }
  }
  double loss = 0;
  for (double l : row_loss) loss += l;  // fixed order: deterministic
  res.loss = loss / 2;

  std::vector<uint8_t> codes(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) codes[static_cast<size_t>(r * cols + perm[static_cast<size_t>(c)])] = Q(r, c);
  res.q = grid->finish(codes);
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  res.gemm_gflops = gemm_seconds > 0 ? gemm_flops / gemm_seconds / 1e9 : 0;
  return res;
}

}  // namespace quant
