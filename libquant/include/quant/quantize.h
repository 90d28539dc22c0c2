// One tensor quantized per its plan, and the stream of quantized tensors that the writers
// consume: a writer asks for each tensor once, in its own file order, and only packs and
// serializes what it gets (the algorithms stay on this side of the interface).
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "quant/gptq.h"
#include "quant/model.h"
#include "quant/policy.h"

namespace quant {

// How a file holds a grid. A sequential method computes the later blocks with exactly that.
enum class GridStore {
  Packed,  // ggml blocks of the plan's stored type (GGUF): scales and mins rounded to fp16
  Exact,   // the grid itself with fp32 scales (ONNX MatMulNBits)
};

// What quantizing one tensor cost and how close it came.
struct TensorReport {
  std::string name;
  Method method = Method::None;
  double seconds = 0;
  double nmse = 0;  // ||w - q||² / ||w||² of the quantized weights (RTN); 0 for float tensors
  // GPTQ: loss as gptq.py reports it, damping used, Cholesky retries, dead inputs, update rate.
  double loss = 0, damp = 0, gemm_gflops = 0;
  int retries = 0;
  int64_t dead_columns = 0;
  bool kept = false;  // the source's own grid, handed on unchanged (a GPTQ checkpoint's codes)
};

// Whether a plan's tensor becomes a grid (a grid was asked for, or a ggml type whose 32-blocks
// tile the rows) or is stored as float values.
bool plan_quantizes(const TensorPlan& p);

// Per-column importance of each weight by tensor name (llama.cpp's imatrix: mean x² of the input
// column), for ggml's importance-weighted quantizers.
using Importance = std::map<std::string, std::vector<float>>;

// Round-to-nearest per the plan: its integer grid, or ggml's quantizer (importance-weighted when
// `importance` holds the tensor's columns). Throws naming the tensor when a weight is not
// finite. w: [rows][cols] in the row order to be stored.
QuantWeight quantize_rtn(const TensorPlan& p, const float* w, const float* importance = nullptr);
// importance's entry for the plan's tensor, or null.
const float* importance_of(const Importance* importance, const TensorPlan& p);

// The grid the weight store already holds for the plan's tensor (read_grid), when it is the
// plan's grid (bits, group, symmetry): a quantized checkpoint's codes pass through unchanged
// instead of being rounded again. nullopt otherwise.
// A grid with act-order g_idx is kept only where `with_g_idx` says the container holds one.
std::optional<QuantWeight> kept_grid(const WeightStore& weights, const TensorPlan& p, bool with_g_idx);

// Whether GPTQ can quantize onto `s`: an integer grid, or a ggml super-block type (k-quants, IQ4).
bool gptq_quantizable(const QuantSpec& s);

// GPTQ of w [rows][cols] onto the plan's grid given the Hessian H [cols][cols] of its input;
// `opts` gives damping, act-order and lazy batch. The report gets loss, damping and timing.
QuantWeight quantize_gptq(const TensorPlan& p, const float* w, const std::vector<double>& H, const GptqOptions& opts,
                          TensorReport& report);
QuantWeight quantize_gptq(const TensorPlan& p, const float* w, const std::vector<float>& H, const GptqOptions& opts,
                          TensorReport& report);

// The weights the file will hold for q, [rows][cols] fp32.
void stored_values(const TensorPlan& p, const QuantWeight& q, GridStore store, float* out);

// One tensor as a writer receives it: a grid, or float values (vectors: [cols]).
struct QuantizedTensor {
  std::optional<QuantWeight> q;
  std::vector<float> values;
  TensorReport report;
};

// The tensors of a model per their plans. take() hands out each tensor once (in the canonical,
// rotate-half row order); the writer permutes rows for its own layout.
class TensorSource {
 public:
  virtual ~TensorSource() = default;
  virtual const std::vector<TensorPlan>& plans() const = 0;
  virtual QuantizedTensor take(const TensorPlan& plan) = 0;
  // The plan of `name` (throws naming it when there is none).
  const TensorPlan& plan(const std::string& name) const;
};

// Every tensor by RTN when taken, from a weight store: one tensor in memory at a time.
class RtnTensors final : public TensorSource {
 public:
  RtnTensors(const WeightStore& weights, std::vector<TensorPlan> plans, bool keep_g_idx = false,
             const Importance* importance = nullptr)
      : weights_(weights), plans_(std::move(plans)), keep_g_idx_(keep_g_idx), importance_(importance) {}
  const std::vector<TensorPlan>& plans() const override { return plans_; }
  QuantizedTensor take(const TensorPlan& plan) override;

 private:
  const WeightStore& weights_;
  std::vector<TensorPlan> plans_;
  bool keep_g_idx_ = false;
  const Importance* importance_ = nullptr;
};

}  // namespace quant
