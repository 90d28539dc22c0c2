// Random-weight checkpoints in the real Hugging Face layouts of today's model shapes, for the
// benchmarks and tests of sizes and families ../shared has no example of (no model hub here).
#pragma once

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "quant/model.h"

namespace quant {

struct SynthShape {
  std::string name;  // tinyllama-1.1b, llama-3.2-1b, llama-3.1-8b, qwen2.5-7b, mistral-7b, ...
  LlamaConfig cfg;
  // Llama 3.1+'s rope_scaling "llama3" (factor, low_freq_factor, high_freq_factor, original
  // max_position_embeddings); factor 0 = none.
  float rope_factor = 0, rope_low = 0, rope_high = 0;
  int64_t rope_original_ctx = 0;
};
const std::vector<SynthShape>& synth_shapes();
const SynthShape& synth_shape(const std::string& name);  // throws naming the known shapes

struct SynthOptions {
  TType dtype = TType::F16;  // F16, BF16 or F32
  uint64_t seed = 0;
  float std = 0.02f;         // of every matrix (Hugging Face's initializer_range); norms are 1
  int64_t shard_mb = 4096;   // model-0000i-of-0000n.safetensors + index past this; 0 = one file
  std::string tokenizer;     // a tokenizer.model, or a directory holding tokenizer.model / tokenizer.json: copied
  std::function<void(int64_t done, int64_t total)> progress;  // tensors written
  // Headers only: every tensor is a hole of its size in a sparse file (zeros when read), for
  // --dry-run plans of shapes too large for the disk (a 70B model takes a few kB).
  bool header_only = false;
};

// Writes config.json, the safetensors file(s) (and their index) and the tokenizer into `dir`.
// Same shape, options and seed -> the same bytes, whatever the thread count. Memory holds one
// tensor. Returns the bytes of tensor data written.
int64_t write_synth_checkpoint(const SynthShape& shape, const std::string& dir, const SynthOptions& opts);

// The shape's config.json as Hugging Face writes it.
nlohmann::json synth_hf_config(const SynthShape& shape);

}  // namespace quant
