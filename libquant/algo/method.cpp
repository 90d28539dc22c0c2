// Method names: the one table behind flags, plans and metadata.
#include "quant/method.h"

#include <array>
#include <fmt/format.h>

#include "quant/error.h"

namespace quant {

namespace {
constexpr std::array<std::pair<Method, const char*>, 6> kMethods = {{{Method::None, "none"},
                                                                     {Method::Rtn, "rtn"},
                                                                     {Method::Gptq, "gptq"},
                                                                     {Method::Awq, "awq"},
                                                                     {Method::AwqGptq, "awq+gptq"},
                                                                     {Method::SmoothQuant, "smoothquant"}}};
}  // namespace

const char* method_name(Method m) {
  for (const auto& [k, n] : kMethods)
    if (k == m) return n;
  return "?";
}

std::optional<Method> method_from_name(std::string_view name) {
  for (const auto& [k, n] : kMethods)
    if (name == n) return k;
  return std::nullopt;
}

Method parse_method(std::string_view name, std::string_view what, std::string_view allowed) {
  std::string list;
  for (const auto& [k, n] : kMethods) {
    if (k == Method::None) continue;
    const std::string_view nv(n);
    bool ok = allowed.empty();
    for (size_t b = 0; !ok && b < allowed.size();) {
      const size_t e = std::min(allowed.find(',', b), allowed.size());
      ok = allowed.substr(b, e - b) == nv;
      b = e + 1;
    }
    if (!ok) continue;
    if (name == nv) return k;
    list += (list.empty() ? "" : ", ") + std::string(nv);
  }
  fail("{} {} is not available ({} are)", what, name, list);
}

}  // namespace quant
