// Zip reader (PKWARE APPNOTE 6.3.9, sections 4.3.7 local header, 4.3.12 central directory,
// 4.3.14-16 zip64 end records). Untrusted input: every offset and size is checked.
#include "quant/formats/zip.h"

#include <algorithm>
#include <vector>

namespace quant {

namespace {

constexpr uint32_t kLocalSig = 0x04034b50, kCentralSig = 0x02014b50, kEndSig = 0x06054b50;
constexpr uint32_t kEnd64Sig = 0x06064b50, kEnd64LocatorSig = 0x07064b50;
constexpr uint32_t kMax32 = 0xffffffffu;

struct EndRecord {
  uint64_t entries = 0, cd_size = 0, cd_offset = 0;
};

EndRecord read_end_record(const MappedFile& f) {
  const uint64_t n = f.size();
  QUANT_CHECK(n >= 22, "{}: not a zip archive ({} bytes)", f.path(), n);
  // The end record is the last 22 bytes plus a comment of at most 65535 bytes.
  const uint64_t lowest = n > 22 + 65535 ? n - 22 - 65535 : 0;
  uint64_t at = n - 22;
  for (;; --at) {
    uint32_t sig;
    std::memcpy(&sig, f.data() + at, 4);
    if (sig == kEndSig) break;
    QUANT_CHECK(at > lowest, "{}: not a zip archive (no end of central directory record)", f.path());
  }
  ByteCursor c(f.data(), n, f.path());
  c.seek(at + 4);
  const uint16_t disk = c.read<uint16_t>("end record"), cd_disk = c.read<uint16_t>("end record");
  c.read<uint16_t>("end record");
  EndRecord e;
  e.entries = c.read<uint16_t>("end record");
  e.cd_size = c.read<uint32_t>("end record");
  e.cd_offset = c.read<uint32_t>("end record");
  QUANT_CHECK(disk == 0 && cd_disk == 0, "{}: multi-disk zip archives are not supported", f.path());
  if (e.entries == 0xffff || e.cd_size == kMax32 || e.cd_offset == kMax32) {
    QUANT_CHECK(at >= 20, "{}: zip64 end record locator missing", f.path());
    c.seek(at - 20);
    QUANT_CHECK(c.read<uint32_t>("zip64 locator") == kEnd64LocatorSig, "{}: zip64 end record locator missing", f.path());
    c.read<uint32_t>("zip64 locator");
    const uint64_t end64 = c.read<uint64_t>("zip64 locator");
    QUANT_CHECK(end64 <= n - 56, "{}: zip64 end record at {} is past the end of the file", f.path(), end64);
    c.seek(end64);
    QUANT_CHECK(c.read<uint32_t>("zip64 end record") == kEnd64Sig, "{}: bad zip64 end record signature", f.path());
    c.bytes(8 + 2 + 2 + 4 + 4 + 8, "zip64 end record");
    e.entries = c.read<uint64_t>("zip64 end record");
    e.cd_size = c.read<uint64_t>("zip64 end record");
    e.cd_offset = c.read<uint64_t>("zip64 end record");
  }
  QUANT_CHECK(e.cd_offset <= n && e.cd_size <= n - e.cd_offset, "{}: central directory [{}, +{}) past the end of the file",
              f.path(), e.cd_offset, e.cd_size);
  QUANT_CHECK(e.entries <= e.cd_size / 46, "{}: {} entries cannot fit a central directory of {} bytes", f.path(),
              e.entries, e.cd_size);
  return e;
}

// Replaces the 0xffffffff fields of a central entry from its zip64 extra field (id 1).
void apply_zip64_extra(std::string_view extra, uint64_t& usize, uint64_t& csize, uint64_t& offset,
                       const std::string& where) {
  ByteCursor x(reinterpret_cast<const uint8_t*>(extra.data()), extra.size(), where);
  while (x.left() >= 4) {
    const uint16_t id = x.read<uint16_t>("extra field"), len = x.read<uint16_t>("extra field");
    ByteCursor body(reinterpret_cast<const uint8_t*>(x.bytes(len, "extra field").data()), len, where);
    if (id != 1) continue;
    for (uint64_t* v : {&usize, &csize, &offset})
      if (*v == kMax32) *v = body.read<uint64_t>("zip64 extra field");
  }
}

}  // namespace

ZipArchive::ZipArchive(const std::string& path) : file_(path) {
  const EndRecord end = read_end_record(file_);
  ByteCursor c(file_.data(), end.cd_offset + end.cd_size, path);
  c.seek(end.cd_offset);
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (uint64_t i = 0; i < end.entries; ++i) {
    QUANT_CHECK(c.read<uint32_t>("central directory") == kCentralSig, "{}: central directory entry {} has a bad signature",
                path, i);
    c.bytes(4, "central directory");
    const uint16_t flags = c.read<uint16_t>("central directory"), method = c.read<uint16_t>("central directory");
    c.bytes(8, "central directory");
    uint64_t csize = c.read<uint32_t>("central directory"), usize = c.read<uint32_t>("central directory");
    const uint16_t name_len = c.read<uint16_t>("central directory"), extra_len = c.read<uint16_t>("central directory");
    const uint16_t comment_len = c.read<uint16_t>("central directory");
    c.bytes(8, "central directory");
    uint64_t offset = c.read<uint32_t>("central directory");
    const std::string name(c.bytes(name_len, "member name"));
    apply_zip64_extra(c.bytes(extra_len, "extra field"), usize, csize, offset, path + ": member " + name);
    c.bytes(comment_len, "member comment");
    QUANT_CHECK(!(flags & 1), "{}: member {} is encrypted", path, name);
    QUANT_CHECK(method == 0,
                "{}: member {} is compressed (method {}{}); only stored members can be read in place: re-save "
                "the checkpoint with torch.save, which stores them",
                path, name, method, method == 8 ? ", deflate" : "");
    QUANT_CHECK(csize == usize, "{}: member {} is stored but its sizes differ ({} vs {})", path, name, csize, usize);
    // The local header repeats the name; its extra field (alignment padding) may differ.
    ByteCursor l(file_.data(), file_.size(), path + ": member " + name);
    QUANT_CHECK(offset <= file_.size(), "{}: member {} starts past the end of the file", path, name);
    l.seek(offset);
    QUANT_CHECK(l.read<uint32_t>("local header") == kLocalSig, "{}: member {} has a bad local header signature", path, name);
    l.bytes(22, "local header");
    const uint16_t lname = l.read<uint16_t>("local header"), lextra = l.read<uint16_t>("local header");
    QUANT_CHECK(l.bytes(lname, "local header name") == name, "{}: member {}: local header names another file", path, name);
    l.bytes(lextra, "local extra field");
    QUANT_CHECK(usize <= l.left(), "{}: member {} ({} bytes at offset {}) runs past the end of the archive", path, name,
                usize, l.pos());
    QUANT_CHECK(members_.find(name) == members_.end(), "{}: member {} appears twice", path, name);
    members_.emplace(name, ZipMember{name, file_.data() + l.pos(), usize});
    ranges.emplace_back(l.pos(), l.pos() + usize);
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i)
    QUANT_CHECK(ranges[i].first >= ranges[i - 1].second, "{}: member data overlaps at byte {}", path, ranges[i].first);
}

const ZipMember* ZipArchive::find(const std::string& name) const {
  auto it = members_.find(name);
  return it == members_.end() ? nullptr : &it->second;
}

}  // namespace quant
