// MappedFile and AtomicFile.
#include "quant/formats/mmap.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <random>

namespace quant {

MappedFile::MappedFile(const std::string& path) : path_(path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  QUANT_CHECK(fd >= 0, "{}: cannot open: {}", path, std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    fail("{}: not a regular file", path);
  }
  size_ = static_cast<uint64_t>(st.st_size);
  if (size_ > 0) {
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    ::close(fd);
    QUANT_CHECK(p != MAP_FAILED, "{}: mmap failed: {}", path, std::strerror(errno));
    data_ = static_cast<const uint8_t*>(p);
  } else {
    ::close(fd);
  }
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(const_cast<uint8_t*>(data_), size_);
}

AtomicFile::AtomicFile(std::string path) : path_(std::move(path)) {
  std::random_device rd;
  tmp_ = path_ + ".tmp" + std::to_string(::getpid()) + "." + std::to_string(rd() % 100000);
  f_ = std::fopen(tmp_.c_str(), "wb");
  QUANT_CHECK(f_, "{}: cannot write: {}", path_, std::strerror(errno));
}

AtomicFile::~AtomicFile() {
  if (f_) std::fclose(f_);
  if (!done_) std::remove(tmp_.c_str());
}

void AtomicFile::write(const void* p, size_t n) {
  QUANT_CHECK(std::fwrite(p, 1, n, f_) == n, "{}: write failed: {}", path_, std::strerror(errno));
}

void AtomicFile::commit() {
  const bool ok = std::fflush(f_) == 0 && ::fsync(::fileno(f_)) == 0;
  const int err = errno;
  std::fclose(f_);
  f_ = nullptr;
  QUANT_CHECK(ok, "{}: write failed: {}", path_, std::strerror(err));
  QUANT_CHECK(std::rename(tmp_.c_str(), path_.c_str()) == 0, "{}: cannot rename into place: {}", path_,
              std::strerror(errno));
  done_ = true;
}

}  // namespace quant
