// Plans from sweeps: one option per unit under a size budget (the knapsack of quant/bitplan.h),
// written as {match, method, grid or type} rules that `quant convert --plan` applies.
#include <algorithm>
#include <cmath>
#include <map>
#include <set>

#include "quant/bitplan.h"
#include "quant/calibration/sweep.h"
#include "quant/error.h"

namespace quant {

namespace {

// Each option of the sweep by name: its type (typed sweeps) or its width.
std::vector<std::string> option_names(const Sweep& sw) {
  std::vector<std::string> out;
  for (size_t k = 0; k < sw.settings.options(); ++k)
    out.push_back(sw.settings.typed() ? sw.settings.qtypes[k] : std::to_string(sw.settings.bits[k]));
  return out;
}

// The widths (types) to choose from: all the sweep measured, or the requested ones among them.
std::vector<std::string> chosen_names(const Sweep& sw, const PlanRequest& req, const std::string& sweep_file) {
  const bool typed = sw.settings.typed();
  const std::vector<std::string> measured = option_names(sw);
  std::vector<std::string> names;
  if (typed ? req.qtypes.empty() : req.bits.empty()) {
    names = measured;
  } else if (typed) {
    names = req.qtypes;
  } else {
    for (int b : req.bits) names.push_back(std::to_string(b));
  }
  for (const auto& n : names)
    QUANT_CHECK(std::count(measured.begin(), measured.end(), n), "--{} {}: {} measured only {}", typed ? "qtypes" : "bits", n, sweep_file,
                fmt::join(measured, ","));
  return names;
}

}  // namespace

BitPlan plan_from_sweep(const Sweep& sw, const PlanRequest& req, const std::string& sweep_file) {
  std::string objective = req.objective.empty() ? (sw.proxy_only ? "proxy" : "kl") : req.objective;
  QUANT_CHECK(objective == "kl" || objective == "dppl" || objective == "proxy", "--objective {} (kl, dppl or proxy)", objective);
  QUANT_CHECK(objective == "proxy" || !sw.proxy_only, "{}: a --proxy-only sweep has no measured {}: use --objective proxy", sweep_file,
              objective);
  QUANT_CHECK(req.solver == "exact" || req.solver == "greedy", "--solver {} (exact or greedy)", req.solver);
  QUANT_CHECK((req.target_bpw > 0) + (req.target_size_mb > 0) + (req.linear_bpw > 0) == 1,
              "give one of --target-bpw, --target-size or --linear-bpw");
  const bool typed = sw.settings.typed();
  QUANT_CHECK(typed || req.qtypes.empty(), "--qtypes: {} is a sweep of integer grids (--bits)", sweep_file);
  QUANT_CHECK(!typed || req.bits.empty(), "--bits: {} is a sweep of GGUF types: choose among them with --qtypes", sweep_file);
  const QuantSpec rest = QuantSpec::parse(req.rest);
  int64_t linear_params = 0;
  std::set<std::string> linears;
  for (const auto& u : sw.units) {
    linear_params += u.params;
    linears.insert(u.tensors.begin(), u.tensors.end());
  }
  // Everything the budget does not choose: token_embd / output at `rest`, vectors F32.
  double rest_bits = 0;
  int64_t all_params = 0;
  for (const auto& t : sw.model.at("tensors")) {
    const std::string name = t.at(0).get<std::string>();
    const int64_t n = t.at(1).get<int64_t>() * t.at(2).get<int64_t>();
    all_params += n;
    if (linears.count(name)) continue;
    const int64_t rows = t.at(1).get<int64_t>(), cols = t.at(2).get<int64_t>();
    if (rows == 1)
      rest_bits += 32.0 * static_cast<double>(n);  // vectors stay F32
    else if (rest.kind == QuantSpec::Kind::Grid)
      rest_bits += static_cast<double>(grid_logical_bits(rest.grid, rows, cols));
    else
      rest_bits += static_cast<double>(n) * type_bpw(rest.type);
  }
  const std::vector<std::string> measured = option_names(sw);
  const std::vector<std::string> names = chosen_names(sw, req, sweep_file);
  const auto name_of = [&](const SweepOption& o) { return typed ? o.spec : std::to_string(o.bits); };
  const auto allowed = [&](const SweepOption& o) { return std::count(names.begin(), names.end(), name_of(o)) > 0; };
  std::vector<int> widths;
  for (size_t k = 0; k < measured.size(); ++k)
    if (std::count(names.begin(), names.end(), measured[k])) widths.push_back(sw.settings.bits[k]);
  std::sort(widths.begin(), widths.end());
  widths.erase(std::unique(widths.begin(), widths.end()), widths.end());
  std::vector<std::vector<KnapsackOption>> units;
  std::vector<std::vector<size_t>> option_of;  // knapsack option -> index in the unit's options
  for (const auto& u : sw.units) {
    std::vector<KnapsackOption> opts;
    option_of.emplace_back();
    for (size_t k = 0; k < u.options.size(); ++k) {
      const SweepOption& o = u.options[k];
      if (!allowed(o)) continue;
      opts.push_back({o.logical_bits, objective == "kl" ? o.kl_mean : objective == "dppl" ? o.dppl : o.proxy});
      option_of.back().push_back(k);
    }
    units.push_back(std::move(opts));
  }
  const int64_t min_bits = knapsack_min_cost(units);
  const double min_bpw = static_cast<double>(min_bits) / static_cast<double>(linear_params);
  int64_t budget = 0;
  nlohmann::json bj;
  if (req.linear_bpw > 0) {  // the swept matrices alone
    QUANT_CHECK(req.linear_bpw <= 16, "--linear-bpw {} is above FP16 (16 bits per weight)", req.linear_bpw);
    QUANT_CHECK(req.linear_bpw * static_cast<double>(linear_params) >= static_cast<double>(min_bits),
                "--linear-bpw {} is below the smallest plan this sweep allows: {:.4f} bits per swept weight (every unit at its smallest of {})",
                req.linear_bpw, min_bpw, fmt::join(names, ","));
    budget = static_cast<int64_t>(std::floor(req.linear_bpw * static_cast<double>(linear_params)));
    bj = {{"linear_bpw", req.linear_bpw}};
  } else {  // the whole model: every tensor's data, the rest and the vectors included
    const double all = static_cast<double>(all_params);
    const double smallest = rest_bits + static_cast<double>(min_bits);
    const std::string rest_note = typed ? "" : ", the rest " + req.rest;
    double total_bits = 0;
    if (req.target_bpw > 0) {
      total_bits = req.target_bpw * all;
      QUANT_CHECK(req.target_bpw <= 16, "--target-bpw {} is above FP16 (16 bits per weight)", req.target_bpw);
      QUANT_CHECK(total_bits >= smallest,
                  "--target-bpw {} is below the smallest plan this sweep allows: {:.4f} bits per weight over all {} parameters (every "
                  "unit at its smallest of {}{})",
                  req.target_bpw, smallest / all, all_params, fmt::join(names, ","), rest_note);
      bj = {{"target_bpw", req.target_bpw}};
    } else {
      total_bits = req.target_size_mb * 8e6;
      const double fp16_mb = 2.0 * all / 1e6;
      QUANT_CHECK(req.target_size_mb <= fp16_mb, "--target-size {} MB is above the FP16 model's {:.3f} MB", req.target_size_mb, fp16_mb);
      QUANT_CHECK(total_bits >= smallest,
                  "--target-size {} MB is below the smallest plan this sweep allows: {:.3f} MB (every unit at its smallest of {}{})",
                  req.target_size_mb, smallest / 8e6, fmt::join(names, ","), rest_note);
      bj = {{"target_size_mb", req.target_size_mb}};
    }
    budget = static_cast<int64_t>(std::floor(total_bits - rest_bits));
    bj["counts"] = "every tensor's data (the rest and the vectors included); a file adds its header";
  }
  const KnapsackSolution ex = knapsack_exact(units, budget);
  const KnapsackSolution gr = knapsack_greedy(units, budget);
  QUANT_CHECK(ex.feasible && gr.feasible, "no plan fits the budget of {} bits", budget);
  const KnapsackSolution& pick = req.solver == "exact" ? ex : gr;
  BitPlan p;
  p.model = sw.model;
  p.method = sw.settings.method;
  p.rest = req.rest;
  std::map<std::string, int64_t> params_at;
  double kl = 0, dppl = 0, proxy = 0;
  for (size_t i = 0; i < sw.units.size(); ++i) {
    const SweepUnit& u = sw.units[i];
    const SweepOption& o = u.options[option_of[i][static_cast<size_t>(pick.choice[i])]];
    for (const auto& m : u.match) {
      BitPlanRule r;
      r.match = m;
      r.method = p.method;
      r.bits = o.bits;
      r.qtype = o.qtype;
      r.unit = u.name;
      if (typed) {
        r.type = o.spec;
        r.group = 0;
      } else {
        const GridSpec g = sw.settings.grid_for(o.bits);
        r.group = g.group;
        r.sym = g.sym;
      }
      p.rules.push_back(r);
    }
    params_at[name_of(o)] += u.params;
    kl += o.kl_mean;
    dppl += o.dppl;
    proxy += o.proxy;
  }
  nlohmann::json mix = nlohmann::json::object();
  for (const auto& [b, n] : params_at) mix[b] = static_cast<double>(n) / static_cast<double>(linear_params);
  bj["budget_bits"] = budget;
  bj["decoder_linear_params"] = linear_params;
  bj["decoder_linear_bpw"] = static_cast<double>(pick.cost) / static_cast<double>(linear_params);
  bj["logical_size_mb"] = (static_cast<double>(pick.cost) + rest_bits) / 8e6;
  bj["model_bpw"] = (static_cast<double>(pick.cost) + rest_bits) / static_cast<double>(all_params);
  bj["smallest_bpw"] = min_bpw;
  if (typed) bj["qtypes"] = names;
  else bj["widths"] = widths;
  bj[typed ? "share_of_weights_by_type" : "share_of_weights_by_bits"] = mix;
  if (typed) bj["swept"] = "every matrix (token_embd and output included): decoder_linear_bpw counts them all, in stored bits";
  p.budget = bj;
  auto sol = [&](const KnapsackSolution& s) {
    return nlohmann::json{{"damage", s.damage}, {"bits", s.cost},
                          {"bpw", static_cast<double>(s.cost) / static_cast<double>(linear_params)}, {"quantum_bits", s.quantum}};
  };
  p.predicted = {{"objective", objective}, {"solver", req.solver}, {"sum_" + objective, pick.damage},
                 {"exact", sol(ex)}, {"greedy", sol(gr)},
                 {"greedy_gap", ex.damage > 0 ? gr.damage / ex.damage - 1 : 0.0}};
  if (!sw.proxy_only) {
    p.predicted["sum_kl_mean"] = kl;
    p.predicted["sum_dppl"] = dppl;
  }
  p.predicted["sum_proxy"] = proxy;
  nlohmann::json settings = {{"method", method_name(sw.settings.method)}, {"granularity", sw.settings.granularity},
                             {"bits", sw.settings.bits}, {"group", sw.settings.group}, {"sym", sw.settings.sym}};
  if (typed) settings["qtypes"] = sw.settings.qtypes;
  p.source = {{"sweep", sweep_file}, {"settings", settings},
              {"eval", sw.eval}, {"calibration", sw.calibration}};
  return p;
}

}  // namespace quant
