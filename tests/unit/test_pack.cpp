// fp16 conversion, ggml block formats, the integer grid and the policy.
#include <cfloat>
#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>
#include <random>

#include "../common.h"
#include "quant/half.h"
#include "quant/pack_blocks.h"
#include "quant/policy.h"
#include "quant/quant_weight.h"

using namespace quant;

namespace {

std::vector<float> random_rows(int64_t rows, int64_t cols, uint32_t seed, float sigma = 0.05f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, sigma);
  std::vector<float> w(static_cast<size_t>(rows * cols));
  for (auto& x : w) x = d(rng);
  // Edge cases a block must survive: all zero, constant, one outlier, all positive.
  if (rows >= 4 && cols >= 32) {
    std::fill_n(w.begin(), 32, 0.0f);
    std::fill_n(w.begin() + cols, 32, 0.25f);
    w[static_cast<size_t>(2 * cols + 5)] = 3.0f;
    for (int j = 0; j < 32; ++j) w[static_cast<size_t>(3 * cols + j)] = std::fabs(w[static_cast<size_t>(3 * cols + j)]);
  }
  return w;
}

// REFERENCE.md / ggml-quants.c formulas, written straight to bytes (independent of QuantWeight).
std::vector<uint8_t> spec_q4_0(const float* x, int64_t n) {
  std::vector<uint8_t> out;
  for (int64_t b = 0; b < n / 32; ++b, x += 32) {
    float amax = 0, max = 0;
    for (int j = 0; j < 32; ++j)
      if (amax < std::fabs(x[j])) amax = std::fabs(x[j]), max = x[j];
    const float d = max / -8, id = d ? 1.0f / d : 0.0f;
    const uint16_t dh = f32_to_fp16(d);
    out.push_back(static_cast<uint8_t>(dh & 0xFF));
    out.push_back(static_cast<uint8_t>(dh >> 8));
    for (int j = 0; j < 16; ++j) {
      const int lo = std::min(15, static_cast<int>(static_cast<int8_t>(x[j] * id + 8.5f)));
      const int hi = std::min(15, static_cast<int>(static_cast<int8_t>(x[j + 16] * id + 8.5f)));
      out.push_back(static_cast<uint8_t>(lo | (hi << 4)));
    }
  }
  return out;
}

std::vector<uint8_t> spec_q4_1(const float* x, int64_t n) {
  std::vector<uint8_t> out;
  for (int64_t b = 0; b < n / 32; ++b, x += 32) {
    float mn = FLT_MAX, mx = -FLT_MAX;
    for (int j = 0; j < 32; ++j) mn = std::min(mn, x[j]), mx = std::max(mx, x[j]);
    const float d = (mx - mn) / 15, id = d ? 1.0f / d : 0.0f;
    for (uint16_t h : {f32_to_fp16(d), f32_to_fp16(mn)}) {
      out.push_back(static_cast<uint8_t>(h & 0xFF));
      out.push_back(static_cast<uint8_t>(h >> 8));
    }
    for (int j = 0; j < 16; ++j) {
      const int lo = std::min(15, static_cast<int>(static_cast<int8_t>((x[j] - mn) * id + 0.5f)));
      const int hi = std::min(15, static_cast<int>(static_cast<int8_t>((x[j + 16] - mn) * id + 0.5f)));
      out.push_back(static_cast<uint8_t>(lo | (hi << 4)));
    }
  }
  return out;
}

std::vector<uint8_t> spec_q8_0(const float* x, int64_t n) {
  std::vector<uint8_t> out;
  for (int64_t b = 0; b < n / 32; ++b, x += 32) {
    float amax = 0;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / 127, id = d ? 1.0f / d : 0.0f;
    const uint16_t dh = f32_to_fp16(d);
    out.push_back(static_cast<uint8_t>(dh & 0xFF));
    out.push_back(static_cast<uint8_t>(dh >> 8));
    for (int j = 0; j < 32; ++j) out.push_back(static_cast<uint8_t>(static_cast<int8_t>(std::round(x[j] * id))));
  }
  return out;
}

}  // namespace

TEST_CASE("fp16 conversion is exact and rounds to nearest even", "[unit][half]") {
  // Every finite half survives half -> float -> half.
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = fp16_to_f32(static_cast<uint16_t>(h));
    if (std::isnan(f)) continue;
    REQUIRE(f32_to_fp16(f) == h);
  }
  CHECK(fp16_to_f32(0x3C00) == 1.0f);
  CHECK(fp16_to_f32(0xC000) == -2.0f);
  CHECK(fp16_to_f32(0x0001) == std::ldexp(1.0f, -24));  // smallest subnormal
  CHECK(f32_to_fp16(65504.0f) == 0x7BFF);
  CHECK(f32_to_fp16(1e6f) == 0x7C00);  // overflow -> inf
  // 1 + 2^-11 is halfway between 1 and 1 + 2^-10: ties go to even (1.0).
  CHECK(f32_to_fp16(1.0f + std::ldexp(1.0f, -11)) == 0x3C00);
  CHECK(f32_to_fp16(1.0f + 3 * std::ldexp(1.0f, -11)) == 0x3C02);
  CHECK(bf16_to_f32(f32_to_bf16(1.5f)) == 1.5f);
  CHECK(f32_to_bf16(1.0f + std::ldexp(1.0f, -8)) == 0x3F80);  // tie to even
}

TEST_CASE("RTN Q4_0, Q4_1, Q8_0 bytes equal ggml's reference formulas bit for bit", "[unit][pack]") {
  const int64_t rows = 16, cols = 256;
  const auto w = random_rows(rows, cols, 1);
  struct Case {
    TType t;
    std::vector<uint8_t> (*spec)(const float*, int64_t);
  };
  for (const Case& c : {Case{TType::Q4_0, spec_q4_0}, Case{TType::Q4_1, spec_q4_1}, Case{TType::Q8_0, spec_q8_0}}) {
    SECTION(std::string(ttype_name(c.t))) {
      const PackedTensor p = pack(quantize_ggml(c.t, w.data(), rows, cols), c.t);
      std::vector<uint8_t> want;
      for (int64_t r = 0; r < rows; ++r) {
        const auto row = c.spec(w.data() + r * cols, cols);
        want.insert(want.end(), row.begin(), row.end());
      }
      REQUIRE(p.data.size() == want.size());
      CHECK(p.data == want);
    }
  }
}

TEST_CASE("pack and unpack round-trip exactly and dequantization follows the block formulas", "[unit][pack]") {
  const int64_t rows = 8, cols = 128;
  const auto w = random_rows(rows, cols, 2);
  for (TType t : {TType::Q4_0, TType::Q4_1, TType::Q5_0, TType::Q5_1, TType::Q8_0}) {
    CAPTURE(ttype_name(t));
    const PackedTensor p = pack(quantize_ggml(t, w.data(), rows, cols), t);
    REQUIRE(p.data.size() == static_cast<size_t>(rows * row_bytes(t, cols)));
    const QuantWeight q = unpack(p);
    CHECK(pack(q, t).data == p.data);
    // Row dequantization (what the runtime uses) against the logical form.
    std::vector<float> a(static_cast<size_t>(rows * cols)), b(a.size());
    for (int64_t r = 0; r < rows; ++r) dequantize_row(t, p.data.data() + r * row_bytes(t, cols), a.data() + r * cols, cols);
    q.dequantize(b.data());
    for (size_t i = 0; i < a.size(); ++i) REQUIRE(a[i] == Approx(b[i]).margin(1e-6));
    // Quantization error stays within half a step, plus the fp16 rounding of d and m (half an
    // fp16 ulp each: 2^-11 relative, d scaled by the largest code).
    for (int64_t i = 0; i < rows * cols; ++i) {
      const size_t b = static_cast<size_t>(i / 32);
      const float step = std::fabs(q.scales[b]);
      if (t == TType::Q4_0 || t == TType::Q5_0) continue;  // their top code clips by design
      const float top = static_cast<float>((1 << q.bits) - 1);
      const float bound = 0.5f * step + std::ldexp(std::fabs(q.mins[b]) + top * step, -11) + 1e-7f;
      REQUIRE(std::fabs(a[static_cast<size_t>(i)] - w[static_cast<size_t>(i)]) <= bound);
    }
  }
  // The Q5 high bits: bit j of qh holds bit 4 of element j.
  std::vector<float> ramp(32);
  for (int j = 0; j < 32; ++j) ramp[static_cast<size_t>(j)] = static_cast<float>(j);
  const PackedTensor p = pack(quantize_ggml(TType::Q5_1, ramp.data(), 1, 32), TType::Q5_1);
  BlockQ5_1 blk;
  std::memcpy(&blk, p.data.data(), sizeof(blk));
  uint32_t qh;
  std::memcpy(&qh, blk.qh, 4);
  CHECK(qh == 0xFFFF0000u);  // codes 16..31 have bit 4 set
  CHECK((blk.qs[0] & 0x0F) == 0);
  CHECK((blk.qs[0] >> 4) == 0);  // element 16 = code 16: low nibble 0
}

TEST_CASE("the integer grid follows GPTQ's min-max formulas", "[unit][grid]") {
  const int64_t rows = 4, cols = 64;
  const auto w = random_rows(rows, cols, 3);
  for (int bits : {2, 3, 4, 8})
    for (bool sym : {false, true})
      for (int64_t group : {int64_t{32}, int64_t{0}}) {
        const GridSpec spec{bits, group, sym};
        CAPTURE(spec.str());
        const QuantWeight q = rtn_grid(w.data(), rows, cols, spec);
        const int maxq = (1 << bits) - 1;
        const int64_t g = group == 0 ? cols : group;
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t k = 0; k < cols / g; ++k) {
            const float* x = w.data() + r * cols + k * g;
            float lo = 0, hi = 0;
            for (int64_t j = 0; j < g; ++j) lo = std::min(lo, x[j]), hi = std::max(hi, x[j]);
            if (sym) hi = std::max(-lo, hi), lo = -hi;
            if (lo == 0 && hi == 0) lo = -1, hi = 1;
            const float scale = (hi - lo) / static_cast<float>(maxq);
            const float zero = sym ? static_cast<float>((maxq + 1) / 2) : std::nearbyint(-lo / scale);
            const size_t gi = static_cast<size_t>(r * (cols / g) + k);
            REQUIRE(q.scales[gi] == scale);
            REQUIRE(q.mins[gi] == -zero * scale);
            for (int64_t j = 0; j < g; ++j) {
              const float code = std::clamp(std::nearbyint(x[j] / scale) + zero, 0.0f, static_cast<float>(maxq));
              REQUIRE(q.codes[static_cast<size_t>(r * cols + k * g + j)] == static_cast<uint8_t>(code));
            }
          }
      }
}

TEST_CASE("a grid is stored exactly in the type that holds it", "[unit][grid]") {
  const int64_t rows = 6, cols = 128;
  const auto w = random_rows(rows, cols, 4);
  for (int bits = 2; bits <= 8; ++bits)
    for (bool sym : {false, true})
      for (int64_t group : {int64_t{32}, int64_t{64}, int64_t{128}, int64_t{0}}) {
        const GridSpec spec{bits, group, sym};
        CAPTURE(spec.str());
        const StorageChoice sc = storage_for_grid(spec, cols);
        QuantWeight q = rtn_grid(w.data(), rows, cols, spec);
        const PackedTensor p = pack(q, sc.type);
        std::vector<float> got(static_cast<size_t>(rows * cols)), want(got.size());
        for (int64_t r = 0; r < rows; ++r)
          dequantize_row(sc.type, p.data.data() + r * row_bytes(sc.type, cols), got.data() + r * cols, cols);
        q.dequantize(want.data());
        if (sc.exact) {
          // Codes survive exactly (shifted by the type's fixed zero where it has one) ...
          const QuantWeight u = unpack(p);
          const int64_t ng = q.n_groups();
          for (int64_t i = 0; i < rows * cols; ++i) {
            const size_t gi = static_cast<size_t>((i / cols) * ng + (i % cols) / q.group);
            const int zero = static_cast<int>(std::nearbyint(-q.mins[gi] / q.scales[gi]));
            const int shift = sc.type == TType::Q4_0 ? 8 - zero : sc.type == TType::Q5_0 ? 16 - zero
                            : sc.type == TType::Q8_0 ? 128 - zero : 0;
            REQUIRE(static_cast<int>(u.codes[static_cast<size_t>(i)]) == q.codes[static_cast<size_t>(i)] + shift);
          }
          // ... and values differ only by the fp16 rounding of the scale and min.
          for (size_t i = 0; i < got.size(); ++i) {
            const size_t gi = static_cast<size_t>((i / cols) * ng + (i % cols) / q.group);
            const float tol = std::ldexp(std::fabs(q.scales[gi]) * ((1 << bits) - 1) + std::fabs(q.mins[gi]), -10);
            REQUIRE(std::fabs(got[i] - want[i]) <= tol);
          }
        } else {
          for (size_t i = 0; i < got.size(); ++i) REQUIRE(got[i] == Approx(want[i]).epsilon(1e-3).margin(1e-6));
        }
      }
  CHECK(storage_for_grid({3, 32, false}, 128).type == TType::Q4_1);
  CHECK(storage_for_grid({4, 128, true}, 128).type == TType::Q4_0);
  CHECK(storage_for_grid({5, 64, false}, 128).type == TType::Q5_1);
  CHECK(storage_for_grid({8, 32, true}, 128).type == TType::Q8_0);
  CHECK(storage_for_grid({8, 32, false}, 128).type == TType::F16);
  CHECK(storage_for_grid({4, 0, false}, 172).type == TType::F16);
}

TEST_CASE("pack refuses a grid the type cannot hold", "[unit][pack]") {
  const auto w = random_rows(2, 64, 5);
  const QuantWeight q5 = rtn_grid(w.data(), 2, 64, {5, 32, false});
  CHECK_THROWS_WITH(pack(q5, TType::Q4_1), Catch::Contains("code out of"));
  const QuantWeight q4 = quantize_ggml(TType::Q4_1, w.data(), 2, 64);
  CHECK_THROWS_WITH(pack(q4, TType::Q4_0), Catch::Contains("is not -zero*scale"));
}

TEST_CASE("policy rules: first match wins, vectors stay F32, untileable rows fall back", "[unit][policy]") {
  CHECK(glob_match("blk.*.ffn_down.weight", "blk.12.ffn_down.weight"));
  CHECK_FALSE(glob_match("blk.*.ffn_down.weight", "blk.12.ffn_up.weight"));
  CHECK(glob_match("*", "anything"));
  CHECK(glob_match("blk.?.attn_q.*", "blk.3.attn_q.bias"));
  const Policy p = Policy::defaults(QuantSpec::parse("Q4_0"));
  std::vector<TensorDesc> t = {{"token_embd.weight", 512, 64, 2, TType::F32},
                               {"blk.0.attn_norm.weight", 1, 64, 1, TType::F32},
                               {"blk.0.attn_q.bias", 1, 64, 1, TType::F32},
                               {"blk.0.ffn_down.weight", 64, 172, 2, TType::F32},
                               {"output.weight", 512, 64, 2, TType::F32}};
  const auto plans = resolve_policy(p, t);
  CHECK(plans[0].stored == TType::Q4_0);
  CHECK(plans[1].stored == TType::F32);
  CHECK(plans[2].stored == TType::F32);
  CHECK(plans[3].stored == TType::F16);
  CHECK_FALSE(plans[3].exact);
  CHECK(plans[4].stored == TType::Q8_0);
  CHECK(QuantSpec::parse("int3 g32 asym").str() == "int3 g32 asym");
  CHECK(QuantSpec::parse("int4 per-channel sym").grid.group == 0);
  CHECK_THROWS_WITH(QuantSpec::parse("Q9_9"), Catch::Contains("unknown quant spec"));
  const auto json_round = Policy::from_json(p.to_json(), "test");
  CHECK(json_round.to_json() == p.to_json());
}

#include "quant/kquants.h"

// Bytes against llama.cpp's own quantizer are held in tests/e2e/test_llama_cpp.cpp; here: each
// super-block type decodes to what its grid says and lands within its own step of the weights.
TEST_CASE("k-quant and IQ4 blocks: grid, dequantization and error agree", "[unit][pack][kquant]") {
  const int64_t rows = 6, cols = 512;
  const std::vector<float> w = random_rows(rows, cols, 21);
  for (TType t : {TType::Q2_K, TType::Q3_K, TType::Q4_K, TType::Q5_K, TType::Q6_K, TType::IQ4_NL, TType::IQ4_XS}) {
    CAPTURE(ttype_name(t));
    const QuantWeight q = quantize_ggml(t, w.data(), rows, cols);
    REQUIRE(static_cast<int64_t>(q.kblocks.size()) == rows * row_bytes(t, cols));
    CHECK(q.group == kquant_group(t));
    CHECK(q.levels.empty() == !is_nonlinear(t));
    std::vector<float> a(w.size()), b(w.size());
    q.dequantize(a.data());
    for (int64_t r = 0; r < rows; ++r) dequantize_row(t, q.kblocks.data() + r * row_bytes(t, cols), b.data() + r * cols, cols);
    double err2 = 0, w2 = 0, max_gap = 0;
    for (size_t i = 0; i < w.size(); ++i) {
      max_gap = std::max(max_gap, static_cast<double>(std::fabs(a[i] - b[i])));
      err2 += (b[i] - w[i]) * (b[i] - w[i]);
      w2 += w[i] * w[i];
    }
    CHECK(max_gap <= 1e-6);  // grid form and ggml's expression: the same value up to rounding
    // Relative RMS error falls with the bits: 2-bit about 0.35, 6-bit about 0.03.
    const double rel = std::sqrt(err2 / w2), bound = 1.6 / std::pow(2.0, kquant_bits(t));
    CHECK(rel <= bound);
    CHECK(rel > bound / 20);
    // pack writes the stored blocks, unpack reads the same grid back.
    const PackedTensor p = pack(q, t);
    CHECK(p.data == q.kblocks);
    const QuantWeight u = unpack(p);
    CHECK(u.codes == q.codes);
    CHECK(u.scales == q.scales);
    CHECK(u.mins == q.mins);
  }
}
