// An independent FP reference: LibTorch computes the Llama forward pass of the bundled model
// from the same tensors (HF semantics, written from the modeling code's equations) and our
// runtime must match it. Kept in one binary: LibTorch costs ~1 s to start.
#include <torch/torch.h>

#include <fmt/format.h>

#include <functional>
#include <iostream>
#include <map>

#include "../common.h"
#include "../synth.h"
#include <nlohmann/json.hpp>
#include "quant/formats/loader.h"
#include "quant/runtime.h"
#include "quant/calibration/calibration.h"
#include "quant/calibration/text.h"
#include "quant/formats/imatrix.h"

using namespace quant;

namespace {

using MatF = std::vector<float>;

torch::Tensor tensor_of(const LoadedModel& m, const std::string& name) {
  const TensorDesc& d = m.weights->get(name);
  auto t = torch::empty({d.rows, d.cols}, torch::kFloat32);
  m.weights->read_f32(d, t.data_ptr<float>());
  return d.n_dims == 1 ? t.reshape({d.cols}) : t;
}

torch::Tensor rotate_half(const torch::Tensor& x) {
  const int64_t h = x.size(-1) / 2;
  return torch::cat({-x.slice(-1, h), x.slice(-1, 0, h)}, -1);
}

torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& w, double eps) {
  return w * (x * torch::rsqrt(x.pow(2).mean(-1, true) + eps));
}

// HF's _compute_llama3_parameters, transliterated: rope_scaling as config.json gives it.
torch::Tensor llama3_inv_freq(torch::Tensor inv_freq, const nlohmann::json& rs) {
  const double factor = rs["factor"], low = rs["low_freq_factor"], high = rs["high_freq_factor"];
  const double old_ctx = rs["original_max_position_embeddings"];
  const double low_wavelen = old_ctx / low, high_wavelen = old_ctx / high;
  auto wavelen = 2 * M_PI / inv_freq;
  auto scaled = torch::where(wavelen > low_wavelen, inv_freq / factor, inv_freq);
  auto smooth = (old_ctx / wavelen - low) / (high - low);
  auto smoothed = (1 - smooth) * scaled / factor + smooth * scaled;
  auto medium = (wavelen >= high_wavelen).logical_and(wavelen <= low_wavelen);
  return torch::where(medium, smoothed, scaled);
}

// Each linear's input, by weight name (the imatrix test sums its squares).
using LinearTap = std::function<void(const std::string& weight, const torch::Tensor& input)>;

torch::Tensor torch_forward(const LoadedModel& m, const std::vector<int32_t>& ids, const nlohmann::json& rope_scaling = nullptr,
                            const LinearTap& tap = {}) {
  const auto& c = m.config;
  const int64_t T = static_cast<int64_t>(ids.size()), hd = c.head_dim();
  auto idx = torch::tensor(std::vector<int64_t>(ids.begin(), ids.end()), torch::kLong);
  auto x = tensor_of(m, "token_embd.weight").index_select(0, idx);
  auto inv_freq = 1.0 / torch::pow(torch::tensor(static_cast<double>(c.rope_theta)),
                                   torch::arange(0, hd, 2, torch::kFloat32) / static_cast<double>(hd));
  if (!rope_scaling.is_null()) inv_freq = llama3_inv_freq(inv_freq.to(torch::kFloat32), rope_scaling);
  auto freqs = torch::outer(torch::arange(T, torch::kFloat32), inv_freq.to(torch::kFloat32));
  auto emb = torch::cat({freqs, freqs}, -1);
  auto cos = emb.cos(), sin = emb.sin();
  auto mask = torch::full({T, T}, -std::numeric_limits<float>::infinity()).triu(1);
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    auto h = rms_norm(x, tensor_of(m, b + "attn_norm.weight"), c.norm_eps);
    auto linear = [&](const torch::Tensor& in, const std::string& n) {
      if (tap) tap(b + n + ".weight", in);
      return torch::matmul(in, tensor_of(m, b + n + ".weight").t());
    };
    auto proj = [&](const char* n) {
      auto y = linear(h, n);
      return c.qkv_bias ? y + tensor_of(m, b + n + ".bias") : y;
    };
    auto q = proj("attn_q").view({T, c.n_heads, hd}).transpose(0, 1);
    auto k = proj("attn_k").view({T, c.n_kv_heads, hd}).transpose(0, 1);
    auto v = proj("attn_v").view({T, c.n_kv_heads, hd}).transpose(0, 1);
    q = q * cos + rotate_half(q) * sin;
    k = k * cos + rotate_half(k) * sin;
    k = k.repeat_interleave(c.n_heads / c.n_kv_heads, 0);
    v = v.repeat_interleave(c.n_heads / c.n_kv_heads, 0);
    auto att = torch::softmax(torch::matmul(q, k.transpose(1, 2)) / std::sqrt(static_cast<double>(hd)) + mask, -1);
    auto o = torch::matmul(att, v).transpose(0, 1).reshape({T, c.dim});
    x = x + linear(o, "attn_output");
    h = rms_norm(x, tensor_of(m, b + "ffn_norm.weight"), c.norm_eps);
    auto g = linear(h, "ffn_gate");
    auto u = linear(h, "ffn_up");
    x = x + linear(torch::silu(g) * u, "ffn_down");
  }
  x = rms_norm(x, tensor_of(m, "output_norm.weight"), c.norm_eps);
  return torch::matmul(x, tensor_of(m, c.tied_embeddings ? "token_embd.weight" : "output.weight").t());
}

}  // namespace

TEST_CASE("our FP32 forward pass matches LibTorch on the bundled model", "[torch][e2e]") {
  torch::set_num_threads(2);  // LibTorch 1.13 would otherwise drop OpenMP to one thread
  const LoadedModel m = load_model(qt::bundled_model());
  auto ids = m.tokenizer->encode(read_text(qt::repo("data/kjv/kjv_heldout.txt")), true);
  ids.resize(256);
  LlamaRuntime rt(m.config, *m.weights);
  std::vector<float> ours;
  rt.forward(ids, 0, ours);
  const auto ref = torch_forward(m, ids).contiguous();
  const auto got = torch::from_blob(ours.data(), {static_cast<int64_t>(ids.size()), m.config.vocab}, torch::kFloat32);
  const double max_diff = (got - ref).abs().max().item<double>();
  const double scale = ref.abs().max().item<double>();
  std::cout << "bundled model, 256 positions: max |ours - torch| = " << max_diff << ", max |logit| = " << scale
            << ", relative " << max_diff / scale << "\n";
  CHECK(max_diff <= 1e-4 * scale);
  CHECK(torch::equal(got.argmax(-1), ref.argmax(-1)));
}

TEST_CASE("llama2.c weights match LibTorch too (interleaved RoPE rows un-permuted)", "[torch][e2e]") {
  REQUIRE_SHARED("models/stories260K/stories260K.bin");
  torch::set_num_threads(2);
  const LoadedModel m = load_model(qt::shared("models/stories260K/stories260K.bin"));
  auto ids = m.tokenizer->encode("Once upon a time, there was a little girl named Lily. She loved to play outside.", true);
  LlamaRuntime rt(m.config, *m.weights);
  std::vector<float> ours;
  rt.forward(ids, 0, ours);
  const auto ref = torch_forward(m, ids).contiguous();
  const auto got = torch::from_blob(ours.data(), {static_cast<int64_t>(ids.size()), m.config.vocab}, torch::kFloat32);
  CHECK((got - ref).abs().max().item<double>() <= 1e-4 * ref.abs().max().item<double>());
}

TEST_CASE("today's families match LibTorch: llama3 RoPE scaling, q/k/v biases, tied head", "[torch][e2e][families]") {
  torch::set_num_threads(2);
  qt::TempDir tmp;
  for (const auto& fam0 : qt::families()) {
    qt::Family fam = fam0;
    fam.pre.clear();  // the bundled SentencePiece vocabulary: ids are what matters here
    CAPTURE(fam.name);
    const std::string dir = tmp / fam.name;
    qt::make_family(dir, fam, nullptr, 11);
    const LoadedModel m = load_model(dir);
    const nlohmann::json cfg = nlohmann::json::parse(qt::slurp(dir + "/config.json"));
    std::vector<int32_t> ids(64);
    for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>((i * 7919 + 13) % static_cast<size_t>(m.config.vocab));
    LlamaRuntime rt(m.config, *m.weights);
    std::vector<float> ours;
    rt.forward(ids, 0, ours);
    const auto ref = torch_forward(m, ids, cfg.value("rope_scaling", nlohmann::json())).contiguous();
    const auto got = torch::from_blob(ours.data(), {static_cast<int64_t>(ids.size()), m.config.vocab}, torch::kFloat32);
    const double diff = (got - ref).abs().max().item<double>(), scale = ref.abs().max().item<double>();
    std::cout << fmt::format("{}: max |ours - torch| / max |logit| = {:.2e}\n", fam.name, diff / scale);
    CHECK(diff <= 1e-4 * scale);
  }
}

// --- GPTQ: a direct LibTorch transliteration of gptq.py's fasterquant (static groups) ---

#include "quant/calibration/calibration.h"
#include "quant/gptq.h"

namespace {

struct TorchQuantizer {
  torch::Tensor scale, zero;  // [rows, 1]
  int maxq;
  void find_params(const torch::Tensor& x, bool sym) {  // quant.py's Quantizer.find_params
    auto xmin = torch::minimum(std::get<0>(x.min(1)), torch::zeros({x.size(0)}));
    auto xmax = torch::maximum(std::get<0>(x.max(1)), torch::zeros({x.size(0)}));
    if (sym) {
      xmax = torch::maximum(xmin.abs(), xmax);
      xmin = -xmax;
    }
    auto both0 = (xmin == 0) & (xmax == 0);
    xmin = torch::where(both0, torch::full_like(xmin, -1), xmin);
    xmax = torch::where(both0, torch::full_like(xmax, 1), xmax);
    scale = ((xmax - xmin) / maxq).unsqueeze(1);
    zero = sym ? torch::full_like(scale, (maxq + 1) / 2) : torch::round(-xmin.unsqueeze(1) / scale);
  }
  torch::Tensor code(const torch::Tensor& x) const { return torch::clamp(torch::round(x / scale) + zero, 0, maxq); }
};

// Returns the codes [rows, cols] in natural order.
torch::Tensor torch_gptq(torch::Tensor W, torch::Tensor H, int bits, int64_t groupsize, bool sym, bool actorder,
                         double percdamp = 0.01, int64_t blocksize = 128) {
  W = W.clone();
  H = H.clone();
  const int64_t columns = W.size(1);
  const int64_t gs = groupsize == 0 ? columns : groupsize;
  auto dead = H.diag() == 0;
  H.index_put_({dead, dead}, 1);
  W.index_put_({torch::indexing::Slice(), dead}, 0);
  std::vector<TorchQuantizer> groups;
  for (int64_t i = 0; i < columns; i += gs) {
    TorchQuantizer q{{}, {}, (1 << bits) - 1};
    q.find_params(W.slice(1, i, i + gs), sym);
    groups.push_back(q);
  }
  torch::Tensor perm, invperm;
  if (actorder) {
    perm = torch::argsort(H.diag(), 0, /*descending=*/true);
    W = W.index_select(1, perm);
    H = H.index_select(0, perm).index_select(1, perm);
    invperm = torch::argsort(perm);
  }
  auto Q = torch::zeros_like(W);
  const double damp = percdamp * H.diag().mean().item<double>();
  H = H + damp * torch::eye(columns);
  H = torch::linalg::cholesky(H);
  H = torch::cholesky_inverse(H);
  auto Hinv = torch::linalg::cholesky(H).transpose(0, 1);  // upper factor
  for (int64_t i1 = 0; i1 < columns; i1 += blocksize) {
    const int64_t i2 = std::min(i1 + blocksize, columns), count = i2 - i1;
    auto W1 = W.slice(1, i1, i2).clone();
    auto Q1 = torch::zeros_like(W1), Err1 = torch::zeros_like(W1);
    auto Hinv1 = Hinv.slice(0, i1, i2).slice(1, i1, i2);
    for (int64_t i = 0; i < count; ++i) {
      auto w = W1.select(1, i);
      auto d = Hinv1[i][i];
      int64_t idx = i1 + i;
      if (actorder) idx = perm[idx].item<int64_t>();
      const TorchQuantizer& qz = groups[static_cast<size_t>(idx / gs)];
      auto code = qz.code(w.unsqueeze(1)).squeeze(1);
      auto q = qz.scale.squeeze(1) * (code - qz.zero.squeeze(1));
      Q1.select(1, i).copy_(code);
      auto err1 = (w - q) / d;
      W1.slice(1, i).sub_(err1.unsqueeze(1).matmul(Hinv1[i].slice(0, i).unsqueeze(0)));
      Err1.select(1, i).copy_(err1);
    }
    Q.slice(1, i1, i2).copy_(Q1);
    W.slice(1, i2).sub_(Err1.matmul(Hinv.slice(0, i1, i2).slice(1, i2)));
  }
  if (actorder) Q = Q.index_select(1, invperm);
  return Q;
}

}  // namespace

TEST_CASE("GPTQ matches a direct LibTorch implementation of gptq.py", "[torch][gptq]") {
  torch::set_num_threads(2);
  torch::manual_seed(0);
  const int64_t rows = 64, cols = 256, n = 2048;
  auto X = torch::matmul(torch::randn({n, cols}), torch::eye(cols) + torch::randn({cols, cols}) / 16.0);
  X = X * (0.2 + 3 * torch::rand({cols}));
  auto W = 0.05 * torch::randn({rows, cols});
  InputStats st(cols);
  auto Xc = X.contiguous();
  st.add(Xc.data_ptr<float>(), n);
  const std::vector<double> H = st.hessian();
  auto Ht = torch::from_blob(const_cast<double*>(H.data()), {cols, cols}, torch::kFloat64).to(torch::kFloat32);
  for (const GridSpec g : {GridSpec{4, 128, false}, GridSpec{3, 32, false}, GridSpec{3, 0, false}, GridSpec{4, 64, true}})
    for (bool act : {false, true}) {
      CAPTURE(g.str(), act);
      GptqOptions o;
      o.grid = g;
      o.act_order = act;
      auto Wc = W.contiguous();
      const GptqResult ours = gptq_quantize(Wc.data_ptr<float>(), rows, cols, H, o, "t");
      const auto ref = torch_gptq(W, Ht, g.bits, g.group, g.sym, act);
      auto ours_codes = torch::from_blob(const_cast<uint8_t*>(ours.q.codes.data()), {rows, cols}, torch::kUInt8).to(torch::kFloat32);
      const double agree = (ours_codes == ref).to(torch::kFloat64).mean().item<double>();
      // Same algorithm, different float rounding (our inverse factor takes another route): a
      // few rounding ties may fall the other way; the output error must not differ.
      MatF Q(static_cast<size_t>(rows * cols));
      ours.q.dequantize(Q.data());
      auto Qo = torch::from_blob(Q.data(), {rows, cols}, torch::kFloat32);
      const int64_t ng = cols / (g.group == 0 ? cols : g.group);
      auto scales = torch::from_blob(const_cast<float*>(ours.q.scales.data()), {rows, ng}, torch::kFloat32);
      auto mins = torch::from_blob(const_cast<float*>(ours.q.mins.data()), {rows, ng}, torch::kFloat32);
      auto gidx = torch::div(torch::arange(cols, torch::kLong), g.group == 0 ? cols : g.group, "floor");
      auto Qr = scales.index_select(1, gidx) * ref + mins.index_select(1, gidx);
      const double e_ours = torch::matmul(W - Qo, X.t()).pow(2).sum().item<double>();
      const double e_ref = torch::matmul(W - Qr, X.t()).pow(2).sum().item<double>();
      std::cout << fmt::format("gptq vs torch {} act_order={}: code agreement {:.4f}%, output error ours {:.2f} torch {:.2f}\n",
                               g.str(), act, 100 * agree, e_ours, e_ref);
      CHECK(agree >= 0.995);
      CHECK(e_ours == Approx(e_ref).epsilon(0.01));
    }
}

TEST_CASE("imatrix: quant calibrate's Σx² per input column is LibTorch's on the same windows", "[torch][imatrix]") {
  torch::set_num_threads(2);
  qt::TempDir tmp;
  const LoadedModel m = load_model(qt::bundled_model());
  CalibSpec spec;
  spec.file = qt::kjv_calib();
  spec.nsamples = 4;
  spec.seqlen = 128;
  const auto r = qt::run(qt::quant_bin() + " calibrate " + qt::bundled_model() + " --calib " + spec.file +
                         " --nsamples 4 --seqlen 128 --quiet --imatrix " + (tmp / "im.gguf"));
  INFO(r.out);
  REQUIRE(r.code == 0);
  const Imatrix im = read_imatrix(tmp / "im.gguf");
  CHECK(im.entries.size() == static_cast<size_t>(7 * m.config.n_layers));
  CHECK(im.chunk_count == 4);
  CHECK(im.chunk_size == 128);
  std::map<std::string, torch::Tensor> sums;
  const auto windows = calibration_windows(*m.tokenizer, spec, m.config.max_ctx);
  for (const auto& w : windows)
    torch_forward(m, w, nullptr, [&](const std::string& name, const torch::Tensor& x) {
      auto s2 = x.to(torch::kFloat64).pow(2).sum(0);
      auto [it, fresh] = sums.try_emplace(name, s2);
      if (!fresh) it->second += s2;
    });
  REQUIRE(sums.size() == im.entries.size());
  double worst = 0;
  for (const auto& [name, ref] : sums) {
    const ImatrixEntry& e = im.entries.at(name);
    CAPTURE(name);
    CHECK(e.count == 4 * 128);
    REQUIRE(static_cast<int64_t>(e.sums.size()) == ref.size(0));
    const double* want = ref.data_ptr<double>();
    for (size_t i = 0; i < e.sums.size(); ++i) worst = std::max(worst, std::fabs(e.sums[i] - want[i]) / std::max(want[i], 1e-30));
  }
  std::cout << fmt::format("imatrix vs LibTorch: worst relative difference {:.2e} over {} entries\n", worst, sums.size());
  CHECK(worst < 1e-4);  // fp32 forward passes and an fp32 file; sums in double on both sides
}
