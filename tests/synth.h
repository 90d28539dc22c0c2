// Small random Llama checkpoints written by the tests, for what ../shared has no real example
// of: tied embeddings, qkv bias, BF16, F32, sharded files.
#pragma once

#include <map>
#include <nlohmann/json.hpp>

#include "common.h"
#include "quant/formats/safetensors.h"
#include "quant/half.h"
#include "quant/model.h"
#include "quant/tokenizer.h"

namespace qt {

struct Synth {
  quant::LlamaConfig cfg;
  std::map<std::string, std::pair<std::vector<int64_t>, std::vector<float>>> tensors;  // HF name -> (shape, data)
};

inline Synth make_synth(bool tied, bool bias, uint32_t seed, int64_t vocab = 8192) {
  Synth s;
  auto& c = s.cfg;
  c.dim = 64, c.hidden = 96, c.n_layers = 2, c.n_heads = 4, c.n_kv_heads = 2, c.vocab = vocab, c.max_ctx = 128;
  c.tied_embeddings = tied;
  c.qkv_bias = bias;
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 0.08f);
  auto add = [&](const std::string& name, std::vector<int64_t> shape, float offset = 0.0f) {
    int64_t n = 1;
    for (auto d : shape) n *= d;
    std::vector<float> v(static_cast<size_t>(n));
    for (auto& x : v) x = offset + nd(rng);
    s.tensors[name] = {shape, v};
  };
  const int64_t kv = c.kv_dim();
  add("model.embed_tokens.weight", {c.vocab, c.dim});
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    add(p + "input_layernorm.weight", {c.dim}, 1.0f);
    add(p + "post_attention_layernorm.weight", {c.dim}, 1.0f);
    add(p + "self_attn.q_proj.weight", {c.dim, c.dim});
    add(p + "self_attn.k_proj.weight", {kv, c.dim});
    add(p + "self_attn.v_proj.weight", {kv, c.dim});
    add(p + "self_attn.o_proj.weight", {c.dim, c.dim});
    if (bias) {
      add(p + "self_attn.q_proj.bias", {c.dim});
      add(p + "self_attn.k_proj.bias", {kv});
      add(p + "self_attn.v_proj.bias", {kv});
    }
    add(p + "mlp.gate_proj.weight", {c.hidden, c.dim});
    add(p + "mlp.up_proj.weight", {c.hidden, c.dim});
    add(p + "mlp.down_proj.weight", {c.dim, c.hidden});
  }
  add("model.norm.weight", {c.dim}, 1.0f);
  if (!tied) add("lm_head.weight", {c.vocab, c.dim});
  return s;
}

inline nlohmann::json synth_config(const quant::LlamaConfig& c) {
  return {{"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"}, {"hidden_size", c.dim},
          {"intermediate_size", c.hidden}, {"num_hidden_layers", c.n_layers}, {"num_attention_heads", c.n_heads},
          {"num_key_value_heads", c.n_kv_heads}, {"vocab_size", c.vocab}, {"rms_norm_eps", 1e-5},
          {"rope_theta", 10000.0}, {"max_position_embeddings", c.max_ctx}, {"tie_word_embeddings", c.tied_embeddings},
          {"attention_bias", c.qkv_bias}, {"hidden_act", "silu"}, {"bos_token_id", 1}, {"eos_token_id", 2}};
}

inline std::vector<uint8_t> encode_as(const std::vector<float>& v, quant::TType t) {
  std::vector<uint8_t> out(v.size() * (t == quant::TType::F32 ? 4 : 2));
  for (size_t i = 0; i < v.size(); ++i) {
    if (t == quant::TType::F32) {
      std::memcpy(out.data() + 4 * i, &v[i], 4);
    } else {
      const uint16_t h = t == quant::TType::F16 ? quant::f32_to_fp16(v[i]) : quant::f32_to_bf16(v[i]);
      std::memcpy(out.data() + 2 * i, &h, 2);
    }
  }
  return out;
}

// Writes an HF directory: config.json, the bundled tokenizer.model, and `shards` safetensors files.
inline void write_hf(const std::string& dir, const Synth& s, quant::TType dtype, int shards = 1,
                     nlohmann::json config = nullptr) {
  fs::create_directories(dir);
  write_file(dir + "/config.json", (config.is_null() ? synth_config(s.cfg) : config).dump(2));
  fs::copy_file(bundled_model() + "/tokenizer.model", dir + "/tokenizer.model", fs::copy_options::overwrite_existing);
  std::vector<std::vector<quant::SafeTensorOut>> parts(static_cast<size_t>(shards));
  nlohmann::json index = {{"metadata", nlohmann::json::object()}, {"weight_map", nlohmann::json::object()}};
  size_t k = 0;
  for (const auto& [name, t] : s.tensors) {
    const size_t part = k++ % static_cast<size_t>(shards);
    parts[part].push_back({name, dtype, t.first, encode_as(t.second, dtype)});
    index["weight_map"][name] = fmt::format("model-{:05d}-of-{:05d}.safetensors", part + 1, shards);
  }
  if (shards == 1) {
    quant::write_safetensors(dir + "/model.safetensors", parts[0]);
    return;
  }
  for (int p = 0; p < shards; ++p)
    quant::write_safetensors(dir + fmt::format("/model-{:05d}-of-{:05d}.safetensors", p + 1, shards), parts[static_cast<size_t>(p)]);
  write_file(dir + "/model.safetensors.index.json", index.dump(2));
}

// A random integer grid as GPTQ's quantizer makes one: codes in range, fp16 scales, integer zeros
// (2^(bits-1) when symmetric, else in [min_zero, 2^bits - 1]).
inline quant::QuantWeight random_int_grid(int64_t rows, int64_t cols, int bits, int64_t group, bool sym, uint32_t seed, int min_zero) {
  std::mt19937 rng(seed);
  const int maxq = (1 << bits) - 1;
  quant::QuantWeight q;
  q.rows = rows, q.cols = cols, q.bits = bits, q.group = group, q.sym = sym;
  for (int64_t i = 0; i < rows * cols; ++i) q.codes.push_back(static_cast<uint8_t>(std::uniform_int_distribution<int>(0, maxq)(rng)));
  for (int64_t i = 0; i < rows * q.n_groups(); ++i) {
    const float s = quant::fp16_to_f32(quant::f32_to_fp16(std::uniform_real_distribution<float>(1e-3f, 2e-2f)(rng)));
    const int z = sym ? 1 << (bits - 1) : std::uniform_int_distribution<int>(min_zero, maxq)(rng);
    q.scales.push_back(s);
    q.mins.push_back(-static_cast<float>(z) * s);
  }
  return q;
}

// --- Synthetic checkpoints of today's families: the real config.json fields and tokenizer files ---

struct Family {
  std::string name;
  quant::Arch arch;
  bool tied, bias;
  std::string pre;  // byte-level BPE pre-tokenizer of tokenizer.json; empty: the bundled tokenizer.model
  double rope_theta;
  bool llama3_scaling;     // rope_scaling {"rope_type": "llama3", ...} as Llama 3.1-3.3 ship it
  int64_t sliding_window;  // Mistral's
};

inline const std::vector<Family>& families() {
  static const std::vector<Family> f = {
      {"llama-3.2", quant::Arch::Llama, true, false, "llama-bpe", 500000.0, true, 0},
      {"qwen2.5", quant::Arch::Qwen2, true, true, "qwen2", 1000000.0, false, 0},
      {"mistral", quant::Arch::Mistral, false, false, "", 10000.0, false, 96},
  };
  return f;
}

// The gpt-2 vocabulary of ../shared as a tokenizer.json of the family's pre-tokenizer, with the
// added tokens and post-processor each family ships.
inline void write_bpe_tokenizer(const std::string& dir, const Family& fam, const quant::Vocab& v) {
  nlohmann::json vocab = nlohmann::json::object(), merges = nlohmann::json::array();
  for (int32_t i = 0; i < v.size(); ++i) vocab[v.pieces[static_cast<size_t>(i)]] = i;
  for (const auto& m : v.merges) merges.push_back(m);
  const std::string bos = fam.arch == quant::Arch::Qwen2 ? "<|im_start|>" : "<|begin_of_text|>";
  nlohmann::json added = {{{"id", v.size()}, {"content", bos}, {"special", true}},
                          {{"id", v.size() + 1}, {"content", "<|eot|>"}, {"special", true}}};
  nlohmann::json pre = {{"type", "Sequence"},
                        {"pretokenizers",
                         {{{"type", "Split"}, {"pattern", {{"Regex", quant::find_pre_tokenizer(fam.pre)->hf_pattern}}},
                           {"behavior", "Isolated"}, {"invert", false}},
                          {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}}}}};
  nlohmann::json j = {{"version", "1.0"}, {"added_tokens", added}, {"pre_tokenizer", pre},
                      {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}, {"ignore_merges", fam.pre == "llama-bpe"}}}};
  nlohmann::json cfg = {{"eos_token", "<|eot|>"}};
  if (fam.arch == quant::Arch::Qwen2) {
    cfg["bos_token"] = nullptr;
    cfg["add_bos_token"] = false;
  } else {  // Llama 3 adds <|begin_of_text|> in its post-processor
    cfg["bos_token"] = bos;
    j["post_processor"] = {{"type", "TemplateProcessing"}, {"single", {{{"SpecialToken", {{"id", bos}, {"type_id", 0}}}},
                                                                      {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}}};
  }
  write_file(dir + "/tokenizer.json", j.dump());
  write_file(dir + "/tokenizer_config.json", cfg.dump(2));
}

// A random checkpoint of `fam`: vocab_size is the tokenizer's rounded up (as Qwen2 pads it),
// weights large enough that the top logit stands out.
inline Synth make_family(const std::string& dir, const Family& fam, const quant::Vocab* bpe, uint32_t seed) {
  const int64_t vocab = bpe ? (bpe->size() + 2 + 63) / 64 * 64 : 8192;
  Synth s = make_synth(fam.tied, fam.bias, seed, vocab);
  for (auto& [name, t] : s.tensors)
    if (name.find("norm") == std::string::npos)
      for (auto& x : t.second) x *= 2.0f;
  nlohmann::json cfg = synth_config(s.cfg);
  cfg["architectures"] = {quant::arch_hf_name(fam.arch)};
  cfg["model_type"] = fam.arch == quant::Arch::Qwen2 ? "qwen2" : fam.arch == quant::Arch::Mistral ? "mistral" : "llama";
  cfg["rope_theta"] = fam.rope_theta;
  cfg["max_position_embeddings"] = 4096;
  if (fam.llama3_scaling)
    cfg["rope_scaling"] = {{"factor", 32.0}, {"high_freq_factor", 4.0}, {"low_freq_factor", 1.0},
                           {"original_max_position_embeddings", 8192}, {"rope_type", "llama3"}};
  if (fam.arch == quant::Arch::Qwen2) {
    cfg.erase("attention_bias");  // Qwen2 has the biases without saying so
    cfg["use_sliding_window"] = false;
    cfg["sliding_window"] = 4096;
    cfg["bos_token_id"] = nullptr;
  }
  if (fam.arch == quant::Arch::Mistral) cfg["sliding_window"] = fam.sliding_window;
  if (bpe) {
    cfg["bos_token_id"] = fam.arch == quant::Arch::Qwen2 ? nlohmann::json(nullptr) : nlohmann::json(bpe->size());
    cfg["eos_token_id"] = {bpe->size() + 1};
  }
  write_hf(dir, s, quant::TType::BF16, 1, cfg);
  if (bpe) {
    fs::remove(dir + "/tokenizer.model");
    write_bpe_tokenizer(dir, fam, *bpe);
  }
  return s;
}

}  // namespace qt
