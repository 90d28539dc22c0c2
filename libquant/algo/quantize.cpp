// One tensor quantized per its plan (RTN), what the file will hold of it, and the RTN source.
#include "quant/quantize.h"

#include <chrono>

#include "quant/error.h"
#include "quant/kquants.h"

namespace quant {

bool plan_quantizes(const TensorPlan& p) {
  const QuantSpec& r = p.requested;
  return r.kind == QuantSpec::Kind::Grid || (r.kind == QuantSpec::Kind::Ggml && p.cols % traits(r.type).block == 0);
}

QuantWeight quantize_rtn(const TensorPlan& p, const float* w, const float* importance) {
  check_finite_weights(w, p.rows, p.cols, p.name);
  const QuantSpec& r = p.requested;
  QUANT_CHECK(plan_quantizes(p), "tensor {}: {} is not quantized by its plan", p.name, r.str());
  if (r.kind == QuantSpec::Kind::Grid) return rtn_grid(w, p.rows, p.cols, r.grid);
  return quantize_ggml(r.type, w, p.rows, p.cols, importance);
}

const float* importance_of(const Importance* importance, const TensorPlan& p) {
  if (!importance) return nullptr;
  const auto it = importance->find(p.name);
  if (it == importance->end()) return nullptr;
  QUANT_CHECK(static_cast<int64_t>(it->second.size()) == p.cols, "tensor {}: importance of {} columns for {}", p.name, it->second.size(),
              p.cols);
  return it->second.data();
}

bool gptq_quantizable(const QuantSpec& s) {
  return s.kind == QuantSpec::Kind::Grid || (s.kind == QuantSpec::Kind::Ggml && is_kquant(s.type));
}

QuantWeight quantize_gptq(const TensorPlan& p, const float* w, const std::vector<float>& H, const GptqOptions& opts,
                          TensorReport& r) {
  QUANT_CHECK(gptq_quantizable(p.requested), "tensor {}: GPTQ needs an integer grid or a super-block type, not {}", p.name,
              p.requested.str());
  GptqOptions go = opts;
  if (p.requested.kind == QuantSpec::Kind::Grid)
    go.grid = p.requested.grid;
  else
    go.ktype = p.requested.type;
  GptqResult g = gptq_quantize(w, p.rows, p.cols, H, go, p.name);
  r = {.name = p.name, .method = p.method, .seconds = g.seconds, .loss = g.loss, .damp = g.damp_used, .gemm_gflops = g.gemm_gflops,
       .retries = g.retries, .dead_columns = g.dead_columns};
  return std::move(g.q);
}

QuantWeight quantize_gptq(const TensorPlan& p, const float* w, const std::vector<double>& H, const GptqOptions& opts,
                          TensorReport& r) {
  return quantize_gptq(p, w, std::vector<float>(H.begin(), H.end()), opts, r);
}

void stored_values(const TensorPlan& p, const QuantWeight& q, GridStore store, float* out) {
  if (store == GridStore::Exact) {
    q.dequantize(out);
    return;
  }
  const PackedTensor packed = pack(q, p.stored);
  const int64_t rb = row_bytes(packed.type, p.cols);
  for (int64_t r = 0; r < p.rows; ++r) dequantize_row(packed.type, packed.data.data() + r * rb, out + r * p.cols, p.cols);
}

std::optional<QuantWeight> kept_grid(const WeightStore& weights, const TensorPlan& p, bool with_g_idx) {
  const QuantSpec& r = p.requested;
  QuantWeight g;
  if (r.kind != QuantSpec::Kind::Grid || !weights.read_grid(weights.get(p.name), g)) return std::nullopt;
  const int64_t group = r.grid.group == 0 ? p.cols : r.grid.group;
  if (g.bits != r.grid.bits || g.group != group || g.sym != r.grid.sym || g.rows != p.rows || g.cols != p.cols) return std::nullopt;
  if (!g.g_idx.empty() && !with_g_idx) return std::nullopt;
  return g;
}

const TensorPlan& TensorSource::plan(const std::string& name) const {
  for (const auto& p : plans())
    if (p.name == name) return p;
  fail("no plan for tensor {}", name);
}

QuantizedTensor RtnTensors::take(const TensorPlan& p) {
  const auto t0 = std::chrono::steady_clock::now();
  QuantizedTensor out;
  out.report.name = p.name;
  out.report.method = p.method;
  out.values = weights_.read_f32(p.name);
  if (!plan_quantizes(p)) {
    check_finite_weights(out.values.data(), p.rows, p.cols, p.name);
  } else {
    out.q = kept_grid(weights_, p, keep_g_idx_);
    out.report.kept = out.q.has_value();
    if (!out.q) out.q = quantize_rtn(p, out.values.data(), importance_of(importance_, p));
    std::vector<float> deq(out.values.size());
    out.q->dequantize(deq.data());
    double num = 0, den = 0;
    for (size_t i = 0; i < deq.size(); ++i) {
      const double d = static_cast<double>(out.values[i]) - deq[i];
      num += d * d;
      den += static_cast<double>(out.values[i]) * out.values[i];
    }
    out.report.nmse = den > 0 ? num / den : 0.0;
    out.values = {};
  }
  out.report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return out;
}

}  // namespace quant
