// safetensors reader (untrusted input) and writer.
#include "quant/formats/safetensors.h"

#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>

namespace quant {

namespace {
constexpr uint64_t kMaxHeader = 100ull << 20;  // the format's own limit is 100 MB

std::optional<TType> st_dtype(const std::string& s) {
  if (s == "F32") return TType::F32;
  if (s == "F16") return TType::F16;
  if (s == "BF16") return TType::BF16;
  if (s == "I32") return TType::I32;
  return std::nullopt;
}
const char* st_name(TType t) {
  switch (t) {
    case TType::F32: return "F32";
    case TType::F16: return "F16";
    case TType::BF16: return "BF16";
    case TType::I32: return "I32";
    default: fail("safetensors cannot hold {}", ttype_name(t));
  }
}
}  // namespace

SafetensorsFile::SafetensorsFile(const std::string& path) : file_(path) {
  ByteCursor cur(file_.data(), file_.size(), path);
  const uint64_t n = cur.read<uint64_t>("header length");
  QUANT_CHECK(n <= kMaxHeader && n <= cur.left(), "{}: header length {} past the end of the file ({} bytes)",
              path, n, file_.size());
  const std::string_view header = cur.bytes(n, "header");
  const uint8_t* base = file_.data() + 8 + n;
  const uint64_t data_size = file_.size() - 8 - n;

  nlohmann::json j;
  try {
    j = nlohmann::json::parse(header);
  } catch (const std::exception& e) {
    fail("{}: header is not valid JSON: {}", path, e.what());
  }
  QUANT_CHECK(j.is_object(), "{}: header is not a JSON object", path);
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.key() == "__metadata__") continue;
    const auto& v = it.value();
    const std::string& name = it.key();
    QUANT_CHECK(v.is_object() && v.contains("dtype") && v.contains("shape") && v.contains("data_offsets"),
                "{}: tensor {}: entry lacks dtype, shape or data_offsets", path, name);
    QUANT_CHECK(v["dtype"].is_string(), "{}: tensor {}: dtype is not a string", path, name);
    const auto dt = st_dtype(v["dtype"].get<std::string>());
    QUANT_CHECK(dt, "{}: tensor {}: unsupported dtype {} (F32, F16, BF16, I32 are read)", path, name,
                v["dtype"].get<std::string>());
    QUANT_CHECK(v["shape"].is_array() && v["shape"].size() <= 8, "{}: tensor {}: bad shape", path, name);
    SafeTensor t{name, *dt, {}, nullptr, 0};
    uint64_t numel = 1;
    for (const auto& d : v["shape"]) {
      QUANT_CHECK(d.is_number_unsigned(), "{}: tensor {}: shape has a non-integer or negative dim", path, name);
      const uint64_t dim = d.get<uint64_t>();
      QUANT_CHECK(dim == 0 || numel <= (1ull << 48) / dim, "{}: tensor {}: shape overflows", path, name);
      numel *= dim;
      t.shape.push_back(static_cast<int64_t>(dim));
    }
    const auto& off = v["data_offsets"];
    QUANT_CHECK(off.is_array() && off.size() == 2 && off[0].is_number_unsigned() && off[1].is_number_unsigned(),
                "{}: tensor {}: data_offsets is not [begin, end]", path, name);
    const uint64_t b = off[0].get<uint64_t>(), e = off[1].get<uint64_t>();
    QUANT_CHECK(b <= e && e <= data_size, "{}: tensor {}: data_offsets [{}, {}] out of range (data is {} bytes)",
                path, name, b, e, data_size);
    const uint64_t want = numel * static_cast<uint64_t>(traits(*dt).block_bytes);
    QUANT_CHECK(e - b == want, "{}: tensor {}: shape needs {} bytes but data_offsets span {}", path, name,
                want, e - b);
    t.data = base + b;
    t.nbytes = e - b;
    ranges.emplace_back(b, e);
    tensors_.emplace(name, std::move(t));
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i)
    QUANT_CHECK(ranges[i].first >= ranges[i - 1].second, "{}: tensor data ranges overlap at byte {}", path,
                ranges[i].first);
}

uint64_t SafeTensorDecl::nbytes() const {
  uint64_t n = static_cast<uint64_t>(traits(dtype).block_bytes);
  for (int64_t d : shape) n *= static_cast<uint64_t>(d);
  return n;
}

SafetensorsWriter::SafetensorsWriter(const std::string& path, std::vector<SafeTensorDecl> decls, const nlohmann::json& metadata)
    : file_(path), decls_(std::move(decls)) {
  nlohmann::json h = nlohmann::json::object();
  if (!metadata.is_null()) h["__metadata__"] = metadata;
  uint64_t off = 0;
  for (const auto& t : decls_) {
    h[t.name] = {{"dtype", st_name(t.dtype)}, {"shape", t.shape}, {"data_offsets", {off, off + t.nbytes()}}};
    off += t.nbytes();
  }
  std::string header = h.dump();
  while (header.size() % 8) header += ' ';
  const uint64_t n = header.size();
  file_.write(&n, 8);
  file_.write(header.data(), header.size());
  bytes_ = 8 + n;
}

void SafetensorsWriter::write(const std::string& name, const void* data, uint64_t nbytes) {
  QUANT_CHECK(next_ < decls_.size() && decls_[next_].name == name && decls_[next_].nbytes() == nbytes,
              "{}: safetensors writer got {} ({} bytes) out of its declared order", file_.path(), name, nbytes);
  file_.write(data, nbytes);
  bytes_ += nbytes;
  ++next_;
}

void SafetensorsWriter::skip(const std::string& name, uint64_t nbytes) {
  QUANT_CHECK(next_ < decls_.size() && decls_[next_].name == name && decls_[next_].nbytes() == nbytes,
              "{}: safetensors writer got {} ({} bytes) out of its declared order", file_.path(), name, nbytes);
  std::FILE* f = file_.file();
  QUANT_CHECK(std::fflush(f) == 0 && ::fseeko(f, static_cast<off_t>(nbytes), SEEK_CUR) == 0, "{}: seek failed: {}", file_.path(),
              std::strerror(errno));
  bytes_ += nbytes;
  ++next_;
}

void SafetensorsWriter::commit() {
  QUANT_CHECK(next_ == decls_.size(), "{}: {} of {} declared tensors written", file_.path(), next_, decls_.size());
  std::FILE* f = file_.file();  // a trailing hole (skip) has no byte written after it: set the size
  QUANT_CHECK(std::fflush(f) == 0 && ::ftruncate(::fileno(f), static_cast<off_t>(bytes_)) == 0, "{}: write failed: {}", file_.path(),
              std::strerror(errno));
  file_.commit();
}

void write_safetensors(const std::string& path, const std::vector<SafeTensorOut>& tensors) {
  std::vector<SafeTensorDecl> decls;
  for (const auto& t : tensors) {
    decls.push_back({t.name, t.dtype, t.shape});
    QUANT_CHECK(decls.back().nbytes() == t.data.size(), "safetensors: {} holds {} bytes, its shape needs {}", t.name, t.data.size(),
                decls.back().nbytes());
  }
  SafetensorsWriter w(path, std::move(decls), nullptr);
  for (const auto& t : tensors) w.write(t.name, t.data.data(), t.data.size());
  w.commit();
}

}  // namespace quant
