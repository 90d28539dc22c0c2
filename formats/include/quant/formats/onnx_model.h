// Llama models to ONNX (a complete decoder graph whose linears are com.microsoft MatMulNBits),
// and back: our runtime reads the initializers of the files it wrote.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "quant/formats/loader.h"
#include "quant/nbits.h"
#include "quant/policy.h"
#include "quant/quantize.h"

namespace quant {

// ONNX and ONNX Runtime versions the exporter targets (docs/formats.md).
inline constexpr int64_t kOnnxIrVersion = 8;     // ONNX 1.10+ readers; Debian's onnx 1.12 checks it
inline constexpr int64_t kOnnxOpset = 17;        // ai.onnx; ONNX Runtime 1.30 runs opsets 7..23
inline constexpr int64_t kOnnxMsOpset = 1;       // com.microsoft (MatMulNBits)

// How one tensor is stored in the ONNX file.
struct OnnxStorage {
  enum class Kind { F32, F16, NBits } kind = Kind::F32;
  int bits = 0;        // NBits: 4 or 8
  int64_t block = 0;   // NBits: block_size
  std::string str() const;  // "F32", "F16", "MatMulNBits 4b b32"
};

// Decides the ONNX storage of every plan, updating its note, stored_as and stored_bpw. Throws
// with the reason for what MatMulNBits cannot hold (per-channel groups, Q4_1/Q5_1's float mins).
// Embeddings stay float (the graph gathers rows of it); vectors F32.
std::vector<OnnxStorage> resolve_onnx_storage(std::vector<TensorPlan>& plans);

struct OnnxExportInfo {
  std::string method = "rtn";
  std::string name;
  int accuracy_level = 0;       // MatMulNBits accuracy_level: 0 (fp32 math) or 4 (int8 activations)
  bool external_data = false;   // weights in <file>.data beside the model (forced above 2 GB)
  bool force = false;           // write into a directory that already holds files
  std::map<std::string, std::string> extra;  // more quant.* metadata (JSON strings)
  std::function<void(size_t done, size_t total, const std::string& tensor)> progress;
};

struct OnnxExportResult {
  std::vector<std::string> files;  // written, model first
  uint64_t bytes = 0;              // all files together
  bool external = false;
};

// Writes the tensors of `src` (plans resolved by resolve_onnx_storage), grids packed for
// MatMulNBits, with `model`'s config and vocabulary, to `path` (its directory is created;
// refused when it exists and holds files unless info.force). Nothing is left behind on failure.
OnnxExportResult write_onnx_model(const LoadedModel& model, const Policy& policy, TensorSource& src, const std::string& path,
                                  const OnnxExportInfo& info);

// Reads an ONNX file this exporter wrote (config, vocabulary and weights from it).
LoadedModel load_onnx(const std::string& path);

// What `quant inspect` shows of an ONNX file: metadata, operators, per-tensor storage.
std::string inspect_onnx_json(const std::string& path);

}  // namespace quant
