// Small random Llama checkpoints written by the tests, for what ../shared has no real example
// of: tied embeddings, qkv bias, BF16, F32, sharded files.
#pragma once

#include <map>
#include <nlohmann/json.hpp>

#include "common.h"
#include "quant/formats/safetensors.h"
#include "quant/half.h"
#include "quant/model.h"

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

}  // namespace qt
