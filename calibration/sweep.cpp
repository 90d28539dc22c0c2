// Bit-width sweeps (one unit quantized at a time, the rest FP) and plans from them.
#include "quant/calibration/sweep.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <set>

#include "quant/bitplan.h"
#include "quant/error.h"
#include "quant/hash.h"
#include "quant/gemm.h"
#include "quant/calibration/sequential.h"

namespace quant {

namespace {

// blk.N.attn_q.weight -> (N, "attn_q")
std::pair<int64_t, std::string> split_name(const std::string& name) {
  const size_t dot = name.find('.', 4);
  return {std::stoll(name.substr(4, dot - 4)), name.substr(dot + 1, name.size() - dot - 1 - 7)};
}


}  // namespace

std::vector<std::string> decoder_linears(const LlamaConfig& cfg) {
  std::vector<std::string> out;
  for (int64_t l = 0; l < cfg.n_layers; ++l)
    for (const char* n : decoder_linear_names()) out.push_back(fmt::format("blk.{}.{}.weight", l, n));
  return out;
}

int64_t grid_logical_bits(const GridSpec& g, int64_t rows, int64_t cols) {
  const int64_t group = g.group == 0 ? cols : g.group;
  const int64_t ng = (cols + group - 1) / group;
  return rows * (cols * g.bits + ng * (16 + (g.sym ? 0 : g.bits)));
}

nlohmann::json model_identity(const LlamaConfig& cfg, const WeightStore& store) {
  uint64_t h = kFnv1aOffset;
  nlohmann::json tensors = nlohmann::json::array();
  for (const auto& t : store.tensors()) {
    tensors.push_back({t.name, t.rows, t.cols});
    h = fnv1a(h, t.name.data(), t.name.size());
    if (t.n_dims == 1) {
      const std::vector<float> v = store.read_f32(t.name);
      h = fnv1a(h, v.data(), v.size() * sizeof(float));
    }
  }
  return {{"dim", cfg.dim}, {"hidden", cfg.hidden}, {"n_layers", cfg.n_layers}, {"n_heads", cfg.n_heads},
          {"n_kv_heads", cfg.n_kv_heads}, {"vocab", cfg.vocab}, {"fingerprint", fmt::format("fnv1a64:{:016x}", h)},
          {"tensors", tensors}};
}

void check_model_identity(const nlohmann::json& recorded, const LlamaConfig& cfg, const WeightStore& store,
                          const std::string& source) {
  QUANT_CHECK(recorded.is_object(), "{}: no model record (not written by quant sweep / quant plan?)", source);
  const nlohmann::json actual = model_identity(cfg, store);
  for (const char* k : {"dim", "hidden", "n_layers", "n_heads", "n_kv_heads", "vocab"})
    QUANT_CHECK(recorded.value(k, nlohmann::json()) == actual[k], "{}: made for another model: {} is {} there, {} in {}", source, k,
                recorded.value(k, nlohmann::json()).dump(), actual[k].dump(), store.source());
  QUANT_CHECK(recorded.value("tensors", nlohmann::json()) == actual["tensors"],
              "{}: made for another model: its tensor names or shapes differ from {}", source, store.source());
  QUANT_CHECK(recorded.value("fingerprint", "") == actual["fingerprint"].get<std::string>(),
              "{}: made for another model: weight fingerprint {} differs from {}'s {}", source,
              recorded.value("fingerprint", "?"), store.source(), actual["fingerprint"].get<std::string>());
}

GridSpec SweepSettings::grid_for(int b) const { return {b, group, b == 8 ? true : sym}; }

QuantSpec SweepSettings::spec_at(size_t k) const {
  if (typed()) return QuantSpec::parse(qtypes[k]);
  QuantSpec s;
  s.kind = QuantSpec::Kind::Grid;
  s.grid = grid_for(bits[k]);
  return s;
}

std::string SweepSettings::option_name(size_t k) const { return typed() ? qtypes[k] : fmt::format("{} bits", bits[k]); }

namespace {

std::optional<QuantSpec> try_parse_spec(const std::string& s) {
  try {
    return QuantSpec::parse(s);
  } catch (const Error&) {
    return std::nullopt;
  }
}

}  // namespace

std::vector<int> SweepSettings::nominal_bits(const std::vector<std::string>& types) {
  std::vector<int> out;
  for (const auto& q : types) {
    const auto t = ttype_from_name(q);
    const auto g = t ? std::optional<QuantSpec>() : try_parse_spec(q);
    out.push_back(t && is_quantized(*t)                  ? static_cast<int>(std::floor(type_bpw(*t)))
                  : g && g->kind == QuantSpec::Kind::Grid ? g->grid.bits
                                                          : 0);
  }
  return out;
}

void SweepSettings::check() const {
  QUANT_CHECK(method == Method::Rtn || method == Method::Gptq || method == Method::Awq, "sweep --method {} (rtn, gptq or awq)",
              method_name(method));
  QUANT_CHECK(granularity == "tensor" || granularity == "block" || granularity == "kind",
              "--granularity {} (tensor, block or kind)", granularity);
  if (typed()) {
    for (const auto& q : qtypes) {
      const auto t = ttype_from_name(q);
      const auto g = t ? std::optional<QuantSpec>() : try_parse_spec(q);
      QUANT_CHECK((t && is_quantized(*t)) || (g && g->kind == QuantSpec::Kind::Grid),
                  "sweep --qtypes: {} is not a quantized GGUF type (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_0, ...) nor an integer grid "
                  "(\"int4 g32 asym\")", q);
      // A grid is written as QuantSpec writes it, so that a sweep file's options compare equal.
      QUANT_CHECK(!g || g->str() == q, "sweep --qtypes: write the grid {} as \"{}\"", q, g ? g->str() : "");
    }
    QUANT_CHECK(std::set<std::string>(qtypes.begin(), qtypes.end()).size() == qtypes.size(), "sweep --qtypes: a type is repeated");
    QUANT_CHECK(bits.size() == qtypes.size(), "sweep: {} nominal widths for {} types", bits.size(), qtypes.size());
    return;
  }
  QUANT_CHECK(!bits.empty(), "sweep needs at least one bit-width");
  for (int b : bits) QUANT_CHECK(GridSpec::valid_bits(b), "sweep --bits: {} outside 2..8", b);
  QUANT_CHECK(std::set<int>(bits.begin(), bits.end()).size() == bits.size(), "sweep --bits: a width is repeated");
  QUANT_CHECK(GridSpec::valid_group(group), "--group-size {} (32, 64, 128 or 0)", group);
}

// ---------------------------------------------------------------------------------------------
// JSON

nlohmann::json Sweep::to_json() const {
  nlohmann::json units_j = nlohmann::json::array();
  for (const auto& u : units) {
    nlohmann::json opts = nlohmann::json::array();
    for (const auto& o : u.options) {
      nlohmann::json oj = {{"bits", o.bits}, {"spec", o.spec}, {"qtype", o.qtype}, {"logical_bits", o.logical_bits},
                           {"logical_bpw", static_cast<double>(o.logical_bits) / static_cast<double>(u.params)},
                           {"stored_bytes", o.stored_bytes}, {"proxy", o.proxy}, {"method_loss", o.method_loss},
                           {"measured", o.measured}, {"seconds", o.seconds}};
      if (o.measured) {
        oj["ppl"] = o.ppl;
        oj["dppl"] = o.dppl;
        oj["kl_mean"] = o.kl_mean;
        oj["kl_p99"] = o.kl_p99;
        oj["top1"] = o.top1;
      }
      opts.push_back(oj);
    }
    nlohmann::json uj = {{"name", u.name}, {"tensors", u.tensors}, {"match", u.match}, {"params", u.params},
                         {"first_block", u.first_block}, {"fp16_bytes", 2 * u.params}, {"options", opts}};
    if (u.outer) uj["outer"] = true;
    units_j.push_back(uj);
  }
  nlohmann::json settings_j = {{"method", method_name(settings.method)}, {"granularity", settings.granularity}, {"bits", settings.bits},
                               {"group", settings.group}, {"sym", settings.sym}};
  if (settings.typed()) settings_j["qtypes"] = settings.qtypes;
  return {{"format", "quant-sweep"}, {"version", kVersion},
          {"settings", settings_j},
          {"proxy_only", proxy_only}, {"model", model}, {"calibration", calibration}, {"recipe", recipe}, {"eval", eval},
          {"fp", fp}, {"cost", cost}, {"rank", rank}, {"units", units_j}};
}

Sweep Sweep::from_json(const nlohmann::json& j, const std::string& source) {
  check_json_format(j, "quant-sweep", kVersion, "sweep", "quant sweep", source);
  Sweep s;
  try {
    const auto& st = j.at("settings");
    const std::string method = st.at("method").get<std::string>();
    const std::optional<Method> m = method_from_name(method);
    QUANT_CHECK(m, "{}: sweep --method {} (rtn, gptq or awq)", source, method);
    s.settings.method = *m;
    s.settings.granularity = st.at("granularity").get<std::string>();
    s.settings.bits = st.at("bits").get<std::vector<int>>();
    s.settings.group = st.at("group").get<int64_t>();
    s.settings.sym = st.at("sym").get<bool>();
    s.settings.qtypes = st.value("qtypes", std::vector<std::string>{});
    s.proxy_only = j.at("proxy_only").get<bool>();
    s.model = j.at("model");
    s.calibration = j.value("calibration", nlohmann::json());
    s.recipe = j.value("recipe", nlohmann::json());
    s.eval = j.value("eval", nlohmann::json());
    s.fp = j.value("fp", nlohmann::json());
    s.cost = j.value("cost", nlohmann::json());
    s.rank = j.value("rank", nlohmann::json());
    for (const auto& uj : j.at("units")) {
      SweepUnit u;
      u.name = uj.at("name").get<std::string>();
      u.tensors = uj.at("tensors").get<std::vector<std::string>>();
      u.match = uj.at("match").get<std::vector<std::string>>();
      u.params = uj.at("params").get<int64_t>();
      u.first_block = uj.at("first_block").get<int64_t>();
      u.outer = uj.value("outer", false);
      for (const auto& oj : uj.at("options")) {
        SweepOption o;
        o.bits = oj.at("bits").get<int>();
        o.spec = oj.at("spec").get<std::string>();
        o.qtype = oj.at("qtype").get<std::string>();
        o.logical_bits = oj.at("logical_bits").get<int64_t>();
        o.stored_bytes = oj.at("stored_bytes").get<int64_t>();
        o.proxy = oj.at("proxy").get<double>();
        o.method_loss = oj.value("method_loss", o.proxy);
        o.measured = oj.at("measured").get<bool>();
        o.seconds = oj.value("seconds", 0.0);
        if (o.measured) {
          o.ppl = oj.at("ppl").get<double>();
          o.dppl = oj.at("dppl").get<double>();
          o.kl_mean = oj.at("kl_mean").get<double>();
          o.kl_p99 = oj.value("kl_p99", 0.0);
          o.top1 = oj.value("top1", 0.0);
        }
        u.options.push_back(o);
      }
      s.units.push_back(std::move(u));
    }
  } catch (const nlohmann::json::exception& e) {
    fail("{}: malformed sweep file: {}", source, e.what());
  }
  QUANT_CHECK(!s.units.empty(), "{}: the sweep has no units", source);
  try {
    s.settings.check();
  } catch (const Error& e) {
    fail("{}: {}", source, e.what());
  }
  for (const auto& u : s.units) {
    QUANT_CHECK(u.options.size() == s.settings.options() && u.params > 0, "{}: unit {} has {} options for {} widths", source, u.name,
                u.options.size(), s.settings.options());
    QUANT_CHECK(!u.outer || s.settings.typed(), "{}: unit {} is outside the decoder in a sweep of integer grids", source, u.name);
    for (size_t k = 0; k < u.options.size(); ++k) {
      const auto& o = u.options[k];
      QUANT_CHECK(o.bits == s.settings.bits[k] && (!s.settings.typed() || o.spec == s.settings.qtypes[k]) && o.logical_bits > 0 &&
                      std::isfinite(o.proxy) &&
                      (!o.measured || (std::isfinite(o.kl_mean) && std::isfinite(o.dppl))),
                  "{}: unit {} option {} is inconsistent (bits {}, {} logical bits)", source, u.name, k, o.bits, o.logical_bits);
      QUANT_CHECK(s.proxy_only || o.measured, "{}: unit {} at {} bits was not measured", source, u.name, o.bits);
    }
  }
  return s;
}

// ---------------------------------------------------------------------------------------------
// The sweep

namespace {

std::vector<SweepUnit> make_units(const LlamaConfig& cfg, const WeightStore& store, const std::string& gran, bool typed) {
  std::vector<SweepUnit> units;
  auto add_tensor = [&](SweepUnit& u, const std::string& name) {
    u.tensors.push_back(name);
    u.params += store.get(name).numel();
  };
  // A typed sweep prices the whole file: the embedding table (first: it feeds block 0) and the
  // head (last: it reads block L's output) are units of their own; a tied table is one unit.
  auto add_outer = [&](const char* name, int64_t first_block) {
    SweepUnit u;
    u.name = name;
    u.match = {name};
    u.first_block = first_block;
    u.outer = true;
    add_tensor(u, name);
    units.push_back(std::move(u));
  };
  if (typed) add_outer("token_embd.weight", 0);
  if (gran == "tensor") {
    for (const auto& n : decoder_linears(cfg)) {
      SweepUnit u;
      u.name = n;
      u.match = {n};
      u.first_block = split_name(n).first;
      add_tensor(u, n);
      units.push_back(std::move(u));
    }
  } else if (gran == "block") {
    for (int64_t l = 0; l < cfg.n_layers; ++l) {
      SweepUnit u;
      u.name = fmt::format("blk.{}", l);
      u.first_block = l;
      for (const char* k : decoder_linear_names()) add_tensor(u, fmt::format("blk.{}.{}.weight", l, k));
      u.match = u.tensors;
      units.push_back(std::move(u));
    }
  } else {  // kind (SweepSettings::check admits nothing else)
    for (const char* k : decoder_linear_names()) {
      SweepUnit u;
      u.name = k;
      u.match = {fmt::format("blk.*.{}.weight", k)};
      for (int64_t l = 0; l < cfg.n_layers; ++l) add_tensor(u, fmt::format("blk.{}.{}.weight", l, k));
      units.push_back(std::move(u));
    }
  }
  if (typed && !cfg.tied_embeddings) add_outer("output.weight", cfg.n_layers);
  return units;
}

// sum_r e_r H e_r^T with e = a - b, over rows [rows][cols]; H [cols][cols] fp32.
double hessian_error(const float* a, const float* b, int64_t rows, int64_t cols, const std::vector<float>& H) {
  std::vector<float> e(static_cast<size_t>(rows * cols)), eh(static_cast<size_t>(rows * cols));
  for (size_t i = 0; i < e.size(); ++i) e[i] = a[i] - b[i];
  gemm_nt(e.data(), cols, H.data(), cols, eh.data(), cols, rows, cols, cols, 1.0f, false);  // H symmetric
  double s = 0;
  for (size_t i = 0; i < e.size(); ++i) s += static_cast<double>(e[i]) * eh[i];
  return s;
}

// Fp32 blocks (FP, or with one width's AWQ scales folded in), kept while under a byte budget.
class BlockCache {
 public:
  BlockCache(const LlamaConfig& cfg, const WeightStore& store, int64_t budget_bytes)
      : cfg_(cfg), store_(store), budget_(budget_bytes) {}
  // `scales`: AWQ scales to fold (clips are the quantizer's business, not the FP block's).
  std::shared_ptr<BlockTensors> get(int64_t l, int variant, const ActPlan* scales, int64_t oldest_needed) {
    const auto key = std::make_pair(l, variant);
    if (auto it = cache_.find(key); it != cache_.end()) return it->second;
    auto b = std::make_shared<BlockTensors>(cfg_, store_, l);
    if (scales) fold_scales(*scales, l, *b);
    const int64_t bytes = bytes_of(*b);
    for (auto it = cache_.begin(); used_ + bytes > budget_ && it != cache_.end();) {
      if (it->first.first < oldest_needed) {
        used_ -= bytes_of(*it->second);
        it = cache_.erase(it);
      } else {
        ++it;
      }
    }
    if (used_ + bytes <= budget_) {
      cache_[key] = b;
      used_ += bytes;
    }
    return b;
  }

 private:
  static int64_t bytes_of(const BlockTensors& b) {
    int64_t s = 0;
    for (const auto& [n, v] : b.w) s += static_cast<int64_t>(v.size() * sizeof(float));
    return s;
  }
  // ActPlan::apply's scale step, restricted to one block's tensors.
  static void fold_scales(const ActPlan& p, int64_t l, BlockTensors& b) {
    const std::string pre = fmt::format("blk.{}.", l);
    const auto get = [&](const std::string& n) -> std::vector<float>& {
      return b.w.at(n.substr(pre.size(), n.size() - pre.size() - 7));  // strip "blk.N." and ".weight"
    };
    for (const auto& e : p.scales)
      if (e.prev.rfind(pre, 0) == 0) e.fold(get);
  }
  const LlamaConfig& cfg_;
  const WeightStore& store_;
  int64_t budget_, used_ = 0;
  std::map<std::pair<int64_t, int>, std::shared_ptr<BlockTensors>> cache_;
};

// The evaluation text: chunk windows, the FP logits of the scored rows and their log-sum-exp,
// and the FP hidden states at the input of block `at`.
struct EvalCache {
  PplChunks ch;
  std::vector<std::vector<int32_t>> windows;  // [C][ctx] tokens
  int64_t rows = 0;               // scored rows per chunk
  std::vector<int32_t> targets;   // [C][rows]
  std::vector<float> fp_logits;   // [C][rows][V]
  std::vector<double> fp_lse;     // [C][rows]
  std::vector<float> x;           // [C][ctx][dim]
  int64_t at = 0;
  double block_seconds = 0, head_seconds = 0;  // per chunk, measured in the FP pass
};

// Hessians of the current unit's inputs, read once per (block, tap): double for GPTQ, fp32 for
// the proxy's GEMM.
struct Hessian {
  std::vector<double> d;
  std::vector<float> f;
};
class HessianCache {
 public:
  explicit HessianCache(const StatsDir& stats) : stats_(stats) {}
  const Hessian& get(int64_t l, Tap t) {
    const auto key = std::make_pair(l, static_cast<int>(t));
    auto it = cache_.find(key);
    if (it == cache_.end()) {
      Hessian h{stats_.hessian(l, t), {}};
      h.f.assign(h.d.begin(), h.d.end());
      it = cache_.emplace(key, std::move(h)).first;
    }
    return it->second;
  }
  void clear() { cache_.clear(); }

 private:
  const StatsDir& stats_;
  std::map<std::pair<int64_t, int>, Hessian> cache_;
};

// The unit's tensors quantized at option k (the unit's option k: sizes, proxy, method loss), by
// the same per-tensor functions as the quantization stage. Returns what the file would hold of
// each tensor (dequantized), keyed "short_name@block" (outer units: the tensor's name), in the
// block's (for AWQ: scaled) weight space.
std::map<std::string, std::vector<float>> quantize_unit(const SweepRun& run, const WeightStore& store, BlockCache& blocks,
                                                        HessianCache& hessians, const ActPlan* ap, size_t k, SweepUnit& u) {
  const SweepSettings& st = run.settings;
  std::map<std::string, std::vector<float>> qw;
  SweepOption& o = u.options[k];
  const QuantSpec spec = st.spec_at(k);
  o.bits = st.bits[k];
  o.spec = spec.str();
  auto account = [&](const TensorPlan& plan) {
    const int64_t bytes = plan.rows * row_bytes(plan.stored, plan.cols);
    o.stored_bytes += bytes;
    // Types cost their stored bytes; grids their logical bits (codes, scales, mins), whatever a format then stores them in.
    o.logical_bits += spec.kind == QuantSpec::Kind::Grid ? grid_logical_bits(spec.grid, plan.rows, plan.cols) : 8 * bytes;
    const std::string qt(ttype_name(plan.stored));
    o.qtype = o.qtype.empty() || o.qtype == qt ? qt : "mixed";
  };
  if (u.outer) {  // the embedding table or the head: RTN onto the type; proxy ||W - Q||^2 (no Hessian)
    const std::string& name = u.tensors.front();
    const TensorDesc& d = store.get(name);
    const std::vector<float> w = store.read_f32(name);
    const TensorPlan plan = resolve_policy(Policy{{{"*", spec}}, {}}, {d}).front();
    std::vector<float> deq(w.size());
    stored_values(plan, quantize_rtn(plan, w.data()), GridStore::Packed, deq.data());
    account(plan);
    for (size_t i = 0; i < w.size(); ++i) o.proxy += static_cast<double>(w[i] - deq[i]) * (w[i] - deq[i]);
    o.method_loss = o.proxy;
    qw[name] = std::move(deq);
    return qw;
  }
  for (const auto& name : u.tensors) {
    const auto [l, short_name] = split_name(name);
    const TensorDesc& d = store.get(name);
    const Hessian& H = hessians.get(l, tap_of_linear(short_name));
    auto blk = blocks.get(l, ap ? static_cast<int>(k) : -1, ap, u.first_block);
    std::vector<float> w = blk->w.at(short_name);  // the weight to quantize (AWQ: scaled)
    if (ap)
      for (const auto& c : ap->clips)
        if (c.tensor == name) c.apply(w.data(), d.rows, d.cols);
    const TensorPlan plan = resolve_policy(Policy{{{"*", spec}}, {}}, {d}).front();
    // As the stage: GPTQ where it can reach the type (integer grids, super-block types), else RTN.
    const bool gptq = st.method == Method::Gptq && gptq_quantizable(plan.requested);
    TensorReport rep;
    const QuantWeight q = gptq ? quantize_gptq(plan, w.data(), H.d, run.gptq, rep) : quantize_rtn(plan, w.data());
    std::vector<float> deq(static_cast<size_t>(d.numel()));
    stored_values(plan, q, GridStore::Packed, deq.data());
    account(plan);
    // The proxy in the FP model's own weight space: AWQ's W' = W diag(s) is compared as
    // Q' diag(1/s) against W, with the FP model's Hessian.
    std::vector<float> unscaled;
    if (ap) {
      unscaled = deq;
      for (const auto& e : ap->scales)
        if (std::find(e.linears.begin(), e.linears.end(), name) != e.linears.end()) {
          const std::vector<float> cs = ScaleEntry::column_scales(e.scales, e.kv_group, e.head_dim);  // o_proj under GQA
          for (size_t i = 0; i < unscaled.size(); ++i) unscaled[i] /= cs[i % cs.size()];
        }
    }
    const std::vector<float>& fp = blocks.get(l, -1, nullptr, u.first_block)->w.at(short_name);
    const double proxy = hessian_error(fp.data(), (ap ? unscaled : deq).data(), d.rows, d.cols, H.f);
    o.proxy += proxy;
    o.method_loss += gptq ? rep.loss : proxy;
    qw[fmt::format("{}@{}", short_name, l)] = std::move(deq);
  }
  return qw;
}

// How well the proxy ranks the measured damage: Spearman over every option, and per width.
nlohmann::json rank_json(const std::vector<double>& proxy, const std::vector<double>& kl,
                         const std::map<int, std::pair<std::vector<double>, std::vector<double>>>& by_bits) {
  auto num = [](double x) { return std::isfinite(x) ? nlohmann::json(x) : nlohmann::json(); };
  nlohmann::json per = nlohmann::json::object();
  for (const auto& [b, pk] : by_bits) per[std::to_string(b)] = num(spearman(pk.first, pk.second));
  return {{"proxy", "tr((W-Q) H (W-Q)^T)"}, {"measured", "kl_mean"}, {"spearman_all", num(spearman(proxy, kl))},
          {"spearman_by_bits", per}, {"pairs", proxy.size()}};
}

// The FP pass over the evaluation text: chunk windows, the FP logits of the scored rows and their
// log-sum-exp (ev), the FP perplexity (sw.fp, sw.eval). Returns the block passes it ran.
int64_t fp_pass(const LlamaConfig& cfg, const WeightStore& store, std::span<const int32_t> eval_tokens, const SweepRun& run,
                BlockCache& blocks, const std::vector<float>& head, const std::vector<float>& out_norm, EvalCache& ev, Sweep& sw) {
  const int64_t D = cfg.dim, L = cfg.n_layers, V = cfg.vocab;
  int64_t fp_block_passes = 0;
  ev.ch = ppl_chunks(static_cast<int64_t>(eval_tokens.size()), cfg.bos_id, run.eval, cfg.max_ctx);
  const int64_t C = ev.ch.chunks, T = ev.ch.ctx;
  ev.rows = T - 1 - ev.ch.first;
  const double logits_gb = static_cast<double>(C * ev.rows * V) * 4 / 1e9;
  QUANT_CHECK(logits_gb < 8, "sweep: the FP logits of {} chunks would take {:.1f} GB: give fewer --chunks", C, logits_gb);
  std::vector<std::vector<int32_t>>& windows = ev.windows;
  windows.assign(static_cast<size_t>(C), {});
  for (int64_t c = 0; c < C; ++c) {
    ev.ch.window(eval_tokens, c, windows[static_cast<size_t>(c)]);
    for (int64_t j = 0; j < ev.rows; ++j) ev.targets.push_back(windows[static_cast<size_t>(c)][static_cast<size_t>(ev.ch.first + j + 1)]);
  }
  ev.x = embed_windows(cfg, store, windows);
  std::vector<float> h = ev.x;
  const auto tb = std::chrono::steady_clock::now();
  for (int64_t l = 0; l < L; ++l) {
    if (run.progress) run.progress("FP pass over the text (once)", l, L + 1);
    auto blk = blocks.get(l, -1, nullptr, 0);
    const BlockWeights bw = blk->view();
    for (int64_t c = 0; c < C; ++c) run_block(cfg, bw, h.data() + c * T * D, T);
    fp_block_passes += C;
  }
  ev.block_seconds = seconds_since(tb) / static_cast<double>(C * L);
  const auto th = std::chrono::steady_clock::now();
  ev.fp_logits.resize(static_cast<size_t>(C * ev.rows * V));
  ev.fp_lse.resize(static_cast<size_t>(C * ev.rows));
  PplScorer fp_scorer;
  for (int64_t c = 0; c < C; ++c) {
    float* lg = ev.fp_logits.data() + c * ev.rows * V;
    run_head(cfg, h.data() + (c * T + ev.ch.first) * D, ev.rows, out_norm.data(), head.data(), lg);
    for (int64_t j = 0; j < ev.rows; ++j) {
      ev.fp_lse[static_cast<size_t>(c * ev.rows + j)] = log_sum_exp(lg + j * V, V);
      fp_scorer.add(lg + j * V, V, ev.targets[static_cast<size_t>(c * ev.rows + j)]);
    }
  }
  ev.head_seconds = seconds_since(th) / static_cast<double>(C);
  PplResult fr;
  fp_scorer.result(fr);
  sw.fp = {{"ppl", fr.ppl}, {"nll", fr.nll_mean}, {"ppl_stderr", fr.ppl_stderr}};
  sw.eval = {{"protocol", protocol_name(ev.ch.protocol)}, {"ctx", T}, {"chunks", C}, {"chunk_stride", ev.ch.stride},
             {"tokens_total", eval_tokens.size()},
             {"tokens_scored", fr.tokens_scored}};
  return fp_block_passes;
}

// AWQ searched once per width over the whole model, every linear at that width.
std::vector<ActPlan> awq_plans_by_width(const LlamaConfig& cfg, const WeightStore& store,
                                        const std::vector<std::vector<int32_t>>& calib_windows, const SweepRun& run) {
  const SweepSettings& st = run.settings;
  std::vector<ActPlan> out;
  for (size_t k = 0; k < st.options(); ++k) {
    const QuantSpec target = st.spec_at(k);
    const auto plans = resolve_policy(Policy::defaults(target), store.tensors());
    AwqOptions ao = run.awq;
    ao.progress = [&](const std::string& what, int64_t d, int64_t t) {
      if (run.progress) run.progress(fmt::format("awq search, {}: {}", st.option_name(k), what), d, t);
    };
    out.push_back(awq_search(cfg, store, calib_windows, plans, ao));
  }
  return out;
}

// What lies ahead of the units' loop: evaluations, block passes, and the seconds they should take
// at the rates the FP pass measured.
struct WorkAhead {
  int64_t evals = 0, block_passes = 0;
  double seconds = 0;
};
WorkAhead work_ahead(const std::vector<SweepUnit>& units, const SweepRun& run, const EvalCache& ev, int64_t L, size_t B) {
  WorkAhead w;
  for (const auto& u : units) {
    w.evals += static_cast<int64_t>(B);
    if (!run.proxy_only) w.block_passes += static_cast<int64_t>(B) * ev.ch.chunks * (L - u.first_block);
  }
  if (!run.proxy_only)
    w.seconds = static_cast<double>(w.block_passes) * ev.block_seconds +
                static_cast<double>(w.evals) * static_cast<double>(ev.ch.chunks) * ev.head_seconds;
  return w;
}

}  // namespace

Sweep run_sweep(const LlamaConfig& cfg, const WeightStore& store, const StatsDir& stats,
                const std::vector<std::vector<int32_t>>& calib_windows, std::span<const int32_t> eval_tokens,
                const SweepRun& run) {
  const auto t_start = std::chrono::steady_clock::now();
  const SweepSettings& st = run.settings;
  st.check();
  QUANT_CHECK(st.method != Method::Awq || !calib_windows.empty(), "sweep --method awq searches scales on calibration windows: give --calib");
  const int64_t D = cfg.dim, L = cfg.n_layers, V = cfg.vocab;
  Sweep sw;
  sw.settings = st;
  sw.proxy_only = run.proxy_only;
  sw.model = model_identity(cfg, store);
  sw.calibration = nlohmann::json::parse(stats.calibration_json());
  sw.units = make_units(cfg, store, st.granularity, st.typed());
  std::stable_sort(sw.units.begin(), sw.units.end(), [](const SweepUnit& a, const SweepUnit& b) { return a.first_block < b.first_block; });
  const size_t B = st.options();
  if (st.method == Method::Gptq)
    sw.recipe = {{"damp", run.gptq.damp}, {"act_order", run.gptq.act_order}, {"block", run.gptq.block},
                 {"static_groups", run.gptq.static_groups || run.gptq.act_order}};
  if (st.method == Method::Awq)
    sw.recipe = {{"grid", run.awq.grid}, {"clip", run.awq.clip}, {"duo", run.awq.duo}, {"search_windows", run.awq.search_windows}};

  // AWQ: one search per width over the whole model (every linear at that width), as convert
  // --method awq would run it; units then quantize their scaled (and clipped) weights.
  const auto t_awq = std::chrono::steady_clock::now();
  const std::vector<ActPlan> awq_plans = st.method == Method::Awq ? awq_plans_by_width(cfg, store, calib_windows, run) : std::vector<ActPlan>{};
  const double awq_seconds = st.method == Method::Awq ? seconds_since(t_awq) : 0.0;

  // The FP pass over the evaluation text, once.
  EvalCache ev;
  double fp_seconds = 0;
  int64_t fp_block_passes = 0;
  const std::vector<float> head = store.read_f32(cfg.tied_embeddings ? "token_embd.weight" : "output.weight");
  const std::vector<float> out_norm = store.read_f32("output_norm.weight");
  BlockCache blocks(cfg, store, run.cache_mb << 20);
  if (!run.proxy_only) {
    const auto t0 = std::chrono::steady_clock::now();
    fp_block_passes = fp_pass(cfg, store, eval_tokens, run, blocks, head, out_norm, ev, sw);
    fp_seconds = seconds_since(t0);
  }

  const auto [evals, block_passes, est] = work_ahead(sw.units, run, ev, L, B);
  if (run.announce)
    run.announce({{"units", sw.units.size()}, {"widths", B}, {"evaluations", run.proxy_only ? 0 : evals},
                  {"block_passes", block_passes}, {"chunks", run.proxy_only ? 0 : ev.ch.chunks},
                  {"estimated_seconds", est}, {"fp_pass_seconds", fp_seconds}});

  HessianCache hessians(stats);

  std::vector<double> all_proxy, all_kl;
  std::map<int, std::pair<std::vector<double>, std::vector<double>>> by_bits;
  int64_t done = 0, passes_done = 0, head_passes = 0;
  const auto t_units = std::chrono::steady_clock::now();
  for (auto& u : sw.units) {
    hessians.clear();
    // Advance the cached FP hidden states to this unit's first block.
    if (!run.proxy_only)
      for (; ev.at < u.first_block; ++ev.at) {
        auto blk = blocks.get(ev.at, -1, nullptr, ev.at);
        const BlockWeights bw = blk->view();
        for (int64_t c = 0; c < ev.ch.chunks; ++c) run_block(cfg, bw, ev.x.data() + c * ev.ch.ctx * D, ev.ch.ctx);
        fp_block_passes += ev.ch.chunks;
      }
    // Quantize the unit's tensors at every width; qw[k][name] is what the file would hold
    // (dequantized), in the block's (for AWQ: scaled) weight space.
    std::vector<std::map<std::string, std::vector<float>>> qw(B);
    u.options.assign(B, {});
    const std::string head_name = cfg.tied_embeddings ? "token_embd.weight" : "output.weight";
    std::vector<double> opt_seconds(B, 0);
    for (size_t k = 0; k < B; ++k) {
      const auto tq = std::chrono::steady_clock::now();
      qw[k] = quantize_unit(run, store, blocks, hessians, st.method == Method::Awq ? &awq_plans[k] : nullptr, k, u);
      opt_seconds[k] = seconds_since(tq);
    }
    if (!run.proxy_only) {
      const int64_t C = ev.ch.chunks, T = ev.ch.ctx;
      std::vector<std::vector<float>> h(B, ev.x);
      // Outer units: the quantized table feeds block 0 (token_embd), the quantized head reads
      // the last block's output (output.weight, or the tied table).
      std::vector<const float*> head_k(B, head.data());
      for (size_t k = 0; k < B && u.outer; ++k) {
        const std::vector<float>& t = qw[k].at(u.tensors.front());
        if (u.tensors.front() == head_name) head_k[k] = t.data();
        if (u.tensors.front() == "token_embd.weight") h[k] = embed_windows(cfg, t.data(), ev.windows);
      }
      for (int64_t l = u.first_block; l < L; ++l) {
        for (size_t k = 0; k < B; ++k) {
          const auto te = std::chrono::steady_clock::now();
          const ActPlan* ap = st.method == Method::Awq ? &awq_plans[k] : nullptr;
          auto blk = blocks.get(l, ap ? static_cast<int>(k) : -1, ap, u.first_block);
          BlockWeights bw = blk->view();
          const std::string at = fmt::format("@{}", l);
          for (const char* n : decoder_linear_names())
            if (auto it = qw[k].find(std::string(n) + at); it != qw[k].end()) bw.weight(n) = it->second.data();
          for (int64_t c = 0; c < C; ++c) run_block(cfg, bw, h[k].data() + c * T * D, T);
          passes_done += C;
          opt_seconds[k] += seconds_since(te);
          if (run.progress)
            run.progress(fmt::format("{} ({})", u.name, st.option_name(k)), passes_done, std::max(block_passes, passes_done));
        }
      }
      std::vector<float> lg(static_cast<size_t>(ev.rows * V));
      for (size_t k = 0; k < B; ++k) {
        const auto te = std::chrono::steady_clock::now();
        PplScorer sc;
        for (int64_t c = 0; c < C; ++c) {
          run_head(cfg, h[k].data() + (c * T + ev.ch.first) * D, ev.rows, out_norm.data(), head_k[k], lg.data());
          for (int64_t j = 0; j < ev.rows; ++j) {
            const size_t r = static_cast<size_t>(c * ev.rows + j);
            sc.add(lg.data() + j * V, V, ev.targets[r], ev.fp_logits.data() + r * static_cast<size_t>(V), ev.fp_lse[r]);
          }
          ++head_passes;
        }
        PplResult pr;
        sc.result(pr);
        SweepOption& o = u.options[k];
        o.measured = true;
        o.ppl = pr.ppl;
        o.dppl = pr.ppl / sw.fp["ppl"].get<double>() - 1;
        o.kl_mean = pr.kl_mean;
        o.kl_p99 = pr.kl_p99;
        o.top1 = pr.top1_agree;
        opt_seconds[k] += seconds_since(te);
        if (u.outer) continue;  // its proxy has no Hessian: not ranked with the rest
        all_proxy.push_back(o.proxy);
        all_kl.push_back(o.kl_mean);
        by_bits[o.bits].first.push_back(o.proxy);
        by_bits[o.bits].second.push_back(o.kl_mean);
      }
    }
    for (size_t k = 0; k < B; ++k) u.options[k].seconds = opt_seconds[k];
    ++done;
    if (run.progress && run.proxy_only) run.progress(u.name, done, static_cast<int64_t>(sw.units.size()));
  }
  if (!run.proxy_only) sw.rank = rank_json(all_proxy, all_kl, by_bits);
  const double total = seconds_since(t_start);
  sw.cost = {{"seconds", total},
             {"calibration_statistics", "computed once (or read from --stats), reused by every unit"},
             {"fp_logits", run.proxy_only ? "none (proxy only)" : "computed once, cached in memory for every evaluation"},
             {"fp_pass_seconds", fp_seconds}, {"awq_search_seconds", awq_seconds},
             {"units_seconds", seconds_since(t_units)}, {"evaluations", run.proxy_only ? 0 : evals},
             {"fp_forward_passes", run.proxy_only ? 0 : ev.ch.chunks},
             {"block_passes", passes_done + fp_block_passes}, {"head_passes", head_passes + (run.proxy_only ? 0 : ev.ch.chunks)},
             {"full_forward_equivalents", static_cast<double>(passes_done + fp_block_passes) / static_cast<double>(L)},
             // Re-running the whole model (and the FP model for KL) for every evaluation instead.
             {"naive_full_forwards", run.proxy_only ? 0 : 2 * evals * ev.ch.chunks},
             {"estimated_seconds", est}};
  return sw;
}

}  // namespace quant
