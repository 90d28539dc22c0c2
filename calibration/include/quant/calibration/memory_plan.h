// The memory plan of a run, printed by --dry-run and enforced by --max-memory: what a GPTQ run
// holds (one decoder block's weights in fp32, the calibration activations, the Hessians and the
// solve's work arrays, the block's codes until the writer takes them, the embedding table while
// the windows are embedded and the head is rounded), where the activations go when they do not
// fit (files in the work directory), and the time it will take at measured rates. Mapped model
// files are page cache, not the plan's: every figure is anonymous memory.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "quant/calibration/sequential.h"
#include "quant/method.h"
#include "quant/model.h"
#include "quant/policy.h"

namespace quant {

// Rates measured on this machine (probe_rates): one calibration window through decoder block 0,
// and the fp32 GEMM rate of the statistics (X^T X), at which the solves are projected too.
struct PlanRates {
  double window_block_s = 0;  // one window of seqlen tokens through one block (attention + MLP)
  double gemm_flops = 0;      // per second
};

struct MemoryPlanInputs {
  const LlamaConfig* cfg = nullptr;
  const std::vector<TensorPlan>* plans = nullptr;  // methods assigned (assign_methods)
  Method method = Method::Rtn;
  int64_t windows = 0, seqlen = 0;  // calibration (GPTQ)
  bool act_order = false;
  int threads = 1;
  double budget = 0;       // bytes; 0: no limit
  double base = 0;         // anonymous bytes the process already holds (tokenizer, windows, ...)
  std::string spill_dir;   // where activations go when they do not fit
  PlanRates rates;         // zero: no time projection
};

struct MemoryItem {
  std::string what;
  double bytes = 0;
};

struct MemoryPlan {
  double budget = 0, peak = 0;
  std::vector<MemoryItem> held;     // through the block loop (base included)
  std::string peak_at;              // the step where the peak falls
  std::vector<MemoryItem> at_peak;  // on top of `held` there
  ActPlacement acts;                // where the activations live
  std::string spilled;              // what went to disk, in words ("" = nothing)
  // Projected seconds (zero without rates): per block, and the run (blocks + writing the head).
  double block_s = 0, total_s = 0, forward_s = 0, stats_s = 0, solve_s = 0, spill_bytes_per_block = 0;
  double disk_bytes = 0;  // the work directory at its fullest (checkpoints and spills)
  nlohmann::json to_json() const;
  std::string to_text() const;
};

// The cheapest plan within the budget: everything in memory, else the down_proj input on disk,
// then the attention output, then the block inputs, then the MLP recomputed. Throws one line (the
// smallest budget that works and what dominates it) when even one block cannot fit.
MemoryPlan plan_memory(const MemoryPlanInputs& in);

// One window of `seqlen` tokens through block 0 (its fp32 weights read from `weights`) and the
// X^T X of its widest tap: the rates a plan's time is projected at. Allocates one block.
PlanRates probe_rates(const LlamaConfig& cfg, const WeightStore& weights, int64_t seqlen);

// Anonymous memory of this process now (resident, not file-backed), from /proc/self/statm.
double anon_bytes_now();
// Samples anon_bytes_now() every few milliseconds on a thread of its own; peak() = the largest.
class PeakAnonSampler {
 public:
  PeakAnonSampler();
  ~PeakAnonSampler();
  double peak() const;

 private:
  struct Impl;
  Impl* impl_;
};

}  // namespace quant
