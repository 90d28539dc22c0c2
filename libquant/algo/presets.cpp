// llama.cpp's presets as data (src/llama-quant.cpp, llama_tensor_get_type_impl, for the dense
// architectures we read; its Falcon, MoE and IQ1-IQ3 branches have no model here).
#include "quant/presets.h"

#include <fmt/format.h>

namespace quant {

namespace {

using L = PresetLayers;
using W = PresetWhen;

// attn_v on a 70B becomes Q5_K wherever it would be Q3_K or Q4_K: listed before the rules it
// overrides, after those that give more (first match wins).
const std::vector<Preset>& presets() {
  static const std::vector<Preset> table = {
      {"Q2_K", TType::Q2_K, 10,
       {{"attn_v", L::All, W::Size70B, TType::Q5_K},
        {"attn_v", L::All, W::Gqa4, TType::Q4_K},
        {"attn_v", L::All, W::Always, TType::Q3_K},
        {"ffn_down", L::All, W::Always, TType::Q3_K},
        {"attn_output", L::All, W::Always, TType::Q3_K}}},
      {"Q3_K_S", TType::Q3_K, 11, {{"attn_v", L::All, W::Size70B, TType::Q5_K}}},
      {"Q3_K_M", TType::Q3_K, 12,
       {{"attn_v", L::All, W::Size70B, TType::Q5_K},
        {"attn_v", L::FirstTwo, W::Always, TType::Q5_K},
        {"attn_v", L::All, W::Always, TType::Q4_K},
        {"ffn_down", L::FirstSixteenth, W::Always, TType::Q5_K},
        {"ffn_down", L::All, W::Always, TType::Q4_K},
        {"attn_output", L::All, W::Always, TType::Q4_K}}},
      {"Q3_K_L", TType::Q3_K, 13,
       {{"attn_v", L::All, W::Always, TType::Q5_K},
        {"ffn_down", L::All, W::Always, TType::Q5_K},
        {"attn_output", L::All, W::Always, TType::Q5_K}}},
      {"Q4_K_S", TType::Q4_K, 14,
       {{"attn_v", L::All, W::Size70B, TType::Q5_K},
        {"attn_v", L::FirstFour, W::Always, TType::Q5_K},
        {"ffn_down", L::FirstEighth, W::Always, TType::Q5_K}}},
      {"Q4_K_M", TType::Q4_K, 15,
       {{"attn_v", L::MoreBits, W::Always, TType::Q6_K},
        {"attn_v", L::All, W::Size70B, TType::Q5_K},
        {"ffn_down", L::MoreBits, W::Always, TType::Q6_K}}},
      {"Q5_K_S", TType::Q5_K, 16, {}},
      {"Q5_K_M", TType::Q5_K, 17,
       {{"attn_v", L::MoreBits, W::Always, TType::Q6_K}, {"ffn_down", L::MoreBits, W::Always, TType::Q6_K}}},
      {"Q6_K", TType::Q6_K, 18, {}},
      {"IQ4_NL", TType::IQ4_NL, 25,
       {{"attn_v", L::All, W::Gqa4, TType::Q5_K}, {"ffn_down", L::FirstEighth, W::NoImatrix, TType::Q5_K}}},
      {"IQ4_XS", TType::IQ4_XS, 30,
       {{"attn_v", L::All, W::Gqa4, TType::Q5_K}, {"ffn_down", L::FirstEighth, W::NoImatrix, TType::Q5_K}}},
  };
  return table;
}

bool covers(PresetLayers s, int64_t i, int64_t n) {
  switch (s) {
    case L::All: return true;
    case L::MoreBits: return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;
    case L::FirstEighth: return i < n / 8;
    case L::FirstSixteenth: return i < n / 16;
    case L::FirstTwo: return i < 2;
    case L::FirstFour: return i < 4;
  }
  return false;
}

bool applies(PresetWhen w, const PresetModel& m) {
  const int64_t gqa = m.n_kv_heads > 0 ? m.n_heads / m.n_kv_heads : 1;
  switch (w) {
    case W::Always: return true;
    case W::Gqa4: return gqa >= 4;
    case W::NoImatrix: return !m.imatrix;
    case W::Size70B:
      return m.n_layers == 80 && (m.arch == Arch::Qwen2 || m.n_heads != m.n_kv_heads);
  }
  return false;
}

QuantSpec spec_of(TType t) { return QuantSpec::parse(std::string(ttype_name(t))); }

}  // namespace

const Preset* find_preset(std::string_view name) {
  for (const auto& p : presets())
    if (p.name == name) return &p;
  return nullptr;
}

std::string preset_names() {
  std::string s;
  for (const auto& p : presets()) s += (s.empty() ? "" : ", ") + std::string(p.name);
  return s;
}

PresetModel preset_model(const LlamaConfig& cfg, const std::vector<TensorDesc>& tensors, bool imatrix) {
  PresetModel m{.arch = cfg.arch, .n_layers = cfg.n_layers, .n_heads = cfg.n_heads, .n_kv_heads = cfg.n_kv_heads};
  m.tied_embeddings = true;  // as llama.cpp decides it: tied unless output.weight is there
  for (const auto& t : tensors)
    if (t.name == "output.weight") m.tied_embeddings = false;
  m.imatrix = imatrix;
  return m;
}

Policy preset_policy(const Preset& p, const PresetModel& m) {
  Policy pol;
  pol.preset = std::string(p.name);
  pol.rules.push_back({"*_norm.weight", QuantSpec{}});
  pol.rules.push_back({"*.bias", QuantSpec{}});
  // The head (and the embedding that doubles as it) at Q6_K; where its rows do not tile 256,
  // the Q6_K fallback is Q8_0, which is what llama.cpp picks for the head there.
  pol.rules.push_back({m.tied_embeddings ? "token_embd.weight" : "output.weight", spec_of(TType::Q6_K)});
  for (const auto& r : p.rules) {
    if (!applies(r.when, m)) continue;
    const std::string suffix = fmt::format(".{}.weight", r.tensor);
    if (r.layers == L::All) {
      pol.rules.push_back({"blk.*" + suffix, spec_of(r.type)});
      continue;
    }
    for (int64_t i = 0; i < m.n_layers; ++i)
      if (covers(r.layers, i, m.n_layers)) pol.rules.push_back({fmt::format("blk.{}{}", i, suffix), spec_of(r.type)});
  }
  pol.rules.push_back({"*", spec_of(p.base)});
  return pol;
}

}  // namespace quant
