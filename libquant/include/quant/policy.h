// Quantization policy as data: ordered {match, spec} rules, first match wins; resolved per
// tensor into what is stored (with documented fallbacks) before any work starts.
#pragma once

#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

#include "quant/method.h"
#include "quant/model.h"
#include "quant/quant_weight.h"

namespace quant {

// What to do with one tensor.
struct QuantSpec {
  enum class Kind { Float, Ggml, Grid };
  Kind kind = Kind::Float;
  TType type = TType::F32;  // Float: F32/F16/BF16; Ggml: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0
  GridSpec grid;            // Grid: RTN onto the plain integer grid
  std::string str() const;  // "F16", "Q4_0", "int3 g32 asym"
  static QuantSpec parse(const std::string& s);  // inverse of str()
};

struct PolicyRule {
  std::string match;  // glob over canonical names: '*' any run, '?' one character
  QuantSpec spec;
};

struct Policy {
  std::vector<PolicyRule> rules;
  std::string preset;  // the llama.cpp preset the rules came from (presets.h), or empty
  // The default for a target: vectors (norms, biases) F32; output.weight Q8_0 when the target
  // is below 8 bits (llama.cpp keeps the head at higher precision too); everything else target.
  static Policy defaults(const QuantSpec& target);
  const PolicyRule& rule_for(const std::string& name) const;  // throws if nothing matches
  nlohmann::json to_json() const;
  static Policy from_json(const nlohmann::json& j, const std::string& source);
};

bool glob_match(std::string_view pattern, std::string_view name);

// What llama.cpp stores when a row does not tile `t`'s blocks (tensor_type_fallback): Q4_K -> Q5_0,
// Q5_K -> Q5_1, Q6_K -> Q8_0, Q2_K / Q3_K -> Q4_0, IQ4_XS -> IQ4_NL; F16 when that does not tile
// either (and for the 32-wide types themselves).
TType block_fallback(TType t, int64_t cols);

// One tensor's resolved plan.
struct TensorPlan {
  std::string name;
  int64_t rows = 0, cols = 0;
  int n_dims = 2;
  std::string rule;     // the matching rule's pattern
  Method method = Method::Rtn;  // None for float tensors; set per tensor by the quantization stage
  QuantSpec requested;
  TType stored = TType::F32;
  std::string stored_as;  // set when the container is not GGUF ("MatMulNBits 4b b32"); else ttype_name(stored)
  bool exact = true;    // the stored bytes hold the requested grid exactly (scales in fp16)
  std::string note;     // why a fallback happened
  double logical_bpw = 32;  // of the requested grid
  double stored_bpw = 32;   // of the stored type
};

std::vector<TensorPlan> resolve_policy(const Policy& policy, const std::vector<TensorDesc>& tensors);
nlohmann::json plans_to_json(const std::vector<TensorPlan>& plans);

}  // namespace quant
