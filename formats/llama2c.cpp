// llama2.c checkpoints (run.c's legacy format) and tokenizer.bin.
#include <filesystem>

#include "quant/formats/loader.h"
#include "quant/formats/mmap.h"

namespace quant {

namespace fs = std::filesystem;

namespace {

// run.c: Config {dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len}; a negative
// vocab_size means the classifier (wcls) is stored after the weights instead of shared.
struct Llama2cHeader {
  int32_t dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len;
};
static_assert(sizeof(Llama2cHeader) == 28);

class Llama2cStore final : public WeightStore {
 public:
  Llama2cStore(std::shared_ptr<MappedFile> file, const LlamaConfig& c, bool shared) : file_(std::move(file)), cfg_(c) {
    const int64_t L = c.n_layers, D = c.dim, H = c.hidden, KV = c.kv_dim(), hd = c.head_dim();
    uint64_t off = sizeof(Llama2cHeader);
    // Stacked per-layer arrays in run.c's order; `layer_name` names slice l.
    auto add = [&](const std::string& name, int64_t rows, int64_t cols, int n_dims) {
      descs_.push_back({name, rows, cols, n_dims, TType::F32});
      offsets_.push_back(off);
      off += static_cast<uint64_t>(rows * cols) * 4;
    };
    auto stacked = [&](const std::string& kind, int64_t rows, int64_t cols, int n_dims) {
      for (int64_t l = 0; l < L; ++l) add("blk." + std::to_string(l) + "." + kind, rows, cols, n_dims);
    };
    add("token_embd.weight", c.vocab, D, 2);
    stacked("attn_norm.weight", 1, D, 1);
    stacked("attn_q.weight", D, D, 2);
    stacked("attn_k.weight", KV, D, 2);
    stacked("attn_v.weight", KV, D, 2);
    stacked("attn_output.weight", D, D, 2);
    stacked("ffn_norm.weight", 1, D, 1);
    stacked("ffn_gate.weight", H, D, 2);  // w1
    stacked("ffn_down.weight", D, H, 2);  // w2
    stacked("ffn_up.weight", H, D, 2);    // w3
    add("output_norm.weight", 1, D, 1);
    off += static_cast<uint64_t>(c.max_ctx * hd) * 4;  // freq_cis_real + freq_cis_imag (unused)
    if (!shared) add("output.weight", c.vocab, D, 2);
    QUANT_CHECK(off == file_->size(), "{}: header implies {} bytes of weights but the file has {}", file_->path(), off,
                file_->size());
  }
  const std::vector<TensorDesc>& tensors() const override { return descs_; }
  std::string source() const override { return file_->path(); }
  void read_f32(const TensorDesc& t, float* out) const override {
    const size_t i = static_cast<size_t>(&t - descs_.data());
    QUANT_CHECK(i < descs_.size(), "{}: foreign tensor descriptor {}", source(), t.name);
    const float* src = reinterpret_cast<const float*>(file_->data() + offsets_[i]);
    const bool q = t.name.ends_with("attn_q.weight"), k = t.name.ends_with("attn_k.weight");
    if (q || k) {  // Meta's interleaved RoPE pairs -> rotate-half
      std::vector<float> tmp(src, src + t.numel());
      permute_rope_rows(tmp.data(), out, q ? cfg_.n_heads : cfg_.n_kv_heads, t.rows, t.cols, false);
    } else {
      std::memcpy(out, src, static_cast<size_t>(t.numel()) * 4);
    }
  }

 private:
  std::shared_ptr<MappedFile> file_;
  LlamaConfig cfg_;
  std::vector<TensorDesc> descs_;
  std::vector<uint64_t> offsets_;
};

}  // namespace

Vocab read_llama2c_tokenizer(const std::string& path, int64_t vocab_size) {
  MappedFile f(path);
  ByteCursor cur(f.data(), f.size(), path);
  const int32_t max_len = cur.read<int32_t>("max_token_length");
  QUANT_CHECK(max_len > 0 && max_len < 4096, "{}: max_token_length {} out of range", path, max_len);
  Vocab v;
  for (int64_t i = 0; i < vocab_size; ++i) {
    v.scores.push_back(cur.read<float>("score"));
    const int32_t len = cur.read<int32_t>("piece length");
    QUANT_CHECK(len >= 0 && len <= max_len, "{}: piece {} has length {} (max_token_length {})", path, i, len, max_len);
    std::string p(cur.bytes(static_cast<uint64_t>(len), "piece"));
    TokenType t = TokenType::Normal;
    if (i == 0) {
      t = TokenType::Unknown;
    } else if (i == 1 || i == 2) {  // llama2.c exports BOS/EOS as "\n<s>\n" / "\n</s>\n"
      t = TokenType::Control;
      p = i == 1 ? "<s>" : "</s>";
    } else if (p.size() == 6 && p.rfind("<0x", 0) == 0 && p[5] == '>') {
      t = TokenType::Byte;
    }
    std::string sp;  // back to SentencePiece's escaped space
    for (char ch : p) sp += ch == ' ' ? std::string("\xE2\x96\x81") : std::string(1, ch);
    v.pieces.push_back(std::move(sp));
    v.types.push_back(t);
  }
  QUANT_CHECK(cur.left() == 0, "{}: {} bytes left after {} pieces: vocabulary size mismatch", path, cur.left(),
              vocab_size);
  v.validate(path);
  return v;
}

LoadedModel load_llama2c(const std::string& path, const std::string& tokenizer_path) {
  auto file = std::make_shared<MappedFile>(path);
  ByteCursor cur(file->data(), file->size(), path);
  const auto h = cur.read<Llama2cHeader>("llama2.c header");
  auto in_range = [&](int64_t v, int64_t hi, const char* field) {
    QUANT_CHECK(v > 0 && v <= hi, "{}: header field {} = {} out of range", path, field, v);
  };
  in_range(h.dim, 1 << 16, "dim");
  in_range(h.hidden_dim, 1 << 18, "hidden_dim");
  in_range(h.n_layers, 1024, "n_layers");
  in_range(h.n_heads, 1024, "n_heads");
  in_range(h.n_kv_heads, 1024, "n_kv_heads");
  in_range(std::abs(static_cast<int64_t>(h.vocab_size)), 1 << 20, "vocab_size");
  in_range(h.seq_len, 1 << 20, "seq_len");
  LoadedModel m;
  m.path = path;
  m.format = "llama2c";
  LlamaConfig& c = m.config;
  c.dim = h.dim;
  c.hidden = h.hidden_dim;
  c.n_layers = h.n_layers;
  c.n_heads = h.n_heads;
  c.n_kv_heads = h.n_kv_heads;
  c.vocab = std::abs(h.vocab_size);
  c.max_ctx = h.seq_len;
  c.norm_eps = 1e-5f;  // run.c's rmsnorm constant
  c.rope_theta = 10000.0f;
  c.tied_embeddings = h.vocab_size > 0;
  c.validate(path);
  m.weights = std::make_unique<Llama2cStore>(file, c, c.tied_embeddings);
  check_tensors_match(c, *m.weights);

  std::string tok = tokenizer_path;
  if (tok.empty()) {
    const fs::path dir = fs::path(path).parent_path();
    for (const auto& cand : {dir / "tokenizer.bin", dir / ("tok" + std::to_string(c.vocab) + ".bin")})
      if (fs::exists(cand)) {
        tok = cand.string();
        break;
      }
    QUANT_CHECK(!tok.empty(), "{}: no tokenizer.bin or tok{}.bin beside it; pass --tokenizer", path, c.vocab);
  }
  m.tokenizer = std::make_unique<SpmTokenizer>(read_llama2c_tokenizer(tok, c.vocab));
  m.info["source"] = path;
  m.info["tokenizer"] = tok;
  return m;
}

}  // namespace quant
