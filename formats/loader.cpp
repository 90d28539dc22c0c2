// load_model: dispatch on what the path is.
#include <filesystem>

#include "quant/formats/loader.h"
#include "quant/formats/onnx_model.h"
#include "quant/formats/mmap.h"

namespace quant {

namespace {
// The first bytes as text where printable, else as hex: "GGUX", "0x00 0x01 0x02 0x03".
std::string printable_magic(const std::string& m) {
  bool text = !m.empty();
  for (char c : m) text = text && c >= 0x20 && c < 0x7f;
  if (text) return "\"" + m + "\"";
  std::string out;
  for (char c : m) out += fmt::format("{}0x{:02x}", out.empty() ? "" : " ", static_cast<uint8_t>(c));
  return out.empty() ? "(empty file)" : out;
}
}  // namespace

LoadedModel load_model(const std::string& path, const LoadOptions& opts) {
  namespace fs = std::filesystem;
  QUANT_CHECK(fs::exists(path), "{}: no such file or directory", path);
  if (fs::is_directory(path)) {
    // A directory written by `quant convert --format onnx` holds model.onnx and no config.json.
    if (!fs::exists(fs::path(path) / "config.json") && fs::exists(fs::path(path) / "model.onnx"))
      return load_onnx((fs::path(path) / "model.onnx").string());
    return load_hf(path);
  }
  const std::string ext = fs::path(path).extension().string();
  if (ext == ".onnx") return load_onnx(path);
  QUANT_CHECK(ext != ".safetensors" && ext != ".json" && ext != ".model",
              "{}: a file of a Hugging Face checkpoint: give its directory", path);
  // By magic, never by falling through: a file named .gguf is read as GGUF (which names a bad
  // magic), GGUF magic is GGUF whatever the name, and anything else must have llama.2c's layout.
  std::string magic;
  {
    MappedFile f(path);
    magic.assign(reinterpret_cast<const char*>(f.data()), std::min<uint64_t>(f.size(), 4));
  }
  if (magic == "GGUF" || ext == ".gguf") return load_gguf(path);
  try {
    return load_llama2c(path, opts.tokenizer_path);
  } catch (const Error& e) {
    fail("{}: not a model file we read: no GGUF magic (first bytes {}), not a llama2.c checkpoint ({})", path,
         printable_magic(magic), e.what());
  }
}

}  // namespace quant
