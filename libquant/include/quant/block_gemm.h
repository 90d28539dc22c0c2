// Quantized matrices multiplied on their stored blocks: llama.cpp's vec_dot of each GGUF type,
// arranged as a GEMM. The weights are read where they lie (the memory-mapped file), never
// expanded to fp32: each thread unpacks one panel of 64 output rows x 256 columns at a time into
// unsigned 8-bit codes (16 KB, in L1) with their per-sub-block factors, then runs every
// activation row against it. Activations are int8 per 32 columns (llama.cpp's Q8_0/Q8_1). For a
// weight in sub-blocks of S = 32 (legacy types, Q4_K, Q5_K) or 16 (Q2_K, Q3_K, Q6_K) columns
//   w[j][i] = d[j][s]·(u[j][i] − z) + mn[j][s],  u in 0..255, s = i / S,
// and activations x[r][i] ≈ sa[r][i/32]·q[r][i], each output is, sub-block after sub-block in order,
//   acc ← fma(d·sa, isum − z·bsum, acc);  acc ← fma(mn, sa·bsum, acc)   (the second for types with mins)
// with isum = Σ u·q exact in int32 and bsum = Σ q over the sub-block. The float steps are the same code in every
// ISA, so every SIMD tile equals its scalar twin bit for bit.
#pragma once

#include <cstdint>
#include <vector>

#include "quant/int_gemm.h"
#include "quant/model.h"

namespace quant {

// Types with a block kernel: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K.
bool block_gemm_supports(TType t);

// y [m][n] (=, or += with accumulate) x Wᵀ from activations quantized per 32 columns
// (quantize_acts(.., ActQuant::PerBlock); any granularity works). k % 32 == 0 and the type's
// block divides k.
void block_gemm(const QActs& a, const StoredMatrix& w, float* y, Isa isa, bool accumulate = false);

// The first (row, column) of a stored F32/F16/BF16 or block-kernel matrix whose value is not
// finite (for block types: a block whose factors are not), or false: readers never trust a file.
bool find_non_finite(const StoredMatrix& w, int64_t& row, int64_t& col);

namespace bgemm {
inline constexpr int64_t kPanelN = 64, kChunkK = 256, kTileM = 6;
// Σq of activation row `row` over the sub-block of `sub` (16 or 32) columns starting at column c0.
inline int32_t sub_sum(const QActs& a, int64_t row, int64_t c0, int sub) {
  return sub == 32 ? a.bsum[static_cast<size_t>(row * (a.k / 32) + c0 / 32)] : a.bsum16[static_cast<size_t>(row * (a.k / 16) + c0 / 16)];
}
// One unpacked panel chunk: codes in steps of 4 columns ([k/4][64][4], the operand of one
// vpdpbusd per 16 outputs), d and mn per sub-block and output ([k/sub][64]); rows past n are 0.
struct Panel {
  alignas(64) uint8_t u[kChunkK / 4][kPanelN][4];
  alignas(64) float d[kChunkK / 16][kPanelN];
  alignas(64) float mn[kChunkK / 16][kPanelN];
  int32_t z = 0;        // the type's code offset (Q4_0 8, Q5_0 16, Q8_0 128, Q3_K 4, Q6_K 32; 0 with mins)
  bool mins = false;    // mn is not all zero by construction (Q4_1, Q5_1, Q2_K, Q4_K, Q5_K)
  int sub = 32;         // columns per sub-block: 32, or 16
  int64_t blocks = 0;   // 32-blocks in this chunk (the last may be short)
};
// Rows j0 .. j0+63 (those < n), columns [c0, c0 + 32·blocks) of w into p.
void unpack_panel(const StoredMatrix& w, int64_t j0, int64_t c0, int64_t blocks, Panel& p);
// The tile: rows [r0, r0 + mr), mr ≤ kTileM, of y (stride ldy, columns j0 .. j0+63 of which the
// first nc are stored) accumulate the chunk's blocks; acc holds the running sums [kTileM][64].
using Tile = void (*)(const QActs& a, int64_t r0, int64_t mr, int64_t b0, const Panel& p, float* acc);
void tile_ref(const QActs& a, int64_t r0, int64_t mr, int64_t b0, const Panel& p, float* acc);
void tile_avx2(const QActs& a, int64_t r0, int64_t mr, int64_t b0, const Panel& p, float* acc);
void tile_avx512vnni(const QActs& a, int64_t r0, int64_t mr, int64_t b0, const Panel& p, float* acc);
Tile tile(Isa isa);
}  // namespace bgemm

}  // namespace quant
