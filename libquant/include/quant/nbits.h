// ONNX Runtime's MatMulNBits weight layout (com.microsoft, contrib op): the packed form of an
// integer-zero grid that ONNX files carry. Dequantized weight: (code - zero_point) * scale.
#pragma once

#include <cstdint>
#include <vector>

#include "quant/quant_weight.h"

namespace quant {

struct NBitsTensor {
  int64_t n = 0, k = 0;  // N = output rows, K = input columns (the attributes)
  int bits = 4;          // 4 or 8: bits of a stored code
  int64_t block = 32;    // block_size: a power of two >= 16; the grid's group
  int grid_bits = 4;     // bits of the grid the codes come from (<= bits; 3-bit codes fit 4-bit blobs)
  bool sym = false;      // the grid's own symmetry (recorded; storage depends on zeros only)
  // B: [N][k_blocks][blob] uint8; codes packed low bits first (for 4 bits: even k in the low
  // nibble); K is padded up to k_blocks * block with the block's zero point (weight 0).
  std::vector<uint8_t> b;
  std::vector<float> scales;   // [N][k_blocks]
  std::vector<uint8_t> zeros;  // [N][zp_row_bytes()] packed like B; empty: every zero is 2^(bits-1)

  int64_t k_blocks() const { return (k + block - 1) / block; }
  int64_t blob() const { return block * bits / 8; }
  int64_t zp_row_bytes() const { return (k_blocks() * bits + 7) / 8; }
  bool has_zeros() const { return !zeros.empty(); }
  int code(int64_t row, int64_t col) const;  // col < k_blocks * block
  int zero(int64_t row, int64_t blk) const;
  // Bytes as stored (B, fp32 scales, zero points) per weight of the N x K matrix, in bits.
  double stored_bpw() const;
  // Throws naming `what` when the arrays do not have the sizes the attributes imply.
  void validate(const char* what) const;
  void dequantize(float* out) const;  // [N][K]: (code - zero) * scale in fp32, as ONNX Runtime
};

// Whether MatMulNBits can hold a grid of `bits` with groups of `group` (0 = per channel)
// exactly, and in how many stored bits; throws naming `name` with the reason when it cannot.
int nbits_storage_bits(int bits, int64_t group, const char* name);

// Packs an integer-zero grid (every group's -min/scale an integer in the code range) into
// MatMulNBits blobs of `bits` (4 or 8). Zero points are omitted when all equal 2^(bits-1).
NBitsTensor pack_nbits(const QuantWeight& q, int bits, const char* name);
// Back to the logical form: group = block, mins = -zero * scale.
QuantWeight unpack_nbits(const NBitsTensor& t);

}  // namespace quant
