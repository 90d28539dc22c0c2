// Hugging Face Llama checkpoints: config.json + model.safetensors (or shards with an index).
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>

#include "quant/formats/loader.h"
#include "quant/formats/safetensors.h"

namespace quant {

namespace fs = std::filesystem;

namespace {

// HF name -> canonical (GGUF) name; empty for tensors we skip.
std::string canonical_name(const std::string& hf) {
  static const std::regex layer(R"(model\.layers\.(\d+)\.(.+))");
  static const std::map<std::string, std::string> per_layer = {
      {"self_attn.q_proj.weight", "attn_q.weight"},   {"self_attn.k_proj.weight", "attn_k.weight"},
      {"self_attn.v_proj.weight", "attn_v.weight"},   {"self_attn.o_proj.weight", "attn_output.weight"},
      {"self_attn.q_proj.bias", "attn_q.bias"},       {"self_attn.k_proj.bias", "attn_k.bias"},
      {"self_attn.v_proj.bias", "attn_v.bias"},       {"mlp.gate_proj.weight", "ffn_gate.weight"},
      {"mlp.up_proj.weight", "ffn_up.weight"},        {"mlp.down_proj.weight", "ffn_down.weight"},
      {"input_layernorm.weight", "attn_norm.weight"}, {"post_attention_layernorm.weight", "ffn_norm.weight"},
      {"self_attn.rotary_emb.inv_freq", ""}};
  if (hf == "model.embed_tokens.weight") return "token_embd.weight";
  if (hf == "model.norm.weight") return "output_norm.weight";
  if (hf == "lm_head.weight") return "output.weight";
  std::smatch m;
  if (std::regex_match(hf, m, layer)) {
    auto it = per_layer.find(m[2]);
    if (it != per_layer.end()) return it->second.empty() ? "" : "blk." + m[1].str() + "." + it->second;
  }
  return "?";
}

class HfWeightStore final : public WeightStore {
 public:
  HfWeightStore(std::string dir, const LlamaConfig& cfg, std::vector<std::string> shard_paths) : dir_(std::move(dir)) {
    for (const auto& p : shard_paths) shards_.push_back(std::make_unique<SafetensorsFile>(p));
    for (const auto& shard : shards_) {
      for (const auto& [name, t] : shard->tensors()) {
        std::string canon = canonical_name(name);
        QUANT_CHECK(canon != "?", "{}: unexpected tensor {} for {}", shard->path(), name, arch_hf_name(cfg.arch));
        if (canon.empty()) continue;
        if (canon == "output.weight" && cfg.tied_embeddings) continue;  // tied: lm_head duplicates embed
        QUANT_CHECK(t.shape.size() == 1 || t.shape.size() == 2, "{}: tensor {} has {} dims", shard->path(), name,
                    t.shape.size());
        TensorDesc d{canon, t.shape.size() == 2 ? t.shape[0] : 1, t.shape.back(), static_cast<int>(t.shape.size()),
                     t.dtype};
        QUANT_CHECK(!find(canon), "{}: tensor {} appears twice", shard->path(), name);
        descs_.push_back(d);
        raw_.emplace(canon, &t);
      }
    }
  }
  const std::vector<TensorDesc>& tensors() const override { return descs_; }
  std::string source() const override { return dir_; }
  void read_f32(const TensorDesc& t, float* out) const override {
    const SafeTensor& s = *raw_.at(t.name);
    dequantize_row(s.dtype, s.data, out, t.numel());
  }

 private:
  std::string dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> shards_;
  std::vector<TensorDesc> descs_;
  std::map<std::string, const SafeTensor*> raw_;
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
    return rs[k].get<double>();
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
  auto opt = [&](const char* k, auto dflt) {
    if (!j.contains(k) || j[k].is_null()) return dflt;
    try {
      return j[k].get<decltype(dflt)>();
    } catch (const std::exception&) {
      fail("{}: field {} has the wrong type", path, k);
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

LoadedModel load_hf(const std::string& dir) {
  LoadedModel m;
  m.path = dir;
  m.format = "hf";
  m.config = parse_hf_config((fs::path(dir) / "config.json").string());
  std::vector<std::string> shards;
  const fs::path single = fs::path(dir) / "model.safetensors";
  const fs::path index = fs::path(dir) / "model.safetensors.index.json";
  if (fs::exists(single)) {
    shards.push_back(single.string());
  } else if (fs::exists(index)) {
    const nlohmann::json j = read_json_file(index.string());
    QUANT_CHECK(j.contains("weight_map") && j["weight_map"].is_object(), "{}: missing field weight_map",
                index.string());
    std::set<std::string> files;
    for (const auto& [k, v] : j["weight_map"].items()) {
      QUANT_CHECK(v.is_string(), "{}: weight_map[{}] is not a file name", index.string(), k);
      const std::string f = v.get<std::string>();
      QUANT_CHECK(f.find('/') == std::string::npos && f.find("..") == std::string::npos,
                  "{}: weight_map[{}] = {} leaves the directory", index.string(), k, f);
      files.insert(f);
    }
    for (const auto& f : files) shards.push_back((fs::path(dir) / f).string());
  } else {
    fail("{}: neither model.safetensors nor model.safetensors.index.json", dir);
  }
  m.weights = std::make_unique<HfWeightStore>(dir, m.config, shards);
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
  return m;
}

}  // namespace quant
