// Calibration: text -> token windows -> per-input statistics of every decoder linear.
#pragma once

#include <chrono>
#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

namespace quant {

struct CalibSpec {
  std::string file;
  int64_t nsamples = 128;
  int64_t seqlen = 512;
  uint64_t seed = 0;
  std::string mode = "random";  // random: GPTQ's protocol; concat: consecutive windows
  nlohmann::json to_json() const;
};

// random: nsamples windows of seqlen tokens starting at uniform positions in [0, n - seqlen - 1]
// drawn from std::mt19937_64(seed) (GPTQ's get_wikitext2 draws the same way with Python's
// random). concat: windows [i*seqlen, (i+1)*seqlen) from the start. Throws when the text is
// shorter than one window plus one token, or seqlen exceeds max_ctx.
std::vector<std::vector<int32_t>> calibration_windows(const std::vector<int32_t>& tokens, const CalibSpec& spec,
                                                      int64_t max_ctx);
class Tokenizer;
// The recipe from text: spec.file read (plain, or .jsonl), encoded with BOS by `tok`, windows
// drawn as above.
std::vector<std::vector<int32_t>> calibration_windows(const Tokenizer& tok, const CalibSpec& spec, int64_t max_ctx);

// Statistics of one linear input, accumulated over calibration tokens. Per add(), X^T X is a
// fp32 GEMM over at most a window's rows (relative error ~ rows * 2^-24); across windows the sums
// are double.
// Seconds since t0 on the steady clock (the drivers' timings).
inline double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

class InputStats {
 public:
  explicit InputStats(int64_t width = 0);
  void add(const float* x, int64_t rows);  // x: [rows][width]
  int64_t width() const { return width_; }
  int64_t count() const { return n_; }
  std::vector<double> hessian() const;   // H = 2 X^T X / n, [width][width]
  std::vector<double> take_hessian() &&;  // the same, made in place of the sums (which are gone)
  std::vector<double> sum_squares() const;  // diag(X^T X): llama.cpp's imatrix Σx² per channel
  std::vector<double> mean_abs() const;  // AWQ's per-channel mean |x|
  std::vector<double> max_abs() const;   // SmoothQuant's per-channel max |x|
  void merge(const InputStats& other);

 private:
  int64_t width_ = 0, n_ = 0;
  std::vector<double> xtx_, sum_abs_, max_abs_;
};

}  // namespace quant
