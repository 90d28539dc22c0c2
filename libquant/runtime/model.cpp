// Config validation, the canonical tensor layout of a Llama, and WeightStore helpers.
#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>
#include <set>

#include "quant/error.h"
#include "quant/model.h"

namespace quant {

const char* arch_hf_name(Arch a) {
  switch (a) {
    case Arch::Llama: return "LlamaForCausalLM";
    case Arch::Mistral: return "MistralForCausalLM";
    case Arch::Qwen2: return "Qwen2ForCausalLM";
  }
  return "?";
}

void LlamaConfig::set_llama3_rope_scaling(float factor, float low, float high, int64_t original) {
  const int64_t half = head_dim() / 2;
  const double low_wavelen = static_cast<double>(original) / low, high_wavelen = static_cast<double>(original) / high;
  rope_freq_factors.assign(static_cast<size_t>(half), 1.0f);
  for (int64_t i = 0; i < half; ++i) {
    const double inv_freq = 1.0 / std::pow(static_cast<double>(rope_theta), 2.0 * static_cast<double>(i) / static_cast<double>(head_dim()));
    const double wavelen = 2.0 * M_PI / inv_freq;
    double f = 1.0;
    if (wavelen > low_wavelen) {
      f = factor;
    } else if (wavelen >= high_wavelen) {
      const double smooth = (static_cast<double>(original) / wavelen - low) / (high - low);
      f = 1.0 / ((1.0 - smooth) / factor + smooth);
    }
    rope_freq_factors[static_cast<size_t>(i)] = static_cast<float>(f);
  }
}

void LlamaConfig::validate(std::string_view src) const {
  auto positive = [&](int64_t v, const char* field) {
    QUANT_CHECK(v > 0, "{}: {} must be positive (got {})", src, field, v);
  };
  positive(dim, "hidden_size");
  positive(hidden, "intermediate_size");
  positive(n_layers, "num_hidden_layers");
  positive(n_heads, "num_attention_heads");
  positive(n_kv_heads, "num_key_value_heads");
  positive(vocab, "vocab_size");
  positive(max_ctx, "max_position_embeddings");
  QUANT_CHECK(dim % n_heads == 0, "{}: hidden_size {} is not a multiple of num_attention_heads {}",
              src, dim, n_heads);
  QUANT_CHECK(head_dim() % 2 == 0, "{}: head dimension {} is odd (RoPE needs pairs)", src, head_dim());
  QUANT_CHECK(n_heads % n_kv_heads == 0,
              "{}: num_attention_heads {} is not a multiple of num_key_value_heads {}", src, n_heads,
              n_kv_heads);
  QUANT_CHECK(norm_eps > 0 && norm_eps < 1, "{}: rms_norm_eps {} out of range", src, norm_eps);
  QUANT_CHECK(rope_theta > 1, "{}: rope_theta {} out of range", src, rope_theta);
  QUANT_CHECK(rope_freq_factors.empty() || static_cast<int64_t>(rope_freq_factors.size()) == head_dim() / 2,
              "{}: {} RoPE frequency factors for a head dimension of {}", src, rope_freq_factors.size(), head_dim());
  for (float f : rope_freq_factors)
    QUANT_CHECK(std::isfinite(f) && f > 0, "{}: RoPE frequency factor {} is not positive", src, f);
  QUANT_CHECK(sliding_window >= 0, "{}: sliding_window {} is negative", src, sliding_window);
  QUANT_CHECK(bos_id >= 0 && bos_id < vocab, "{}: bos_token_id {} outside vocab_size {}", src, bos_id, vocab);
}

std::vector<TensorDesc> llama_tensor_layout(const LlamaConfig& c) {
  std::vector<TensorDesc> t;
  auto add = [&](std::string name, int64_t rows, int64_t cols, int n_dims = 2) {
    t.push_back({std::move(name), rows, cols, n_dims, TType::F32});
  };
  add("token_embd.weight", c.vocab, c.dim);
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    add(b + "attn_norm.weight", 1, c.dim, 1);
    add(b + "attn_q.weight", c.dim, c.dim);
    add(b + "attn_k.weight", c.kv_dim(), c.dim);
    add(b + "attn_v.weight", c.kv_dim(), c.dim);
    if (c.qkv_bias) {
      add(b + "attn_q.bias", 1, c.dim, 1);
      add(b + "attn_k.bias", 1, c.kv_dim(), 1);
      add(b + "attn_v.bias", 1, c.kv_dim(), 1);
    }
    add(b + "attn_output.weight", c.dim, c.dim);
    add(b + "ffn_norm.weight", 1, c.dim, 1);
    add(b + "ffn_gate.weight", c.hidden, c.dim);
    add(b + "ffn_up.weight", c.hidden, c.dim);
    add(b + "ffn_down.weight", c.dim, c.hidden);
  }
  add("output_norm.weight", 1, c.dim, 1);
  if (!c.tied_embeddings) add("output.weight", c.vocab, c.dim);
  return t;
}

const TensorDesc* WeightStore::find(std::string_view name) const {
  for (const auto& t : tensors())
    if (t.name == name) return &t;
  return nullptr;
}

const TensorDesc& WeightStore::get(std::string_view name) const {
  const TensorDesc* t = find(name);
  if (!t) fail("{}: tensor {} is missing", source(), name);
  return *t;
}

std::vector<float> WeightStore::read_f32(std::string_view name) const {
  const TensorDesc& t = get(name);
  std::vector<float> out(static_cast<size_t>(t.numel()));
  read_f32(t, out.data());
  for (size_t i = 0; i < out.size(); ++i)
    QUANT_CHECK(std::isfinite(out[i]), "{}: tensor {} has a value that is not finite ({}) at index {} (row {}, column {})", source(),
                name, out[i], i, static_cast<int64_t>(i) / t.cols, static_cast<int64_t>(i) % t.cols);
  return out;
}

void check_tensors_match(const LlamaConfig& cfg, const WeightStore& store) {
  // The layer count against the blocks present first: the expected layout below grows with the
  // config's claim, which a hostile header can make astronomically large.
  int64_t blocks = 0;
  for (const auto& t : store.tensors()) {
    if (t.name.rfind("blk.", 0) != 0) continue;
    int64_t idx = -1;
    const char* b = t.name.data() + 4;
    const auto [end, ec] = std::from_chars(b, t.name.data() + t.name.size(), idx);
    if (ec == std::errc() && *end == '.' && idx >= 0) blocks = std::max(blocks, idx + 1);
  }
  QUANT_CHECK(cfg.n_layers == blocks, "{}: the config has {} layers but the weights hold {} blocks", store.source(), cfg.n_layers,
              blocks);
  std::set<std::string> expected;
  for (const auto& want : llama_tensor_layout(cfg)) {
    expected.insert(want.name);
    const TensorDesc* have = store.find(want.name);
    QUANT_CHECK(have, "{}: tensor {} is missing", store.source(), want.name);
    QUANT_CHECK(have->numel() == want.numel() && (want.n_dims == 1 || (have->rows == want.rows && have->cols == want.cols)),
                "{}: tensor {} has shape [{}, {}], the config implies [{}, {}]", store.source(),
                want.name, have->rows, have->cols, want.rows, want.cols);
  }
  for (const auto& t : store.tensors())
    QUANT_CHECK(expected.count(t.name), "{}: unexpected tensor {} for this config", store.source(), t.name);
}

void permute_rope_row_bytes(const uint8_t* in, uint8_t* out, int64_t n_head, int64_t rows, int64_t row_bytes,
                            bool to_interleaved) {
  QUANT_CHECK(rows % n_head == 0 && (rows / n_head) % 2 == 0,
              "RoPE permutation: {} rows do not split into {} heads of even size", rows, n_head);
  const int64_t hd = rows / n_head, half = hd / 2;
  for (int64_t h = 0; h < n_head; ++h)
    for (int64_t i = 0; i < half; ++i)
      for (int64_t j = 0; j < 2; ++j) {
        const int64_t inter = h * hd + 2 * i + j, rot = h * hd + j * half + i;
        const int64_t dst = to_interleaved ? inter : rot, src = to_interleaved ? rot : inter;
        std::memcpy(out + dst * row_bytes, in + src * row_bytes, static_cast<size_t>(row_bytes));
      }
}

void permute_rope_rows(const float* in, float* out, int64_t n_head, int64_t rows, int64_t cols,
                       bool to_interleaved) {
  permute_rope_row_bytes(reinterpret_cast<const uint8_t*>(in), reinterpret_cast<uint8_t*>(out), n_head, rows,
                         cols * static_cast<int64_t>(sizeof(float)), to_interleaved);
}
OverlayStore::OverlayStore(const WeightStore& base) : base_(base), descs_(base.tensors()) {}

void OverlayStore::set(const std::string& name, std::vector<float> w) {
  for (auto& d : descs_)
    if (d.name == name) {
      QUANT_CHECK(static_cast<int64_t>(w.size()) == d.numel(), "overlay {}: {} values for {} elements", name, w.size(), d.numel());
      d.type = TType::F32;
      over_[name] = std::move(w);
      return;
    }
  fail("overlay: {} has no tensor {}", base_.source(), name);
}

void OverlayStore::read_f32(const TensorDesc& t, float* out) const {
  if (auto it = over_.find(t.name); it != over_.end()) {
    std::copy(it->second.begin(), it->second.end(), out);
    return;
  }
  base_.read_f32(base_.get(t.name), out);
}

bool OverlayStore::read_grid(const TensorDesc& t, QuantWeight& out) const {
  if (over_.count(t.name)) return false;
  return base_.read_grid(base_.get(t.name), out);
}

bool OverlayStore::stored(const TensorDesc& t, StoredMatrix& out) const {
  if (over_.count(t.name)) return false;
  return base_.stored(base_.get(t.name), out);
}

}  // namespace quant
