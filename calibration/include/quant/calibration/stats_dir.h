// Saved calibration statistics: calibrate once, quantize many times.
//   DIR/blk.N.safetensors  {TAP.hessian [w][w], TAP.mean_abs [w], TAP.max_abs [w]} for TAP in
//                          attn_in, o_in, mlp_in, down_in; F32 (accumulated in double)
//   DIR/manifest.json      {"format": "quant-stats", "version": 1, "model": {...dims}, "calibration": {...},
//                           "tokens": n} — written last, so a directory without it is incomplete.
// These are statistics of the FP model (each block's inputs from the FP blocks before it); GPTQ
// from them is not sequential, unlike convert --calib.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "quant/calibration/calibration.h"
#include "quant/model.h"
#include "quant/runtime.h"

namespace quant {

struct Imatrix;
// Statistics of the FP model on `windows` to `dir` (skipped when empty) and, when `imatrix` is
// given, llama.cpp's importance matrix of the same pass into it: Σx² of every decoder linear's
// input per column (q/k/v share attn_in, gate/up share mlp_in), counts = tokens, one chunk per
// window.
void calibrate_to_dir(const LlamaConfig& cfg, const WeightStore& weights, const std::vector<std::vector<int32_t>>& windows,
                      const CalibSpec& spec, const std::string& dir,
                      const std::function<void(int64_t done, int64_t total)>& progress = {}, Imatrix* imatrix = nullptr);

class StatsDir {
 public:
  // Validates the manifest against cfg (a directory from another model is refused).
  StatsDir(const std::string& dir, const LlamaConfig& cfg);
  std::vector<double> hessian(int64_t block, Tap tap) const;
  std::vector<double> mean_abs(int64_t block, Tap tap) const;
  std::vector<double> max_abs(int64_t block, Tap tap) const;
  const std::string& dir() const { return dir_; }
  std::string calibration_json() const { return calibration_; }

 private:
  std::vector<double> read(int64_t block, Tap tap, const char* what, int64_t numel) const;
  std::string dir_, calibration_;
  LlamaConfig cfg_;
};

}  // namespace quant
