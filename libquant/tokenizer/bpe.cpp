// Byte-level BPE as llama.cpp runs it (llm_tokenizer_bpe): user-defined tokens are cut out of the
// text first; each run of plain text is split by the family's regexes (PCRE2, Unicode classes),
// each fragment's bytes are mapped to GPT-2's printable characters, and adjacent symbols merge
// by rank (lowest rank first, leftmost on ties) while a merge exists.
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <array>

#include "quant/error.h"
#include "quant/tokenizer.h"
#include "merge.h"

namespace quant {

namespace {

using detail::utf8_len;

void put_utf8(uint32_t cp, std::string& out) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// Decodes the character at `i` (advancing it); invalid UTF-8 (a stray or truncated byte,
// overlong forms, surrogates) reads as one U+FFFD per byte, as llama.cpp replaces it.
uint32_t next_cp(std::string_view s, size_t& i) {
  const auto c = static_cast<uint8_t>(s[i]);
  const size_t n = utf8_len(c);
  if (n == 1 || i + n > s.size()) {
    ++i;
    return c < 0x80 ? c : 0xFFFD;
  }
  uint32_t cp = c & (0x7F >> n);
  for (size_t k = 1; k < n; ++k) {
    const auto d = static_cast<uint8_t>(s[i + k]);
    if ((d & 0xC0) != 0x80) {
      ++i;
      return 0xFFFD;
    }
    cp = (cp << 6) | (d & 0x3F);
  }
  static constexpr uint32_t kMin[5] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < kMin[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
    ++i;
    return 0xFFFD;
  }
  i += n;
  return cp;
}

std::string valid_utf8(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) put_utf8(next_cp(s, i), out);
  return out;
}

// GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves, the other 68 bytes
// for U+0100 onwards in byte order.
struct ByteMap {
  std::array<std::string, 256> encode;
  std::array<int16_t, 512> decode;  // code point -> byte, -1 if none
  ByteMap() {
    decode.fill(-1);
    uint32_t extra = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      const uint32_t cp = printable ? static_cast<uint32_t>(b) : extra++;
      put_utf8(cp, encode[static_cast<size_t>(b)]);
      decode[cp] = static_cast<int16_t>(b);
    }
  }
};
const ByteMap& byte_map() {
  static const ByteMap m;
  return m;
}

}  // namespace

struct BpeTokenizer::Regexes {
  std::vector<pcre2_code*> codes;
  ~Regexes() {
    for (pcre2_code* c : codes) pcre2_code_free(c);
  }
  // Every match and every run between matches of each regex in turn, as [begin, end) offsets.
  std::vector<std::pair<size_t, size_t>> split(std::string_view text) const {
    std::vector<std::pair<size_t, size_t>> frags{{0, text.size()}}, next;
    for (pcre2_code* code : codes) {
      pcre2_match_data* md = pcre2_match_data_create_from_pattern(code, nullptr);
      next.clear();
      for (auto [b, e] : frags) {
        const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data() + b);
        const size_t n = e - b;
        size_t prev = 0, pos = 0;
        while (pos <= n) {
          const int rc = pcre2_match(code, subject, n, pos, PCRE2_NO_UTF_CHECK, md, nullptr);
          if (rc == PCRE2_ERROR_NOMATCH) break;
          QUANT_CHECK(rc >= 0, "tokenizer: regex match failed (PCRE2 error {})", rc);
          const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
          if (ov[0] > prev) next.emplace_back(b + prev, b + ov[0]);
          if (ov[1] > ov[0]) next.emplace_back(b + ov[0], b + ov[1]);
          prev = std::max(prev, static_cast<size_t>(ov[1]));
          pos = ov[1] > ov[0] ? ov[1] : ov[1] + (ov[1] < n ? utf8_len(subject[ov[1]]) : 1);
        }
        if (prev < n) next.emplace_back(b + prev, e);
      }
      pcre2_match_data_free(md);
      frags.swap(next);
    }
    return frags;
  }
};

BpeTokenizer::BpeTokenizer(Vocab vocab) : vocab_(std::move(vocab)), regexes_(std::make_unique<Regexes>()) {
  vocab_.validate("tokenizer");
  QUANT_CHECK(vocab_.model == VocabModel::Bpe, "tokenizer: a SentencePiece vocabulary given to the BPE tokenizer");
  pre_ = find_pre_tokenizer(vocab_.pre);
  QUANT_CHECK(pre_, "tokenizer: pre-tokenizer '{}' is not supported (these are: {})", vocab_.pre,
              pre_tokenizer_names());
  for (const char* re : pre_->regexes) {
    int err = 0;
    PCRE2_SIZE at = 0;
    pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(re), PCRE2_ZERO_TERMINATED,
                                     PCRE2_UTF | PCRE2_UCP | PCRE2_DOLLAR_ENDONLY, &err, &at, nullptr);
    if (!code) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(err, msg, sizeof(msg));
      fail("tokenizer: pre-tokenizer {}: regex does not compile at {}: {}", pre_->name, at,
           reinterpret_cast<const char*>(msg));
    }
    pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // falls back to the interpreter if JIT is absent
    regexes_->codes.push_back(code);
  }
  for (int32_t i = 0; i < vocab_.size(); ++i) {
    const auto& p = vocab_.pieces[static_cast<size_t>(i)];
    index_.emplace(p, i);
    const TokenType t = vocab_.types[static_cast<size_t>(i)];
    if ((t == TokenType::Control || t == TokenType::UserDefined) && !p.empty()) specials_.push_back(i);
  }
  std::stable_sort(specials_.begin(), specials_.end(), [&](int32_t a, int32_t b) {
    return vocab_.pieces[static_cast<size_t>(a)].size() > vocab_.pieces[static_cast<size_t>(b)].size();
  });
  for (size_t r = 0; r < vocab_.merges.size(); ++r) {
    const std::string& m = vocab_.merges[r];
    const size_t sp = m.find(' ', 1);
    QUANT_CHECK(sp != std::string::npos && sp + 1 < m.size(), "tokenizer: merge {} ('{}') is not 'left right'", r, m);
    ranks_.emplace(m, static_cast<int32_t>(r));
  }
}

BpeTokenizer::~BpeTokenizer() = default;

int32_t BpeTokenizer::rank(const std::string& left, const std::string& right) const {
  auto it = ranks_.find(left + ' ' + right);
  return it == ranks_.end() ? -1 : it->second;
}

void BpeTokenizer::bpe_word(const std::string& word, std::vector<int32_t>& out) const {
  if (pre_->ignore_merges) {
    if (auto it = index_.find(word); it != index_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  // Lower rank merges first: priority -rank (ranks are exact in a double).
  const auto symbols = detail::merge_symbols(word, [&](std::string_view l, std::string_view r) -> std::optional<double> {
    const int32_t rk = rank(std::string(l), std::string(r));
    if (rk < 0) return std::nullopt;
    return -static_cast<double>(rk);
  });
  for (auto [off, n] : symbols) {
    const std::string s = word.substr(off, n);
    if (auto it = index_.find(s); it != index_.end()) {
      out.push_back(it->second);
      continue;
    }
    // llama.cpp's fallback: each byte that is a token on its own (others are dropped).
    for (char c : s)
      if (auto it = index_.find(std::string(1, c)); it != index_.end()) out.push_back(it->second);
  }
}

void BpeTokenizer::encode_fragment(std::string_view raw, std::vector<int32_t>& out) const {
  const std::string text = valid_utf8(raw);
  const ByteMap& bm = byte_map();
  std::string word;
  for (auto [b, e] : regexes_->split(text)) {
    word.clear();
    for (size_t i = b; i < e; ++i) word += bm.encode[static_cast<uint8_t>(text[i])];
    bpe_word(word, out);
  }
}

std::vector<std::string> BpeTokenizer::pre_tokenize(std::string_view raw) const {
  const std::string text = valid_utf8(raw);
  std::vector<std::string> out;
  for (auto [b, e] : regexes_->split(text)) out.push_back(text.substr(b, e - b));
  return out;
}

std::vector<int32_t> BpeTokenizer::encode(std::string_view text, bool add_bos) const {
  return encode(text, add_bos, false);
}

std::vector<int32_t> BpeTokenizer::encode(std::string_view text, bool add_bos, bool parse_special) const {
  std::vector<int32_t> out;
  if (add_bos) out.push_back(vocab_.bos);
  // Fragments: a special token (id >= 0) or a run of text (id -1), longest specials first.
  struct Frag {
    int32_t id;
    size_t b, e;
  };
  std::vector<Frag> frags{{-1, 0, text.size()}}, next;
  for (int32_t id : specials_) {
    if (!parse_special && vocab_.types[static_cast<size_t>(id)] == TokenType::Control) continue;
    const std::string& p = vocab_.pieces[static_cast<size_t>(id)];
    next.clear();
    for (const Frag& f : frags) {
      if (f.id >= 0) {
        next.push_back(f);
        continue;
      }
      size_t at = f.b;
      for (size_t hit; (hit = text.substr(0, f.e).find(p, at)) != std::string_view::npos; at = hit + p.size()) {
        if (hit > at) next.push_back({-1, at, hit});
        next.push_back({id, hit, hit + p.size()});
      }
      if (at < f.e) next.push_back({-1, at, f.e});
    }
    frags.swap(next);
  }
  for (const Frag& f : frags) {
    if (f.id >= 0)
      out.push_back(f.id);
    else
      encode_fragment(text.substr(f.b, f.e - f.b), out);
  }
  return out;
}

std::string BpeTokenizer::decode(int32_t prev, int32_t tok) const {
  if (tok < 0 || tok >= vocab_.size()) return {};
  const std::string& p = vocab_.pieces[static_cast<size_t>(tok)];
  switch (vocab_.types[static_cast<size_t>(tok)]) {
    case TokenType::Control: return {};
    case TokenType::UserDefined: return p;
    default: break;
  }
  const ByteMap& bm = byte_map();
  std::string out;
  for (size_t i = 0; i < p.size();) {
    const size_t at = i;
    const uint32_t cp = next_cp(p, i);
    if (cp < bm.decode.size() && bm.decode[cp] >= 0)
      out += static_cast<char>(bm.decode[cp]);
    else
      out.append(p, at, i - at);
  }
  return out;
}

std::unique_ptr<Tokenizer> make_tokenizer(Vocab vocab) {
  if (vocab.model == VocabModel::Bpe) return std::make_unique<BpeTokenizer>(std::move(vocab));
  return std::make_unique<SpmTokenizer>(std::move(vocab));
}

}  // namespace quant
