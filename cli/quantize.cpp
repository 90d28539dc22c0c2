// quant quantize: the main job in one command. A target (--bits / --qtype) and a model; the
// method and its settings come from the measured recipe table (quant/recipes.h), calibration
// from the text shipped in data/ unless --calib is given; then the before/after measurement on
// a held-out text (compare's report) and one line that says what it cost.
#include <filesystem>
#include <iostream>

#include "commands.h"
#include "progress.h"
#include "quant/error.h"
#include "quant/presets.h"
#include "quant/recipes.h"

namespace quant::cli {

namespace fs = std::filesystem;

namespace {

// A text shipped in the repository: found from the working directory, else from the source tree
// this binary was built from.
std::string shipped_text(const std::string& rel) {
  if (fs::exists(rel)) return rel;
#ifdef QUANT_SOURCE_DIR
  const fs::path p = fs::path(QUANT_SOURCE_DIR) / rel;
  if (fs::exists(p)) return p.string();
#endif
  fail("{}: the default text is not here (run from the repository, or give the file)", rel);
}

constexpr const char* kCalibText = "data/kjv/kjv_train.txt";
constexpr const char* kHeldoutText = "data/kjv/kjv_heldout.txt";

std::string default_report_dir(const std::string& out) {
  const fs::path o(out);
  if (o.filename() == "model.onnx") return (o.parent_path() / "report").string();
  return (o.parent_path() / (o.stem().string() + "-report")).string();
}

struct Chosen {
  Recipe recipe;
  std::string why;
};

Chosen choose_recipe(const QuantizeArgs& a) {
  if (!a.recipe.empty()) return {Recipe::parse(a.recipe), "--recipe"};
  if (a.bits) {
    Chosen c;
    c.recipe = default_recipe({a.bits, a.group}, &c.why);
    return c;
  }
  return {Recipe::parse("rtn"), "--qtype: llama.cpp's own rounding (no recipe measured for the k-quant mixes yet)"};
}

ConvertArgs convert_args(const QuantizeArgs& a, const Recipe& r) {
  ConvertArgs c;
  c.model = a.model;
  c.out = a.out;
  c.format = a.format;
  c.tokenizer = a.tokenizer;
  c.threads = a.threads;
  c.quiet = a.quiet;
  c.method = method_name(r.method);
  c.gptq.act_order = r.act_order;
  c.gptq.damp = r.damp;
  c.grid_search = r.mse ? "mse" : "minmax";
  if (a.bits) {
    c.bits = a.bits;
    c.group = a.group;
    c.asym = true;
  } else {
    c.qtype = a.qtype;
  }
  if (r.needs_calibration()) {
    c.calib = a.calib;
    if (c.calib.file.empty()) c.calib.file = shipped_text(kCalibText);
  }
  return c;
}

// A grid the output format stores in wider blocks (3-bit codes in GGUF's 4-bit Q4_1) gives no
// smaller file than those blocks: say so, and what would.
std::string storage_note(const nlohmann::json& summary) {
  for (const auto& t : summary["tensors"]) {
    const std::string note = t.value("note", "");
    if (note.find("inside") != std::string::npos)
      return fmt::format("note: {} is stored as {} here ({}): the file is that type's size; for a smaller GGUF give --qtype "
                         "(Q3_K_M, Q2_K ...)\n",
                         t["requested"].get<std::string>(), t["stored"].get<std::string>(), note);
  }
  return "";
}

// The conversion's steps as its progress bars name them: the AWQ search (not estimated), then GPTQ
// or the RTN writer.
std::vector<StepAfter> convert_steps(const Recipe& r) {
  std::vector<StepAfter> s;
  if (uses_awq(r.method)) s.push_back({method_name(r.method), "awq search"});
  s.push_back(uses_gptq(r.method) ? StepAfter{"gptq", "gptq"} : StepAfter{"convert", "rtn"});
  return s;
}

// The conversion's seconds at the probe's rate: GPTQ runs every calibration window through every
// block twice (the Hessians, then the quantized block's outputs) and solves each matrix at the
// forward's flop rate; RTN quantizes at memory speed (one forward's time). -1: not estimated.
double estimate_convert_seconds(const ForwardProbe& p, const CalibSpec& c, Method method) {
  if (p.window_s <= 0) return -1;  // a forward too quick to time
  if (!uses_gptq(method)) return p.window_s;
  const double flops_per_s = 2.0 * static_cast<double>(p.params) * static_cast<double>(p.ctx) / p.window_s;
  const double windows = static_cast<double>(c.nsamples * c.seqlen) / static_cast<double>(p.ctx);
  return 2.0 * windows * p.window_s + p.solve_flops / flops_per_s;
}

std::string mb(uint64_t bytes) { return fmt::format("{:.2f} MB", static_cast<double>(bytes) / 1e6); }

}  // namespace

CLI::App* add_quantize_command(CLI::App& app, QuantizeArgs& a) {
  auto* c = app.add_subcommand("quantize",
                               "the main job: quantize MODEL to a target with the best measured recipe, then measure before/after");
  c->add_option("model", a.model, "model path (HF directory, llama2.c file, GGUF)")->required();
  c->add_option("-o,--out", a.out, "output .gguf or DIR/model.onnx");
  auto* bits = c->add_option("--bits", a.bits, "integer grid of 2..8 bits (asymmetric, --group-size columns per scale)")
                   ->check(CLI::Range(2, 8));
  c->add_option("--group-size", a.group, "columns per scale: 32 | 64 | 128 | 0 (per channel)")
      ->check(CLI::IsMember({0, 32, 64, 128}))->capture_default_str();
  auto* qt = c->add_option("--qtype", a.qtype, "a llama.cpp type or preset instead (" + preset_names() + ", Q4_0, Q8_0 ...)");
  auto* size = c->add_option("--target-size", a.target_size,
                             "a file of at most this many MB (1e6 bytes), the whole of it (ONNX: with its .data): a type per tensor "
                             "chosen by measured damage");
  auto* bpw = c->add_option("--target-bpw", a.target_bpw, "the same budget as bits per weight: the whole file's bits over all parameters");
  c->add_option("--sweep-types", a.sweep_types,
                "with a target: the types to choose among (GGUF default Q2_K,Q3_K,Q4_K,Q5_K,Q6_K,Q8_0; ONNX default \"int4 g128 "
                "asym,int4 g64 asym,int4 g32 asym,int8 g128 sym\")")
      ->delimiter(',');
  c->add_option("--sweep-chunks", a.sweep_chunks, "with a target: windows of the calibration text each type's damage is measured on")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20))->capture_default_str();
  c->add_option("--work", a.work, "with a target: where the sweep and the plan are kept and reused (default: beside the output, NAME-plan/)");
  bits->excludes(qt)->excludes(size)->excludes(bpw);
  qt->excludes(size)->excludes(bpw);
  size->excludes(bpw);
  c->add_option("--recipe", a.recipe, "override the measured default: METHOD[-act][-dampX][-mse], METHOD rtn | gptq | awq | awq+gptq");
  c->add_option("--calib", a.calib.file, std::string("calibration text (default: ") + kCalibText + ")");
  c->add_option("--nsamples", a.calib.nsamples, "calibration windows")->capture_default_str();
  c->add_option("--seqlen", a.calib.seqlen, "tokens per calibration window")->capture_default_str();
  c->add_option("--seed", a.calib.seed, "seed of the window draw")->capture_default_str();
  c->add_option("--text", a.text, std::string("held-out text for before/after (default: ") + kHeldoutText + ")");
  c->add_option("--chunks", a.chunks, "evaluate at most N windows of the held-out text (default: all)");
  c->add_option("--report", a.report, "report directory (default: beside the output, NAME-report/)");
  c->add_flag("--no-eval", a.no_eval, "write the model only, no before/after");
  c->add_option("--format", a.format, "gguf | onnx (default: from the output's extension)")->check(CLI::IsMember({"gguf", "onnx"}));
  c->add_option("--tokenizer", a.tokenizer, "tokenizer.bin for llama2.c models");
  c->add_option("--threads", a.threads, "OpenMP threads")->check(CLI::Range(1, 4096));
  c->add_flag("--print-flags", a.print_flags, "print the quant convert flags the recipe stands for, and stop");
  c->add_flag("--json", a.json, "print one JSON object");
  c->add_flag("--quiet", a.quiet, "no progress on stderr");
  return c;
}

int run_quantize_cmd(const QuantizeArgs& a) {
  const bool sized = a.target_bpw > 0 || a.target_size > 0;
  QUANT_CHECK(a.bits || !a.qtype.empty() || sized,
              "quantize needs a target: --bits 2..8 (with --group-size), --qtype ({}, Q4_0 ...), or --target-size MB / --target-bpw B "
              "(the whole file)",
              preset_names());
  QUANT_CHECK(!a.print_flags || a.bits, "--print-flags: the recipes stand for integer grids: give --bits");
  QUANT_CHECK(a.target_bpw >= 0 && a.target_size >= 0, "--target-bpw / --target-size must be positive");
  if (a.print_flags) {
    const Chosen chosen = choose_recipe(a);
    std::cout << fmt::format("{}\n", fmt::join(chosen.recipe.convert_flags(a.bits, a.group), " "));
    return 0;
  }
  QUANT_CHECK(!a.out.empty(), "quantize needs -o OUT.gguf (or -o DIR/model.onnx)");
  // The held-out text is checked before the (long) conversion.
  const std::string text = a.no_eval ? "" : (a.text.empty() ? shipped_text(kHeldoutText) : a.text);
  QUANT_CHECK(a.no_eval || fs::is_regular_file(text), "--text {}: no such file", text);
  nlohmann::json out = {{"model", a.model}, {"out", a.out}};
  CompareArgs cmp;
  cmp.models = {a.model, a.out};
  cmp.labels = {"before", "after"};
  cmp.text = text;
  cmp.chunks = a.chunks;
  cmp.threads = a.threads;
  cmp.quiet = a.quiet;
  cmp.out = a.report.empty() ? default_report_dir(a.out) : a.report;
  // What every progress line says comes after its step, and how long each should take: timed once
  // the checks have passed (estimate_steps), by one forward of the model, the rate every later step
  // is estimated at.
  const std::string calib = a.calib.file.empty() ? shipped_text(kCalibText) : a.calib.file;
  std::vector<StepAfter> eval_step;
  if (!a.no_eval)
    eval_step.push_back({"compare", fmt::format("before/after on {} windows of {}", a.chunks > 0 ? std::to_string(a.chunks) : "all the",
                                                fs::path(text).filename().string())});
  struct Reset {
    ~Reset() { estimate_steps() = nullptr; }
  } reset;
  if (!a.quiet)
    estimate_steps() = [&] {
      CompareArgs pc = cmp;
      if (a.no_eval) pc.text = calib;
      std::cerr << fmt::format("quantize: timing {} on a window of {} (the rate the later steps are estimated at)\n", a.model,
                               fs::path(pc.text).filename().string());
      const ForwardProbe probe = estimate_compare(pc);
      CalibSpec cs = a.calib;
      cs.file = calib;
      for (auto& st : steps_after())
        st.seconds = st.bar == "compare" ? probe.seconds
                     : st.bar == "gptq"  ? estimate_convert_seconds(probe, cs, Method::Gptq)
                     : st.bar == "convert" ? estimate_convert_seconds(probe, cs, Method::Rtn)
                                           : -1;
    };
  ConvertResult conv;
  std::string recipe_line;
  if (sized) {
    TargetResult t = quantize_to_target(a, calib, eval_step);
    conv = std::move(t.conv);
    out["recipe"] = t.recipe.name();
    out["recipe_source"] = "a size target: a type per tensor (GGUF types; MatMulNBits grids in ONNX), measured (quant sweep --qtypes) and "
                           "planned (quant plan)";
    out["target"] = t.info;
    out["calibration"] = calib;
    recipe_line = fmt::format("{}recipe {} onto each planned type; calibration {}\n", t.line, t.recipe.name(), calib);
  } else {
    const Chosen chosen = choose_recipe(a);
    const ConvertArgs ca = convert_args(a, chosen.recipe);
    steps_after() = convert_steps(chosen.recipe);
    steps_after().insert(steps_after().end(), eval_step.begin(), eval_step.end());
    conv = convert_model(ca, true);
    out["recipe"] = chosen.recipe.name();
    out["recipe_source"] = chosen.why;
    out["convert_flags"] = ca.bits ? chosen.recipe.convert_flags(a.bits, a.group) : std::vector<std::string>{};
    out["calibration"] = ca.calib.file.empty() ? nlohmann::json() : nlohmann::json(ca.calib.file);
    recipe_line = fmt::format("recipe {} ({}){}\n", chosen.recipe.name(), chosen.why,
                              ca.calib.file.empty() ? "" : fmt::format("; calibration {}", ca.calib.file));
    recipe_line += storage_note(conv.summary);
  }
  out["file_size_bytes"] = conv.summary["file_size_bytes"];
  out["convert_seconds"] = conv.summary["seconds"];
  if (a.no_eval) {
    if (a.json) std::cout << out.dump(2) << "\n";
    else
      std::cout << recipe_line << fmt::format("wrote {} ({})\n", a.out, mb(conv.summary["file_size_bytes"].get<uint64_t>()));
    return 0;
  }
  steps_after().clear();  // the last step: its ETA is the command's
  const nlohmann::json rep = compare_models(cmp);
  const nlohmann::json& b = rep["models"][0];
  const nlohmann::json& q = rep["models"][1];
  // The whole file's bits (header included) over every parameter: what --target-bpw budgets.
  const double file_bpw = 8 * q["file_bytes"].get<double>() / q["params"].get<double>();
  out["eval"] = {{"text", text},
                 {"chunks", rep["chunks"]},
                 {"tokens_scored", rep["tokens_scored"]},
                 {"before", {{"file_bytes", b["file_bytes"]}, {"ppl", b["ppl"]}, {"ppl_stderr", b["ppl_stderr"]}}},
                 {"after",
                  {{"file_bytes", q["file_bytes"]}, {"file_bpw", file_bpw}, {"stored_bpw", q["stored_bpw"]}, {"ppl", q["ppl"]}, {"ppl_stderr", q["ppl_stderr"]},
                   {"dppl", q["dppl"]}, {"dppl_stderr", q["dppl_stderr"]}, {"kl_mean", q["kl_mean"]}, {"top1", q["top1"]}}}};
  out["warnings"] = rep["warnings"];
  out["report"] = (fs::path(cmp.out) / "report.html").string();
  if (a.json) {
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  std::cout << recipe_line
            << fmt::format("{} -> {}: {} -> {} ({:.3f} bits/weight, the file's), ppl {:.3f} -> {:.3f} ({:+.2f}% +/- {:.2f}%) on {} ({} windows), "
                           "KL {:.4f}, top-1 {:.1f}%\nreport: {}\n",
                           a.model, a.out, mb(b["file_bytes"].get<uint64_t>()), mb(q["file_bytes"].get<uint64_t>()),
                           file_bpw, b["ppl"].get<double>(), q["ppl"].get<double>(), 100 * q["dppl"].get<double>(),
                           100 * q["dppl_stderr"].get<double>(), fs::path(text).filename().string(), rep["chunks"].get<int64_t>(),
                           q["kl_mean"].get<double>(), 100 * q["top1"].get<double>(), out["report"].get<std::string>());
  for (const auto& w : rep["warnings"]) std::cout << "warning: " << w.get<std::string>() << "\n";
  return 0;
}

}  // namespace quant::cli
