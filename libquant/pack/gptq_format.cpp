// GPTQ checkpoint packing (see quant/gptq_format.h): AutoGPTQ's QuantLinear.pack for 2/3/4/8 bits
// is one little-endian bitstream per column, which is how this file reads and writes it.
#include "quant/gptq_format.h"

#include <cmath>

#include "quant/error.h"
#include "quant/half.h"

namespace quant {

namespace {

// Value k of a little-endian bitstream of `bits`-bit values held in words w[0], w[stride], ...
uint32_t get_bits(const int32_t* w, int64_t stride, int64_t k, int bits) {
  const int64_t bit = k * bits, word = bit / 32, off = bit % 32;
  uint64_t v = static_cast<uint32_t>(w[word * stride]);
  if (off + bits > 32) v |= static_cast<uint64_t>(static_cast<uint32_t>(w[(word + 1) * stride])) << 32;
  return static_cast<uint32_t>(v >> off) & ((1u << bits) - 1);
}
void put_bits(int32_t* w, int64_t stride, int64_t k, int bits, uint32_t value) {
  const int64_t bit = k * bits, word = bit / 32, off = bit % 32;
  const uint64_t v = static_cast<uint64_t>(value) << off;
  w[word * stride] = static_cast<int32_t>(static_cast<uint32_t>(w[word * stride]) | static_cast<uint32_t>(v));
  if (off + bits > 32)
    w[(word + 1) * stride] = static_cast<int32_t>(static_cast<uint32_t>(w[(word + 1) * stride]) | static_cast<uint32_t>(v >> 32));
}

}  // namespace

void GptqPacked::validate(const std::string& what) const {
  QUANT_CHECK(bits == 2 || bits == 3 || bits == 4 || bits == 8, "{}: bits = {} (GPTQ checkpoints hold 2, 3, 4 or 8)", what, bits);
  QUANT_CHECK(in > 0 && out > 0 && group > 0, "{}: in_features {}, out_features {}, group_size {} out of range",
              what, in, out, group);
  QUANT_CHECK(in * bits % 32 == 0, "{}: in_features {} x {} bits does not fill 32-bit qweight words", what, in, bits);
  QUANT_CHECK(out * bits % 32 == 0, "{}: out_features {} x {} bits does not fill 32-bit qzeros words", what, out, bits);
  QUANT_CHECK(static_cast<int64_t>(qweight.size()) == in * bits / 32 * out, "{}: qweight has {} words, [{}, {}] expected", what,
              qweight.size(), in * bits / 32, out);
  QUANT_CHECK(static_cast<int64_t>(qzeros.size()) == n_groups() * (out * bits / 32), "{}: qzeros has {} words, [{}, {}] expected",
              what, qzeros.size(), n_groups(), out * bits / 32);
  QUANT_CHECK(static_cast<int64_t>(scales.size()) == n_groups() * out, "{}: scales has {} values, [{}, {}] expected", what,
              scales.size(), n_groups(), out);
  QUANT_CHECK(static_cast<int64_t>(g_idx.size()) == in, "{}: g_idx has {} entries, in_features is {}", what, g_idx.size(), in);
  for (int64_t i = 0; i < in; ++i)
    QUANT_CHECK(g_idx[static_cast<size_t>(i)] >= 0 && g_idx[static_cast<size_t>(i)] < n_groups(),
                "{}: g_idx[{}] = {} outside the {} groups", what, i, g_idx[static_cast<size_t>(i)], n_groups());
}

bool GptqGrid::contiguous_groups() const {
  for (int64_t i = 0; i < in; ++i)
    if (g_idx[static_cast<size_t>(i)] != i / group) return false;
  return true;
}

void GptqGrid::dequantize(float* w) const {
  for (int64_t o = 0; o < out; ++o)
    for (int64_t i = 0; i < in; ++i) {
      const size_t gi = static_cast<size_t>(g_idx[static_cast<size_t>(i)] * out + o);
      w[o * in + i] = scales[gi] * static_cast<float>(static_cast<int32_t>(codes[static_cast<size_t>(o * in + i)]) - zeros[gi]);
    }
}

GptqGrid unpack_gptq(const GptqPacked& p, GptqZeros v) {
  GptqGrid g{p.bits, p.in, p.out, p.group, {}, {}, {}, p.g_idx};
  g.codes.resize(static_cast<size_t>(p.in * p.out));
  for (int64_t o = 0; o < p.out; ++o)
    for (int64_t i = 0; i < p.in; ++i)
      g.codes[static_cast<size_t>(o * p.in + i)] = static_cast<uint8_t>(get_bits(p.qweight.data() + o, p.out, i, p.bits));
  const int64_t zw = p.out * p.bits / 32;
  g.zeros.resize(static_cast<size_t>(p.n_groups() * p.out));
  g.scales.resize(g.zeros.size());
  for (int64_t k = 0; k < p.n_groups(); ++k)
    for (int64_t o = 0; o < p.out; ++o) {
      const size_t at = static_cast<size_t>(k * p.out + o);
      g.zeros[at] = static_cast<int32_t>(get_bits(p.qzeros.data() + k * zw, 1, o, p.bits)) + (v == GptqZeros::V1 ? 1 : 0);
      g.scales[at] = fp16_to_f32(p.scales[at]);
    }
  return g;
}

GptqPacked pack_gptq(const QuantWeight& q, GptqZeros v, const std::string& name) {
  GptqPacked p;
  p.bits = q.bits;
  p.in = q.cols;
  p.out = q.rows;
  p.group = q.group;
  const int64_t ng = q.n_groups(), maxq = (1 << q.bits) - 1;
  QUANT_CHECK(q.bits == 2 || q.bits == 3 || q.bits == 4 || q.bits == 8, "{}: a {}-bit grid has no GPTQ checkpoint layout (2, 3, 4, 8)",
              name, q.bits);
  QUANT_CHECK(p.in * p.bits % 32 == 0 && p.out * p.bits % 32 == 0,
              "{}: [{}, {}] at {} bits does not split into 32-bit GPTQ words", name, p.out, p.in, p.bits);
  p.qweight.assign(static_cast<size_t>(p.in * p.bits / 32 * p.out), 0);
  p.qzeros.assign(static_cast<size_t>(ng * (p.out * p.bits / 32)), 0);
  p.scales.resize(static_cast<size_t>(ng * p.out));
  p.g_idx.resize(static_cast<size_t>(p.in));
  for (int64_t i = 0; i < p.in; ++i) p.g_idx[static_cast<size_t>(i)] = static_cast<int32_t>(q.group_of(i));
  for (int64_t o = 0; o < p.out; ++o)
    for (int64_t i = 0; i < p.in; ++i)
      put_bits(p.qweight.data() + o, p.out, i, p.bits, q.codes[static_cast<size_t>(o * p.in + i)]);
  const int64_t zw = p.out * p.bits / 32;
  for (int64_t o = 0; o < p.out; ++o)
    for (int64_t k = 0; k < ng; ++k) {
      const float s = q.scales[static_cast<size_t>(o * ng + k)], m = q.mins[static_cast<size_t>(o * ng + k)];
      const float zf = s > 0 ? -m / s : 0;
      const float z = std::nearbyint(zf);
      QUANT_CHECK(std::abs(zf - z) <= 1e-3f * std::max(1.0f, std::abs(z)) && z >= 0 && z <= static_cast<float>(maxq),
                  "{}: row {} group {} has no integer zero point (min {} / scale {}): a GPTQ checkpoint cannot hold it", name,
                  o, k, m, s);
      QUANT_CHECK(v == GptqZeros::V2 || z >= 1,
                  "{}: row {} group {} has zero point 0, which the v1 layout (AutoGPTQ stores zero - 1) cannot hold: "
                  "write --gptq-zeros v2 or use a symmetric grid", name, o, k);
      put_bits(p.qzeros.data() + k * zw, 1, o, p.bits, static_cast<uint32_t>(z) - (v == GptqZeros::V1 ? 1 : 0));
      p.scales[static_cast<size_t>(k * p.out + o)] = f32_to_fp16(s);
    }
  return p;
}

std::optional<QuantWeight> gptq_to_quant_weight(const GptqGrid& g, bool sym) {
  const int64_t ng = (g.in + g.group - 1) / g.group;
  for (int32_t z : g.zeros)
    if (z > (1 << g.bits) - 1) return std::nullopt;
  QuantWeight q;
  q.rows = g.out;
  q.cols = g.in;
  q.bits = g.bits;
  q.group = g.group;
  q.sym = sym;
  q.codes = g.codes;
  if (!g.contiguous_groups()) q.g_idx = g.g_idx;
  q.scales.resize(static_cast<size_t>(g.out * ng));
  q.mins.resize(q.scales.size());
  for (int64_t o = 0; o < g.out; ++o)
    for (int64_t k = 0; k < ng; ++k) {
      const size_t at = static_cast<size_t>(k * g.out + o);
      q.scales[static_cast<size_t>(o * ng + k)] = g.scales[at];
      q.mins[static_cast<size_t>(o * ng + k)] = -static_cast<float>(g.zeros[at]) * g.scales[at];
    }
  return q;
}

}  // namespace quant
