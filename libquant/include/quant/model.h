// A Llama-family model as the runtime and the quantizers see it: config + lazy weights.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "quant/qtype.h"
#include "quant/quant_weight.h"

namespace quant {

// The decoder families we run: one Llama block (RMSNorm, GQA attention with RoPE, SwiGLU) with
// these differences. GGUF names Llama and Mistral "llama" (q/k rows in ggml's interleaved RoPE
// order) and Qwen2 "qwen2" (NeoX RoPE: rows as Hugging Face has them).
enum class Arch { Llama, Mistral, Qwen2 };
const char* arch_hf_name(Arch a);  // LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM

struct LlamaConfig {
  Arch arch = Arch::Llama;
  int64_t dim = 0;         // hidden_size
  int64_t hidden = 0;      // intermediate_size of the SwiGLU MLP
  int64_t n_layers = 0;    // num_hidden_layers
  int64_t n_heads = 0;     // num_attention_heads
  int64_t n_kv_heads = 0;  // num_key_value_heads (GQA when < n_heads)
  int64_t vocab = 0;       // vocab_size
  int64_t max_ctx = 2048;  // max_position_embeddings
  float norm_eps = 1e-5f;  // rms_norm_eps
  float rope_theta = 10000.0f;
  // Per-frequency divisors of RoPE's inverse frequencies (head_dim/2 of them; empty = all 1):
  // Llama 3.1's rope_scaling "llama3", and what GGUF stores as rope_freqs.weight.
  std::vector<float> rope_freq_factors;
  int64_t sliding_window = 0;    // Mistral: each token sees this many (itself included); 0 = all
  bool tied_embeddings = false;  // lm_head shares token_embd
  bool qkv_bias = false;         // attention_bias: q/k/v carry a bias
  int32_t bos_id = 1, eos_id = 2;

  int64_t head_dim() const { return dim / n_heads; }
  // The "llama3" rope_scaling of Hugging Face (modeling_rope_utils, _compute_llama3_parameters)
  // as factors: 1 for wavelengths under original_max_ctx / high_freq_factor, `factor` above
  // original_max_ctx / low_freq_factor, and a smooth blend between.
  void set_llama3_rope_scaling(float factor, float low_freq_factor, float high_freq_factor, int64_t original_max_ctx);
  int64_t kv_dim() const { return head_dim() * n_kv_heads; }
  // Throws naming `source` and the field when the numbers cannot describe a Llama.
  void validate(std::string_view source) const;
};

// One tensor in canonical form. Names are GGUF's (token_embd.weight, blk.3.attn_q.weight,
// output_norm.weight); data is [rows][cols] row-major with cols the input dimension (ggml's
// ne[0]); attn_q/attn_k rows are in Hugging Face's rotate-half order whatever the file holds.
struct TensorDesc {
  std::string name;
  int64_t rows = 1, cols = 0;
  int n_dims = 2;
  TType type = TType::F32;  // as stored in the file
  int64_t numel() const { return rows * cols; }
};

// The tensors a Llama with this config has (type left F32), in GGUF order.
std::vector<TensorDesc> llama_tensor_layout(const LlamaConfig& cfg);

// A matrix as its file stores it: n rows of k columns of `type`, row r (canonical order) at
// data + row_map[r]·row_bytes (row_map empty: row r). The bytes are the file's mapping; they
// live as long as the store.
struct StoredMatrix {
  TType type = TType::F32;
  int64_t n = 0, k = 0;
  const uint8_t* data = nullptr;
  int64_t row_bytes = 0;
  std::vector<int32_t> row_map;
  const uint8_t* row(int64_t r) const { return data + (row_map.empty() ? r : row_map[static_cast<size_t>(r)]) * row_bytes; }
};

// Lazily read weights. Readers memory-map files and convert one tensor per call.
class WeightStore {
 public:
  virtual ~WeightStore() = default;
  virtual const std::vector<TensorDesc>& tensors() const = 0;
  // Converts a tensor to fp32 [rows][cols] in canonical layout. out holds numel() floats.
  virtual void read_f32(const TensorDesc& t, float* out) const = 0;
  virtual std::string source() const = 0;
  // The exact integer grid a quantized tensor is stored as (canonical row order), for the
  // integer kernels; false for float tensors or stores that do not keep codes.
  virtual bool read_grid(const TensorDesc& t, QuantWeight& out) const { return false; }
  // The stored bytes of a 2-D tensor, for kernels that read them in place; false where the
  // store converts (or replaced) them.
  virtual bool stored(const TensorDesc& t, StoredMatrix& out) const { return false; }

  const TensorDesc* find(std::string_view name) const;
  const TensorDesc& get(std::string_view name) const;  // throws naming the missing tensor
  std::vector<float> read_f32(std::string_view name) const;
};

// A store whose tensors are `base`'s except those replaced (e.g. norms and weights with
// AWQ / SmoothQuant scales folded in). Replaced tensors read as F32 and have no stored grid.
class OverlayStore final : public WeightStore {
 public:
  explicit OverlayStore(const WeightStore& base);
  void set(const std::string& name, std::vector<float> w);  // shape must match the base's
  bool replaced(const std::string& name) const { return over_.count(name) > 0; }
  const std::vector<TensorDesc>& tensors() const override { return descs_; }
  using WeightStore::read_f32;
  void read_f32(const TensorDesc& t, float* out) const override;
  bool read_grid(const TensorDesc& t, QuantWeight& out) const override;
  bool stored(const TensorDesc& t, StoredMatrix& out) const override;
  std::string source() const override { return base_.source(); }

 private:
  const WeightStore& base_;
  std::vector<TensorDesc> descs_;
  std::map<std::string, std::vector<float>> over_;
};

// Checks that `store` holds exactly the tensors `cfg` implies, with matching shapes.
void check_tensors_match(const LlamaConfig& cfg, const WeightStore& store);

// Row permutation between rotate-half (Hugging Face) and interleaved-pair (Meta, ggml) RoPE
// layouts of attn_q / attn_k. to_interleaved: out[h*hd + 2i + j] = in[h*hd + j*hd/2 + i].
void permute_rope_rows(const float* in, float* out, int64_t n_head, int64_t rows, int64_t cols,
                       bool to_interleaved);
// The same permutation over rows of `row_bytes` bytes (packed quantized rows move whole).
void permute_rope_row_bytes(const uint8_t* in, uint8_t* out, int64_t n_head, int64_t rows, int64_t row_bytes,
                            bool to_interleaved);

}  // namespace quant
