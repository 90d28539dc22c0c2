// Recipes: a named quantization method with its settings ("gptq-act-damp0.1-mse"), what
// `quant quantize` runs by default for a target, chosen from measured runs (bench/recipes.sh,
// docs/recipes.jsonl) by one rule, recipe_winners(); tests/unit/test_recipes.cpp holds the
// code's defaults to that table.
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <utility>
#include <vector>

#include "quant/method.h"

namespace quant {

struct Recipe {
  Method method = Method::Rtn;  // rtn, gptq, awq or awq+gptq
  bool act_order = false;       // GPTQ: columns by decreasing diag(H)
  double damp = 0.01;           // GPTQ: lambda = damp * mean(diag H)
  bool mse = false;             // grid range by quant.py's MSE search instead of min-max

  // "METHOD[-act][-dampX][-mse]", e.g. rtn, gptq-act-damp0.1-mse, awq+gptq-act-mse. Throws one
  // line naming the bad part and the forms that work.
  static Recipe parse(const std::string& name);
  std::string name() const;  // the canonical spelling; parse(name()) == *this
  // The `quant convert` flags this recipe stands for on an integer grid (bits, group; asym),
  // without --calib and -o.
  std::vector<std::string> convert_flags(int bits, int64_t group) const;
  bool needs_calibration() const { return method != Method::Rtn; }
  bool operator==(const Recipe&) const = default;
};

// The candidates bench/recipes.sh runs, in order of cost (a tie goes to the earlier one).
const std::vector<std::string>& recipe_candidates();

// A target `quant quantize --bits B --group-size G` can be given.
struct RecipeTarget {
  int bits = 4;
  int64_t group = 128;
  auto operator<=>(const RecipeTarget&) const = default;
};

// The code's default for a target: the measured winner of its width and group, else of its
// width (nearest group measured), else gptq-act-damp0.1-mse. `why` says which.
Recipe default_recipe(RecipeTarget t, std::string* why = nullptr);
const std::map<RecipeTarget, std::string>& default_recipe_table();

// One measured run (a line of docs/recipes.jsonl): a recipe at a target, Δppl against FP16 on
// each evaluation text.
struct RecipeRun {
  std::string recipe;
  RecipeTarget target;
  std::map<std::string, double> dppl;  // text name -> ppl / ppl_fp16 - 1
};
std::vector<RecipeRun> parse_recipe_runs(const std::string& jsonl, const std::string& source);

// The rule: among the runs of a target, the lowest mean Δppl over the texts, counting only
// recipes no worse than RTN on any text (RTN itself always is); within
// 0.02 percentage points of the best mean the cheaper (earlier candidate) wins.
std::map<RecipeTarget, std::string> recipe_winners(const std::vector<RecipeRun>& runs);

}  // namespace quant
