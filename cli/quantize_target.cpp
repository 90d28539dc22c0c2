// quant quantize --target-size / --target-bpw: a type per tensor under a budget for the whole file
// (GGUF: llama.cpp types; ONNX: MatMulNBits grids, the .data file included). The damage of each
// type on each tensor is measured once (quant sweep --qtypes, kept in the work directory and
// reused while its inputs stay the same), each costed as the output format stores it, the plan is
// the cheapest-damage choice whose file (header, tokenizer, graph, padding and all) fits the
// budget (quant plan), and the model is quantized onto the planned types (quant convert --plan).
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <set>

#include "commands.h"
#include "progress.h"
#include "quant/bitplan.h"
#include "quant/error.h"
#include "quant/formats/loader.h"
#include "quant/formats/mmap.h"
#include "quant/formats/onnx_model.h"
#include "quant/qtype.h"

namespace quant::cli {

namespace fs = std::filesystem;

namespace {

// The stage's own keys (quant.gptq, quant.calibration) are written after the plan is made: a few
// hundred bytes, kept free.
constexpr uint64_t kStageKeysBytes = 1024;

// What a size target chooses among when --sweep-types is not given.
const std::vector<std::string> kGgufSweepTypes = {"Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_0"};
// MatMulNBits holds 2..4-bit codes in 4-bit blobs: the ONNX file's sizes are set by the group's
// scales and zero points and by 8 bits (4.28, 4.56, 5.13 and 8.25 bits per weight).
const std::vector<std::string> kOnnxSweepTypes = {"int4 g128 asym", "int4 g64 asym", "int4 g32 asym", "int8 g128 sym"};

// Beside the output: OUT-plan/ for OUT.gguf, DIR-plan/ for DIR/model.onnx (the exporter wants its
// directory to itself).
std::string default_work_dir(const std::string& out, bool onnx) {
  const fs::path o = fs::absolute(out);
  if (onnx && fs::path(out).has_parent_path())
    return (o.parent_path().parent_path() / (o.parent_path().filename().string() + "-plan")).string();
  return (o.parent_path() / (o.stem().string() + "-plan")).string();
}

// The bits each tensor of the model takes in the output file when quantized onto `spec`: GGUF's
// stored type, or the ONNX exporter's storage (MatMulNBits blobs with scales and zero points, the
// embedding F16); vectors F32 in both.
std::map<std::string, double> file_bits_at(const std::string& spec, const std::vector<TensorDesc>& tensors, bool onnx) {
  std::vector<TensorPlan> plans = resolve_policy(Policy{{{"*", QuantSpec::parse(spec)}}, {}}, tensors);
  if (onnx) resolve_onnx_storage(plans);
  std::map<std::string, double> bits;
  for (const auto& p : plans) {
    const double n = static_cast<double>(p.rows * p.cols);
    bits[p.name] = p.n_dims == 1 || p.rows == 1 ? 32 * n : onnx ? p.stored_bpw * n : 8.0 * static_cast<double>(p.rows * row_bytes(p.stored, p.cols));
  }
  return bits;
}

// The sweep's options costed as the ONNX file stores them; the embedding, which ONNX keeps F16
// whatever the plan says (a Gather of rows), does no damage at any option.
Sweep costed_for_onnx(Sweep sw, const std::vector<TensorDesc>& tensors) {
  std::vector<std::map<std::string, double>> bits;
  for (const auto& t : sw.settings.qtypes) bits.push_back(file_bits_at(t, tensors, true));
  for (auto& u : sw.units)
    for (size_t k = 0; k < u.options.size(); ++k) {
      SweepOption& o = u.options[k];
      double b = 0;
      for (const auto& t : u.tensors) b += bits[k].at(t);
      o.logical_bits = static_cast<int64_t>(std::ceil(b));
      if (u.tensors == std::vector<std::string>{"token_embd.weight"}) o.kl_mean = o.kl_p99 = o.dppl = o.proxy = 0;
    }
  return sw;
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

// The GGUF's bytes under the plan `c` names, before any tensor is quantized: its header (every key
// and tensor declaration) and data, as the writer lays them out (convert --dry-run).
uint64_t gguf_file_bytes(ConvertArgs c) {
  c.dry_run = true;
  return convert_model(c, false).summary["file_bytes_before_stage_keys"].get<uint64_t>() + kStageKeysBytes;
}

// The ONNX model's bytes under plan `p`: the plan written by RTN into a scratch directory (graph,
// metadata and initializers; the sizes do not depend on the values), plus room for what GPTQ
// records beyond RTN (its keys, a longer method name per tensor).
uint64_t onnx_file_bytes(ConvertArgs c, BitPlan p, const std::string& work) {
  p.method = Method::Rtn;
  for (auto& r : p.rules) r.method = Method::Rtn;
  const fs::path dir = fs::path(work) / "size-probe";
  fs::remove_all(dir);
  c.plan_file = (fs::path(work) / "size-probe.plan.json").string();
  write_atomic(c.plan_file, p.to_json().dump(1));
  c.out = (dir / "model.onnx").string();
  c.calib = CalibSpec{};
  c.gptq = GptqOptions{};
  c.quiet = true;
  const ConvertResult r = convert_model(c, false);
  fs::remove_all(dir);
  fs::remove(c.plan_file);
  return r.summary["file_size_bytes"].get<uint64_t>() + kStageKeysBytes + 16 * r.plans.size();
}

}  // namespace

TargetResult quantize_to_target(const QuantizeArgs& a, const std::string& calib_file, const std::vector<StepAfter>& eval_step) {
  QUANT_CHECK((a.target_bpw > 0) != (a.target_size > 0), "give one of --target-bpw or --target-size");
  const bool onnx = a.format == "onnx" || (a.format.empty() && fs::path(a.out).extension() == ".onnx");
  const std::vector<std::string> types = !a.sweep_types.empty() ? a.sweep_types : onnx ? kOnnxSweepTypes : kGgufSweepTypes;
  const Recipe recipe = a.recipe.empty() ? Recipe::parse("gptq") : Recipe::parse(a.recipe);
  QUANT_CHECK(recipe.method == Method::Rtn || recipe.method == Method::Gptq,
              "--recipe {} with a size target: the per-tensor types are measured and written with rtn or gptq[-act][-dampX]",
              recipe.name());
  const std::string work = a.work.empty() ? default_work_dir(a.out, onnx) : a.work;
  QUANT_CHECK(!fs::exists(work) || fs::is_directory(work), "{}: not a directory (the sweep and the plan are kept there)", work);
  if (onnx && fs::path(a.out).has_parent_path()) {
    const std::string dir = fs::absolute(a.out).parent_path().lexically_normal().string() + "/";
    QUANT_CHECK((fs::absolute(work).lexically_normal().string() + "/").rfind(dir, 0) != 0,
                "--work {}: inside the ONNX output's directory, which the exporter wants to itself", work);
  }
  LoadedModel m = load_model(a.model, {a.tokenizer});
  int64_t params = 0;
  for (const auto& t : m.weights->tensors()) params += t.rows * t.cols;
  const double target_bytes = a.target_size > 0 ? a.target_size * 1e6 : a.target_bpw * static_cast<double>(params) / 8;
  QUANT_CHECK(a.target_bpw <= 16, "--target-bpw {} is above FP16 (16 bits per weight)", a.target_bpw);
  const std::string what = a.target_size > 0 ? fmt::format("--target-size {} MB", a.target_size)
                                             : fmt::format("--target-bpw {} ({:.0f} bytes for {} parameters)", a.target_bpw, target_bytes, params);
  {  // a budget below every matrix at the narrowest type is refused before any work
    SweepSettings st;
    st.qtypes = types;
    st.bits = SweepSettings::nominal_bits(types);
    st.check();
    std::map<std::string, double> least;  // each tensor's smallest size among the types
    for (const auto& t : types) {
      const QuantSpec q = QuantSpec::parse(t);
      QUANT_CHECK(!onnx || q.kind == QuantSpec::Kind::Grid || q.type == TType::Q4_0 || q.type == TType::Q5_0 || q.type == TType::Q8_0,
                  "--sweep-types {}: ONNX's MatMulNBits holds integer grids (\"int4 g32 asym\") and Q4_0 / Q5_0 / Q8_0", t);
      for (const auto& [name, bits] : file_bits_at(t, m.weights->tensors(), onnx))
        least[name] = least.count(name) ? std::min(least[name], bits) : bits;
    }
    double lower = 0;
    for (const auto& [name, bits] : least) lower += bits / 8;
    QUANT_CHECK(target_bytes >= lower, "{} is below the smallest file this model allows: more than {:.3f} MB (every matrix at its "
                "smallest of {}, vectors F32{}, and the header); give a larger target or add a narrower type to --sweep-types",
                what, lower / 1e6, fmt::join(types, ","), onnx ? ", the embedding F16" : "");
  }
  fs::create_directories(work);

  SweepArgs s;
  s.model = a.model;
  s.text = calib_file;  // the damage is measured on calibration text, never on the held-out one
  s.out = (fs::path(work) / "sweep.json").string();
  s.method = method_name(recipe.method);
  s.qtypes = types;
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
  // The sweep's own bar gives its ETA; then GPTQ (or RTN) onto the planned types, and the before/after.
  std::vector<StepAfter> later = {{"sweep", "sweep"},
                                  {recipe.method == Method::Gptq ? "gptq" : "convert", fmt::format("plan, {} onto the planned types", s.method)}};
  later.insert(later.end(), eval_step.begin(), eval_step.end());
  steps_after() = later;
  bool reused = false;
  const Sweep swept = sweep_for_target(work, s, sweep_key(s, model_identity(m.config, *m.weights)), &reused);
  const Sweep sw = onnx ? costed_for_onnx(swept, m.weights->tensors()) : swept;

  const std::string plan_file = (fs::path(work) / "plan.json").string();
  ConvertArgs c;
  c.model = a.model;
  c.out = a.out;
  c.format = onnx ? "onnx" : "gguf";
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
    if (over(onnx ? onnx_file_bytes(c, p, work) : gguf_file_bytes(c))) continue;
    c.dry_run = false;
    ConvertResult conv = convert_model(c, false);
    const auto bytes = conv.summary["file_size_bytes"].get<uint64_t>();
    if (over(bytes)) continue;  // the stage's keys outgrew their room
    TargetResult r;
    r.conv = std::move(conv);
    r.recipe = recipe;
    r.info = {{"target", a.target_size > 0 ? nlohmann::json{{"size_mb", a.target_size}} : nlohmann::json{{"bpw", a.target_bpw}}},
              {"target_bytes", target_bytes},
              {"counts", onnx ? "the whole model: model.onnx and its .data if any (graph, metadata, vocabulary, every tensor)"
                              : "the whole file: header (tokenizer, metadata), every tensor, padding"},
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
