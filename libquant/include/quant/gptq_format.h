// The GPTQ checkpoint layout (AutoGPTQ / GPTQModel QuantLinear, the "gptq" quant_method that
// transformers, vLLM and GPTQModel load): how hub GPTQ models store a grid, and our grids as one.
//
//   qweight  int32 [in * bits / 32][out]    codes along the input dim: for each output column,
//                                           a little-endian bitstream of `bits`-bit codes (for
//                                           3 bits, 32 codes fill 3 words; AutoGPTQ's pack)
//   qzeros   int32 [n_groups][out * bits / 32]  zero points along the output dim, same bitstream;
//                                           v1 ("gptq") stores zero - 1, v2 ("gptq_v2") the zero
//   scales   fp16  [n_groups][out]
//   g_idx    int32 [in]                     the group of each input column (act-order permutes it)
//   W[o][i] = scales[g][o] * (code[i][o] - zero[g][o]),  g = g_idx[i]   (AutoGPTQ dequantize_weight)
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "quant/quant_weight.h"

namespace quant {

enum class GptqZeros { V1, V2 };

struct GptqPacked {
  int bits = 4;
  int64_t in = 0, out = 0;
  int64_t group = 128;  // group_size; in when the checkpoint says -1
  std::vector<int32_t> qweight, qzeros, g_idx;
  std::vector<uint16_t> scales;  // fp16 bits
  int64_t n_groups() const { return (in + group - 1) / group; }
  // Throws naming `what` when sizes, g_idx values or bit widths do not fit the attributes.
  void validate(const std::string& what) const;
};

// Codes and zeros unpacked; zero is what the kernels subtract (v1: stored + 1, so up to 2^bits).
struct GptqGrid {
  int bits = 4;
  int64_t in = 0, out = 0, group = 128;
  std::vector<uint8_t> codes;   // [out][in]
  std::vector<int32_t> zeros;   // [n_groups][out]
  std::vector<float> scales;    // [n_groups][out], the fp16 values
  std::vector<int32_t> g_idx;   // [in]
  bool contiguous_groups() const;  // g_idx[i] == i / group for every i
  void dequantize(float* out) const;  // [out][in] in fp32: scale * (code - zero)
};

GptqGrid unpack_gptq(const GptqPacked& p, GptqZeros v);
// Our grid as a GPTQ checkpoint stores it: integer zeros, scales rounded to fp16, g_idx = the
// grid's (i / group unless it carries one).
// Throws naming `name` when the grid has no integer zeros, when a dimension does not split into
// 32-bit words, or when v1 would need a zero of 0 (AutoGPTQ's zero - 1 cannot hold it).
GptqPacked pack_gptq(const QuantWeight& q, GptqZeros v, const std::string& name);
// The checkpoint's grid as our QuantWeight (group = GPTQ's group, mins = -zero * scale, g_idx kept
// when it is not i / group), when its zeros are within the code range (v1 can say 2^bits); else nullopt.
std::optional<QuantWeight> gptq_to_quant_weight(const GptqGrid& g, bool sym);

}  // namespace quant
