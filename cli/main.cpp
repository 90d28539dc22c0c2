// quant: the command-line front end. Parses arguments, shows progress, and is the only place
// that catches quant::Error (one clear line, non-zero exit).
#include <malloc.h>
#include <omp.h>

#include <CLI/CLI.hpp>
#include <Eigen/Core>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "progress.h"
#include "quant/error.h"
#include "quant/formats/gguf.h"
#include "quant/formats/imatrix.h"
#include "quant/formats/mmap.h"
#include "quant/formats/onnx_model.h"
#include "quant/gemm.h"
#include "quant/formats/loader.h"
#include "quant/runtime.h"
#include "quant/calibration/stats_dir.h"
#include "quant/calibration/text.h"

namespace quant::cli {
namespace {

// --threads is checked to be at least 1 by CLI11; more than the cores runs, with a warning.
void set_threads(int n) {
  if (n > omp_get_num_procs())
    std::cerr << fmt::format("warning: --threads {} is more than the {} cores here: threads will share cores and run slower\n", n,
                             omp_get_num_procs());
  quant::set_num_threads(n);
}

// --- ppl ---
struct PplArgs {
  std::string model, text, protocol = "llamacpp", kl_base, tokenizer, act_quant = "per-token";
  int64_t ctx = 512, chunks = -1;
  int act_bits = 0;
  int threads = 0;
  bool json = false, quiet = false, reference = false;
};

nlohmann::json ppl_json(const PplResult& r) {
  nlohmann::json j = {{"protocol", protocol_name(r.protocol)}, {"ctx", r.ctx}, {"chunks", r.chunks},
                      {"tokens_total", r.tokens_total}, {"tokens_scored", r.tokens_scored},
                      {"tokens_evaluated", r.tokens_evaluated}, {"nll", r.nll_mean}, {"ppl", r.ppl},
                      {"ppl_stderr", r.ppl_stderr}, {"seconds", r.seconds},
                      {"tokens_per_second", r.seconds > 0 ? static_cast<double>(r.tokens_evaluated) / r.seconds : 0.0}};
  if (r.has_kl) {
    j["kl_mean"] = r.kl_mean;
    j["kl_p99"] = r.kl_p99;
    j["top1_agreement"] = r.top1_agree;
    j["base_ppl"] = r.base_ppl;
    j["dppl"] = r.dppl();
    j["dppl_stderr"] = r.dppl_stderr();
    j["within_noise"] = r.within_noise();
  }
  return j;
}

int run_ppl(const PplArgs& a) {
  set_threads(a.threads);
  LoadedModel m = load_model(a.model, {a.tokenizer});
  const std::string text = read_text(a.text);
  const std::vector<int32_t> tokens = m.tokenizer->encode(text, true);
  RuntimeOptions ro;
  ro.act_bits = a.act_bits;
  ro.act_quant = parse_act_quant(a.act_quant);
  ro.reference = a.reference;
  LlamaRuntime rt(m.config, *m.weights, ro);
  std::unique_ptr<LoadedModel> base;
  std::unique_ptr<LlamaRuntime> base_rt;
  if (!a.kl_base.empty()) {
    base = std::make_unique<LoadedModel>(load_model(a.kl_base, {a.tokenizer}));
    const auto base_tokens = base->tokenizer->encode(text, true);
    QUANT_CHECK(base_tokens == tokens, "--kl-base {}: its tokenizer splits the text differently from {}", a.kl_base, a.model);
    base_rt = std::make_unique<LlamaRuntime>(base->config, *base->weights);
  }
  Progress prog("ppl", a.quiet);
  PplOptions o;
  o.protocol = parse_protocol(a.protocol);
  o.ctx = a.ctx;
  o.max_chunks = a.chunks;
  o.progress = [&](int64_t d, int64_t t) { prog.update(d, t, "chunks"); };
  const PplResult r = perplexity(rt, tokens, m.config.bos_id, o, base_rt.get());
  nlohmann::json j = ppl_json(r);
  j["model"] = a.model;
  j["text"] = a.text;
  j["threads"] = omp_get_max_threads();
  j["act_bits"] = a.act_bits;
  if (a.act_bits) {
    j["act_quant"] = a.act_quant;
    j["isa"] = isa_name(best_isa());
  }
  if (base) j["kl_base"] = a.kl_base;
  const std::map<std::string, int64_t> paths = rt.linear_paths();
  j["linears"] = paths;
  if (!a.act_bits) j["isa"] = isa_name(best_isa());
  for (const auto& [path, count] : paths)
    if (path.rfind("fp32 Q", 0) == 0 && !a.reference && !a.act_bits && !a.json)  // --json: in "linears"
      std::cerr << fmt::format("note: {} linears ({}) have no block kernel and run the fp32 reference path\n", count, path);
  if (a.json) {
    std::cout << j.dump(2) << "\n";
    return 0;
  }
  std::cout << fmt::format("model     {}\ntext      {}\nprotocol  {}  ctx {}  chunks {}  tokens scored {} (of {})\n", a.model,
                           a.text, protocol_name(r.protocol), r.ctx, r.chunks, r.tokens_scored, r.tokens_total);
  if (a.act_bits)
    std::cout << fmt::format("acts      int{} {} (integer GEMMs, {})\n", a.act_bits, a.act_quant, isa_name(best_isa()));
  std::string kinds;
  for (const auto& [path, count] : paths) kinds += fmt::format("{}{} x{}", kinds.empty() ? "" : ", ", path, count);
  std::cout << fmt::format("linears   {}\n", kinds);
  std::cout << fmt::format("ppl       {:.4f} +/- {:.4f}\n", r.ppl, r.ppl_stderr);
  if (r.has_kl) {
    std::cout << fmt::format("base ppl  {:.4f}  ({})  change {:+.3f}% +/- {:.3f}%{}\n", r.base_ppl, a.kl_base,
                             100 * r.dppl(), 100 * r.dppl_stderr(),
                             r.within_noise() ? "  (within noise: under two standard errors)" : "");
    std::cout << fmt::format("KL        mean {:.6f}  p99 {:.6f}  top-1 agreement {:.2f}%  (base {})\n", r.kl_mean, r.kl_p99,
                             100 * r.top1_agree, a.kl_base);
  }
  std::cout << fmt::format("time      {:.1f} s  ({:.0f} tokens/s, {} threads)\n", r.seconds,
                           static_cast<double>(r.tokens_evaluated) / r.seconds, omp_get_max_threads());
  return 0;
}

// --- calibrate ---
int run_calibrate(const std::string& model, const std::string& out, const std::string& imatrix_out, CalibSpec spec, int threads,
                  bool json, bool quiet) {
  set_threads(threads);
  QUANT_CHECK(!spec.file.empty(), "calibrate needs --calib FILE");
  QUANT_CHECK(!out.empty() || !imatrix_out.empty(), "calibrate needs -o DIR (statistics) and/or --imatrix FILE (llama.cpp's importance matrix)");
  LoadedModel m = load_model(model);
  const auto windows = calibration_windows(*m.tokenizer, spec, m.config.max_ctx);
  if (!imatrix_out.empty()) check_not_input(imatrix_out);  // before the work, not at the write
  Progress prog("calibrate", quiet);
  const auto t0 = std::chrono::steady_clock::now();
  Imatrix im;
  calibrate_to_dir(m.config, *m.weights, windows, spec, out, [&](int64_t d, int64_t t) { prog.update(d, t, "blocks"); },
                   imatrix_out.empty() ? nullptr : &im);
  const bool legacy = std::filesystem::path(imatrix_out).extension() == ".dat";
  if (!imatrix_out.empty()) write_imatrix(im, imatrix_out, legacy);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const nlohmann::json j = {{"model", model}, {"out", out}, {"imatrix", imatrix_out}, {"calibration", spec.to_json()},
                            {"tokens", static_cast<int64_t>(windows.size()) * spec.seqlen}, {"seconds", secs}};
  if (json) {
    std::cout << j.dump(2) << "\n";
    return 0;
  }
  if (!out.empty())
    std::cout << fmt::format("wrote statistics of {} windows x {} tokens to {}\n", windows.size(), spec.seqlen, out);
  if (!imatrix_out.empty())
    std::cout << fmt::format("wrote llama.cpp's importance matrix ({} format, {} entries) to {}\n", legacy ? "legacy .dat" : "GGUF",
                             im.entries.size(), imatrix_out);
  std::cout << fmt::format("{:.1f} s\n", secs);
  return 0;
}

// --- inspect ---
int run_inspect_onnx(const std::string& path, bool json) {
  const nlohmann::json j = nlohmann::json::parse(inspect_onnx_json(path));
  if (json) {
    std::cout << j.dump(2) << "\n";
    return 0;
  }
  std::cout << fmt::format("{}: ONNX IR {}, {}, {:.2f} MB{}\n", path, j["ir_version"].get<int64_t>(), j["producer"].get<std::string>(),
                           j["size_bytes"].get<uint64_t>() / 1e6, j["external_data"].empty() ? "" : " (with external data)");
  std::cout << "  opsets:";
  for (const auto& [k, v] : j["opsets"].items()) std::cout << " " << k << " " << v.get<int64_t>();
  std::cout << "\n  operators:";
  for (const auto& [k, v] : j["operators"].items()) std::cout << " " << k << " x" << v.get<int>();
  std::cout << "\n";
  for (const auto& [k, v] : j["metadata"].items()) std::cout << fmt::format("  {:<28} {}\n", k, v.get<std::string>());
  std::cout << fmt::format("\n  {:<28} {:>12} {:>18} {:>7} {:>16} {:>8}\n", "tensor", "shape", "stored", "bpw", "grid", "logical");
  for (const auto& t : j["tensors"])
    std::cout << fmt::format("  {:<28} {:>12} {:>18} {:>7.3f} {:>16} {:>8.3f}\n", t["name"].get<std::string>(),
                             fmt::format("{}x{}", t["shape"][0].get<int64_t>(), t["shape"][1].get<int64_t>()),
                             t["stored"].get<std::string>(), t["bpw"].get<double>(), t["grid"].get<std::string>(),
                             t["logical_bpw"].get<double>());
  std::cout << fmt::format("\n  {} parameters, {:.3f} bits/weight stored, {:.3f} logical\n", j["params"].get<uint64_t>(),
                           j["bpw"].get<double>(), j["logical_bpw"].get<double>());
  return 0;
}

int run_inspect(const std::string& path, bool json) {
  if (std::filesystem::path(path).extension() == ".onnx") return run_inspect_onnx(path, json);
  if (std::filesystem::is_directory(path) && std::filesystem::exists(std::filesystem::path(path) / "model.onnx"))
    return run_inspect_onnx((std::filesystem::path(path) / "model.onnx").string(), json);
  const nlohmann::json j = inspect_gguf_json(path);
  if (json) {
    std::cout << j.dump(2) << "\n";
    return 0;
  }
  std::cout << fmt::format("{}: GGUF v{}, {} tensors, {} metadata keys, {:.2f} MB\n", path, j["version"].get<uint32_t>(),
                           j["tensors"].size(), j["metadata"].size(), j["size_bytes"].get<uint64_t>() / 1e6);
  for (const auto& [k, v] : j["metadata"].items()) std::cout << fmt::format("  {:<40} {}\n", k, v.get<std::string>());
  std::cout << fmt::format("\n  {:<28} {:>14} {:>6} {:>7} {:>16} {:>8}\n", "tensor", "ne", "type", "bpw", "grid", "logical");
  for (const auto& t : j["tensors"]) {
    std::string ne;
    for (auto e : t["shape"]) ne += (ne.empty() ? "" : "x") + std::to_string(e.get<int64_t>());
    std::cout << fmt::format("  {:<28} {:>14} {:>6} {:>7.3f} {:>16} {:>8.3f}\n", t["name"].get<std::string>(), ne,
                             t["type"].get<std::string>(), t["bpw"].get<double>(), t["grid"].get<std::string>(),
                             t["logical_bpw"].get<double>());
  }
  std::cout << fmt::format("\n  {} parameters, {:.3f} bits/weight stored, {:.3f} logical\n", j["params"].get<uint64_t>(),
                           j["bpw"].get<double>(), j["logical_bpw"].get<double>());
  return 0;
}

// --- generate ---
int run_generate(const std::string& model, const std::string& tokenizer, const std::string& prompt, int64_t steps) {
  LoadedModel m = load_model(model, {tokenizer});
  LlamaRuntime rt(m.config, *m.weights);
  std::vector<int32_t> toks = m.tokenizer->encode(prompt, true);
  const size_t n0 = toks.size();
  toks = generate_greedy(rt, toks, steps - static_cast<int64_t>(n0) + 1);
  std::cout << prompt;
  for (size_t i = n0; i < toks.size(); ++i) {
    if (toks[i] == m.config.bos_id) break;
    std::cout << m.tokenizer->decode(toks[i - 1], toks[i]);
  }
  std::cout << std::endl;
  return 0;
}

}  // namespace
}  // namespace quant::cli

int main(int argc, char** argv) {
  using namespace quant::cli;
  // Every allocation of 1 MiB or more is its own mapping, returned on free: glibc's default
  // threshold rises with each large free, after which the per-window and per-strip buffers of a
  // long GPTQ run come from arenas that keep their pages, and the process grows block by block
  // past its memory plan.
  mallopt(M_MMAP_THRESHOLD, 1 << 20);
  CLI::App app{"quant: post-training quantization of Llama-family models"};
  app.require_subcommand(1);

  PplArgs pa;
  auto* ppl = app.add_subcommand("ppl", "perplexity of a model (HF dir, llama2.c file or GGUF) on a text");
  ppl->add_option("model", pa.model, "model path")->required();
  ppl->add_option("--text", pa.text, "evaluation text (plain, or .jsonl with a text field)")->required();
  ppl->add_option("--ctx", pa.ctx, "window length in tokens")->capture_default_str();
  ppl->add_option("--protocol", pa.protocol, "llamacpp | gptq")->check(CLI::IsMember({"llamacpp", "gptq"}))->capture_default_str();
  ppl->add_option("--chunks", pa.chunks, "evaluate at most N windows");
  ppl->add_option("--kl-base", pa.kl_base, "reference model for KL-divergence and top-1 agreement");
  ppl->add_option("--tokenizer", pa.tokenizer, "tokenizer.bin for llama2.c models");
  ppl->add_option("--threads", pa.threads, "OpenMP threads (default: all cores)")->check(CLI::Range(1, 4096));
  ppl->add_option("--act-bits", pa.act_bits, "8: int8 activations and integer GEMMs (W8A8 / W4A8); 0: float")
      ->check(CLI::IsMember({0, 8}))->capture_default_str();
  ppl->add_option("--act-quant", pa.act_quant, "int8 activation scales: per-token | per-tensor | per-block (32, llama.cpp's Q8_0)")
      ->check(CLI::IsMember({"per-token", "per-tensor", "per-block"}))->capture_default_str();
  ppl->add_flag("--reference", pa.reference,
                "convert every weight to fp32 (the reference path; by default quantized GGUF matrices run on their stored blocks)");
  ppl->add_flag("--json", pa.json, "print one JSON object");
  ppl->add_flag("--quiet", pa.quiet, "no progress on stderr");

  ConvertArgs ca;
  auto* conv = app.add_subcommand("convert", "quantize a model and write GGUF, ONNX or a GPTQ-format checkpoint");
  conv->add_option("model", ca.model, "model path")->required();
  conv->add_option("-o,--out", ca.out, "output .gguf, DIR/model.onnx, or DIR (gptq-safetensors)");
  conv->add_option("--format", ca.format, "gguf | onnx | gptq-safetensors (default: from the output's extension)")
      ->check(CLI::IsMember({"gguf", "onnx", "gptq-safetensors"}));
  conv->add_option("--gptq-zeros", ca.gptq_zeros, "gptq-safetensors: v1 (AutoGPTQ's zero - 1, what every loader reads) | v2 (GPTQModel)")
      ->check(CLI::IsMember({"v1", "v2"}))->capture_default_str();
  conv->add_option("--onnx-accuracy-level", ca.onnx_accuracy, "MatMulNBits accuracy_level: 0 (fp32) | 4 (int8 activations)")
      ->check(CLI::IsMember({0, 4}))->capture_default_str();
  conv->add_flag("--external-data", ca.external_data, "ONNX: weights in model.onnx.data beside the graph (forced above 2 GB)");
  conv->add_flag("--force", ca.force, "ONNX: write into an output directory that already holds files");
  conv->add_option("--method", ca.method, "rtn | gptq | awq | awq+gptq | smoothquant")->capture_default_str();
  conv->add_option("--calib", ca.calib.file, "calibration text (plain, or .jsonl with a text field)");
  conv->add_option("--nsamples", ca.calib.nsamples, "calibration windows")->capture_default_str();
  conv->add_option("--seqlen", ca.calib.seqlen, "tokens per calibration window")->capture_default_str();
  conv->add_option("--seed", ca.calib.seed, "seed of the window draw")->capture_default_str();
  conv->add_option("--calib-mode", ca.calib.mode, "random (GPTQ's draw) | concat")->check(CLI::IsMember({"random", "concat"}))->capture_default_str();
  conv->add_option("--damp", ca.gptq.damp, "GPTQ damping, fraction of mean diag(H)")->capture_default_str();
  conv->add_flag("--act-order", ca.gptq.act_order, "GPTQ: columns by decreasing diag(H), static groups");
  conv->add_flag("--dynamic-groups{false}", ca.gptq.static_groups,
                 "GPTQ: fit each group when reached, on updated weights (gptq.py's rule; default: static)");
  conv->add_option("--gptq-block", ca.gptq.block, "GPTQ lazy-batch width")->capture_default_str();
  conv->add_option("--stats", ca.stats_dir, "GPTQ (or SmoothQuant with a fixed --alpha) from saved statistics (quant calibrate) instead of --calib");
  conv->add_option("--awq-grid", ca.awq_grid, "AWQ: alpha candidates 0, 1/N, ..., (N-1)/N")->capture_default_str();
  conv->add_flag("--awq-no-clip", ca.awq_no_clip, "AWQ: skip the clip search");
  conv->add_option("--awq-clip", ca.awq_clip,
                   "AWQ clip candidates on asym grids: ends (min and max shrunk each on its own), range (both by one factor), "
                   "sym (llm-awq: ±max|w|; always on sym grids)")
      ->check(CLI::IsMember({"ends", "range", "sym"}))->capture_default_str();
  conv->add_option("--search-windows", ca.search_windows, "AWQ / SmoothQuant auto: calibration windows the searches measure on (default 32 / 16)");
  conv->add_option("--alpha", ca.alpha, "SmoothQuant migration strength in [0, 1], or auto (per block, 0.30..0.95)")->capture_default_str();
  conv->add_option("--act-quant", ca.act_quant, "SmoothQuant auto: int8 activations of the simulated W8A8 (per-token | per-tensor | per-block)")
      ->check(CLI::IsMember({"per-token", "per-tensor", "per-block"}))->capture_default_str();
  conv->add_option("--plan", ca.plan_file, "apply a bit-width plan (quant plan), or a saved AWQ / SmoothQuant plan instead of searching");
  conv->add_option("--dump-plan", ca.dump_plan, "write the AWQ / SmoothQuant plan as JSON");
  conv->add_option("--qtype", ca.qtype,
                   "a llama.cpp preset (Q2_K | Q3_K_S | Q3_K_M | Q3_K_L | Q4_K_S | Q4_K_M | Q5_K_S | Q5_K_M | Q6_K | IQ4_NL | IQ4_XS: "
                   "llama-quantize's tensor-type mix) or a type (Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q3_K | Q4_K | Q5_K | F16 | BF16 | F32: "
                   "every matrix that type, output.weight Q8_0)");
  conv->add_option("--imatrix", ca.imatrix, "llama.cpp importance matrix (GGUF or legacy .dat; quant calibrate --imatrix or llama-imatrix) "
                   "for ggml's importance-weighted quantizers");
  conv->add_flag("--pure", ca.pure, "with a preset: every matrix its base type (llama-quantize --pure), output.weight Q8_0");
  conv->add_option("--bits", ca.bits, "plain integer grid: bits 2..8");
  conv->add_option("--group-size", ca.group, "columns per scale: 32 | 64 | 128 | 0 (per channel)")->capture_default_str();
  conv->add_option("--grid-search", ca.grid_search, "grid range: minmax | mse (GPTQ's quant.py search, for RTN and GPTQ alike)")
      ->check(CLI::IsMember({"minmax", "mse"}))->capture_default_str();
  auto* sym = conv->add_flag("--sym", ca.sym, "symmetric grid");
  conv->add_flag("--asym", ca.asym, "asymmetric grid (default)")->excludes(sym);
  conv->add_option("--policy", ca.policy_file, "JSON rules [{match, qtype}] tried before the defaults");
  conv->add_option("--tokenizer", ca.tokenizer, "tokenizer.bin for llama2.c models");
  conv->add_option("--name", ca.name, "general.name");
  conv->add_option("--threads", ca.threads, "OpenMP threads")->check(CLI::Range(1, 4096));
  conv->add_flag("--dry-run", ca.dry_run, "print the resolved per-tensor policy, the memory plan and the projected time, and stop");
  conv->add_option("--max-memory", ca.max_memory_gb,
                   "GB of anonymous memory the run may use (default: what the machine has available); calibration activations "
                   "spill to --work past it")->check(CLI::PositiveNumber);
  conv->add_option("--work", ca.work, "directory for spilled activations and per-block checkpoints (default: OUT.work beside the output)");
  conv->add_flag("--resume", ca.resume, "continue a killed GPTQ run after the last block its work directory finished (same bytes)");
  conv->add_flag("--json", ca.json, "machine-readable output");
  conv->add_flag("--quiet", ca.quiet, "no progress on stderr");

  std::string cmodel, cout_dir, cimatrix;
  quant::CalibSpec cspec;
  int cthreads = 0;
  bool cjson = false, cquiet = false;
  auto* cal = app.add_subcommand("calibrate", "save calibration statistics (Hessians, mean|x|, max|x|) of the FP model");
  cal->add_option("model", cmodel, "model path")->required();
  cal->add_option("--calib", cspec.file, "calibration text (plain, or .jsonl with a text field)")->required();
  cal->add_option("-o,--out", cout_dir, "output directory of the statistics");
  cal->add_option("--imatrix", cimatrix, "also write llama.cpp's importance matrix (GGUF; legacy format when FILE ends in .dat)");
  cal->add_option("--nsamples", cspec.nsamples, "calibration windows")->capture_default_str();
  cal->add_option("--seqlen", cspec.seqlen, "tokens per window")->capture_default_str();
  cal->add_option("--seed", cspec.seed, "seed of the window draw")->capture_default_str();
  cal->add_option("--calib-mode", cspec.mode, "random | concat")->check(CLI::IsMember({"random", "concat"}))->capture_default_str();
  cal->add_option("--threads", cthreads, "OpenMP threads")->check(CLI::Range(1, 4096));
  cal->add_flag("--json", cjson, "print one JSON object");
  cal->add_flag("--quiet", cquiet, "no progress on stderr");

  std::string ipath;
  bool ijson = false;
  auto* insp = app.add_subcommand("inspect", "list a GGUF or ONNX file's metadata and tensors");
  insp->add_option("file", ipath, "GGUF file, or ONNX model written by quant convert")->required();
  insp->add_flag("--json", ijson, "print one JSON object");

  std::string gmodel, gtok, gprompt;
  int64_t gsteps = 256;
  auto* gen = app.add_subcommand("generate", "greedy decoding (llama2.c run.c -t 0 semantics)");
  gen->add_option("model", gmodel, "model path")->required();
  gen->add_option("--prompt", gprompt, "prompt text");
  gen->add_option("--steps", gsteps, "total positions including the prompt")->capture_default_str();
  gen->add_option("--tokenizer", gtok, "tokenizer.bin for llama2.c models");

  SweepArgs swa;
  auto* swc = add_sweep_command(app, swa);
  PlanArgs pla;
  auto* plc = add_plan_command(app, pla);
  CompareArgs cma;
  auto* cmc = add_compare_command(app, cma);
  QuantizeArgs qza;
  auto* qzc = add_quantize_command(app, qza);
  SynthArgs sya;
  auto* syc = add_synth_command(app, sya);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    // Like every other mistake: one error line (the parser's text), exit 1.
    std::cerr << "error: " << e.what() << " (see quant --help, or quant COMMAND --help)\n";
    return 1;
  }
  try {
    if (*ppl) return run_ppl(pa);
    if (*conv) return run_convert(ca, conv->get_option("--method")->count() > 0);
    if (*insp) return run_inspect(ipath, ijson);
    if (*cal) return run_calibrate(cmodel, cout_dir, cimatrix, cspec, cthreads, cjson, cquiet);
    if (*gen) return run_generate(gmodel, gtok, gprompt, gsteps);
    if (*swc) return run_sweep_cmd(swa);
    if (*plc) return run_plan_cmd(pla);
    if (*cmc) return run_compare_cmd(cma);
    if (*syc) return run_synth_cmd(sya);
    if (*qzc) return run_quantize_cmd(qza);
  } catch (const quant::Error& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
