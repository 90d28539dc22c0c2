// Checkpoints of resumable GPTQ runs (calibration/include/quant/calibration/resume.h) in the
// container of formats/ckpt.h.
#include "quant/calibration/resume.h"

#include <fmt/format.h>

#include <filesystem>
#include <fstream>
#include <list>

#include "quant/calibration/sweep.h"
#include "quant/error.h"
#include "quant/formats/ckpt.h"
#include "quant/formats/mmap.h"
#include "quant/gptq.h"
#include "quant/hash.h"

namespace quant {

namespace fs = std::filesystem;

nlohmann::json run_identity(const LlamaConfig& cfg, const WeightStore& weights, const std::vector<TensorPlan>& plans,
                            const std::string& method, const GptqOptions& g, int grid_store,
                            const std::vector<std::vector<int32_t>>& windows) {
  nlohmann::json model = model_identity(cfg, weights);
  const std::vector<float> emb = weights.read_f32("token_embd.weight");  // the norms alone match every synthetic model
  model["embedding"] = fmt::format("fnv1a64:{:016x}", fnv1a(kFnv1aOffset, emb.data(), emb.size() * sizeof(float)));
  uint64_t h = kFnv1aOffset;
  for (const auto& w : windows) h = fnv1a(h, w.data(), w.size() * sizeof(int32_t));
  return {{"model", model},
          {"plans", fmt::format("fnv1a64:{:016x}", [&] {
             const std::string s = plans_to_json(plans).dump();
             return fnv1a(kFnv1aOffset, s.data(), s.size());
           }())},
          {"method", method},
          {"gptq", {{"damp", g.damp}, {"act_order", g.act_order}, {"block", g.block}, {"static_groups", g.static_groups}}},
          {"grid_store", grid_store},
          {"calibration", {{"n_windows", windows.size()}, {"seqlen", windows.empty() ? 0 : windows[0].size()},
                           {"tokens", fmt::format("fnv1a64:{:016x}", h)}}}};
}

namespace {

// The first difference between two identities, as "key: recorded vs now".
std::string first_difference(const nlohmann::json& was, const nlohmann::json& now, const std::string& at = "") {
  if (was.is_object() && now.is_object()) {
    for (const auto& [k, v] : now.items()) {
      if (!was.contains(k)) return fmt::format("{}{} is new", at, k);
      const std::string d = first_difference(was[k], v, at + k + ".");
      if (!d.empty()) return d;
    }
    return {};
  }
  if (was == now) return {};
  std::string a = was.dump(), b = now.dump();
  if (a.size() > 80) a = a.substr(0, 77) + "...";
  if (b.size() > 80) b = b.substr(0, 77) + "...";
  return fmt::format("{} was {}, is {}", at.empty() ? "the record" : at.substr(0, at.size() - 1), a, b);
}

nlohmann::json report_json(const TensorReport& r) {
  return {{"name", r.name}, {"method", method_name(r.method)}, {"seconds", r.seconds}, {"nmse", r.nmse}, {"loss", r.loss},
          {"damp", r.damp}, {"gemm_gflops", r.gemm_gflops}, {"retries", r.retries}, {"dead_columns", r.dead_columns}, {"kept", r.kept}};
}

TensorReport report_from(const nlohmann::json& j) {
  TensorReport r;
  r.name = j.at("name").get<std::string>();
  r.method = parse_method(j.at("method").get<std::string>());
  r.seconds = j.at("seconds").get<double>(), r.nmse = j.at("nmse").get<double>(), r.loss = j.at("loss").get<double>();
  r.damp = j.at("damp").get<double>(), r.gemm_gflops = j.at("gemm_gflops").get<double>();
  r.retries = j.at("retries").get<int>(), r.dead_columns = j.at("dead_columns").get<int64_t>(), r.kept = j.at("kept").get<bool>();
  return r;
}

template <typename T>
std::vector<T> blob_vector(const CkptFile& f, const std::string& name, size_t count) {
  if (count == 0) return {};
  const auto b = f.blob(name);
  QUANT_CHECK(b.size() == count * sizeof(T), "{}: {} holds {} bytes, its tensor needs {}", f.path(), name, b.size(), count * sizeof(T));
  std::vector<T> v(count);
  std::memcpy(v.data(), b.data(), b.size());
  return v;
}

size_t packed_size(int bits, size_t n) { return bits <= 4 ? (n + 1) / 2 : n; }

std::vector<uint8_t> pack_codes(const QuantWeight& q) {
  if (q.bits > 4) return q.codes;
  std::vector<uint8_t> out(packed_size(q.bits, q.codes.size()));
  for (size_t i = 0; i < q.codes.size(); ++i) {
    QUANT_CHECK(q.codes[i] < 16, "checkpoint: a {}-bit code of {}", q.bits, q.codes[i]);
    out[i / 2] |= static_cast<uint8_t>(q.codes[i] << (4 * (i % 2)));
  }
  return out;
}

std::vector<uint8_t> unpack_codes(std::vector<uint8_t> b, size_t n) {
  if (b.size() == n) return b;
  std::vector<uint8_t> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = (b[i / 2] >> (4 * (i % 2))) & 15;
  return out;
}

}  // namespace

RunCheckpoints::RunCheckpoints(std::string dir, nlohmann::json identity, bool resume) : dir_(std::move(dir)), identity_(std::move(identity)) {
  fs::create_directories(dir_);
  const fs::path run = fs::path(dir_) / "run.json";
  if (resume && fs::exists(run)) {
    nlohmann::json was;
    try {
      was = nlohmann::json::parse(std::ifstream(run));
    } catch (const std::exception&) {
      fail("{}: unreadable (not a quant work directory?): start without --resume, or give another --work", run.string());
    }
    const std::string diff = first_difference(was.value("identity", nlohmann::json()), identity_);
    QUANT_CHECK(diff.empty(), "--resume: {} belongs to another run ({}): run without --resume to start over there, or give --work "
                "for this run", dir_, diff);
    if (fs::exists(fs::path(dir_) / "acts.qckpt")) {
      const CkptFile acts((fs::path(dir_) / "acts.qckpt").string());
      forget_input(acts.path());  // ours, replaced after the next block
      done_ = acts.meta().value("block", int64_t{-1}) + 1;
      QUANT_CHECK(done_ >= 1, "{}: its block number is missing", acts.path());
      for (int64_t l = 0; l < done_; ++l) {  // every finished block checked now, not when the writer reaches it
        QUANT_CHECK(fs::exists(file(l)), "--resume: {} is missing ({} says block {} finished): run without --resume to start over",
                    file(l), acts.path(), done_ - 1);
        const CkptFile f(file(l));
        forget_input(f.path());
      }
    }
    return;
  }
  for (const auto& e : fs::directory_iterator(dir_)) {  // a fresh run: our earlier checkpoints go
    const std::string n = e.path().filename().string();
    if (n == "acts.qckpt" || (n.rfind("block-", 0) == 0 && e.path().extension() == ".qckpt")) fs::remove(e.path());
  }
  AtomicFile f(run.string());
  const std::string text = nlohmann::json{{"format", "quant-run"}, {"identity", identity_}}.dump(1) + "\n";
  f.write(text.data(), text.size());
  f.commit();
}

std::string RunCheckpoints::file(int64_t l) const { return (fs::path(dir_) / fmt::format("block-{:04d}.qckpt", l)).string(); }

void RunCheckpoints::save_block(int64_t l, const std::vector<Tensor>& tensors, ActStore& x) {
  {
    nlohmann::json meta = {{"block", l}, {"tensors", nlohmann::json::array()}};
    std::vector<std::pair<std::string, uint64_t>> decl;
    std::vector<std::pair<const void*, uint64_t>> data;
    std::list<std::vector<uint8_t>> packed;
    auto add = [&](const std::string& name, const void* p, uint64_t n) {
      if (n == 0) return;
      decl.emplace_back(name, n);
      data.emplace_back(p, n);
    };
    for (const auto& t : tensors) {
      const QuantWeight& q = t.q;
      meta["tensors"].push_back({{"name", t.name}, {"rows", q.rows}, {"cols", q.cols}, {"bits", q.bits}, {"group", q.group},
                                 {"sym", q.sym}, {"codes", q.codes.size()}, {"scales", q.scales.size()}, {"mins", q.mins.size()},
                                 {"g_idx", q.g_idx.size()}, {"levels", q.levels.size()}, {"kblocks", q.kblocks.size()},
                                 {"report", report_json(t.report)}});
      packed.push_back(pack_codes(q));  // two 4-bit codes a byte where they fit: half the disk
      add(t.name + ".codes", packed.back().data(), packed.back().size());
      add(t.name + ".scales", q.scales.data(), q.scales.size() * 4);
      add(t.name + ".mins", q.mins.data(), q.mins.size() * 4);
      add(t.name + ".g_idx", q.g_idx.data(), q.g_idx.size() * 4);
      add(t.name + ".levels", q.levels.data(), q.levels.size() * 4);
      add(t.name + ".kblocks", q.kblocks.data(), q.kblocks.size());
    }
    CkptWriter w(file(l), meta, decl);
    for (const auto& [p, n] : data) w.write(p, n);
    w.commit();
  }
  // The block's outputs after its file: a kill between the two resumes at this block again.
  const uint64_t bytes = static_cast<uint64_t>(x.windows() * x.window_floats()) * 4;
  CkptWriter w((fs::path(dir_) / "acts.qckpt").string(), {{"block", l}, {"windows", x.windows()}, {"floats", x.window_floats()}},
               {{"acts", bytes}});
  std::vector<float> buf;
  for (int64_t s = 0; s < x.windows(); ++s) {
    const float* p = x.data(s);
    if (!p) {
      buf.resize(static_cast<size_t>(x.window_floats()));
      x.get(s, buf.data());
      p = buf.data();
    }
    w.write(p, static_cast<uint64_t>(x.window_floats()) * 4);
  }
  w.commit();
  done_ = l + 1;
}

std::vector<RunCheckpoints::Tensor> RunCheckpoints::load_block(int64_t l) const {
  const CkptFile f(file(l));
  forget_input(f.path());  // a fresh run in this directory replaces it
  QUANT_CHECK(f.meta().value("block", int64_t{-1}) == l && f.meta().contains("tensors"), "{}: not block {}'s checkpoint", f.path(), l);
  std::vector<Tensor> out;
  try {
    for (const auto& t : f.meta().at("tensors")) {
      Tensor r;
      r.name = t.at("name").get<std::string>();
      QuantWeight& q = r.q;
      q.rows = t.at("rows").get<int64_t>(), q.cols = t.at("cols").get<int64_t>(), q.bits = t.at("bits").get<int>();
      q.group = t.at("group").get<int64_t>(), q.sym = t.at("sym").get<bool>();
      q.codes = unpack_codes(blob_vector<uint8_t>(f, r.name + ".codes", packed_size(q.bits, t.at("codes").get<size_t>())),
                             t.at("codes").get<size_t>());
      q.scales = blob_vector<float>(f, r.name + ".scales", t.at("scales").get<size_t>());
      q.mins = blob_vector<float>(f, r.name + ".mins", t.at("mins").get<size_t>());
      q.g_idx = blob_vector<int32_t>(f, r.name + ".g_idx", t.at("g_idx").get<size_t>());
      q.levels = blob_vector<float>(f, r.name + ".levels", t.at("levels").get<size_t>());
      q.kblocks = blob_vector<uint8_t>(f, r.name + ".kblocks", t.at("kblocks").get<size_t>());
      QUANT_CHECK(q.codes.size() == static_cast<size_t>(q.rows * q.cols), "{}: {} holds {} codes for {} x {}", f.path(), r.name,
                  q.codes.size(), q.rows, q.cols);
      r.report = report_from(t.at("report"));
      out.push_back(std::move(r));
    }
  } catch (const nlohmann::json::exception& e) {
    fail("{}: malformed checkpoint record: {}", f.path(), e.what());
  }
  return out;
}

void RunCheckpoints::load_outputs(ActStore& x) const {
  const CkptFile f((fs::path(dir_) / "acts.qckpt").string());
  forget_input(f.path());
  QUANT_CHECK(f.meta().value("block", int64_t{-1}) == done_ - 1 && f.meta().value("windows", int64_t{0}) == x.windows() &&
                  f.meta().value("floats", int64_t{0}) == x.window_floats(),
              "{}: holds block {}'s outputs of {} windows x {} values, the run needs block {}'s of {} x {}", f.path(),
              f.meta().value("block", int64_t{-1}), f.meta().value("windows", int64_t{0}), f.meta().value("floats", int64_t{0}), done_ - 1,
              x.windows(), x.window_floats());
  const auto b = f.blob("acts");
  QUANT_CHECK(b.size() == static_cast<size_t>(x.windows() * x.window_floats()) * 4, "{}: acts has {} bytes", f.path(), b.size());
  std::vector<float> buf(static_cast<size_t>(x.window_floats()));
  for (int64_t s = 0; s < x.windows(); ++s) {
    std::memcpy(buf.data(), b.data() + static_cast<size_t>(s * x.window_floats()) * 4, buf.size() * 4);
    x.put(s, buf.data());
  }
}

void RunCheckpoints::finish() {
  std::error_code ec;
  for (int64_t l = 0;; ++l)
    if (!fs::remove(file(l), ec)) break;
  fs::remove(fs::path(dir_) / "acts.qckpt", ec);
  fs::remove(fs::path(dir_) / "run.json", ec);
  fs::remove(dir_, ec);  // only when empty
}

}  // namespace quant
