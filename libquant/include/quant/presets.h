// llama.cpp's quantization presets (llama-quantize's Q4_K_M, Q3_K_S, IQ4_XS ...) as data: each is
// a base type plus rules "these tensors, in these layers, under this condition, get that type".
// Expanded for one model into ordinary policy rules (first match wins), so --dry-run prints them.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "quant/model.h"
#include "quant/policy.h"

namespace quant {

// Which layers of the model a preset rule covers (llama.cpp's i_layer / n_layer tests).
enum class PresetLayers {
  All,
  MoreBits,        // use_more_bits: i < n/8, i >= 7n/8, or (i - n/8) % 3 == 2
  FirstEighth,     // i < n/8
  FirstSixteenth,  // i < n/16
  FirstTwo,        // i < 2
  FirstFour,       // i < 4
};

// When a preset rule applies at all.
enum class PresetWhen {
  Always,
  Gqa4,       // n_heads / n_kv_heads >= 4
  NoImatrix,  // only when quantizing without an importance matrix
  Size70B,    // llama.cpp's LLM_TYPE_70B: 80 layers of a Llama with GQA, or of a Qwen2
};

struct PresetRule {
  std::string_view tensor;  // the tensor's role: "attn_v", "ffn_down", "attn_output"
  PresetLayers layers;
  PresetWhen when;
  TType type;
};

struct Preset {
  std::string_view name;  // as llama-quantize spells it: "Q4_K_M"
  TType base;             // every other matrix
  uint32_t file_type;     // llama.cpp's llama_ftype, written as general.file_type
  std::vector<PresetRule> rules;  // first match wins, before the base
};

// The preset called `name`, or nullptr.
const Preset* find_preset(std::string_view name);
// "Q2_K, Q3_K_S, ... IQ4_XS" for messages.
std::string preset_names();

struct PresetModel {
  Arch arch = Arch::Llama;
  int64_t n_layers = 0, n_heads = 0, n_kv_heads = 0;
  bool tied_embeddings = false;  // no output.weight: token_embd takes the head's type
  bool imatrix = false;          // an importance matrix is given
};
PresetModel preset_model(const LlamaConfig& cfg, const std::vector<TensorDesc>& tensors, bool imatrix);

// The preset's rules for this model: vectors F32, output.weight (or the tied token_embd) Q6_K,
// each rule expanded to the layers it covers, then the base for everything else. Rows that do
// not tile the chosen type's blocks fall back when the policy is resolved (resolve_policy).
Policy preset_policy(const Preset& p, const PresetModel& m);

}  // namespace quant
