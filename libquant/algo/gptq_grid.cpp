// GPTQ's sweep grids: quant.py's integer grid per (row, group), and a ggml super-block type whose
// blocks are fitted by ggml's importance-weighted quantizer and then hold GPTQ's codes.
#include "gptq_grid.h"

#include <cmath>

#include "quant/error.h"
#include "quant/kquants.h"

namespace quant::detail {

namespace {

class IntegerGrid final : public SweepGrid {
 public:
  IntegerGrid(int64_t rows, int64_t cols, const GridSpec& g)
      : rows_(rows), cols_(cols), spec_(g), maxq_((1 << g.bits) - 1) {
    span_ = g.group == 0 ? cols : g.group;
    ng_ = (cols + span_ - 1) / span_;  // a shorter last group when the group does not divide cols
    params_.resize(static_cast<size_t>(rows * ng_));
  }
  void fit(int64_t r, int64_t c, const float* x, int64_t n) override {
    params_[static_cast<size_t>(r * ng_ + c / span_)] = fit_grid_group(x, n, 1, spec_);
  }
  uint8_t quantize(int64_t r, int64_t c, float w, float& value) const override {
    const GridParams& p = params_[static_cast<size_t>(r * ng_ + c / span_)];
    const float code = quant_code(w, p, maxq_);
    value = p.scale * (code - p.zero);
    return static_cast<uint8_t>(code);
  }
  QuantWeight finish(const std::vector<uint8_t>& codes) const override {
    QuantWeight q;
    q.rows = rows_;
    q.cols = cols_;
    q.bits = spec_.bits;
    q.group = span_;
    q.sym = spec_.sym;
    q.codes = codes;
    q.scales.resize(params_.size());
    q.mins.resize(params_.size());
    for (size_t i = 0; i < params_.size(); ++i) {
      q.scales[i] = params_[i].scale;
      q.mins[i] = -params_[i].zero * params_[i].scale;
    }
    return q;
  }

 private:
  int64_t rows_, cols_, ng_ = 0;
  GridSpec spec_;
  int maxq_;
  std::vector<GridParams> params_;
};

// Per (row, sub-block): the scale and min of the stored block (value = scale·code + min; IQ4:
// scale·level[code]), decoded from the block ggml's quantizer wrote for the fitted weights.
class KGrid final : public SweepGrid {
 public:
  KGrid(TType t, int64_t rows, int64_t cols, std::vector<float> importance)
      : t_(t), rows_(rows), cols_(cols), sub_(kquant_group(t)), maxq_((1 << kquant_bits(t)) - 1), imp_(std::move(importance)) {
    span_ = traits(t).block;
    QUANT_CHECK(cols % span_ == 0, "{}: {} columns do not tile its {}-weight blocks", ttype_name(t), cols, span_);
    QUANT_CHECK(static_cast<int64_t>(imp_.size()) == cols, "{}: importance of {} columns for {}", ttype_name(t), imp_.size(), cols);
    row_bytes_ = quant::row_bytes(t, cols);
    block_bytes_ = quant::row_bytes(t, span_);
    blocks_.resize(static_cast<size_t>(rows * row_bytes_));
    scales_.resize(static_cast<size_t>(rows * cols / sub_));
    mins_.resize(scales_.size());
  }
  void fit(int64_t r, int64_t c, const float* x, int64_t n) override {
    QUANT_CHECK(n == span_ && c % span_ == 0, "k-grid fit of {} columns at {}", n, c);
    uint8_t* block = blocks_.data() + r * row_bytes_ + (c / span_) * block_bytes_;
    quantize_kquant(t_, x, block, span_, imp_.data() + c);
    uint8_t codes[kQK_K];  // ggml's own codes: GPTQ chooses its own on this grid
    const size_t at = static_cast<size_t>((r * cols_ + c) / sub_);
    kquant_grid(t_, block, span_, codes, scales_.data() + at, mins_.data() + at);
  }
  uint8_t quantize(int64_t r, int64_t c, float w, float& value) const override {
    const size_t g = static_cast<size_t>((r * cols_ + c) / sub_);
    const float s = scales_[g], m = mins_[g];
    if (is_nonlinear(t_)) {  // the nearest of the 16 levels
      int best = 0;
      float err = INFINITY;
      for (int k = 0; k < 16; ++k) {
        const float e = std::fabs(w - s * static_cast<float>(kIQ4Levels[k]));
        if (e < err) err = e, best = k;
      }
      value = s * static_cast<float>(kIQ4Levels[best]);
      return static_cast<uint8_t>(best);
    }
    const int code = s != 0.0f ? std::clamp(static_cast<int>(std::nearbyint((w - m) / s)), 0, maxq_) : 0;
    value = s * static_cast<float>(code) + m;
    return static_cast<uint8_t>(code);
  }
  QuantWeight finish(const std::vector<uint8_t>& codes) const override {
    PackedTensor p{t_, rows_, cols_, blocks_};
    for (int64_t r = 0; r < rows_; ++r)
      for (int64_t b = 0; b < cols_ / span_; ++b)
        kquant_set_codes(t_, p.data.data() + r * row_bytes_ + b * block_bytes_, codes.data() + r * cols_ + b * span_);
    QuantWeight q = unpack(p);
    QUANT_CHECK(q.codes == codes, "{}: the blocks do not hold GPTQ's codes", ttype_name(t_));
    return q;
  }

 private:
  TType t_;
  int64_t rows_, cols_, sub_, row_bytes_ = 0, block_bytes_ = 0;
  int maxq_;
  std::vector<float> imp_;
  std::vector<uint8_t> blocks_;
  std::vector<float> scales_, mins_;
};

}  // namespace

std::unique_ptr<SweepGrid> integer_sweep_grid(int64_t rows, int64_t cols, const GridSpec& spec) {
  return std::make_unique<IntegerGrid>(rows, cols, spec);
}

std::unique_ptr<SweepGrid> kquant_sweep_grid(TType t, int64_t rows, int64_t cols, std::vector<float> importance) {
  return std::make_unique<KGrid>(t, rows, cols, std::move(importance));
}

}  // namespace quant::detail
