// MatMulNBits packing: the layout ONNX Runtime's CPU kernel reads (contrib_defs MatMulNBits).
#include "quant/nbits.h"

#include <algorithm>
#include <cmath>

#include "quant/error.h"

namespace quant {

namespace {

int get_bits(const uint8_t* row, int64_t i, int bits) {
  if (bits == 8) return row[i];
  return (row[i / 2] >> ((i & 1) * 4)) & 0xF;
}

void put_bits(uint8_t* row, int64_t i, int bits, int v) {
  if (bits == 8) {
    row[i] = static_cast<uint8_t>(v);
    return;
  }
  row[i / 2] = static_cast<uint8_t>(row[i / 2] | (v & 0xF) << ((i & 1) * 4));
}

}  // namespace

int NBitsTensor::code(int64_t row, int64_t col) const {
  const int64_t blk = col / block;
  return get_bits(b.data() + (row * k_blocks() + blk) * blob(), col % block, bits);
}

int NBitsTensor::zero(int64_t row, int64_t blk) const {
  if (zeros.empty()) return 1 << (bits - 1);
  return get_bits(zeros.data() + row * zp_row_bytes(), blk, bits);
}

double NBitsTensor::stored_bpw() const {
  const double bytes = static_cast<double>(b.size() + zeros.size()) + 4.0 * static_cast<double>(scales.size());
  return 8.0 * bytes / (static_cast<double>(n) * static_cast<double>(k));
}

void NBitsTensor::validate(const char* what) const {
  QUANT_CHECK(bits == 4 || bits == 8, "{}: MatMulNBits bits = {} (4 or 8 are read)", what, bits);
  QUANT_CHECK(block >= 16 && block <= 1024 && (block & (block - 1)) == 0,
              "{}: MatMulNBits block_size = {} is not a power of two in 16..1024", what, block);
  QUANT_CHECK(n > 0 && k > 0 && n < (int64_t{1} << 31) && k < (int64_t{1} << 31), "{}: MatMulNBits N = {}, K = {}", what, n, k);
  QUANT_CHECK(static_cast<int64_t>(b.size()) == n * k_blocks() * blob(), "{}: B has {} bytes, N x k_blocks x blob = {}",
              what, b.size(), n * k_blocks() * blob());
  QUANT_CHECK(static_cast<int64_t>(scales.size()) == n * k_blocks(), "{}: {} scales, N x k_blocks = {}", what,
              scales.size(), n * k_blocks());
  QUANT_CHECK(zeros.empty() || static_cast<int64_t>(zeros.size()) == n * zp_row_bytes(),
              "{}: {} zero-point bytes, expected {}", what, zeros.size(), n * zp_row_bytes());
  for (size_t i = 0; i < scales.size(); ++i)
    QUANT_CHECK(std::isfinite(scales[i]), "{}: scale {} is not finite", what, i);
}

void NBitsTensor::dequantize(float* out) const {
  const int64_t kb = k_blocks();
  for (int64_t r = 0; r < n; ++r)
    for (int64_t blk = 0; blk < kb; ++blk) {
      const float s = scales[static_cast<size_t>(r * kb + blk)];
      const float z = static_cast<float>(zero(r, blk));
      const uint8_t* src = b.data() + (r * kb + blk) * blob();
      const int64_t c0 = blk * block, c1 = std::min(k, c0 + block);
      for (int64_t c = c0; c < c1; ++c) out[r * k + c] = (static_cast<float>(get_bits(src, c - c0, bits)) - z) * s;
    }
}

int nbits_storage_bits(int bits, int64_t group, const char* name) {
  QUANT_CHECK(group != 0, "{}: a per-channel grid cannot be MatMulNBits (block_size is a power of two 16..1024); "
              "use --group-size 32, 64 or 128", name);
  QUANT_CHECK(group >= 16 && group <= 1024 && (group & (group - 1)) == 0,
              "{}: group size {} is not a MatMulNBits block_size (a power of two 16..1024)", name, group);
  QUANT_CHECK(bits >= 2 && bits <= 8, "{}: {}-bit codes do not fit MatMulNBits (2..8 bits are held, in 4- or 8-bit blobs)",
              name, bits);
  return bits <= 4 ? 4 : 8;
}

NBitsTensor pack_nbits(const QuantWeight& q, int bits, const char* name) {
  QUANT_CHECK(bits == 4 || bits == 8, "{}: MatMulNBits stores 4- or 8-bit codes, not {}", name, bits);
  QUANT_CHECK(q.bits <= bits, "{}: {}-bit codes do not fit {}-bit MatMulNBits blobs", name, q.bits, bits);
  QUANT_CHECK(q.g_idx.empty(), "{}: an act-order grid: sort its columns by group first (sort_columns_by_group)", name);
  NBitsTensor t;
  t.n = q.rows;
  t.k = q.cols;
  t.bits = bits;
  t.block = q.group;
  t.grid_bits = q.bits;
  t.sym = q.sym;
  nbits_storage_bits(q.bits, q.group, name);
  const int64_t kb = t.k_blocks(), ng = q.n_groups();
  QUANT_CHECK(kb == ng, "{}: {} groups for {} blocks", name, ng, kb);
  const int top = (1 << bits) - 1, dflt = 1 << (bits - 1);
  // Integer zero points: -min / scale must be an integer of the code range.
  std::vector<int> zp(static_cast<size_t>(q.rows * ng));
  bool all_default = true;
  for (size_t i = 0; i < zp.size(); ++i) {
    const float s = q.scales[i], m = q.mins[i];
    QUANT_CHECK(std::isfinite(s) && std::isfinite(m), "{}: group {} has a non-finite scale or min", name, i);
    int z = dflt;
    if (s != 0.0f) {
      const double zf = -static_cast<double>(m) / static_cast<double>(s);
      z = static_cast<int>(std::lround(zf));
      QUANT_CHECK(std::fabs(zf - z) <= 1e-3 * std::max(1.0, std::fabs(zf)) && z >= 0 && z <= top,
                  "{}: row {} group {} has zero point {:.4f}, not an integer in 0..{}: MatMulNBits holds only "
                  "integer-zero grids (GPTQ/RTN --bits grids, Q4_0, Q5_0, Q8_0; not Q4_1/Q5_1)",
                  name, static_cast<int64_t>(i) / ng, static_cast<int64_t>(i) % ng, zf, top);
    }
    zp[i] = z;
    all_default = all_default && z == dflt;
  }
  t.scales = q.scales;
  t.b.assign(static_cast<size_t>(t.n * kb * t.blob()), 0);
  if (!all_default) t.zeros.assign(static_cast<size_t>(t.n * t.zp_row_bytes()), 0);
  for (int64_t r = 0; r < t.n; ++r) {
    for (int64_t blk = 0; blk < kb; ++blk) {
      const int z = zp[static_cast<size_t>(r * kb + blk)];
      if (!all_default) put_bits(t.zeros.data() + r * t.zp_row_bytes(), blk, bits, z);
      uint8_t* dst = t.b.data() + (r * kb + blk) * t.blob();
      for (int64_t j = 0; j < t.block; ++j) {
        const int64_t c = blk * t.block + j;
        const int code = c < t.k ? q.codes[static_cast<size_t>(r * t.k + c)] : z;  // padding decodes to 0
        QUANT_CHECK(code <= top, "{}: code {} at row {} column {} exceeds {} bits", name, code, r, c, bits);
        put_bits(dst, j, bits, code);
      }
    }
  }
  return t;
}

QuantWeight unpack_nbits(const NBitsTensor& t) {
  QuantWeight q{.rows = t.n, .cols = t.k, .bits = t.grid_bits, .group = t.block, .sym = t.sym,
                .codes = std::vector<uint8_t>(static_cast<size_t>(t.n * t.k)), .scales = t.scales,
                .mins = std::vector<float>(t.scales.size()), .g_idx = {}, .levels = {}, .kblocks = {}};
  const int64_t kb = t.k_blocks();
  for (int64_t r = 0; r < t.n; ++r) {
    for (int64_t c = 0; c < t.k; ++c) q.codes[static_cast<size_t>(r * t.k + c)] = static_cast<uint8_t>(t.code(r, c));
    for (int64_t blk = 0; blk < kb; ++blk) {
      const size_t i = static_cast<size_t>(r * kb + blk);
      q.mins[i] = -static_cast<float>(t.zero(r, blk)) * q.scales[i];
    }
  }
  return q;
}

}  // namespace quant
