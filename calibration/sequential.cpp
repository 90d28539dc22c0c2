// Sequential GPTQ over the decoder blocks.
#include "quant/sequential.h"

#include <chrono>

#include "quant/error.h"
#include "quant/gemm.h"
#include "quant/runtime.h"

namespace quant {

namespace {

// x [rows][in] += a [rows][in] * w^T, w [out][in] (out == in here: the residual stream).
void add_linear(float* x, const float* a, const float* w, int64_t rows, int64_t out, int64_t in) {
  gemm_nt(a, in, w, in, x, out, rows, out, in, 1.0f, true);
}

}  // namespace

std::vector<float> embed_windows(const LlamaConfig& cfg, const WeightStore& store,
                                 const std::vector<std::vector<int32_t>>& windows) {
  QUANT_CHECK(!windows.empty(), "calibration needs windows");
  const int64_t D = cfg.dim, T = static_cast<int64_t>(windows[0].size()), S = static_cast<int64_t>(windows.size());
  for (const auto& w : windows) QUANT_CHECK(static_cast<int64_t>(w.size()) == T, "calibration windows differ in length");
  std::vector<float> X(static_cast<size_t>(S * T * D));
  const std::vector<float> emb = store.read_f32("token_embd.weight");
  for (int64_t s = 0; s < S; ++s)
    for (int64_t t = 0; t < T; ++t) {
      const int32_t id = windows[static_cast<size_t>(s)][static_cast<size_t>(t)];
      QUANT_CHECK(id >= 0 && id < cfg.vocab, "calibration token {} outside the vocabulary", id);
      std::copy_n(emb.data() + id * D, D, X.data() + (s * T + t) * D);
    }
  return X;
}

BlockTensors::BlockTensors(const LlamaConfig& cfg, const WeightStore& store, int64_t block) : qkv_bias(cfg.qkv_bias) {
  const std::string b = "blk." + std::to_string(block) + ".";
  for (const char* n : {"attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down"})
    w[n] = store.read_f32(b + n + ".weight");
  if (qkv_bias)
    for (const char* n : {"attn_q", "attn_k", "attn_v"}) w[std::string(n) + ".bias"] = store.read_f32(b + n + ".bias");
}

BlockWeights BlockTensors::view() {
  BlockWeights bw{w["attn_norm"].data(), w["attn_q"].data(), w["attn_k"].data(), w["attn_v"].data()};
  if (qkv_bias) {
    bw.bq = w["attn_q.bias"].data();
    bw.bk = w["attn_k.bias"].data();
    bw.bv = w["attn_v.bias"].data();
  }
  bw.wo = w["attn_output"].data();
  bw.ffn_norm = w["ffn_norm"].data();
  bw.wg = w["ffn_gate"].data();
  bw.wu = w["ffn_up"].data();
  bw.wd = w["ffn_down"].data();
  return bw;
}

SequentialResult gptq_sequential(const LlamaConfig& cfg, const WeightStore& store,
                                 const std::vector<std::vector<int32_t>>& windows, const std::vector<TensorPlan>& plans,
                                 const SequentialOptions& opts) {
  const auto t0 = std::chrono::steady_clock::now();
  std::map<std::string, const TensorPlan*> plan_of;
  for (const auto& p : plans) plan_of[p.name] = &p;
  std::vector<float> X = embed_windows(cfg, store, windows);  // block 0's inputs
  const int64_t D = cfg.dim, T = static_cast<int64_t>(windows[0].size()), S = static_cast<int64_t>(windows.size());
  SequentialResult res;
  std::vector<float> scratch(static_cast<size_t>(T * D));
  int64_t current_window = 0;
  double windows_per_s = 0;
  const std::vector<TapLinears>& steps = linears_by_tap();
  const int64_t total_steps = cfg.n_layers * static_cast<int64_t>(steps.size());
  for (int64_t l = 0; l < cfg.n_layers; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    BlockTensors blk(cfg, store, l);  // replaced tensor by tensor as they are quantized
    auto& W = blk.w;
    auto block_weights = [&] { return blk.view(); };
    // Quantizes this step's linears from statistics of `input` (each window through `half`,
    // stopped at the step's tap).
    auto do_step = [&](size_t si, const std::vector<float>& input, bool mlp_half, const TapFn& also) {
      const TapLinears& step = steps[si];
      std::vector<const TensorPlan*> todo;
      for (const char* n : step.linears) {
        auto it = plan_of.find(b + n + ".weight");
        if (it != plan_of.end() && it->second->requested.kind == QuantSpec::Kind::Grid) todo.push_back(it->second);
      }
      if (opts.progress)
        opts.progress(fmt::format("block {} {}{}", l, tap_name(step.tap),
                                  windows_per_s > 0 ? fmt::format(" ({:.1f} windows/s)", windows_per_s) : std::string()),
                      l * static_cast<int64_t>(steps.size()) + static_cast<int64_t>(si), total_steps);
      if (todo.empty() && !also) return;
      InputStats stats;
      const BlockWeights bw = block_weights();
      const auto s0 = std::chrono::steady_clock::now();
      for (int64_t s = 0; s < S; ++s) {
        std::copy_n(input.data() + s * T * D, T * D, scratch.data());
        current_window = s;
        const TapFn tap = [&](Tap t, const float* data, int64_t rows, int64_t width) {
          if (t != step.tap) return;
          if (also) also(t, data, rows, width);
          if (todo.empty()) return;
          if (stats.width() == 0) stats = InputStats(width);
          stats.add(data, rows);
        };
        try {
          if (mlp_half)
            run_mlp(cfg, bw, scratch.data(), T, tap, static_cast<int>(step.tap));
          else
            run_attention(cfg, bw, scratch.data(), T, tap, static_cast<int>(step.tap));
        } catch (const Error& e) {
          fail("block {} input {} (calibration window {}): {}", l, tap_name(step.tap), s, e.what());
        }
      }
      windows_per_s = static_cast<double>(S) / std::chrono::duration<double>(std::chrono::steady_clock::now() - s0).count();
      ++res.block_passes;
      if (todo.empty()) return;
      const std::vector<double> H = stats.hessian();
      for (const TensorPlan* p : todo) {
        const std::string short_name = p->name.substr(b.size(), p->name.size() - b.size() - 7);  // strip ".weight"
        std::vector<float>& w = W[short_name];
        GptqOptions go = opts.gptq;
        go.grid = p->requested.grid;
        GptqResult g = gptq_quantize(w.data(), p->rows, p->cols, H, go, p->name);
        res.layers.push_back({p->name, g.loss, g.seconds, g.damp_used, g.gemm_gflops, g.retries, g.dead_columns});
        if (opts.grid_sink) {
          g.q.dequantize(w.data());  // the block computes with exactly the grid the file holds
          opts.grid_sink(p->name, std::move(g.q));
          continue;
        }
        PackedTensor packed = pack(g.q, p->stored);
        // The block now computes with exactly what the file will hold.
        const int64_t rb = row_bytes(packed.type, p->cols);
        for (int64_t r = 0; r < p->rows; ++r) dequantize_row(packed.type, packed.data.data() + r * rb, w.data() + r * p->cols, p->cols);
        res.packed.emplace(p->name, std::move(packed));
      }
    };
    // Attention is computed once per window: the o_proj step keeps its input (the attention
    // output), from which the residual after the quantized o_proj follows with one GEMM.
    do_step(0, X, false, {});
    std::vector<float> A(X.size());
    do_step(1, X, false, [&](Tap, const float* data, int64_t rows, int64_t width) {
      std::copy_n(data, rows * width, A.data() + current_window * T * D);
    });
    add_linear(X.data(), A.data(), W["attn_output"].data(), S * T, D, D);  // X is now the mid-block residual
    A.clear();
    A.shrink_to_fit();
    do_step(2, X, true, {});
    do_step(3, X, true, {});
    // The next block's inputs come from this block, quantized.
    const BlockWeights bw = block_weights();
    for (int64_t s = 0; s < S; ++s) run_mlp(cfg, bw, X.data() + s * T * D, T);
    ++res.block_passes;
  }
  if (opts.progress) opts.progress("done", total_steps, total_steps);
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return res;
}

}  // namespace quant
