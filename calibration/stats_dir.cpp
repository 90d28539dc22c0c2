// quant calibrate: statistics of the FP model saved to a directory, and GPTQ from them.
#include "quant/calibration/stats_dir.h"

#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "quant/bitplan.h"
#include "quant/error.h"
#include "quant/calibration/sequential.h"
#include "quant/formats/imatrix.h"
#include "quant/formats/mmap.h"
#include "quant/formats/safetensors.h"

namespace quant {

namespace fs = std::filesystem;

namespace {
nlohmann::json model_json(const LlamaConfig& c) {
  return {{"dim", c.dim}, {"hidden", c.hidden}, {"n_layers", c.n_layers}, {"n_heads", c.n_heads},
          {"n_kv_heads", c.n_kv_heads}, {"vocab", c.vocab}};
}
std::string block_file(const std::string& dir, int64_t l) { return (fs::path(dir) / ("blk." + std::to_string(l) + ".safetensors")).string(); }

SafeTensorOut f32_tensor(const std::string& name, const std::vector<double>& v, std::vector<int64_t> shape) {
  SafeTensorOut t{name, TType::F32, std::move(shape), std::vector<uint8_t>(v.size() * 4)};
  for (size_t i = 0; i < v.size(); ++i) {
    const float f = static_cast<float>(v[i]);
    std::memcpy(t.data.data() + 4 * i, &f, 4);
  }
  return t;
}
}  // namespace

void calibrate_to_dir(const LlamaConfig& cfg, const WeightStore& store, const std::vector<std::vector<int32_t>>& windows,
                      const CalibSpec& spec, const std::string& dir, const std::function<void(int64_t, int64_t)>& progress,
                      Imatrix* imatrix) {
  QUANT_CHECK(!windows.empty(), "calibration needs windows");
  std::error_code ec;
  if (!dir.empty()) {
    fs::create_directories(dir, ec);
    QUANT_CHECK(!ec && fs::is_directory(dir), "{}: cannot create directory: {}", dir, ec.message());
    fs::remove(fs::path(dir) / "manifest.json", ec);  // incomplete until rewritten at the end
  }
  const int64_t D = cfg.dim, T = static_cast<int64_t>(windows[0].size()), S = static_cast<int64_t>(windows.size());
  if (imatrix) {
    *imatrix = Imatrix{};
    imatrix->datasets = {spec.file};
    imatrix->chunk_count = static_cast<int32_t>(S);
    imatrix->chunk_size = static_cast<int32_t>(T);
  }
  std::vector<float> X = embed_windows(cfg, store, windows);
  for (int64_t l = 0; l < cfg.n_layers; ++l) {
    if (progress) progress(l, cfg.n_layers);
    BlockTensors blk(cfg, store, l);
    const BlockWeights bw = blk.view();
    std::vector<InputStats> stats;
    for (int t = 0; t < kNumTaps; ++t) stats.emplace_back(tap_width(cfg, static_cast<Tap>(t)));
    for (int64_t s = 0; s < S; ++s)
      run_block(cfg, bw, X.data() + s * T * D, T, [&](Tap t, const float* data, int64_t rows, int64_t) {
        stats[static_cast<size_t>(t)].add(data, rows);
      });
    if (imatrix)
      for (int t = 0; t < kNumTaps; ++t)
        for (const char* linear : linears_reading(static_cast<Tap>(t)))
          imatrix->entries[fmt::format("blk.{}.{}.weight", l, linear)] = {stats[static_cast<size_t>(t)].sum_squares(),
                                                                          stats[static_cast<size_t>(t)].count()};
    if (dir.empty()) continue;
    std::vector<SafeTensorOut> out;
    for (int t = 0; t < kNumTaps; ++t) {
      const std::string tap = tap_name(static_cast<Tap>(t));
      const int64_t w = tap_width(cfg, static_cast<Tap>(t));
      out.push_back(f32_tensor(tap + ".hessian", stats[static_cast<size_t>(t)].hessian(), {w, w}));
      out.push_back(f32_tensor(tap + ".mean_abs", stats[static_cast<size_t>(t)].mean_abs(), {w}));
      out.push_back(f32_tensor(tap + ".max_abs", stats[static_cast<size_t>(t)].max_abs(), {w}));
    }
    write_safetensors(block_file(dir, l), out);
  }
  if (progress) progress(cfg.n_layers, cfg.n_layers);
  if (dir.empty()) return;
  const nlohmann::json manifest = {{"format", "quant-stats"}, {"version", 1}, {"model", model_json(cfg)},
                                   {"calibration", spec.to_json()}, {"tokens", S * T}};
  AtomicFile f((fs::path(dir) / "manifest.json").string());
  const std::string text = manifest.dump(2);
  f.write(text.data(), text.size());
  f.commit();
}

StatsDir::StatsDir(const std::string& dir, const LlamaConfig& cfg) : dir_(dir), cfg_(cfg) {
  const std::string mpath = (fs::path(dir) / "manifest.json").string();
  std::ifstream in(mpath);
  QUANT_CHECK(in, "{}: no manifest.json (not a statistics directory, or calibrate did not finish)", dir);
  note_input(mpath);
  nlohmann::json m;
  try {
    m = nlohmann::json::parse(in);
  } catch (const std::exception& e) {
    fail("{}: not valid JSON: {}", mpath, e.what());
  }
  // An object of format quant-stats, version 1, before any field is looked up by type (a number
  // or a string where an object is due throws nlohmann's own error, not ours).
  check_json_format(m, "quant-stats", 1, "statistics directory's manifest", "quant calibrate", mpath);
  QUANT_CHECK(m.contains("model") && m["model"] == model_json(cfg), "{}: statistics are of another model ({} vs this model's {})",
              mpath, m.contains("model") ? m["model"].dump() : "none", model_json(cfg).dump());
  const auto c = m.find("calibration");
  calibration_ = c != m.end() ? c->dump() : "{}";
}

std::vector<double> StatsDir::read(int64_t block, Tap tap, const char* what, int64_t numel) const {
  const std::string path = block_file(dir_, block);
  SafetensorsFile f(path);
  const std::string name = std::string(tap_name(tap)) + "." + what;
  auto it = f.tensors().find(name);
  QUANT_CHECK(it != f.tensors().end(), "{}: statistic {} is missing", path, name);
  QUANT_CHECK(it->second.dtype == TType::F32 && static_cast<int64_t>(it->second.nbytes) == numel * 4,
              "{}: statistic {} has the wrong size ({} bytes, expected {} F32)", path, name, it->second.nbytes, numel);
  std::vector<double> v(static_cast<size_t>(numel));
  for (int64_t i = 0; i < numel; ++i) {
    float x;
    std::memcpy(&x, it->second.data + 4 * i, 4);
    QUANT_CHECK(std::isfinite(x), "{}: statistic {} is not finite at {}", path, name, i);
    v[static_cast<size_t>(i)] = x;
  }
  return v;
}

std::vector<double> StatsDir::hessian(int64_t block, Tap tap) const {
  const int64_t w = tap_width(cfg_, tap);
  return read(block, tap, "hessian", w * w);
}
std::vector<double> StatsDir::mean_abs(int64_t block, Tap tap) const { return read(block, tap, "mean_abs", tap_width(cfg_, tap)); }
std::vector<double> StatsDir::max_abs(int64_t block, Tap tap) const { return read(block, tap, "max_abs", tap_width(cfg_, tap)); }

}  // namespace quant
