// Read-only memory-mapped files and a bounds-checked cursor for parsing untrusted bytes.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "quant/error.h"

namespace quant {

class MappedFile {
 public:
  explicit MappedFile(const std::string& path);  // throws naming the path
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  const uint8_t* data() const { return data_; }
  uint64_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  const uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
};

// Every read checks the bytes left and names the file, the field and the offset on failure.
class ByteCursor {
 public:
  ByteCursor(const uint8_t* data, uint64_t size, std::string source)
      : data_(data), size_(size), source_(std::move(source)) {}
  uint64_t pos() const { return pos_; }
  uint64_t left() const { return size_ - pos_; }
  void need(uint64_t n, std::string_view what) const {
    QUANT_CHECK(n <= left(), "{}: truncated reading {} at offset {} (needs {} bytes, {} left)", source_,
                what, pos_, n, left());
  }
  template <typename T>
  T read(std::string_view what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  std::string_view bytes(uint64_t n, std::string_view what) {
    need(n, what);
    std::string_view s(reinterpret_cast<const char*>(data_ + pos_), n);
    pos_ += n;
    return s;
  }
  void seek(uint64_t p) { pos_ = p; }
  const std::string& source() const { return source_; }

 private:
  const uint8_t* data_;
  uint64_t size_;
  uint64_t pos_ = 0;
  std::string source_;
};

// Writes `path` atomically: the callback writes to a temporary file in the same directory,
// which is renamed onto `path` only when the callback returns; on any error it is removed.
class AtomicFile {
 public:
  explicit AtomicFile(std::string path);
  ~AtomicFile();  // removes the temporary file unless commit() ran
  std::FILE* file() { return f_; }
  void write(const void* p, size_t n);
  void commit();
  const std::string& path() const { return path_; }

 private:
  std::string path_, tmp_;
  std::FILE* f_ = nullptr;
  bool done_ = false;
};

}  // namespace quant
