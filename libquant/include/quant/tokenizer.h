// Tokenizers: an interface, and the SentencePiece-BPE algorithm of llama.cpp (llm_tokenizer_spm)
// over a plain vocabulary, which serves GGUF files and llama2.c tokenizer.bin alike.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace quant {

// GGUF's tokenizer.ggml.token_type values (SentencePiece piece types).
enum class TokenType : int32_t { Normal = 1, Unknown = 2, Control = 3, UserDefined = 4, Unused = 5, Byte = 6 };

struct Vocab {
  std::vector<std::string> pieces;  // SentencePiece form: "▁the", "<0x0A>", "<s>"
  std::vector<float> scores;
  std::vector<TokenType> types;
  int32_t bos = 1, eos = 2, unk = 0;
  bool add_bos = true;
  bool add_space_prefix = true;
  int32_t size() const { return static_cast<int32_t>(pieces.size()); }
  void validate(std::string_view source) const;
};

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual std::vector<int32_t> encode(std::string_view text, bool add_bos) const = 0;
  virtual const Vocab& vocab() const = 0;
  // Text of `tok` following `prev`: "▁" -> " ", byte tokens -> the byte, and the leading
  // space after BOS dropped (as llama2.c prints it).
  std::string decode(int32_t prev, int32_t tok) const;
  int32_t size() const { return vocab().size(); }
};

class SpmTokenizer final : public Tokenizer {
 public:
  explicit SpmTokenizer(Vocab vocab);
  std::vector<int32_t> encode(std::string_view text, bool add_bos) const override;
  const Vocab& vocab() const override { return vocab_; }

 private:
  int32_t byte_token(uint8_t b) const;
  Vocab vocab_;
  std::unordered_map<std::string, int32_t> index_;
  int32_t byte_ids_[256];
};

}  // namespace quant
