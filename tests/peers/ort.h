// Runs ONNX files through the real ONNX Runtime (onnxruntime-node from npm) and compares its
// logits with our runtime's on the same files; the ONNX checker from Debian's python3-onnx.
#pragma once

#include <fmt/format.h>

#include <cstring>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <vector>

#include "../common.h"
#include "quant/formats/loader.h"
#include "quant/runtime.h"

namespace qt {

inline bool install_ort() {
  const RunResult r = run("bash " + repo("tests/peers/install.sh") + " " + QUANT_BUILD_DIR + " ort");
  if (r.code == 3) {
    WARN("skipped: npm is not installed, ONNX Runtime cannot be fetched");
    return false;
  }
  INFO(r.out);
  REQUIRE(r.code == 0);
  return true;
}

// onnx.checker.check_model(full_check=True) from Debian's python3-onnx on each file.
inline void check_with_onnx_checker(const std::vector<std::string>& files) {
  if (run("/usr/bin/python3 -c 'import onnx'").code != 0) {
    WARN("skipped the ONNX checker: /usr/bin/python3 has no onnx module (apt install python3-onnx)");
    return;
  }
  std::string cmd = "/usr/bin/python3 -c 'import onnx,sys\nfor p in sys.argv[1:]:\n  onnx.checker.check_model(p, full_check=True)\n  print(\"ok\", p)'";
  for (const auto& f : files) cmd += " " + f;
  const RunResult r = run(cmd);
  INFO(r.out);
  REQUIRE(r.code == 0);
}

struct OrtRun {
  int64_t vocab = 0;
  std::vector<double> nll;      // per scored position (gptq protocol: rows 0..ctx-2 of each window)
  std::vector<int32_t> argmax;
  std::vector<float> logits;    // the first `dump` windows, [ctx][vocab] each
  double seconds = 0;
};

inline OrtRun run_ort(const std::string& model, const std::vector<int32_t>& flat_windows, int64_t ctx, int64_t dump) {
  TempDir tmp;
  write_file(tmp / "ids.i32", std::string(reinterpret_cast<const char*>(flat_windows.data()), flat_windows.size() * 4));
  const std::string cmd = fmt::format("node {} {}/peers/ort {} {} {} {} {} 1", repo("tests/peers/ort_logits.mjs"),
                                      QUANT_BUILD_DIR, model, tmp / "ids.i32", ctx, tmp / "out", dump);
  const RunResult r = run(cmd);
  INFO(cmd << "\n" << r.out);
  REQUIRE(r.code == 0);
  const auto j = nlohmann::json::parse(slurp(tmp / "out.json"));
  OrtRun o;
  o.vocab = j["vocab"].get<int64_t>();
  o.nll = j["nll"].get<std::vector<double>>();
  o.argmax = j["argmax"].get<std::vector<int32_t>>();
  o.seconds = j["seconds"].get<double>();
  const std::string raw = slurp(tmp / "out.logits.f32");
  o.logits.resize(raw.size() / 4);
  std::memcpy(o.logits.data(), raw.data(), raw.size());
  REQUIRE(static_cast<int64_t>(o.logits.size()) == dump * ctx * o.vocab);
  return o;
}

struct Agreement {
  double max_abs_dlogit = 0, top1 = 0;
  int64_t positions = 0;
};

// ONNX Runtime's logits of the dumped windows against our runtime's on the same file.
inline Agreement compare_logits(const std::string& model, const std::vector<int32_t>& flat, int64_t ctx, const OrtRun& ort) {
  quant::LoadedModel m = quant::load_model(model);
  quant::LlamaRuntime rt(m.config, *m.weights);
  const int64_t V = m.config.vocab;
  REQUIRE(ort.vocab == V);
  Agreement a;
  int64_t agree = 0;
  std::vector<float> ours;
  const int64_t windows = static_cast<int64_t>(ort.logits.size()) / (ctx * V);
  for (int64_t w = 0; w < windows; ++w) {
    rt.forward(std::span<const int32_t>(flat.data() + w * ctx, static_cast<size_t>(ctx)), 0, ours);
    for (int64_t j = 0; j < ctx; ++j) {
      const float* x = ours.data() + j * V;
      const float* y = ort.logits.data() + (w * ctx + j) * V;
      for (int64_t v = 0; v < V; ++v) a.max_abs_dlogit = std::max(a.max_abs_dlogit, static_cast<double>(std::fabs(x[v] - y[v])));
      agree += (std::max_element(x, x + V) - x) == (std::max_element(y, y + V) - y);
      ++a.positions;
    }
  }
  a.top1 = static_cast<double>(agree) / static_cast<double>(a.positions);
  return a;
}

}  // namespace qt
