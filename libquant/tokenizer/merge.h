// The merge loop SentencePiece-BPE and byte-level BPE share (llama.cpp's llm_tokenizer_spm and
// llm_tokenizer_bpe): split text into UTF-8 characters, then repeatedly merge the adjacent pair
// of highest priority (leftmost on ties) until no pair may merge. Internal to libquant/tokenizer.
#pragma once

#include <cstdint>
#include <optional>
#include <queue>
#include <string_view>
#include <utility>
#include <vector>

namespace quant::detail {

inline size_t utf8_len(uint8_t c) {
  if (c < 0x80) return 1;
  if ((c >> 5) == 0x6) return 2;
  if ((c >> 4) == 0xE) return 3;
  if ((c >> 3) == 0x1E) return 4;
  return 1;  // stray continuation byte: a character of its own
}

// `priority(left, right)` is the merge's priority (higher first), or nullopt where the pair may
// not merge. Returns the final symbols as (offset, length) in text order.
template <class Priority>
std::vector<std::pair<size_t, size_t>> merge_symbols(std::string_view text, const Priority& priority) {
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
    double priority;
    size_t size;
  };
  auto worse = [](const Bigram& l, const Bigram& r) {
    return l.priority < r.priority || (l.priority == r.priority && l.left > r.left);
  };
  std::priority_queue<Bigram, std::vector<Bigram>, decltype(worse)> queue(worse);
  auto at = [&](int32_t i) -> Symbol& { return sym[static_cast<size_t>(i)]; };
  auto try_add = [&](int32_t l, int32_t r) {
    if (l < 0 || r < 0) return;
    const std::optional<double> p = priority(text.substr(at(l).off, at(l).n), text.substr(at(r).off, at(r).n));
    if (p) queue.push({l, r, *p, at(l).n + at(r).n});
  };
  for (int32_t i = 1; i < static_cast<int32_t>(sym.size()); ++i) try_add(i - 1, i);
  while (!queue.empty()) {
    const Bigram b = queue.top();
    queue.pop();
    Symbol& l = at(b.left);
    Symbol& r = at(b.right);
    if (l.n == 0 || r.n == 0 || l.n + r.n != b.size) continue;  // stale: a side has merged since
    l.n += r.n;
    r.n = 0;
    l.next = r.next;
    if (r.next >= 0) at(r.next).prev = b.left;
    try_add(l.prev, b.left);
    try_add(b.left, l.next);
  }
  std::vector<std::pair<size_t, size_t>> out;
  for (int32_t i = 0; i != -1 && !sym.empty(); i = at(i).next) out.emplace_back(at(i).off, at(i).n);
  return out;
}

}  // namespace quant::detail
