// An independent FP reference: LibTorch computes the Llama forward pass of the bundled model
// from the same tensors (HF semantics, written from the modeling code's equations) and our
// runtime must match it. Kept in one binary: LibTorch costs ~1 s to start.
#include <torch/torch.h>

#include <iostream>

#include "../common.h"
#include "quant/formats/loader.h"
#include "quant/runtime.h"
#include "quant/text.h"

using namespace quant;

namespace {

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

torch::Tensor torch_forward(const LoadedModel& m, const std::vector<int32_t>& ids) {
  const auto& c = m.config;
  const int64_t T = static_cast<int64_t>(ids.size()), hd = c.head_dim();
  auto idx = torch::tensor(std::vector<int64_t>(ids.begin(), ids.end()), torch::kLong);
  auto x = tensor_of(m, "token_embd.weight").index_select(0, idx);
  auto inv_freq = 1.0 / torch::pow(torch::tensor(static_cast<double>(c.rope_theta)),
                                   torch::arange(0, hd, 2, torch::kFloat32) / static_cast<double>(hd));
  auto freqs = torch::outer(torch::arange(T, torch::kFloat32), inv_freq.to(torch::kFloat32));
  auto emb = torch::cat({freqs, freqs}, -1);
  auto cos = emb.cos(), sin = emb.sin();
  auto mask = torch::full({T, T}, -std::numeric_limits<float>::infinity()).triu(1);
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    auto h = rms_norm(x, tensor_of(m, b + "attn_norm.weight"), c.norm_eps);
    auto q = torch::matmul(h, tensor_of(m, b + "attn_q.weight").t()).view({T, c.n_heads, hd}).transpose(0, 1);
    auto k = torch::matmul(h, tensor_of(m, b + "attn_k.weight").t()).view({T, c.n_kv_heads, hd}).transpose(0, 1);
    auto v = torch::matmul(h, tensor_of(m, b + "attn_v.weight").t()).view({T, c.n_kv_heads, hd}).transpose(0, 1);
    q = q * cos + rotate_half(q) * sin;
    k = k * cos + rotate_half(k) * sin;
    k = k.repeat_interleave(c.n_heads / c.n_kv_heads, 0);
    v = v.repeat_interleave(c.n_heads / c.n_kv_heads, 0);
    auto att = torch::softmax(torch::matmul(q, k.transpose(1, 2)) / std::sqrt(static_cast<double>(hd)) + mask, -1);
    auto o = torch::matmul(att, v).transpose(0, 1).reshape({T, c.dim});
    x = x + torch::matmul(o, tensor_of(m, b + "attn_output.weight").t());
    h = rms_norm(x, tensor_of(m, b + "ffn_norm.weight"), c.norm_eps);
    auto g = torch::matmul(h, tensor_of(m, b + "ffn_gate.weight").t());
    auto u = torch::matmul(h, tensor_of(m, b + "ffn_up.weight").t());
    x = x + torch::matmul(torch::silu(g) * u, tensor_of(m, b + "ffn_down.weight").t());
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
