// Integer GEMMs for INT8 activations: W8A8 (int8 weights, one scale per output row) and W4A8
// (4-bit codes in 32-blocks with a scale and a min per block, as ggml's Q4_0/Q4_1 and our
// integer grids). Integer products are accumulated exactly in int32; the float epilogue is the
// same code in every ISA, so every SIMD kernel equals its scalar `_ref` twin bit for bit.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace quant {

enum class Isa { Scalar = 0, Avx2 = 1, Avx512Vnni = 2 };
const char* isa_name(Isa isa);
bool isa_supported(Isa isa);  // from the CPU (cpuid), never from compile flags
// The best supported ISA, capped by the QUANT_ISA environment variable (scalar|avx2|avx512vnni).
Isa best_isa();

inline constexpr int64_t kQBlock = 32;  // activation and W4 block (columns)

// How activations get their int8 scales: one per row (token), one for the whole matrix, or one
// per 32 columns of a row (llama.cpp's Q8_0 activations).
enum class ActQuant { PerToken, PerTensor, PerBlock };
const char* act_quant_name(ActQuant g);
ActQuant parse_act_quant(const std::string& s);  // per-token | per-tensor | per-block

// Activations [m][k] quantized to int8 symmetrically (q = round(x / s), |q| <= 127), dynamic
// (scales from the values themselves). k % 32 == 0.
struct QActs {
  int64_t m = 0, k = 0;
  bool per_block = false;  // scales differ inside a row
  std::vector<int8_t> q;       // [m][k]
  std::vector<float> scale;    // [m][k/32]; per-row scales repeated in every block
  std::vector<int32_t> bsum;   // [m][k/32]: sum of q over the block (for W4 mins)
  std::vector<int32_t> bsum16; // [m][k/16]: the same per 16 columns (k-quants' 16-sub-blocks)
};
QActs quantize_acts(const float* x, int64_t m, int64_t k, ActQuant g);

// W8: q [n][k] int8 in [-127, 127], w = scale[n] * q.
struct W8Weights {
  int64_t n = 0, k = 0;
  std::vector<int8_t> q;
  std::vector<float> scale;   // [n]
  std::vector<int32_t> wsum;  // [n]: sum of q over the row (VNNI's unsigned-offset correction)
  // The VNNI tile kernel's layout (igemm::pack_w8_panels), built once by quantize_w8 on CPUs
  // that have AVX-512 VNNI; empty elsewhere.
  std::vector<int8_t> panels;
};
// Symmetric per-output-channel INT8 (SmoothQuant's weights): scale = max|w| / 127.
W8Weights quantize_w8(const float* w, int64_t n, int64_t k);

// W8 with a scale and a min per 32-block (ggml's Q8_0/Q5_x, or per-channel scales repeated):
// w = d * q + mn, q int8 in [-127, 127] (|q| <= 127 keeps the AVX2 sign trick exact).
struct W8BlockWeights {
  int64_t n = 0, k = 0;
  std::vector<int8_t> q;     // [n][k]
  std::vector<float> d, mn;  // [n][k/32]
};
// From a grid's codes (<= 8 bits; group a multiple of 32, dividing k): q = code - 2^(bits-1),
// mn = min + 2^(bits-1) * scale (exact for integer-zero grids, whose mn is then 0).
W8BlockWeights pack_w8_blocks(const uint8_t* codes, const float* scales, const float* mins, int64_t n, int64_t k,
                              int64_t group, int bits);

// W4: codes 0..15 in ggml's Q4 nibble order (byte j of a block: element j low, j + 16 high);
// w = d * code + mn per 32-block.
struct W4Weights {
  int64_t n = 0, k = 0;
  std::vector<uint8_t> nib;  // [n][k/32][16]
  std::vector<float> d, mn;  // [n][k/32]
  // The tile kernels' layout (igemm::pack_w4_panels), built once by pack_w4 on CPUs with AVX2
  // (the same codes again, transposed into panels of 64 rows).
  std::vector<uint8_t> panels;  // [n/64][k/8][64][4]
  std::vector<float> pd, pmn;   // [n/64][k/32][64]: d and mn per panel row and block, 0 past n
};
// From a grid's codes (<= 4 bits) with groups that are multiples of 32: w = scale*code + min.
W4Weights pack_w4(const uint8_t* codes, const float* scales, const float* mins, int64_t n, int64_t k, int64_t group);

// Y [m][n] = A Wᵀ. W8A8 (per-row activation scales only): sa[m] · sw[n] · Σ_k a·w.
// W4A8: Σ_b (d·sa)·isum_b + (mn·sa)·bsum_b over 32-blocks b, in block order.
void gemm_w8a8(const QActs& a, const W8Weights& w, float* y, Isa isa);
void gemm_w4a8(const QActs& a, const W4Weights& w, float* y, Isa isa);
// Blocked W8: Σ_b (d·sa)·isum_b + (mn·sa)·bsum_b, any activation granularity.
void gemm_w8a8_blocks(const QActs& a, const W8BlockWeights& w, float* y, Isa isa);

// The kernels by ISA (exposed for tests and benchmarks). Each takes one activation row and
// kNc consecutive weight rows and returns exact int32 dot products: W8, the whole row (out[c]);
// W4, one per 32-block (out[c][k/32]). The float epilogue is shared, outside the kernels.
namespace igemm {
inline constexpr int64_t kNc = 4;
using W8Dots = void (*)(const int8_t* a, const int8_t* w, const int32_t* wsum, int64_t k, int32_t* out);
using W4Dots = void (*)(const int8_t* a, const uint8_t* nib, int64_t k, int32_t* out);
void w8_dots_ref(const int8_t* a, const int8_t* w, const int32_t* wsum, int64_t k, int32_t* out);
void w8_dots_avx2(const int8_t* a, const int8_t* w, const int32_t* wsum, int64_t k, int32_t* out);
void w8_dots_avx512vnni(const int8_t* a, const int8_t* w, const int32_t* wsum, int64_t k, int32_t* out);
void w4_dots_ref(const int8_t* a, const uint8_t* nib, int64_t k, int32_t* out);
void w4_dots_avx2(const int8_t* a, const uint8_t* nib, int64_t k, int32_t* out);
void w4_dots_avx512vnni(const int8_t* a, const uint8_t* nib, int64_t k, int32_t* out);
void w8b_dots_ref(const int8_t* a, const uint8_t* w, int64_t k, int32_t* out);
void w8b_dots_avx2(const int8_t* a, const uint8_t* w, int64_t k, int32_t* out);
void w8b_dots_avx512vnni(const int8_t* a, const uint8_t* w, int64_t k, int32_t* out);
W8Dots w8_dots(Isa isa);

// The W8A8 GEMM tile (AVX-512 VNNI): kTileM activation rows x kTileN weight rows over the whole
// k. Weights in panels of kTileN rows, k/4 steps of [kTileN][4] bytes (64 rows x 4 consecutive
// columns, the operand of one vpdpbusd per 16 rows); rows past n are zero. Activations as
// unsigned bytes au = a + 128 (a ^ 0x80), row stride lda. The tile returns exact int32
// c[r][j] = Σ_k au[r][k] · w[j][k] for r < mr; the driver subtracts 128 · wsum[j].
inline constexpr int64_t kTileM = 6, kTileN = 64;
std::vector<int8_t> pack_w8_panels(const int8_t* q, int64_t n, int64_t k);
void w8_tile_ref(const uint8_t* au, int64_t lda, int64_t mr, const int8_t* panel, int64_t k, int32_t* c);
void w8_tile_avx512vnni(const uint8_t* au, int64_t lda, int64_t mr, const int8_t* panel, int64_t k, int32_t* c);
using W8Tile = void (*)(const uint8_t* au, int64_t lda, int64_t mr, const int8_t* panel, int64_t k, int32_t* c);
W8Tile w8_tile(Isa isa);  // null where the ISA has no W8A8 tile (the dots run instead)
// The W4A8 GEMM tile (AVX-512 VNNI, and AVX2): kTileM activation rows x kTileN weight rows, whole k.
// Panels of 64 rows, k/8 steps of [64][4] bytes: byte i of row j holds code(8s + i) in its low
// nibble and code(8s + 4 + i) in its high one (the two operands of vpdpbusd, codes as u8 against
// signed activations). Per block b the exact int32 isum is folded into float as
//   acc = acc + fma(d·sa, isum, (mn·sa)·bsum),  d, mn from pd / pmn [k/32][64],
// sa, bsum of row r at sa[r·ls + b], bs[r·ls + b]; y[r][j] for r < mr. The blocked drivers'
// epilogue is the same sequence, so the tile and the dots give the same bytes.
void pack_w4_panels(W4Weights& w);
void w4_tile_ref(const int8_t* a, int64_t lda, int64_t mr, const float* sa, const int32_t* bs, int64_t ls, const uint8_t* panel,
                 const float* pd, const float* pmn, int64_t k, float* y);
void w4_tile_avx512vnni(const int8_t* a, int64_t lda, int64_t mr, const float* sa, const int32_t* bs, int64_t ls,
                        const uint8_t* panel, const float* pd, const float* pmn, int64_t k, float* y);
void w4_tile_avx2(const int8_t* a, int64_t lda, int64_t mr, const float* sa, const int32_t* bs, int64_t ls, const uint8_t* panel,
                  const float* pd, const float* pmn, int64_t k, float* y);
using W4Tile = void (*)(const int8_t* a, int64_t lda, int64_t mr, const float* sa, const int32_t* bs, int64_t ls,
                        const uint8_t* panel, const float* pd, const float* pmn, int64_t k, float* y);
W4Tile w4_tile(Isa isa);
W4Dots w8b_dots(Isa isa);  // same shape as W4's: per-block sums of kNc int8 rows (passed as bytes)
W4Dots w4_dots(Isa isa);
}  // namespace igemm

}  // namespace quant
