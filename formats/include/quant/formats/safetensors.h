// safetensors: u64 header length N, N bytes of JSON {name: {dtype, shape, data_offsets}}, data.
#pragma once

#include <map>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

#include "quant/formats/mmap.h"
#include "quant/qtype.h"

namespace quant {

struct SafeTensor {
  std::string name;
  TType dtype;  // F32, F16, BF16 or I32
  std::vector<int64_t> shape;
  const uint8_t* data;
  uint64_t nbytes;
};

// A file of named tensors read in place (safetensors, torch.save's zip).
class TensorFile {
 public:
  virtual ~TensorFile() = default;
  virtual const std::map<std::string, SafeTensor>& tensors() const = 0;
  virtual const std::string& path() const = 0;
};

class SafetensorsFile final : public TensorFile {
 public:
  // Validates the header completely: length, JSON, dtypes, shapes vs byte ranges, ranges inside
  // the file and not overlapping.
  explicit SafetensorsFile(const std::string& path);
  const std::map<std::string, SafeTensor>& tensors() const override { return tensors_; }
  const std::string& path() const override { return file_.path(); }

 private:
  MappedFile file_;
  std::map<std::string, SafeTensor> tensors_;
};

// A tensor to write; data holds the bytes of dtype.
struct SafeTensorOut {
  std::string name;
  TType dtype;
  std::vector<int64_t> shape;
  std::vector<uint8_t> data;
};
void write_safetensors(const std::string& path, const std::vector<SafeTensorOut>& tensors);

// Streams a safetensors file whose header is known up front: tensors are then written one at a
// time in the declared order (memory holds one tensor), and the file appears on commit().
struct SafeTensorDecl {
  std::string name;
  TType dtype;
  std::vector<int64_t> shape;
  uint64_t nbytes() const;
};
class SafetensorsWriter {
 public:
  SafetensorsWriter(const std::string& path, std::vector<SafeTensorDecl> decls, const nlohmann::json& metadata);
  void write(const std::string& name, const void* data, uint64_t nbytes);  // the next declared tensor
  void skip(const std::string& name, uint64_t nbytes);  // the next declared tensor left a hole (reads as zeros)
  void commit();  // throws unless every declared tensor was written
  uint64_t bytes() const { return bytes_; }

 private:
  AtomicFile file_;
  std::vector<SafeTensorDecl> decls_;
  size_t next_ = 0;
  uint64_t bytes_ = 0;
};

}  // namespace quant
