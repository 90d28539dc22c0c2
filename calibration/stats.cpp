// Calibration windows and per-input statistics.
#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>
#include <random>

#include "quant/calibration/calibration.h"
#include "quant/error.h"
#include "quant/calibration/text.h"
#include "quant/tokenizer.h"

namespace quant {

std::vector<std::vector<int32_t>> calibration_windows(const Tokenizer& tok, const CalibSpec& spec, int64_t max_ctx) {
  return calibration_windows(encode_text_file(tok, spec.file), spec, max_ctx);
}

nlohmann::json CalibSpec::to_json() const {
  return {{"file", file}, {"nsamples", nsamples}, {"seqlen", seqlen}, {"seed", seed}, {"mode", mode}};
}

std::vector<std::vector<int32_t>> calibration_windows(const std::vector<int32_t>& tokens, const CalibSpec& s,
                                                      int64_t max_ctx) {
  const int64_t n = static_cast<int64_t>(tokens.size());
  QUANT_CHECK(s.nsamples > 0 && s.seqlen > 1, "calibration: nsamples {} and seqlen {} must be positive", s.nsamples, s.seqlen);
  QUANT_CHECK(s.seqlen <= max_ctx, "calibration: window of {} tokens is longer than the model's context of {}", s.seqlen, max_ctx);
  QUANT_CHECK(n > s.seqlen, "{}: calibration text has {} tokens, shorter than one window of {}", s.file, n, s.seqlen);
  std::vector<std::vector<int32_t>> out;
  if (s.mode == "random") {
    std::mt19937_64 rng(s.seed);
    std::uniform_int_distribution<int64_t> start(0, n - s.seqlen - 1);
    for (int64_t i = 0; i < s.nsamples; ++i) {
      const int64_t b = start(rng);
      out.emplace_back(tokens.begin() + b, tokens.begin() + b + s.seqlen);
    }
  } else if (s.mode == "concat") {
    const int64_t avail = n / s.seqlen;
    QUANT_CHECK(avail >= s.nsamples, "{}: calibration text holds {} windows of {} tokens, {} requested", s.file, avail, s.seqlen,
                s.nsamples);
    for (int64_t i = 0; i < s.nsamples; ++i) out.emplace_back(tokens.begin() + i * s.seqlen, tokens.begin() + (i + 1) * s.seqlen);
  } else {
    fail("calibration mode {} (random, concat)", s.mode);
  }
  return out;
}

InputStats::InputStats(int64_t width)
    : width_(width),
      xtx_(static_cast<size_t>(width * width)),
      sum_abs_(static_cast<size_t>(width)),
      max_abs_(static_cast<size_t>(width)) {}

void InputStats::add(const float* x, int64_t rows) {
  using MatF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  Eigen::Map<const MatF> X(x, rows, width_);
  for (int64_t i = 0; i < rows * width_; ++i)
    QUANT_CHECK(std::isfinite(x[i]), "calibration activation is not finite (row {}, channel {})", i / width_, i % width_);
  MatF g = MatF::Zero(width_, width_);
  g.selfadjointView<Eigen::Lower>().rankUpdate(X.transpose());
  for (int64_t i = 0; i < width_; ++i)
    for (int64_t j = 0; j <= i; ++j) xtx_[static_cast<size_t>(i * width_ + j)] += g(i, j);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < width_; ++c) {
      const double a = std::fabs(static_cast<double>(X(r, c)));
      sum_abs_[static_cast<size_t>(c)] += a;
      max_abs_[static_cast<size_t>(c)] = std::max(max_abs_[static_cast<size_t>(c)], a);
    }
  n_ += rows;
}

void InputStats::merge(const InputStats& o) {
  QUANT_CHECK(o.width_ == width_, "merging statistics of width {} into {}", o.width_, width_);
  for (size_t i = 0; i < xtx_.size(); ++i) xtx_[i] += o.xtx_[i];
  for (size_t i = 0; i < sum_abs_.size(); ++i) {
    sum_abs_[i] += o.sum_abs_[i];
    max_abs_[i] = std::max(max_abs_[i], o.max_abs_[i]);
  }
  n_ += o.n_;
}

std::vector<double> InputStats::hessian() const {
  QUANT_CHECK(n_ > 0, "no calibration tokens reached this input");
  std::vector<double> h(static_cast<size_t>(width_ * width_));
  const double f = 2.0 / static_cast<double>(n_);
  for (int64_t i = 0; i < width_; ++i)
    for (int64_t j = 0; j <= i; ++j)
      h[static_cast<size_t>(i * width_ + j)] = h[static_cast<size_t>(j * width_ + i)] = f * xtx_[static_cast<size_t>(i * width_ + j)];
  return h;
}

std::vector<double> InputStats::sum_squares() const {
  std::vector<double> d(static_cast<size_t>(width_));
  for (int64_t i = 0; i < width_; ++i) d[static_cast<size_t>(i)] = xtx_[static_cast<size_t>(i * width_ + i)];
  return d;
}

std::vector<double> InputStats::mean_abs() const {
  std::vector<double> m(sum_abs_);
  for (auto& v : m) v /= static_cast<double>(std::max<int64_t>(1, n_));
  return m;
}

std::vector<double> InputStats::max_abs() const { return max_abs_; }

}  // namespace quant
