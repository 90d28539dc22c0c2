// bench_recipes_table FILE.jsonl: bench/recipes.sh's runs as a Markdown table (Δppl against FP16
// on each text, KL, top-1, convert time), then each target's winner under recipe_winners(), the
// rule quant quantize's defaults follow (quant/recipes.h).
#include <fmt/format.h>

#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "quant/error.h"
#include "quant/recipes.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: bench_recipes_table results.jsonl\n";
    return 2;
  }
  try {
    std::ifstream f(argv[1]);
    QUANT_CHECK(f, "{}: cannot open", argv[1]);
    std::stringstream ss;
    ss << f.rdbuf();
    const std::string text = ss.str();
    const auto runs = quant::parse_recipe_runs(text, argv[1]);
    const auto winners = quant::recipe_winners(runs);
    std::vector<nlohmann::json> rows;
    nlohmann::json fp;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);)
      if (!line.empty()) {
        auto j = nlohmann::json::parse(line);
        if (j["recipe"] == "fp16") fp = j;
        else rows.push_back(std::move(j));
      }
    std::vector<std::string> texts;
    for (const auto& [k, v] : fp.items())
      if (v.is_object()) texts.push_back(k);
    std::cout << "| target | recipe |";
    for (const auto& t : texts) std::cout << fmt::format(" {} ppl (Δ) | KL | top-1 |", t);
    std::cout << " convert s |\n|---|---|";
    for (size_t i = 0; i < texts.size(); ++i) std::cout << "---|---|---|";
    std::cout << "---|\n| FP16 | |";
    for (const auto& t : texts) std::cout << fmt::format(" {:.3f} | | |", fp[t]["ppl"].get<double>());
    std::cout << " |\n";
    for (const auto& j : rows) {
      const quant::RecipeTarget target{j["bits"].get<int>(), j["group"].get<int64_t>()};
      const std::string r = j["recipe"].get<std::string>();
      const bool win = winners.count(target) && winners.at(target) == r;
      std::cout << fmt::format("| W{} g{} | {} |", target.bits, target.group, win ? "**" + r + "**" : r);
      for (const auto& t : texts) {
        const double p = j[t]["ppl"].get<double>(), p0 = fp[t]["ppl"].get<double>();
        std::cout << fmt::format(" {:.3f} ({:+.2f}%) | {:.5f} | {:.2f}% |", p, 100 * (p / p0 - 1), j[t]["kl"].get<double>(),
                                 100 * j[t]["top1"].get<double>());
      }
      std::cout << fmt::format(" {:.1f} |\n", j["convert_seconds"].get<double>());
    }
    std::cout << "\nwinners (recipe_winners: lowest mean Δppl over the texts among recipes no worse than RTN on any):\n";
    for (const auto& [t, name] : winners) {
      double rtn_k = 0, win_k = 0;
      for (const auto& r : runs)
        if (r.target == t && (r.recipe == "rtn" || r.recipe == name)) (r.recipe == "rtn" ? rtn_k : win_k) = r.dppl.begin()->second;
      std::cout << fmt::format("  W{} g{}: {}", t.bits, t.group, name);
      if (name != "rtn" && rtn_k > 0)
        std::cout << fmt::format("  (on {}: removes {:.0f}% of RTN's ppl increase)", runs.front().dppl.begin()->first,
                                 100 * (1 - win_k / rtn_k));
      std::cout << "\n";
    }
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
