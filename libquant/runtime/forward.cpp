// FP32 forward pass: RMSNorm, rotate-half RoPE (as Hugging Face), causal GQA attention,
// SwiGLU MLP, tied or untied head. Activations are [T][dim] row-major; weights [out][in].
#include <Eigen/Core>
#include <cmath>

#include "quant/error.h"
#include "quant/gemm.h"
#include "quant/runtime.h"

namespace quant {

namespace {
using Mat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// y [T][out] (= or +=) x [T][in] * w^T, w [out][in]: the deterministic panel GEMM.
template <typename X, typename Y>
void linear(const X& x, const float* w, const LinearOp* op, int64_t out, Y& y, bool accumulate = false) {
  if (!accumulate) y.resize(x.rows(), out);
  if (op)
    op->apply(x.data(), x.rows(), y.data(), accumulate);
  else
    gemm_nt(x.data(), x.cols(), w, x.cols(), y.data(), out, x.rows(), out, x.cols(), 1.0f, accumulate);
}

template <typename X>
void rmsnorm(const X& x, const float* w, float eps, Mat& out) {
  out.resize(x.rows(), x.cols());
#pragma omp parallel for schedule(static)
  for (Eigen::Index t = 0; t < x.rows(); ++t) {
    double ss = 0;  // accumulate in double: HF computes the variance in fp32 over the row
    for (Eigen::Index i = 0; i < x.cols(); ++i) ss += static_cast<double>(x(t, i)) * x(t, i);
    const float inv = 1.0f / std::sqrt(static_cast<float>(ss / static_cast<double>(x.cols())) + eps);
    for (Eigen::Index i = 0; i < x.cols(); ++i) out(t, i) = w[i] * (x(t, i) * inv);
  }
}

// x[t][h*hd + i], i < hd/2, pairs with i + hd/2: HF's rotate_half.
void rope(Mat& x, int64_t n_head, int64_t hd, const std::vector<float>& inv_freq) {
  const int64_t half = hd / 2;
#pragma omp parallel for schedule(static)
  for (Eigen::Index t = 0; t < x.rows(); ++t)
    for (int64_t i = 0; i < half; ++i) {
      const float a = static_cast<float>(t) * inv_freq[static_cast<size_t>(i)];
      const float c = std::cos(a), s = std::sin(a);
      for (int64_t h = 0; h < n_head; ++h) {
        float& x0 = x(t, h * hd + i);
        float& x1 = x(t, h * hd + i + half);
        const float a0 = x0, a1 = x1;
        x0 = a0 * c - a1 * s;
        x1 = a1 * c + a0 * s;
      }
    }
}

}  // namespace

std::vector<float> rope_inv_freq(const LlamaConfig& cfg) {
  const int64_t hd = cfg.head_dim();
  std::vector<float> f(static_cast<size_t>(hd / 2));
  for (int64_t i = 0; i < hd / 2; ++i) {
    f[static_cast<size_t>(i)] = 1.0f / std::pow(cfg.rope_theta, static_cast<float>(2 * i) / static_cast<float>(hd));
    if (!cfg.rope_freq_factors.empty()) f[static_cast<size_t>(i)] /= cfg.rope_freq_factors[static_cast<size_t>(i)];
  }
  return f;
}

LlamaRuntime::LlamaRuntime(const LlamaConfig& cfg, const WeightStore& weights, RuntimeOptions opts)
    : cfg_(cfg), weights_(weights), opts_(opts) {
  cfg_.validate(weights.source());
  check_tensors_match(cfg_, weights_);
  QUANT_CHECK(opts_.act_bits == 0 || opts_.act_bits == 8, "--act-bits {} (8, or 0 for float activations)", opts_.act_bits);
  if ((opts_.act_bits == 8 || !opts_.reference) && opts_.isa == Isa::Scalar) opts_.isa = best_isa();
}

const LinearOp* LlamaRuntime::op(const std::string& name) {
  if (opts_.act_bits == 0 && opts_.reference) return nullptr;
  auto it = ops_.find(name);
  if (it == ops_.end()) {
    const TensorDesc& t = weights_.get(name);
    it = ops_.emplace(name, opts_.act_bits == 8 ? make_int_linear(weights_, t, opts_) : make_stored_linear(weights_, t, opts_.isa)).first;
  }
  return it->second.get();
}

std::map<std::string, int64_t> LlamaRuntime::linear_paths() const {
  std::map<std::string, int64_t> out;
  for (const auto& [name, o] : ops_) {  // every linear op() was asked for (null: the fp32 path)
    const TType type = weights_.get(name).type;
    const char* kind = !o ? "fp32" : opts_.act_bits == 8 ? "int8" : is_quantized(type) ? "block" : "stored";
    ++out[fmt::format("{} {}", kind, ttype_name(type))];
  }
  return out;
}

std::shared_ptr<const std::vector<float>> LlamaRuntime::weight(const std::string& name) {
  if (auto it = cache_.find(name); it != cache_.end()) return it->second;
  auto w = std::make_shared<const std::vector<float>>(weights_.read_f32(name));
  const int64_t bytes = static_cast<int64_t>(w->size() * sizeof(float));
  if (cached_bytes_ + bytes <= opts_.cache_mb * (1ll << 20)) {
    cache_.emplace(name, w);
    cached_bytes_ += bytes;
  }
  return w;
}

const char* tap_name(Tap t) {
  static const char* names[kNumTaps] = {"attn_in", "o_in", "mlp_in", "down_in"};
  return names[static_cast<int>(t)];
}

const std::vector<TapLinears>& linears_by_tap() {
  static const std::vector<TapLinears> steps = {{Tap::AttnIn, {"attn_q", "attn_k", "attn_v"}},
                                                {Tap::OIn, {"attn_output"}},
                                                {Tap::MlpIn, {"ffn_gate", "ffn_up"}},
                                                {Tap::DownIn, {"ffn_down"}}};
  return steps;
}

const std::vector<const char*>& linears_reading(Tap tap) {
  const TapLinears& s = linears_by_tap()[static_cast<size_t>(tap)];
  QUANT_CHECK(s.tap == tap, "linears_by_tap is not in tap order");
  return s.linears;
}

const std::vector<const char*>& decoder_linear_names() {
  static const std::vector<const char*> names = [] {
    std::vector<const char*> v;
    for (const auto& s : linears_by_tap()) v.insert(v.end(), s.linears.begin(), s.linears.end());
    return v;
  }();
  return names;
}

namespace {
// A decoder linear's weight and op slots in BlockWeights, by short name.
struct LinearSlot {
  std::string_view name;
  const float* BlockWeights::*w;
  const LinearOp* BlockWeights::*op;
};
constexpr LinearSlot kSlots[] = {{"attn_q", &BlockWeights::wq, &BlockWeights::oq},      {"attn_k", &BlockWeights::wk, &BlockWeights::ok},
                                 {"attn_v", &BlockWeights::wv, &BlockWeights::ov},      {"attn_output", &BlockWeights::wo, &BlockWeights::oo},
                                 {"ffn_gate", &BlockWeights::wg, &BlockWeights::og},    {"ffn_up", &BlockWeights::wu, &BlockWeights::ou},
                                 {"ffn_down", &BlockWeights::wd, &BlockWeights::od}};
const LinearSlot& slot(std::string_view n) {
  for (const LinearSlot& s : kSlots)
    if (s.name == n) return s;
  fail("{} is not a decoder linear", n);
}
}  // namespace

const float*& BlockWeights::weight(std::string_view n) { return this->*slot(n).w; }
const LinearOp*& BlockWeights::op(std::string_view n) { return this->*slot(n).op; }

Tap tap_of_linear(const std::string& short_name) {
  for (const auto& s : linears_by_tap())
    for (const char* n : s.linears)
      if (short_name == n) return s.tap;
  fail("{} is not a decoder linear", short_name);
}

namespace {
// Reports a tap; true when the caller asked to stop there.
bool report(const TapFn& tap, int stop_after, Tap t, const Mat& m) {
  if (tap) tap(t, m.data(), m.rows(), m.cols());
  return static_cast<int>(t) == stop_after;
}
}  // namespace

void run_block(const LlamaConfig& cfg, const BlockWeights& w, float* x, int64_t T, const TapFn& tap, int stop_after) {
  run_attention(cfg, w, x, T, tap, stop_after);
  if (stop_after >= 0 && stop_after <= static_cast<int>(Tap::OIn)) return;
  run_mlp(cfg, w, x, T, tap, stop_after);
}

void run_attention(const LlamaConfig& cfg, const BlockWeights& w, float* xp, int64_t T, const TapFn& tap, int stop_after) {
  const int64_t D = cfg.dim, hd = cfg.head_dim(), KV = cfg.kv_dim();
  const int64_t group = cfg.n_heads / cfg.n_kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  Eigen::Map<Mat> x(xp, T, D);
  Mat xn, q, k, v, attn(T, D);
  rmsnorm(x, w.attn_norm, cfg.norm_eps, xn);
  if (report(tap, stop_after, Tap::AttnIn, xn)) return;
  linear(xn, w.wq, w.oq, D, q);
  linear(xn, w.wk, w.ok, KV, k);
  linear(xn, w.wv, w.ov, KV, v);
  if (w.bq) q.rowwise() += Eigen::Map<const Eigen::RowVectorXf>(w.bq, D);
  if (w.bk) k.rowwise() += Eigen::Map<const Eigen::RowVectorXf>(w.bk, KV);
  if (w.bv) v.rowwise() += Eigen::Map<const Eigen::RowVectorXf>(w.bv, KV);
  QUANT_CHECK(cfg.sliding_window == 0 || T <= cfg.sliding_window,
              "a window of {} tokens is longer than the model's sliding_window of {}: sliding-window attention is "
              "not implemented, evaluate with a context of at most {}", T, cfg.sliding_window, cfg.sliding_window);
  const std::vector<float> inv_freq = rope_inv_freq(cfg);
  rope(q, cfg.n_heads, hd, inv_freq);
  rope(k, cfg.n_kv_heads, hd, inv_freq);
#pragma omp parallel for schedule(static)
  for (int64_t h = 0; h < cfg.n_heads; ++h) {
    const int64_t kvh = h / group;
    Mat s = q.middleCols(h * hd, hd) * k.middleCols(kvh * hd, hd).transpose();
    for (int64_t t = 0; t < T; ++t) {  // causal softmax of row t over keys 0..t
      float mx = -INFINITY;
      for (int64_t j = 0; j <= t; ++j) mx = std::max(mx, s(t, j) * scale);
      float sum = 0;
      for (int64_t j = 0; j <= t; ++j) sum += (s(t, j) = std::exp(s(t, j) * scale - mx));
      const float inv = 1.0f / sum;
      for (int64_t j = 0; j <= t; ++j) s(t, j) *= inv;
      for (int64_t j = t + 1; j < T; ++j) s(t, j) = 0;
    }
    attn.middleCols(h * hd, hd).noalias() = s * v.middleCols(kvh * hd, hd);
  }
  if (report(tap, stop_after, Tap::OIn, attn)) return;
  linear(attn, w.wo, w.oo, D, x, true);
}

void run_mlp(const LlamaConfig& cfg, const BlockWeights& w, float* xp, int64_t T, const TapFn& tap, int stop_after) {
  const int64_t D = cfg.dim, H = cfg.hidden;
  Eigen::Map<Mat> x(xp, T, D);
  Mat xn, g, u;
  rmsnorm(x, w.ffn_norm, cfg.norm_eps, xn);
  if (report(tap, stop_after, Tap::MlpIn, xn)) return;
  linear(xn, w.wg, w.og, H, g);
  linear(xn, w.wu, w.ou, H, u);
#pragma omp parallel for schedule(static)
  for (Eigen::Index t = 0; t < g.rows(); ++t)  // silu(gate) * up, row by row
    g.row(t) = g.row(t).array() / (1.0f + (-g.row(t).array()).exp()) * u.row(t).array();
  if (report(tap, stop_after, Tap::DownIn, g)) return;
  linear(g, w.wd, w.od, D, x, true);
}

void LlamaRuntime::forward(std::span<const int32_t> tokens, int64_t from, std::vector<float>& out) {
  const int64_t T = static_cast<int64_t>(tokens.size());
  const int64_t D = cfg_.dim, V = cfg_.vocab;
  QUANT_CHECK(T > 0 && from >= 0 && from < T, "forward: bad window (T = {}, logits from {})", T, from);
  Mat x(T, D), xn;
  embed(tokens, x.data());
  for (int64_t l = 0; l < cfg_.n_layers; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    std::vector<std::shared_ptr<const std::vector<float>>> hold;
    auto get = [&](const std::string& n) {
      hold.push_back(weight(b + n));
      return hold.back()->data();
    };
    // A linear with an integer op needs no fp32 copy.
    auto lin = [&](const std::string& n, const LinearOp*& o) -> const float* {
      o = op(b + n);
      return o ? nullptr : get(n);
    };
    BlockWeights w{get("attn_norm.weight")};
    w.wq = lin("attn_q.weight", w.oq);
    w.wk = lin("attn_k.weight", w.ok);
    w.wv = lin("attn_v.weight", w.ov);
    if (cfg_.qkv_bias) {
      w.bq = get("attn_q.bias");
      w.bk = get("attn_k.bias");
      w.bv = get("attn_v.bias");
    }
    w.wo = lin("attn_output.weight", w.oo);
    w.ffn_norm = get("ffn_norm.weight");
    w.wg = lin("ffn_gate.weight", w.og);
    w.wu = lin("ffn_up.weight", w.ou);
    w.wd = lin("ffn_down.weight", w.od);
    run_block(cfg_, w, x.data(), T);
  }
  Mat last = x.bottomRows(T - from);
  rmsnorm(last, weight("output_norm.weight")->data(), cfg_.norm_eps, xn);
  out.resize(static_cast<size_t>((T - from) * V));
  const bool block_head = opts_.act_bits == 0 || !cfg_.tied_embeddings;  // the integer path keeps a tied head float
  if (const LinearOp* o = block_head ? op(cfg_.tied_embeddings ? "token_embd.weight" : "output.weight") : nullptr) {
    o->apply(xn.data(), T - from, out.data(), false);
    return;
  }
  auto head = weight(cfg_.tied_embeddings ? "token_embd.weight" : "output.weight");
  gemm_nt(xn.data(), D, head->data(), D, out.data(), V, T - from, V, D, 1.0f, false);
}

void LlamaRuntime::embed(std::span<const int32_t> tokens, float* x) {
  const int64_t D = cfg_.dim, V = cfg_.vocab;
  const TensorDesc& t = weights_.get("token_embd.weight");
  StoredMatrix table;
  const bool rows = !cache_.count(t.name) && weights_.stored(t, table);  // only the rows used, from the file
  std::shared_ptr<const std::vector<float>> emb = rows ? nullptr : weight(t.name);
  for (size_t i = 0; i < tokens.size(); ++i) {
    const int32_t id = tokens[i];
    QUANT_CHECK(id >= 0 && id < V, "forward: token id {} outside vocabulary of {}", id, V);
    float* out = x + static_cast<int64_t>(i) * D;
    if (!rows) {
      std::copy_n(emb->data() + id * D, D, out);
      continue;
    }
    dequantize_row(table.type, table.row(id), out, D);
    for (int64_t c = 0; c < D; ++c)
      QUANT_CHECK(std::isfinite(out[c]), "{}: token_embd.weight holds a non-finite value at row {}, column {}", weights_.source(), id, c);
  }
}

void run_head(const LlamaConfig& cfg, const float* x, int64_t T, const float* norm, const float* head, float* logits) {
  Mat xn;
  rmsnorm(Eigen::Map<const Mat>(x, T, cfg.dim), norm, cfg.norm_eps, xn);
  gemm_nt(xn.data(), cfg.dim, head, cfg.dim, logits, cfg.vocab, T, cfg.vocab, cfg.dim, 1.0f, false);
}

std::vector<int32_t> generate_greedy(LlamaRuntime& rt, std::vector<int32_t> tokens, int64_t steps) {
  std::vector<float> logits;
  const int64_t V = rt.config().vocab;
  for (int64_t s = 0; s < steps && static_cast<int64_t>(tokens.size()) < rt.config().max_ctx; ++s) {
    rt.forward(tokens, static_cast<int64_t>(tokens.size()) - 1, logits);
    tokens.push_back(static_cast<int32_t>(std::max_element(logits.begin(), logits.begin() + V) - logits.begin()));
  }
  return tokens;
}

}  // namespace quant
