// Activation-aware transforms: AWQ (Lin et al. 2023) and SmoothQuant (Xiao et al. 2022). Both
// search per-input-channel scales on calibration activations and fold them into the op before
// (an RMSNorm, or a linear's rows), leaving the FP function unchanged; AWQ also clips weights.
// The search returns a plan (data: JSON); applying a plan gives an OverlayStore.
#pragma once

#include <functional>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

#include "quant/int_gemm.h"
#include "quant/model.h"
#include "quant/policy.h"
#include "quant/calibration/stats_dir.h"

namespace quant {

// Scales s over the input channels of `linears` (their columns are multiplied by s); the op
// before (`prev`: an RMSNorm weight, or a linear whose rows are divided by s) absorbs 1/s.
struct ScaleEntry {
  std::string prev;
  std::vector<std::string> linears;
  double alpha = 0;
  bool duo = false;  // AWQ: the scales came from AutoAWQ's duo family (x and w statistics)
  double loss_fp = 0, loss_before = 0, loss_after = 0;  // output MSE: (unused) / α = 0 / chosen α
  std::vector<float> scales;
  // prev's bias when prev is a linear with one (Qwen2's v_proj before o_proj): its outputs are
  // divided by s too, or o_proj would see the bias scaled by s. Empty: none.
  std::string prev_bias;
  // Under GQA, v_proj -> o_proj: o's input column c = (head h, dim d) reads v row (h / kv_group,
  // d), so the linears have kv_group x as many columns as there are scales and column c takes
  // scales[(c / (head_dim * kv_group)) * head_dim + c % head_dim]. kv_group 1: column c takes s[c].
  int64_t kv_group = 1, head_dim = 0;
  static int64_t scale_of_col(int64_t c, int64_t kv_group, int64_t head_dim) {
    return kv_group == 1 ? c : (c / (head_dim * kv_group)) * head_dim + c % head_dim;
  }
  int64_t scale_of_col(int64_t c) const { return scale_of_col(c, kv_group, head_dim); }
  // The scales repeated over the linears' columns: s[scale_of_col(c)] for every column c.
  static std::vector<float> column_scales(const std::vector<float>& s, int64_t kv_group, int64_t head_dim);
  // prev ÷ s (a vector, or a linear's rows, and its bias), each linear's columns × s; `get` hands out the
  // tensors by full name, in memory.
  void fold(const std::function<std::vector<float>&(const std::string& name)>& get) const;
};

// Per (row, group) clipping of a (scaled) weight: w = clamp(w, -max, max).
struct ClipEntry {
  std::string tensor;
  int64_t group = 0;
  std::vector<float> max;  // [rows][ceil(cols / group)]
  std::vector<float> min;  // same shape; empty: symmetric, each group clamped to [-max, max]
  void apply(float* w, int64_t rows, int64_t cols) const;  // w [rows][cols] clamped in place
};

struct ActPlan {
  std::string method;  // "awq" or "smoothquant"
  std::string settings_json;  // the search's options, as recorded
  int64_t dim = 0, hidden = 0, n_layers = 0, n_heads = 0, n_kv_heads = 0;
  std::vector<ScaleEntry> scales;
  std::vector<ClipEntry> clips;
  std::vector<std::string> notes;  // e.g. "o_proj not scaled: GQA"

  static ActPlan for_model(const std::string& method, const LlamaConfig& cfg);  // empty, with the model's shape
  nlohmann::json to_json() const;
  // Validates against the model: names, shapes, finite positive scales (throws naming `source`).
  static ActPlan from_json(const nlohmann::json& j, const LlamaConfig& cfg, const WeightStore& store,
                           const std::string& source);
  // Folds scales (then clips) into a copy of the touched tensors.
  void apply(const WeightStore& base, OverlayStore& out) const;
};

// AWQ's clip search candidates, per group, i < 10 (and k < 10 for Ends):
//   Sym    llm-awq: clamp to ±(1 - i/20)·max|w| (the only form on a symmetric grid)
//   Range  asym grids: [(1 - i/20)·min, (1 - i/20)·max]
//   Ends   asym grids: [(1 - k/20)·min, (1 - i/20)·max], the two ends chosen together
enum class AwqClip { Sym, Range, Ends };
AwqClip parse_awq_clip(const std::string& s);  // "sym", "range", "ends"
const char* awq_clip_name(AwqClip c);

struct AwqOptions {
  int grid = 20;                  // α in {0, 1/grid, ..., (grid-1)/grid}
  bool clip = true;               // clip search on every linear but q/k
  AwqClip clip_mode = AwqClip::Ends;
  bool duo = true;                // also try AutoAWQ's duo scaling (mean|x|^α / mean|w|^(1-α))
  int64_t search_windows = 32;    // calibration windows the searches run on
  int64_t clip_tokens = 512;      // tokens the clip search measures on
  std::function<void(const std::string& what, int64_t done, int64_t total)> progress;
};

// AWQ's clip search for one linear w [rows][in] on `grid`, given `nt` sampled input rows x [nt][in]:
// per (row, group) the candidate range (see AwqClip) whose quantized group gives the least
// error of the group's partial output Σ_t (x_t · (q(w) - w))²; the first (widest) on ties.
ClipEntry clip_search(const std::string& name, const float* w, int64_t rows, int64_t in, const GridSpec& grid, const float* x,
                      int64_t nt, AwqClip mode);

// The same search onto a super-block type t (Q2_K .. Q6_K, IQ4_NL, IQ4_XS): per row and sub-block
// (kquant_group), candidate ranges shrunk by (1 - i/20), i < 10 (types with mins: both ends
// together; the others ±max), each judged by quantizing the row's whole super-block with ggml's
// quantizer and measuring the super-block's output error dᵀ G d; sub-blocks are visited left to
// right with the earlier ones at their chosen clamps, so the error never exceeds the unclipped one.
ClipEntry clip_search_blocks(const std::string& name, const float* w, int64_t rows, int64_t in, TType t, const float* x,
                             int64_t nt);

// AWQ: per block, on inputs computed by the already-quantized blocks before it; fake
// quantization follows each tensor's plan (its grid, or ggml's quantizer).
ActPlan awq_search(const LlamaConfig& cfg, const WeightStore& store, const std::vector<std::vector<int32_t>>& windows,
                   const std::vector<TensorPlan>& plans, const AwqOptions& opts);

struct SmoothOptions {
  double alpha = 0.5;             // < 0: search 0.30, 0.35, ..., 0.95 per block by block output MSE
  ActQuant act_quant = ActQuant::PerToken;  // of the W8A8 simulation the search measures
  int64_t search_windows = 16;
  // Fixed α only: max|x| from saved statistics (quant calibrate) instead of running `windows`.
  const StatsDir* stats = nullptr;
  std::function<void(const std::string& what, int64_t done, int64_t total)> progress;
};

// SmoothQuant: s_j = max|X_j|^α / max|W_:,j|^(1-α) over the linears reading input j, for the
// RMSNorm-fed inputs (q/k/v and gate/up), per block.
ActPlan smoothquant_search(const LlamaConfig& cfg, const WeightStore& store,
                           const std::vector<std::vector<int32_t>>& windows, const SmoothOptions& opts);

}  // namespace quant
