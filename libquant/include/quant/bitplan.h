// Mixed precision under a size budget as a multiple-choice knapsack: every unit (a tensor, a
// block, a kind of tensor) takes exactly one option (a bit-width) with a cost (its stored bits)
// and a predicted damage (measured KL, or a proxy); minimise the summed damage with the summed
// cost within the budget. Damage is assumed additive over units (docs/algorithms.md).
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "quant/method.h"
#include "quant/policy.h"

namespace quant {

struct KnapsackOption {
  int64_t cost = 0;   // bits
  double damage = 0;
};

struct KnapsackSolution {
  bool feasible = false;
  std::vector<int> choice;  // option index per unit
  int64_t cost = 0;
  double damage = 0;
  int64_t quantum = 1;      // exact: the cost unit the DP counted in (1 or the costs' gcd: truly exact)
  std::string solver;       // "exact" or "greedy"
};

// The cheapest total: every unit at its cheapest option.
int64_t knapsack_min_cost(const std::vector<std::vector<KnapsackOption>>& units);

// Dynamic programming over the total cost in multiples of `quantum`: the costs' gcd when the
// budget then spans at most max_cells cells (the optimum, exactly), else budget / max_cells with
// every cost rounded up (never over budget; optimal up to that rounding).
KnapsackSolution knapsack_exact(const std::vector<std::vector<KnapsackOption>>& units, int64_t budget,
                                int64_t max_cells = 1 << 20);

// Greedy marginal gains: start at each unit's cheapest option, then take upgrades along each
// unit's lower convex hull of (cost, damage) in decreasing damage saved per bit, skipping any
// that no longer fit (a unit whose upgrade is skipped takes no later ones).
KnapsackSolution knapsack_greedy(const std::vector<std::vector<KnapsackOption>>& units, int64_t budget);

// Spearman's rank correlation (ties get their mean rank); NaN for fewer than 2 pairs or a
// constant side.
double spearman(const std::vector<double>& a, const std::vector<double>& b);

// A bit-width plan, as `quant plan` writes it and `quant convert --plan` applies it: one grid (or,
// from a typed sweep, one GGUF type) per tensor pattern, chosen by the knapsack above from a
// sweep (calibration/sweep.h).
struct BitPlanRule {
  std::string match;
  Method method = Method::Gptq;  // rtn | gptq | awq (the plan's)
  int bits = 4;
  int64_t group = 128;
  bool sym = false;
  std::string type;    // typed plans: the GGUF type quantized onto ("Q4_K"); bits is then nominal
  std::string qtype;   // the GGUF type it is stored in
  std::string unit;    // the sweep unit it came from
  QuantSpec spec() const;  // the type, or the grid {bits, group, sym}
};

struct BitPlan {
  static constexpr int kVersion = 1;
  nlohmann::json model;          // model_identity() of the swept model
  Method method = Method::Gptq;
  std::string rest = "Q8_0";     // token_embd and output, which the budget does not count
  std::vector<BitPlanRule> rules;
  nlohmann::json budget;         // target, bits, decoder-linear bpw reached
  nlohmann::json predicted;      // the objective summed over units, and the solvers' answers
  nlohmann::json source;         // the sweep: file, eval, settings

  nlohmann::json to_json() const;
  static BitPlan from_json(const nlohmann::json& j, const std::string& source);
  // The plan's rules first, then token_embd / output at `rest`, then the defaults of `fallback`
  // (norms F32; general.file_type follows it).
  Policy policy(const QuantSpec& fallback) const;
  // The rule spec that covers the most swept weights (a type in typed plans, else a grid).
  QuantSpec dominant() const;
};

// Throws unless j is an object of `format` at `version` ("{source}: not a {what}", or "... run
// {rerun} again" for another version).
void check_json_format(const nlohmann::json& j, const char* format, int version, const char* what, const char* rerun,
                       const std::string& source);

}  // namespace quant
