// Zip archives as torch.save writes them: members read in place from the mapped file.
// Only stored (uncompressed) members can be mapped; a deflated one is refused by name.
#pragma once

#include <map>
#include <string>

#include "quant/formats/mmap.h"

namespace quant {

struct ZipMember {
  std::string name;
  const uint8_t* data = nullptr;  // inside the mapping; valid while the ZipArchive lives
  uint64_t size = 0;
};

class ZipArchive {
 public:
  // Reads the central directory (zip64 included) and checks every member: stored, not
  // encrypted, its local header consistent, its bytes inside the file. Throws naming the path.
  explicit ZipArchive(const std::string& path);
  const std::map<std::string, ZipMember>& members() const { return members_; }
  const ZipMember* find(const std::string& name) const;
  const std::string& path() const { return file_.path(); }

 private:
  MappedFile file_;
  std::map<std::string, ZipMember> members_;
};

}  // namespace quant
