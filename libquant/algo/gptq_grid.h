// The grid GPTQ's column sweep quantizes onto (internal to libquant/algo): GPTQ's integer grid
// (quant.py), or a ggml super-block type whose stored scales are fitted per super-block.
#pragma once

#include <memory>
#include <vector>

#include "quant/gptq.h"

namespace quant::detail {

class SweepGrid {
 public:
  virtual ~SweepGrid() = default;
  // Columns fitted together: a group, or a super-block.
  int64_t span() const { return span_; }
  // Fits row r's grid over natural columns [c, c + n) from their current values x.
  virtual void fit(int64_t r, int64_t c, const float* x, int64_t n) = 0;
  // The code of w at row r, natural column c, and (in value) the weight that code stands for.
  virtual uint8_t quantize(int64_t r, int64_t c, float w, float& value) const = 0;
  // The quantized weight from the codes [rows][cols] in natural column order.
  virtual QuantWeight finish(const std::vector<uint8_t>& codes) const = 0;

 protected:
  int64_t span_ = 0;
};

std::unique_ptr<SweepGrid> integer_sweep_grid(int64_t rows, int64_t cols, const GridSpec& spec);
// importance: one value per input column (natural order), handed to ggml's quantizer.
std::unique_ptr<SweepGrid> kquant_sweep_grid(TType t, int64_t rows, int64_t cols, std::vector<float> importance);

}  // namespace quant::detail
