// GPTQ-format HF checkpoints (quant_method "gptq"): the quantization_config and the four
// tensors of each quantized linear. Private to formats/ (hf.cpp reads, gptq_writer.cpp writes).
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "quant/formats/safetensors.h"
#include "quant/gptq_format.h"

namespace quant {

struct GptqConfig {
  int bits = 4;
  int64_t group = 128;  // -1: one group per row
  bool desc_act = false, sym = true;
  GptqZeros zeros = GptqZeros::V1;
  std::string source;  // the file that gave it, for errors
};

// config.json's quantization_config, else quantize_config.json (AutoGPTQ); nullopt when the
// checkpoint is not quantized. Another quant_method (awq, bitsandbytes...) is refused by name.
std::optional<GptqConfig> read_gptq_config(const std::string& dir, const nlohmann::json& config);

// One linear's qweight/qzeros/scales/g_idx (g_idx absent: i / group) checked against cfg; errors
// name `file` and the tensor.
struct GptqTensorsIn {
  const SafeTensor* qweight = nullptr;
  const SafeTensor* qzeros = nullptr;
  const SafeTensor* scales = nullptr;
  const SafeTensor* g_idx = nullptr;
};
GptqPacked gather_gptq(const GptqTensorsIn& t, const GptqConfig& cfg, const std::string& file, const std::string& prefix);

}  // namespace quant
