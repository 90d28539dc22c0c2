// llama.cpp's importance matrix files (tools/imatrix), read and written:
//   GGUF (llama.cpp since b5800, `llama-imatrix -o x.gguf`, the default): general.type "imatrix",
//     imatrix.datasets [str], imatrix.chunk_count u32, imatrix.chunk_size u32; per weight W two
//     F32 tensors "W.in_sum2" [cols, n_mat] (Σ x² of each input column over every token) and
//     "W.counts" [1, n_mat] (tokens).
//   legacy .dat (`--output-format dat`): i32 n_entries; per entry i32 len, name, i32 ncall,
//     i32 nval, f32[nval] = Σx²/tokens · ncall; then optionally i32 chunk count, i32 len, dataset.
// llama-quantize hands its quantizers Σx²/tokens per column (legacy: value/ncall); so do we.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "quant/model.h"

namespace quant {

struct ImatrixEntry {
  std::vector<double> sums;     // Σ x² per input column (dense models: one matrix)
  int64_t count = 0;            // tokens summed over
};

struct Imatrix {
  std::map<std::string, ImatrixEntry> entries;  // by weight name, "blk.0.attn_q.weight"
  std::vector<std::string> datasets;
  int32_t chunk_count = 0, chunk_size = 0;
};

// Either format, by content (a GGUF magic, else legacy). Throws naming the file and the field
// for a truncated or malformed file, a matrix of experts (n_mat > 1: not a model we read), a
// zero count, or a value that is negative, NaN or infinite.
Imatrix read_imatrix(const std::string& path);

// Atomically. `legacy`: the .dat layout (ncall = chunk_count), else GGUF.
void write_imatrix(const Imatrix& im, const std::string& path, bool legacy);

// llama-quantize's per-column importance for each weight of `tensors` the file covers:
// Σx²/count as float. Throws naming the file when an entry names no tensor of the model or its
// length is not the tensor's column count (an imatrix of another model).
std::map<std::string, std::vector<float>> imatrix_importance(const Imatrix& im, const std::vector<TensorDesc>& tensors,
                                                             const std::string& path);

}  // namespace quant
