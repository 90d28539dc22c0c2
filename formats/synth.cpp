// Random-weight Hugging Face checkpoints of today's model shapes (see synth.h).
#include "quant/formats/synth.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "quant/error.h"
#include "quant/formats/loader.h"
#include "quant/formats/mmap.h"
#include "quant/formats/safetensors.h"
#include "quant/half.h"

namespace quant {

namespace fs = std::filesystem;

namespace {

SynthShape shape(std::string name, Arch arch, int64_t dim, int64_t hidden, int64_t layers, int64_t heads, int64_t kv,
                 int64_t vocab, int64_t ctx, float theta, float eps, bool tied) {
  SynthShape s;
  s.name = std::move(name);
  LlamaConfig& c = s.cfg;
  c.arch = arch, c.dim = dim, c.hidden = hidden, c.n_layers = layers, c.n_heads = heads, c.n_kv_heads = kv;
  c.vocab = vocab, c.max_ctx = ctx, c.rope_theta = theta, c.norm_eps = eps, c.tied_embeddings = tied;
  c.qkv_bias = arch == Arch::Qwen2;
  return s;
}

SynthShape llama3(std::string name, int64_t dim, int64_t hidden, int64_t layers, int64_t heads, bool tied, float factor) {
  SynthShape s = shape(std::move(name), Arch::Llama, dim, hidden, layers, heads, 8, 128256, 131072, 500000.0f, 1e-5f, tied);
  s.rope_factor = factor, s.rope_low = 1.0f, s.rope_high = 4.0f, s.rope_original_ctx = 8192;
  s.cfg.set_llama3_rope_scaling(factor, 1.0f, 4.0f, 8192);
  s.cfg.bos_id = 128000, s.cfg.eos_id = 128001;
  return s;
}

// One row of N(0, std) approximations from its own stream (splitmix64 of seed, tensor, row), so
// rows can be made in any order on any thread. Irwin-Hall of 4 uniforms: mean 0, variance 1.
void fill_row(uint64_t seed, uint64_t tensor, uint64_t row, float std, float offset, float* out, int64_t n) {
  uint64_t s = seed * 0x9E3779B97F4A7C15ull ^ (tensor << 32) ^ row;
  auto next = [&s] {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  };
  const float k = std * std::sqrt(3.0f) / 65536.0f;  // a uniform on [0, 65536) has variance 65536² / 12
  for (int64_t i = 0; i < n; ++i) {
    const uint64_t r = next();
    const int32_t sum = static_cast<int32_t>(r & 0xFFFF) + static_cast<int32_t>((r >> 16) & 0xFFFF) +
                        static_cast<int32_t>((r >> 32) & 0xFFFF) + static_cast<int32_t>(r >> 48) - 2 * 65536;
    out[i] = offset + k * static_cast<float>(sum);
  }
}

void encode_row(const float* x, int64_t n, TType t, uint8_t* out) {
  if (t == TType::F32) {
    std::memcpy(out, x, static_cast<size_t>(n) * 4);
    return;
  }
  auto* h = reinterpret_cast<uint16_t*>(out);
  for (int64_t i = 0; i < n; ++i) h[i] = t == TType::F16 ? f32_to_fp16(x[i]) : f32_to_bf16(x[i]);
}

void copy_tokenizer(const std::string& from, const std::string& dir) {
  QUANT_CHECK(fs::exists(from), "--tokenizer {}: no such file or directory", from);
  if (!fs::is_directory(from)) {
    fs::copy_file(from, fs::path(dir) / "tokenizer.model", fs::copy_options::overwrite_existing);
    return;
  }
  int copied = 0;
  for (const char* f : {"tokenizer.model", "tokenizer.json", "tokenizer_config.json"})
    if (fs::exists(fs::path(from) / f)) {
      fs::copy_file(fs::path(from) / f, fs::path(dir) / f, fs::copy_options::overwrite_existing);
      ++copied;
    }
  QUANT_CHECK(copied > 0, "--tokenizer {}: holds neither tokenizer.model nor tokenizer.json", from);
}

}  // namespace

const std::vector<SynthShape>& synth_shapes() {
  static const std::vector<SynthShape> shapes = [] {
    std::vector<SynthShape> v;
    v.push_back(shape("tinyllama-1.1b", Arch::Llama, 2048, 5632, 22, 32, 4, 32000, 2048, 10000.0f, 1e-5f, false));
    v.push_back(shape("llama-2-7b", Arch::Llama, 4096, 11008, 32, 32, 32, 32000, 4096, 10000.0f, 1e-5f, false));
    v.push_back(shape("llama-2-70b", Arch::Llama, 8192, 28672, 80, 64, 8, 32000, 4096, 10000.0f, 1e-5f, false));
    v.push_back(llama3("llama-3.2-1b", 2048, 8192, 16, 32, true, 32.0f));
    v.push_back(llama3("llama-3.2-3b", 3072, 8192, 28, 24, true, 32.0f));
    v.push_back(llama3("llama-3.1-8b", 4096, 14336, 32, 32, false, 8.0f));
    v.push_back(llama3("llama-3.1-70b", 8192, 28672, 80, 64, false, 8.0f));
    v.push_back(shape("qwen2.5-0.5b", Arch::Qwen2, 896, 4864, 24, 14, 2, 151936, 32768, 1e6f, 1e-6f, true));
    v.push_back(shape("qwen2.5-7b", Arch::Qwen2, 3584, 18944, 28, 28, 4, 152064, 32768, 1e6f, 1e-6f, false));
    SynthShape m = shape("mistral-7b", Arch::Mistral, 4096, 14336, 32, 32, 8, 32000, 32768, 10000.0f, 1e-5f, false);
    m.cfg.sliding_window = 4096;
    v.push_back(m);
    for (auto& s : v)
      if (s.cfg.arch == Arch::Qwen2) s.cfg.bos_id = 151643, s.cfg.eos_id = 151643;
    return v;
  }();
  return shapes;
}

const SynthShape& synth_shape(const std::string& name) {
  std::string known;
  for (const auto& s : synth_shapes()) {
    if (s.name == name) return s;
    known += (known.empty() ? "" : ", ") + s.name;
  }
  fail("unknown shape {} (known: {})", name, known);
}

nlohmann::json synth_hf_config(const SynthShape& s) {
  const LlamaConfig& c = s.cfg;
  const char* type = c.arch == Arch::Qwen2 ? "qwen2" : c.arch == Arch::Mistral ? "mistral" : "llama";
  nlohmann::json j = {{"architectures", {arch_hf_name(c.arch)}}, {"model_type", type}, {"hidden_size", c.dim},
                      {"intermediate_size", c.hidden}, {"num_hidden_layers", c.n_layers}, {"num_attention_heads", c.n_heads},
                      {"num_key_value_heads", c.n_kv_heads}, {"vocab_size", c.vocab}, {"rms_norm_eps", c.norm_eps},
                      {"rope_theta", c.rope_theta}, {"max_position_embeddings", c.max_ctx},
                      {"tie_word_embeddings", c.tied_embeddings}, {"hidden_act", "silu"}, {"bos_token_id", c.bos_id},
                      {"eos_token_id", c.eos_id}, {"torch_dtype", "float16"}, {"initializer_range", 0.02}};
  if (c.arch == Arch::Llama) j["attention_bias"] = false, j["mlp_bias"] = false;
  if (c.arch == Arch::Mistral) j["sliding_window"] = c.sliding_window;
  if (c.arch == Arch::Qwen2) j["use_sliding_window"] = false;
  if (s.rope_factor > 0)
    j["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", s.rope_factor}, {"low_freq_factor", s.rope_low},
                         {"high_freq_factor", s.rope_high}, {"original_max_position_embeddings", s.rope_original_ctx}};
  return j;
}

int64_t write_synth_checkpoint(const SynthShape& s, const std::string& dir, const SynthOptions& o) {
  QUANT_CHECK(o.dtype == TType::F16 || o.dtype == TType::BF16 || o.dtype == TType::F32, "synthetic checkpoints are F16, BF16 or F32");
  s.cfg.validate(s.name);
  fs::create_directories(dir);
  const std::vector<TensorDesc> layout = llama_tensor_layout(s.cfg);
  const int64_t esize = o.dtype == TType::F32 ? 4 : 2;
  // Shards in layout order, each closed once it passes shard_mb.
  std::vector<std::vector<size_t>> shards(1);
  int64_t in_shard = 0, total = 0;
  for (size_t i = 0; i < layout.size(); ++i) {
    const int64_t b = layout[i].numel() * esize;
    if (o.shard_mb > 0 && in_shard > 0 && in_shard + b > o.shard_mb * (1ll << 20)) shards.emplace_back(), in_shard = 0;
    shards.back().push_back(i);
    in_shard += b, total += b;
  }
  const size_t n = shards.size();
  auto shard_name = [n](size_t k) {
    return n == 1 ? std::string("model.safetensors") : fmt::format("model-{:05d}-of-{:05d}.safetensors", k + 1, n);
  };
  nlohmann::json weight_map = nlohmann::json::object();
  int64_t done = 0;
  for (size_t k = 0; k < n; ++k) {
    std::vector<SafeTensorDecl> decls;
    for (size_t i : shards[k]) {
      const TensorDesc& t = layout[i];
      const std::string hf = hf_tensor_name(t.name);
      decls.push_back({hf, o.dtype, t.n_dims == 1 ? std::vector<int64_t>{t.cols} : std::vector<int64_t>{t.rows, t.cols}});
      weight_map[hf] = shard_name(k);
    }
    SafetensorsWriter w((fs::path(dir) / shard_name(k)).string(), decls, {{"format", "pt"}});
    for (size_t i : shards[k]) {
      const TensorDesc& t = layout[i];
      if (o.header_only) {  // a hole of the tensor's size: shapes, no data
        w.skip(hf_tensor_name(t.name), static_cast<uint64_t>(t.numel() * esize));
        if (o.progress) o.progress(++done, static_cast<int64_t>(layout.size()));
        continue;
      }
      const bool norm = t.name.find("norm.weight") != std::string::npos;
      std::vector<uint8_t> bytes(static_cast<size_t>(t.numel() * esize));
#pragma omp parallel
      {
        std::vector<float> row(static_cast<size_t>(t.cols));
#pragma omp for schedule(static)
        for (int64_t r = 0; r < t.rows; ++r) {
          fill_row(o.seed, i, static_cast<uint64_t>(r), norm ? 0.0f : o.std, norm ? 1.0f : 0.0f, row.data(), t.cols);
          encode_row(row.data(), t.cols, o.dtype, bytes.data() + r * t.cols * esize);
        }
      }
      w.write(hf_tensor_name(t.name), bytes.data(), bytes.size());
      if (o.progress) o.progress(++done, static_cast<int64_t>(layout.size()));
    }
    w.commit();
  }
  if (n > 1) {
    AtomicFile f((fs::path(dir) / "model.safetensors.index.json").string());
    const std::string text = nlohmann::json{{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}}.dump(2) + "\n";
    f.write(text.data(), text.size());
    f.commit();
  }
  if (!o.tokenizer.empty()) copy_tokenizer(o.tokenizer, dir);
  AtomicFile cf((fs::path(dir) / "config.json").string());
  const std::string text = synth_hf_config(s).dump(2) + "\n";
  cf.write(text.data(), text.size());
  cf.commit();
  return total;
}

}  // namespace quant
