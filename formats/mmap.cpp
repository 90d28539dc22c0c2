// MappedFile and AtomicFile.
#include "quant/formats/mmap.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <map>
#include <mutex>
#include <random>

namespace quant {

namespace {

// Inputs by (device, inode), with the path they were opened as.
std::mutex g_inputs_mu;
std::map<std::pair<dev_t, ino_t>, std::string> g_inputs;

void note_stat(const struct stat& st, const std::string& path) {
  std::lock_guard<std::mutex> lock(g_inputs_mu);
  g_inputs.emplace(std::pair{st.st_dev, st.st_ino}, path);
}

// Live temporaries for the signal handler: fixed storage, read there without locks.
constexpr int kSlots = 64;
constexpr size_t kPathMax = 4096;
char g_tmp_paths[kSlots][kPathMax];
std::atomic<bool> g_tmp_live[kSlots];
std::mutex g_tmp_mu;

extern "C" void unlink_temporaries_and_die(int sig) {
  for (int i = 0; i < kSlots; ++i)
    if (g_tmp_live[i].load()) ::unlink(g_tmp_paths[i]);
  std::signal(sig, SIG_DFL);
  std::raise(sig);
}

void install_handlers() {
  static std::once_flag once;
  std::call_once(once, [] {
    // Past a file-size limit (ulimit -f) a write then fails with EFBIG and is reported, rather
    // than the process dying of SIGXFSZ with its temporary left behind.
    struct sigaction fsz {};
    if (::sigaction(SIGXFSZ, nullptr, &fsz) == 0 && fsz.sa_handler == SIG_DFL) std::signal(SIGXFSZ, SIG_IGN);
    for (int sig : {SIGTERM, SIGINT, SIGHUP}) {
      struct sigaction old {};
      if (::sigaction(sig, nullptr, &old) != 0 || old.sa_handler != SIG_DFL) continue;  // someone else's handler
      struct sigaction sa {};
      sa.sa_handler = unlink_temporaries_and_die;
      sigemptyset(&sa.sa_mask);
      ::sigaction(sig, &sa, nullptr);
    }
  });
}

int claim_slot(const std::string& tmp) {
  install_handlers();
  if (tmp.size() >= kPathMax) return -1;
  std::lock_guard<std::mutex> lock(g_tmp_mu);
  for (int i = 0; i < kSlots; ++i)
    if (!g_tmp_live[i].load()) {
      std::memcpy(g_tmp_paths[i], tmp.c_str(), tmp.size() + 1);
      g_tmp_live[i].store(true);
      return i;
    }
  return -1;  // more than 64 files open for writing at once: no cleanup on a signal for this one
}

void release_slot(int i) {
  if (i >= 0) g_tmp_live[i].store(false);
}

bool process_gone(const std::string& digits) {
  if (digits.empty() || digits.size() > 9 || digits.find_first_not_of("0123456789") != std::string::npos) return false;
  const pid_t pid = static_cast<pid_t>(std::stol(digits));
  return pid > 0 && pid != ::getpid() && ::kill(pid, 0) != 0 && errno == ESRCH;
}

}  // namespace

void note_input(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0) note_stat(st, path);
}

void forget_input(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return;
  std::lock_guard<std::mutex> lock(g_inputs_mu);
  g_inputs.erase(std::pair{st.st_dev, st.st_ino});
}

void check_not_input(const std::string& target) {
  struct stat st {};
  if (::stat(target.c_str(), &st) != 0) return;  // not there yet: not an input
  std::lock_guard<std::mutex> lock(g_inputs_mu);
  const auto it = g_inputs.find(std::pair{st.st_dev, st.st_ino});
  if (it == g_inputs.end()) return;
  // A noted input since deleted frees its inode for a new file: only a path that still names the
  // noted file is one.
  struct stat was {};
  if (::stat(it->second.c_str(), &was) != 0 || was.st_dev != st.st_dev || was.st_ino != st.st_ino) {
    g_inputs.erase(it);
    return;
  }
  fail("{}: is an input of this run ({}): write the output elsewhere", target, it->second);
}

int remove_stale_temporaries(const std::string& path) {
  namespace fs = std::filesystem;
  const fs::path p(path);
  const fs::path dir = p.has_parent_path() ? p.parent_path() : fs::path(".");
  const std::string file = p.filename().string(), file_tmp = file + ".tmp", dir_tmp = "." + file + ".tmp-";
  std::error_code ec;
  int removed = 0;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string n = it->path().filename().string();
    std::string pid;
    if (n.rfind(file_tmp, 0) == 0) {  // path.tmp<pid>.<n>
      const std::string rest = n.substr(file_tmp.size());
      const size_t dot = rest.find('.');
      if (dot == std::string::npos || rest.find_first_not_of("0123456789", dot + 1) != std::string::npos) continue;
      pid = rest.substr(0, dot);
    } else if (n.rfind(dir_tmp, 0) == 0) {  // .name.tmp-<pid> (directories of the GPTQ-format writer)
      pid = n.substr(dir_tmp.size());
    } else {
      continue;
    }
    if (!process_gone(pid)) continue;
    std::error_code rm;
    fs::remove_all(it->path(), rm);
    removed += !rm;
  }
  return removed;
}

MappedFile::MappedFile(const std::string& path) : path_(path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  QUANT_CHECK(fd >= 0, "{}: cannot open: {}", path, std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    fail("{}: not a regular file", path);
  }
  note_stat(st, path);
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
  check_not_input(path_);
  QUANT_CHECK(!std::filesystem::is_directory(path_), "{}: is a directory", path_);
  remove_stale_temporaries(path_);
  std::random_device rd;
  tmp_ = path_ + ".tmp" + std::to_string(::getpid()) + "." + std::to_string(rd() % 100000);
  slot_ = claim_slot(tmp_);
  f_ = std::fopen(tmp_.c_str(), "wb");
  if (!f_) {
    const int err = errno;
    release_slot(slot_);
    fail("{}: cannot write: {}", path_, std::strerror(err));
  }
}

AtomicFile::~AtomicFile() {
  if (f_) std::fclose(f_);
  if (!done_) std::remove(tmp_.c_str());
  release_slot(slot_);
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
  check_not_input(path_);  // an input read after this file was opened
  QUANT_CHECK(std::rename(tmp_.c_str(), path_.c_str()) == 0, "{}: cannot rename into place: {}", path_,
              std::strerror(errno));
  done_ = true;
  release_slot(slot_);
  slot_ = -1;
}

}  // namespace quant
