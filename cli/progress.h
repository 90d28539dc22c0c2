// Progress on stderr with elapsed time and ETA: a rewritten line on a terminal, a line per
// ~10% otherwise (CI logs), nothing when quiet.
#pragma once

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include <fmt/format.h>

namespace quant::cli {

// What the command does after the step a bar shows, and how long each should take (seconds < 0:
// not estimated): every ETA line says it ("then gptq ~40s, before/after ... ~15s"), and the
// command's ETA when every later step is estimated, so an ETA never passes for the whole
// command's when it is not. A bar named for a step starts that step: it and those before it are
// dropped from the list.
struct StepAfter {
  std::string bar;   // the Progress bar that runs it ("gptq", "compare")
  std::string what;  // as the lines say it
  double seconds = -1;
};
inline std::vector<StepAfter>& steps_after() {
  static std::vector<StepAfter> s;
  return s;
}

// Set by a command to estimate steps_after()'s seconds (a timed forward of the model); run once,
// just before the first progress line is printed: after the command's checks, so bad input fails
// before any timing, and at once, so the timing is not a silence before the first line.
inline std::function<void()>& estimate_steps() {
  static std::function<void()> f;
  return f;
}

class Progress {
 public:
  Progress(std::string what, bool quiet) : what_(std::move(what)), quiet_(quiet), tty_(::isatty(2)) {
    if (quiet_) return;  // a quiet step (a probe) is none of the command's
    auto& after = steps_after();
    for (size_t i = 0; i < after.size(); ++i)
      if (after[i].bar == what_) {
        after.erase(after.begin(), after.begin() + static_cast<std::ptrdiff_t>(i) + 1);
        break;
      }
  }
  void update(int64_t done, int64_t total, const std::string& detail = "") {
    if (quiet_ || total <= 0) return;
    if (estimate_steps()) {
      const auto t = std::chrono::steady_clock::now();
      const std::function<void()> f = std::move(estimate_steps());
      estimate_steps() = nullptr;
      f();
      t0_ += std::chrono::steady_clock::now() - t;  // the timing is not this step's
    }
    const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
    const int64_t decile = done * 10 / total;
    if (!tty_ && decile == last_decile_ && done != total) return;
    last_decile_ = decile;
    // No ETA before 2% of the steps are done (the first steps carry the setup: extrapolated alone
    // they promised a sweep of 319 s 2,318 s), never a made-up 0.
    const bool known = done > 0 && done * 50 >= total;
    const double left = known ? el / static_cast<double>(done) * static_cast<double>(total - done) : 0;
    const std::string eta = known ? fmt::format("ETA {:.1f}s", left) : std::string("ETA --");
    std::string then;
    double later = 0;
    for (const auto& st : steps_after()) {
      then += (then.empty() ? " (then " : ", ") + st.what + (st.seconds >= 0 ? fmt::format(" ~{:.0f}s", st.seconds) : "");
      later = st.seconds >= 0 && later >= 0 ? later + st.seconds : -1;
    }
    if (!then.empty()) then += later >= 0 && known ? fmt::format("; command ETA ~{:.0f}s)", left + later) : ")";
    std::fprintf(stderr, "%s[%s] %lld/%lld  %.1fs elapsed  %s%s  %s%s", tty_ ? "\r\033[K" : "", what_.c_str(),
                 static_cast<long long>(done), static_cast<long long>(total), el, eta.c_str(), then.c_str(), detail.c_str(),
                 tty_ && done != total ? "" : "\n");
    std::fflush(stderr);
  }

 private:
  std::string what_;
  bool quiet_, tty_;
  int64_t last_decile_ = -1;
  std::chrono::steady_clock::time_point t0_ = std::chrono::steady_clock::now();
};

}  // namespace quant::cli
