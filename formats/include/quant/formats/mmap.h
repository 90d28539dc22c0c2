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

// The files this process has read as inputs (models, texts, plans, statistics), by device and
// inode: no writer of ours replaces one of them. MappedFile notes its file; readers that use
// streams call note_input.
void note_input(const std::string& path);
// A file this process wrote and read back, to be replaced on purpose (quantize's plan, made again
// for each budget it tries): no longer an input.
void forget_input(const std::string& path);
// Throws "{target}: is an input of this run" when target is (the same file as) a noted input.
void check_not_input(const std::string& target);

// Writes `path` atomically: bytes go to `path.tmp<pid>.<n>` beside it, flushed, fsynced and
// renamed onto `path` by commit(); an existing file at `path` is untouched until then. The
// temporary is removed on any error, on SIGTERM / SIGINT / SIGHUP (the handler unlinks every live
// temporary, then the signal takes its default course), and, when a SIGKILL left one behind, by
// the next AtomicFile for the same path: temporaries of `path` whose process is gone are deleted.
// Refuses a target that is one of this run's inputs.
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
  int slot_ = -1;  // in the signal handler's table of live temporaries
};

// Removes `path.tmp<pid>.*` files (and `.NAME.tmp-<pid>` directories) beside `path` whose process
// no longer runs: what a SIGKILL left. Returns how many it removed.
int remove_stale_temporaries(const std::string& path);

}  // namespace quant
