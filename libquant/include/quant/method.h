// The quantization methods, chosen in one place: what each one runs and how it is named in
// flags, plans and file metadata.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace quant {

enum class Method {
  None,         // a float tensor: nothing quantized
  Rtn,          // round-to-nearest onto the plan's grid (or ggml's own quantizer)
  Gptq,         // sequential GPTQ (Hessians of each block's inputs)
  Awq,          // AWQ scales and clips folded into the weights, then RTN
  AwqGptq,      // AWQ, then sequential GPTQ on the transformed weights
  SmoothQuant,  // SmoothQuant scales folded into the weights, then RTN (W8A8)
};

const char* method_name(Method m);  // "none", "rtn", "gptq", "awq", "awq+gptq", "smoothquant"
// Throws "`what` NAME is not available (rtn, gptq, ... are)" for any other name, or for a
// method outside `allowed` (a comma-separated list of names; empty: every method but none).
Method parse_method(std::string_view name, std::string_view what = "--method", std::string_view allowed = {});

std::optional<Method> method_from_name(std::string_view name);  // nullopt for an unknown name

inline bool uses_gptq(Method m) { return m == Method::Gptq || m == Method::AwqGptq; }
inline bool uses_awq(Method m) { return m == Method::Awq || m == Method::AwqGptq; }
// AWQ and SmoothQuant search per-channel scales on activations and fold them into the weights.
inline bool is_act_aware(Method m) { return uses_awq(m) || m == Method::SmoothQuant; }

}  // namespace quant
