// The logical quantized weight every algorithm produces and every packer consumes.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "quant/qtype.h"

namespace quant {

// A plain integer grid: `bits` per code, one (scale, zero) per `group` input columns.
struct GridSpec {
  int bits = 4;
  int64_t group = 32;  // 0 = one group per output row (per-channel)
  bool sym = false;
  // Range by GPTQ's MSE search (quant.py find_params mse=True: the min-max range shrunk by up to
  // 20% where that lowers sum |q(w) - w|^2.4) instead of min-max. Storage is the same.
  bool mse = false;
  std::string str() const;  // "int4 g32 asym", "int3 per-channel asym mse"
  // The grids we quantize onto, checked in one place (callers name the flag or field):
  // 2..8 bits; groups of 32, 64 or 128 columns, or 0 (per channel).
  static bool valid_bits(int64_t b) { return b >= 2 && b <= 8; }
  static bool valid_group(int64_t g) { return g == 0 || g == 32 || g == 64 || g == 128; }
  // Logical size of `cols`-wide rows: codes plus fp16 scales, plus b-bit zeros when asymmetric.
  double logical_bpw(int64_t cols) const;
};

// Throws naming `name`, the row and the column of the first weight that is not finite.
void check_finite_weights(const float* w, int64_t rows, int64_t cols, std::string_view name);

// Layout: codes [rows][cols] (0 .. 2^bits-1); scales, mins [rows][cols / group].
// Dequantized weight: w[r][c] = scales[r][g] * codes[r][c] + mins[r][g], g = c / group.
// Integer-zero grids (GPTQ style, Q4_0, Q8_0) have mins = -zero * scale; ggml's Q4_1/Q5_1
// store any min. When `group` does not divide cols the last group is shorter (cols % group
// columns: MatMulNBits pads it; ggml blocks need group a multiple of 32 dividing cols).
struct QuantWeight {
  int64_t rows = 0, cols = 0;
  int bits = 4;
  int64_t group = 32;
  bool sym = false;
  std::vector<uint8_t> codes;
  std::vector<float> scales;
  std::vector<float> mins;
  // Empty: column c belongs to group c / group. Else the group of each column (a GPTQ
  // checkpoint's act-order g_idx); only MatMulNBits (its g_idx input) and the GPTQ layout hold
  // such a grid, ggml blocks and our integer kernels do not.
  std::vector<int32_t> g_idx;
  // Empty: a linear grid. Else the value of each code (IQ4's 16 non-linear levels): w =
  // scales[g] * levels[code] + mins[g]. Only ggml's IQ4 blocks hold such a grid.
  std::vector<float> levels;
  // Super-block types (k-quants, IQ4): the blocks as stored. Their two-level scales (fp16 d and
  // dmin times 4-, 6- or 8-bit sub-block codes) give scales/mins above but cannot be recovered
  // from them, so pack() writes these bytes.
  std::vector<uint8_t> kblocks;

  int64_t n_groups() const { return (cols + group - 1) / group; }
  int64_t group_of(int64_t c) const { return g_idx.empty() ? c / group : g_idx[static_cast<size_t>(c)]; }
  void dequantize(float* out) const;  // out: [rows][cols]
};

// An act-order grid (g_idx) over its input columns sorted by group: the result has contiguous
// groups and column j is q's column perm[j] (perm filled here, stable). Exact: a container that
// gathers its input by perm computes the same product. Throws naming `name` unless every group
// but the last holds exactly `group` columns (GPTQ's act-order does).
QuantWeight sort_columns_by_group(const QuantWeight& q, std::vector<int64_t>& perm, std::string_view name);
// The inverse: column perm[j] of the result is q's column j, with g_idx = the groups again.
QuantWeight unsort_columns(const QuantWeight& q, const std::vector<int64_t>& perm);

// One group's grid (GPTQ's quant.py formulas): x holds n values `stride` apart. code =
// clamp(round(w / scale) + zero, 0, 2^bits - 1); w' = scale * (code - zero).
struct GridParams {
  float scale, zero;
};
GridParams fit_grid_group(const float* x, int64_t n, int64_t stride, const GridSpec& spec);
// The code of w on grid p: clamp(round(w / scale) + zero, 0, maxq), as a float.
inline float quant_code(float w, const GridParams& p, int maxq) {
  return std::clamp(std::nearbyint(w / p.scale) + p.zero, 0.0f, static_cast<float>(maxq));
}

// Round-to-nearest on the min-max grid of GPTQ's quant.py: range forced to include 0;
// asym zero = round(-min / scale), sym zero = 2^(bits-1) with range [-absmax, absmax].
// w: [rows][cols] row-major. A group that does not divide cols leaves a shorter last group.
QuantWeight rtn_grid(const float* w, int64_t rows, int64_t cols, const GridSpec& spec);

// ggml's quantizers: the bytes llama.cpp's own quantizer writes, quantize_row_*_ref without an
// importance matrix, its quant_weights variants with one (`importance`: cols values, the
// imatrix entry of this tensor). Scales are returned already rounded to fp16, as stored. t a
// legacy or super-block type; cols a multiple of its block.
QuantWeight quantize_ggml(TType t, const float* w, int64_t rows, int64_t cols, const float* importance = nullptr);

// Tensor data as stored: bytes of `type`, ggml layout, rows of `cols` elements.
struct PackedTensor {
  TType type = TType::F32;
  int64_t rows = 0, cols = 0;
  std::vector<uint8_t> data;
};

// Which stored type holds a grid exactly (codes exactly; scales rounded to fp16), or F16
// when none does for these columns. `exact` says whether codes survive unchanged.
struct StorageChoice {
  TType type;
  bool exact;
  std::string why;
};
StorageChoice storage_for_grid(const GridSpec& spec, int64_t cols);

// Packs into ggml blocks. Throws if the weight does not fit the type exactly (codes out of
// range, group not tiling the 32-blocks, non-integer zero for Q4_0/Q5_0/Q8_0). F16/F32/BF16
// store the dequantized values.
PackedTensor pack(const QuantWeight& q, TType type);
// Float data to a float type (F32/F16/BF16).
PackedTensor pack_float(const float* w, int64_t rows, int64_t cols, TType type);
// Block types back to the logical form (group 32): pack(unpack(p), p.type) == p.
QuantWeight unpack(const PackedTensor& p);

}  // namespace quant
