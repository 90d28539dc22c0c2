// Llama models to and from GGUF, as llama.cpp names and lays them out.
#pragma once

#include <functional>
#include <map>
#include <string>

#include "quant/formats/loader.h"
#include "quant/policy.h"
#include "quant/quantize.h"

namespace quant {

struct GgufExportInfo {
  std::string method = "rtn";  // recorded as quant.method
  std::string name;            // general.name
  std::map<std::string, std::string> extra;  // more quant.* keys (JSON strings: recipe, calibration)
  std::function<void(size_t done, size_t total, const std::string& tensor)> progress;
};

// Writes the tensors of `src` (its plans, one per tensor, in GGUF order), each packed into its
// plan's stored type, with `model`'s config and vocabulary, to `path` atomically. attn_q / attn_k
// rows go from rotate-half to ggml's interleaved pairs.
void write_gguf_model(const LoadedModel& model, const Policy& policy, TensorSource& src, const std::string& path,
                      const GgufExportInfo& info);
// The size write_gguf_model would give that file, header and padding included, from the plans
// alone (nothing is quantized).
uint64_t gguf_model_file_bytes(const LoadedModel& model, const Policy& policy, const std::vector<TensorPlan>& plans,
                               const GgufExportInfo& info);

class GgufFile;
// The SentencePiece vocabulary stored in tokenizer.ggml.* (model "llama").
Vocab read_gguf_vocab(const GgufFile& f);

// llama.cpp's general.file_type: the preset's, else that of the last rule's (the default) type.
uint32_t gguf_file_type(const Policy& policy);

}  // namespace quant
