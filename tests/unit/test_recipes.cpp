// Recipes by name, the rule that picks a target's default, and the code's defaults against the
// measured table (docs/recipes.jsonl, written by bench/recipes.sh).
#include <catch2/catch.hpp>

#include "../common.h"
#include "quant/error.h"
#include "quant/recipes.h"

TEST_CASE("recipes: every candidate parses to itself, with the convert flags it stands for", "[recipes]") {
  for (const auto& name : quant::recipe_candidates()) {
    const quant::Recipe r = quant::Recipe::parse(name);
    CHECK(r.name() == name);
    CHECK(quant::Recipe::parse(r.name()) == r);
  }
  const quant::Recipe g = quant::Recipe::parse("gptq-act-damp0.1-mse");
  CHECK(g.method == quant::Method::Gptq);
  CHECK(g.act_order);
  CHECK(g.damp == 0.1);
  CHECK(g.mse);
  CHECK(g.convert_flags(3, 0) == std::vector<std::string>{"--method", "gptq", "--bits", "3", "--group-size", "0", "--asym",
                                                          "--act-order", "--damp", "0.1", "--grid-search", "mse"});
  CHECK(quant::Recipe::parse("rtn").convert_flags(4, 128) ==
        std::vector<std::string>{"--method", "rtn", "--bits", "4", "--group-size", "128", "--asym", "--grid-search", "minmax"});
  CHECK(quant::Recipe::parse("gptq-damp0.01").name() == "gptq");  // the default damping is not spelled
  CHECK_FALSE(quant::Recipe::parse("rtn").needs_calibration());
  CHECK(quant::Recipe::parse("awq").needs_calibration());
}

TEST_CASE("recipes: a bad name is one line naming the part and the forms that work", "[recipes][bad-input]") {
  auto msg = [](const std::string& name) {
    try {
      quant::Recipe::parse(name);
    } catch (const quant::Error& e) {
      return std::string(e.what());
    }
    return std::string("(accepted)");
  };
  CHECK_THAT(msg("foo"), Catch::Contains("unknown method foo") && Catch::Contains("METHOD[-act][-dampX][-mse]"));
  CHECK_THAT(msg("rtn-act"), Catch::Contains("GPTQ setting"));
  CHECK_THAT(msg("awq-damp0.1"), Catch::Contains("GPTQ setting"));
  CHECK_THAT(msg("gptq-damp2"), Catch::Contains("(0, 1)"));
  CHECK_THAT(msg("gptq-dampx"), Catch::Contains("(0, 1)"));
  CHECK_THAT(msg("gptq-mse-mse"), Catch::Contains("'mse'"));
  CHECK_THAT(msg("gptq-mse-act"), Catch::Contains("'act'"));  // one order, so one name per recipe
  CHECK_THAT(msg("gptq-"), Catch::Contains("''"));
  CHECK_THAT(msg("smoothquant"), Catch::Contains("unknown method"));
}

TEST_CASE("recipes: the rule takes the lowest mean, only among recipes no worse than RTN on every text, cheaper on a tie",
          "[recipes]") {
  const std::string jsonl = R"({"recipe": "fp16", "bits": 16, "group": 0, "a.txt": {"ppl": 100}, "b.txt": {"ppl": 200}}
{"recipe": "rtn", "bits": 3, "group": 128, "a.txt": {"ppl": 104}, "b.txt": {"ppl": 204}}
{"recipe": "gptq", "bits": 3, "group": 128, "a.txt": {"ppl": 101}, "b.txt": {"ppl": 204.2}}
{"recipe": "gptq-act", "bits": 3, "group": 128, "a.txt": {"ppl": 102}, "b.txt": {"ppl": 203}}
{"recipe": "gptq-act-mse", "bits": 3, "group": 128, "a.txt": {"ppl": 102}, "b.txt": {"ppl": 202.99}}
{"recipe": "rtn", "bits": 4, "group": 128, "a.txt": {"ppl": 101}, "b.txt": {"ppl": 201}}
{"recipe": "gptq", "bits": 4, "group": 128, "a.txt": {"ppl": 101.5}, "b.txt": {"ppl": 201}}
)";
  const auto runs = quant::parse_recipe_runs(jsonl, "t.jsonl");
  REQUIRE(runs.size() == 6);
  CHECK(runs[1].dppl.at("a.txt") == Approx(0.01));
  const auto w = quant::recipe_winners(runs);
  // gptq has the lowest mean but is worse than RTN on b.txt; gptq-act-mse is 0.0025 points
  // better than gptq-act, within the tie band, so the cheaper gptq-act wins.
  CHECK(w.at({3, 128}) == "gptq-act");
  CHECK(w.at({4, 128}) == "rtn");
  CHECK_THROWS_WITH(quant::parse_recipe_runs(R"({"recipe": "rtn", "bits": 3, "group": 0})", "x.jsonl"), Catch::Contains("no fp16 line"));
  CHECK_THROWS_WITH(quant::parse_recipe_runs("{\"recipe\": \"fp16\", \"a.txt\": {\"ppl\": 1}}\n{\"recipe\": \"rtn\", \"bits\": 3, \"group\": 0}",
                                             "x.jsonl"),
                    Catch::Contains("no ppl on a.txt"));
}

TEST_CASE("recipes: the code's defaults are the winners of the measured table (docs/recipes.jsonl)", "[recipes]") {
  const std::string path = qt::repo("docs/recipes.jsonl");
  REQUIRE(std::filesystem::exists(path));  // bench/recipes.sh's results, committed
  const auto winners = quant::recipe_winners(quant::parse_recipe_runs(qt::slurp(path), path));
  REQUIRE(!winners.empty());
  for (const auto& [t, name] : winners) {
    INFO(t.bits << " bits, group " << t.group);
    CHECK(quant::default_recipe(t).name() == name);
  }
  CHECK(quant::default_recipe_table() == winners);
}
