// GPTQ checkpoints against AutoGPTQ's own dequantization, transliterated into LibTorch
// (QuantLinear's torch path in auto_gptq/nn_modules/qlinear/qlinear_cuda.py: shifts by wf, the
// 3-bit three-word splice, zeros + 1 for the v1 layout, scales[g_idx] * (weight - zeros[g_idx])).
// Both directions: words we pack dequantize there to our weights, and words packed there (the
// vectorized pack, 2/4/8 bits) unpack here to the same codes.
#include <torch/torch.h>

#include <random>

#include "../common.h"
#include "../synth.h"
#include "quant/formats/loader.h"
#include "quant/formats/safetensors.h"
#include "quant/gptq_format.h"
#include "quant/half.h"

using namespace quant;
namespace fs = std::filesystem;

namespace {

torch::Tensor i32(const std::vector<int32_t>& v, std::vector<int64_t> shape) {
  return torch::from_blob(const_cast<int32_t*>(v.data()), shape, torch::kInt32).clone();
}

// AutoGPTQ: qweight [in*bits/32, out], qzeros [groups, out*bits/32], scales [groups, out],
// g_idx [in] -> W^T [in, out] in fp32.
torch::Tensor autogptq_dequantize(const torch::Tensor& qweight, const torch::Tensor& qzeros, const torch::Tensor& scales,
                                  const torch::Tensor& g_idx, int bits, bool v1) {
  torch::Tensor weight, zeros;
  if (bits != 3) {
    const auto wf = torch::arange(0, 32, bits, torch::kInt32).unsqueeze(0);
    zeros = torch::bitwise_right_shift(qzeros.unsqueeze(2).expand({-1, -1, 32 / bits}), wf.unsqueeze(0));
    zeros = torch::bitwise_and(zeros, (1 << bits) - 1);
    zeros = zeros.reshape({zeros.size(0), zeros.size(1) * zeros.size(2)});
    weight = torch::bitwise_right_shift(qweight.unsqueeze(1).expand({-1, 32 / bits, -1}), wf.unsqueeze(-1));
    weight = torch::bitwise_and(weight, (1 << bits) - 1);
    weight = weight.reshape({weight.size(0) * weight.size(1), weight.size(2)});
  } else {
    const auto wf = torch::tensor({0, 3, 6, 9, 12, 15, 18, 21, 24, 27, 30, 0, 0, 1, 4, 7, 10, 13, 16, 19, 22, 25, 28, 31,
                                   0, 2, 5, 8, 11, 14, 17, 20, 23, 26, 29, 0}, torch::kInt32).reshape({1, 3, 12});
    zeros = qzeros.reshape({qzeros.size(0), qzeros.size(1) / 3, 3, 1}).expand({-1, -1, -1, 12});
    zeros = torch::bitwise_right_shift(zeros, wf.unsqueeze(0)).clone();
    using torch::indexing::Slice;
    zeros.index_put_({Slice(), Slice(), 0, 10}, torch::bitwise_or(torch::bitwise_and(zeros.index({Slice(), Slice(), 0, 10}), 0x3),
                                                                  torch::bitwise_and(torch::bitwise_left_shift(zeros.index({Slice(), Slice(), 1, 0}), 2), 0x4)));
    zeros.index_put_({Slice(), Slice(), 1, 11}, torch::bitwise_or(torch::bitwise_and(zeros.index({Slice(), Slice(), 1, 11}), 0x1),
                                                                  torch::bitwise_and(torch::bitwise_left_shift(zeros.index({Slice(), Slice(), 2, 0}), 1), 0x6)));
    zeros = torch::bitwise_and(zeros, 0x7);
    zeros = torch::cat({zeros.index({Slice(), Slice(), 0, Slice(0, 11)}), zeros.index({Slice(), Slice(), 1, Slice(1, 12)}),
                        zeros.index({Slice(), Slice(), 2, Slice(1, 11)})}, 2);
    zeros = zeros.reshape({zeros.size(0), zeros.size(1) * zeros.size(2)});
    weight = qweight.reshape({qweight.size(0) / 3, 3, 1, qweight.size(1)}).expand({-1, -1, 12, -1});
    weight = torch::bitwise_right_shift(weight, wf.unsqueeze(-1)).clone();
    weight.index_put_({Slice(), 0, 10}, torch::bitwise_or(torch::bitwise_and(weight.index({Slice(), 0, 10}), 0x3),
                                                          torch::bitwise_and(torch::bitwise_left_shift(weight.index({Slice(), 1, 0}), 2), 0x4)));
    weight.index_put_({Slice(), 1, 11}, torch::bitwise_or(torch::bitwise_and(weight.index({Slice(), 1, 11}), 0x1),
                                                          torch::bitwise_and(torch::bitwise_left_shift(weight.index({Slice(), 2, 0}), 1), 0x6)));
    weight = torch::bitwise_and(weight, 0x7);
    weight = torch::cat({weight.index({Slice(), 0, Slice(0, 11)}), weight.index({Slice(), 1, Slice(1, 12)}),
                         weight.index({Slice(), 2, Slice(1, 11)})}, 1);
    weight = weight.reshape({weight.size(0) * weight.size(1), weight.size(2)});
  }
  if (v1) zeros = zeros + 1;
  const auto g = g_idx.to(torch::kLong);
  return scales.index_select(0, g) * (weight.to(torch::kFloat32) - zeros.index_select(0, g).to(torch::kFloat32));
}

// AutoGPTQ's pack for 2/4/8 bits, vectorized: intweight [in, out] -> qweight [in*bits/32, out].
torch::Tensor autogptq_pack(const torch::Tensor& intweight, int bits) {
  const int64_t per = 32 / bits;
  auto w = intweight.to(torch::kInt64).reshape({intweight.size(0) / per, per, intweight.size(1)});
  auto shifts = torch::arange(0, 32, bits, torch::kInt64).reshape({1, per, 1});
  auto packed = torch::bitwise_left_shift(w, shifts).sum(1);  // disjoint bit fields: sum == or
  return torch::where(packed >= (int64_t{1} << 31), packed - (int64_t{1} << 32), packed).to(torch::kInt32);
}


}  // namespace

TEST_CASE("GPTQ layout: AutoGPTQ's dequantization (LibTorch) gives our weights, every bit width, sym/asym, act-order, v1/v2",
          "[torch][gptq_format]") {
  const int64_t out = 64, in = 128;
  for (int bits : {2, 3, 4, 8})
    for (bool sym : {true, false})
      for (bool act_order : {false, true})
        for (GptqZeros v : {GptqZeros::V1, GptqZeros::V2}) {
          INFO(bits << " bits, sym " << sym << ", act-order " << act_order << ", v" << (v == GptqZeros::V1 ? 1 : 2));
          const QuantWeight q = qt::random_int_grid(out, in, bits, 32, sym, static_cast<uint32_t>(bits * 10 + sym), v == GptqZeros::V1 ? 1 : 0);
          GptqPacked p = pack_gptq(q, v, "t");
          if (act_order)  // a permutation's groups, as GPTQ's desc_act writes g_idx
            for (int64_t i = 0; i < in; ++i) p.g_idx[static_cast<size_t>(i)] = static_cast<int32_t>((i * 45 % in) / 32);
          const GptqGrid g = unpack_gptq(p, v);
          std::vector<float> ours(static_cast<size_t>(out * in));
          g.dequantize(ours.data());
          std::vector<float> sc(p.scales.size());
          for (size_t i = 0; i < sc.size(); ++i) sc[i] = fp16_to_f32(p.scales[i]);
          const auto theirs = autogptq_dequantize(i32(p.qweight, {in * bits / 32, out}), i32(p.qzeros, {p.n_groups(), out * bits / 32}),
                                                  torch::from_blob(sc.data(), {p.n_groups(), out}, torch::kFloat32),
                                                  i32(p.g_idx, {in}), bits, v == GptqZeros::V1)
                                  .t()
                                  .contiguous();
          CHECK(std::memcmp(theirs.data_ptr<float>(), ours.data(), ours.size() * 4) == 0);
          if (!act_order) {  // and it is our grid: the QuantWeight's own dequantization
            std::vector<float> mine(ours.size());
            q.dequantize(mine.data());
            CHECK(mine == ours);
          }
        }
}

TEST_CASE("GPTQ layout: words AutoGPTQ packs (LibTorch) unpack here to the same codes", "[torch][gptq_format]") {
  const int64_t out = 32, in = 256;
  for (int bits : {2, 4, 8}) {
    INFO(bits << " bits");
    const QuantWeight q = qt::random_int_grid(out, in, bits, 128, false, 5u + static_cast<uint32_t>(bits), 1);
    std::vector<int32_t> codes(q.codes.begin(), q.codes.end());
    const auto intweight = torch::from_blob(codes.data(), {out, in}, torch::kInt32).t().contiguous();  // [in, out]
    const auto qweight = autogptq_pack(intweight, bits);
    GptqPacked p = pack_gptq(q, GptqZeros::V1, "t");
    std::vector<int32_t> theirs(qweight.data_ptr<int32_t>(), qweight.data_ptr<int32_t>() + qweight.numel());
    CHECK(theirs == p.qweight);
    p.qweight = theirs;
    CHECK(unpack_gptq(p, GptqZeros::V1).codes == q.codes);
  }
}

TEST_CASE("GPTQ checkpoint we write: AutoGPTQ's dequantization (LibTorch) of its tensors is what our runtime reads",
          "[torch][gptq_format]") {
  qt::TempDir tmp;
  const qt::Synth s = qt::make_synth(/*tied=*/false, /*bias=*/true, 31);
  qt::write_hf(tmp / "fp", s, TType::F16);
  for (const auto& [flags, v1] : std::vector<std::pair<std::string, bool>>{{"--bits 4 --group-size 32 --sym --gptq-zeros v1", true},
                                                                          {"--bits 3 --group-size 64 --asym --gptq-zeros v2", false},
                                                                          {"--bits 2 --group-size 32 --asym --gptq-zeros v2", false}}) {
    INFO(flags);
    const std::string dir = tmp / "out";
    fs::remove_all(dir);
    const qt::RunResult r = qt::run(qt::quant_bin() + " convert " + (tmp / "fp") + " " + flags + " --format gptq-safetensors -o " + dir + " --quiet");
    INFO(r.out);
    REQUIRE(r.code == 0);
    const int bits = flags[7] - '0';
    const SafetensorsFile f(dir + "/model.safetensors");
    const LoadedModel m = load_model(dir);
    int linears = 0;
    for (const auto& [name, t] : f.tensors()) {
      if (!name.ends_with(".qweight")) continue;
      const std::string pre = name.substr(0, name.size() - 7);
      auto tensor = [&](const std::string& n, at::ScalarType type) {
        const SafeTensor& x = f.tensors().at(pre + n);
        return torch::from_blob(const_cast<uint8_t*>(x.data), x.shape, type).clone();
      };
      const auto w = autogptq_dequantize(tensor("qweight", torch::kInt32), tensor("qzeros", torch::kInt32),
                                         tensor("scales", torch::kHalf).to(torch::kFloat32), tensor("g_idx", torch::kInt32), bits, v1)
                         .t()
                         .contiguous();
      std::string canon;
      for (const auto& t : m.weights->tensors())
        if (hf_tensor_name(t.name) == pre + "weight") canon = t.name;
      REQUIRE(!canon.empty());
      const std::vector<float> ours = m.weights->read_f32(canon);
      INFO(canon);
      REQUIRE(static_cast<size_t>(w.numel()) == ours.size());
      CHECK(std::memcmp(w.data_ptr<float>(), ours.data(), ours.size() * 4) == 0);
      ++linears;
    }
    CHECK(linears == 14);
  }
}
