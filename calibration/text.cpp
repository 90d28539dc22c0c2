// Reading evaluation / calibration text.
#include "quant/calibration/text.h"

#include <sys/stat.h>

#include <deque>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <typeinfo>

#include "quant/error.h"
#include "quant/hash.h"
#include "quant/formats/mmap.h"
#include "quant/tokenizer.h"

namespace quant {

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  QUANT_CHECK(in, "{}: cannot open text file", path);
  note_input(path);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string s = ss.str();
  if (path.ends_with(".jsonl")) {
    std::string joined;
    std::istringstream lines(s);
    std::string line;
    for (int64_t no = 1; std::getline(lines, line); ++no) {
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(line);
      } catch (const std::exception& e) {
        fail("{}: line {} is not JSON: {}", path, no, e.what());
      }
      QUANT_CHECK(j.is_object() && j.contains("text") && j["text"].is_string(), "{}: line {} has no string field \"text\"",
                  path, no);
      if (!joined.empty()) joined += "\n\n";
      joined += j["text"].get<std::string>();
    }
    s = std::move(joined);
  }
  QUANT_CHECK(s.find_first_not_of(" \t\r\n") != std::string::npos, "{}: text is empty", path);
  return s;
}

namespace {

std::string tokenizer_key(const Tokenizer& tok) {
  const Vocab& v = tok.vocab();
  uint64_t h = kFnv1aOffset;
  for (const auto& p : v.pieces) h = fnv1a(h, p.data(), p.size() + 1);  // with the terminator: "a","bc" != "ab","c"
  for (const auto& m : v.merges) h = fnv1a(h, m.data(), m.size() + 1);
  h = fnv1a(h, v.pre.data(), v.pre.size());
  const int32_t flags[] = {v.bos, v.add_bos, v.add_space_prefix, static_cast<int32_t>(v.model)};
  h = fnv1a(h, flags, sizeof flags);
  return fmt::format("{}:{:016x}", typeid(tok).name(), h);
}

struct CachedText {
  std::string key;
  std::vector<int32_t> tokens;
};
std::mutex g_text_mu;
std::deque<CachedText> g_texts;  // the last two

}  // namespace

std::vector<int32_t> encode_text_file(const Tokenizer& tok, const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return tok.encode(read_text(path), true);  // read_text names the problem
  const std::string key = fmt::format("{}|{}|{}|{}.{}|{}", path, st.st_dev, st.st_ino, st.st_mtim.tv_sec, st.st_mtim.tv_nsec, st.st_size) +
                          "|" + tokenizer_key(tok);
  {
    std::lock_guard<std::mutex> lock(g_text_mu);
    for (const auto& c : g_texts)
      if (c.key == key) {
        note_input(path);
        return c.tokens;
      }
  }
  std::vector<int32_t> tokens = tok.encode(read_text(path), true);
  std::lock_guard<std::mutex> lock(g_text_mu);
  g_texts.push_back({key, tokens});
  if (g_texts.size() > 2) g_texts.pop_front();
  return tokens;
}

}  // namespace quant
