// The GPTQ checkpoint layout: our packer against AutoGPTQ's own loops (transliterated here, the
// 3-bit one word by word), round trips for 2/3/4/8 bits, sym/asym, v1/v2, and refusals.
#include <random>

#include "../common.h"
#include "../synth.h"
#include "quant/gptq_format.h"
#include "quant/half.h"

using namespace quant;

namespace {

// AutoGPTQ QuantLinear.pack (qlinear_cuda_old), the qweight loop, on intweight [in][out].
std::vector<int32_t> autogptq_pack_qweight(const std::vector<uint32_t>& iw, int64_t in, int64_t out, int bits) {
  std::vector<uint32_t> qw(static_cast<size_t>(in * bits / 32 * out), 0);
  auto at = [&](int64_t r, int64_t c) -> uint32_t& { return qw[static_cast<size_t>(r * out + c)]; };
  auto w = [&](int64_t r, int64_t c) { return iw[static_cast<size_t>(r * out + c)]; };
  for (int64_t col = 0; col < out; ++col) {
    int64_t i = 0, row = 0;
    while (row < in * bits / 32) {
      if (bits != 3) {
        for (int64_t j = i; j < i + 32 / bits; ++j) at(row, col) |= w(j, col) << (bits * (j - i));
        i += 32 / bits;
        row += 1;
        continue;
      }
      for (int64_t j = i; j < i + 10; ++j) at(row, col) |= w(j, col) << (3 * (j - i));
      i += 10;
      at(row, col) |= w(i, col) << 30;
      row += 1;
      at(row, col) |= (w(i, col) >> 2) & 1;
      i += 1;
      for (int64_t j = i; j < i + 10; ++j) at(row, col) |= w(j, col) << (3 * (j - i) + 1);
      i += 10;
      at(row, col) |= w(i, col) << 31;
      row += 1;
      at(row, col) |= (w(i, col) >> 1) & 0x3;
      i += 1;
      for (int64_t j = i; j < i + 10; ++j) at(row, col) |= w(j, col) << (3 * (j - i) + 2);
      i += 10;
      row += 1;
    }
  }
  return std::vector<int32_t>(qw.begin(), qw.end());
}

}  // namespace

TEST_CASE("GPTQ layout: qweight words equal AutoGPTQ's pack loops for 2, 3, 4 and 8 bits", "[gptq_format]") {
  for (int bits : {2, 3, 4, 8}) {
    INFO(bits << " bits");
    const QuantWeight q = qt::random_int_grid(64, 96, bits, 32, false, static_cast<uint32_t>(bits), 1);
    std::vector<uint32_t> iw(static_cast<size_t>(q.cols * q.rows));  // [in][out]
    for (int64_t o = 0; o < q.rows; ++o)
      for (int64_t i = 0; i < q.cols; ++i) iw[static_cast<size_t>(i * q.rows + o)] = q.codes[static_cast<size_t>(o * q.cols + i)];
    const GptqPacked p = pack_gptq(q, GptqZeros::V1, "t");
    CHECK(p.qweight == autogptq_pack_qweight(iw, q.cols, q.rows, bits));
  }
}

TEST_CASE("GPTQ layout: pack then unpack gives the grid back (bits, sym/asym, groups, v1/v2)", "[gptq_format]") {
  for (int bits : {2, 3, 4, 8})
    for (bool sym : {true, false})
      for (int64_t group : {32, 128, 256})
        for (GptqZeros v : {GptqZeros::V1, GptqZeros::V2}) {
          INFO(bits << " bits, sym " << sym << ", group " << group << ", v" << (v == GptqZeros::V1 ? 1 : 2));
          const QuantWeight q = qt::random_int_grid(32, 256, bits, group, sym, 7u + static_cast<uint32_t>(bits), v == GptqZeros::V1 ? 1 : 0);
          const GptqPacked p = pack_gptq(q, v, "t");
          p.validate("t");
          const GptqGrid g = unpack_gptq(p, v);
          CHECK(g.contiguous_groups());
          const auto back = gptq_to_quant_weight(g, sym);
          REQUIRE(back);
          CHECK(back->codes == q.codes);
          CHECK(back->scales == q.scales);
          CHECK(back->mins == q.mins);
          std::vector<float> a(static_cast<size_t>(q.rows * q.cols)), b(a.size());
          q.dequantize(a.data());
          g.dequantize(b.data());
          CHECK(a == b);
        }
}

TEST_CASE("GPTQ layout: act-order g_idx dequantizes per column group and travels with the grid", "[gptq_format]") {
  QuantWeight q = qt::random_int_grid(32, 64, 4, 32, false, 5, 1);
  GptqPacked p = pack_gptq(q, GptqZeros::V2, "t");
  for (int64_t i = 0; i < 64; ++i) p.g_idx[static_cast<size_t>(i)] = static_cast<int32_t>((i * 37 % 64) / 32);
  const GptqGrid g = unpack_gptq(p, GptqZeros::V2);
  CHECK_FALSE(g.contiguous_groups());
  const auto back = gptq_to_quant_weight(g, false);
  REQUIRE(back);
  CHECK(back->g_idx == p.g_idx);
  std::vector<float> w(32 * 64), w2(w.size());
  g.dequantize(w.data());
  back->dequantize(w2.data());
  CHECK(w == w2);
  CHECK(pack_gptq(*back, GptqZeros::V2, "t").g_idx == p.g_idx);  // written back as it came
  CHECK_THROWS_WITH(pack(*back, TType::Q4_1), Catch::Contains("g_idx"));
  const int64_t col = 5, grp = (5 * 37 % 64) / 32;  // column 5 reads group 1's scale and zero
  CHECK(w[3 * 64 + col] == q.scales[3 * 2 + grp] * static_cast<float>(q.codes[3 * 64 + col]) + q.mins[3 * 2 + grp]);
}

TEST_CASE("GPTQ layout: refusals name the tensor and the cause", "[gptq_format]") {
  QuantWeight q = qt::random_int_grid(32, 64, 4, 32, false, 9, 0);
  q.mins[0] = 0;  // zero point 0
  CHECK_THROWS_WITH(pack_gptq(q, GptqZeros::V1, "blk.0.attn_q"), Catch::Contains("blk.0.attn_q") && Catch::Contains("zero point 0"));
  CHECK_NOTHROW(pack_gptq(q, GptqZeros::V2, "blk.0.attn_q"));
  q.mins[1] = -0.37f * q.scales[1];
  CHECK_THROWS_WITH(pack_gptq(q, GptqZeros::V2, "blk.0.attn_q"), Catch::Contains("no integer zero point"));
  const QuantWeight q5 = qt::random_int_grid(32, 64, 5, 32, true, 9, 0);
  CHECK_THROWS_WITH(pack_gptq(q5, GptqZeros::V2, "x"), Catch::Contains("5-bit grid"));
  GptqPacked p = pack_gptq(qt::random_int_grid(32, 64, 4, 32, true, 3, 1), GptqZeros::V1, "t");
  p.g_idx[7] = 2;
  CHECK_THROWS_WITH(p.validate("f: m"), Catch::Contains("g_idx[7] = 2 outside the 2 groups"));
  p.g_idx[7] = 0;
  p.scales.pop_back();
  CHECK_THROWS_WITH(p.validate("f: m"), Catch::Contains("scales has 63 values"));
}
