// safetensors: u64 header length N, N bytes of JSON {name: {dtype, shape, data_offsets}}, data.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "quant/formats/mmap.h"
#include "quant/qtype.h"

namespace quant {

struct SafeTensor {
  std::string name;
  TType dtype;  // F32, F16 or BF16
  std::vector<int64_t> shape;
  const uint8_t* data;
  uint64_t nbytes;
};

class SafetensorsFile {
 public:
  // Validates the header completely: length, JSON, dtypes, shapes vs byte ranges, ranges inside
  // the file and not overlapping.
  explicit SafetensorsFile(const std::string& path);
  const std::map<std::string, SafeTensor>& tensors() const { return tensors_; }
  const std::string& path() const { return file_.path(); }

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

}  // namespace quant
