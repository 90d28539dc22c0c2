// Llama <-> GGUF: metadata keys and tensor layout as llama.cpp expects them.
#include "quant/formats/gguf_model.h"

#include <nlohmann/json.hpp>

#include "quant/formats/gguf.h"
#include "quant/kquants.h"
#include "quant/presets.h"

namespace quant {

namespace {

// Whether `name` is an attn_q / attn_k tensor whose rows GGUF holds in ggml's interleaved RoPE
// order: so for "llama" (Llama, Mistral); "qwen2" runs NeoX RoPE on Hugging Face's own rows.
bool is_q_or_k(const LlamaConfig& c, const std::string& name, bool* is_q) {
  if (c.arch == Arch::Qwen2) return false;
  const bool q = name.find(".attn_q.") != std::string::npos, k = name.find(".attn_k.") != std::string::npos;
  *is_q = q;
  return q || k;
}

const char* gguf_arch(const LlamaConfig& c) { return c.arch == Arch::Qwen2 ? "qwen2" : "llama"; }

constexpr const char* kRopeFreqs = "rope_freqs.weight";  // llama.cpp's per-frequency RoPE divisors

// Permutes attn_q / attn_k (weights, or biases: one element per row) between rotate-half and
// ggml's interleaved pairs; false (nothing written) for any other tensor.
bool permute_qk(const TensorDesc& t, const LlamaConfig& c, const float* in, float* out, bool to_interleaved) {
  bool q = false;
  if (!is_q_or_k(c, t.name, &q)) return false;
  const int64_t rows = t.n_dims == 1 ? t.cols : t.rows, width = t.n_dims == 1 ? 1 : t.cols;
  permute_rope_rows(in, out, q ? c.n_heads : c.n_kv_heads, rows, width, to_interleaved);
  return true;
}

class GgufStore final : public WeightStore {
 public:
  GgufStore(std::shared_ptr<GgufFile> f, const LlamaConfig& c) : f_(std::move(f)), cfg_(c) {
    const auto& ts = f_->tensors();
    for (size_t i = 0; i < ts.size(); ++i) {
      const GgufTensorInfo& t = ts[i];
      if (t.name == kRopeFreqs) continue;  // part of the config (rope_freq_factors), not a weight
      QUANT_CHECK(t.ne.size() <= 2, "{}: tensor {} has {} dims", f_->path(), t.name, t.ne.size());
      descs_.push_back({t.name, t.ne.size() == 2 ? t.ne[1] : 1, t.ne[0], static_cast<int>(t.ne.size()), t.type});
      file_index_.push_back(i);
    }
  }
  const std::vector<TensorDesc>& tensors() const override { return descs_; }
  std::string source() const override { return f_->path(); }
  void read_f32(const TensorDesc& t, float* out) const override {
    const GgufTensorInfo& g = info(t);
    const int64_t rb = row_bytes(g.type, t.cols);
    bool q = false;
    if (!is_q_or_k(cfg_, t.name, &q)) {
      for (int64_t r = 0; r < t.rows; ++r) dequantize_row(g.type, g.data + r * rb, out + r * t.cols, t.cols);
      return;
    }
    std::vector<float> tmp(static_cast<size_t>(t.numel()));  // ggml's interleaved rows -> rotate-half
    for (int64_t r = 0; r < t.rows; ++r) dequantize_row(g.type, g.data + r * rb, tmp.data() + r * t.cols, t.cols);
    permute_qk(t, cfg_, tmp.data(), out, false);
  }
  bool read_grid(const TensorDesc& t, QuantWeight& out) const override {
    const GgufTensorInfo& g = info(t);
    if (!is_quantized(g.type) || is_nonlinear(g.type) || t.n_dims != 2) return false;  // IQ4: no linear grid
    PackedTensor p{g.type, t.rows, t.cols, std::vector<uint8_t>(g.data, g.data + g.nbytes)};
    bool q = false;
    if (is_q_or_k(cfg_, t.name, &q))  // ggml's interleaved rows -> rotate-half, whole packed rows
      permute_rope_row_bytes(g.data, p.data.data(), q ? cfg_.n_heads : cfg_.n_kv_heads, t.rows, row_bytes(g.type, t.cols), false);
    out = unpack(p);
    return true;
  }

  bool stored(const TensorDesc& t, StoredMatrix& out) const override {
    const GgufTensorInfo& g = info(t);
    if (t.n_dims != 2) return false;
    out = StoredMatrix{g.type, t.rows, t.cols, g.data, row_bytes(g.type, t.cols), {}};
    bool q = false;
    if (is_q_or_k(cfg_, t.name, &q)) {  // ggml's interleaved rows: canonical row r is file row row_map[r]
      std::vector<int32_t> file_rows(static_cast<size_t>(t.rows));
      for (int64_t r = 0; r < t.rows; ++r) file_rows[static_cast<size_t>(r)] = static_cast<int32_t>(r);
      out.row_map.resize(file_rows.size());
      permute_rope_row_bytes(reinterpret_cast<const uint8_t*>(file_rows.data()), reinterpret_cast<uint8_t*>(out.row_map.data()),
                             q ? cfg_.n_heads : cfg_.n_kv_heads, t.rows, sizeof(int32_t), false);
    }
    return true;
  }

 private:
  const GgufTensorInfo& info(const TensorDesc& t) const {
    const size_t i = static_cast<size_t>(&t - descs_.data());
    QUANT_CHECK(i < descs_.size(), "{}: foreign tensor descriptor {}", source(), t.name);
    return f_->tensors()[file_index_[i]];
  }
  std::shared_ptr<GgufFile> f_;
  LlamaConfig cfg_;
  std::vector<TensorDesc> descs_;
  std::vector<size_t> file_index_;  // descs_[i] is the file's tensor file_index_[i]
};

// rope_freqs.weight, if the file has it: head_dim/2 F32 divisors.
std::vector<float> read_rope_freqs(const GgufFile& f, const LlamaConfig& c) {
  for (const auto& t : f.tensors()) {
    if (t.name != kRopeFreqs) continue;
    QUANT_CHECK(t.type == TType::F32 && t.ne.size() == 1 && t.ne[0] == c.head_dim() / 2,
                "{}: {} must be F32 [{}] (half the head dimension)", f.path(), kRopeFreqs, c.head_dim() / 2);
    std::vector<float> v(static_cast<size_t>(t.ne[0]));
    std::memcpy(v.data(), t.data, v.size() * sizeof(float));
    return v;
  }
  return {};
}

}  // namespace

Vocab read_gguf_vocab(const GgufFile& f) {
  const std::string model = f.get_str("tokenizer.ggml.model");
  QUANT_CHECK(model == "llama" || model == "gpt2", "{}: tokenizer.ggml.model = {} is not supported (llama and gpt2 are)",
              f.path(), model);
  const GgufValue* tokens = f.find("tokenizer.ggml.tokens");
  const GgufValue* scores = f.find("tokenizer.ggml.scores");
  const GgufValue* types = f.find("tokenizer.ggml.token_type");
  QUANT_CHECK(tokens && tokens->type == GgufType::ARR && tokens->elem == GgufType::STR, "{}: missing key tokenizer.ggml.tokens", f.path());
  Vocab v;
  v.model = model == "gpt2" ? VocabModel::Bpe : VocabModel::Spm;
  v.pieces = tokens->strs;
  const size_t n = v.pieces.size();
  QUANT_CHECK(!scores || scores->nums.size() == n, "{}: tokenizer.ggml.scores has {} entries for {} tokens", f.path(),
              scores ? scores->nums.size() : 0, n);
  QUANT_CHECK(!types || types->nums.size() == n, "{}: tokenizer.ggml.token_type has {} entries for {} tokens", f.path(),
              types ? types->nums.size() : 0, n);
  for (size_t i = 0; i < n; ++i) {
    v.scores.push_back(scores ? static_cast<float>(scores->nums[i]) : 0.0f);
    const int t = types ? static_cast<int>(types->nums[i]) : 1;
    QUANT_CHECK(t >= 1 && t <= 6, "{}: token {} has unknown type {}", f.path(), i, t);
    v.types.push_back(static_cast<TokenType>(t));
  }
  const bool bpe = v.model == VocabModel::Bpe;
  if (bpe) {
    const GgufValue* merges = f.find("tokenizer.ggml.merges");
    QUANT_CHECK(merges && merges->type == GgufType::ARR && merges->elem == GgufType::STR,
                "{}: missing key tokenizer.ggml.merges (a gpt2 tokenizer needs its merges)", f.path());
    v.merges = merges->strs;
    const GgufValue* pre = f.find("tokenizer.ggml.pre");
    v.pre = pre && pre->type == GgufType::STR ? pre->str : "default";  // llama.cpp's choice when absent
    QUANT_CHECK(find_pre_tokenizer(v.pre), "{}: tokenizer.ggml.pre = {} is not supported (these are: {})", f.path(),
                v.pre, pre_tokenizer_names());
  }
  // llama.cpp's defaults: SentencePiece adds BOS and a space prefix, byte-level BPE neither.
  v.bos = static_cast<int32_t>(f.get_num("tokenizer.ggml.bos_token_id", bpe ? 11 : 1));
  v.eos = static_cast<int32_t>(f.get_num("tokenizer.ggml.eos_token_id", bpe ? 11 : 2));
  v.unk = static_cast<int32_t>(f.get_num("tokenizer.ggml.unknown_token_id", 0));
  v.add_bos = f.get_num("tokenizer.ggml.add_bos_token", bpe ? 0 : 1) != 0;
  v.add_space_prefix = f.get_num("tokenizer.ggml.add_space_prefix", bpe ? 0 : 1) != 0;
  v.validate(f.path());
  return v;
}

LoadedModel load_gguf(const std::string& path) {
  auto f = std::make_shared<GgufFile>(path);
  const std::string arch = f->get_str("general.architecture");
  QUANT_CHECK(arch == "llama" || arch == "qwen2", "{}: general.architecture = {} is not supported (llama and qwen2 are)",
              path, arch);
  LoadedModel m;
  m.path = path;
  m.format = "gguf";
  LlamaConfig& c = m.config;
  c.arch = arch == "qwen2" ? Arch::Qwen2 : Arch::Llama;
  auto key = [&](const char* k) { return arch + "." + k; };
  auto as_int = [&](const char* k) { return static_cast<int64_t>(f->get_num(key(k))); };
  c.dim = as_int("embedding_length");
  c.hidden = as_int("feed_forward_length");
  c.n_layers = as_int("block_count");
  c.n_heads = as_int("attention.head_count");
  c.n_kv_heads = static_cast<int64_t>(f->get_num(key("attention.head_count_kv"), static_cast<double>(c.n_heads)));
  c.max_ctx = as_int("context_length");
  c.norm_eps = static_cast<float>(f->get_num(key("attention.layer_norm_rms_epsilon")));
  c.rope_theta = static_cast<float>(f->get_num(key("rope.freq_base"), 10000.0));
  if (f->find(key("rope.dimension_count")))
    QUANT_CHECK(as_int("rope.dimension_count") * c.n_heads == c.dim,
                "{}: {} {} is not the head dimension (partial RoPE is not supported)", path, key("rope.dimension_count"),
                as_int("rope.dimension_count"));
  QUANT_CHECK(c.n_heads > 0 && c.dim % c.n_heads == 0, "{}: {} {} does not divide {} {}", path,
              key("attention.head_count"), c.n_heads, key("embedding_length"), c.dim);
  c.rope_freq_factors = read_rope_freqs(*f, c);

  Vocab v = read_gguf_vocab(*f);
  c.vocab = v.size();
  c.bos_id = v.bos;
  c.eos_id = v.eos;
  m.tokenizer = make_tokenizer(std::move(v));

  bool has_output = false, has_bias = false;
  for (const auto& t : f->tensors()) {
    has_output = has_output || t.name == "output.weight";
    has_bias = has_bias || t.name == "blk.0.attn_q.bias";
  }
  c.tied_embeddings = !has_output;
  c.qkv_bias = has_bias;
  c.validate(path);
  m.weights = std::make_unique<GgufStore>(f, c);
  check_tensors_match(c, *m.weights);
  for (const char* k : {"general.name", "quant.method", "quant.source", "quant.target"})
    if (const GgufValue* val = f->find(k); val && val->type == GgufType::STR) m.info[k] = val->str;
  return m;
}

uint32_t gguf_file_type(const Policy& policy) {
  if (const Preset* p = find_preset(policy.preset)) return p->file_type;
  const QuantSpec& t = policy.rules.back().spec;
  // llama.cpp's llama_ftype (llama.h): ALL_F32 0, MOSTLY_F16 1, Q4_0 2, Q4_1 3, Q8_0 7, Q5_0 8, Q5_1 9, BF16 32, ...
  TType ty = t.type;
  if (t.kind == QuantSpec::Kind::Grid) ty = storage_for_grid(t.grid, 4096).type;
  switch (ty) {
    case TType::F32: return 0;
    case TType::F16: return 1;
    case TType::Q4_0: return 2;
    case TType::Q4_1: return 3;
    case TType::Q8_0: return 7;
    case TType::Q5_0: return 8;
    case TType::Q5_1: return 9;
    case TType::BF16: return 32;
    case TType::Q2_K: return 10;  // every tensor one k-type: llama.cpp's smallest preset of it
    case TType::Q3_K: return 11;  // Q3_K_S
    case TType::Q4_K: return 14;  // Q4_K_S
    case TType::Q5_K: return 16;  // Q5_K_S
    case TType::Q6_K: return 18;
    case TType::IQ4_NL: return 25;
    case TType::IQ4_XS: return 30;
    case TType::I32: break;
  }
  return 1;
}

namespace {

// Every key and tensor declaration of the file, in file order (no tensor data).
GgufWriter model_writer(const LoadedModel& model, const Policy& policy, const std::vector<TensorPlan>& plans, const GgufExportInfo& info) {
  const LlamaConfig& c = model.config;
  const Vocab& v = model.tokenizer->vocab();
  QUANT_CHECK(v.size() == c.vocab, "{}: tokenizer has {} pieces but the model's vocabulary is {}", model.path, v.size(), c.vocab);
  GgufWriter w;
  const std::string arch = gguf_arch(c);
  auto key = [&](const char* k) { return arch + "." + k; };
  w.set_str("general.architecture", arch);
  w.set_str("general.name", info.name.empty() ? "model" : info.name);
  w.set_u32("general.alignment", 32);
  w.set_u32("general.quantization_version", 2);
  const QuantSpec& target = policy.rules.back().spec;
  w.set_u32("general.file_type", gguf_file_type(policy));
  w.set_u32(key("context_length"), static_cast<uint32_t>(c.max_ctx));
  w.set_u32(key("embedding_length"), static_cast<uint32_t>(c.dim));
  w.set_u32(key("block_count"), static_cast<uint32_t>(c.n_layers));
  w.set_u32(key("feed_forward_length"), static_cast<uint32_t>(c.hidden));
  w.set_u32(key("attention.head_count"), static_cast<uint32_t>(c.n_heads));
  w.set_u32(key("attention.head_count_kv"), static_cast<uint32_t>(c.n_kv_heads));
  w.set_f32(key("rope.freq_base"), c.rope_theta);
  w.set_f32(key("attention.layer_norm_rms_epsilon"), c.norm_eps);
  w.set_u32(key("rope.dimension_count"), static_cast<uint32_t>(c.head_dim()));
  w.set_u32(key("vocab_size"), static_cast<uint32_t>(c.vocab));
  const bool bpe = v.model == VocabModel::Bpe;
  w.set_str("tokenizer.ggml.model", bpe ? "gpt2" : "llama");
  if (bpe) w.set_str("tokenizer.ggml.pre", v.pre);
  w.set_str_array("tokenizer.ggml.tokens", v.pieces);
  if (bpe)
    w.set_str_array("tokenizer.ggml.merges", v.merges);
  else
    w.set_f32_array("tokenizer.ggml.scores", v.scores);
  std::vector<int32_t> types;
  for (auto t : v.types) types.push_back(static_cast<int32_t>(t));
  w.set_i32_array("tokenizer.ggml.token_type", types);
  w.set_u32("tokenizer.ggml.bos_token_id", static_cast<uint32_t>(v.bos));
  w.set_u32("tokenizer.ggml.eos_token_id", static_cast<uint32_t>(v.eos));
  if (!bpe) w.set_u32("tokenizer.ggml.unknown_token_id", static_cast<uint32_t>(v.unk));
  w.set_bool("tokenizer.ggml.add_bos_token", v.add_bos);
  w.set_bool("tokenizer.ggml.add_eos_token", false);
  if (!bpe) w.set_bool("tokenizer.ggml.add_space_prefix", v.add_space_prefix);
  w.set_str("quant.method", info.method);
  w.set_str("quant.target", policy.preset.empty() ? target.str() : policy.preset);
  w.set_str("quant.source", model.path);
  w.set_str("quant.policy", policy.to_json().dump());
  w.set_str("quant.tensors", plans_to_json(plans).dump());
  for (const auto& [k, v] : info.extra) w.set_str("quant." + k, v);

  for (const auto& p : plans) w.add_tensor(p.name, p.rows, p.cols, p.n_dims, p.stored);
  const auto& freqs = c.rope_freq_factors;
  if (!freqs.empty()) w.add_tensor(kRopeFreqs, 1, static_cast<int64_t>(freqs.size()), 1, TType::F32);
  return w;
}

}  // namespace

uint64_t gguf_model_file_bytes(const LoadedModel& model, const Policy& policy, const std::vector<TensorPlan>& plans,
                               const GgufExportInfo& info) {
  return model_writer(model, policy, plans, info).file_bytes();
}

void write_gguf_model(const LoadedModel& model, const Policy& policy, TensorSource& src, const std::string& path,
                      const GgufExportInfo& info) {
  const std::vector<TensorPlan>& plans = src.plans();
  const LlamaConfig& c = model.config;
  const GgufWriter w = model_writer(model, policy, plans, info);
  const auto& freqs = c.rope_freq_factors;
  w.write(path, [&](size_t i) {
    if (i == plans.size()) return pack_float(freqs.data(), 1, static_cast<int64_t>(freqs.size()), TType::F32);
    const TensorPlan& p = plans[i];
    if (info.progress) info.progress(i, plans.size(), p.name);
    QuantizedTensor t = src.take(p);
    PackedTensor out = t.q ? pack(*t.q, p.stored) : pack_float(t.values.data(), p.rows, p.cols, p.stored);
    QUANT_CHECK(out.type == p.stored && out.rows == p.rows && out.cols == p.cols, "{}: quantized tensor does not match its plan", p.name);
    bool q = false;
    if (is_q_or_k(c, p.name, &q)) {  // rotate-half -> ggml's interleaved pairs, whole packed rows
      const std::vector<uint8_t> canonical = out.data;
      permute_rope_row_bytes(canonical.data(), out.data.data(), q ? c.n_heads : c.n_kv_heads, p.n_dims == 1 ? p.cols : p.rows,
                             p.n_dims == 1 ? row_bytes(p.stored, 1) : row_bytes(p.stored, p.cols), true);
    }
    return out;
  });
}

}  // namespace quant
