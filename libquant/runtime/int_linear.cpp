// The runtime's integer linears: weights repacked once at load into the kernel's layout,
// activations quantized to int8 on every call.
#include <cstring>

#include "quant/block_gemm.h"
#include "quant/error.h"
#include "quant/gemm.h"
#include "quant/runtime.h"

namespace quant {

namespace {

class IntLinear final : public LinearOp {
 public:
  enum class Kind { W8Channel, W8Blocks, W4 };
  IntLinear(Kind kind, int64_t n, int64_t k, const RuntimeOptions& o) : kind_(kind), n_(n), k_(k), g_(o.act_quant), isa_(o.isa) {}
  W8Weights w8;
  W8BlockWeights w8b;
  W4Weights w4;

  void apply(const float* x, int64_t T, float* y, bool accumulate) const override {
    const QActs a = quantize_acts(x, T, k_, g_);
    std::vector<float> tmp;
    float* dst = y;
    if (accumulate) {
      tmp.resize(static_cast<size_t>(T * n_));
      dst = tmp.data();
    }
    switch (kind_) {
      case Kind::W8Channel: gemm_w8a8(a, w8, dst, isa_); break;
      case Kind::W8Blocks: gemm_w8a8_blocks(a, w8b, dst, isa_); break;
      case Kind::W4: gemm_w4a8(a, w4, dst, isa_); break;
    }
    if (accumulate)
      for (size_t i = 0; i < tmp.size(); ++i) y[i] += tmp[i];
  }

 private:
  Kind kind_;
  int64_t n_, k_;
  ActQuant g_;
  Isa isa_;
};

// A quantized GGUF matrix multiplied on its stored blocks (block_gemm.h), activations int8 per 32.
class BlockLinear final : public LinearOp {
 public:
  BlockLinear(StoredMatrix w, Isa isa) : w_(std::move(w)), isa_(isa) {}
  void apply(const float* x, int64_t T, float* y, bool accumulate) const override {
    block_gemm(quantize_acts(x, T, w_.k, ActQuant::PerBlock), w_, y, isa_, accumulate);
  }

 private:
  StoredMatrix w_;
  Isa isa_;
};

// A float matrix (F32/F16/BF16) multiplied as stored: panels converted to fp32 on the fly.
class StoredFloatLinear final : public LinearOp {
 public:
  explicit StoredFloatLinear(StoredMatrix w) : w_(std::move(w)) {}
  void apply(const float* x, int64_t T, float* y, bool accumulate) const override { gemm_nt_stored(x, T, w_, y, accumulate); }

 private:
  StoredMatrix w_;
};

bool is_linear(const TensorDesc& t) {
  return t.n_dims == 2 && (t.name.rfind("blk.", 0) == 0 || t.name == "output.weight");
}

}  // namespace

std::shared_ptr<const LinearOp> make_int_linear(const WeightStore& store, const TensorDesc& t, const RuntimeOptions& o) {
  if (o.act_bits != 8 || !is_linear(t) || t.cols % kQBlock != 0) return nullptr;
  QuantWeight g;
  if (store.read_grid(t, g) && g.g_idx.empty() && g.group % kQBlock == 0 && g.cols % g.group == 0) {
    if (g.bits <= 4) {
      auto op = std::make_shared<IntLinear>(IntLinear::Kind::W4, t.rows, t.cols, o);
      op->w4 = pack_w4(g.codes.data(), g.scales.data(), g.mins.data(), t.rows, t.cols, g.group);
      return op;
    }
    auto op = std::make_shared<IntLinear>(IntLinear::Kind::W8Blocks, t.rows, t.cols, o);
    op->w8b = pack_w8_blocks(g.codes.data(), g.scales.data(), g.mins.data(), t.rows, t.cols, g.group, g.bits);
    return op;
  }
  if (t.name == "output.weight" && !is_quantized(t.type)) return nullptr;  // a float head stays float
  // Float weights (or a grid the kernels cannot take): int8 per output channel.
  std::vector<float> w(static_cast<size_t>(t.numel()));
  store.read_f32(t, w.data());
  return make_w8a8_linear(w.data(), t.rows, t.cols, o);
}

std::shared_ptr<const LinearOp> make_stored_linear(const WeightStore& store, const TensorDesc& t, Isa isa) {
  StoredMatrix w;
  if (t.n_dims != 2 || !store.stored(t, w)) return nullptr;
  const bool dense = gemm_stored_supports(static_cast<int>(w.type));
  if (!dense && (t.cols % kQBlock != 0 || !block_gemm_supports(w.type))) return nullptr;
  int64_t row = 0, col = 0;  // read_f32's check, once per tensor: the kernels never see a NaN weight
  QUANT_CHECK(!find_non_finite(w, row, col), "{}: tensor {} has a value that is not finite at row {}, column {}", store.source(), t.name,
              row, col);
  if (dense) return std::make_shared<StoredFloatLinear>(std::move(w));
  return std::make_shared<BlockLinear>(std::move(w), isa);
}

std::shared_ptr<const LinearOp> make_w8a8_linear(const float* w, int64_t n, int64_t k, const RuntimeOptions& o) {
  QUANT_CHECK(k % kQBlock == 0, "W8A8: {} input columns are not a multiple of 32", k);
  W8Weights w8 = quantize_w8(w, n, k);
  if (o.act_quant != ActQuant::PerBlock) {
    auto op = std::make_shared<IntLinear>(IntLinear::Kind::W8Channel, n, k, o);
    op->w8 = std::move(w8);
    return op;
  }
  auto op = std::make_shared<IntLinear>(IntLinear::Kind::W8Blocks, n, k, o);
  const int64_t kb = k / kQBlock;
  op->w8b.n = n;
  op->w8b.k = k;
  op->w8b.q = std::move(w8.q);
  op->w8b.mn.assign(static_cast<size_t>(n * kb), 0.0f);
  for (int64_t r = 0; r < n; ++r)
    for (int64_t b = 0; b < kb; ++b) op->w8b.d.push_back(w8.scale[static_cast<size_t>(r)]);
  return op;
}

}  // namespace quant
