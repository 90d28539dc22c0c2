// The knapsack solvers against brute force, Spearman against hand-computed ranks, the logical
// size formula, and the SVG plots' structure.
#include <catch2/catch.hpp>
#include <cmath>
#include <random>

#include "../../cli/svg.h"
#include "quant/bitplan.h"
#include "quant/calibration/sweep.h"

using namespace quant;

namespace {
// Every combination: the least damage within the budget.
double brute_force(const std::vector<std::vector<KnapsackOption>>& units, int64_t budget) {
  double best = INFINITY;
  std::vector<size_t> k(units.size(), 0);
  while (true) {
    int64_t c = 0;
    double d = 0;
    for (size_t u = 0; u < units.size(); ++u) {
      c += units[u][k[u]].cost;
      d += units[u][k[u]].damage;
    }
    if (c <= budget) best = std::min(best, d);
    size_t u = 0;
    while (u < units.size() && ++k[u] == units[u].size()) k[u++] = 0;
    if (u == units.size()) break;
  }
  return best;
}
}  // namespace

TEST_CASE("knapsack: the exact DP finds brute force's optimum, greedy is feasible and never better", "[unit][bitplan]") {
  std::mt19937_64 rng(7);
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<std::vector<KnapsackOption>> units(1 + rng() % 6);
    for (auto& u : units) {
      const int64_t n = 1 + static_cast<int64_t>(rng() % 5) * 256;  // a tensor's weights
      for (int b : {2, 3, 4, 8}) {
        // Damage shrinks with width, with noise so hulls are not always convex.
        const double d = std::ldexp(1.0, -2 * b) * (0.5 + std::uniform_real_distribution<double>(0, 1)(rng));
        u.push_back({n * b + (n / 128 + 1) * (16 + b), d});
      }
    }
    const int64_t lo = knapsack_min_cost(units);
    const int64_t budget = lo + static_cast<int64_t>(rng() % static_cast<uint64_t>(4 * lo + 1));
    const double want = brute_force(units, budget);
    const KnapsackSolution ex = knapsack_exact(units, budget);
    INFO("trial " << trial << " budget " << budget);
    REQUIRE(ex.feasible);
    CHECK(ex.cost <= budget);
    CHECK(ex.damage == Approx(want).epsilon(1e-12));
    const KnapsackSolution gr = knapsack_greedy(units, budget);
    REQUIRE(gr.feasible);
    CHECK(gr.cost <= budget);
    CHECK(gr.damage >= want * (1 - 1e-12));
    // A coarse DP (costs rounded up to budget / 16) stays within budget and is no better.
    const KnapsackSolution coarse = knapsack_exact(units, budget, 16);
    REQUIRE(coarse.feasible);
    CHECK(coarse.cost <= budget);
    CHECK(coarse.damage >= want * (1 - 1e-12));
  }
  // Below the cheapest plan nothing is feasible.
  const std::vector<std::vector<KnapsackOption>> one = {{{100, 1.0}, {200, 0.5}}};
  CHECK_FALSE(knapsack_exact(one, 99).feasible);
  CHECK_FALSE(knapsack_greedy(one, 99).feasible);
  CHECK(knapsack_exact(one, 200).choice[0] == 1);
}

TEST_CASE("spearman: ranks with ties, perfect and reversed orders, constant input", "[unit][bitplan]") {
  CHECK(spearman({1, 2, 3, 4}, {10, 20, 30, 40}) == Approx(1.0));
  CHECK(spearman({1, 2, 3, 4}, {4, 3, 2, 1}) == Approx(-1.0));
  // a ranks 1, 2.5, 2.5, 4; b ranks 1, 3, 2, 4: Pearson of the ranks = 4.5 / sqrt(4.5 * 5).
  CHECK(spearman({1, 2, 2, 3}, {5, 7, 6, 9}) == Approx(4.5 / std::sqrt(4.5 * 5.0)));
  CHECK(std::isnan(spearman({1, 1, 1}, {1, 2, 3})));
  CHECK(std::isnan(spearman({1}, {2})));
}

TEST_CASE("grid_logical_bits: codes, fp16 scales and zeros, equal to logical_bpw when the group divides", "[unit][bitplan]") {
  for (int b : {2, 3, 4, 8})
    for (int64_t g : {32, 64, 128, 0})
      for (bool sym : {false, true}) {
        const GridSpec s{b, g, sym};
        CHECK(static_cast<double>(grid_logical_bits(s, 768, 256)) == Approx(s.logical_bpw(256) * 768 * 256));
      }
  // 172 columns, group 128: two groups, the second 44 wide, each with a whole scale and zero.
  CHECK(grid_logical_bits({4, 128, false}, 10, 172) == 10 * (172 * 4 + 2 * 20));
}

TEST_CASE("SVG plots: one mark per point, one cell per value, escaped labels, nice ticks", "[unit][report]") {
  using namespace quant::cli;
  ScatterSpec s;
  s.id = "p";
  s.title = "a < b & c";
  s.pareto = true;
  s.points = {{1, 5, "x"}, {2, 3, "y"}, {3, 4, "z"}, {4, 1, "w"}};
  const std::string svg = scatter_svg(s);
  size_t marks = 0;
  for (size_t p = svg.find("class=\"mark\""); p != std::string::npos; p = svg.find("class=\"mark\"", p + 1)) ++marks;
  CHECK(marks == 4);
  CHECK(svg.find("a &lt; b &amp; c") != std::string::npos);
  CHECK(svg.find("class=\"pareto\"") != std::string::npos);
  HeatmapSpec h;
  h.id = "h";
  h.rows = {"r0", "r1"};
  h.cols = {"2 bits", "4 bits", "8 bits"};
  h.values = {{0.1, 0.01, 0.001}, {0.2, std::nan(""), 0.002}};
  const std::string hs = heatmap_svg(h);
  size_t cells = 0;
  for (size_t p = hs.find("class=\"cell\""); p != std::string::npos; p = hs.find("class=\"cell\"", p + 1)) ++cells;
  CHECK(cells == 6);
  CHECK(hs.find("data-marks=\"5\"") != std::string::npos);  // five finite values
  const auto t = nice_ticks(0.13, 0.92, 5);
  REQUIRE(t.size() >= 3);
  CHECK(t.front() >= 0.13);
  CHECK(t.back() <= 0.92);
  CHECK(colormap(0) == "#440154");
  CHECK(colormap(1) == "#fde725");
}
