// SentencePiece BPE as llama.cpp runs it (llm_tokenizer_spm): split into UTF-8 characters,
// merge the adjacent pair whose concatenation is a piece of highest score (leftmost on ties),
// then emit pieces; characters that are no piece become byte tokens <0xXX>.
#include "merge.h"

#include "quant/error.h"
#include "quant/tokenizer.h"

namespace quant {

namespace {
const std::string kSpace = "\xE2\x96\x81";  // U+2581, SentencePiece's escaped space

}  // namespace

void Vocab::validate(std::string_view source) const {
  QUANT_CHECK(!pieces.empty(), "{}: tokenizer has no pieces", source);
  QUANT_CHECK(scores.size() == pieces.size() && types.size() == pieces.size(),
              "{}: tokenizer has {} pieces but {} scores and {} types", source, pieces.size(),
              scores.size(), types.size());
  for (int32_t id : {bos, eos, unk})
    QUANT_CHECK(id >= 0 && id < size(), "{}: special token id {} outside vocabulary of {}", source,
                id, size());
}

std::string spm_decode(const Vocab& v, int32_t prev, int32_t tok) {
  if (tok < 0 || tok >= v.size()) return {};
  const std::string& p = v.pieces[static_cast<size_t>(tok)];
  if (v.types[static_cast<size_t>(tok)] == TokenType::Byte && p.size() == 6 && p.rfind("<0x", 0) == 0)
    return std::string(1, static_cast<char>(std::stoi(p.substr(3, 2), nullptr, 16)));
  if (v.types[static_cast<size_t>(tok)] == TokenType::Control) return {};
  std::string out;
  for (size_t i = 0; i < p.size();) {
    if (p.compare(i, kSpace.size(), kSpace) == 0) {
      out += ' ';
      i += kSpace.size();
    } else {
      out += p[i++];
    }
  }
  if (prev == v.bos && !out.empty() && out[0] == ' ') out.erase(0, 1);
  return out;
}

std::string SpmTokenizer::decode(int32_t prev, int32_t tok) const { return spm_decode(vocab_, prev, tok); }

SpmTokenizer::SpmTokenizer(Vocab vocab) : vocab_(std::move(vocab)) {
  vocab_.validate("tokenizer");
  for (int32_t i = 0; i < vocab_.size(); ++i) index_.emplace(vocab_.pieces[static_cast<size_t>(i)], i);
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    auto it = index_.find(name);
    if (it == index_.end()) it = index_.find(std::string(1, static_cast<char>(b)));
    byte_ids_[b] = it == index_.end() ? vocab_.unk : it->second;
  }
}

int32_t SpmTokenizer::byte_token(uint8_t b) const { return byte_ids_[b]; }

std::vector<int32_t> SpmTokenizer::encode(std::string_view raw, bool add_bos) const {
  std::vector<int32_t> out;
  if (add_bos) out.push_back(vocab_.bos);
  if (raw.empty()) return out;
  std::string text;
  text.reserve(raw.size() * 2 + 3);
  if (vocab_.add_space_prefix) text += kSpace;
  for (char c : raw) {
    if (c == ' ')
      text += kSpace;
    else
      text += c;
  }

  // Pairs merge into the piece of highest score; a merged symbol is therefore always a piece,
  // and a single character that is no piece falls back to its bytes.
  const auto symbols = detail::merge_symbols(text, [&](std::string_view l, std::string_view r) -> std::optional<double> {
    auto it = index_.find(std::string(l) + std::string(r));
    if (it == index_.end()) return std::nullopt;
    return vocab_.scores[static_cast<size_t>(it->second)];
  });
  for (auto [off, n] : symbols) {
    if (auto it = index_.find(text.substr(off, n)); it != index_.end()) {
      out.push_back(it->second);
      continue;
    }
    for (size_t j = 0; j < n; ++j) out.push_back(byte_token(static_cast<uint8_t>(text[off + j])));
  }
  return out;
}

}  // namespace quant
