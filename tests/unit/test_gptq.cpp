// GPTQ against the math: Hessian accumulation, the inverse Cholesky factor, output error never
// above RTN's, dead columns, damping retries, and bad numbers.
#include <Eigen/Dense>
#include <random>

#include "../common.h"
#include "quant/calibration/calibration.h"
#include "quant/gptq.h"
#include "quant/policy.h"

using namespace quant;

namespace {
using MatD = Eigen::MatrixXd;
using MatF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// Correlated inputs with uneven channel scales, as real activations have: X = Z A diag(s).
MatF make_inputs(int64_t n, int64_t k, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  MatF Z(n, k), A(k, k);
  for (int64_t i = 0; i < Z.size(); ++i) Z.data()[i] = nd(rng);
  for (int64_t i = 0; i < A.size(); ++i) A.data()[i] = nd(rng) / std::sqrt(static_cast<float>(k));
  A += MatF::Identity(k, k);
  MatF X = Z * A;
  for (int64_t c = 0; c < k; ++c) X.col(c) *= 0.2f + 3.0f * static_cast<float>((c * 7919) % 97) / 97.0f;
  return X;
}

MatF make_weights(int64_t rows, int64_t cols, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 0.05f);
  MatF W(rows, cols);
  for (int64_t i = 0; i < W.size(); ++i) W.data()[i] = nd(rng);
  return W;
}

std::vector<double> hessian_of(const MatF& X) {
  InputStats s(X.cols());
  s.add(X.data(), X.rows());
  return s.hessian();
}

// ||W X^T - Q X^T||^2
double output_error(const MatF& W, const QuantWeight& q, const MatF& X) {
  MatF Qm(q.rows, q.cols);
  q.dequantize(Qm.data());
  return ((W - Qm) * X.transpose()).squaredNorm();
}
}  // namespace

TEST_CASE("Hessian accumulated over batches equals the one-shot 2 X^T X / n", "[unit][calibration]") {
  const MatF X = make_inputs(300, 48, 1);
  InputStats batched(48);
  batched.add(X.data(), 100);
  batched.add(X.data() + 100 * 48, 150);
  InputStats tail(48);
  tail.add(X.data() + 250 * 48, 50);
  batched.merge(tail);
  const Eigen::MatrixXd Xd = X.cast<double>();
  const Eigen::MatrixXd ref = 2.0 * Xd.transpose() * Xd / 300.0;
  const auto h = batched.hessian();
  // fp32 products inside a batch: error bounded by ~rows * 2^-24 * sqrt(H_ii H_jj).
  for (int64_t i = 0; i < 48; ++i)
    for (int64_t j = 0; j < 48; ++j)
      REQUIRE(std::fabs(h[static_cast<size_t>(i * 48 + j)] - ref(i, j)) <= 1e-5 * std::sqrt(ref(i, i) * ref(j, j)));
  const auto mean = batched.mean_abs(), mx = batched.max_abs();
  CHECK(mean[3] == Approx(Xd.col(3).cwiseAbs().mean()).epsilon(1e-9));
  CHECK(mx[5] == Approx(Xd.col(5).cwiseAbs().maxCoeff()));
  std::vector<float> bad(48, 1.0f);
  bad[7] = std::nanf("");
  CHECK_THROWS_WITH(batched.add(bad.data(), 1), Catch::Contains("not finite") && Catch::Contains("channel 7"));
}

TEST_CASE("inverse_cholesky_upper gives U upper with U^T U = H^-1", "[unit][gptq]") {
  const MatF X = make_inputs(400, 64, 2);
  std::vector<float> h(64 * 64);
  Eigen::Map<MatF>(h.data(), 64, 64) = 2.0f * X.transpose() * X / 400.0f;
  const Eigen::MatrixXd H = Eigen::Map<MatF>(h.data(), 64, 64).cast<double>();
  REQUIRE(inverse_cholesky_upper(h, 64));
  const Eigen::MatrixXd U = Eigen::Map<MatF>(h.data(), 64, 64).cast<double>();
  CHECK(U.triangularView<Eigen::StrictlyLower>().toDenseMatrix().norm() == 0.0);
  const Eigen::MatrixXd want = H.inverse();
  CHECK((U.transpose() * U - want).norm() <= 1e-3 * want.norm());
  std::vector<float> indefinite = {1, 2, 2, 1};
  CHECK_FALSE(inverse_cholesky_upper(indefinite, 2));
}

TEST_CASE("GPTQ's layer output error is never above RTN's on the same grid", "[unit][gptq]") {
  const int64_t rows = 48;
  // 172 columns: groups that do not divide K leave a shorter last group (MatMulNBits pads it).
  for (const auto& [cols, seed] : {std::pair<int64_t, uint32_t>{256, 3u}, {256, 4u}, {256, 5u}, {172, 6u}}) {
    const MatF X = make_inputs(1024, cols, seed), W = make_weights(rows, cols, seed + 100);
    const auto H = hessian_of(X);
    for (const GridSpec g : {GridSpec{4, 32, false}, GridSpec{3, 128, false}, GridSpec{3, 0, false}, GridSpec{2, 64, false},
                             GridSpec{4, 128, true}, GridSpec{8, 0, true}, GridSpec{3, 0, false, true}, GridSpec{3, 128, true, true}})
      for (int variant = 0; variant < 3; ++variant) {
        // 0: defaults (static groups), 1: act-order, 2: gptq.py's dynamic groups, which fit
        // min-max on error-inflated weights and lose to RTN at 2 bits: held to >= 3 bits.
        if (variant == 2 && g.bits < 3) continue;
        CAPTURE(seed, cols, g.str(), variant);
        GptqOptions o;
        o.grid = g;
        o.act_order = variant == 1;
        o.static_groups = variant != 2;
        const GptqResult r = gptq_quantize(W.data(), rows, cols, H, o, "test");
        const double e_gptq = output_error(W, r.q, X);
        const double e_rtn = output_error(W, rtn_grid(W.data(), rows, cols, g), X);
        CHECK(e_gptq <= e_rtn);
        CHECK(r.loss > 0);
        // Static layout: codes in range, one (scale, min) per natural-order group.
        CHECK(r.q.group == (g.group == 0 ? cols : g.group));
        CHECK(static_cast<int64_t>(r.q.scales.size()) == rows * ((cols + r.q.group - 1) / r.q.group));
        CHECK(*std::max_element(r.q.codes.begin(), r.q.codes.end()) <= (1 << g.bits) - 1);
      }
  }
}

TEST_CASE("GPTQ: dead columns, damping retries, indefinite Hessians, NaN weights", "[unit][gptq]") {
  const int64_t rows = 8, cols = 64;
  const MatF W = make_weights(rows, cols, 9);
  MatF X = make_inputs(256, cols, 10);
  X.col(5).setZero();
  X.col(40).setZero();
  GptqOptions o;
  o.grid = {4, 32, false};
  const GptqResult r = gptq_quantize(W.data(), rows, cols, hessian_of(X), o, "blk.0.attn_q.weight");
  CHECK(r.dead_columns == 2);
  MatF Q(rows, cols);
  r.q.dequantize(Q.data());
  for (int64_t i = 0; i < rows; ++i) CHECK(std::fabs(Q(i, 5)) <= std::fabs(r.q.scales[static_cast<size_t>(i * 2)]));

  // Eigenvalues 2.05 and -0.05 (unit diagonal): needs lambda > 0.05 of the mean diagonal.
  std::vector<double> h2 = {1, 1.05, 1.05, 1};
  const float w2[4] = {0.1f, -0.2f, 0.3f, 0.05f};
  GptqOptions o2;
  o2.grid = {4, 0, false};
  const GptqResult r2 = gptq_quantize(w2, 2, 2, h2, o2, "t");
  CHECK(r2.retries == 5);
  CHECK(r2.damp_used == Approx(0.06));

  std::vector<double> neg = {-1, 0, 0, -1};
  CHECK_THROWS_WITH(gptq_quantize(w2, 2, 2, neg, o2, "blk.3.ffn_down.weight"),
                    Catch::Contains("blk.3.ffn_down.weight") && Catch::Contains("not positive definite"));
  float nanw[4] = {0.1f, std::nanf(""), 0.3f, 0.05f};
  CHECK_THROWS_WITH(gptq_quantize(nanw, 2, 2, h2, o2, "blk.1.attn_v.weight"),
                    Catch::Contains("blk.1.attn_v.weight") && Catch::Contains("not finite"));
}

TEST_CASE("MSE grid search: never a larger |q(w) - w|^2.4 than min-max, same storage, spec round trip", "[unit][gptq]") {
  std::mt19937 rng(11);
  std::student_t_distribution<float> heavy(3.0f);  // outliers, where shrinking the range pays
  for (const GridSpec base : {GridSpec{3, 0, false}, GridSpec{4, 32, true}, GridSpec{2, 64, false}}) {
    GridSpec mse = base;
    mse.mse = true;
    CAPTURE(base.str());
    std::vector<float> w(16 * 256);
    for (float& v : w) v = 0.02f * heavy(rng);
    const QuantWeight a = rtn_grid(w.data(), 16, 256, base), b = rtn_grid(w.data(), 16, 256, mse);
    std::vector<float> da(w.size()), db(w.size());
    a.dequantize(da.data());
    b.dequantize(db.data());
    auto err = [&](const std::vector<float>& d, int64_t r, int64_t g, int64_t len) {
      double e = 0;
      for (int64_t j = 0; j < len; ++j) e += std::pow(std::fabs(d[r * 256 + g + j] - w[r * 256 + g + j]), 2.4);
      return e;
    };
    const int64_t group = base.group == 0 ? 256 : base.group;
    double shrunk = 0;
    for (int64_t r = 0; r < 16; ++r)
      for (int64_t g = 0; g < 256; g += group) {
        CHECK(err(db, r, g, group) <= err(da, r, g, group) * (1 + 1e-6));
        shrunk += b.scales[static_cast<size_t>(r * (256 / group) + g / group)] < a.scales[static_cast<size_t>(r * (256 / group) + g / group)];
      }
    CHECK(shrunk > 0);  // heavy tails: some ranges shrink
    CHECK(b.bits == a.bits);
    CHECK(*std::max_element(b.codes.begin(), b.codes.end()) <= (1 << base.bits) - 1);
    CHECK(QuantSpec::parse(mse.str()).grid.mse);
    CHECK(QuantSpec::parse(mse.str()).str() == mse.str());
    CHECK_FALSE(QuantSpec::parse(base.str()).grid.mse);
  }
}

#include "quant/kquants.h"

TEST_CASE("GPTQ onto super-block grids: lower output error than ggml's rounding, blocks hold its codes", "[unit][gptq][kquant]") {
  const int64_t rows = 32, cols = 512;
  const MatF X = make_inputs(2048, cols, 11), W = make_weights(rows, cols, 111);
  const auto H = hessian_of(X);
  std::vector<float> imp(static_cast<size_t>(cols));  // the imatrix of these inputs: mean x² per column
  for (int64_t c = 0; c < cols; ++c) imp[static_cast<size_t>(c)] = X.col(c).squaredNorm() / static_cast<float>(X.rows());
  for (TType t : {TType::Q2_K, TType::Q3_K, TType::Q4_K, TType::Q5_K, TType::Q6_K, TType::IQ4_NL, TType::IQ4_XS})
    for (int variant = 0; variant < 2; ++variant) {
      CAPTURE(ttype_name(t), variant);
      GptqOptions o;
      o.ktype = t;
      o.act_order = variant == 1;
      const GptqResult r = gptq_quantize(W.data(), rows, cols, H, o, "test");
      // The blocks are the grid: packing writes them, and they decode to what GPTQ computed with.
      const PackedTensor p = pack(r.q, t);
      REQUIRE(p.data == r.q.kblocks);
      const QuantWeight back = unpack(p);
      CHECK(back.codes == r.q.codes);
      std::vector<float> a(static_cast<size_t>(rows * cols)), b(a.size());
      r.q.dequantize(a.data());
      for (int64_t i = 0; i < rows; ++i) dequantize_row(t, p.data.data() + i * row_bytes(t, cols), b.data() + i * cols, cols);
      CHECK(a == b);
      // Better than the rounding llama.cpp does with the importance matrix of the same inputs.
      const double e_gptq = output_error(W, r.q, X);
      const double e_imat = output_error(W, quantize_ggml(t, W.data(), rows, cols, imp.data()), X);
      const double e_ref = output_error(W, quantize_ggml(t, W.data(), rows, cols), X);
      CHECK(e_gptq < e_imat);
      CHECK(e_gptq < e_ref);
    }
}
