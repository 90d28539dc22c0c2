// Hugging Face Llama checkpoints: config.json + model.safetensors (or shards with an index).
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>

#include "quant/formats/loader.h"
#include "quant/formats/mmap.h"
#include "quant/formats/safetensors.h"
#include "quant/formats/torch_bin.h"
#include "hf_gptq.h"

namespace quant {

namespace fs = std::filesystem;

namespace {

// HF's per-layer tensor names and ours (GGUF's), the one table both directions read.
const std::map<std::string, std::string>& per_layer_names() {
  static const std::map<std::string, std::string> m = {
      {"self_attn.q_proj.weight", "attn_q.weight"},   {"self_attn.k_proj.weight", "attn_k.weight"},
      {"self_attn.v_proj.weight", "attn_v.weight"},   {"self_attn.o_proj.weight", "attn_output.weight"},
      {"self_attn.q_proj.bias", "attn_q.bias"},       {"self_attn.k_proj.bias", "attn_k.bias"},
      {"self_attn.v_proj.bias", "attn_v.bias"},       {"mlp.gate_proj.weight", "ffn_gate.weight"},
      {"mlp.up_proj.weight", "ffn_up.weight"},        {"mlp.down_proj.weight", "ffn_down.weight"},
      {"input_layernorm.weight", "attn_norm.weight"}, {"post_attention_layernorm.weight", "ffn_norm.weight"},
      {"self_attn.rotary_emb.inv_freq", ""}};
  return m;
}
const std::map<std::string, std::string>& global_names() {
  static const std::map<std::string, std::string> m = {
      {"model.embed_tokens.weight", "token_embd.weight"}, {"model.norm.weight", "output_norm.weight"}, {"lm_head.weight", "output.weight"}};
  return m;
}

// HF name -> canonical (GGUF) name; empty for tensors we skip.
std::string canonical_name(const std::string& hf) {
  static const std::regex layer(R"(model\.layers\.(\d+)\.(.+))");
  if (auto it = global_names().find(hf); it != global_names().end()) return it->second;
  std::smatch m;
  if (std::regex_match(hf, m, layer)) {
    auto it = per_layer_names().find(m[2]);
    if (it != per_layer_names().end()) return it->second.empty() ? "" : "blk." + m[1].str() + "." + it->second;
  }
  return "?";
}

}  // namespace

std::string hf_tensor_name(const std::string& canonical) {
  static const std::regex layer(R"(blk\.(\d+)\.(.+))");
  for (const auto& [hf, ours] : global_names())
    if (ours == canonical) return hf;
  std::smatch m;
  if (std::regex_match(canonical, m, layer))
    for (const auto& [hf, ours] : per_layer_names())
      if (!ours.empty() && ours == m[2].str()) return "model.layers." + m[1].str() + "." + hf;
  fail("tensor {} has no Hugging Face name", canonical);
}

namespace {

class HfWeightStore final : public WeightStore {
 public:
  HfWeightStore(std::string dir, const LlamaConfig& cfg, const std::vector<std::string>& shard_paths,
                std::optional<GptqConfig> gptq)
      : dir_(std::move(dir)), gptq_(std::move(gptq)) {
    for (const auto& p : shard_paths) {
      if (fs::path(p).extension() == ".bin")
        shards_.push_back(std::make_unique<TorchBinFile>(p));
      else
        shards_.push_back(std::make_unique<SafetensorsFile>(p));
    }
    std::map<std::string, std::pair<const SafeTensor*, std::string>> all;  // HF name -> tensor, file
    for (const auto& shard : shards_)
      for (const auto& [name, t] : shard->tensors()) {
        QUANT_CHECK(!all.count(name), "{}: tensor {} appears twice", shard->path(), name);
        all.emplace(name, std::pair{&t, shard->path()});
      }
    if (gptq_) take_gptq(cfg, all);
    for (const auto& [name, entry] : all) {
      const auto& [t, file] = entry;
      std::string canon = canonical_name(name);
      QUANT_CHECK(canon != "?", "{}: unexpected tensor {} for {}", file, name, arch_hf_name(cfg.arch));
      if (canon.empty()) continue;
      if (canon == "output.weight" && cfg.tied_embeddings) continue;  // tied: lm_head duplicates embed
      QUANT_CHECK(t->shape.size() == 1 || t->shape.size() == 2, "{}: tensor {} has {} dims", file, name, t->shape.size());
      QUANT_CHECK(t->dtype == TType::F32 || t->dtype == TType::F16 || t->dtype == TType::BF16,
                  "{}: tensor {} is {}, not a float type", file, name, ttype_name(t->dtype));
      add({canon, t->shape.size() == 2 ? t->shape[0] : 1, t->shape.back(), static_cast<int>(t->shape.size()), t->dtype}, file,
          name);
      raw_.emplace(canon, t);
    }
  }
  const std::vector<TensorDesc>& tensors() const override { return descs_; }
  std::string source() const override { return dir_; }
  void read_f32(const TensorDesc& t, float* out) const override {
    if (auto g = gptq_linears_.find(t.name); g != gptq_linears_.end()) {
      unpack_gptq(g->second, gptq_->zeros).dequantize(out);
      return;
    }
    const SafeTensor& s = *raw_.at(t.name);
    dequantize_row(s.dtype, s.data, out, t.numel());
  }
  bool stored(const TensorDesc& t, StoredMatrix& out) const override {
    if (gptq_linears_.count(t.name) || t.n_dims != 2) return false;
    const SafeTensor& s = *raw_.at(t.name);
    out = StoredMatrix{s.dtype, t.rows, t.cols, s.data, row_bytes(s.dtype, t.cols), {}};
    return true;
  }
  bool read_grid(const TensorDesc& t, QuantWeight& out) const override {
    auto g = gptq_linears_.find(t.name);
    if (g == gptq_linears_.end()) return false;
    auto q = gptq_to_quant_weight(unpack_gptq(g->second, gptq_->zeros), gptq_->sym);
    if (!q) return false;
    out = std::move(*q);
    return true;
  }

 private:
  void add(const TensorDesc& d, const std::string& file, const std::string& name) {
    QUANT_CHECK(!find(d.name), "{}: tensor {} appears twice", file, name);
    descs_.push_back(d);
  }
  // Each <prefix>.qweight with its qzeros, scales and g_idx becomes one F32 linear <prefix>.weight,
  // dequantized when read; the packed words are copied now (a few bits per weight).
  void take_gptq(const LlamaConfig& cfg, std::map<std::string, std::pair<const SafeTensor*, std::string>>& all) {
    std::vector<std::string> prefixes;
    for (const auto& [name, e] : all)
      if (name.size() > 8 && name.ends_with(".qweight")) prefixes.push_back(name.substr(0, name.size() - 8));
    QUANT_CHECK(!prefixes.empty(), "{}: quantization_config says gptq but no tensor is a .qweight", gptq_->source);
    for (const auto& prefix : prefixes) {
      auto get = [&](const char* f) -> const SafeTensor* {
        auto it = all.find(prefix + f);
        return it == all.end() ? nullptr : it->second.first;
      };
      const std::string file = all.at(prefix + ".qweight").second;
      GptqPacked p = gather_gptq({get(".qweight"), get(".qzeros"), get(".scales"), get(".g_idx")}, *gptq_, file, prefix);
      const std::string canon = canonical_name(prefix + ".weight");
      QUANT_CHECK(canon != "?" && !canon.empty(), "{}: unexpected quantized tensor {} for {}", file, prefix, arch_hf_name(cfg.arch));
      for (const char* f : {".qweight", ".qzeros", ".scales", ".g_idx"}) all.erase(prefix + f);
      add({canon, p.out, p.in, 2, TType::F32}, file, prefix + ".qweight");
      gptq_linears_.emplace(canon, std::move(p));
    }
  }

  std::string dir_;
  std::optional<GptqConfig> gptq_;
  std::vector<std::unique_ptr<TensorFile>> shards_;
  std::vector<TensorDesc> descs_;
  std::map<std::string, const SafeTensor*> raw_;
  std::map<std::string, GptqPacked> gptq_linears_;
};

}  // namespace

namespace {

// rope_scaling: "llama3" (Llama 3.1-3.3) and "linear" become per-frequency factors; the other
// types (dynamic NTK, YaRN, LongRoPE) change more than the frequencies and are refused.
void parse_rope_scaling(const nlohmann::json& rs, const std::string& path, LlamaConfig& c) {
  QUANT_CHECK(rs.is_object(), "{}: rope_scaling is not an object", path);
  std::string type = "(none)";
  for (const char* k : {"rope_type", "type"})
    if (rs.contains(k) && rs[k].is_string()) type = rs[k].get<std::string>();
  auto num = [&](const char* k) -> double {
    QUANT_CHECK(rs.contains(k) && rs[k].is_number(), "{}: rope_scaling.{} is missing or not a number", path, k);
    const double v = rs[k].get<double>();
    QUANT_CHECK(std::isfinite(v) && std::fabs(v) <= 1e9, "{}: rope_scaling.{} = {} is out of range", path, k, rs[k].dump());
    return v;
  };
  if (type == "default") return;
  if (type == "llama3") {
    const double factor = num("factor"), low = num("low_freq_factor"), high = num("high_freq_factor");
    const double orig = num("original_max_position_embeddings");
    QUANT_CHECK(factor >= 1 && low > 0 && high > low && orig >= 1,
                "{}: rope_scaling (llama3) factor {} low_freq_factor {} high_freq_factor {} original_max_position_embeddings {} "
                "out of range", path, factor, low, high, orig);
    c.set_llama3_rope_scaling(static_cast<float>(factor), static_cast<float>(low), static_cast<float>(high),
                              static_cast<int64_t>(orig));
    return;
  }
  if (type == "linear") {
    const double factor = num("factor");
    QUANT_CHECK(factor > 0, "{}: rope_scaling.factor {} is not positive", path, factor);
    c.rope_freq_factors.assign(static_cast<size_t>(c.head_dim() / 2), static_cast<float>(factor));
    return;
  }
  fail("{}: rope_scaling.rope_type = {} is not supported (llama3, linear and default are)", path, type);
}

}  // namespace

nlohmann::json read_json_file(const std::string& path) {
  std::ifstream in(path);
  QUANT_CHECK(in, "{}: cannot open", path);
  note_input(path);
  try {
    return nlohmann::json::parse(in);
  } catch (const std::exception& e) {
    fail("{}: not valid JSON: {}", path, e.what());
  }
}

LlamaConfig parse_hf_config(const std::string& path) {
  const nlohmann::json j = read_json_file(path);
  QUANT_CHECK(j.is_object(), "{}: not a JSON object", path);
  std::string arch = "(none)";
  if (j.contains("architectures") && j["architectures"].is_array() && !j["architectures"].empty())
    arch = j["architectures"][0].is_string() ? j["architectures"][0].get<std::string>() : "(non-string)";
  LlamaConfig c;
  if (arch == "MistralForCausalLM")
    c.arch = Arch::Mistral;
  else if (arch == "Qwen2ForCausalLM")
    c.arch = Arch::Qwen2;
  else
    QUANT_CHECK(arch == "LlamaForCausalLM",
                "{}: architectures = {} is not supported (LlamaForCausalLM, MistralForCausalLM and Qwen2ForCausalLM are)",
                path, arch);
  auto get_int = [&](const char* k) -> int64_t {
    QUANT_CHECK(j.contains(k), "{}: missing field {}", path, k);
    QUANT_CHECK(j[k].is_number_integer(), "{}: field {} is not an integer", path, k);
    return j[k].get<int64_t>();
  };
  // A field of the default's type, or the default when absent. A number that does not fit the
  // type (a context length of 7e82, a float of 1e300) is refused, never cast.
  auto opt = [&](const char* k, auto dflt) {
    using T = decltype(dflt);
    if (!j.contains(k) || j[k].is_null()) return dflt;
    const nlohmann::json& v = j[k];
    if constexpr (std::is_same_v<T, bool>) {
      QUANT_CHECK(v.is_boolean(), "{}: field {} has the wrong type (a boolean)", path, k);
      return v.get<bool>();
    } else if constexpr (std::is_same_v<T, std::string>) {
      QUANT_CHECK(v.is_string(), "{}: field {} has the wrong type (a string)", path, k);
      return v.get<std::string>();
    } else if constexpr (std::is_integral_v<T>) {
      QUANT_CHECK(v.is_number_integer() && (!v.is_number_unsigned() || v.get<uint64_t>() <= uint64_t{INT64_MAX}),
                  "{}: field {} = {} is not an integer we can hold", path, k, v.dump());
      const int64_t x = v.get<int64_t>();
      QUANT_CHECK(x >= std::numeric_limits<T>::min() && x <= std::numeric_limits<T>::max(), "{}: field {} = {} is out of range", path,
                  k, x);
      return static_cast<T>(x);
    } else {
      QUANT_CHECK(v.is_number(), "{}: field {} has the wrong type (a number)", path, k);
      const double x = v.get<double>();
      QUANT_CHECK(std::isfinite(x) && std::fabs(x) <= std::numeric_limits<T>::max(), "{}: field {} = {} is out of range", path, k,
                  v.dump());
      return static_cast<T>(x);
    }
  };
  c.dim = get_int("hidden_size");
  c.hidden = get_int("intermediate_size");
  c.n_layers = get_int("num_hidden_layers");
  c.n_heads = get_int("num_attention_heads");
  c.n_kv_heads = j.contains("num_key_value_heads") ? get_int("num_key_value_heads") : c.n_heads;
  c.vocab = get_int("vocab_size");
  QUANT_CHECK(j.contains("rms_norm_eps"), "{}: missing field rms_norm_eps", path);
  c.norm_eps = opt("rms_norm_eps", 1e-5f);
  c.rope_theta = opt("rope_theta", 10000.0f);
  c.max_ctx = opt("max_position_embeddings", int64_t{2048});
  c.tied_embeddings = opt("tie_word_embeddings", false);
  c.qkv_bias = c.arch == Arch::Qwen2 || opt("attention_bias", false);  // Qwen2's q/k/v always carry one
  // Llama 3.1 lists several end-of-turn ids; the first is the end of text.
  auto first_id = [&](const char* k, int32_t dflt) -> int32_t {
    if (j.contains(k) && j[k].is_array() && !j[k].empty() && j[k][0].is_number_integer()) return j[k][0].get<int32_t>();
    return opt(k, dflt);
  };
  c.bos_id = first_id("bos_token_id", 1);
  c.eos_id = first_id("eos_token_id", 2);
  if (j.contains("bos_token_id") && j["bos_token_id"].is_null()) c.bos_id = c.eos_id;  // Qwen2 has no BOS
  const std::string act = opt("hidden_act", std::string("silu"));
  QUANT_CHECK(act == "silu", "{}: hidden_act = {} is not supported (silu is)", path, act);
  QUANT_CHECK(!opt("mlp_bias", false), "{}: mlp_bias = true is not supported", path);
  for (const char* moe : {"num_local_experts", "num_experts", "n_routed_experts"})
    QUANT_CHECK(!j.contains(moe) || j[moe].is_null() || j[moe] == 0, "{}: {} = {}: mixture-of-experts models are not supported",
                path, moe, j[moe].dump());
  if (j.contains("head_dim") && !j["head_dim"].is_null())
    QUANT_CHECK(get_int("head_dim") * c.n_heads == c.dim, "{}: head_dim {} * num_attention_heads != hidden_size",
                path, get_int("head_dim"));
  if (c.arch == Arch::Mistral) c.sliding_window = opt("sliding_window", int64_t{0});
  if (c.arch == Arch::Qwen2)
    QUANT_CHECK(!opt("use_sliding_window", false), "{}: use_sliding_window = true is not supported", path);
  c.validate(path);
  if (j.contains("rope_scaling") && !j["rope_scaling"].is_null()) parse_rope_scaling(j["rope_scaling"], path, c);
  return c;
}

std::vector<std::string> checkpoint_files(const std::string& dir) {
  // safetensors first (HF writes both for some models; they hold the same tensors).
  for (const char* stem : {"model.safetensors", "pytorch_model.bin"}) {
    const fs::path single = fs::path(dir) / stem;
    if (fs::exists(single)) return {single.string()};
    const fs::path index = fs::path(dir) / (std::string(stem) + ".index.json");
    if (!fs::exists(index)) continue;
    const nlohmann::json j = read_json_file(index.string());
    QUANT_CHECK(j.contains("weight_map") && j["weight_map"].is_object(), "{}: missing field weight_map", index.string());
    std::set<std::string> files;
    for (const auto& [k, v] : j["weight_map"].items()) {
      QUANT_CHECK(v.is_string(), "{}: weight_map[{}] is not a file name", index.string(), k);
      const std::string f = v.get<std::string>();
      QUANT_CHECK(f.find('/') == std::string::npos && f.find("..") == std::string::npos,
                  "{}: weight_map[{}] = {} leaves the directory", index.string(), k, f);
      files.insert(f);
    }
    std::vector<std::string> out;
    for (const auto& f : files) out.push_back((fs::path(dir) / f).string());
    return out;
  }
  fail("{}: no weights (model.safetensors, pytorch_model.bin, or a sharded index of either)", dir);
}

LoadedModel load_hf(const std::string& dir) {
  LoadedModel m;
  m.path = dir;
  m.format = "hf";
  m.config = parse_hf_config((fs::path(dir) / "config.json").string());
  const std::vector<std::string> shards = checkpoint_files(dir);
  const auto gptq = read_gptq_config(dir, read_json_file((fs::path(dir) / "config.json").string()));
  m.weights = std::make_unique<HfWeightStore>(dir, m.config, shards, gptq);
  check_tensors_match(m.config, *m.weights);
  // SentencePiece models (Llama 2, Mistral) ship tokenizer.model, often beside a tokenizer.json
  // of the same vocabulary; byte-level BPE models (Llama 3, Qwen2) ship only tokenizer.json.
  const fs::path spm = fs::path(dir) / "tokenizer.model";
  if (fs::exists(spm)) {
    m.tokenizer = load_sentencepiece(spm.string());
    QUANT_CHECK(m.tokenizer->size() == m.config.vocab, "{}: tokenizer has {} pieces but config.json vocab_size is {}",
                spm.string(), m.tokenizer->size(), m.config.vocab);
  } else {
    QUANT_CHECK(fs::exists(fs::path(dir) / "tokenizer.json"), "{}: neither tokenizer.model nor tokenizer.json", dir);
    m.tokenizer = make_tokenizer(read_hf_tokenizer(dir, m.config.vocab));
  }
  m.info["source"] = dir;
  m.info["shards"] = std::to_string(shards.size());
  if (gptq)
    m.info["quantization"] = fmt::format("gptq {}-bit group {} {}{} ({})", gptq->bits, gptq->group, gptq->sym ? "sym" : "asym",
                                         gptq->desc_act ? " desc_act" : "", gptq->zeros == GptqZeros::V1 ? "v1 zeros" : "v2 zeros");
  return m;
}

}  // namespace quant
