// GGUF v3 (ggml docs/gguf.md): "GGUF", u32 version, u64 n_tensors, u64 n_kv, typed KV pairs,
// tensor infos {name, u32 n_dims, u64 ne[n_dims], u32 type, u64 offset}, padding to
// general.alignment, then tensor data (each tensor's offset aligned, relative to data start).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "quant/formats/mmap.h"
#include "quant/quant_weight.h"

namespace quant {

enum class GgufType : uint32_t {
  U8 = 0, I8 = 1, U16 = 2, I16 = 3, U32 = 4, I32 = 5, F32 = 6, BOOL = 7,
  STR = 8, ARR = 9, U64 = 10, I64 = 11, F64 = 12,
};

struct GgufValue {
  GgufType type = GgufType::U32;
  GgufType elem = GgufType::U8;  // element type of an array
  double num = 0;                // every scalar number and bool (exact below 2^53)
  std::string str;
  std::vector<double> nums;      // numeric arrays
  std::vector<std::string> strs; // string arrays
  size_t array_size() const { return elem == GgufType::STR ? strs.size() : nums.size(); }
  std::string summary() const;   // short text for `quant inspect`
};

struct GgufTensorInfo {
  std::string name;
  std::vector<int64_t> ne;  // ne[0] is the contiguous axis
  TType type;
  uint64_t offset;          // relative to the data section
  const uint8_t* data;
  uint64_t nbytes;
};

class GgufFile {
 public:
  explicit GgufFile(const std::string& path);  // validates everything before returning
  const std::vector<std::pair<std::string, GgufValue>>& kv() const { return kv_; }
  const GgufValue* find(std::string_view key) const;
  // Typed access; throws naming the key when absent or of another type.
  double get_num(std::string_view key) const;
  double get_num(std::string_view key, double dflt) const;
  std::string get_str(std::string_view key) const;
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  const std::string& path() const { return file_.path(); }
  uint64_t file_size() const { return file_.size(); }

 private:
  MappedFile file_;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  std::vector<std::pair<std::string, GgufValue>> kv_;
  std::vector<GgufTensorInfo> tensors_;
};

class GgufWriter {
 public:
  void set(std::string key, GgufValue v);
  void set_u32(std::string key, uint32_t v);
  void set_i32(std::string key, int32_t v);
  void set_f32(std::string key, float v);
  void set_bool(std::string key, bool v);
  void set_str(std::string key, std::string v);
  void set_str_array(std::string key, std::vector<std::string> v);
  void set_f32_array(std::string key, std::vector<float> v);
  void set_i32_array(std::string key, std::vector<int32_t> v);
  // Declares a tensor: rows x cols (rows = 1 and n_dims = 1 for vectors) of `type`.
  void add_tensor(std::string name, int64_t rows, int64_t cols, int n_dims, TType type);
  // Writes the file atomically; produce(i) returns tensor i's data, in declaration order.
  void write(const std::string& path, const std::function<PackedTensor(size_t)>& produce) const;
  // The bytes write() would produce, without producing any tensor.
  uint64_t file_bytes() const;

 private:
  uint64_t alignment() const;
  std::string header(std::vector<uint64_t>* sizes) const;  // magic to the aligned end of the tensor infos
  struct Decl {
    std::string name;
    int64_t rows, cols;
    int n_dims;
    TType type;
  };
  std::vector<std::pair<std::string, GgufValue>> kv_;
  std::vector<Decl> tensors_;
};

}  // namespace quant
