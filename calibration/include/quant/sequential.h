// The sequential driver: decoder block by decoder block, the calibration activations of one
// block in memory, each block's inputs computed by the already-quantized block before it.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "quant/calibration.h"
#include "quant/gptq.h"
#include "quant/model.h"
#include "quant/policy.h"
#include "quant/runtime.h"

namespace quant {

// Embeddings of every calibration window, [windows][seqlen][dim].
std::vector<float> embed_windows(const LlamaConfig& cfg, const WeightStore& weights,
                                 const std::vector<std::vector<int32_t>>& windows);

// One decoder block's weights as fp32, owned; keys are short names (attn_q, attn_q.bias, ...).
struct BlockTensors {
  BlockTensors(const LlamaConfig& cfg, const WeightStore& weights, int64_t block);
  std::map<std::string, std::vector<float>> w;
  bool qkv_bias;
  BlockWeights view();
};

struct SequentialOptions {
  GptqOptions gptq;  // damping, act-order, block; the grid comes from each tensor's plan
  std::function<void(const std::string& what, int64_t done, int64_t total)> progress;
  // When set, each GPTQ'd grid goes here (exact, fp32 scales) instead of being packed into its
  // plan's GGUF type, and later steps compute with the grid itself (the ONNX exporter's path).
  std::function<void(const std::string& name, QuantWeight&& q)> grid_sink;
};

struct LayerReport {
  std::string name;
  double loss = 0, seconds = 0, damp = 0, gemm_gflops = 0;
  int retries = 0;
  int64_t dead_columns = 0;
};

struct SequentialResult {
  std::map<std::string, PackedTensor> packed;  // GPTQ'd linears, canonical row order (unless grid_sink)
  std::vector<LayerReport> layers;
  int64_t block_passes = 0;  // block forward passes over all windows
  double seconds = 0;
};

// GPTQ on every decoder linear whose plan asks for a grid, in true-sequential order
// [q,k,v] -> o -> [gate,up] -> down inside each block, re-running the block between steps.
SequentialResult gptq_sequential(const LlamaConfig& cfg, const WeightStore& weights,
                                 const std::vector<std::vector<int32_t>>& windows, const std::vector<TensorPlan>& plans,
                                 const SequentialOptions& opts);

}  // namespace quant
