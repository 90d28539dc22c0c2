// The quantization stage: a model, its resolved per-tensor plans, a method with its settings and
// the calibration windows in; the quantized tensors out, one at a time, in the order the writer
// stores them, each with its metrics. Every method runs through here (RTN, GPTQ, AWQ, AWQ+GPTQ,
// SmoothQuant); writers only pack and serialize what it hands out.
//
//   plans ─assign methods─▶ [AWQ | SmoothQuant: search or given plan ─fold─▶ OverlayStore]
//         ─▶ take(plan): GPTQ'd linears from the block driver (run up to the tensor's block),
//                        every other tensor by RTN from the (transformed) weights
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "quant/calibration/act_aware.h"
#include "quant/calibration/calibration.h"
#include "quant/method.h"
#include "quant/quantize.h"
#include "quant/calibration/resume.h"
#include "quant/calibration/sequential.h"
#include "quant/calibration/stats_dir.h"

namespace quant {

struct StageSpec {
  Method method = Method::Rtn;
  GridStore grid_store = GridStore::Packed;  // how the output file holds grids
  GptqOptions gptq;                          // damping, act-order, lazy batch; grids from the plans
  AwqOptions awq;
  SmoothOptions smooth;                      // alpha < 0: searched per block
  std::optional<ActPlan> act_plan;           // AWQ / SmoothQuant plan given instead of searched
  std::string act_plan_file;                 // where it came from (recorded)
  CalibSpec calib;                           // recorded; `windows` were drawn by it
  std::vector<std::vector<int32_t>> windows;
  const StatsDir* stats = nullptr;           // GPTQ (and SmoothQuant with a fixed alpha) from saved statistics
  const Importance* importance = nullptr;    // an imatrix's per-column importance for ggml's quantizers (RTN)
  ActPlacement acts;                         // where GPTQ keeps the calibration activations (memory plan)
  std::string work_dir;                      // sequential GPTQ: per-block checkpoints there (empty: none)
  bool resume = false;                       // continue after the work directory's last finished block
  std::function<void(const std::string& step, const std::string& what, int64_t done, int64_t total)> progress;
};

// Records on each plan the method that will produce its tensor: GPTQ on the decoder linears on
// a grid (it needs the Hessian of the linear's input), AWQ / SmoothQuant on every quantized
// decoder linear (the transform ran on all of them), RTN on the rest, none for float tensors.
void assign_methods(std::vector<TensorPlan>& plans, Method method);

class QuantStage final : public TensorSource {
 public:
  // Sets each plan's method (assign_methods).
  QuantStage(const LlamaConfig& cfg, const WeightStore& weights, std::vector<TensorPlan> plans, StageSpec spec);
  ~QuantStage() override;

  // The AWQ / SmoothQuant search (or the given plan) folded into the weights, and the GPTQ
  // driver made ready. Call once before take(); throws when the inputs cannot serve the method.
  void prepare();
  const std::vector<TensorPlan>& plans() const override { return plans_; }
  QuantizedTensor take(const TensorPlan& plan) override;

  const StageSpec& spec() const { return spec_; }
  const WeightStore& weights() const;                // transformed by AWQ / SmoothQuant, else the input
  const ActPlan* act_plan() const { return act_plan_ ? &*act_plan_ : nullptr; }
  const SequentialResult* gptq() const;              // after the last GPTQ'd tensor was taken
  const std::vector<TensorReport>& reports() const { return reports_; }  // every tensor taken, in order
  int64_t resumed_blocks() const { return resumed_; }  // finished blocks taken from the work directory
  // The output is written: the work directory's checkpoints are removed.
  void finish();
  // quant.* metadata of the run (JSON strings): calibration, gptq, awq / smoothquant recipes.
  std::map<std::string, std::string> metadata() const;

 private:
  const LlamaConfig& cfg_;
  const WeightStore& base_;
  std::vector<TensorPlan> plans_;
  StageSpec spec_;
  std::optional<ActPlan> act_plan_;
  std::unique_ptr<OverlayStore> overlay_;
  std::unique_ptr<RtnTensors> rtn_;
  std::unique_ptr<RunCheckpoints> ckpt_;
  int64_t resumed_ = 0;
  std::unique_ptr<GptqDriver> gptq_;
  std::map<std::string, QuantizedTensor> gptq_done_;  // quantized, not yet taken
  std::vector<TensorReport> reports_;
  bool prepared_ = false;
};

// The decoder linears' share of a plan list: logical bits per weight over them, and logical and
// stored sizes of the whole model in bytes.
struct PlanTotals {
  double decoder_linear_logical_bpw = 0, logical_bytes = 0, stored_bytes = 0;
};
PlanTotals plan_totals(const std::vector<TensorPlan>& plans);

}  // namespace quant
