// Per-layer bit-width sweeps and mixed-precision plans.
//
// A sweep quantizes one unit at a time (a decoder linear, a decoder block, or one kind of linear
// across all blocks) at each bit-width while the rest of the model stays FP, and measures the
// damage on an evaluation text: perplexity increase and mean KL(FP || quantized) over the same
// scored positions as `quant ppl`, plus a cheap proxy, the Hessian-weighted error
// tr((W - Q) H (W - Q)^T) from calibration statistics. The FP model's logits on the text and its
// hidden states at each block are computed once; a unit whose first tensor is in block l is
// evaluated from the cached input of block l. A plan picks one width per unit under a size
// budget (a multiple-choice knapsack, quant/bitplan.h) and is data: {match, method, bits, group,
// qtype} rules that `quant convert --plan` applies.
#pragma once

#include <functional>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <vector>

#include "quant/calibration/act_aware.h"
#include "quant/bitplan.h"
#include "quant/gptq.h"
#include "quant/model.h"
#include "quant/policy.h"
#include "quant/runtime.h"
#include "quant/calibration/stats_dir.h"

namespace quant {

// Who the file belongs to: dimensions, every tensor's shape, and a fingerprint of the weights
// (FNV-1a over all norm vectors: cheap to read, and different in any two trained models).
nlohmann::json model_identity(const LlamaConfig& cfg, const WeightStore& store);
// Throws naming `source` and the first field that differs.
void check_model_identity(const nlohmann::json& recorded, const LlamaConfig& cfg, const WeightStore& store,
                          const std::string& source);

// The decoder linears, in GGUF order: blk.N.{attn_q, attn_k, attn_v, attn_output, ffn_gate,
// ffn_up, ffn_down}.weight.
std::vector<std::string> decoder_linears(const LlamaConfig& cfg);

// Codes, fp16 scales and (asymmetric) b-bit zeros of a rows x cols tensor, in bits; a last group
// shorter than `group` still carries a whole scale.
int64_t grid_logical_bits(const GridSpec& g, int64_t rows, int64_t cols);

struct SweepSettings {
  Method method = Method::Gptq;        // rtn | gptq | awq
  std::string granularity = "tensor";  // tensor | block | kind
  std::vector<int> bits = {2, 3, 4, 8};
  int64_t group = 128;                 // 0: per channel
  bool sym = false;
  // Options by name instead of widths: GGUF types (Q2_K ... Q6_K, IQ4_XS, Q8_0 ...) or grids each
  // with its own group ("int4 g32 asym", as QuantSpec writes it; what an ONNX plan chooses among);
  // `bits` then holds each one's nominal width (floor of its bits per weight), and token_embd and
  // output.weight (or the tied table) join the units, each by RTN onto the option. Types cost
  // their stored bytes, grids their logical bits.
  std::vector<std::string> qtypes;
  bool typed() const { return !qtypes.empty(); }
  size_t options() const { return typed() ? qtypes.size() : bits.size(); }
  // Option k as a policy spec: the type, or the grid of width bits[k].
  QuantSpec spec_at(size_t k) const;
  std::string option_name(size_t k) const;  // "Q4_K", or "4 bits"
  // Each type's nominal width: floor of its bits per weight (Q3_K 3, Q8_0 8); 0 for a bad name.
  static std::vector<int> nominal_bits(const std::vector<std::string>& types);
  // The grid of a width: 8 bits is always symmetric (Q8_0 holds int8 codes minus zero exactly;
  // asymmetric int8 does not fit int8 and would be stored as F16).
  GridSpec grid_for(int b) const;
  void check() const;  // throws naming the bad option
};

struct SweepOption {
  int bits = 0;
  std::string spec;          // "int3 g128 asym", or the type of a typed sweep ("Q3_K")
  std::string qtype;         // GGUF type the unit's tensors are stored in ("Q4_1"; "mixed" if they differ)
  int64_t logical_bits = 0;  // grid_logical_bits summed over the unit; a typed sweep: the stored bits
  int64_t stored_bytes = 0;  // bytes in the GGUF type
  double proxy = 0;          // sum over the unit's tensors of tr((W - Q) H (W - Q)^T)
  double method_loss = 0;    // GPTQ's own loss (sum of (w - q)^2 / Hinv_jj^2 / 2); RTN / AWQ: proxy
  bool measured = false;     // false in a --proxy-only sweep
  double ppl = 0, dppl = 0, kl_mean = 0, kl_p99 = 0, top1 = 0;  // dppl = ppl / ppl_FP - 1
  double seconds = 0;        // quantizing and evaluating this option
};

struct SweepUnit {
  std::string name;                  // "blk.3.ffn_down.weight", "blk.3", "ffn_down"
  std::vector<std::string> tensors;  // the decoder linears it covers
  std::vector<std::string> match;    // policy patterns that select exactly those tensors
  int64_t params = 0;
  int64_t first_block = 0;
  std::vector<SweepOption> options;  // one per width, in settings.bits (typed: qtypes) order
  bool outer = false;                // token_embd or output.weight (typed sweeps): RTN, no Hessian proxy
};

struct Sweep {
  static constexpr int kVersion = 1;
  SweepSettings settings;
  bool proxy_only = false;
  nlohmann::json model;        // model_identity()
  nlohmann::json calibration;  // the statistics' calibration spec
  nlohmann::json recipe;       // GPTQ / AWQ options
  nlohmann::json eval;         // text, protocol, ctx, chunks, tokens_scored (null when proxy only)
  nlohmann::json fp;           // the FP model on the eval tokens: ppl, nll
  nlohmann::json cost;         // forward passes, block passes, seconds (computed-once parts apart)
  nlohmann::json rank;         // Spearman(proxy, measured KL): all, and per width
  std::vector<SweepUnit> units;

  nlohmann::json to_json() const;
  // Refuses other formats and versions, and any unit whose options do not match the settings.
  static Sweep from_json(const nlohmann::json& j, const std::string& source);
};

struct SweepRun {
  SweepSettings settings;
  GptqOptions gptq;          // damping, act-order, lazy-batch width (the grid comes from the width)
  AwqOptions awq;            // AWQ's search, once per width over the whole model
  PplOptions eval;           // protocol, ctx, max_chunks of the measurement
  bool proxy_only = false;
  int64_t cache_mb = 2048;   // fp32 blocks kept between units while under this
  // The work ahead (units, evaluations, block passes, estimated seconds), once, before it starts.
  std::function<void(const nlohmann::json& estimate)> announce;
  std::function<void(const std::string& what, int64_t done, int64_t total)> progress;
};

// `stats`: the FP model's calibration statistics (Hessians for GPTQ and the proxy);
// `calib_windows`: the calibration windows AWQ searches on (may be empty for rtn / gptq);
// `eval_tokens`: the evaluation text's tokens (ignored when proxy_only).
Sweep run_sweep(const LlamaConfig& cfg, const WeightStore& store, const StatsDir& stats,
                const std::vector<std::vector<int32_t>>& calib_windows, std::span<const int32_t> eval_tokens,
                const SweepRun& run);

struct PlanRequest {
  // One budget. The first two count the whole model (every tensor: the swept ones, the rest and
  // the vectors; typed sweeps in stored bits, integer grids in logical bits); a file adds its header.
  double target_bpw = 0;      // bits per weight over all the model's parameters; or
  double target_size_mb = 0;  // that size in MB (1e6 bytes); or
  double linear_bpw = 0;      // logical bits per weight over the swept matrices alone
  std::string objective;      // kl | dppl | proxy (default: kl when measured, else proxy)
  std::string solver = "exact";  // exact | greedy (both are computed and reported)
  std::string rest = "Q8_0";
  std::vector<int> bits;  // the widths to choose from (each one the sweep measured); empty: all of them
  std::vector<std::string> qtypes;  // typed sweeps: the types to choose from; empty: all of them
};

// Throws for budgets below the all-narrowest plan or above FP16.
BitPlan plan_from_sweep(const Sweep& sweep, const PlanRequest& req, const std::string& sweep_file);

}  // namespace quant
