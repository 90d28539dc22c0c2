// Storage types of tensor data: ggml's numbering, so a GGUF type id is a TType value.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace quant {

enum class TType : uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  IQ4_NL = 20,
  IQ4_XS = 23,
  I32 = 26,   // integer tensors of checkpoints (GPTQ's packed words); never a weight type
  BF16 = 30,
};

struct TTypeTraits {
  TType type;
  std::string_view name;
  int64_t block;       // elements per block along a row (1 for float types)
  int64_t block_bytes; // bytes per block
};

inline constexpr std::array<TTypeTraits, 16> kTTypes{{
    {TType::F32, "F32", 1, 4},
    {TType::F16, "F16", 1, 2},
    {TType::Q4_0, "Q4_0", 32, 18},
    {TType::Q4_1, "Q4_1", 32, 20},
    {TType::Q5_0, "Q5_0", 32, 22},
    {TType::Q5_1, "Q5_1", 32, 24},
    {TType::Q8_0, "Q8_0", 32, 34},
    {TType::Q2_K, "Q2_K", 256, 84},
    {TType::Q3_K, "Q3_K", 256, 110},
    {TType::Q4_K, "Q4_K", 256, 144},
    {TType::Q5_K, "Q5_K", 256, 176},
    {TType::Q6_K, "Q6_K", 256, 210},
    {TType::IQ4_NL, "IQ4_NL", 32, 18},
    {TType::IQ4_XS, "IQ4_XS", 256, 136},
    {TType::BF16, "BF16", 1, 2},
    {TType::I32, "I32", 1, 4},
}};

// nullptr for an id we do not support (e.g. a K-quant in a foreign GGUF).
const TTypeTraits* ttype_traits(uint32_t id);
const TTypeTraits& traits(TType t);
std::optional<TType> ttype_from_name(std::string_view name);
inline std::string_view ttype_name(TType t) { return traits(t).name; }
inline bool is_quantized(TType t) { return traits(t).block > 1; }

// Bytes of one row of n elements; n must be a multiple of the block.
int64_t row_bytes(TType t, int64_t n);
// Bits per weight of the stored type (scales included): Q4_0 = 4.5.
double type_bpw(TType t);

// Converts one row of n elements of type t to fp32. n must be a multiple of the block.
void dequantize_row(TType t, const void* src, float* dst, int64_t n);

}  // namespace quant
