// The calibration activations of one decoder block, window by window: in memory, or spilled to a
// file in the work directory when the memory plan says they do not fit. Both hold exact fp32, so
// where they live never changes an output byte.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace quant {

class ActStore {
 public:
  virtual ~ActStore() = default;
  int64_t windows() const { return windows_; }
  int64_t window_floats() const { return floats_; }  // tokens x width
  virtual void get(int64_t s, float* out) const = 0;  // window s -> out[window_floats()]
  virtual void put(int64_t s, const float* in) = 0;
  // Memory stores: window s in place (nullptr on disk, where get/put copy).
  virtual float* data(int64_t /*s*/) { return nullptr; }
  virtual bool on_disk() const = 0;

 protected:
  ActStore(int64_t windows, int64_t floats) : windows_(windows), floats_(floats) {}
  int64_t windows_, floats_;
};

// `dir` empty: in memory. Else an unlinked file in `dir` (gone when the store is, even after a
// SIGKILL); a full disk is one error naming the directory and the bytes needed.
std::unique_ptr<ActStore> make_act_store(int64_t windows, int64_t floats_per_window, const std::string& dir);

}  // namespace quant
