// Tokenizers: an interface; the SentencePiece-BPE algorithm of llama.cpp (llm_tokenizer_spm) over a
// plain vocabulary, which serves GGUF files and llama2.c tokenizer.bin alike; and byte-level BPE
// (llm_tokenizer_bpe: GPT-2, Llama 3, Qwen2, ...) with llama.cpp's pre-tokenizer of each family.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace quant {

// GGUF's tokenizer.ggml.token_type values (SentencePiece piece types).
enum class TokenType : int32_t { Normal = 1, Unknown = 2, Control = 3, UserDefined = 4, Unused = 5, Byte = 6 };

// Which algorithm a vocabulary is for; GGUF's tokenizer.ggml.model "llama" or "gpt2".
enum class VocabModel { Spm, Bpe };

struct Vocab {
  VocabModel model = VocabModel::Spm;
  // Spm: SentencePiece form ("▁the", "<0x0A>", "<s>"). Bpe: byte-level form, each byte a
  // printable character (GPT-2's bytes_to_unicode: "Ġthe" for " the"); special tokens raw.
  std::vector<std::string> pieces;
  std::vector<float> scores;
  std::vector<TokenType> types;
  int32_t bos = 1, eos = 2, unk = 0;
  bool add_bos = true;
  bool add_space_prefix = true;
  std::vector<std::string> merges;  // Bpe: "left right" pairs, by rank (first merges first)
  std::string pre;                  // Bpe: llama.cpp's pre-tokenizer name (tokenizer.ggml.pre)
  int32_t size() const { return static_cast<int32_t>(pieces.size()); }
  void validate(std::string_view source) const;
};

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual std::vector<int32_t> encode(std::string_view text, bool add_bos) const = 0;
  virtual const Vocab& vocab() const = 0;
  // The bytes of `tok` following `prev` (control tokens print nothing). Spm: "▁" -> " ", byte
  // tokens -> the byte, and the leading space after BOS dropped (as llama2.c prints it).
  virtual std::string decode(int32_t prev, int32_t tok) const = 0;
  int32_t size() const { return vocab().size(); }
};

// SentencePiece's decoding of one token (SpmTokenizer::decode), for other SPM implementations.
std::string spm_decode(const Vocab& v, int32_t prev, int32_t tok);

class SpmTokenizer final : public Tokenizer {
 public:
  explicit SpmTokenizer(Vocab vocab);
  std::vector<int32_t> encode(std::string_view text, bool add_bos) const override;
  const Vocab& vocab() const override { return vocab_; }
  std::string decode(int32_t prev, int32_t tok) const override;

 private:
  int32_t byte_token(uint8_t b) const;
  Vocab vocab_;
  std::unordered_map<std::string, int32_t> index_;
  int32_t byte_ids_[256];
};

// A byte-level BPE pre-tokenizer as llama.cpp runs it: the text is split by each regex in turn
// (every match and every run between matches becomes a fragment, and the next regex splits each
// fragment on its own), then BPE merges within each fragment.
struct PreTokenizer {
  const char* name;                  // tokenizer.ggml.pre
  std::vector<const char*> regexes;  // llama.cpp's (PCRE syntax)
  bool ignore_merges;                // a fragment that is a whole token is not merged (Llama 3)
  const char* hf_pattern;            // the Split regex of tokenizer.json that names this family; "" if none
};
const std::vector<PreTokenizer>& pre_tokenizers();
const PreTokenizer* find_pre_tokenizer(std::string_view name);
std::string pre_tokenizer_names();  // "gpt-2, llama-bpe, ..." for errors

class BpeTokenizer final : public Tokenizer {
 public:
  explicit BpeTokenizer(Vocab vocab);
  ~BpeTokenizer() override;
  // Plain text: user-defined tokens are matched, control tokens ("<|endoftext|>") are not.
  std::vector<int32_t> encode(std::string_view text, bool add_bos) const override;
  // parse_special also matches control tokens in the text, as llama.cpp's parse_special does.
  std::vector<int32_t> encode(std::string_view text, bool add_bos, bool parse_special) const;
  const Vocab& vocab() const override { return vocab_; }
  std::string decode(int32_t prev, int32_t tok) const override;
  // The fragments the pre-tokenizer cuts plain text into (before the byte mapping and merges).
  std::vector<std::string> pre_tokenize(std::string_view text) const;

 private:
  struct Regexes;
  void encode_fragment(std::string_view text, std::vector<int32_t>& out) const;
  void bpe_word(const std::string& word, std::vector<int32_t>& out) const;
  int32_t rank(const std::string& left, const std::string& right) const;
  Vocab vocab_;
  const PreTokenizer* pre_;
  std::unique_ptr<Regexes> regexes_;
  std::unordered_map<std::string, int32_t> index_;
  std::unordered_map<std::string, int32_t> ranks_;  // "left right" -> rank
  std::vector<int32_t> specials_;                   // control and user-defined tokens, longest first
};

// The tokenizer a vocabulary is for.
std::unique_ptr<Tokenizer> make_tokenizer(Vocab vocab);

}  // namespace quant
