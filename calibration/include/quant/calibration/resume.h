// The work directory of a resumable GPTQ run: run.json (the identity of the inputs and flags),
// one block-NNNN.qckpt per finished block (its quantized linears and their reports) and acts.qckpt
// (the last finished block's outputs: the next block's inputs), each written atomically. A run
// killed at any point resumes after its last finished block and writes the bytes an uninterrupted
// run writes; a directory of another model, other flags or other calibration windows is refused
// with the difference, a torn or altered checkpoint with its name.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "quant/calibration/act_store.h"
#include "quant/model.h"
#include "quant/policy.h"
#include "quant/quantize.h"

namespace quant {

struct GptqOptions;

// What a run's bytes depend on: the model (its shapes, norms and embedding table), the resolved
// per-tensor plans, the method and GPTQ's settings, how grids are stored, the calibration tokens.
nlohmann::json run_identity(const LlamaConfig& cfg, const WeightStore& weights, const std::vector<TensorPlan>& plans,
                            const std::string& method, const GptqOptions& gptq, int grid_store,
                            const std::vector<std::vector<int32_t>>& windows);

class RunCheckpoints {
 public:
  struct Tensor {
    std::string name;
    QuantWeight q;
    TensorReport report;
  };
  // resume = false: a fresh run (earlier checkpoints in `dir` are removed). resume = true: checks
  // run.json against `identity` and finds the last finished block (none there: a fresh run).
  RunCheckpoints(std::string dir, nlohmann::json identity, bool resume);
  int64_t blocks_done() const { return done_; }
  const std::string& dir() const { return dir_; }
  void save_block(int64_t l, const std::vector<Tensor>& tensors, ActStore& outputs);
  std::vector<Tensor> load_block(int64_t l) const;
  void load_outputs(ActStore& x) const;  // of block blocks_done() - 1
  // The output is written: the checkpoints go (and the directory, when nothing else is in it).
  void finish();

 private:
  std::string file(int64_t l) const;
  std::string dir_;
  nlohmann::json identity_;
  int64_t done_ = 0;
};

}  // namespace quant
