// PyTorch checkpoints (pytorch_model.bin): torch.save's zip of data.pkl and one stored member
// per storage. The pickle runs on a restricted unpickler; tensors point into the mapped members.
#pragma once

#include "quant/formats/safetensors.h"
#include "quant/formats/zip.h"

namespace quant {

class TorchBinFile final : public TensorFile {
 public:
  // Accepts a pickled dict (or OrderedDict) of str -> tensor built by
  // torch._utils._rebuild_tensor_v2 over Float/Half/BFloat16/Int storages, contiguous.
  explicit TorchBinFile(const std::string& path);
  const std::map<std::string, SafeTensor>& tensors() const override { return tensors_; }
  const std::string& path() const override { return zip_.path(); }

 private:
  ZipArchive zip_;
  std::map<std::string, SafeTensor> tensors_;
};

}  // namespace quant
