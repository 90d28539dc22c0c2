// Calibration windows and per-input statistics.
#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>
#include <random>

#include "quant/calibration/calibration.h"
#include "quant/error.h"
#include "quant/gemm.h"
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
  for (int64_t i = 0; i < rows * width_; ++i)
    QUANT_CHECK(std::isfinite(x[i]), "calibration activation is not finite (row {}, channel {})", i / width_, i % width_);
  // X^T X, lower triangle, in strips of kStrip rows: strip [i0, i1) x [0, i1) is one fp32 GEMM of
  // X^T's rows (the threaded, thread-count-independent gemm_nt), added into the double sums.
  constexpr int64_t kStrip = 256;
  const int64_t W = width_;
  std::vector<float> xt(static_cast<size_t>(W * rows));
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < W; ++c)
    for (int64_t r = 0; r < rows; ++r) xt[static_cast<size_t>(c * rows + r)] = x[r * W + c];
  std::vector<float> g(static_cast<size_t>(std::min(kStrip, W) * W));
  for (int64_t i0 = 0; i0 < W; i0 += kStrip) {
    const int64_t i1 = std::min(W, i0 + kStrip);
    gemm_nt(xt.data() + i0 * rows, rows, xt.data(), rows, g.data(), i1, i1 - i0, i1, rows, 1.0f, false);
#pragma omp parallel for schedule(static)
    for (int64_t i = i0; i < i1; ++i) {
      double* dst = xtx_.data() + i * W;
      const float* src = g.data() + (i - i0) * i1;
      for (int64_t j = 0; j <= i; ++j) dst[j] += src[j];
    }
  }
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < W; ++c) {
      const double a = std::fabs(static_cast<double>(x[r * W + c]));
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
  InputStats copy = *this;
  return std::move(copy).take_hessian();
}

std::vector<double> InputStats::take_hessian() && {
  QUANT_CHECK(n_ > 0, "no calibration tokens reached this input");
  std::vector<double> h = std::move(xtx_);  // symmetrized and scaled in place: no second k x k array
  xtx_.clear();
  const double f = 2.0 / static_cast<double>(n_);
  for (int64_t i = 0; i < width_; ++i)
    for (int64_t j = 0; j <= i; ++j)
      h[static_cast<size_t>(i * width_ + j)] = h[static_cast<size_t>(j * width_ + i)] = f * h[static_cast<size_t>(i * width_ + j)];
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
