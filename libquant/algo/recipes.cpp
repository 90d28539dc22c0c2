// Recipes by name, the measured defaults, and the rule that picks them (quant/recipes.h).
#include "quant/recipes.h"

#include <fmt/format.h>

#include <charconv>
#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>

#include "quant/error.h"

namespace quant {
namespace {

constexpr const char* kForms =
    "METHOD[-act][-dampX][-mse] with METHOD rtn, gptq, awq or awq+gptq (e.g. rtn, gptq-act-damp0.1-mse, awq)";

std::vector<std::string> split_dash(const std::string& s) {
  std::vector<std::string> parts;
  size_t start = 0;
  for (size_t i = 0; i <= s.size(); ++i)
    if (i == s.size() || s[i] == '-') {
      parts.push_back(s.substr(start, i - start));
      start = i + 1;
    }
  return parts;
}

std::string damp_str(double d) { return fmt::format("{:g}", d); }

}  // namespace

Recipe Recipe::parse(const std::string& name) {
  const std::vector<std::string> parts = split_dash(name);
  Recipe r;
  const auto m = method_from_name(parts[0]);
  QUANT_CHECK(m && (*m == Method::Rtn || *m == Method::Gptq || *m == Method::Awq || *m == Method::AwqGptq),
              "recipe {}: unknown method {}: {}", name, parts[0], kForms);
  r.method = *m;
  const bool gptq = r.method == Method::Gptq || r.method == Method::AwqGptq;
  bool seen_act = false, seen_damp = false, seen_mse = false;
  for (size_t i = 1; i < parts.size(); ++i) {
    const std::string& p = parts[i];
    if (p == "act" && !seen_act && !seen_damp && !seen_mse) {
      QUANT_CHECK(gptq, "recipe {}: act(-order) is a GPTQ setting, not {}'s: {}", name, parts[0], kForms);
      r.act_order = seen_act = true;
    } else if (p.rfind("damp", 0) == 0 && !seen_damp && !seen_mse) {
      QUANT_CHECK(gptq, "recipe {}: damp is a GPTQ setting, not {}'s: {}", name, parts[0], kForms);
      const char* b = p.data() + 4;
      const char* e = p.data() + p.size();
      const auto [end, ec] = std::from_chars(b, e, r.damp);
      QUANT_CHECK(ec == std::errc() && end == e && r.damp > 0 && r.damp < 1, "recipe {}: {}: damping must be a number in (0, 1)", name, p);
      seen_damp = true;
    } else if (p == "mse" && !seen_mse) {
      r.mse = seen_mse = true;
    } else {
      fail("recipe {}: unknown or repeated part '{}': {}", name, p, kForms);
    }
  }
  return r;
}

std::string Recipe::name() const {
  std::string s = method_name(method);
  if (act_order) s += "-act";
  if (damp != 0.01) s += "-damp" + damp_str(damp);
  if (mse) s += "-mse";
  return s;
}

std::vector<std::string> Recipe::convert_flags(int bits, int64_t group) const {
  std::vector<std::string> f = {"--method", method_name(method), "--bits", std::to_string(bits), "--group-size", std::to_string(group), "--asym"};
  if (act_order) f.push_back("--act-order");
  if (method == Method::Gptq || method == Method::AwqGptq) {
    f.push_back("--damp");
    f.push_back(damp_str(damp));
  }
  f.push_back("--grid-search");
  f.push_back(mse ? "mse" : "minmax");
  return f;
}

const std::vector<std::string>& recipe_candidates() {
  static const std::vector<std::string> c = {"rtn",          "rtn-mse",          "gptq",         "gptq-mse",
                                             "gptq-damp0.1", "gptq-damp0.1-mse", "gptq-act",     "gptq-act-mse",
                                             "gptq-act-damp0.1", "gptq-act-damp0.1-mse", "awq", "awq+gptq-act-damp0.1-mse"};
  return c;
}

// The winners of docs/recipes.jsonl under recipe_winners() (bench/recipes.sh on the bundled
// model; tests/unit/test_recipes.cpp fails when the two disagree).
const std::map<RecipeTarget, std::string>& default_recipe_table() {
  static const std::map<RecipeTarget, std::string> t = {
      {{2, 32}, "gptq-mse"},
      {{3, 32}, "awq+gptq-act-damp0.1-mse"},
      {{4, 32}, "gptq-damp0.1"},
      {{8, 32}, "gptq"},
  };
  return t;
}

Recipe default_recipe(RecipeTarget t, std::string* why) {
  const auto& table = default_recipe_table();
  if (const auto it = table.find(t); it != table.end()) {
    if (why) *why = fmt::format("measured best at {} bits, group {} (docs/results.md)", t.bits, t.group);
    return Recipe::parse(it->second);
  }
  const std::map<RecipeTarget, std::string>::value_type* near = nullptr;
  for (const auto& e : table)
    if (e.first.bits == t.bits && (!near || std::llabs(e.first.group - t.group) < std::llabs(near->first.group - t.group))) near = &e;
  if (near) {
    if (why) *why = fmt::format("measured best at {} bits, group {} (nearest measured group; docs/results.md)", t.bits, near->first.group);
    return Recipe::parse(near->second);
  }
  if (why) *why = fmt::format("no measurement at {} bits: GPTQ with act-order, damp 0.1 and the MSE grid", t.bits);
  return Recipe::parse("gptq-act-damp0.1-mse");
}

std::vector<RecipeRun> parse_recipe_runs(const std::string& jsonl, const std::string& source) {
  std::vector<RecipeRun> runs;
  std::map<std::string, double> fp;  // text -> FP16 ppl
  std::istringstream in(jsonl);
  std::string line;
  int n = 0;
  std::vector<nlohmann::json> rows;
  while (std::getline(in, line)) {
    ++n;
    if (line.empty()) continue;
    nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    QUANT_CHECK(j.is_object() && j.contains("recipe") && j["recipe"].is_string(), "{}:{}: not a recipe run", source, n);
    if (j["recipe"] == "fp16") {
      for (const auto& [k, v] : j.items())
        if (v.is_object() && v.contains("ppl") && v["ppl"].is_number()) fp[k] = v["ppl"].get<double>();
      continue;
    }
    rows.push_back(std::move(j));
  }
  QUANT_CHECK(!fp.empty(), "{}: no fp16 line (the FP16 perplexities every run is measured against)", source);
  for (const auto& j : rows) {
    RecipeRun r;
    r.recipe = j["recipe"].get<std::string>();
    QUANT_CHECK(j.contains("bits") && j["bits"].is_number_integer() && j.contains("group") && j["group"].is_number_integer(),
                "{}: run {}: no bits / group", source, r.recipe);
    r.target = {j["bits"].get<int>(), j["group"].get<int64_t>()};
    for (const auto& [text, ppl] : fp) {
      QUANT_CHECK(j.contains(text) && j[text].is_object() && j[text].contains("ppl") && j[text]["ppl"].is_number(),
                  "{}: run {} at {} bits: no ppl on {}", source, r.recipe, r.target.bits, text);
      r.dppl[text] = j[text]["ppl"].get<double>() / ppl - 1;
    }
    runs.push_back(std::move(r));
  }
  return runs;
}

std::map<RecipeTarget, std::string> recipe_winners(const std::vector<RecipeRun>& runs) {
  std::map<RecipeTarget, std::vector<const RecipeRun*>> by_target;
  for (const auto& r : runs) by_target[r.target].push_back(&r);
  const auto& cand = recipe_candidates();
  auto cost = [&](const std::string& name) {
    for (size_t i = 0; i < cand.size(); ++i)
      if (cand[i] == name) return i;
    return cand.size();
  };
  auto mean = [](const RecipeRun& r) {
    double s = 0;
    for (const auto& [t, d] : r.dppl) s += d;
    return s / static_cast<double>(r.dppl.size());
  };
  std::map<RecipeTarget, std::string> winners;
  for (const auto& [target, rs] : by_target) {
    const RecipeRun* rtn = nullptr;
    for (const RecipeRun* r : rs)
      if (r->recipe == "rtn") rtn = r;
    auto eligible = [&](const RecipeRun& r) {
      if (!rtn) return true;
      for (const auto& [t, d] : r.dppl)
        if (d > rtn->dppl.at(t)) return false;
      return true;
    };
    double best = std::numeric_limits<double>::infinity();
    for (const RecipeRun* r : rs)
      if (eligible(*r)) best = std::min(best, mean(*r));
    const RecipeRun* pick = nullptr;
    for (const RecipeRun* r : rs)
      if (eligible(*r) && mean(*r) <= best + 0.0002 && (!pick || cost(r->recipe) < cost(pick->recipe))) pick = r;
    if (pick) winners[target] = pick->recipe;
  }
  return winners;
}

}  // namespace quant
