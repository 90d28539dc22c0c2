// Our GPTQ/AWQ/RTN grids as a GPTQ-format Hugging Face checkpoint (quant_method "gptq", the
// layout in quant/gptq_format.h) that transformers, vLLM and GPTQModel load.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "quant/formats/loader.h"
#include "quant/gptq_format.h"
#include "quant/quantize.h"

namespace quant {

// The container's view of each plan: every quantized tensor must be one 2/3/4/8-bit integer grid
// (the same for all: quantization_config has one), its sides whole 32-bit words; float tensors
// keep their type. Throws naming the first tensor that cannot be held.
void resolve_gptq_storage(std::vector<TensorPlan>& plans);

struct GptqExportInfo {
  GptqZeros zeros = GptqZeros::V1;
  std::string method;     // recorded in quantization_config.meta
  double damp = 0.01;     // damp_percent
  std::map<std::string, std::string> extra;  // recorded in the safetensors metadata
  std::function<void(size_t done, size_t total, const std::string& tensor)> progress;
};

struct GptqExportResult {
  std::vector<std::string> files;
  uint64_t bytes = 0;
};

// Writes `dir` (which must not exist, or be empty): config.json (the source's, with
// quantization_config), model.safetensors (streamed: one tensor in memory at a time), and the
// source's tokenizer files. The source must be an HF directory. Nothing appears under `dir`
// unless everything was written.
GptqExportResult write_gptq_checkpoint(const LoadedModel& model, TensorSource& src, const std::string& dir,
                                       const GptqExportInfo& info);

}  // namespace quant
