// Checkpoint files of resumable runs (formats/include/quant/formats/ckpt.h).
#include "quant/formats/ckpt.h"

#include <cstring>

#include "quant/error.h"
#include "quant/hash.h"

namespace quant {

namespace {
constexpr char kCkptMagic[8] = {'Q', 'C', 'K', 'P', 'T', '0', '0', '1'};
constexpr char kCkptEnd[8] = {'Q', 'C', 'K', 'P', 'T', 'E', 'N', 'D'};
constexpr uint64_t kCkptAlign = 64;
constexpr uint64_t kMaxCkptHeader = 64ull << 20;
uint64_t ckpt_aligned(uint64_t x) { return (x + kCkptAlign - 1) / kCkptAlign * kCkptAlign; }
}  // namespace

CkptWriter::CkptWriter(const std::string& path, nlohmann::json meta, std::vector<std::pair<std::string, uint64_t>> blobs)
    : file_(path), blobs_(std::move(blobs)) {
  nlohmann::json list = nlohmann::json::array();
  for (const auto& [name, bytes] : blobs_) list.push_back({{"name", name}, {"bytes", bytes}});
  const std::string header = nlohmann::json{{"meta", std::move(meta)}, {"blobs", list}}.dump();
  const uint64_t n = header.size();
  file_.write(kCkptMagic, 8);
  file_.write(&n, 8);
  file_.write(header.data(), header.size());
  pos_ = 16 + n;
  pad_to(kCkptAlign);
  hashes_.assign(blobs_.size(), kFnv1aOffset);
}

void CkptWriter::pad_to(uint64_t align) {
  static const char zeros[kCkptAlign] = {};
  const uint64_t target = (pos_ + align - 1) / align * align;
  file_.write(zeros, target - pos_);
  pos_ = target;
}

void CkptWriter::write(const void* data, uint64_t n) {
  while (next_ < blobs_.size() && in_blob_ == blobs_[next_].second) ++next_, in_blob_ = 0, pad_to(kCkptAlign);
  QUANT_CHECK(next_ < blobs_.size() && in_blob_ + n <= blobs_[next_].second, "{}: checkpoint writer got more bytes than declared",
              file_.path());
  file_.write(data, n);
  hashes_[next_] = fnv1a(hashes_[next_], data, n);
  in_blob_ += n, pos_ += n;
}

void CkptWriter::commit() {
  while (next_ < blobs_.size() && in_blob_ == blobs_[next_].second) ++next_, in_blob_ = 0, pad_to(kCkptAlign);
  QUANT_CHECK(next_ == blobs_.size(), "{}: {} of {} checkpoint blobs written", file_.path(), next_, blobs_.size());
  file_.write(hashes_.data(), hashes_.size() * 8);
  file_.write(kCkptEnd, 8);
  file_.commit();
}

CkptFile::CkptFile(const std::string& path) : file_(path) {
  ByteCursor cur(file_.data(), file_.size(), path);
  QUANT_CHECK(cur.bytes(8, "magic") == std::string_view(kCkptMagic, 8), "{}: not a quant checkpoint (bad magic)", path);
  const uint64_t n = cur.read<uint64_t>("header length");
  QUANT_CHECK(n <= kMaxCkptHeader && n <= cur.left(), "{}: checkpoint header length {} past the end of the file", path, n);
  nlohmann::json h = nlohmann::json::parse(cur.bytes(n, "header"), nullptr, false);
  QUANT_CHECK(h.is_object() && h.contains("meta") && h.contains("blobs") && h["blobs"].is_array(), "{}: checkpoint header is not "
              "valid JSON with meta and blobs", path);
  uint64_t pos = ckpt_aligned(16 + n);
  std::vector<std::pair<std::string, std::span<const uint8_t>>> list;
  for (const auto& b : h["blobs"]) {
    QUANT_CHECK(b.is_object() && b.contains("name") && b["name"].is_string() && b.contains("bytes") && b["bytes"].is_number_unsigned(),
                "{}: checkpoint blob entry {} is malformed", path, b.dump());
    const uint64_t bytes = b["bytes"].get<uint64_t>();
    QUANT_CHECK(pos <= file_.size() && bytes <= file_.size() - pos, "{}: checkpoint blob {} ({} bytes at {}) past the end of the "
                "file ({} bytes): truncated", path, b["name"].get<std::string>(), bytes, pos, file_.size());
    list.emplace_back(b["name"].get<std::string>(), std::span<const uint8_t>(file_.data() + pos, bytes));
    pos = ckpt_aligned(pos + bytes);
  }
  QUANT_CHECK(file_.size() - std::min<uint64_t>(pos, file_.size()) == list.size() * 8 + 8, "{}: checkpoint is {} bytes, its layout "
              "needs {}: truncated or extended", path, file_.size(), pos + list.size() * 8 + 8);
  QUANT_CHECK(std::memcmp(file_.data() + file_.size() - 8, kCkptEnd, 8) == 0, "{}: checkpoint trailer missing: truncated", path);
  for (size_t i = 0; i < list.size(); ++i) {
    uint64_t want = 0;
    std::memcpy(&want, file_.data() + pos + i * 8, 8);
    const auto& [name, span] = list[i];
    QUANT_CHECK(fnv1a(kFnv1aOffset, span.data(), span.size()) == want, "{}: checkpoint blob {} does not match its hash: corrupt",
                path, name);
    QUANT_CHECK(blobs_.emplace(name, span).second, "{}: checkpoint blob {} appears twice", path, name);
  }
  meta_ = std::move(h["meta"]);
}

std::span<const uint8_t> CkptFile::blob(const std::string& name) const {
  auto it = blobs_.find(name);
  QUANT_CHECK(it != blobs_.end(), "{}: checkpoint holds no {}", path(), name);
  return it->second;
}

}  // namespace quant
