// quant sweep, quant plan, quant compare: per-layer bit-width sweeps, mixed-precision plans under
// a budget, and before/after reports (Markdown, JSON, HTML with SVG plots).
#include <charconv>
#include <omp.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <iostream>
#include <optional>
#include <random>
#include <set>

#include "commands.h"
#include "progress.h"
#include "quant/error.h"
#include "quant/formats/loader.h"
#include "quant/formats/mmap.h"
#include "quant/gemm.h"
#include "quant/runtime.h"
#include "quant/calibration/stats_dir.h"
#include "quant/calibration/sweep.h"
#include "quant/calibration/text.h"
#include "svg.h"

namespace quant::cli {

namespace fs = std::filesystem;

void write_atomic(const std::string& path, const std::string& text) {
  AtomicFile f(path);
  f.write(text.data(), text.size());
  f.commit();
}

namespace {

std::vector<int> parse_bits(const std::string& s) {
  std::vector<int> out;
  size_t i = 0;
  while (i <= s.size()) {
    const size_t j = std::min(s.find(',', i), s.size());
    const std::string tok = s.substr(i, j - i);
    int v = 0;
    const auto [end, ec] = std::from_chars(tok.data(), tok.data() + tok.size(), v);
    QUANT_CHECK(!tok.empty() && ec == std::errc() && end == tok.data() + tok.size(),
                "--bits {}: \"{}\" is not a whole number (give e.g. 2,3,4,8)", s, tok);
    out.push_back(v);
    i = j + 1;
  }
  return out;
}

// A directory removed at scope exit (the sweep's own calibration statistics).
struct ScratchDir {
  std::string path;
  explicit ScratchDir(const std::string& near) {
    std::random_device rd;
    path = near + ".stats.tmp" + std::to_string(rd());
  }
  ~ScratchDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

std::string fmt_pct(double x) { return fmt::format("{:+.2f}%", 100 * x); }
// Δppl against the base, with the paired standard error where the base was scored alongside.
std::string dppl_cell(const nlohmann::json& m) {
  std::string s = fmt_pct(m["dppl"].get<double>());
  if (m.contains("dppl_stderr")) s += fmt::format(" ± {:.2f}%", 100 * m["dppl_stderr"].get<double>());
  return s;
}
std::string spearman_str(const nlohmann::json& v) { return v.is_number() ? fmt::format("{:.3f}", v.get<double>()) : "n/a"; }

}  // namespace

// --- sweep ---
CLI::App* add_sweep_command(CLI::App& app, SweepArgs& a) {
  auto* c = app.add_subcommand("sweep", "quantize one unit at a time at each bit-width and measure the damage");
  c->add_option("model", a.model, "model path")->required();
  c->add_option("-o,--out", a.out, "output sweep.json")->required();
  c->add_option("--text", a.text, "evaluation text (the damage is measured on it; not needed with --proxy-only)");
  c->add_option("--calib", a.calib.file, "calibration text (statistics are computed once)");
  c->add_option("--stats", a.stats_dir, "saved statistics (quant calibrate) instead of --calib (rtn / gptq)");
  c->add_option("--nsamples", a.calib.nsamples, "calibration windows")->capture_default_str();
  c->add_option("--seqlen", a.calib.seqlen, "tokens per calibration window")->capture_default_str();
  c->add_option("--seed", a.calib.seed, "seed of the window draw")->capture_default_str();
  c->add_option("--calib-mode", a.calib.mode, "random | concat")->check(CLI::IsMember({"random", "concat"}))->capture_default_str();
  c->add_option("--method", a.method, "rtn | gptq | awq")->check(CLI::IsMember({"rtn", "gptq", "awq"}))->capture_default_str();
  c->add_option("--granularity", a.granularity, "tensor | block | kind")->check(CLI::IsMember({"tensor", "block", "kind"}))->capture_default_str();
  auto* bits = c->add_option("--bits", a.bits, "comma-separated widths (8 bits uses the symmetric grid: Q8_0)")->capture_default_str();
  c->add_option("--qtypes", a.qtypes,
                "options by name instead of widths: GGUF types (Q2_K,Q3_K,Q4_K,Q5_K,Q6_K,Q8_0) or grids (\"int4 g128 asym,int4 g32 "
                "asym,int8 g128 sym\"), mixed at will; token_embd and output join the units")
      ->delimiter(',')
      ->excludes(bits);
  c->add_option("--group-size", a.group, "columns per scale: 32 | 64 | 128 | 0 (per channel)")->capture_default_str();
  auto* sym = c->add_flag("--sym", a.sym, "symmetric grids");
  c->add_flag("--asym", a.asym, "asymmetric grids (default)")->excludes(sym);
  c->add_option("--ctx", a.ctx, "evaluation window")->capture_default_str();
  c->add_option("--protocol", a.protocol, "llamacpp | gptq")->check(CLI::IsMember({"llamacpp", "gptq"}))->capture_default_str();
  c->add_option("--chunks", a.chunks, "evaluation windows (0: the whole text)")->capture_default_str();
  c->add_flag("--spread", a.spread, "take the --chunks windows evenly spread over the text instead of its first ones");
  c->add_option("--damp", a.gptq.damp, "GPTQ damping")->capture_default_str();
  c->add_flag("--act-order", a.gptq.act_order, "GPTQ act-order (static groups)");
  c->add_option("--awq-grid", a.awq_grid, "AWQ alpha candidates")->capture_default_str();
  c->add_option("--search-windows", a.search_windows, "AWQ search windows")->capture_default_str();
  c->add_flag("--awq-no-clip", a.awq_no_clip, "AWQ: skip the clip search");
  c->add_option("--awq-clip", a.awq_clip, "AWQ clip candidates on asym grids: ends | range | sym (as convert)")
      ->check(CLI::IsMember({"ends", "range", "sym"}))->capture_default_str();
  c->add_flag("--proxy-only", a.proxy_only, "only the Hessian-weighted proxy: no evaluation text, no forward passes");
  c->add_option("--threads", a.threads, "OpenMP threads")->check(CLI::Range(1, 4096));
  c->add_flag("--json", a.json, "print the sweep as JSON");
  c->add_flag("--quiet", a.quiet, "no progress on stderr");
  return c;
}

Sweep sweep_model(const SweepArgs& a) {
  quant::set_num_threads(a.threads);
  QUANT_CHECK(a.proxy_only || !a.text.empty(), "sweep measures damage on a text: give --text FILE (or --proxy-only)");
  QUANT_CHECK(!a.calib.file.empty() || !a.stats_dir.empty(), "sweep needs --calib FILE or --stats DIR (calibration statistics)");
  QUANT_CHECK(a.method != "awq" || !a.calib.file.empty(), "sweep --method awq searches scales on calibration text: give --calib");
  QUANT_CHECK(!fs::is_directory(a.out), "{}: is a directory", a.out);
  SweepRun run;
  run.settings.method = parse_method(a.method, "sweep --method", "rtn,gptq,awq");
  run.settings.granularity = a.granularity;
  run.settings.qtypes = a.qtypes;
  run.settings.bits = a.qtypes.empty() ? parse_bits(a.bits) : SweepSettings::nominal_bits(a.qtypes);
  run.settings.group = a.group;
  run.settings.sym = a.sym;
  run.gptq = a.gptq;
  QUANT_CHECK(a.gptq.damp > 0 && a.gptq.damp < 1, "--damp {} outside (0, 1)", a.gptq.damp);
  run.awq.grid = a.awq_grid;
  run.awq.clip = !a.awq_no_clip;
  run.awq.clip_mode = quant::parse_awq_clip(a.awq_clip);
  run.awq.search_windows = a.search_windows;
  run.eval.protocol = parse_protocol(a.protocol);
  run.eval.ctx = a.ctx;
  run.eval.max_chunks = a.chunks > 0 ? a.chunks : -1;
  run.eval.spread = a.spread;
  run.proxy_only = a.proxy_only;
  run.settings.check();  // before the model is loaded and calibrated
  LoadedModel m = load_model(a.model);
  std::vector<int32_t> eval_tokens;
  if (!a.proxy_only) eval_tokens = encode_text_file(*m.tokenizer, a.text);
  std::vector<std::vector<int32_t>> windows;
  if (!a.calib.file.empty())
    windows = calibration_windows(*m.tokenizer, a.calib, m.config.max_ctx);
  if (!a.proxy_only)  // fail on a short text before the calibration work
    ppl_chunks(static_cast<int64_t>(eval_tokens.size()), m.config.bos_id, run.eval, m.config.max_ctx);
  if (!a.quiet) {
    const int64_t L = m.config.n_layers;
    const int64_t outer = a.qtypes.empty() ? 0 : m.config.tied_embeddings ? 1 : 2;
    const int64_t units = (a.granularity == "tensor" ? 7 * L : a.granularity == "block" ? L : 7) + outer;
    std::cerr << fmt::format("sweep: {} {} units x {} widths; {}{}, then the time estimate\n", units, a.granularity,
                             run.settings.options(), a.stats_dir.empty() ? "calibrating once" : "statistics from " + a.stats_dir,
                             a.proxy_only ? "" : ", one FP pass over the text");
  }
  const auto t0 = std::chrono::steady_clock::now();
  std::unique_ptr<ScratchDir> scratch;
  std::string stats_dir = a.stats_dir;
  double calib_seconds = 0;
  if (stats_dir.empty()) {
    scratch = std::make_unique<ScratchDir>(a.out);
    Progress cp("calibrate (once)", a.quiet);
    calibrate_to_dir(m.config, *m.weights, windows, a.calib, scratch->path, [&](int64_t d, int64_t t) { cp.update(d, t, "blocks"); });
    stats_dir = scratch->path;
    calib_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  const StatsDir stats(stats_dir, m.config);
  // The FP pass has a bar of its own: its steps are not the sweep's, whose bar (and ETA) starts after it.
  Progress fp("sweep: FP pass", a.quiet);
  std::optional<Progress> prog;
  run.progress = [&](const std::string& what, int64_t d, int64_t t) {
    if (what.rfind("FP pass", 0) == 0) return fp.update(d, t, what);
    if (!prog) prog.emplace("sweep", a.quiet);
    prog->update(d, t, what);
  };
  run.announce = [&](const nlohmann::json& e) {
    if (a.quiet) return;
    std::cerr << fmt::format(
        "sweep: {} units x {} widths = {} evaluations over {} chunks ({} block passes); estimated {:.0f} s "
        "(FP pass took {:.1f} s)\n",
        e["units"].get<int64_t>(), e["widths"].get<int64_t>(), e["evaluations"].get<int64_t>(), e["chunks"].get<int64_t>(),
        e["block_passes"].get<int64_t>(), e["estimated_seconds"].get<double>(), e["fp_pass_seconds"].get<double>());
  };
  Sweep sw = run_sweep(m.config, *m.weights, stats, windows, eval_tokens, run);
  sw.calibration["stats"] = a.stats_dir.empty() ? "computed by this sweep" : a.stats_dir;
  sw.cost["calibration_seconds"] = calib_seconds;
  sw.cost["seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  sw.cost["threads"] = omp_get_max_threads();
  if (!a.proxy_only) sw.eval["text"] = a.text;
  sw.model["path"] = a.model;
  write_atomic(a.out, sw.to_json().dump(1));
  return sw;
}

int run_sweep_cmd(const SweepArgs& a) {
  const Sweep sw = sweep_model(a);
  if (a.json) {
    std::cout << sw.to_json().dump(2) << "\n";
    return 0;
  }
  std::cout << fmt::format("{:<26}", "unit");
  for (size_t k = 0; k < sw.settings.options(); ++k) std::cout << fmt::format(" {:>22}", sw.settings.option_name(k));
  std::cout << "\n";
  for (const auto& u : sw.units) {
    std::cout << fmt::format("{:<26}", u.name);
    for (const auto& o : u.options)
      std::cout << (o.measured ? fmt::format(" {:>12.6f} {:>+8.3f}%", o.kl_mean, 100 * o.dppl) : fmt::format(" proxy {:>16.5g}", o.proxy));
    std::cout << "\n";
  }
  if (!a.proxy_only)
    std::cout << fmt::format("(mean KL, ppl increase; FP ppl {:.4f} on {} scored tokens)\nproxy vs KL: Spearman {}\n",
                             sw.fp["ppl"].get<double>(), sw.eval["tokens_scored"].get<int64_t>(), spearman_str(sw.rank["spearman_all"]));
  std::cout << fmt::format("{} evaluations, {} block passes ({:.1f} full-forward equivalents), {:.1f} s; wrote {}\n",
                           sw.cost["evaluations"].get<int64_t>(), sw.cost["block_passes"].get<int64_t>(),
                           sw.cost["full_forward_equivalents"].get<double>(), sw.cost["seconds"].get<double>(), a.out);
  return 0;
}

// --- plan ---
CLI::App* add_plan_command(CLI::App& app, PlanArgs& a) {
  auto* c = app.add_subcommand("plan", "choose a bit-width per unit of a sweep under a size budget");
  c->add_option("sweep", a.sweep, "sweep.json from quant sweep")->required();
  c->add_option("-o,--out", a.out, "output plan.json")->required();
  c->add_option("--target-bpw", a.target_bpw,
                 "bits per weight of the whole model: every tensor's data (token_embd, output, vectors) over all its parameters");
  c->add_option("--target-size", a.target_size, "the whole model's tensor data in MB (1e6 bytes); a file adds its header (tokenizer, metadata)");
  c->add_option("--linear-bpw", a.linear_bpw, "logical bits per weight over the swept matrices alone (the rest at --rest, outside the budget)");
  c->add_option("--objective", a.objective, "kl | dppl | proxy (default: kl, or proxy for a --proxy-only sweep)");
  c->add_option("--solver", a.solver, "exact (DP) | greedy (marginal gains)")->capture_default_str();
  c->add_option("--rest", a.rest, "type of token_embd and output, outside the budget")->capture_default_str();
  c->add_option("--bits", a.bits, "choose only among these of the sweep's widths, e.g. 4,8 (default: all)")->delimiter(',');
  c->add_option("--qtypes", a.qtypes, "a typed sweep: choose only among these of its types, e.g. Q3_K,Q4_K,Q6_K (default: all)")
      ->delimiter(',');
  c->add_flag("--json", a.json, "print the plan as JSON");
  c->add_flag("--quiet", a.quiet, "accepted for symmetry with the other commands (plan prints no progress)");
  return c;
}

int run_plan_cmd(const PlanArgs& a) {
  const Sweep sw = Sweep::from_json(read_json_file(a.sweep, "sweep"), a.sweep);
  const PlanRequest req{.target_bpw = a.target_bpw, .target_size_mb = a.target_size, .linear_bpw = a.linear_bpw,
                        .objective = a.objective, .solver = a.solver, .rest = a.rest, .bits = a.bits, .qtypes = a.qtypes};
  const BitPlan p = plan_from_sweep(sw, req, a.sweep);
  QUANT_CHECK(!fs::is_directory(a.out), "{}: is a directory", a.out);
  const nlohmann::json j = p.to_json();
  write_atomic(a.out, j.dump(1));
  if (a.json) {
    std::cout << j.dump(2) << "\n";
    return 0;
  }
  for (const auto& r : p.rules)
    std::cout << (r.type.empty() ? fmt::format("{:<28} int{} g{} {}  {}\n", r.match, r.bits, r.group, r.sym ? "sym" : "asym", r.qtype)
                                 : fmt::format("{:<28} {}\n", r.match, r.type));
  const auto& pr = p.predicted;
  const auto& b = p.budget;
  const std::string budget = b.contains("linear_bpw")   ? fmt::format("{} bpw over the swept matrices", b["linear_bpw"].get<double>())
                             : b.contains("target_bpw") ? fmt::format("{} bpw over the whole model", b["target_bpw"].get<double>())
                                                        : fmt::format("{} MB of tensor data", b["target_size_mb"].get<double>());
  std::cout << fmt::format("{} {:.4f} bits/weight; whole model {:.4f} bits/weight, {:.3f} MB of tensor data (budget {}; a file adds its "
                           "header)\n",
                           p.rules.front().type.empty() ? "decoder linears" : "swept matrices (stored)", b["decoder_linear_bpw"].get<double>(),
                           b["model_bpw"].get<double>(), b["logical_size_mb"].get<double>(), budget);
  std::cout << fmt::format("predicted sum of {}: {:.6g} ({}); exact {:.6g}, greedy {:.6g} (gap {:+.3f}%)\nwrote {}\n",
                           pr["objective"].get<std::string>(), pr["sum_" + pr["objective"].get<std::string>()].get<double>(), a.solver,
                           pr["exact"]["damage"].get<double>(), pr["greedy"]["damage"].get<double>(),
                           100 * pr["greedy_gap"].get<double>(), a.out);
  return 0;
}

// --- compare ---
CLI::App* add_compare_command(CLI::App& app, CompareArgs& a) {
  auto* c = app.add_subcommand("compare", "evaluate a base model and candidates on the same tokens; write a report");
  c->add_option("models", a.models, "BASE CANDIDATE... (models, or quant ppl --json results to include as they are)")
      ->required()
      ->expected(2, 1 << 20);
  c->add_option("--text", a.text, "evaluation text")->required();
  c->add_option("-o,--out", a.out, "report directory (report.md, report.json, report.html)")->required();
  c->add_option("--ctx", a.ctx, "window length")->capture_default_str();
  c->add_option("--protocol", a.protocol, "llamacpp | gptq")->check(CLI::IsMember({"llamacpp", "gptq"}))->capture_default_str();
  c->add_option("--chunks", a.chunks, "evaluate at most N windows");
  c->add_option("--sweep", a.sweep, "a sweep.json to draw as a per-layer heatmap");
  c->add_option("--label", a.labels, "names for the models, in order (default: file names)");
  c->add_option("--threads", a.threads, "OpenMP threads")->check(CLI::Range(1, 4096));
  c->add_flag("--json", a.json, "print report.json");
  c->add_flag("--quiet", a.quiet, "no progress on stderr");
  return c;
}

namespace {

std::string report_markdown(const nlohmann::json& r) {
  std::string o = "# quant compare\n\n";
  o += fmt::format("Text `{}`, protocol {}, ctx {}, {} chunks, {} scored tokens per model; base `{}`.\n\n", r["text"].get<std::string>(),
                   r["protocol"].get<std::string>(), r["ctx"].get<int64_t>(), r["chunks"].get<int64_t>(),
                   r["tokens_scored"].get<int64_t>(), r["base"].get<std::string>());
  for (const auto& w : r["warnings"]) o += "> **Warning:** " + w.get<std::string>() + "\n\n";
  o += "| model | file MB | logical MB | bpw (stored) | bpw (logical) | linears bpw | ppl | Δppl | mean KL | p99 KL | top-1 |\n";
  o += "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
  for (const auto& m : r["models"]) {
    const bool kl = m.contains("kl_mean");
    o += fmt::format("| {}{} | {:.3f} | {:.3f} | {:.3f} | {:.3f} | {:.3f} | {:.4f} | {} | {} | {} | {} |\n", m["label"].get<std::string>(),
                     m.value("imported", false) ? " (imported)" : "", m["file_bytes"].get<double>() / 1e6,
                     m.value("logical_bytes", 0.0) / 1e6, m["stored_bpw"].get<double>(),
                     m["logical_bpw"].get<double>(), m["decoder_linear_logical_bpw"].get<double>(), m["ppl"].get<double>(),
                     dppl_cell(m), kl ? fmt::format("{:.6f}", m["kl_mean"].get<double>()) : "-",
                     kl ? fmt::format("{:.6f}", m["kl_p99"].get<double>()) : "-",
                     kl ? fmt::format("{:.2f}%", 100 * m["top1"].get<double>()) : "-");
  }
  if (r.contains("sweep")) {
    const auto& s = r["sweep"];
    o += fmt::format("\n## Sweep `{}`\n\n{} {}-granularity, widths {}, Spearman(proxy, KL) = {}.\n\n| unit |", s["file"].get<std::string>(),
                     s["method"].get<std::string>(), s["granularity"].get<std::string>(), s["options"].dump(), spearman_str(s["spearman"]));
    for (const auto& b : s["options"]) o += fmt::format(" KL @{} |", b.get<std::string>());
    o += "\n|---|";
    for (size_t i = 0; i < s["bits"].size(); ++i) o += "---:|";
    o += "\n";
    for (const auto& u : s["units"]) {
      o += "| " + u["name"].get<std::string>() + " |";
      for (const auto& v : u["kl"]) o += v.is_null() ? " - |" : fmt::format(" {:.5f} |", v.get<double>());
      o += "\n";
    }
  }
  return o;
}

std::string report_html(const nlohmann::json& r) {
  std::string o = R"(<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>quant compare</title>
<style>
body { font-family: sans-serif; margin: 24px; color: #222; max-width: 1100px; }
table { border-collapse: collapse; margin: 12px 0; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; }
td { white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
th { background: #f2f2f2; }
.warn { background: #fff3cd; border: 1px solid #e0c36c; padding: 8px 12px; margin: 8px 0; }
figure { margin: 16px 0; }
figcaption { font-size: 13px; color: #555; max-width: 720px; }
</style></head><body>
<h1>quant compare</h1>
)";
  o += fmt::format("<p>Text <code>{}</code>, protocol <b>{}</b>, ctx {}, {} chunks, <b>{}</b> scored tokens per model; base <code>{}</code>.</p>\n",
                   xml_escape(r["text"].get<std::string>()), xml_escape(r["protocol"].get<std::string>()), r["ctx"].get<int64_t>(),
                   r["chunks"].get<int64_t>(), r["tokens_scored"].get<int64_t>(), xml_escape(r["base"].get<std::string>()));
  for (const auto& w : r["warnings"]) o += "<div class=\"warn\">Warning: " + xml_escape(w.get<std::string>()) + "</div>\n";
  o += "<table id=\"results\"><tr><th>model</th><th>file MB</th><th>logical MB</th><th>bpw stored</th><th>bpw logical</th><th>linears bpw</th><th>ppl</th>"
       "<th>&Delta;ppl</th><th>mean KL</th><th>p99 KL</th><th>top-1</th></tr>\n";
  ScatterSpec sc;
  sc.id = "pareto";
  sc.title = "Perplexity vs size";
  sc.x_label = "logical size, MB (codes + scales + zeros: what a budget counts; file sizes in the table)";
  sc.y_label = "perplexity";
  sc.pareto = true;
  // KL against the file each runtime loads (k-quant and IQ4 files differ in size by type; llama.cpp's
  // own files, imported by their ppl --json, sit on the same axes).
  ScatterSpec kls;
  kls.id = "pareto-kl";
  kls.title = "Mean KL vs file size";
  kls.x_label = "file size, MB";
  kls.y_label = "mean KL(base || model) per token";
  kls.pareto = true;
  kls.log_y = true;
  for (const auto& m : r["models"]) {
    const bool kl = m.contains("kl_mean");
    o += fmt::format("<tr><td>{}{}</td><td>{:.3f}</td><td>{:.3f}</td><td>{:.3f}</td><td>{:.3f}</td><td>{:.3f}</td><td>{:.4f}</td><td>{}</td>"
                     "<td>{}</td><td>{}</td><td>{}</td></tr>\n",
                     xml_escape(m["label"].get<std::string>()), m.value("imported", false) ? " (imported)" : "",
                     m["file_bytes"].get<double>() / 1e6, m.value("logical_bytes", 0.0) / 1e6, m["stored_bpw"].get<double>(), m["logical_bpw"].get<double>(),
                     m["decoder_linear_logical_bpw"].get<double>(), m["ppl"].get<double>(), dppl_cell(m),
                     kl ? fmt::format("{:.6f}", m["kl_mean"].get<double>()) : "-",
                     kl ? fmt::format("{:.6f}", m["kl_p99"].get<double>()) : "-",
                     kl ? fmt::format("{:.2f}%", 100 * m["top1"].get<double>()) : "-");
    sc.points.push_back({m.value("logical_bytes", 0.0) / 1e6, m["ppl"].get<double>(), m["label"].get<std::string>(),
                         m.value("base", false)});
    if (kl && !m.value("base", false) && m["kl_mean"].get<double>() > 0)
      kls.points.push_back({m["file_bytes"].get<double>() / 1e6, m["kl_mean"].get<double>(), m["label"].get<std::string>(), false});
  }
  o += "</table>\n<figure>\n" + scatter_svg(sc) +
       "<figcaption>Each model's perplexity against its logical size; the dashed line joins the models no other model beats on "
       "both (the Pareto front). Plain integer grids of 2 to 4 bits are stored in 4-bit legacy GGUF blocks, so their files are alike "
       "in size; k-quant and IQ4 files are not.</figcaption></figure>\n";
  if (kls.points.size() >= 2)
    o += "<figure>\n" + scatter_svg(kls) +
         "<figcaption>Mean KL divergence from the base model against the file's size, the models the base was compared with; the "
         "line joins those no other beats on both.</figcaption></figure>\n";
  if (r.contains("sweep")) {
    const auto& s = r["sweep"];
    HeatmapSpec hm;
    hm.id = "sweep-heatmap";
    hm.title = "Sweep: mean KL when one unit is quantized";
    hm.value_label = "mean KL";
    for (const auto& b : s["options"]) hm.cols.push_back(b.get<std::string>());
    ScatterSpec px;
    px.id = "proxy-vs-kl";
    px.title = "Proxy vs measured KL";
    px.x_label = "tr((W-Q) H (W-Q)^T)";
    px.y_label = "mean KL";
    px.log_x = px.log_y = true;
    for (const auto& u : s["units"]) {
      hm.rows.push_back(u["name"].get<std::string>());
      std::vector<double> row;
      for (size_t k = 0; k < u["kl"].size(); ++k) {
        const auto& v = u["kl"][k];
        row.push_back(v.is_null() ? std::nan("") : v.get<double>());
        if (!v.is_null()) px.points.push_back({u["proxy"][k].get<double>(), v.get<double>(), "", false});
      }
      hm.values.push_back(std::move(row));
    }
    o += fmt::format("<h2>Sweep <code>{}</code></h2>\n<p>{} at {} granularity, one unit quantized at a time with the rest FP, measured on "
                     "<code>{}</code> ({} scored tokens, ctx {}).</p>\n",
                     xml_escape(s["file"].get<std::string>()), xml_escape(s["method"].get<std::string>()),
                     xml_escape(s["granularity"].get<std::string>()), xml_escape(s["eval_text"].get<std::string>()),
                     s["tokens_scored"].get<int64_t>(), s["ctx"].get<int64_t>());
    o += "<figure>\n" + heatmap_svg(hm) + "<figcaption>Mean KL(FP || quantized) per unit and width (log colour scale).</figcaption></figure>\n";
    if (!px.points.empty())
      o += "<figure>\n" + scatter_svg(px) +
           fmt::format("<figcaption>The Hessian-weighted proxy against the measured KL, every (unit, width): Spearman {}.</figcaption>"
                       "</figure>\n",
                       spearman_str(s["spearman"]));
  }
  // Marks each plot with its rendered size: a headless browser's DOM dump then shows that the
  // SVG parsed and drew (the CI test reads these attributes).
  o += R"(<script>
for (const svg of document.querySelectorAll('svg.plot')) {
  const b = svg.getBoundingClientRect();
  const marks = svg.querySelectorAll('.mark, .cell').length;
  svg.setAttribute('data-rendered', b.width > 0 && b.height > 0 && marks > 0 ? 'ok' : 'empty');
  svg.setAttribute('data-rendered-size', Math.round(b.width) + 'x' + Math.round(b.height) + ':' + marks);
}
</script>
</body></html>
)";
  return o;
}

}  // namespace

namespace {

struct CompareEntry {
  std::string path, label;
  bool imported = false;
  nlohmann::json result;  // imported: quant ppl --json
  std::unique_ptr<LoadedModel> model;
  std::unique_ptr<LlamaRuntime> rt;
  PplScorer scorer;
  double seconds = 0;
};

// What the report draws of a sweep of the base model: its settings and each unit's KL and proxy.
nlohmann::json sweep_summary(const std::string& file, const LoadedModel& base) {
  const Sweep sw = Sweep::from_json(read_json_file(file, "sweep"), file);
  check_model_identity(sw.model, base.config, *base.weights, file);
  QUANT_CHECK(!sw.proxy_only, "{}: a --proxy-only sweep has no measured KL to draw", file);
  nlohmann::json j = {{"file", file}, {"method", method_name(sw.settings.method)}, {"granularity", sw.settings.granularity},
                      {"bits", sw.settings.bits}, {"options", nlohmann::json::array()},
                      {"spearman", sw.rank.value("spearman_all", nlohmann::json())},
                      {"eval_text", sw.eval.value("text", "?")}, {"tokens_scored", sw.eval.value("tokens_scored", int64_t{0})},
                      {"ctx", sw.eval.value("ctx", int64_t{0})}, {"protocol", sw.eval.value("protocol", "?")},
                      {"units", nlohmann::json::array()}};
  for (size_t k = 0; k < sw.settings.options(); ++k) j["options"].push_back(sw.settings.option_name(k));
  for (const auto& u : sw.units) {
    nlohmann::json kl = nlohmann::json::array(), proxy = nlohmann::json::array();
    for (const auto& o : u.options) {
      kl.push_back(o.kl_mean);
      proxy.push_back(o.proxy);
    }
    j["units"].push_back({{"name", u.name}, {"kl", kl}, {"proxy", proxy}});
  }
  return j;
}

// One pass over the chunks: the base's logits once per chunk, every candidate against them.
void score_chunks(std::vector<CompareEntry>& es, const std::vector<int32_t>& tokens, const PplChunks& ch, int64_t V, bool quiet) {
  CompareEntry& base = es[0];
  Progress prog("compare", quiet);
  std::vector<int32_t> window;
  std::vector<float> base_logits, logits;
  std::vector<double> base_lse(static_cast<size_t>(ch.ctx));
  for (int64_t c = 0; c < ch.chunks; ++c) {
    ch.window(tokens, c, window);
    auto t0 = std::chrono::steady_clock::now();
    base.rt->forward(window, ch.first, base_logits);
    base.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    for (int64_t j = ch.first; j < ch.ctx - 1; ++j) {
      const float* row = base_logits.data() + (j - ch.first) * V;
      base_lse[static_cast<size_t>(j)] = log_sum_exp(row, V);
      base.scorer.add(row, V, window[static_cast<size_t>(j + 1)]);
    }
    for (size_t i = 1; i < es.size(); ++i) {
      CompareEntry& e = es[i];
      if (!e.rt) continue;
      t0 = std::chrono::steady_clock::now();
      e.rt->forward(window, ch.first, logits);
      for (int64_t j = ch.first; j < ch.ctx - 1; ++j)
        e.scorer.add(logits.data() + (j - ch.first) * V, V, window[static_cast<size_t>(j + 1)],
                     base_logits.data() + (j - ch.first) * V, base_lse[static_cast<size_t>(j)]);
      e.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }
    prog.update(c + 1, ch.chunks, "chunks");
  }
}

// A quant ppl --json result taken as it is; a warning wherever its measurement differs.
nlohmann::json imported_row(const CompareEntry& e, const PplResult& br, const PplChunks& ch, const CompareArgs& a,
                            nlohmann::json& warnings) {
  const auto& r = e.result;
  const std::string model_path = r["model"].get<std::string>();
  nlohmann::json m = {{"imported", true}};
  m.update(fs::exists(model_path) ? model_footprint(model_path)
                                  : nlohmann::json{{"file_bytes", 0}, {"params", 0}, {"stored_bpw", 0}, {"logical_bpw", 0},
                                                   {"decoder_linear_logical_bpw", 0}});
  m["ppl"] = r["ppl"];
  m["ppl_stderr"] = r.value("ppl_stderr", 0.0);
  m["dppl"] = r["ppl"].get<double>() / br.ppl - 1;
  if (r.contains("kl_mean")) {
    m["kl_mean"] = r["kl_mean"];
    m["kl_p99"] = r.value("kl_p99", 0.0);
    m["top1"] = r.value("top1_agreement", 0.0);
  }
  std::vector<std::string> diffs;
  if (r["text"].get<std::string>() != a.text) diffs.push_back(fmt::format("text {}", r["text"].get<std::string>()));
  if (r.value("ctx", int64_t{0}) != ch.ctx) diffs.push_back(fmt::format("ctx {}", r.value("ctx", int64_t{0})));
  if (r.value("protocol", "") != protocol_name(ch.protocol)) diffs.push_back(fmt::format("protocol {}", r.value("protocol", "?")));
  if (r.value("chunks", int64_t{0}) != ch.chunks) diffs.push_back(fmt::format("{} chunks", r.value("chunks", int64_t{0})));
  if (!diffs.empty())
    warnings.push_back(fmt::format("{} was evaluated on a different measurement ({}; this report: text {}, ctx {}, protocol {}, "
                                   "{} chunks): its numbers are not comparable with the others",
                                   e.label, fmt::join(diffs, ", "), a.text, ch.ctx, protocol_name(ch.protocol), ch.chunks));
  if (r.contains("kl_mean") && r.value("kl_base", "") != a.models[0])
    warnings.push_back(fmt::format("{}: its KL was measured against {}, not this report's base {}", e.label, r.value("kl_base", "?"),
                                   a.models[0]));
  return m;
}

std::vector<CompareEntry> load_entries(const CompareArgs& a) {
  std::vector<CompareEntry> es(a.models.size());
  for (size_t i = 0; i < a.models.size(); ++i) {
    CompareEntry& e = es[i];
    e.path = a.models[i];
    e.label = a.labels.empty() ? fs::path(e.path).filename().string() : a.labels[i];
    if (fs::path(e.path).extension() == ".json") {
      QUANT_CHECK(i > 0, "{}: the base must be a model, not a result file", e.path);
      e.imported = true;
      e.result = read_json_file(e.path, "result");
      QUANT_CHECK(e.result.is_object() && e.result.contains("ppl") && e.result.contains("model") && e.result.contains("text"),
                  "{}: not a quant ppl --json result (needs model, text and ppl)", e.path);
      continue;
    }
    e.model = std::make_unique<LoadedModel>(load_model(e.path));
    e.rt = std::make_unique<LlamaRuntime>(e.model->config, *e.model->weights);
  }
  // Two files of one name (DIR1/model.onnx, DIR2/model.onnx): name them by their paths instead.
  if (a.labels.empty())
    for (auto& e : es)
      for (const auto& o : es)
        if (&o != &e && fs::path(o.path).filename() == fs::path(e.path).filename()) e.label = e.path;
  return es;
}

}  // namespace

ForwardProbe estimate_compare(const CompareArgs& a) {
  quant::set_num_threads(a.threads);
  LoadedModel m = load_model(a.models.at(0));
  const std::vector<int32_t> tokens = encode_text_file(*m.tokenizer, a.text);  // cached: compare_models reads it again
  PplOptions po;
  po.protocol = parse_protocol(a.protocol);
  po.ctx = a.ctx;
  po.max_chunks = a.chunks;
  const PplChunks ch = ppl_chunks(static_cast<int64_t>(tokens.size()), m.config.bos_id, po, m.config.max_ctx);
  LlamaRuntime rt(m.config, *m.weights);
  std::vector<int32_t> window;
  std::vector<float> logits;
  ch.window(tokens, 0, window);
  ForwardProbe p;
  p.ctx = ch.ctx;
  p.params = 0;
  for (const auto& t : m.weights->tensors()) {
    p.params += t.rows * t.cols;
    const double n = static_cast<double>(t.rows), k = static_cast<double>(t.cols);
    if (t.n_dims == 2 && t.rows > 1) p.solve_flops += 4.0 / 3.0 * k * k * k + 2.0 * n * k * k;
  }
  // The first forward converts and caches the weights; a second (when the first was quick) is the rate.
  for (int i = 0; i < 2; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    rt.forward(window, ch.first, logits);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    p.window_s = i == 0 ? s : std::min(p.window_s, s);
    if (s > 1.0) break;
  }
  // Scoring a window (log-sum-exp, and KL against the base for the others), as score_chunks does.
  const int64_t V = m.config.vocab;
  const auto t0 = std::chrono::steady_clock::now();
  PplScorer sc;
  for (int64_t j = ch.first; j < ch.ctx - 1; ++j) {
    const float* row = logits.data() + (j - ch.first) * V;
    sc.add(row, V, window[static_cast<size_t>(j + 1)], row, log_sum_exp(row, V));
  }
  const double score_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  p.seconds = (p.window_s + score_s) * static_cast<double>(ch.chunks) * static_cast<double>(a.models.size());
  return p;
}

nlohmann::json compare_models(const CompareArgs& a) {
  quant::set_num_threads(a.threads);
  QUANT_CHECK(a.labels.empty() || a.labels.size() == a.models.size(), "--label: {} names for {} models", a.labels.size(), a.models.size());
  QUANT_CHECK(!fs::exists(a.out) || fs::is_directory(a.out), "{}: exists and is not a directory", a.out);
  read_text(a.text);  // a missing or empty text fails before any model is loaded
  std::vector<CompareEntry> es = load_entries(a);
  CompareEntry& base = es[0];
  const std::vector<int32_t> tokens = encode_text_file(*base.model->tokenizer, a.text);
  for (size_t i = 1; i < es.size(); ++i)
    if (es[i].model) {
      QUANT_CHECK(es[i].model->config.vocab == base.model->config.vocab, "{}: vocabulary {} differs from the base's {}", es[i].path,
                  es[i].model->config.vocab, base.model->config.vocab);
      QUANT_CHECK(encode_text_file(*es[i].model->tokenizer, a.text) == tokens,
                  "{}: its tokenizer splits the text differently from the base's: KL needs the same tokens", es[i].path);
    }
  PplOptions po;
  po.protocol = parse_protocol(a.protocol);
  po.ctx = a.ctx;
  po.max_chunks = a.chunks;
  const PplChunks ch = ppl_chunks(static_cast<int64_t>(tokens.size()), base.model->config.bos_id, po, base.model->config.max_ctx);
  for (const auto& e : es)
    if (e.model) QUANT_CHECK(ch.ctx <= e.model->config.max_ctx, "{}: ctx {} exceeds its {} positions", e.path, ch.ctx, e.model->config.max_ctx);
  const nlohmann::json sweep_j = a.sweep.empty() ? nlohmann::json() : sweep_summary(a.sweep, *base.model);
  score_chunks(es, tokens, ch, base.model->config.vocab, a.quiet);
  nlohmann::json report = {{"format", "quant-compare"}, {"version", 1}, {"text", a.text}, {"protocol", protocol_name(ch.protocol)},
                           {"ctx", ch.ctx}, {"chunks", ch.chunks}, {"base", base.path}, {"models", nlohmann::json::array()},
                           {"warnings", nlohmann::json::array()}};
  PplResult br;
  base.scorer.result(br);
  report["tokens_scored"] = br.tokens_scored;
  for (size_t i = 0; i < es.size(); ++i) {
    CompareEntry& e = es[i];
    nlohmann::json m = {{"label", e.label}, {"path", e.path}, {"base", i == 0}};
    if (e.imported) {
      m.update(imported_row(e, br, ch, a, report["warnings"]));
    } else {
      PplResult pr;
      e.scorer.result(pr);
      m.update(model_footprint(e.path));
      m["ppl"] = pr.ppl;
      m["ppl_stderr"] = pr.ppl_stderr;
      m["dppl"] = pr.ppl / br.ppl - 1;
      m["seconds"] = e.seconds;
      if (i > 0) {
        m["kl_mean"] = pr.kl_mean;
        m["kl_p99"] = pr.kl_p99;
        m["top1"] = pr.top1_agree;
        m["dppl_stderr"] = pr.dppl_stderr();  // paired: the same positions as the base
        if (pr.within_noise())
          report["warnings"].push_back(fmt::format("{}: its ppl change {:+.3f}% is within noise (standard error {:.3f}% over {} tokens): "
                                                   "evaluate more --chunks to tell it from the base",
                                                   e.label, 100 * pr.dppl(), 100 * pr.dppl_stderr(),
                                                   pr.tokens_scored));
      }
    }
    report["models"].push_back(m);
  }
  if (!sweep_j.is_null()) {
    std::vector<std::string> diffs;
    if (sweep_j["eval_text"].get<std::string>() != a.text) diffs.push_back("text " + sweep_j["eval_text"].get<std::string>());
    if (sweep_j["ctx"].get<int64_t>() != ch.ctx) diffs.push_back(fmt::format("ctx {}", sweep_j["ctx"].get<int64_t>()));
    if (sweep_j["protocol"].get<std::string>() != protocol_name(ch.protocol)) diffs.push_back("protocol " + sweep_j["protocol"].get<std::string>());
    if (!diffs.empty())
      report["warnings"].push_back(fmt::format("the sweep {} was measured on {} ({} scored tokens), not on this report's text and context",
                                               a.sweep, fmt::join(diffs, ", "), sweep_j["tokens_scored"].get<int64_t>()));
    report["sweep"] = sweep_j;
  }
  // Everything is computed: now write the three files.
  std::error_code ec;
  fs::create_directories(a.out, ec);
  QUANT_CHECK(!ec, "{}: cannot create directory: {}", a.out, ec.message());
  write_atomic((fs::path(a.out) / "report.json").string(), report.dump(1));
  write_atomic((fs::path(a.out) / "report.md").string(), report_markdown(report));
  write_atomic((fs::path(a.out) / "report.html").string(), report_html(report));
  return report;
}

int run_compare_cmd(const CompareArgs& a) {
  const nlohmann::json report = compare_models(a);
  if (a.json) {
    std::cout << report.dump(2) << "\n";
    return 0;
  }
  std::cout << report_markdown(report) << fmt::format("\nwrote {}/report.{{md,json,html}}\n", a.out);
  return 0;
}

}  // namespace quant::cli
