// load_model: dispatch on what the path is.
#include <filesystem>

#include "quant/formats/loader.h"
#include "quant/formats/onnx_model.h"
#include "quant/formats/mmap.h"

namespace quant {

LoadedModel load_model(const std::string& path, const LoadOptions& opts) {
  namespace fs = std::filesystem;
  QUANT_CHECK(fs::exists(path), "{}: no such file or directory", path);
  if (fs::is_directory(path)) {
    // A directory written by `quant convert --format onnx` holds model.onnx and no config.json.
    if (!fs::exists(fs::path(path) / "config.json") && fs::exists(fs::path(path) / "model.onnx"))
      return load_onnx((fs::path(path) / "model.onnx").string());
    return load_hf(path);
  }
  if (fs::path(path).extension() == ".onnx") return load_onnx(path);
  {
    MappedFile f(path);
    if (f.size() >= 4 && std::memcmp(f.data(), "GGUF", 4) == 0) return load_gguf(path);
  }
  return load_llama2c(path, opts.tokenizer_path);
}

}  // namespace quant
