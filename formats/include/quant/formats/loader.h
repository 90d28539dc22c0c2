// Opening a model from any supported source: Hugging Face directory, llama2.c file, GGUF.
#pragma once

#include <map>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

#include "quant/model.h"
#include "quant/tokenizer.h"

namespace quant {

struct LoadedModel {
  std::string path;
  std::string format;  // "hf", "llama2c", "gguf"
  LlamaConfig config;
  std::unique_ptr<WeightStore> weights;
  std::unique_ptr<Tokenizer> tokenizer;
  std::map<std::string, std::string> info;  // provenance shown by `quant inspect`
};

struct LoadOptions {
  std::string tokenizer_path;  // llama2.c: tokenizer.bin; default: beside the model
};

LoadedModel load_model(const std::string& path, const LoadOptions& opts = {});

// A JSON file, parsed; errors name the file.
nlohmann::json read_json_file(const std::string& path);

// Pieces of the loaders, exposed for tests.
LlamaConfig parse_hf_config(const std::string& config_json_path);
std::unique_ptr<Tokenizer> load_sentencepiece(const std::string& path);
// tokenizer.json (+ tokenizer_config.json) of `dir`, a byte-level BPE, padded to vocab_size.
Vocab read_hf_tokenizer(const std::string& dir, int64_t vocab_size);
Vocab read_llama2c_tokenizer(const std::string& path, int64_t vocab_size);
LoadedModel load_hf(const std::string& dir);
// Our canonical tensor name (blk.3.attn_q.weight) as HF names it (model.layers.3.self_attn.q_proj.weight).
std::string hf_tensor_name(const std::string& canonical);
// The weight files of an HF directory: model.safetensors, pytorch_model.bin, or the shards
// named by either's .index.json.
std::vector<std::string> checkpoint_files(const std::string& dir);
LoadedModel load_llama2c(const std::string& path, const std::string& tokenizer_path);
LoadedModel load_gguf(const std::string& path);

}  // namespace quant
