// quant convert: flags -> the per-tensor plans and the quantization stage's spec -> a writer.
// Everything between (methods per tensor, searches, GPTQ, RTN) is the stage's (calibration/stage.h).
#include <omp.h>

#include <charconv>
#include <chrono>
#include <filesystem>
#include <iostream>
#include <optional>

#include "commands.h"
#include "progress.h"
#include "quant/error.h"
#include "quant/formats/gguf_model.h"
#include "quant/formats/gptq_writer.h"
#include "quant/formats/imatrix.h"
#include "quant/formats/loader.h"
#include "quant/formats/mmap.h"
#include "quant/formats/onnx_model.h"
#include "quant/gemm.h"
#include "quant/kquants.h"
#include "quant/presets.h"
#include "quant/calibration/memory_plan.h"
#include "quant/calibration/stage.h"
#include "quant/calibration/sweep.h"

namespace quant::cli {
namespace {

// A bit-width plan (quant plan) sets each decoder linear's grid and the method, in place of
// --method / --bits; an AWQ or SmoothQuant plan stays in a.plan_file for the stage.
std::optional<BitPlan> take_bitplan(ConvertArgs& a, bool method_given) {
  if (a.plan_file.empty()) return std::nullopt;
  const nlohmann::json pj = read_json_file(a.plan_file, "plan");
  if (!pj.is_object() || pj.value("format", "") != "quant-bitplan") return std::nullopt;
  BitPlan bp = BitPlan::from_json(pj, a.plan_file);
  a.bitplan_file = a.plan_file;
  a.plan_file.clear();
  QUANT_CHECK(!method_given || a.method == method_name(bp.method), "--plan {} is a {} plan: drop --method {} (or make a {} plan)",
              a.bitplan_file, method_name(bp.method), a.method, a.method);
  QUANT_CHECK(a.bits == 0 && a.qtype.empty(), "--plan {} sets every decoder linear's width: drop --bits / --qtype", a.bitplan_file);
  a.method = method_name(bp.method);
  const QuantSpec d = bp.dominant();
  if (d.kind == QuantSpec::Kind::Grid) {
    a.bits = d.grid.bits;
    a.group = d.grid.group;
    a.sym = d.grid.sym;
  } else {
    a.qtype = d.str();  // a typed plan: its rules name every matrix's type
  }
  return bp;
}

double parse_alpha(const std::string& s) {
  if (s == "auto") return -1;
  double alpha = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), alpha);
  QUANT_CHECK(ec == std::errc() && end == s.data() + s.size(), "--alpha {} is not a number or auto", s);
  QUANT_CHECK(alpha >= 0 && alpha <= 1, "--alpha {} outside [0, 1] (or auto)", s);
  return alpha;
}

// The flags' own consistency, before anything is read; returns the target of the default policy.
QuantSpec check_flags(ConvertArgs& a, Method method) {
  QUANT_CHECK(a.qtype.empty() != (a.bits == 0), "give either --qtype or --bits (with --group-size and --sym/--asym)");
  const bool act_aware = is_act_aware(method);
  QUANT_CHECK(a.plan_file.empty() || act_aware, "--plan applies an AWQ or SmoothQuant plan: give --method awq, awq+gptq or smoothquant");
  QUANT_CHECK(a.dump_plan.empty() || act_aware, "--dump-plan writes the AWQ or SmoothQuant plan: give --method awq, awq+gptq or smoothquant");
  if (method == Method::SmoothQuant) a.alpha_value = parse_alpha(a.alpha);
  QUANT_CHECK(!uses_awq(method) || !a.plan_file.empty() || !a.calib.file.empty(),
              "--method {} searches scales on calibration activations: give --calib FILE (saved --stats hold statistics only), or --plan",
              a.method);
  if (a.format.empty()) a.format = std::filesystem::path(a.out).extension() == ".onnx" ? "onnx" : "gguf";
  QUANT_CHECK(a.format == "gguf" || a.format == "onnx" || a.format == "gptq-safetensors", "--format {} (gguf, onnx or gptq-safetensors)",
              a.format);
  QUANT_CHECK(a.format == "gptq-safetensors" || a.gptq_zeros == "v1", "--gptq-zeros applies to --format gptq-safetensors");
  {
    const std::string ext = std::filesystem::path(a.out).extension().string();
    QUANT_CHECK(a.format != "gguf" || (ext != ".safetensors" && ext != ".json" && ext != ".model" && ext != ".txt"),
                "-o {}: a GGUF file would get a {} name: name it .gguf (or give the --format the name says)", a.out, ext);
  }
  QUANT_CHECK(a.format == "onnx" || (!a.external_data && a.onnx_accuracy == 0), "--external-data and --onnx-accuracy-level apply to --format onnx");
  if (uses_gptq(method)) {
    const Preset* preset = find_preset(a.qtype);
    const auto t = a.qtype.empty() ? std::nullopt : ttype_from_name(a.qtype);
    QUANT_CHECK(a.bits != 0 || preset || (t && is_kquant(*t)) || !a.bitplan_file.empty(),
                "--method {} quantizes onto an integer grid (--bits, --group-size, --sym/--asym) or a super-block type or preset "
                "(--qtype Q4_K_M, Q4_K, IQ4_XS ...), not --qtype {}",
                a.method, a.qtype);
    QUANT_CHECK(!a.calib.file.empty() || !a.stats_dir.empty(), "{} needs --calib FILE (calibration text) or --stats DIR (from quant calibrate)",
                a.bitplan_file.empty() ? "--method " + a.method : fmt::format("--plan {} (a {} plan)", a.bitplan_file, a.method));
    QUANT_CHECK(a.gptq.damp > 0 && a.gptq.damp < 1, "--damp {} outside (0, 1)", a.gptq.damp);
  }
  QUANT_CHECK(!a.resume || (uses_gptq(method) && a.stats_dir.empty() && !a.calib.file.empty()),
              "--resume continues a GPTQ run on --calib windows from its per-block checkpoints; --method {}{} has none to continue",
              a.method, a.stats_dir.empty() ? "" : " with --stats");
  QUANT_CHECK(!a.pure || find_preset(a.qtype), "--pure applies to a preset --qtype ({})", preset_names());
  if (!a.bits) {
    if (const Preset* p = find_preset(a.qtype)) return QuantSpec::parse(std::string(ttype_name(p->base)));
    return QuantSpec::parse(a.qtype);
  }
  QUANT_CHECK(GridSpec::valid_bits(a.bits), "--bits {} outside 2..8", a.bits);
  QUANT_CHECK(GridSpec::valid_group(a.group), "--group-size {} (32, 64, 128 or 0)", a.group);
  QuantSpec target;
  target.kind = QuantSpec::Kind::Grid;
  target.grid = {a.bits, a.group, a.sym, a.grid_search == "mse"};
  return target;
}

Policy make_policy(const ConvertArgs& a, const QuantSpec& target, const std::optional<BitPlan>& bitplan, const LoadedModel& m) {
  const Preset* preset = a.pure ? nullptr : find_preset(a.qtype);
  Policy policy = preset ? preset_policy(*preset, preset_model(m.config, m.weights->tensors(), !a.imatrix.empty()))
                         : Policy::defaults(target);
  if (a.format == "gptq-safetensors")  // hub GPTQ checkpoints keep the embeddings and the head in float
    policy.rules.insert(policy.rules.begin(), {{"token_embd.weight", QuantSpec::parse("F16")}, {"output.weight", QuantSpec::parse("F16")}});
  if (bitplan) {
    check_model_identity(bitplan->model, m.config, *m.weights, a.bitplan_file);
    policy = bitplan->policy(target);
  }
  if (!a.policy_file.empty()) {
    Policy user = Policy::from_json(read_json_file(a.policy_file, "policy"), a.policy_file);
    user.rules.insert(user.rules.end(), policy.rules.begin(), policy.rules.end());
    user.preset = policy.preset;
    policy = std::move(user);
  }
  return policy;
}

void print_plans(const std::vector<TensorPlan>& plans) {
  std::cout << fmt::format("{:<28} {:>12} {:>16} {:>18} {:>7}  {}\n", "tensor", "shape", "requested", "stored", "bpw", "note");
  for (const auto& p : plans)
    std::cout << fmt::format("{:<28} {:>12} {:>16} {:>18} {:>7.3f}  {}\n", p.name, fmt::format("{}x{}", p.rows, p.cols),
                             p.requested.str(), p.stored_as.empty() ? std::string(ttype_name(p.stored)) : p.stored_as, p.stored_bpw,
                             p.note == "exact" ? "" : p.note);
  const PlanTotals t = plan_totals(plans);
  std::cout << fmt::format("decoder linears: {:.3f} logical bits/weight; tensor data {:.2f} MB (the file adds metadata and the "
                           "vocabulary)\n", t.decoder_linear_logical_bpw, t.stored_bytes / 1e6);
}

// The stage's spec from the flags: method settings, calibration windows or statistics.
StageSpec stage_spec(const ConvertArgs& a, Method method, const LoadedModel& m, const StatsDir* stats) {
  StageSpec s;
  s.method = method;
  // GGUF rounds scales and mins to fp16 in its blocks; MatMulNBits keeps fp32 scales; a GPTQ
  // checkpoint stores fp16 scales with integer zeros, nearer the exact grid than any ggml block.
  s.grid_store = a.format == "gguf" ? GridStore::Packed : GridStore::Exact;
  s.gptq = a.gptq;
  s.awq.grid = a.awq_grid;
  s.awq.clip = !a.awq_no_clip;
  s.awq.clip_mode = parse_awq_clip(a.awq_clip);
  s.smooth.alpha = a.alpha_value;
  s.smooth.act_quant = parse_act_quant(a.act_quant);
  if (a.search_windows > 0) s.awq.search_windows = s.smooth.search_windows = a.search_windows;
  if (!a.plan_file.empty()) {
    s.act_plan = ActPlan::from_json(read_json_file(a.plan_file, "plan"), m.config, *m.weights, a.plan_file);
    s.act_plan_file = a.plan_file;
  }
  s.calib = a.calib;
  s.stats = stats;
  const bool searches = is_act_aware(method) && !s.act_plan;
  if (!a.calib.file.empty() && (searches || (uses_gptq(method) && !stats)))
    s.windows = calibration_windows(*m.tokenizer, a.calib, m.config.max_ctx);
  return s;
}

nlohmann::json act_plan_json(const ActPlan& ap) {
  nlohmann::json entries = nlohmann::json::array();
  for (const auto& e : ap.scales)
    entries.push_back({{"prev", e.prev}, {"alpha", e.alpha}, {"loss_before", e.loss_before}, {"loss_after", e.loss_after}});
  return {{"method", ap.method}, {"scales", entries}, {"clipped_tensors", ap.clips.size()}, {"notes", ap.notes},
          {"settings", nlohmann::json::parse(ap.settings_json)}};
}

// What the stage measured of each tensor it handed out, in file order.
nlohmann::json reports_json(const QuantStage& stage) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& r : stage.reports()) {
    nlohmann::json j = {{"name", r.name}, {"method", method_name(r.method)}, {"seconds", r.seconds}};
    if (r.nmse > 0) j["nmse"] = r.nmse;
    if (r.damp > 0) j["gptq_loss"] = r.loss;  // GPTQ ran (its damping is never 0)
    if (r.kept) j["kept"] = true;           // the checkpoint's own grid, unchanged
    out.push_back(std::move(j));
  }
  return out;
}

nlohmann::json gptq_json(const QuantStage& stage) {
  const SequentialResult& seq = *stage.gptq();
  nlohmann::json layers = nlohmann::json::array();
  double total_loss = 0;
  for (const auto& l : seq.layers) {
    layers.push_back({{"name", l.name}, {"loss", l.loss}, {"seconds", l.seconds}, {"damp", l.damp}, {"retries", l.retries},
                      {"dead_columns", l.dead_columns}, {"gemm_gflops", l.gemm_gflops}});
    total_loss += l.loss;
  }
  return {{"recipe", nlohmann::json::parse(stage.metadata().at("gptq"))}, {"layers", layers}, {"total_loss", total_loss},
          {"seconds", seq.seconds}, {"block_passes", seq.block_passes}};
}

double available_memory_bytes() {
  std::FILE* f = std::fopen("/proc/meminfo", "r");
  if (!f) return 0;
  char line[256];
  double kb = 0;
  while (std::fgets(line, sizeof line, f))
    if (std::sscanf(line, "MemAvailable: %lf kB", &kb) == 1) break;
  std::fclose(f);
  return kb * 1024;
}

// --work, else OUT.work beside the output (an ONNX model's directory is the output: DIR.work beside it).
std::string work_dir(const ConvertArgs& a) {
  if (!a.work.empty()) return a.work;
  if (a.out.empty()) return "quant.work";
  const std::filesystem::path out(a.out);
  if (a.format != "onnx") return a.out + ".work";
  const std::filesystem::path dir = out.has_parent_path() ? out.parent_path() : std::filesystem::current_path();
  return (dir.has_filename() ? dir : dir.parent_path()).string() + ".work";
}

// The run's memory plan (calibration/memory_plan.h); `probe`: with the time at rates measured on
// block 0 (a --dry-run's projection).
MemoryPlan convert_memory_plan(const ConvertArgs& a, Method method, const LoadedModel& m, const std::vector<TensorPlan>& plans,
                               bool probe) {
  MemoryPlanInputs in;
  in.cfg = &m.config;
  in.plans = &plans;
  in.method = method;
  const bool sequential = uses_gptq(method) && a.stats_dir.empty() && !a.calib.file.empty();
  in.windows = sequential ? a.calib.nsamples : 0;
  in.seqlen = a.calib.seqlen;
  in.act_order = a.gptq.act_order;
  in.threads = omp_get_max_threads();
  in.budget = a.max_memory_gb > 0 ? a.max_memory_gb * 1e9 : available_memory_bytes();
  in.base = anon_bytes_now();
  in.spill_dir = work_dir(a);
  if (probe && sequential) in.rates = probe_rates(m.config, *m.weights, a.calib.seqlen);
  return plan_memory(in);
}

}  // namespace

// A checkpoint that holds integer grids (GPTQ) converts onto its own grid when no width is given:
// --bits, --group-size and --sym/--asym are taken from its first quantized linear.
std::optional<LoadedModel> take_stored_grid(ConvertArgs& a) {
  if (a.bits != 0 || !a.qtype.empty()) return std::nullopt;
  LoadedModel m = load_model(a.model, {a.tokenizer});
  const bool gguf = a.format.empty() ? std::filesystem::path(a.out).extension() != ".onnx" : a.format == "gguf";
  bool first = true;
  for (const auto& t : m.weights->tensors()) {
    QuantWeight g;
    if (!m.weights->read_grid(t, g)) continue;
    QUANT_CHECK(g.g_idx.empty() || !gguf,
                "{}: {}: act-order groups (g_idx) have no ggml block type; write --format onnx (MatMulNBits g_idx) or "
                "gptq-safetensors to keep them, or give --bits (or --qtype) to quantize the dequantized weights again",
                a.model, m.info.count("quantization") ? m.info.at("quantization") : t.name);
    if (!first) continue;
    first = false;
    a.bits = g.bits;
    a.group = g.group == g.cols ? 0 : g.group;
    a.sym = g.sym;
    QUANT_CHECK(GridSpec::valid_group(a.group), "{}: the checkpoint's group size {} is not one we store (32, 64, 128, per channel): "
                "give --bits and --group-size to quantize again", a.model, g.group);
  }
  return m;
}

ConvertResult convert_model(const ConvertArgs& args, bool method_given) {
  ConvertArgs a = args;
  quant::set_num_threads(a.threads);
  const std::optional<BitPlan> bitplan = take_bitplan(a, method_given);
  const Method method = parse_method(a.method);
  std::optional<LoadedModel> early = take_stored_grid(a);
  const QuantSpec target = check_flags(a, method);
  const bool onnx = a.format == "onnx", gptq_out = a.format == "gptq-safetensors";
  LoadedModel m = early ? std::move(*early) : load_model(a.model, {a.tokenizer});
  check_not_input(a.out);  // before any work: the model's files are noted as they are opened
  const Policy policy = make_policy(a, target, bitplan, m);
  std::vector<TensorPlan> plans = resolve_policy(policy, m.weights->tensors());
  if (onnx) resolve_onnx_storage(plans);  // throws for what MatMulNBits cannot hold
  if (gptq_out) resolve_gptq_storage(plans);  // one 2/3/4/8-bit grid for every linear
  assign_methods(plans, method);
  std::optional<Importance> importance;
  if (!a.imatrix.empty()) {
    QUANT_CHECK(method == Method::Rtn || method == Method::Gptq,
                "--imatrix weighs ggml's rounding (rtn) or GPTQ's super-block fits (gptq): not --method {}", a.method);
    importance = imatrix_importance(read_imatrix(a.imatrix), m.weights->tensors(), a.imatrix);
  }
  const PlanTotals totals = plan_totals(plans);
  nlohmann::json summary = {{"model", a.model}, {"out", a.out}, {"format", a.format}, {"method", a.method}, {"target", target.str()},
                            {"policy", policy.to_json()}, {"tensors", plans_to_json(plans)},
                            {"decoder_linear_logical_bpw", totals.decoder_linear_logical_bpw},
                            {"logical_size_bytes", totals.logical_bytes}, {"stored_size_bytes", totals.stored_bytes}};
  const std::string name = a.name.empty() ? std::filesystem::path(a.model).filename().string() : a.name;
  std::map<std::string, std::string> plan_extra;
  if (bitplan)
    plan_extra["bitplan"] = nlohmann::json({{"file", a.bitplan_file}, {"budget", bitplan->budget}, {"predicted", bitplan->predicted},
                                            {"source", bitplan->source}}).dump();
  if (a.dry_run) {
    const MemoryPlan mp = convert_memory_plan(a, method, m, plans, true);
    summary["memory_plan"] = mp.to_json();
    if (!onnx && !gptq_out)  // the file's bytes less the stage's own keys (recipe, calibration: a few hundred bytes)
      summary["file_bytes_before_stage_keys"] =
          gguf_model_file_bytes(m, policy, plans, {.method = a.method, .name = name, .extra = plan_extra, .progress = {}});
    return {std::move(summary), std::move(plans), mp.to_text()};
  }
  QUANT_CHECK(!a.out.empty(), "convert needs -o OUT.gguf (or -o DIR/model.onnx with --format onnx)");
  QUANT_CHECK(gptq_out || !std::filesystem::is_directory(a.out), "{}: is a directory", a.out);
  const auto t0 = std::chrono::steady_clock::now();
  const PeakAnonSampler peak_anon;
  std::optional<StatsDir> stats;
  if (!a.stats_dir.empty() && (uses_gptq(method) || (method == Method::SmoothQuant && a.calib.file.empty())))
    stats.emplace(a.stats_dir, m.config);
  std::map<std::string, Progress> bars;
  auto bar = [&](const std::string& step) -> Progress& { return bars.try_emplace(step, step, a.quiet).first->second; };
  std::error_code ec;
  const auto calib_bytes = a.calib.file.empty() ? 0 : std::filesystem::file_size(a.calib.file, ec);
  const bool slow_read = !ec && calib_bytes > (1u << 20);
  if (slow_read)  // tokenizing a long text takes seconds: say so before it starts
    bar("calibration").update(0, 1, fmt::format("reading {} ({:.1f} MB)", a.calib.file, static_cast<double>(calib_bytes) / 1e6));
  StageSpec spec = stage_spec(a, method, m, stats ? &*stats : nullptr);
  if (slow_read) bar("calibration").update(1, 1, fmt::format("{} windows", spec.windows.size()));
  spec.importance = importance ? &*importance : nullptr;
  const MemoryPlan mem = convert_memory_plan(a, method, m, plans, false);  // throws when one block cannot fit
  spec.acts = mem.acts;
  spec.work_dir = work_dir(a);
  spec.resume = a.resume;
  summary["memory_plan"] = mem.to_json();
  spec.progress = [&](const std::string& step, const std::string& what, int64_t d, int64_t t) { bar(step).update(d, t, what); };
  const bool print_plan = !a.quiet && !a.json && !spec.windows.empty() && uses_gptq(method);
  QuantStage stage(m.config, *m.weights, std::move(plans), std::move(spec));
  stage.prepare();  // a work directory that cannot be resumed fails here, before anything is printed
  if (print_plan) std::cerr << mem.to_text();
  if (const ActPlan* ap = stage.act_plan()) {
    if (!a.dump_plan.empty()) {
      AtomicFile f(a.dump_plan);
      const std::string text = ap->to_json().dump(1);
      f.write(text.data(), text.size());
      f.commit();
    }
    summary["plan"] = act_plan_json(*ap);
  }
  std::map<std::string, std::string> extra = stage.metadata();
  if (importance) extra["imatrix"] = nlohmann::json({{"file", a.imatrix}, {"entries", importance->size()}}).dump();
  extra.insert(plan_extra.begin(), plan_extra.end());
  std::function<void(size_t, size_t, const std::string&)> progress;  // GPTQ's own bar covers a GPTQ run
  if (!uses_gptq(method))
    progress = [&](size_t d, size_t t, const std::string& n) { bar("convert").update(static_cast<int64_t>(d) + 1, static_cast<int64_t>(t), n); };
  uint64_t out_bytes = 0;
  if (onnx) {
    const OnnxExportResult r = write_onnx_model(m, policy, stage, a.out,
                                                {.method = a.method, .name = name, .accuracy_level = a.onnx_accuracy,
                                                 .external_data = a.external_data, .force = a.force, .extra = extra, .progress = progress});
    out_bytes = r.bytes;
    summary["files"] = r.files;
    summary["external_data"] = r.external;
    summary["onnx"] = {{"ir_version", kOnnxIrVersion}, {"opset", kOnnxOpset}, {"com.microsoft", kOnnxMsOpset},
                       {"accuracy_level", a.onnx_accuracy}};
  } else if (gptq_out) {
    const GptqExportResult r = write_gptq_checkpoint(m, stage, a.out,
                                                     {.zeros = a.gptq_zeros == "v2" ? GptqZeros::V2 : GptqZeros::V1, .method = a.method,
                                                      .damp = a.gptq.damp, .extra = extra, .progress = progress});
    out_bytes = r.bytes;
    summary["files"] = r.files;
  } else {
    write_gguf_model(m, policy, stage, a.out, {.method = a.method, .name = name, .extra = extra, .progress = progress});
    out_bytes = std::filesystem::file_size(a.out);
  }
  stage.finish();  // the output is in place: the work directory's checkpoints go
  summary["tensor_reports"] = reports_json(stage);
  if (stage.resumed_blocks() > 0) summary["resumed_blocks"] = stage.resumed_blocks();
  if (stage.gptq()) {
    summary["calibration"] = nlohmann::json::parse(extra.at("calibration"));
    summary["gptq"] = gptq_json(stage);
  }
  summary["seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  summary["file_size_bytes"] = out_bytes;
  summary["peak_anon_bytes"] = peak_anon.peak();
  std::error_code ec2;
  std::filesystem::remove(work_dir(a), ec2);  // the spill directory, when empty (activation files are unlinked)
  return {std::move(summary), stage.plans(), mem.to_text()};
}

int run_convert(const ConvertArgs& a, bool method_given) {
  const ConvertResult r = convert_model(a, method_given);
  const nlohmann::json& s = r.summary;
  if (a.json) {
    std::cout << s.dump(2) << "\n";
    return 0;
  }
  if (a.dry_run) {
    std::cout << "policy (first match wins): " << s["policy"].dump() << "\n";
    print_plans(r.plans);
    std::cout << r.memory_plan;
    return 0;
  }
  if (a.quiet) return 0;  // the file is the result
  print_plans(r.plans);
  if (s.contains("gptq"))
    for (const auto& l : s["gptq"]["layers"]) {
      const int retries = l["retries"].get<int>();
      std::cout << fmt::format("gptq {:<26} loss {:12.6g}  {:6.3f} s  damp {:.2f}{}\n", l["name"].get<std::string>(),
                               l["loss"].get<double>(), l["seconds"].get<double>(), l["damp"].get<double>(),
                               retries ? fmt::format(" ({} retries)", retries) : "");
    }
  std::cout << fmt::format("wrote {} ({:.2f} MB) in {:.1f} s; peak anonymous memory {:.2f} GB (plan {:.2f} GB)\n",
                           s["out"].get<std::string>(), s["file_size_bytes"].get<uint64_t>() / 1e6, s["seconds"].get<double>(),
                           s["peak_anon_bytes"].get<double>() / 1e9, s["memory_plan"]["peak_bytes"].get<double>() / 1e9);
  return 0;
}

}  // namespace quant::cli
