// SentencePiece BPE as llama.cpp runs it (llm_tokenizer_spm): split into UTF-8 characters,
// merge the adjacent pair whose concatenation is a piece of highest score (leftmost on ties),
// then emit pieces; characters that are no piece become byte tokens <0xXX>.
#include <queue>

#include "quant/error.h"
#include "quant/tokenizer.h"

namespace quant {

namespace {
const std::string kSpace = "\xE2\x96\x81";  // U+2581, SentencePiece's escaped space

size_t utf8_len(uint8_t c) {
  if (c < 0x80) return 1;
  if ((c >> 5) == 0x6) return 2;
  if ((c >> 4) == 0xE) return 3;
  if ((c >> 3) == 0x1E) return 4;
  return 1;  // stray continuation byte: a character of its own
}
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

  struct Symbol {
    int32_t prev, next;
    size_t off, n;
  };
  std::vector<Symbol> sym;
  for (size_t off = 0; off < text.size();) {
    const size_t n = std::min(utf8_len(static_cast<uint8_t>(text[off])), text.size() - off);
    const auto idx = static_cast<int32_t>(sym.size());
    sym.push_back({idx - 1, off + n == text.size() ? -1 : idx + 1, off, n});
    off += n;
  }

  struct Bigram {
    int32_t left, right;
    float score;
    size_t size;
  };
  auto worse = [](const Bigram& l, const Bigram& r) {
    return l.score < r.score || (l.score == r.score && l.left > r.left);
  };
  std::priority_queue<Bigram, std::vector<Bigram>, decltype(worse)> queue(worse);

  auto try_add = [&](int32_t l, int32_t r) {
    if (l < 0 || r < 0) return;
    std::string piece = text.substr(sym[static_cast<size_t>(l)].off,
                                    sym[static_cast<size_t>(l)].n + sym[static_cast<size_t>(r)].n);
    auto it = index_.find(piece);
    if (it == index_.end()) return;
    queue.push({l, r, vocab_.scores[static_cast<size_t>(it->second)], piece.size()});
  };
  for (int32_t i = 1; i < static_cast<int32_t>(sym.size()); ++i) try_add(i - 1, i);

  while (!queue.empty()) {
    const Bigram b = queue.top();
    queue.pop();
    Symbol& l = sym[static_cast<size_t>(b.left)];
    Symbol& r = sym[static_cast<size_t>(b.right)];
    if (l.n == 0 || r.n == 0 || l.n + r.n != b.size) continue;  // stale
    l.n += r.n;
    r.n = 0;
    l.next = r.next;
    if (r.next >= 0) sym[static_cast<size_t>(r.next)].prev = b.left;
    try_add(l.prev, b.left);
    try_add(b.left, l.next);
  }

  // A merged symbol is always a piece (pairs merge only into pieces); a single character
  // that is no piece falls back to its bytes.
  for (int32_t i = 0; i != -1; i = sym[static_cast<size_t>(i)].next) {
    const Symbol& s = sym[static_cast<size_t>(i)];
    if (auto it = index_.find(text.substr(s.off, s.n)); it != index_.end()) {
      out.push_back(it->second);
      continue;
    }
    for (size_t j = 0; j < s.n; ++j) out.push_back(byte_token(static_cast<uint8_t>(text[s.off + j])));
  }
  return out;
}

}  // namespace quant
