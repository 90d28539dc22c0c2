// Work-directory checkpoints of resumable runs (one file per finished block, and the block
// outputs): a header naming each blob, the blobs, and a trailer of their hashes, so a torn or
// altered file is refused on open rather than resumed from.
//
//   "QCKPT001" | u64 n | JSON header (n bytes) {"meta": ..., "blobs": [{"name", "bytes"}...]}
//   | zeros to a multiple of 64 | each blob, then zeros to a multiple of 64
//   | u64 fnv1a64 per blob | "QCKPTEND"
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <vector>

#include "quant/formats/mmap.h"

namespace quant {

// Streams a checkpoint whose blobs are declared up front (memory holds what each write() gets);
// the file appears on commit() (temporary name, rename).
class CkptWriter {
 public:
  CkptWriter(const std::string& path, nlohmann::json meta, std::vector<std::pair<std::string, uint64_t>> blobs);
  // Appends to the next declared blob (a blob may come in several writes, in order).
  void write(const void* data, uint64_t n);
  void commit();

 private:
  void pad_to(uint64_t align);
  AtomicFile file_;
  std::vector<std::pair<std::string, uint64_t>> blobs_;
  std::vector<uint64_t> hashes_;
  size_t next_ = 0;
  uint64_t in_blob_ = 0, pos_ = 0;
};

class CkptFile {
 public:
  // Validates the whole file (layout and every blob's hash); throws naming the path.
  explicit CkptFile(const std::string& path);
  const nlohmann::json& meta() const { return meta_; }
  bool has(const std::string& name) const { return blobs_.count(name) != 0; }
  std::span<const uint8_t> blob(const std::string& name) const;  // throws when absent
  const std::string& path() const { return file_.path(); }

 private:
  MappedFile file_;
  nlohmann::json meta_;
  std::map<std::string, std::span<const uint8_t>> blobs_;
};

}  // namespace quant
