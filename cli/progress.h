// Progress on stderr with elapsed time and ETA: a rewritten line on a terminal, a line per
// ~10% otherwise (CI logs), nothing when quiet.
#pragma once

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>

#include <fmt/format.h>

namespace quant::cli {

// What the command does after the step a bar shows ("before/after on 2 x 24 windows"): every ETA
// says it, so an ETA never passes for the whole command's when it is not. Empty: nothing after.
inline std::string& steps_after() {
  static std::string s;
  return s;
}

class Progress {
 public:
  Progress(std::string what, bool quiet) : what_(std::move(what)), quiet_(quiet), tty_(::isatty(2)) {}
  void update(int64_t done, int64_t total, const std::string& detail = "") {
    if (quiet_ || total <= 0) return;
    const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
    const int64_t decile = done * 10 / total;
    if (!tty_ && decile == last_decile_ && done != total) return;
    last_decile_ = decile;
    // No ETA before 2% of the steps are done (the first steps carry the setup: extrapolated alone
    // they promised a sweep of 319 s 2,318 s), never a made-up 0.
    const std::string eta = done > 0 && done * 50 >= total ? fmt::format("ETA {:.1f}s", el / static_cast<double>(done) * static_cast<double>(total - done))
                                     : std::string("ETA --");
    const std::string& after = steps_after();
    std::fprintf(stderr, "%s[%s] %lld/%lld  %.1fs elapsed  %s%s  %s%s", tty_ ? "\r\033[K" : "", what_.c_str(),
                 static_cast<long long>(done), static_cast<long long>(total), el, eta.c_str(),
                 after.empty() ? "" : (" (then " + after + ")").c_str(), detail.c_str(), tty_ && done != total ? "" : "\n");
    std::fflush(stderr);
  }

 private:
  std::string what_;
  bool quiet_, tty_;
  int64_t last_decile_ = -1;
  std::chrono::steady_clock::time_point t0_ = std::chrono::steady_clock::now();
};

}  // namespace quant::cli
