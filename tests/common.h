// Shared test helpers: where the data lives, temporary directories, running the CLI.
#pragma once

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <unistd.h>

namespace qt {

namespace fs = std::filesystem;

inline std::string repo(const std::string& rel) { return std::string(QUANT_REPO_DIR) + "/" + rel; }
inline std::string shared(const std::string& rel) { return std::string(QUANT_SHARED_DIR) + "/" + rel; }
inline std::string bundled_model() { return repo("models/kjvwiki-9m"); }

// The first 1,500 verses of data/kjv/kjv_train.txt (192 KB, ~45k tokens), written once into the
// build tree: calibration text enough for every test's windows. Each quant run tokenizes its
// whole --calib text, and the full 4 MB file costs ~7 s a run.
inline std::string kjv_calib() {
  static const std::string path = [] {
    const std::filesystem::path p = std::filesystem::path(QUANT_BUILD_DIR) / "test-data" / "kjv_train_1500.txt";
    if (std::filesystem::exists(p)) return p.string();
    std::filesystem::create_directories(p.parent_path());
    std::ifstream in(repo("data/kjv/kjv_train.txt"));
    const std::filesystem::path tmp = p.string() + ".tmp" + std::to_string(::getpid());  // parallel ctest processes
    {
      std::ofstream out(tmp, std::ios::binary);
      std::string line;
      for (int i = 0; i < 1500 && std::getline(in, line); ++i) out << line << "\n";
    }
    std::filesystem::rename(tmp, p);
    return p.string();
  }();
  return path;
}
inline std::string quant_bin() { return std::string(QUANT_BIN_DIR) + "/quant"; }

// Skips the test (with the reason) when a ../shared file is absent.
#define REQUIRE_SHARED(rel)                                                         \
  do {                                                                              \
    if (!std::filesystem::exists(qt::shared(rel))) {                                \
      WARN("skipped: " << qt::shared(rel) << " is absent (../shared not present)"); \
      return;                                                                       \
    }                                                                               \
  } while (0)

// A fresh directory under the build tree, removed at scope exit.
struct TempDir {
  fs::path path;
  TempDir() {
    std::random_device rd;
    path = fs::path(QUANT_BUILD_DIR) / "test-tmp" / std::to_string(rd());
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string operator/(const std::string& name) const { return (path / name).string(); }
};

struct RunResult {
  int code;
  std::string out;  // stdout and stderr together
};

inline RunResult run(const std::string& cmd) {
  RunResult r{0, {}};
  FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
  REQUIRE(p);
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) r.out.append(buf, n);
  const int st = ::pclose(p);
  r.code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

inline std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// A refused input: exit 1 and one "error:" line that contains every fragment.
inline void expect_error(const RunResult& r, std::initializer_list<std::string> fragments) {
  INFO(r.out);
  CHECK(r.code == 1);
  CHECK(r.out.rfind("error: ", 0) == 0);
  CHECK(std::count(r.out.begin(), r.out.end(), '\n') == 1);
  for (const auto& f : fragments) CHECK(r.out.find(f) != std::string::npos);
}

inline void write_file(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary);
  out << data;
}

}  // namespace qt
