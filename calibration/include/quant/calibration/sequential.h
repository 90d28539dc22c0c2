// The GPTQ drivers: decoder block by decoder block, each block's linears quantized from the
// Hessians of their inputs. The sequential driver keeps the calibration activations of one block
// in memory, each block's inputs computed by the already-quantized block before it; the other
// reads saved statistics. Both hand each quantized grid to a sink and know nothing of files.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "quant/calibration/calibration.h"
#include "quant/gptq.h"
#include "quant/model.h"
#include "quant/policy.h"
#include "quant/quantize.h"
#include "quant/runtime.h"

namespace quant {

class StatsDir;
class RunCheckpoints;

// Embeddings of every calibration window, [windows][seqlen][dim].
std::vector<float> embed_windows(const LlamaConfig& cfg, const WeightStore& weights,
                                 const std::vector<std::vector<int32_t>>& windows);
// The same from a given table [vocab][dim] (a quantized copy of token_embd).
std::vector<float> embed_windows(const LlamaConfig& cfg, const float* table, const std::vector<std::vector<int32_t>>& windows);

// One decoder block's weights as fp32, owned; keys are short names (attn_norm, attn_q, attn_q.bias, ...).
struct BlockTensors {
  BlockTensors(const LlamaConfig& cfg, const WeightStore& weights, int64_t block);
  std::map<std::string, std::vector<float>> w;
  bool qkv_bias;
  BlockWeights view();
};

// Where the sequential driver keeps a block's calibration activations (the memory plan decides):
// in memory, or spilled to files in spill_dir; the down_proj input is kept (memory or disk) or the
// block's MLP recomputed. Every choice gives the same output bytes.
struct ActPlacement {
  enum class Down { Memory, Disk, Recompute };
  std::string spill_dir;
  bool x_on_disk = false, attn_on_disk = false;
  Down down = Down::Memory;
};

struct SequentialOptions {
  GptqOptions gptq;  // damping, act-order, block; the grid comes from each tensor's plan
  // What the file holds of a grid: later steps of the sequential driver compute with exactly it.
  GridStore grid_store = GridStore::Packed;
  std::function<void(const std::string& what, int64_t done, int64_t total)> progress;
  // Receives each quantized linear (may be empty: the grids are then dropped).
  std::function<void(const TensorPlan& plan, QuantWeight&& q, const TensorReport& report)> sink;
  // An imatrix's importance for fitting super-block grids (else each linear's diag(H)).
  const Importance* importance = nullptr;
  ActPlacement acts;
  // Resumable runs (sequential driver): each finished block saved; a driver made over checkpoints
  // of finished blocks starts after them, from the saved outputs of the last.
  RunCheckpoints* checkpoints = nullptr;
};

struct SequentialResult {
  std::vector<TensorReport> layers;
  int64_t block_passes = 0;  // block forward passes over all windows
  double seconds = 0;
};

// GPTQ of every decoder linear whose plan asks for a grid, one block per run_block() call, so a
// writer can take a block's tensors before the next block is quantized.
class GptqDriver {
 public:
  virtual ~GptqDriver() = default;
  int64_t next_block() const { return next_; }
  bool done() const { return next_ >= n_layers_; }
  virtual void run_block() = 0;  // block next_block(), then advances
  void run_all() {
    while (!done()) run_block();
  }
  const SequentialResult& result() const { return res_; }

 protected:
  GptqDriver(const std::vector<TensorPlan>& plans, int64_t n_layers, SequentialOptions opts);
  // The plans of block l's linears that read `tap` and ask for a grid.
  std::vector<const TensorPlan*> todo(int64_t l, Tap tap) const;
  // GPTQ of one linear (w updated to what the file holds when `keep_stored`); to the sink.
  void quantize(const TensorPlan& p, std::vector<float>& w, const std::vector<float>& H, bool keep_stored);
  std::map<std::string, const TensorPlan*> plan_of_;
  std::vector<std::pair<std::string, std::pair<QuantWeight, TensorReport>>> block_done_;  // for the checkpoint
  int64_t next_ = 0, n_layers_;
  SequentialOptions opts_;
  SequentialResult res_;
};

// Sequential: [q,k,v] -> o -> [gate,up] -> down inside each block, re-running the block between
// steps on the calibration windows.
std::unique_ptr<GptqDriver> gptq_sequential_driver(const LlamaConfig& cfg, const WeightStore& weights,
                                                   const std::vector<std::vector<int32_t>>& windows,
                                                   const std::vector<TensorPlan>& plans, const SequentialOptions& opts);
// Each linear from its saved Hessian (statistics of the FP model: not sequential).
std::unique_ptr<GptqDriver> gptq_stats_driver(const LlamaConfig& cfg, const WeightStore& weights, const StatsDir& stats,
                                              const std::vector<TensorPlan>& plans, const SequentialOptions& opts);

// Every block at once.
SequentialResult gptq_sequential(const LlamaConfig& cfg, const WeightStore& weights,
                                 const std::vector<std::vector<int32_t>>& windows, const std::vector<TensorPlan>& plans,
                                 const SequentialOptions& opts);

}  // namespace quant
