// The subcommands beyond main.cpp's: sweep, plan, compare; and helpers they share with it.
#pragma once

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "progress.h"
#include "quant/calibration/calibration.h"
#include "quant/calibration/sweep.h"
#include "quant/gptq.h"
#include "quant/policy.h"
#include "quant/recipes.h"

namespace quant::cli {

nlohmann::json read_json_file(const std::string& path, const char* what);
// `text` to `path` under a temporary name, renamed into place.
void write_atomic(const std::string& path, const std::string& text);
// What `quant inspect --json` prints for a GGUF file.
nlohmann::json inspect_gguf_json(const std::string& path);
// Sizes of a model file or directory: file_bytes, params, stored_bpw, logical_bpw (whole model),
// decoder_linear_logical_bpw, logical_bytes.
nlohmann::json model_footprint(const std::string& path);

struct ConvertArgs {
  std::string model, out, method = "rtn", qtype, policy_file, tokenizer, name, format;
  std::string gptq_zeros = "v1";
  std::string plan_file, dump_plan, alpha = "0.5", act_quant = "per-token", grid_search = "minmax", awq_clip = "ends";
  int awq_grid = 20;
  int64_t search_windows = 0;  // 0: the method's default (AWQ 32, SmoothQuant 16)
  bool awq_no_clip = false;
  int bits = 0, onnx_accuracy = 0;
  bool external_data = false, force = false;
  int64_t group = 32;
  bool sym = false, asym = false, dry_run = false, json = false, quiet = false;
  bool pure = false;  // a preset's base type for every matrix, no mix
  int threads = 0;
  CalibSpec calib;
  GptqOptions gptq;
  std::string stats_dir, imatrix;
  std::string bitplan_file;  // set when --plan is a bit-width plan (quant plan)
  double alpha_value = 0.5;  // --alpha parsed (-1: auto)
  double max_memory_gb = 0;  // 0: what the machine has available
  std::string work;          // where activations spill and checkpoints go (default OUT.work beside the output)
  bool resume = false;       // continue a killed GPTQ run after its last finished block
};
// The conversion without printing: the --json summary and the per-tensor plans (after the stage
// ran, or as resolved for --dry-run).
struct ConvertResult {
  nlohmann::json summary;
  std::vector<TensorPlan> plans;
  std::string memory_plan;  // the plan as text (--dry-run prints it)
};
ConvertResult convert_model(const ConvertArgs& a, bool method_given);
int run_convert(const ConvertArgs& a, bool method_given);

struct SweepArgs {
  std::string model, text, out, method = "gptq", granularity = "tensor", bits = "2,3,4,8", stats_dir, protocol = "llamacpp", awq_clip = "ends";
  std::vector<std::string> qtypes;
  int64_t group = 32, ctx = 512, chunks = 40;  // group: every command's default (a GGUF Q4_0 / Q4_1 block)
  bool sym = false, asym = false, proxy_only = false, json = false, quiet = false, awq_no_clip = false, spread = false;
  int awq_grid = 20, threads = 0;
  int64_t search_windows = 32;
  CalibSpec calib;
  GptqOptions gptq;
};

struct PlanArgs {
  std::string sweep, out, objective, solver = "exact", rest = "Q8_0";
  double target_bpw = 0, target_size = 0, linear_bpw = 0;
  std::vector<int> bits;
  std::vector<std::string> qtypes;
  bool json = false, quiet = false;
};

struct CompareArgs {
  std::vector<std::string> models;  // base first
  std::string text, out, protocol = "llamacpp", sweep;
  std::vector<std::string> labels;
  int64_t ctx = 512, chunks = -1;
  int threads = 0;
  bool json = false, quiet = false;
};

// Registers the subcommands on `app`; returns them so main can tell which one ran.
CLI::App* add_sweep_command(CLI::App& app, SweepArgs& a);
CLI::App* add_plan_command(CLI::App& app, PlanArgs& a);
CLI::App* add_compare_command(CLI::App& app, CompareArgs& a);

// One timed forward of a model on ctx tokens, and what it predicts (estimate_compare below).
struct ForwardProbe {
  double seconds = 0;   // the comparison
  double window_s = 0;  // one forward of ctx tokens
  int64_t ctx = 0, params = 0;
  double solve_flops = 0;  // GPTQ's solves over every matrix: Cholesky and inverse of H (4/3 k^3), the update (2 n k^2)
};

struct QuantizeArgs {
  std::string model, out, qtype, recipe, text, report, format, tokenizer;
  int bits = 0;
  int64_t group = 32, chunks = -1;
  int threads = 0;
  bool no_eval = false, print_flags = false, json = false, quiet = false;
  CalibSpec calib;
  // A whole-file budget instead of --bits / --qtype: a GGUF type per tensor (sweep, plan, convert).
  double target_bpw = 0, target_size = 0;
  std::string work;  // the sweep and the plan (default: beside the output, NAME-plan/)
  int64_t sweep_chunks = 16;
  std::vector<std::string> sweep_types;  // empty: the format's default (quantize_target.cpp)
};
CLI::App* add_quantize_command(CLI::App& app, QuantizeArgs& a);
// --target-size / --target-bpw: sweep (reused when its inputs match), plan, convert.
struct TargetResult {
  ConvertResult conv;
  Recipe recipe;        // the method the types were measured and written with
  nlohmann::json info;  // the budget, what it counts, the plan's mix, the work files
  std::string line;     // what quantize prints of it
};
// eval_step: what follows the conversion (the progress lines say it); empty with --no-eval.
TargetResult quantize_to_target(const QuantizeArgs& a, const std::string& calib_file, const std::vector<StepAfter>& eval_step);
int run_quantize_cmd(const QuantizeArgs& a);

struct SynthArgs {
  std::string shape, out, dtype = "f16", tokenizer;
  uint64_t seed = 0;
  int64_t layers = 0, shard_mb = 4096;
  bool json = false, quiet = false, header_only = false;
};
CLI::App* add_synth_command(CLI::App& app, SynthArgs& a);
int run_synth_cmd(const SynthArgs& a);
int run_sweep_cmd(const SweepArgs& a);
// The sweep without printing (sweep.json written to a.out).
Sweep sweep_model(const SweepArgs& a);
int run_plan_cmd(const PlanArgs& a);
int run_compare_cmd(const CompareArgs& a);
// compare's measurement and report files (report.{json,md,html} in a.out) without printing.
nlohmann::json compare_models(const CompareArgs& a);
// How long compare_models(a) should take: one timed forward of the base model on a window of the
// text (two when the first is quick: it converts the weights), times the windows and the models,
// each assumed as fast as the base. Also the rate later steps are estimated at.
ForwardProbe estimate_compare(const CompareArgs& a);

}  // namespace quant::cli
