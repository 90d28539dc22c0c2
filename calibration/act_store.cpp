// Activation stores: a vector, or an unlinked file read and written with pread / pwrite.
#include "quant/calibration/act_store.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "quant/error.h"

namespace quant {

namespace {

class MemoryStore final : public ActStore {
 public:
  MemoryStore(int64_t w, int64_t f) : ActStore(w, f), v_(static_cast<size_t>(w * f)) {}
  void get(int64_t s, float* out) const override { std::copy_n(v_.data() + s * floats_, floats_, out); }
  void put(int64_t s, const float* in) override { std::copy_n(in, floats_, v_.data() + s * floats_); }
  float* data(int64_t s) override { return v_.data() + s * floats_; }
  bool on_disk() const override { return false; }

 private:
  std::vector<float> v_;
};

class DiskStore final : public ActStore {
 public:
  DiskStore(int64_t w, int64_t f, const std::string& dir) : ActStore(w, f), dir_(dir) {
    std::filesystem::create_directories(dir);
    fd_ = ::open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd_ < 0) {  // a filesystem without O_TMPFILE: a named file, unlinked at once
      std::string name = (std::filesystem::path(dir) / "activations.XXXXXX").string();
      fd_ = ::mkstemp(name.data());
      QUANT_CHECK(fd_ >= 0, "{}: cannot create a file for calibration activations: {}", dir, std::strerror(errno));
      ::unlink(name.c_str());
    }
    const off_t bytes = static_cast<off_t>(w * f * 4);
    const int err = ::posix_fallocate(fd_, 0, bytes);  // a full disk fails here, not blocks later
    if (err != 0) {
      ::close(fd_);
      fail("{}: no room for {:.2f} GB of calibration activations ({}): free space there, or give --work on a larger disk, "
           "or raise --max-memory", dir, static_cast<double>(bytes) / 1e9, std::strerror(err));
    }
  }
  ~DiskStore() override { ::close(fd_); }
  void get(int64_t s, float* out) const override { io(false, s, out); }
  void put(int64_t s, const float* in) override { io(true, s, const_cast<float*>(in)); }
  bool on_disk() const override { return true; }

 private:
  void io(bool write, int64_t s, float* p) const {
    const size_t n = static_cast<size_t>(floats_) * 4;
    size_t done = 0;
    const off_t base = static_cast<off_t>(s * floats_ * 4);
    while (done < n) {
      auto* b = reinterpret_cast<char*>(p) + done;
      const ssize_t r = write ? ::pwrite(fd_, b, n - done, base + static_cast<off_t>(done))
                              : ::pread(fd_, b, n - done, base + static_cast<off_t>(done));
      if (r < 0 && errno == EINTR) continue;
      QUANT_CHECK(r > 0, "{}: {} calibration activations failed: {}", dir_, write ? "writing" : "reading",
                  r < 0 ? std::strerror(errno) : "end of file");
      done += static_cast<size_t>(r);
    }
  }
  std::string dir_;
  int fd_ = -1;
};

}  // namespace

std::unique_ptr<ActStore> make_act_store(int64_t windows, int64_t floats, const std::string& dir) {
  if (dir.empty()) return std::make_unique<MemoryStore>(windows, floats);
  return std::make_unique<DiskStore>(windows, floats, dir);
}

}  // namespace quant
