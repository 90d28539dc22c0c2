// GPTQ (Frantar et al. 2022): quantize W column by column, pushing each column's rounding error
// onto the columns not yet quantized through the inverse Hessian of the layer's inputs.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "quant/quant_weight.h"

namespace quant {

struct GptqOptions {
  GridSpec grid;
  int64_t block = 128;       // lazy-batch width (columns)
  double damp = 0.01;        // lambda = damp * mean(diag H)
  double damp_step = 0.01;   // added on each failed Cholesky (GPTQModel's auto-increment)
  double damp_max = 1.0;
  bool act_order = false;    // columns in decreasing diag(H); implies static groups
  // Fit every group's grid up front on the original weights (default). false: gptq.py's rule,
  // fit when the group's first column is reached, on the error-updated weights; measured on
  // random correlated layers that loses to RTN at 2 bits (docs/algorithms.md).
  bool static_groups = true;
  // A super-block type (Q2_K .. Q6_K, IQ4_NL, IQ4_XS): GPTQ onto its grid instead of `grid`.
  // Each super-block's scales are fitted by ggml's importance-weighted quantizer on the weights
  // as the sweep reaches it (act-order: up front, static), the columns are then quantized onto
  // that stored grid and their error propagated; the blocks hold exactly those codes.
  TType ktype = TType::F32;
  const float* importance = nullptr;  // per input column for the fits (an imatrix); null: diag(H)
};

struct GptqResult {
  QuantWeight q;             // natural column order, group = column / group_size (k-grids: their blocks too)
  double loss = 0;           // sum over columns of (w - q)^2 / Hinv_jj^2, halved as gptq.py reports it
  double damp_used = 0;      // the damping that succeeded
  int retries = 0;           // Cholesky failures before it
  int64_t dead_columns = 0;  // inputs with diag(H) = 0
  double seconds = 0;
  double gemm_gflops = 0;    // rate of the trailing-update GEMMs
};

// w: [rows][cols] row-major fp32; h: [cols][cols] (H = 2 X X^T / n, symmetric), fp32 or promoted.
// Throws naming `name` when H stays indefinite up to damp_max.
GptqResult gptq_quantize(const float* w, int64_t rows, int64_t cols, const std::vector<double>& h,
                         const GptqOptions& opts, const std::string& name);
// The same from an fp32 H (what the solve computes in): 4 k^2 bytes less than the double one.
GptqResult gptq_quantize(const float* w, int64_t rows, int64_t cols, const std::vector<float>& h,
                         const GptqOptions& opts, const std::string& name);

// The upper-triangular U with U^T U = (H + lambda I)^-1, computed as gptq.py's
// cholesky(cholesky_inverse(cholesky(H)), upper=True) but with one Cholesky of the reversed
// matrix and one triangular inverse. Returns false when H + lambda I is not positive definite.
bool inverse_cholesky_upper(std::vector<float>& h, int64_t n);

}  // namespace quant
