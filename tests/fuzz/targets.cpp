// Fuzz target bodies: each reader, then everything a caller would do next with what it accepted
// (every tensor decoded, every tokenizer piece touched), so a header that passes validation but
// lies about its data is caught there.
#include "targets.h"

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <stdexcept>

#include "quant/error.h"
#include "quant/formats/gguf.h"
#include "quant/formats/imatrix.h"
#include "quant/formats/loader.h"
#include "quant/formats/onnx_model.h"
#include "quant/formats/torch_bin.h"
#include "quant/tokenizer.h"
#include "quant/bitplan.h"
#include "quant/calibration/stats_dir.h"
#include "quant/calibration/sweep.h"
#include "quant/formats/safetensors.h"
#include "quant/policy.h"
#include "quant/qtype.h"

namespace qfuzz {

namespace {

// A sum the optimizer cannot drop, so every decoded value is really read.
volatile double g_sink = 0;

void read_all_weights(const quant::LoadedModel& m) {
  std::vector<float> buf;
  for (const auto& t : m.weights->tensors()) {
    buf.resize(static_cast<size_t>(t.numel()));
    try {
      m.weights->read_f32(t, buf.data());
    } catch (const quant::Error&) {
      continue;  // a refused tensor is fine; the others are still read
    }
    double s = 0;
    for (float v : buf) s += std::isfinite(v) ? v : 0;
    g_sink = g_sink + s;
  }
  for (int64_t i = 0; i < m.tokenizer->size(); ++i) g_sink = g_sink + static_cast<double>(m.tokenizer->vocab().pieces[static_cast<size_t>(i)].size());
}

void gguf(const std::string& path) { read_all_weights(quant::load_gguf(path)); }

void gguf_file(const std::string& path) {
  const quant::GgufFile f(path);
  for (const auto& t : f.tensors()) {  // the validator promised every tensor's bytes: decode them all
    int64_t n = 1;
    for (int64_t d : t.ne) n *= d;
    std::vector<float> v(static_cast<size_t>(n));
    quant::dequantize_row(t.type, t.data, v.data(), n);
    g_sink = g_sink + (v.empty() ? 0.0 : v.back());
  }
}

// Every tensor of a safetensors or torch .bin file decoded per its shape.
void decode_all(const quant::TensorFile& f) {
  for (const auto& [name, t] : f.tensors()) {
    int64_t n = 1;
    for (int64_t d : t.shape) n *= d;
    std::vector<float> v(static_cast<size_t>(n));
    quant::dequantize_row(t.dtype, t.data, v.data(), n);
    g_sink = g_sink + (v.empty() ? 0.0 : v.back());
  }
}

void safetensors(const std::string& path) { decode_all(quant::SafetensorsFile(path)); }

void config(const std::string& path) { g_sink = g_sink + static_cast<double>(quant::parse_hf_config(path).n_layers); }

void imatrix(const std::string& path) {
  const quant::Imatrix im = quant::read_imatrix(path);
  for (const auto& [name, e] : im.entries) g_sink = g_sink + static_cast<double>(e.sums.size());
}

void llama2c(const std::string& path) {
  // The checkpoint alone: no tokenizer.bin lies beside the scratch file, so the reader validates
  // the header and the weights' layout against the file size, then stops at the tokenizer.
  read_all_weights(quant::load_llama2c(path, (std::filesystem::path(path).parent_path() / "tokenizer.bin").string()));
}

void llama2c_tokenizer(const std::string& path) {
  const quant::Vocab v = quant::read_llama2c_tokenizer(path, 512);
  g_sink = g_sink + static_cast<double>(v.pieces.size());
}

// The JSON files a user hands to convert / plan / compare: policy, plan, sweep.
void policy(const std::string& path) {
  const quant::Policy p = quant::Policy::from_json(quant::read_json_file(path), path);
  g_sink = g_sink + static_cast<double>(p.rules.size());
}

void bitplan(const std::string& path) {
  const quant::BitPlan p = quant::BitPlan::from_json(quant::read_json_file(path), path);
  g_sink = g_sink + static_cast<double>(p.dominant().str().size());
}

void sweep(const std::string& path) {
  const quant::Sweep s = quant::Sweep::from_json(quant::read_json_file(path), path);
  g_sink = g_sink + static_cast<double>(s.units.size());
}

// tokenizer.json: the BPE model, merges, added tokens and pre-tokenizer regex, then a text that
// touches each path of the pre-tokenizer (letters, digits, punctuation, spaces, newlines, CJK, an
// added token) encoded and every id decoded.
void tokenizer_json(const std::string& path) {
  const std::string dir = std::filesystem::path(path).parent_path().string();
  quant::Vocab v = quant::read_hf_tokenizer(dir, 1 << 16);
  const auto tok = quant::make_tokenizer(std::move(v));
  const auto ids = tok->encode("Hello, world! It's 2026: 12345 caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac\n\n  <|eot|>\tend", true);
  int32_t prev = -1;
  for (int32_t id : ids) {
    g_sink = g_sink + static_cast<double>(tok->decode(prev, id).size());
    prev = id;
  }
}

// pytorch_model.bin: the zip, the restricted unpickler, every tensor decoded.
void torch_bin(const std::string& path) { decode_all(quant::TorchBinFile(path)); }

// model.safetensors.index.json: the shard names it lists (none may leave the directory).
void st_index(const std::string& path) {
  for (const auto& f : quant::checkpoint_files(std::filesystem::path(path).parent_path().string()))
    g_sink = g_sink + static_cast<double>(f.size());
}

// model.onnx: the protobuf, our metadata (config, vocabulary), every MatMulNBits weight decoded.
void onnx(const std::string& path) { read_all_weights(quant::load_onnx(path)); }

// A statistics directory's manifest.json, checked against the bundled model's dimensions (its
// block files, safetensors, have their own target), then a statistic read.
void stats(const std::string& path) {
  quant::LlamaConfig c;
  c.dim = 256;
  c.hidden = 768;
  c.n_layers = 6;
  c.n_heads = 8;
  c.n_kv_heads = 4;
  c.vocab = 8192;
  c.max_ctx = 512;
  const quant::StatsDir d(std::filesystem::path(path).parent_path().string(), c);
  g_sink = g_sink + static_cast<double>(d.calibration_json().size());
  g_sink = g_sink + d.mean_abs(0, quant::Tap::AttnIn).front();
}

}  // namespace

const std::vector<Target>& targets() {
  static const std::vector<Target> t = {
      {"gguf", "model.gguf", gguf},
      {"gguf_file", "file.gguf", gguf_file},
      {"safetensors", "model.safetensors", safetensors},
      {"config", "config.json", config},
      {"imatrix", "imatrix.gguf", imatrix},
      {"llama2c", "model.bin", llama2c},
      {"llama2c_tokenizer", "tokenizer.bin", llama2c_tokenizer},
      {"policy", "policy.json", policy},
      {"bitplan", "plan.json", bitplan},
      {"sweep", "sweep.json", sweep},
      {"tokenizer_json", "tokenizer.json", tokenizer_json},
      {"torch_bin", "pytorch_model.bin", torch_bin},
      {"st_index", "model.safetensors.index.json", st_index},
      {"onnx", "model.onnx", onnx},
      {"stats", "manifest.json", stats},
  };
  return t;
}

const Target& target(const std::string& name) {
  for (const auto& t : targets())
    if (name == t.name) return t;
  throw std::invalid_argument("no fuzz target " + name);
}

bool run_bytes(const Target& t, const uint8_t* data, size_t size) {
  namespace fs = std::filesystem;
  static const fs::path dir = [] {
    fs::path d = fs::temp_directory_path() / ("qfuzz-" + std::to_string(::getpid()));
    fs::create_directories(d);
    return d;
  }();
  // A directory per target: the readers that take a directory (tokenizer.json, the shard index)
  // see only their own file there.
  static std::map<std::string, fs::path> dirs;
  auto [it, fresh] = dirs.try_emplace(t.name, dir / t.name);
  if (fresh) fs::create_directories(it->second);
  const std::string path = (it->second / t.file_name).string();
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }
  try {
    t.read(path);
    return true;
  } catch (const quant::Error&) {
    return false;
  }
}

}  // namespace qfuzz
