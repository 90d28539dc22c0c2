// AWQ and SmoothQuant searches, their plans as JSON, and folding a plan into the weights.
#include "quant/calibration/act_aware.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <Eigen/Core>
#include <map>
#include <nlohmann/json.hpp>

#include "quant/error.h"
#include "quant/gemm.h"
#include "quant/kquants.h"
#include "quant/runtime.h"
#include "quant/calibration/sequential.h"

namespace quant {

namespace {


std::string tname(int64_t l, const std::string& n) { return "blk." + std::to_string(l) + "." + n + ".weight"; }

// The quantized-then-dequantized weight a plan would store by RTN (fp32, same layout).
void fake_quant(const TensorPlan& p, const float* w, float* out) {
  if (plan_quantizes(p))
    quantize_rtn(p, w).dequantize(out);
  else
    std::copy_n(w, p.rows * p.cols, out);
}

double mse(const std::vector<float>& a, const std::vector<float>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
  return s / static_cast<double>(a.size());
}

// Columns of w [rows][cols] times s (or divided when `divide`), rows of w times 1/s.
void scale_cols(std::vector<float>& w, int64_t cols, const std::vector<float>& s) {
  for (size_t i = 0; i < w.size(); ++i) w[i] *= s[i % static_cast<size_t>(cols)];
}
void scale_rows_inv(std::vector<float>& w, int64_t cols, const std::vector<float>& s) {
  for (size_t i = 0; i < w.size(); ++i) w[i] /= s[i / static_cast<size_t>(cols)];
}

// The block inputs of the first `n` windows, run through `f` window by window.
using WindowFn = std::function<void(float* x, int64_t T)>;
std::vector<float> run_windows(const std::vector<float>& X, int64_t n, int64_t T, int64_t D, const WindowFn& f) {
  std::vector<float> out(X.begin(), X.begin() + n * T * D);
  for (int64_t s = 0; s < n; ++s) f(out.data() + s * T * D, T);
  return out;
}

// Every row a linear's input `tap` sees over the first n windows, [n*T][width].
std::vector<float> collect_tap(const LlamaConfig& cfg, const BlockWeights& bw, const std::vector<float>& X, int64_t n,
                               int64_t T, Tap tap, bool mlp_half) {
  std::vector<float> rows;
  const int64_t D = cfg.dim;
  std::vector<float> scratch(static_cast<size_t>(T * D));
  for (int64_t s = 0; s < n; ++s) {
    std::copy_n(X.data() + s * T * D, T * D, scratch.data());
    const TapFn f = [&](Tap t, const float* data, int64_t r, int64_t w) {
      if (t == tap) rows.insert(rows.end(), data, data + r * w);
    };
    if (mlp_half)
      run_mlp(cfg, bw, scratch.data(), T, f, static_cast<int>(tap));
    else
      run_attention(cfg, bw, scratch.data(), T, f, static_cast<int>(tap));
  }
  return rows;
}

std::vector<double> col_stat(const std::vector<float>& x, int64_t width, bool max) {
  std::vector<double> s(static_cast<size_t>(width), 0.0);
  const int64_t n = static_cast<int64_t>(x.size()) / width;
  for (int64_t r = 0; r < n; ++r)
    for (int64_t c = 0; c < width; ++c) {
      const double v = std::fabs(x[static_cast<size_t>(r * width + c)]);
      s[static_cast<size_t>(c)] = max ? std::max(s[static_cast<size_t>(c)], v) : s[static_cast<size_t>(c)] + v;
    }
  if (!max)
    for (auto& v : s) v /= static_cast<double>(n);
  return s;
}

}  // namespace

const char* awq_clip_name(AwqClip c) {
  switch (c) {
    case AwqClip::Sym: return "sym";
    case AwqClip::Range: return "range";
    case AwqClip::Ends: return "ends";
  }
  return "?";
}

AwqClip parse_awq_clip(const std::string& s) {
  for (AwqClip c : {AwqClip::Sym, AwqClip::Range, AwqClip::Ends})
    if (s == awq_clip_name(c)) return c;
  fail("AWQ clip search {} (sym, range, ends)", s);
}

// ---------------------------------------------------------------------------------------------
// Plans

ActPlan ActPlan::for_model(const std::string& method, const LlamaConfig& cfg) {
  ActPlan p;
  p.method = method;
  p.dim = cfg.dim;
  p.hidden = cfg.hidden;
  p.n_layers = cfg.n_layers;
  p.n_heads = cfg.n_heads;
  p.n_kv_heads = cfg.n_kv_heads;
  return p;
}

nlohmann::json ActPlan::to_json() const {
  nlohmann::json j = {{"format", "quant-act-plan"}, {"version", 1}, {"method", method},
                      {"model", {{"dim", dim}, {"hidden", hidden}, {"n_layers", n_layers}, {"n_heads", n_heads}, {"n_kv_heads", n_kv_heads}}},
                      {"settings", settings_json.empty() ? nlohmann::json::object() : nlohmann::json::parse(settings_json)},
                      {"notes", notes}};
  j["scales"] = nlohmann::json::array();
  for (const auto& e : scales)
  {
    nlohmann::json je = {{"prev", e.prev}, {"linears", e.linears}, {"alpha", e.alpha}, {"duo", e.duo}, {"loss_before", e.loss_before},
                         {"loss_after", e.loss_after}, {"scales", e.scales}};
    if (!e.prev_bias.empty()) je["prev_bias"] = e.prev_bias;
    if (e.kv_group > 1) {
      je["kv_group"] = e.kv_group;
      je["head_dim"] = e.head_dim;
    }
    j["scales"].push_back(std::move(je));
  }
  j["clips"] = nlohmann::json::array();
  for (const auto& c : clips) {
    nlohmann::json jc = {{"tensor", c.tensor}, {"group", c.group}, {"max", c.max}};
    if (!c.min.empty()) jc["min"] = c.min;
    j["clips"].push_back(std::move(jc));
  }
  return j;
}

ActPlan ActPlan::from_json(const nlohmann::json& j, const LlamaConfig& cfg, const WeightStore& store, const std::string& src) {
  ActPlan p;
  try {
    QUANT_CHECK(j.at("format").get<std::string>() == "quant-act-plan", "{}: not a quant plan (format {})", src,
                j.at("format").dump());
    p.method = j.at("method").get<std::string>();
    const auto& m = j.at("model");
    p.dim = m.at("dim").get<int64_t>();
    p.hidden = m.at("hidden").get<int64_t>();
    p.n_layers = m.at("n_layers").get<int64_t>();
    p.n_heads = m.at("n_heads").get<int64_t>();
    p.n_kv_heads = m.at("n_kv_heads").get<int64_t>();
    p.settings_json = j.value("settings", nlohmann::json::object()).dump();
    p.notes = j.value("notes", std::vector<std::string>{});
    for (const auto& e : j.at("scales")) {
      p.scales.push_back({e.at("prev").get<std::string>(), e.at("linears").get<std::vector<std::string>>(),
                          e.at("alpha").get<double>(), e.value("duo", false), 0, e.value("loss_before", 0.0), e.value("loss_after", 0.0),
                          e.at("scales").get<std::vector<float>>(), {}});
      p.scales.back().prev_bias = e.value("prev_bias", std::string());
      p.scales.back().kv_group = e.value("kv_group", int64_t{1});
      p.scales.back().head_dim = e.value("head_dim", int64_t{0});
    }
    for (const auto& c : j.at("clips"))
      p.clips.push_back({c.at("tensor").get<std::string>(), c.at("group").get<int64_t>(), c.at("max").get<std::vector<float>>(),
                         c.value("min", std::vector<float>{})});
  } catch (const nlohmann::json::exception& e) {
    fail("{}: plan: {}", src, e.what());
  }
  QUANT_CHECK(p.method == "awq" || p.method == "smoothquant", "{}: plan method {} (awq, smoothquant)", src, p.method);
  QUANT_CHECK(p.dim == cfg.dim && p.hidden == cfg.hidden && p.n_layers == cfg.n_layers && p.n_heads == cfg.n_heads &&
                  p.n_kv_heads == cfg.n_kv_heads,
              "{}: the plan is for another model (dim {}, hidden {}, {} layers, {}/{} heads; this one: {}, {}, {}, {}/{})", src,
              p.dim, p.hidden, p.n_layers, p.n_heads, p.n_kv_heads, cfg.dim, cfg.hidden, cfg.n_layers, cfg.n_heads,
              cfg.n_kv_heads);
  for (const auto& e : p.scales) {
    const TensorDesc* prev = store.find(e.prev);
    QUANT_CHECK(prev, "{}: plan names tensor {}, which the model does not have", src, e.prev);
    QUANT_CHECK(!e.linears.empty(), "{}: plan entry for {} scales no linear", src, e.prev);
    if (!e.prev_bias.empty()) {
      const TensorDesc* b = store.find(e.prev_bias);
      QUANT_CHECK(b && b->numel() == static_cast<int64_t>(e.scales.size()), "{}: plan entry for {}: bias {} {}", src, e.prev,
                  e.prev_bias, b ? fmt::format("has {} values for {} scales", b->numel(), e.scales.size()) : "is not in the model");
    }
    const int64_t width = static_cast<int64_t>(e.scales.size());
    QUANT_CHECK(prev->n_dims == 1 ? prev->numel() == width : prev->rows == width,
                "{}: plan scales {} with {} values; it has {}", src, e.prev, width, prev->n_dims == 1 ? prev->numel() : prev->rows);
    QUANT_CHECK(e.kv_group >= 1 && (e.kv_group == 1 || (e.head_dim > 0 && width % e.head_dim == 0)),
                "{}: plan entry for {}: kv_group {} with head_dim {} does not divide {} scales", src, e.prev, e.kv_group, e.head_dim, width);
    for (const auto& l : e.linears) {
      const TensorDesc* t = store.find(l);
      QUANT_CHECK(t, "{}: plan names tensor {}, which the model does not have", src, l);
      QUANT_CHECK(t->n_dims == 2 && t->cols == width * e.kv_group, "{}: plan scales {} ({} columns) with {} values{}", src, l, t->cols,
                  width, e.kv_group > 1 ? fmt::format(" shared by {} heads", e.kv_group) : "");
    }
    for (float s : e.scales) QUANT_CHECK(std::isfinite(s) && s > 0, "{}: plan scale {} for {} is not positive and finite", src, s, e.prev);
  }
  for (const auto& c : p.clips) {
    const TensorDesc* t = store.find(c.tensor);
    QUANT_CHECK(t && t->n_dims == 2, "{}: plan clips tensor {}, which the model does not have", src, c.tensor);
    QUANT_CHECK(c.group > 0 && static_cast<int64_t>(c.max.size()) == t->rows * ((t->cols + c.group - 1) / c.group),
                "{}: clip of {} has {} values for {} rows of {} columns in groups of {}", src, c.tensor, c.max.size(), t->rows,
                t->cols, c.group);
    for (float v : c.max) QUANT_CHECK(std::isfinite(v) && v >= 0, "{}: clip value {} of {} is not finite", src, v, c.tensor);
    QUANT_CHECK(c.min.empty() || c.min.size() == c.max.size(), "{}: clip of {} has {} minima for {} maxima", src, c.tensor,
                c.min.size(), c.max.size());
    for (float v : c.min) QUANT_CHECK(std::isfinite(v) && v <= 0, "{}: clip minimum {} of {} is not finite and <= 0", src, v, c.tensor);
  }
  return p;
}

void ActPlan::apply(const WeightStore& base, OverlayStore& out) const {
  std::map<std::string, std::vector<float>> w;
  auto get = [&](const std::string& n) -> std::vector<float>& {
    auto it = w.find(n);
    if (it == w.end()) it = w.emplace(n, out.replaced(n) ? out.read_f32(n) : base.read_f32(n)).first;
    return it->second;
  };
  for (const auto& e : scales) e.fold(get);
  for (const auto& c : clips) {
    const TensorDesc& d = base.get(c.tensor);
    c.apply(get(c.tensor).data(), d.rows, d.cols);
  }
  for (auto& [n, v] : w) out.set(n, std::move(v));
}

void ScaleEntry::fold(const std::function<std::vector<float>&(const std::string& name)>& get) const {
  std::vector<float>& prev = get(this->prev);
  const size_t n = scales.size();
  if (prev.size() == n)
    for (size_t i = 0; i < n; ++i) prev[i] /= scales[i];
  else
    scale_rows_inv(prev, static_cast<int64_t>(prev.size() / n), scales);
  if (!prev_bias.empty()) {
    std::vector<float>& b = get(prev_bias);
    for (size_t i = 0; i < n; ++i) b[i] /= scales[i];
  }
  const std::vector<float> cs = column_scales(scales, kv_group, head_dim);
  for (const auto& l : linears) scale_cols(get(l), static_cast<int64_t>(cs.size()), cs);
}

std::vector<float> ScaleEntry::column_scales(const std::vector<float>& s, int64_t kv_group, int64_t head_dim) {
  if (kv_group == 1) return s;
  std::vector<float> out(s.size() * static_cast<size_t>(kv_group));
  for (size_t c = 0; c < out.size(); ++c) out[c] = s[static_cast<size_t>(scale_of_col(static_cast<int64_t>(c), kv_group, head_dim))];
  return out;
}

void ClipEntry::apply(float* w, int64_t rows, int64_t cols) const {
  const int64_t ng = (cols + group - 1) / group;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t col = 0; col < cols; ++col) {
      const size_t g = static_cast<size_t>(r * ng + col / group);
      float& v = w[r * cols + col];
      v = std::clamp(v, min.empty() ? -max[g] : min[g], max[g]);
    }
}

// ---------------------------------------------------------------------------------------------
// AWQ

namespace {

// AWQ's candidate scales: mean|x|^α (llm-awq auto_scale), or with `wmean` AutoAWQ's duo
// scaling mean|x|^α / (wmean^(1-α) + 1e-4); normalized by sqrt(max * min).
std::vector<float> awq_scales(const std::vector<double>& mean, double alpha, const std::vector<double>* wmean = nullptr) {
  std::vector<float> s(mean.size());
  double mx = 0, mn = INFINITY;
  for (size_t i = 0; i < mean.size(); ++i) {
    const double v = std::max(std::pow(mean[i], alpha) / (wmean ? std::pow((*wmean)[i], 1 - alpha) + 1e-4 : 1.0), 1e-4);
    s[i] = static_cast<float>(v);
    mx = std::max(mx, v);
    mn = std::min(mn, v);
  }
  const double norm = std::sqrt(mx * mn);
  for (auto& v : s) v = static_cast<float>(v / norm);
  return s;
}

// y [rows][out] = x [rows][in] Wᵀ.
std::vector<float> matmul_t(const std::vector<float>& x, const std::vector<float>& w, int64_t in) {
  const int64_t rows = static_cast<int64_t>(x.size()) / in, out = static_cast<int64_t>(w.size()) / in;
  std::vector<float> y(static_cast<size_t>(rows * out));
  gemm_nt(x.data(), in, w.data(), in, y.data(), out, rows, out, in, 1.0f, false);
  return y;
}

}  // namespace

namespace {
// A clip search's first candidate: [min(w, 0), max(w, 0)] of the group, or ±max|w| when symmetric.
std::pair<float, float> widest_range(const float* wg, int64_t len, bool sym) {
  float lo = 0, hi = 0;
  for (int64_t j = 0; j < len; ++j) {
    lo = std::min(lo, wg[j]);
    hi = std::max(hi, wg[j]);
  }
  if (sym) hi = std::max(hi, -lo), lo = -hi;
  return {lo, hi};
}
}  // namespace

// AWQ's clip search for one linear (llm-awq auto_clip): per row and group of `group` columns,
// candidate ranges shrunk by (1 - i/20), i < 10, keeping the one whose quantized group gives the
// least output error on the sampled inputs. The error Σ_t (x_t · (q(w) - w))² is dᵀ G d with
// G = Σ_t x_tᵀ x_t the group's Gram matrix (double), computed once per column group: a candidate
// costs group² instead of tokens × group. `x` holds `nt` rows of `in` inputs.
ClipEntry clip_search(const std::string& name, const float* w, int64_t rows, int64_t in, const GridSpec& grid, const float* x,
                      int64_t nt, AwqClip mode) {
  const int64_t group = grid.group == 0 ? in : grid.group, ng = (in + group - 1) / group;
  using MatD = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic>;
  std::vector<MatD> gram(static_cast<size_t>(ng));
#pragma omp parallel for schedule(static)
  for (int64_t g = 0; g < ng; ++g) {
    const int64_t c0 = g * group, len = std::min(group, in - c0);
    MatD xg(nt, len);
    for (int64_t t = 0; t < nt; ++t)
      for (int64_t j = 0; j < len; ++j) xg(t, j) = x[t * in + c0 + j];
    gram[static_cast<size_t>(g)] = xg.transpose() * xg;
  }
  // Symmetric grids keep llm-awq's form (±max|w|); asym ones shrink the range's ends, together
  // (Range) or each on its own (Ends: 10 x 10 candidates).
  const bool sym = grid.sym || mode == AwqClip::Sym, ends = !sym && mode == AwqClip::Ends;
  ClipEntry ce{name, group, std::vector<float>(static_cast<size_t>(rows * ng)), {}};
  if (!sym) ce.min.resize(ce.max.size());
  const int maxq = (1 << grid.bits) - 1;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    std::vector<float> wc(static_cast<size_t>(group));
    Eigen::VectorXd d(group);
    for (int64_t g = 0; g < ng; ++g) {
      const int64_t c0 = g * group, len = std::min(group, in - c0);
      const float* wg = w + r * in + c0;
      const MatD& G = gram[static_cast<size_t>(g)];
      const auto [lo0, hi0] = widest_range(wg, len, sym);
      double best = INFINITY;
      float best_lo = lo0, best_hi = hi0;
      for (int i = 0; i < 10; ++i)
        for (int k = 0; k < (ends ? 10 : 1); ++k) {
          const float hi = hi0 * (1.0f - static_cast<float>(i) / 20.0f);
          const float lo = lo0 * (1.0f - static_cast<float>(ends ? k : i) / 20.0f);
          for (int64_t j = 0; j < len; ++j) wc[static_cast<size_t>(j)] = std::clamp(wg[j], lo, hi);
          const GridParams gp = fit_grid_group(wc.data(), len, 1, grid);
          for (int64_t j = 0; j < len; ++j) {
            const float q = quant_code(wc[static_cast<size_t>(j)], gp, maxq);
            d(j) = static_cast<double>(gp.scale * (q - gp.zero)) - wg[j];
          }
          const auto dl = d.head(len);
          const double err = dl.dot(G * dl);
          if (err < best) {  // ties keep the wider range (the earlier candidate)
            best = err;
            best_lo = lo;
            best_hi = hi;
          }
        }
      ce.max[static_cast<size_t>(r * ng + g)] = best_hi;
      if (!sym) ce.min[static_cast<size_t>(r * ng + g)] = best_lo;
    }
  }
  return ce;
}

ClipEntry clip_search_blocks(const std::string& name, const float* w, int64_t rows, int64_t in, TType t, const float* x,
                             int64_t nt) {
  QUANT_CHECK(is_kquant(t), "clip search: {} is not a super-block type", ttype_name(t));
  const int64_t group = kquant_group(t), sb = traits(t).block, nsb = in / sb, ng = in / group, per = sb / group;
  QUANT_CHECK(in % sb == 0, "clip search: {} has {} columns, not whole {}-blocks of {}", name, in, sb, ttype_name(t));
  using MatF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic>;
  std::vector<MatF> gram(static_cast<size_t>(nsb));  // per super-block: Σ_t x_tᵀ x_t over its columns
#pragma omp parallel for schedule(static)
  for (int64_t s = 0; s < nsb; ++s) {
    Eigen::MatrixXd xs(nt, sb);
    for (int64_t i = 0; i < nt; ++i)
      for (int64_t j = 0; j < sb; ++j) xs(i, j) = x[i * in + s * sb + j];
    gram[static_cast<size_t>(s)] = (xs.transpose() * xs).cast<float>();
  }
  // Types with mins (Q2_K, Q4_K, Q5_K) shrink both ends of the range together, the others ±max.
  const bool sym = !(t == TType::Q2_K || t == TType::Q4_K || t == TType::Q5_K);
  ClipEntry ce{name, group, std::vector<float>(static_cast<size_t>(rows * ng)), {}};
  if (!sym) ce.min.resize(ce.max.size());
  const int64_t block_bytes = row_bytes(t, sb);
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    std::vector<float> wc(static_cast<size_t>(sb)), deq(static_cast<size_t>(sb));
    std::vector<uint8_t> buf(static_cast<size_t>(block_bytes));
    Eigen::VectorXf d(sb);
    for (int64_t s = 0; s < nsb; ++s) {
      const float* ws = w + r * in + s * sb;
      std::copy_n(ws, sb, wc.data());
      const MatF& G = gram[static_cast<size_t>(s)];
      for (int64_t g = 0; g < per; ++g) {  // coordinate descent over the sub-blocks, left to right
        const float* wg = ws + g * group;
        const auto [lo0, hi0] = widest_range(wg, group, sym);
        double best = INFINITY;
        float best_lo = lo0, best_hi = hi0;
        for (int i = 0; i < 10; ++i) {
          const float f = 1.0f - static_cast<float>(i) / 20.0f, hi = hi0 * f, lo = lo0 * f;
          for (int64_t j = 0; j < group; ++j) wc[static_cast<size_t>(g * group + j)] = std::clamp(wg[j], lo, hi);
          quantize_kquant(t, wc.data(), buf.data(), sb);
          dequantize_kquant(t, buf.data(), deq.data(), sb);
          for (int64_t j = 0; j < sb; ++j) d(j) = deq[static_cast<size_t>(j)] - ws[j];
          const double err = static_cast<double>(d.dot(G * d));
          if (err < best) {  // ties keep the wider range (the earlier candidate)
            best = err;
            best_lo = lo;
            best_hi = hi;
          }
        }
        for (int64_t j = 0; j < group; ++j) wc[static_cast<size_t>(g * group + j)] = std::clamp(wg[j], best_lo, best_hi);
        const size_t e = static_cast<size_t>(r * ng + s * per + g);
        ce.max[e] = best_hi;
        if (!sym) ce.min[e] = best_lo;
      }
    }
  }
  return ce;
}

namespace {

// AWQ on one decoder block, on inputs X from the already-quantized blocks before it: the scale
// search of each of its four inputs (entries appended to the plan as chosen), then the clip
// search; the block's weights W carry the scales and clips as they are chosen.
class AwqBlock {
 public:
  using PlanOf = std::function<const TensorPlan&(int64_t l, const std::string& short_name)>;
  AwqBlock(const LlamaConfig& cfg, const WeightStore& store, int64_t l, const AwqOptions& o, const PlanOf& plan_of, ActPlan& plan,
           int64_t n, int64_t T)
      : cfg_(cfg), o_(o), plan_of_(plan_of), plan_(plan), l_(l), n_(n), T_(T), blk_(cfg, store, l) {}

  // q,k,v and gate,up: one scale per channel of the RMSNorm output they read, searched on the
  // output of the whole attention / MLP half; the norm absorbs 1/s.
  void scale_norm_fed(Tap tap, const std::vector<float>& input) {
    const bool mlp = tap_in_mlp(tap);
    const std::string norm = mlp ? "ffn_norm" : "attn_norm";
    const int64_t D = cfg_.dim;
    auto half = [&](const BlockWeights& bw, float* x, int64_t t) {
      if (mlp)
        run_mlp(cfg_, bw, x, t);
      else
        run_attention(cfg_, bw, x, t);
    };
    const auto ref = run_windows(input, n_, T_, D, [&](float* x, int64_t t) { half(blk_.view(), x, t); });
    const auto mean = col_stat(collect_tap(cfg_, blk_.view(), input, n_, T_, tap, mlp), D, false);
    const auto& reading = linears_reading(tap);
    const std::vector<std::string> lin(reading.begin(), reading.end());
    search(tname(l_, norm), lin, mean, ref, [&](const std::vector<float>& s) {
      BlockTensors t = scaled_fq(lin, s);
      return run_windows(input, n_, T_, D, [&](float* x, int64_t tt) { half(t.view(), x, tt); });
    });
    fold_last();
  }

  // o (from v's rows) and down (from up's rows): searched on the linear's own output. Under GQA
  // o's input column c reads v row scale_of_col(c): one scale per v row, shared by kv_group columns.
  void scale_row_fed(const std::string& prev, const std::string& linear, Tap tap, const std::vector<float>& input, int64_t kv_group) {
    const int64_t width = tap_width(cfg_, tap), hd = cfg_.head_dim();
    const auto x = collect_tap(cfg_, blk_.view(), input, n_, T_, tap, tap_in_mlp(tap));
    const auto ref = matmul_t(x, W()[linear], width);
    // Per row of prev: mean |x| over the kv_group input channels that read it.
    const std::vector<double> col_mean = col_stat(x, width, false);
    std::vector<double> mean(static_cast<size_t>(width / kv_group), 0.0);
    for (int64_t c = 0; c < width; ++c)
      mean[static_cast<size_t>(ScaleEntry::scale_of_col(c, kv_group, hd))] += col_mean[static_cast<size_t>(c)] / static_cast<double>(kv_group);
    auto expand = [&](const std::vector<float>& s) { return ScaleEntry::column_scales(s, kv_group, hd); };
    search(
        tname(l_, prev), {linear}, mean, ref,
        [&](const std::vector<float>& s) {
          BlockTensors t = scaled_fq({linear}, expand(s));
          return matmul_t(x, t.w[linear], width);
        },
        kv_group);
    if (blk_.w.count(prev + ".bias")) plan_.scales.back().prev_bias = fmt::format("blk.{}.{}.bias", l_, prev);
    fold_last();
  }

  // Clip search on every linear but q/k (their errors are diluted by the softmax; llm-awq), each
  // on `clip_tokens` of its input: `X` feeds the attention half, `Xmid` the MLP half.
  void clip(const std::vector<float>& X, const std::vector<float>& Xmid) {
    std::map<Tap, std::vector<float>> inputs;  // gate and up read the same input: collected once
    for (const char* nm : decoder_linear_names()) {
      if (nm == std::string_view("attn_q") || nm == std::string_view("attn_k")) continue;
      const TensorPlan& tp = plan_of_(l_, nm);
      const bool grid = tp.requested.kind == QuantSpec::Kind::Grid;
      const bool blocks = tp.requested.kind == QuantSpec::Kind::Ggml && is_kquant(tp.requested.type);
      if (!grid && !blocks) continue;  // legacy 32-blocks: ggml's own scale search, no clip
      const Tap tap = tap_of_linear(nm);
      const bool mlp = tap_in_mlp(tap);
      auto xi = inputs.find(tap);
      if (xi == inputs.end()) xi = inputs.emplace(tap, collect_tap(cfg_, blk_.view(), mlp ? Xmid : X, n_, T_, tap, mlp)).first;
      const std::vector<float>& x = xi->second;
      const int64_t in = tp.cols, rows_all = static_cast<int64_t>(x.size()) / in;
      const int64_t nt = std::min(rows_all, o_.clip_tokens), stride = rows_all / nt;
      std::vector<float> xs(static_cast<size_t>(nt * in));  // every stride-th token
      for (int64_t t = 0; t < nt; ++t) std::copy_n(x.data() + t * stride * in, in, xs.data() + t * in);
      std::vector<float>& w = W()[nm];
      ClipEntry ce = grid ? clip_search(tname(l_, nm), w.data(), tp.rows, in, tp.requested.grid, xs.data(), nt, o_.clip_mode)
                          : clip_search_blocks(tname(l_, nm), w.data(), tp.rows, in, tp.requested.type, xs.data(), nt);
      ce.apply(w.data(), tp.rows, in);
      plan_.clips.push_back(std::move(ce));
    }
  }

  BlockTensors& block() { return blk_; }
  // The block as the file will hold it: scaled, clipped and quantized.
  BlockTensors quantized() {
    BlockTensors q = blk_;
    for (const char* nm : decoder_linear_names()) fake_quant(plan_of_(l_, nm), W()[nm].data(), q.w[nm].data());
    return q;
  }

 private:
  std::map<std::string, std::vector<float>>& W() { return blk_.w; }

  // The entry just chosen, folded into the block's weights exactly as ActPlan::apply folds it
  // into the model, so the later searches and the clip search see the weights the file will get.
  void fold_last() {
    const std::string pre = fmt::format("blk.{}.", l_);
    plan_.scales.back().fold([&](const std::string& name) -> std::vector<float>& {
      std::string key = name.substr(pre.size());  // "blk.N.attn_v.weight" -> attn_v; biases keep ".bias"
      if (key.ends_with(".weight")) key.resize(key.size() - 7);
      return W().at(key);
    });
  }

  // Grid search over α for one input: `trial(s)` returns the output with the scaled linears
  // fake-quantized, compared with `ref`. Returns the chosen scales (entry recorded).
  // `group_of_heads` > 1: the v -> o case under GQA (ScaleEntry::scale_of_col maps o's columns).
  std::vector<float> search(const std::string& prev, const std::vector<std::string>& linears, const std::vector<double>& mean,
                            const std::vector<float>& ref, const std::function<std::vector<float>(const std::vector<float>&)>& trial,
                            int64_t group_of_heads = 1) {
    ScaleEntry e;
    e.prev = prev;
    e.kv_group = group_of_heads;
    e.head_dim = group_of_heads > 1 ? cfg_.head_dim() : 0;
    for (const auto& nm : linears) e.linears.push_back(tname(l_, nm));
    // AutoAWQ's duo family weighs in each input channel's mean |w| (normalized per group).
    std::vector<double> wmean(mean.size(), 0.0);
    int64_t wrows = 0;
    for (const auto& nm : linears) {
      const TensorPlan& tp = plan_of_(l_, nm);
      const int64_t cols = tp.cols, group = tp.requested.kind == QuantSpec::Kind::Grid && tp.requested.grid.group
                                                ? tp.requested.grid.group : (tp.requested.kind == QuantSpec::Kind::Ggml ? 32 : cols);
      const std::vector<float>& w = W()[nm];
      for (int64_t r = 0; r < tp.rows; ++r, ++wrows)
        for (int64_t c0 = 0; c0 < cols; c0 += group) {
          const int64_t c1 = std::min(cols, c0 + group);
          float gmax = 0;
          for (int64_t c = c0; c < c1; ++c) gmax = std::max(gmax, std::fabs(w[static_cast<size_t>(r * cols + c)]));
          for (int64_t c = c0; c < c1; ++c)
            wmean[static_cast<size_t>(e.scale_of_col(c))] += std::fabs(w[static_cast<size_t>(r * cols + c)]) / (gmax + 1e-6);
        }
    }
    for (auto& v : wmean) v /= static_cast<double>(wrows * group_of_heads);
    double best = INFINITY;
    for (int duo = 0; duo < (o_.duo ? 2 : 1); ++duo)
      for (int i = 0; i < o_.grid; ++i) {
        const double alpha = static_cast<double>(i) / o_.grid;
        const std::vector<float> sc = awq_scales(mean, alpha, duo ? &wmean : nullptr);
        const double loss = mse(trial(sc), ref);
        if (i == 0 && !duo) e.loss_before = loss;
        if (loss < best) {
          best = loss;
          e.alpha = alpha;
          e.duo = duo;
          e.scales = sc;
        }
      }
    e.loss_after = best;
    plan_.scales.push_back(e);
    return e.scales;
  }

  // A copy of the block whose `linears` are Q(W·s)/s.
  BlockTensors scaled_fq(const std::vector<std::string>& linears, const std::vector<float>& sc) {
    BlockTensors t = blk_;
    for (const auto& nm : linears) {
      std::vector<float> w = W()[nm];
      const int64_t cols = static_cast<int64_t>(sc.size());
      scale_cols(w, cols, sc);
      fake_quant(plan_of_(l_, nm), w.data(), t.w[nm].data());
      for (size_t i = 0; i < w.size(); ++i) t.w[nm][i] /= sc[i % static_cast<size_t>(cols)];
    }
    return t;
  }

  const LlamaConfig& cfg_;
  const AwqOptions& o_;
  const PlanOf& plan_of_;
  ActPlan& plan_;
  int64_t l_, n_, T_;
  BlockTensors blk_;
};

}  // namespace

ActPlan awq_search(const LlamaConfig& cfg, const WeightStore& store, const std::vector<std::vector<int32_t>>& windows,
                   const std::vector<TensorPlan>& plans, const AwqOptions& o) {
  QUANT_CHECK(o.grid >= 2, "--awq-grid {} (at least 2)", o.grid);
  ActPlan plan = ActPlan::for_model("awq", cfg);
  plan.settings_json = nlohmann::json({{"grid", o.grid}, {"duo", o.duo}, {"clip", o.clip ? awq_clip_name(o.clip_mode) : "none"},
                                       {"search_windows", o.search_windows}, {"clip_tokens", o.clip_tokens}}).dump();
  std::map<std::string, const TensorPlan*> plan_of;
  for (const auto& p : plans) plan_of[p.name] = &p;
  const AwqBlock::PlanOf tplan = [&](int64_t l, const std::string& nm) -> const TensorPlan& {
    auto it = plan_of.find(tname(l, nm));
    QUANT_CHECK(it != plan_of.end(), "AWQ: no plan for {}", tname(l, nm));
    return *it->second;
  };
  std::vector<float> X = embed_windows(cfg, store, windows);
  const int64_t D = cfg.dim, T = static_cast<int64_t>(windows[0].size()), S = static_cast<int64_t>(windows.size());
  const int64_t n = std::min(S, std::max<int64_t>(1, o.search_windows));
  // o_proj's inputs are v_proj's rows, repeated over the kv_group query heads that share a kv
  // head under GQA: one scale per v row, shared by its kv_group columns of o_proj (AutoAWQ skips
  // o_proj under GQA). A bias on v_proj is divided with its rows.
  const int64_t steps = cfg.n_layers * 5;
  int64_t step = 0;
  auto progress = [&](const std::string& what) {
    if (o.progress) o.progress(what, step, steps);
    ++step;
  };
  for (int64_t l = 0; l < cfg.n_layers; ++l) {
    AwqBlock b(cfg, store, l, o, tplan, plan, n, T);
    progress(fmt::format("awq block {} q,k,v", l));
    b.scale_norm_fed(Tap::AttnIn, X);
    progress(fmt::format("awq block {} o", l));
    b.scale_row_fed("attn_v", "attn_output", Tap::OIn, X, cfg.n_heads / cfg.n_kv_heads);
    const auto Xmid = run_windows(X, n, T, D, [&](float* x, int64_t t) { run_attention(cfg, b.block().view(), x, t); });
    progress(fmt::format("awq block {} gate,up", l));
    b.scale_norm_fed(Tap::MlpIn, Xmid);
    progress(fmt::format("awq block {} down", l));
    b.scale_row_fed("ffn_up", "ffn_down", Tap::DownIn, Xmid, 1);
    progress(fmt::format("awq block {} clip", l));
    if (o.clip) b.clip(X, Xmid);
    // The next block's inputs come from this block, scaled, clipped and quantized.
    BlockTensors q = b.quantized();
    for (int64_t s = 0; s < S; ++s) run_block(cfg, q.view(), X.data() + s * T * D, T);
  }
  if (o.progress) o.progress("done", steps, steps);
  return plan;
}

// ---------------------------------------------------------------------------------------------
// SmoothQuant

ActPlan smoothquant_search(const LlamaConfig& cfg, const WeightStore& store,
                           const std::vector<std::vector<int32_t>>& windows, const SmoothOptions& o) {
  const bool search = o.alpha < 0;
  QUANT_CHECK(search || (o.alpha >= 0 && o.alpha <= 1), "--alpha {} outside [0, 1] (or auto)", o.alpha);
  ActPlan plan = ActPlan::for_model("smoothquant", cfg);
  plan.settings_json = nlohmann::json({{"alpha", search ? nlohmann::json("auto") : nlohmann::json(o.alpha)},
                                       {"act_quant", act_quant_name(o.act_quant)}, {"search_windows", o.search_windows}}).dump();
  QUANT_CHECK(!(o.stats && search), "--alpha auto measures W8A8 block outputs on calibration activations: give --calib, not --stats");
  QUANT_CHECK(o.stats || !windows.empty(), "SmoothQuant needs --calib FILE (or --stats DIR with a fixed --alpha)");
  std::vector<float> X = o.stats ? std::vector<float>{} : embed_windows(cfg, store, windows);
  const int64_t D = cfg.dim, T = o.stats ? 0 : static_cast<int64_t>(windows[0].size()), S = static_cast<int64_t>(windows.size());
  const int64_t n = std::min(S, std::max<int64_t>(1, o.search_windows));
  RuntimeOptions ro;
  ro.act_bits = 8;
  ro.act_quant = o.act_quant;
  ro.isa = best_isa();
  for (int64_t l = 0; l < cfg.n_layers; ++l) {
    if (o.progress) o.progress(fmt::format("smoothquant block {}", l), l, cfg.n_layers);
    BlockTensors blk(cfg, store, l);
    auto& W = blk.w;
    // max|x| per channel of the two RMSNorm-fed inputs, over every calibration window.
    std::vector<double> xa(static_cast<size_t>(D), 0.0), xm(static_cast<size_t>(D), 0.0);
    if (o.stats) {
      xa = o.stats->max_abs(l, Tap::AttnIn);
      xm = o.stats->max_abs(l, Tap::MlpIn);
    } else {
      std::vector<float> scratch(static_cast<size_t>(T * D));
      const TapFn f = [&](Tap t, const float* data, int64_t rows, int64_t w) {
        if (t != Tap::AttnIn && t != Tap::MlpIn) return;
        auto& m = t == Tap::AttnIn ? xa : xm;
        for (int64_t i = 0; i < rows * w; ++i) m[static_cast<size_t>(i % w)] = std::max(m[static_cast<size_t>(i % w)], static_cast<double>(std::fabs(data[i])));
      };
      for (int64_t s = 0; s < S; ++s) {
        std::copy_n(X.data() + s * T * D, T * D, scratch.data());
        run_block(cfg, blk.view(), scratch.data(), T, f);
      }
    }
    auto wmax = [&](const std::vector<const char*>& names) {
      std::vector<double> m(static_cast<size_t>(D), 0.0);
      for (const char* nm : names)
        for (size_t i = 0; i < W[nm].size(); ++i) m[i % static_cast<size_t>(D)] = std::max(m[i % static_cast<size_t>(D)], static_cast<double>(std::fabs(W[nm][i])));
      return m;
    };
    const auto wa = wmax(linears_reading(Tap::AttnIn)), wm = wmax(linears_reading(Tap::MlpIn));
    auto smooth = [&](const std::vector<double>& xmax, const std::vector<double>& wmx, double alpha) {
      std::vector<float> s(xmax.size());
      for (size_t j = 0; j < s.size(); ++j)
        s[j] = static_cast<float>(std::max(std::pow(std::max(xmax[j], 1e-5), alpha) / std::pow(std::max(wmx[j], 1e-5), 1 - alpha), 1e-5));
      return s;
    };
    auto smoothed = [&](double alpha) {
      BlockTensors t = blk;
      const auto sa = smooth(xa, wa, alpha), sm = smooth(xm, wm, alpha);
      for (int64_t j = 0; j < D; ++j) {
        t.w["attn_norm"][static_cast<size_t>(j)] /= sa[static_cast<size_t>(j)];
        t.w["ffn_norm"][static_cast<size_t>(j)] /= sm[static_cast<size_t>(j)];
      }
      for (const char* nm : linears_reading(Tap::AttnIn)) scale_cols(t.w[nm], D, sa);
      for (const char* nm : linears_reading(Tap::MlpIn)) scale_cols(t.w[nm], D, sm);
      return std::make_tuple(t, sa, sm);
    };
    double alpha = o.alpha, loss_before = 0, loss_after = 0;
    if (search) {
      const auto ref = run_windows(X, n, T, D, [&](float* x, int64_t t) { run_block(cfg, blk.view(), x, t); });
      auto w8a8_loss = [&](BlockTensors& t) {
        std::vector<std::shared_ptr<const LinearOp>> ops;
        BlockWeights bw = t.view();
        for (const char* nm : decoder_linear_names()) {
          const int64_t cols = tap_width(cfg, tap_of_linear(nm));
          ops.push_back(make_w8a8_linear(t.w[nm].data(), static_cast<int64_t>(t.w[nm].size()) / cols, cols, ro));
          bw.op(nm) = ops.back().get();
        }
        return mse(run_windows(X, n, T, D, [&](float* x, int64_t tt) { run_block(cfg, bw, x, tt); }), ref);
      };
      loss_before = w8a8_loss(blk);
      double best = INFINITY;
      for (int i = 0; i <= 13; ++i) {  // 0.30, 0.35, ..., 0.95
        const double a = 0.30 + 0.05 * i;
        auto [t, sa, sm] = smoothed(a);
        const double loss = w8a8_loss(t);
        if (loss < best) {
          best = loss;
          alpha = a;
        }
      }
      loss_after = best;
    }
    auto [t, sa, sm] = smoothed(alpha);
    plan.scales.push_back({tname(l, "attn_norm"), {tname(l, "attn_q"), tname(l, "attn_k"), tname(l, "attn_v")}, alpha, false, 0,
                           loss_before, loss_after, sa, {}});
    plan.scales.push_back({tname(l, "ffn_norm"), {tname(l, "ffn_gate"), tname(l, "ffn_up")}, alpha, false, 0, loss_before, loss_after, sm, {}});
    // Smoothing keeps the FP function: the next block's inputs come from the FP block.
    if (!o.stats)
      for (int64_t s = 0; s < S; ++s) run_block(cfg, blk.view(), X.data() + s * T * D, T);
  }
  if (o.progress) o.progress("done", cfg.n_layers, cfg.n_layers);
  return plan;
}

}  // namespace quant
