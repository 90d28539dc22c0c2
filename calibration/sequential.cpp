// The GPTQ drivers over the decoder blocks: sequential on calibration windows, or from saved
// statistics.
#include "quant/calibration/sequential.h"

#include <chrono>

#include "quant/error.h"
#include "quant/gemm.h"
#include "quant/runtime.h"
#include "quant/calibration/act_store.h"
#include "quant/calibration/resume.h"
#include "quant/calibration/stats_dir.h"

namespace quant {

namespace {

// x [rows][in] += a [rows][in] * w^T, w [out][in] (out == in here: the residual stream).
void add_linear(float* x, const float* a, const float* w, int64_t rows, int64_t out, int64_t in) {
  gemm_nt(a, in, w, in, x, out, rows, out, in, 1.0f, true);
}

std::vector<float> to_fp32(std::vector<double>&& h) {
  std::vector<float> f(h.begin(), h.end());
  std::vector<double>().swap(h);
  return f;
}

// The Hessian as GPTQ solves in it: the double sums (8 k^2 bytes) become 4 k^2 of fp32, with 12 k^2
// at the peak of the conversion (the memory plan's figure).
std::vector<float> fp32_hessian(InputStats&& stats) { return to_fp32(std::move(stats).take_hessian()); }


}  // namespace

std::vector<float> embed_windows(const LlamaConfig& cfg, const WeightStore& store,
                                 const std::vector<std::vector<int32_t>>& windows) {
  return embed_windows(cfg, store.read_f32("token_embd.weight").data(), windows);
}

std::vector<float> embed_windows(const LlamaConfig& cfg, const float* emb, const std::vector<std::vector<int32_t>>& windows) {
  QUANT_CHECK(!windows.empty(), "calibration needs windows");
  const int64_t D = cfg.dim, T = static_cast<int64_t>(windows[0].size()), S = static_cast<int64_t>(windows.size());
  for (const auto& w : windows) QUANT_CHECK(static_cast<int64_t>(w.size()) == T, "calibration windows differ in length");
  std::vector<float> X(static_cast<size_t>(S * T * D));
  for (int64_t s = 0; s < S; ++s)
    for (int64_t t = 0; t < T; ++t) {
      const int32_t id = windows[static_cast<size_t>(s)][static_cast<size_t>(t)];
      QUANT_CHECK(id >= 0 && id < cfg.vocab, "calibration token {} outside the vocabulary", id);
      std::copy_n(emb + id * D, D, X.data() + (s * T + t) * D);
    }
  return X;
}

BlockTensors::BlockTensors(const LlamaConfig& cfg, const WeightStore& store, int64_t block) : qkv_bias(cfg.qkv_bias) {
  const std::string b = "blk." + std::to_string(block) + ".";
  for (const char* n : {"attn_norm", "ffn_norm"}) w[n] = store.read_f32(b + n + ".weight");
  for (const auto& step : linears_by_tap())
    for (const char* n : step.linears) w[n] = store.read_f32(b + n + ".weight");
  if (qkv_bias)
    for (const char* n : linears_by_tap()[0].linears) w[std::string(n) + ".bias"] = store.read_f32(b + n + ".bias");
}

BlockWeights BlockTensors::view() {
  BlockWeights bw;
  bw.attn_norm = w.at("attn_norm").data();
  bw.ffn_norm = w.at("ffn_norm").data();
  for (const auto& step : linears_by_tap())
    for (const char* n : step.linears) bw.weight(n) = w.at(n).data();
  if (qkv_bias) {
    bw.bq = w.at("attn_q.bias").data();
    bw.bk = w.at("attn_k.bias").data();
    bw.bv = w.at("attn_v.bias").data();
  }
  return bw;
}

// ---------------------------------------------------------------------------------------------

GptqDriver::GptqDriver(const std::vector<TensorPlan>& plans, int64_t n_layers, SequentialOptions opts)
    : n_layers_(n_layers), opts_(std::move(opts)) {
  for (const auto& p : plans) plan_of_[p.name] = &p;
}

std::vector<const TensorPlan*> GptqDriver::todo(int64_t l, Tap tap) const {
  std::vector<const TensorPlan*> out;
  for (const auto& step : linears_by_tap())
    if (step.tap == tap)
      for (const char* n : step.linears) {
        auto it = plan_of_.find(fmt::format("blk.{}.{}.weight", l, n));
        if (it != plan_of_.end() && gptq_quantizable(it->second->requested)) out.push_back(it->second);
      }
  return out;
}

void GptqDriver::quantize(const TensorPlan& p, std::vector<float>& w, const std::vector<float>& H, bool keep_stored) {
  TensorReport r;
  GptqOptions go = opts_.gptq;
  go.importance = importance_of(opts_.importance, p);
  QuantWeight q = quantize_gptq(p, w.data(), H, go, r);
  res_.layers.push_back(r);
  // The block now computes with exactly what the file will hold.
  if (keep_stored) stored_values(p, q, opts_.grid_store, w.data());
  if (opts_.checkpoints) block_done_.push_back({p.name, {q, r}});
  if (opts_.sink) opts_.sink(p, std::move(q), r);
}

namespace {

class SequentialDriver final : public GptqDriver {
 public:
  SequentialDriver(const LlamaConfig& cfg, const WeightStore& store, const std::vector<std::vector<int32_t>>& windows,
                   const std::vector<TensorPlan>& plans, const SequentialOptions& opts)
      : GptqDriver(plans, cfg.n_layers, opts), cfg_(cfg), store_(store), T_(static_cast<int64_t>(windows[0].size())),
        S_(static_cast<int64_t>(windows.size())), scratch_(static_cast<size_t>(T_ * cfg.dim)),
        wide_(static_cast<size_t>(T_ * std::max(cfg.dim, cfg.hidden))) {
    const ActPlacement& at = opts_.acts;
    X_ = make_act_store(S_, T_ * cfg.dim, at.x_on_disk ? at.spill_dir : "");
    if (opts_.checkpoints && opts_.checkpoints->blocks_done() > 0) {  // resumed: the last finished block's outputs
      next_ = opts_.checkpoints->blocks_done();
      opts_.checkpoints->load_outputs(*X_);
      return;
    }
    const std::vector<float> table = store.read_f32("token_embd.weight");
    for (int64_t s = 0; s < S_; ++s) {  // window by window: no second copy of every window
      const std::vector<float> x = embed_windows(cfg, table.data(), {windows[static_cast<size_t>(s)]});
      X_->put(s, x.data());
    }
  }

  void run_block() override {
    const auto t0 = std::chrono::steady_clock::now();
    const int64_t l = next_, D = cfg_.dim, F = cfg_.hidden;
    const ActPlacement& at = opts_.acts;
    BlockTensors blk(cfg_, store_, l);  // replaced tensor by tensor as they are quantized
    const auto& steps = linears_by_tap();
    auto keep = [this](ActStore& st) {
      return [this, &st](Tap, const float* data, int64_t, int64_t) { st.put(current_window_, data); };
    };
    // Attention is computed once per window: the o_proj step keeps its input (the attention
    // output), from which the residual after the quantized o_proj follows with one GEMM per
    // window (as run_attention adds it: the same bytes).
    step(blk, l, 0, {});
    {
      const auto A = make_act_store(S_, T_ * D, at.attn_on_disk ? at.spill_dir : "");
      step(blk, l, 1, keep(*A));
      const float* wo = blk.w.at(steps[1].linears[0]).data();
      for_windows([&](int64_t s, float* x) {
        A->get(s, wide_.data());
        add_linear(x, wide_.data(), wo, T_, D, D);
      });
    }
    step(blk, l, 2, {});
    // The down_proj step keeps its input too (silu(gate) * up) unless the plan has no room for
    // it; then the block's MLP runs again on each window.
    std::unique_ptr<ActStore> G;
    if (at.down != ActPlacement::Down::Recompute)
      G = make_act_store(S_, T_ * F, at.down == ActPlacement::Down::Disk ? at.spill_dir : "");
    step(blk, l, 3, G ? keep(*G) : TapFn{});
    // The next block's inputs come from this block, quantized.
    const BlockWeights bw = blk.view();
    const float* wd = blk.w.at(steps[3].linears[0]).data();
    for_windows([&](int64_t s, float* x) {
      if (!G) return run_mlp(cfg_, bw, x, T_);
      G->get(s, wide_.data());
      add_linear(x, wide_.data(), wd, T_, D, F);
    });
    ++res_.block_passes;
    if (opts_.checkpoints) {
      std::vector<RunCheckpoints::Tensor> ts;
      for (auto& [name, qr] : block_done_) ts.push_back({name, std::move(qr.first), qr.second});
      block_done_.clear();
      opts_.checkpoints->save_block(l, ts, *X_);
    }
    ++next_;
    res_.seconds += seconds_since(t0);
    const int64_t total = n_layers_ * static_cast<int64_t>(steps.size());
    if (done() && opts_.progress) opts_.progress("done", total, total);
  }

 private:
  // f(s, x) on each window of the block's inputs, written back.
  template <typename Fn>
  void for_windows(Fn&& f) {
    for (int64_t s = 0; s < S_; ++s) {
      float* x = X_->data(s);
      if (!x) X_->get(s, x = scratch_.data());
      f(s, x);
      if (x == scratch_.data()) X_->put(s, x);
    }
  }

  // Quantizes step si's linears from statistics of the block's inputs (each window through its
  // half of the block, stopped at the step's tap); `also` sees the tap's rows too.
  void step(BlockTensors& blk, int64_t l, size_t si, const TapFn& also) {
    const TapLinears& st = linears_by_tap()[si];
    const std::vector<const TensorPlan*> plans = todo(l, st.tap);
    const int64_t n_steps = static_cast<int64_t>(linears_by_tap().size());
    if (opts_.progress)
      opts_.progress(fmt::format("block {} {}{}", l, tap_name(st.tap),
                                 fwd_seconds_ > 0 ? fmt::format(" ({:.1f} window passes/s, mean so far)", fwd_windows_ / fwd_seconds_)
                                                  : std::string()),
                     l * n_steps + static_cast<int64_t>(si), n_layers_ * n_steps);
    if (plans.empty() && !also) return;
    InputStats stats;
    const BlockWeights bw = blk.view();
    const auto s0 = std::chrono::steady_clock::now();
    for (int64_t s = 0; s < S_; ++s) {
      X_->get(s, scratch_.data());
      current_window_ = s;
      const TapFn tap = [&](Tap t, const float* data, int64_t rows, int64_t width) {
        if (t != st.tap) return;
        if (also) also(t, data, rows, width);
        if (plans.empty()) return;
        if (stats.width() == 0) stats = InputStats(width);
        stats.add(data, rows);
      };
      try {
        if (tap_in_mlp(st.tap))
          run_mlp(cfg_, bw, scratch_.data(), T_, tap, static_cast<int>(st.tap));
        else
          run_attention(cfg_, bw, scratch_.data(), T_, tap, static_cast<int>(st.tap));
      } catch (const Error& e) {
        fail("block {} input {} (calibration window {}): {}", l, tap_name(st.tap), s, e.what());
      }
    }
    // One rate for the run (steps differ in work: half blocks stopped at different taps).
    fwd_seconds_ += seconds_since(s0);
    fwd_windows_ += static_cast<double>(S_);
    ++res_.block_passes;
    if (plans.empty()) return;
    const std::vector<float> H = fp32_hessian(std::move(stats));
    const std::string b = fmt::format("blk.{}.", l);
    for (const TensorPlan* p : plans)
      quantize(*p, blk.w.at(p->name.substr(b.size(), p->name.size() - b.size() - 7)), H, true);  // strip ".weight"
  }

  const LlamaConfig& cfg_;
  const WeightStore& store_;
  std::unique_ptr<ActStore> X_;  // the current block's inputs, [windows][T][dim]
  int64_t T_, S_, current_window_ = 0;
  std::vector<float> scratch_;  // one window through half a block
  std::vector<float> wide_;     // one window of a kept tap (attention output, down_proj input)
  double fwd_seconds_ = 0, fwd_windows_ = 0;
};

class StatsDriver final : public GptqDriver {
 public:
  StatsDriver(const LlamaConfig& cfg, const WeightStore& store, const StatsDir& stats, const std::vector<TensorPlan>& plans,
              const SequentialOptions& opts)
      : GptqDriver(plans, cfg.n_layers, opts), store_(store), stats_(stats) {}

  void run_block() override {
    const auto t0 = std::chrono::steady_clock::now();
    const int64_t l = next_;
    if (opts_.progress) opts_.progress(fmt::format("block {}", l), l, n_layers_);
    for (const auto& step : linears_by_tap()) {
      const std::vector<const TensorPlan*> plans = todo(l, step.tap);
      if (plans.empty()) continue;
      const std::vector<float> H = to_fp32(stats_.hessian(l, step.tap));  // q/k/v and gate/up share one: read it once
      for (const TensorPlan* p : plans) {
        std::vector<float> w = store_.read_f32(p->name);
        quantize(*p, w, H, false);
      }
    }
    ++next_;
    res_.seconds += seconds_since(t0);
    if (done() && opts_.progress) opts_.progress("done", n_layers_, n_layers_);
  }

 private:
  const WeightStore& store_;
  const StatsDir& stats_;
};

}  // namespace

std::unique_ptr<GptqDriver> gptq_sequential_driver(const LlamaConfig& cfg, const WeightStore& weights,
                                                   const std::vector<std::vector<int32_t>>& windows,
                                                   const std::vector<TensorPlan>& plans, const SequentialOptions& opts) {
  return std::make_unique<SequentialDriver>(cfg, weights, windows, plans, opts);
}

std::unique_ptr<GptqDriver> gptq_stats_driver(const LlamaConfig& cfg, const WeightStore& weights, const StatsDir& stats,
                                              const std::vector<TensorPlan>& plans, const SequentialOptions& opts) {
  return std::make_unique<StatsDriver>(cfg, weights, stats, plans, opts);
}

SequentialResult gptq_sequential(const LlamaConfig& cfg, const WeightStore& weights,
                                 const std::vector<std::vector<int32_t>>& windows, const std::vector<TensorPlan>& plans,
                                 const SequentialOptions& opts) {
  auto d = gptq_sequential_driver(cfg, weights, windows, plans, opts);
  d->run_all();
  return d->result();
}

}  // namespace quant
