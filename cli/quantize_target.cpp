// quant quantize --target-size / --target-bpw: a GGUF type per tensor under a budget for the whole
// file. The damage of each type on each tensor is measured once (quant sweep --qtypes, kept in the
// work directory and reused while its inputs stay the same), the plan is the cheapest-damage choice
// whose file (header, tokenizer, padding and all) fits the budget (quant plan), and the model is
// quantized onto the planned types (quant convert --plan).
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <set>

#include "commands.h"
#include "progress.h"
#include "quant/bitplan.h"
#include "quant/error.h"
#include "quant/formats/loader.h"
#include "quant/formats/mmap.h"
#include "quant/qtype.h"

namespace quant::cli {

namespace fs = std::filesystem;

namespace {

// The stage's own keys (quant.gptq, quant.calibration) are written after the plan is made: a few
// hundred bytes, kept free.
constexpr uint64_t kStageKeysBytes = 1024;

std::string default_work_dir(const std::string& out) {
  const fs::path o(out);
  return (o.parent_path() / (o.stem().string() + "-plan")).string();
}

// What the sweep depends on: the same key, the same sweep.json.
nlohmann::json sweep_key(const SweepArgs& s, const nlohmann::json& identity) {
  return {{"format", "quant-quantize-sweep-key"}, {"version", 1},           {"model", identity},
          {"calibration", s.calib.to_json()},      {"method", s.method},    {"qtypes", s.qtypes},
          {"chunks", s.chunks},                     {"ctx", s.ctx},          {"act_order", s.gptq.act_order},
          {"damp", s.gptq.damp}};
}

Sweep sweep_for_target(const std::string& work, const SweepArgs& s, const nlohmann::json& key, bool* reused) {
  const std::string key_file = (fs::path(work) / "sweep-key.json").string();
  *reused = false;
  if (fs::is_regular_file(s.out) && fs::is_regular_file(key_file)) {
    const nlohmann::json old = nlohmann::json::parse(std::ifstream(key_file), nullptr, false);
    if (!old.is_discarded() && old == key) {
      *reused = true;
      if (!s.quiet) std::cerr << fmt::format("quantize: reusing the sweep {} (same model, calibration and types)\n", s.out);
      return Sweep::from_json(read_json_file(s.out, "sweep"), s.out);
    }
  }
  fs::remove(key_file);  // a sweep.json without its key is never reused
  Sweep sw = sweep_model(s);
  write_atomic(key_file, key.dump(1));
  return sw;
}

// Bits of the smallest plan the sweep allows (every unit at its smallest type), vectors as F32.
double smallest_tensor_bits(const Sweep& sw) {
  double bits = 0;
  std::set<std::string> swept;
  for (const auto& u : sw.units) {
    int64_t least = -1;
    for (const auto& o : u.options) least = least < 0 ? o.logical_bits : std::min(least, o.logical_bits);
    bits += static_cast<double>(least);
    swept.insert(u.tensors.begin(), u.tensors.end());
  }
  for (const auto& t : sw.model.at("tensors"))
    if (!swept.count(t.at(0).get<std::string>())) bits += 32.0 * t.at(1).get<double>() * t.at(2).get<double>();
  return bits;
}

}  // namespace

TargetResult quantize_to_target(const QuantizeArgs& a, const std::string& calib_file, const std::string& eval_step) {
  QUANT_CHECK((a.target_bpw > 0) != (a.target_size > 0), "give one of --target-bpw or --target-size");
  const bool onnx = a.format == "onnx" || (a.format.empty() && fs::path(a.out).extension() == ".onnx");
  QUANT_CHECK(!onnx, "--target-bpw / --target-size choose a GGUF type per tensor: write a .gguf, or give --bits for ONNX");
  const Recipe recipe = a.recipe.empty() ? Recipe::parse("gptq") : Recipe::parse(a.recipe);
  QUANT_CHECK(recipe.method == Method::Rtn || recipe.method == Method::Gptq,
              "--recipe {} with a size target: the per-tensor types are measured and written with rtn or gptq[-act][-dampX]",
              recipe.name());
  const std::string work = a.work.empty() ? default_work_dir(a.out) : a.work;
  QUANT_CHECK(!fs::exists(work) || fs::is_directory(work), "{}: not a directory (the sweep and the plan are kept there)", work);
  LoadedModel m = load_model(a.model, {a.tokenizer});
  int64_t params = 0;
  for (const auto& t : m.weights->tensors()) params += t.rows * t.cols;
  const double target_bytes = a.target_size > 0 ? a.target_size * 1e6 : a.target_bpw * static_cast<double>(params) / 8;
  QUANT_CHECK(a.target_bpw <= 16, "--target-bpw {} is above FP16 (16 bits per weight)", a.target_bpw);
  const std::string what = a.target_size > 0 ? fmt::format("--target-size {} MB", a.target_size)
                                             : fmt::format("--target-bpw {} ({:.0f} bytes for {} parameters)", a.target_bpw, target_bytes, params);
  {  // a budget below every matrix at the narrowest type is refused before any work
    SweepSettings st;
    st.qtypes = a.sweep_types;
    st.bits = SweepSettings::nominal_bits(a.sweep_types);
    st.check();
    double narrowest = 16, lower = 0;
    for (const auto& t : a.sweep_types) narrowest = std::min(narrowest, type_bpw(*ttype_from_name(t)));
    for (const auto& t : m.weights->tensors())
      lower += static_cast<double>(t.rows * t.cols) * (t.n_dims == 1 || t.rows == 1 ? 32 : narrowest) / 8;
    QUANT_CHECK(target_bytes >= lower, "{} is below the smallest file this model allows: more than {:.3f} MB ({} for every matrix, "
                "vectors F32, and the header); give a larger target or add a narrower type to --sweep-types",
                what, lower / 1e6, a.sweep_types[static_cast<size_t>(std::min_element(st.bits.begin(), st.bits.end()) - st.bits.begin())]);
  }
  fs::create_directories(work);

  SweepArgs s;
  s.model = a.model;
  s.text = calib_file;  // the damage is measured on calibration text, never on the held-out one
  s.out = (fs::path(work) / "sweep.json").string();
  s.method = method_name(recipe.method);
  s.qtypes = a.sweep_types;
  s.chunks = a.sweep_chunks;
  s.spread = true;
  s.ctx = std::min<int64_t>(512, m.config.max_ctx);
  s.calib = a.calib;
  s.calib.file = calib_file;
  s.gptq.act_order = recipe.act_order;
  s.gptq.damp = recipe.damp;
  s.threads = a.threads;
  s.quiet = a.quiet;
  if (!a.quiet)
    std::cerr << fmt::format("quantize: {} for the whole file: 1/3 measure {} on every matrix ({} windows of {}), 2/3 plan, 3/3 {} onto "
                             "the planned types\n",
                             what, fmt::join(s.qtypes, ","), s.chunks, fs::path(calib_file).filename().string(), s.method);
  const std::string convert_step = fmt::format("plan, {} onto the planned types", s.method);
  steps_after() = eval_step.empty() ? convert_step : convert_step + ", " + eval_step;
  bool reused = false;
  const Sweep sw = sweep_for_target(work, s, sweep_key(s, model_identity(m.config, *m.weights)), &reused);

  const std::string plan_file = (fs::path(work) / "plan.json").string();
  ConvertArgs c;
  c.model = a.model;
  c.out = a.out;
  c.format = "gguf";
  c.tokenizer = a.tokenizer;
  c.threads = a.threads;
  c.quiet = a.quiet;
  c.plan_file = plan_file;
  c.gptq.act_order = recipe.act_order;
  c.gptq.damp = recipe.damp;
  if (recipe.method == Method::Gptq) c.calib = s.calib;
  const double smallest = smallest_tensor_bits(sw) / 8;
  uint64_t overhead = 0;  // the file's bytes beyond the tensor data: measured, then kept free
  for (int attempt = 0;; ++attempt) {
    QUANT_CHECK(attempt < 6, "{}: no plan's file fits after {} tries (the header grows with the plan?)", what, attempt);
    const double data = target_bytes - static_cast<double>(overhead);
    QUANT_CHECK(data >= smallest && target_bytes > static_cast<double>(overhead),
                "{} is below the smallest file this model allows: {:.3f} MB (every matrix at its narrowest measured type, {:.3f} MB "
                "of header); give a larger target or add a narrower type to --sweep-types",
                what, (smallest + static_cast<double>(overhead)) / 1e6, static_cast<double>(overhead) / 1e6);
    PlanRequest req;
    req.target_size_mb = data / 1e6;
    const BitPlan p = plan_from_sweep(sw, req, s.out);
    forget_input(plan_file);  // the last try's plan, read by its dry run
    write_atomic(plan_file, p.to_json().dump(1));
    const double tensor_bytes = p.budget["logical_size_mb"].get<double>() * 1e6;
    // Over the target: what this plan's file holds beyond its tensor data is the room to keep free next time.
    const auto over = [&](uint64_t file_bytes) {
      if (static_cast<double>(file_bytes) <= target_bytes) return false;
      overhead = std::max(overhead + 64, static_cast<uint64_t>(static_cast<double>(file_bytes) - tensor_bytes));
      return true;
    };
    c.dry_run = true;
    const uint64_t est = convert_model(c, false).summary["file_bytes_before_stage_keys"].get<uint64_t>() + kStageKeysBytes;
    if (over(est)) continue;
    c.dry_run = false;
    steps_after() = eval_step;
    ConvertResult conv = convert_model(c, false);
    const auto bytes = conv.summary["file_size_bytes"].get<uint64_t>();
    if (over(bytes)) continue;  // the stage's keys outgrew their room
    TargetResult r;
    r.conv = std::move(conv);
    r.recipe = recipe;
    r.info = {{"target", a.target_size > 0 ? nlohmann::json{{"size_mb", a.target_size}} : nlohmann::json{{"bpw", a.target_bpw}}},
              {"target_bytes", target_bytes},
              {"counts", "the whole file: header (tokenizer, metadata), every tensor, padding"},
              {"params", params},
              {"sweep", s.out},
              {"sweep_reused", reused},
              {"plan", plan_file},
              {"types", p.budget["share_of_weights_by_type"]},
              {"predicted_sum_kl", p.predicted["sum_kl"]}};
    std::vector<std::string> mix;
    for (const auto& [t, share] : p.budget["share_of_weights_by_type"].items())
      mix.push_back(fmt::format("{} {:.0f}%", t, 100 * share.get<double>()));
    r.line = fmt::format("plan {} ({}): {} of the weights; {} sweep {}{}\n", plan_file, what, fmt::join(mix, ", "), s.method, s.out,
                         reused ? " (reused)" : "");
    return r;
  }
}

}  // namespace quant::cli
