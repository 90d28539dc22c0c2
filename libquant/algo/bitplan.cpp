// Multiple-choice knapsack solvers for mixed-precision plans, the plans they fill (BitPlan), and
// Spearman's rank correlation.
#include "quant/bitplan.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "quant/error.h"

namespace quant {

namespace {

void check_units(const std::vector<std::vector<KnapsackOption>>& units) {
  for (size_t u = 0; u < units.size(); ++u) {
    QUANT_CHECK(!units[u].empty(), "knapsack: unit {} has no option", u);
    for (const auto& o : units[u])
      QUANT_CHECK(o.cost >= 0 && std::isfinite(o.damage), "knapsack: unit {} has an option with cost {} damage {}", u, o.cost,
                  o.damage);
  }
}

KnapsackSolution finish(const std::vector<std::vector<KnapsackOption>>& units, std::vector<int> choice, std::string solver) {
  KnapsackSolution s;
  s.solver = std::move(solver);
  s.choice = std::move(choice);
  for (size_t u = 0; u < units.size(); ++u) {
    const auto& o = units[u][static_cast<size_t>(s.choice[u])];
    s.cost += o.cost;
    s.damage += o.damage;
  }
  return s;
}

}  // namespace

int64_t knapsack_min_cost(const std::vector<std::vector<KnapsackOption>>& units) {
  int64_t c = 0;
  for (const auto& u : units) {
    int64_t m = std::numeric_limits<int64_t>::max();
    for (const auto& o : u) m = std::min(m, o.cost);
    c += m;
  }
  return c;
}

KnapsackSolution knapsack_exact(const std::vector<std::vector<KnapsackOption>>& units, int64_t budget, int64_t max_cells) {
  check_units(units);
  KnapsackSolution none;
  none.solver = "exact";
  if (knapsack_min_cost(units) > budget) return none;
  int64_t g = 0;
  for (const auto& u : units)
    for (const auto& o : u) g = std::gcd(g, o.cost);
  int64_t quantum = std::max<int64_t>(g, 1);
  if (budget / quantum > max_cells) quantum = (budget + max_cells - 1) / max_cells;
  const int64_t cap = budget / quantum;
  const size_t cells = static_cast<size_t>(cap + 1);
  const double inf = std::numeric_limits<double>::infinity();
  // best[c]: least damage of the units so far with cost exactly c quanta; pick[u][c] the option.
  std::vector<double> best(cells, inf), next(cells);
  best[0] = 0;
  std::vector<std::vector<int8_t>> pick(units.size(), std::vector<int8_t>(cells, -1));
  for (size_t u = 0; u < units.size(); ++u) {
    QUANT_CHECK(units[u].size() < 128, "knapsack: unit {} has {} options (at most 127)", u, units[u].size());
    std::fill(next.begin(), next.end(), inf);
    for (size_t k = 0; k < units[u].size(); ++k) {
      const auto& o = units[u][k];
      const int64_t w = (o.cost + quantum - 1) / quantum;  // rounded up: never over budget
      for (int64_t c = cap; c >= w; --c) {
        const double v = best[static_cast<size_t>(c - w)] + o.damage;
        if (v < next[static_cast<size_t>(c)]) {
          next[static_cast<size_t>(c)] = v;
          pick[u][static_cast<size_t>(c)] = static_cast<int8_t>(k);
        }
      }
    }
    best.swap(next);
  }
  const auto it = std::min_element(best.begin(), best.end());
  if (!std::isfinite(*it)) {
    // Rounding every cost up can overfill a tight budget the cheapest plan still meets.
    std::vector<int> cheapest(units.size());
    for (size_t u = 0; u < units.size(); ++u)
      cheapest[u] = static_cast<int>(std::min_element(units[u].begin(), units[u].end(), [](const auto& a, const auto& b) {
                                       return a.cost < b.cost;
                                     }) - units[u].begin());
    KnapsackSolution s = finish(units, std::move(cheapest), "exact");
    s.feasible = true;
    s.quantum = quantum;
    return s;
  }
  std::vector<int> choice(units.size());
  int64_t c = it - best.begin();
  for (size_t u = units.size(); u-- > 0;) {
    const int k = pick[u][static_cast<size_t>(c)];
    choice[u] = k;
    c -= (units[u][static_cast<size_t>(k)].cost + quantum - 1) / quantum;
  }
  KnapsackSolution s = finish(units, std::move(choice), "exact");
  s.feasible = s.cost <= budget;
  s.quantum = quantum;
  return s;
}

KnapsackSolution knapsack_greedy(const std::vector<std::vector<KnapsackOption>>& units, int64_t budget) {
  check_units(units);
  struct Step {
    size_t unit;
    int from, to;
    double slope;  // damage saved per bit
  };
  std::vector<Step> steps;
  std::vector<int> choice(units.size());
  for (size_t u = 0; u < units.size(); ++u) {
    std::vector<int> idx(units[u].size());
    std::iota(idx.begin(), idx.end(), 0);
    const auto& o = units[u];
    std::sort(idx.begin(), idx.end(), [&](int a, int b) {
      return o[a].cost != o[b].cost ? o[a].cost < o[b].cost : o[a].damage < o[b].damage;
    });
    // Lower convex hull with damage decreasing in cost.
    std::vector<int> hull;
    for (int k : idx) {
      if (!hull.empty() && o[k].damage >= o[hull.back()].damage) continue;  // dominated
      while (hull.size() >= 2) {
        const auto& a = o[hull[hull.size() - 2]];
        const auto& b = o[hull.back()];
        const auto& c = o[k];
        // b lies on or above the segment a-c: drop it.
        const double lhs = (b.damage - a.damage) * static_cast<double>(c.cost - a.cost);
        const double rhs = (c.damage - a.damage) * static_cast<double>(b.cost - a.cost);
        if (lhs >= rhs) hull.pop_back();
        else break;
      }
      hull.push_back(k);
    }
    choice[u] = hull.front();
    for (size_t h = 1; h < hull.size(); ++h) {
      const auto& a = o[hull[h - 1]];
      const auto& b = o[hull[h]];
      steps.push_back({u, hull[h - 1], hull[h], (a.damage - b.damage) / static_cast<double>(std::max<int64_t>(1, b.cost - a.cost))});
    }
  }
  KnapsackSolution none;
  none.solver = "greedy";
  int64_t cost = 0;
  for (size_t u = 0; u < units.size(); ++u) cost += units[u][static_cast<size_t>(choice[u])].cost;
  if (cost > budget) return none;
  // Along one unit's hull the slopes decrease, so a stable sort keeps its steps in order.
  std::stable_sort(steps.begin(), steps.end(), [](const Step& a, const Step& b) { return a.slope > b.slope; });
  std::vector<bool> stuck(units.size(), false);
  for (const Step& s : steps) {
    if (stuck[s.unit] || choice[s.unit] != s.from) continue;
    const int64_t extra = units[s.unit][static_cast<size_t>(s.to)].cost - units[s.unit][static_cast<size_t>(s.from)].cost;
    if (cost + extra > budget) {
      stuck[s.unit] = true;
      continue;
    }
    cost += extra;
    choice[s.unit] = s.to;
  }
  KnapsackSolution s = finish(units, std::move(choice), "greedy");
  s.feasible = true;
  return s;
}

namespace {
std::vector<double> ranks(const std::vector<double>& v) {
  std::vector<size_t> idx(v.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::sort(idx.begin(), idx.end(), [&](size_t a, size_t b) { return v[a] < v[b]; });
  std::vector<double> r(v.size());
  for (size_t i = 0; i < idx.size();) {
    size_t j = i;
    while (j + 1 < idx.size() && v[idx[j + 1]] == v[idx[i]]) ++j;
    const double mean = 0.5 * static_cast<double>(i + j) + 1;
    for (size_t k = i; k <= j; ++k) r[idx[k]] = mean;
    i = j + 1;
  }
  return r;
}
}  // namespace

double spearman(const std::vector<double>& a, const std::vector<double>& b) {
  QUANT_CHECK(a.size() == b.size(), "spearman: {} against {} values", a.size(), b.size());
  const size_t n = a.size();
  if (n < 2) return std::nan("");
  const std::vector<double> ra = ranks(a), rb = ranks(b);
  double ma = 0, mb = 0;
  for (size_t i = 0; i < n; ++i) {
    ma += ra[i];
    mb += rb[i];
  }
  ma /= static_cast<double>(n);
  mb /= static_cast<double>(n);
  double sab = 0, saa = 0, sbb = 0;
  for (size_t i = 0; i < n; ++i) {
    sab += (ra[i] - ma) * (rb[i] - mb);
    saa += (ra[i] - ma) * (ra[i] - ma);
    sbb += (rb[i] - mb) * (rb[i] - mb);
  }
  if (saa == 0 || sbb == 0) return std::nan("");
  return sab / std::sqrt(saa * sbb);
}

// ---------------------------------------------------------------------------------------------
// Plans as data

void check_json_format(const nlohmann::json& j, const char* format, int version, const char* what, const char* rerun,
                       const std::string& source) {
  // Looked up by hand, not with json::value(), which throws its own exception on a field of the wrong type.
  const auto f = j.is_object() ? j.find("format") : j.end();
  QUANT_CHECK(f != j.end() && f->is_string() && f->get<std::string>() == format, "{}: not a {} (format {})", source, what, format);
  const auto vj = j.find("version");
  const int64_t v = vj != j.end() && vj->is_number_integer() ? vj->get<int64_t>() : 0;
  QUANT_CHECK(v == version, "{}: {} format version {}; this quant reads version {}: run {} again", source, what, v, version, rerun);
}

nlohmann::json BitPlan::to_json() const {
  nlohmann::json rj = nlohmann::json::array();
  for (const auto& r : rules)
  {
    nlohmann::json o = {{"match", r.match}, {"method", method_name(r.method)}, {"bits", r.bits}, {"group", r.group}, {"sym", r.sym},
                        {"qtype", r.qtype}, {"unit", r.unit}};
    if (!r.type.empty()) o["type"] = r.type;
    rj.push_back(o);
  }
  return {{"format", "quant-bitplan"}, {"version", kVersion}, {"model", model}, {"method", method_name(method)}, {"rest", rest},
          {"rules", rj}, {"budget", budget}, {"predicted", predicted}, {"source", source}};
}

BitPlan BitPlan::from_json(const nlohmann::json& j, const std::string& src) {
  check_json_format(j, "quant-bitplan", kVersion, "plan", "quant plan", src);
  BitPlan p;
  std::string method;
  try {
    p.model = j.at("model");
    method = j.at("method").get<std::string>();
    p.rest = j.value("rest", "Q8_0");
    p.budget = j.value("budget", nlohmann::json());
    p.predicted = j.value("predicted", nlohmann::json());
    p.source = j.value("source", nlohmann::json());
    for (const auto& r : j.at("rules")) {
      BitPlanRule b;
      b.match = r.at("match").get<std::string>();
      const std::string rule_method = r.value("method", method);
      b.bits = r.at("bits").get<int>();
      b.group = r.at("group").get<int64_t>();
      b.sym = r.at("sym").get<bool>();
      b.type = r.value("type", "");
      b.qtype = r.value("qtype", "");
      b.unit = r.value("unit", "");
      if (!b.type.empty()) {
        const QuantSpec t = QuantSpec::parse(b.type);  // throws naming the bad type
        QUANT_CHECK(t.kind != QuantSpec::Kind::Float, "{}: rule {}: type {} is neither a quantized GGUF type nor a grid", src, b.match,
                    b.type);
      } else {
        QUANT_CHECK(GridSpec::valid_bits(b.bits), "{}: rule {}: bits {} outside 2..8", src, b.match, b.bits);
        QUANT_CHECK(GridSpec::valid_group(b.group), "{}: rule {}: group {} (32, 64, 128 or 0)", src, b.match, b.group);
      }
      QUANT_CHECK(rule_method == method, "{}: rule {} asks for {} in a {} plan", src, b.match, rule_method, method);
      p.rules.push_back(b);
    }
  } catch (const nlohmann::json::exception& e) {
    fail("{}: malformed plan: {}", src, e.what());
  }
  const std::optional<Method> m = method_from_name(method);
  QUANT_CHECK(m == Method::Rtn || m == Method::Gptq || m == Method::Awq, "{}: method {} (rtn, gptq or awq)", src, method);
  p.method = *m;
  for (auto& r : p.rules) r.method = p.method;
  QUANT_CHECK(!p.rules.empty(), "{}: the plan has no rules", src);
  QuantSpec::parse(p.rest);  // throws naming the bad type
  return p;
}

QuantSpec BitPlanRule::spec() const {
  if (!type.empty()) return QuantSpec::parse(type);
  QuantSpec s;
  s.kind = QuantSpec::Kind::Grid;
  s.grid = {bits, group, sym};
  return s;
}

QuantSpec BitPlan::dominant() const {
  const bool typed = !rules.front().type.empty();
  const char* key = typed ? "share_of_weights_by_type" : "share_of_weights_by_bits";
  std::string best = typed ? rules.front().type : std::to_string(rules.front().bits);
  double share = -1;
  if (budget.is_object() && budget.contains(key))
    for (const auto& [b, v] : budget[key].items())
      if (v.get<double>() > share) {
        share = v.get<double>();
        best = b;
      }
  for (const auto& r : rules)
    if ((typed ? r.type : std::to_string(r.bits)) == best) return r.spec();
  return rules.front().spec();
}

Policy BitPlan::policy(const QuantSpec& fallback) const {
  Policy pol;
  for (const auto& r : rules) pol.rules.push_back({r.match, r.spec()});
  const QuantSpec rs = QuantSpec::parse(rest);
  pol.rules.push_back({"token_embd.weight", rs});
  pol.rules.push_back({"output.weight", rs});
  const Policy d = Policy::defaults(fallback);
  pol.rules.insert(pol.rules.end(), d.rules.begin(), d.rules.end());
  return pol;
}

}  // namespace quant
