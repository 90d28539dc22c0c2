// Policy as data: quant specs, rules, and their resolution into one plan per tensor.
#include <nlohmann/json.hpp>
#include <cmath>
#include <regex>

#include "quant/error.h"
#include "quant/policy.h"
#include "quant/presets.h"

namespace quant {

std::string QuantSpec::str() const {
  switch (kind) {
    case Kind::Float:
    case Kind::Ggml: return std::string(ttype_name(type));
    case Kind::Grid: return grid.str();
  }
  return "?";
}

QuantSpec QuantSpec::parse(const std::string& s) {
  QuantSpec q;
  static const std::regex grid(R"(int([2-8]) (per-channel|g(\d+)) (sym|asym)( mse)?)");
  std::smatch m;
  if (std::regex_match(s, m, grid)) {
    q.kind = Kind::Grid;
    q.grid.bits = std::stoi(m[1]);
    q.grid.group = m[3].matched ? std::stoll(m[3]) : 0;
    q.grid.sym = m[4] == "sym";
    q.grid.mse = m[5].matched;
    QUANT_CHECK(GridSpec::valid_group(q.grid.group),
                "quant spec \"{}\": group size must be 32, 64, 128 or per-channel", s);
    return q;
  }
  const auto t = ttype_from_name(s);
  QUANT_CHECK(t && *t != TType::I32,
              "unknown quant spec \"{}\" (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, "
              "IQ4_XS, or \"int3 g32 asym\"; llama.cpp presets for --qtype: {})",
              s, preset_names());
  q.type = *t;
  q.kind = is_quantized(*t) ? Kind::Ggml : Kind::Float;
  return q;
}

bool glob_match(std::string_view p, std::string_view s) {
  size_t pi = 0, si = 0, star = std::string_view::npos, mark = 0;
  while (si < s.size()) {
    if (pi < p.size() && (p[pi] == '?' || p[pi] == s[si])) {
      ++pi;
      ++si;
    } else if (pi < p.size() && p[pi] == '*') {
      star = pi++;
      mark = si;
    } else if (star != std::string_view::npos) {
      pi = star + 1;
      si = ++mark;
    } else {
      return false;
    }
  }
  while (pi < p.size() && p[pi] == '*') ++pi;
  return pi == p.size();
}

TType block_fallback(TType t, int64_t cols) {
  if (cols % traits(t).block == 0) return t;
  TType f = TType::F16;
  switch (t) {
    case TType::Q2_K:
    case TType::Q3_K: f = TType::Q4_0; break;
    case TType::Q4_K: f = TType::Q5_0; break;
    case TType::Q5_K: f = TType::Q5_1; break;
    case TType::Q6_K: f = TType::Q8_0; break;
    case TType::IQ4_XS: f = TType::IQ4_NL; break;
    default: break;
  }
  return cols % traits(f).block == 0 ? f : TType::F16;
}

Policy Policy::defaults(const QuantSpec& target) {
  Policy p;
  QuantSpec f32;
  p.rules.push_back({"*_norm.weight", f32});
  p.rules.push_back({"*.bias", f32});
  const bool low = target.kind == QuantSpec::Kind::Grid
                       ? target.grid.bits < 8
                       : (target.kind == QuantSpec::Kind::Ggml && target.type != TType::Q8_0);
  if (low) p.rules.push_back({"output.weight", QuantSpec::parse("Q8_0")});
  p.rules.push_back({"*", target});
  return p;
}

const PolicyRule& Policy::rule_for(const std::string& name) const {
  for (const auto& r : rules)
    if (glob_match(r.match, name)) return r;
  fail("policy: no rule matches tensor {}", name);
}

nlohmann::json Policy::to_json() const {
  nlohmann::json j = nlohmann::json::array();
  for (const auto& r : rules) j.push_back({{"match", r.match}, {"qtype", r.spec.str()}});
  return j;
}

Policy Policy::from_json(const nlohmann::json& j, const std::string& source) {
  QUANT_CHECK(j.is_array(), "{}: policy must be a JSON array of {{match, qtype}} rules", source);
  Policy p;
  for (const auto& r : j) {
    QUANT_CHECK(r.is_object() && r.contains("match") && r["match"].is_string() && r.contains("qtype") &&
                    r["qtype"].is_string(),
                "{}: each rule needs string fields match and qtype", source);
    p.rules.push_back({r["match"].get<std::string>(), QuantSpec::parse(r["qtype"].get<std::string>())});
  }
  return p;
}

std::vector<TensorPlan> resolve_policy(const Policy& policy, const std::vector<TensorDesc>& tensors) {
  std::vector<TensorPlan> out;
  for (const auto& t : tensors) {
    const PolicyRule& rule = policy.rule_for(t.name);
    TensorPlan p{.name = t.name, .rows = t.rows, .cols = t.cols, .n_dims = t.n_dims, .rule = rule.match, .requested = rule.spec,
                 .stored_as = {}, .note = {}};
    const QuantSpec& s = rule.spec;
    if (t.n_dims == 1 && s.kind != QuantSpec::Kind::Float) {
      p.stored = TType::F32;  // llama.cpp reads norms and biases as float
      p.requested = QuantSpec{};
      p.note = "vectors stay F32";
    } else if (s.kind == QuantSpec::Kind::Float) {
      p.stored = s.type;
    } else if (s.kind == QuantSpec::Kind::Ggml) {
      p.stored = block_fallback(s.type, t.cols);
      if (p.stored != s.type) {
        p.note = fmt::format("{} columns do not tile {} blocks: {} instead", t.cols, ttype_name(s.type), ttype_name(p.stored));
        if (is_quantized(p.stored))
          p.requested.type = p.stored;  // quantized as that type, as llama.cpp does
        else
          p.exact = false;
      }
    } else {
      StorageChoice c = storage_for_grid(s.grid, t.cols);
      if (s.grid.group != 0 && t.cols % s.grid.group != 0)
        c = {TType::F16, false, fmt::format("group {} does not divide {} columns: stored as dequantized F16", s.grid.group, t.cols)};
      p.stored = c.type;
      p.exact = c.exact;
      p.note = c.why;
    }
    const QuantSpec& r = p.requested;
    p.method = r.kind == QuantSpec::Kind::Float ? Method::None : Method::Rtn;
    p.logical_bpw = r.kind == QuantSpec::Kind::Grid ? r.grid.logical_bpw(t.cols) : type_bpw(r.type);
    p.stored_bpw = type_bpw(p.stored);
    out.push_back(std::move(p));
  }
  return out;
}

nlohmann::json plans_to_json(const std::vector<TensorPlan>& plans) {
  nlohmann::json j = nlohmann::json::array();
  for (const auto& p : plans)
    j.push_back({{"name", p.name}, {"rows", p.rows}, {"cols", p.cols}, {"rule", p.rule},
                 {"method", method_name(p.method)},
                 {"requested", p.requested.str()}, {"stored", p.stored_as.empty() ? std::string(ttype_name(p.stored)) : p.stored_as},
                 {"exact", p.exact}, {"note", p.note}, {"logical_bpw", p.logical_bpw}, {"stored_bpw", p.stored_bpw}});
  return j;
}

}  // namespace quant
