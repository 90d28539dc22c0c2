// GPTQ-format checkpoints in: a synthetic hub-style GPTQ directory (quantization_config,
// qweight/qzeros/scales/g_idx, F16 elsewhere) reads as its exact grids, converts to GGUF and
// ONNX keeping every code, and refuses shapes that disagree with its config.
#include <nlohmann/json.hpp>

#include <iostream>

#include "../common.h"
#include "../peers/ort.h"
#include "../synth.h"
#include "quant/formats/loader.h"
#include "quant/gptq_format.h"
#include "quant/half.h"
#include "quant/quantize.h"
#include "quant/quant_weight.h"

using namespace quant;
namespace fs = std::filesystem;

namespace {

struct GptqCase {
  int bits;
  int64_t group;
  bool sym;
  GptqZeros zeros;
  bool act_order = false;  // g_idx permuted (desc_act without static groups)
};

bool is_linear(const std::string& hf) { return hf.find("_proj.weight") != std::string::npos; }

// Writes a GPTQ checkpoint of `s` and returns each linear's expected dequantized weight (HF name).
std::map<std::string, std::vector<float>> write_gptq_hf(const std::string& dir, const qt::Synth& s, const GptqCase& c) {
  fs::create_directories(dir);
  nlohmann::json cfg = qt::synth_config(s.cfg);
  cfg["quantization_config"] = {{"quant_method", "gptq"}, {"bits", c.bits}, {"group_size", c.group}, {"sym", c.sym},
                                {"desc_act", c.act_order}, {"checkpoint_format", c.zeros == GptqZeros::V1 ? "gptq" : "gptq_v2"}};
  qt::write_file(dir + "/config.json", cfg.dump(2));
  fs::copy_file(qt::bundled_model() + "/tokenizer.model", dir + "/tokenizer.model");
  std::vector<SafeTensorOut> out;
  std::map<std::string, std::vector<float>> expected;
  for (const auto& [name, t] : s.tensors) {
    if (!is_linear(name)) {
      out.push_back({name, TType::F16, t.first, qt::encode_as(t.second, TType::F16)});
      continue;
    }
    const int64_t rows = t.first[0], cols = t.first[1];
    QuantWeight q = rtn_grid(t.second.data(), rows, cols, GridSpec{c.bits, c.group, c.sym});
    if (c.zeros == GptqZeros::V1)  // v1 cannot hold zero 0: keep the synthetic grid away from it
      for (size_t i = 0; i < q.mins.size(); ++i)
        if (q.mins[i] == 0) q.mins[i] = -q.scales[i];
    GptqPacked p = pack_gptq(q, c.zeros, name);
    if (c.act_order)
      for (int64_t i = 0; i < cols; ++i) p.g_idx[static_cast<size_t>(i)] = static_cast<int32_t>((i * 13 % cols) / c.group);
    const std::string pre = name.substr(0, name.size() - 6);  // drop "weight"
    auto words = [](const std::vector<int32_t>& v) { return std::vector<uint8_t>(reinterpret_cast<const uint8_t*>(v.data()),
                                                                                 reinterpret_cast<const uint8_t*>(v.data() + v.size())); };
    out.push_back({pre + "qweight", TType::I32, {p.in * p.bits / 32, p.out}, words(p.qweight)});
    out.push_back({pre + "qzeros", TType::I32, {p.n_groups(), p.out * p.bits / 32}, words(p.qzeros)});
    out.push_back({pre + "scales", TType::F16, {p.n_groups(), p.out},
                   std::vector<uint8_t>(reinterpret_cast<const uint8_t*>(p.scales.data()),
                                        reinterpret_cast<const uint8_t*>(p.scales.data() + p.scales.size()))});
    out.push_back({pre + "g_idx", TType::I32, {p.in}, words(p.g_idx)});
    std::vector<float> w(static_cast<size_t>(rows * cols));
    unpack_gptq(p, c.zeros).dequantize(w.data());
    expected[name] = std::move(w);
  }
  write_safetensors(dir + "/model.safetensors", out);
  return expected;
}


// Every linear of m against the expected weights of its HF name.
void check_weights(const LoadedModel& m, const std::map<std::string, std::vector<float>>& expected, double rel_tol = 0) {
  int seen = 0;
  for (const auto& t : m.weights->tensors()) {
    auto it = expected.find(hf_tensor_name(t.name));
    if (it == expected.end()) continue;
    INFO(m.path << " " << t.name);
    const std::vector<float> got = m.weights->read_f32(t.name);
    if (rel_tol == 0) {
      CHECK(got == it->second);
    } else {
      double err = 0, mag = 0;
      for (size_t i = 0; i < got.size(); ++i) {
        err = std::max(err, std::abs(static_cast<double>(got[i]) - it->second[i]));
        mag = std::max(mag, std::abs(static_cast<double>(it->second[i])));
      }
      CHECK(err <= rel_tol * mag);
    }
    ++seen;
  }
  CHECK(seen == static_cast<int>(expected.size()));
}

}  // namespace

TEST_CASE("GPTQ checkpoint in: every linear reads as its dequantized grid (bits, sym/asym, v1/v2, act-order)", "[gptq_checkpoint]") {
  qt::TempDir tmp;
  const qt::Synth s = qt::make_synth(/*tied=*/false, /*bias=*/true, 21);
  for (const GptqCase& c : {GptqCase{4, 32, true, GptqZeros::V1}, GptqCase{4, 32, false, GptqZeros::V2}, GptqCase{3, 32, false, GptqZeros::V1},
                            GptqCase{2, 32, false, GptqZeros::V2}, GptqCase{8, 32, true, GptqZeros::V1}, GptqCase{4, 32, false, GptqZeros::V1, true}}) {
    const std::string dir = tmp / fmt::format("g{}{}{}{}", c.bits, c.sym, c.zeros == GptqZeros::V1, c.act_order);
    const auto expected = write_gptq_hf(dir, s, c);
    const LoadedModel m = load_model(dir);
    CHECK(m.info.at("quantization").find(fmt::format("gptq {}-bit", c.bits)) == 0);
    check_weights(m, expected);
    QuantWeight g;
    CHECK(m.weights->read_grid(m.weights->get("blk.0.attn_q.weight"), g));
    CHECK(g.g_idx.empty() == !c.act_order);
  }
}

TEST_CASE("GPTQ checkpoint to GGUF and ONNX: the grids pass through unchanged", "[gptq_checkpoint][cli]") {
  qt::TempDir tmp;
  const qt::Synth s = qt::make_synth(/*tied=*/false, /*bias=*/true, 22);
  for (const GptqCase& c : {GptqCase{4, 32, true, GptqZeros::V1}, GptqCase{4, 32, false, GptqZeros::V2}, GptqCase{8, 32, true, GptqZeros::V1},
                            GptqCase{3, 32, false, GptqZeros::V1}}) {
    const std::string dir = tmp / fmt::format("g{}{}", c.bits, c.sym);
    const auto expected = write_gptq_hf(dir, s, c);
    const std::string onnx_dir = tmp / fmt::format("o{}{}", c.bits, c.sym);
    fs::create_directories(onnx_dir);
    for (const std::string& out : {tmp / fmt::format("g{}{}.gguf", c.bits, c.sym), onnx_dir + "/model.onnx"}) {
      INFO(out);
      const qt::RunResult r = qt::run(qt::quant_bin() + " convert " + dir + " -o " + out + " --quiet --json");
      INFO(r.out);
      REQUIRE(r.code == 0);
      const auto j = nlohmann::json::parse(r.out);
      int kept = 0;
      for (const auto& t : j["tensor_reports"]) kept += t.value("kept", false) ? 1 : 0;
      CHECK(kept == 14);  // 7 linears x 2 layers
      const LoadedModel back = load_model(out);
      // ONNX keeps fp32 scales (exact); GGUF Q4_0 / Q8_0 hold sym grids exactly, Q4_1's fp16 min
      // rounds -zero * scale.
      check_weights(back, expected, c.sym || out.ends_with(".onnx") ? 0.0 : 1e-3);
    }
  }
}

TEST_CASE("GPTQ checkpoint bad input: shapes against quantization_config, act-order without --bits", "[gptq_checkpoint][cli]") {
  qt::TempDir tmp;
  const qt::Synth s = qt::make_synth(false, false, 23);
  const std::string dir = tmp / "m";
  write_gptq_hf(dir, s, {4, 32, true, GptqZeros::V1});
  auto expect_error = [&](const std::string& model, std::initializer_list<std::string> fragments) {
    const std::string out = tmp / "out";
    fs::create_directories(out);
    const qt::RunResult r = qt::run(qt::quant_bin() + " convert " + model + " -o " + out + "/m.gguf --quiet");
    INFO(r.out);
    CHECK(r.code == 1);
    CHECK(r.out.rfind("error: ", 0) == 0);
    CHECK(std::count(r.out.begin(), r.out.end(), '\n') == 1);
    for (const auto& f : fragments) CHECK(r.out.find(f) != std::string::npos);
    CHECK(fs::is_empty(out));
  };
  // group_size 64 in the config, tensors made with 32: qzeros and scales have twice the groups.
  nlohmann::json cfg = nlohmann::json::parse(qt::slurp(dir + "/config.json"));
  cfg["quantization_config"]["group_size"] = 64;
  qt::write_file(dir + "/config.json", cfg.dump());
  expect_error(dir, {"model.safetensors", "qzeros", "group_size 64"});
  cfg["quantization_config"]["group_size"] = 32;
  cfg["quantization_config"]["bits"] = 5;
  qt::write_file(dir + "/config.json", cfg.dump());
  expect_error(dir, {"config.json", "quantization_config.bits = 5"});
  cfg["quantization_config"]["bits"] = 4;
  cfg["quantization_config"]["quant_method"] = "awq";
  qt::write_file(dir + "/config.json", cfg.dump());
  expect_error(dir, {"config.json", "quant_method = awq"});
  const std::string act = tmp / "act";
  write_gptq_hf(act, s, {4, 32, false, GptqZeros::V2, true});
  expect_error(act, {"act-order", "--bits"});
}

TEST_CASE("GPTQ checkpoint out: our RTN and GPTQ grids written as one, read back code for code, kept on re-conversion",
          "[gptq_checkpoint][cli]") {
  qt::TempDir tmp;
  const qt::Synth s = qt::make_synth(/*tied=*/true, /*bias=*/true, 24);
  qt::write_hf(tmp / "fp", s, TType::F16);
  const std::string calib = " --calib " + qt::repo("data/kjv/kjv_heldout.txt") + " --nsamples 4 --seqlen 64";
  struct Run {
    std::string flags;
    bool sym;
    const char* zeros;
  };
  for (const Run& run : {Run{"--method rtn --bits 4 --group-size 32 --sym", true, "v1"},
                         Run{"--method gptq --bits 3 --group-size 32 --asym --act-order" + calib, false, "v2"},
                         Run{"--method gptq --bits 8 --group-size 0 --sym" + calib, true, "v1"}}) {
    INFO(run.flags);
    const std::string gptq = tmp / "gptq", onnx = tmp / "onnx";
    fs::remove_all(gptq);
    fs::remove_all(onnx);
    fs::create_directories(onnx);
    qt::RunResult r = qt::run(qt::quant_bin() + " convert " + (tmp / "fp") + " " + run.flags + " --format gptq-safetensors --gptq-zeros " +
                              run.zeros + " -o " + gptq + " --quiet --json");
    INFO(r.out);
    REQUIRE(r.code == 0);
    const nlohmann::json cfg = nlohmann::json::parse(qt::slurp(gptq + "/config.json"));
    CHECK(cfg["quantization_config"]["quant_method"] == "gptq");
    CHECK(cfg["quantization_config"]["checkpoint_format"] == (std::string(run.zeros) == "v1" ? "gptq" : "gptq_v2"));
    CHECK(cfg["quantization_config"]["sym"] == run.sym);
    CHECK(fs::exists(gptq + "/tokenizer.model"));
    if (run.flags.find("--group-size 0") != std::string::npos) {  // per channel: group_size -1, read back whole
      CHECK(cfg["quantization_config"]["group_size"] == -1);
      const LoadedModel a = load_model(gptq);
      QuantWeight q;
      CHECK(a.weights->read_grid(a.weights->get("blk.1.ffn_down.weight"), q));
      CHECK(q.group == 96);
      continue;
    }
    const qt::RunResult ro = qt::run(qt::quant_bin() + " convert " + (tmp / "fp") + " " + run.flags + " -o " + onnx + "/model.onnx --quiet");
    INFO(ro.out);
    REQUIRE(ro.code == 0);
    const LoadedModel a = load_model(gptq), b = load_model(onnx);
    CHECK(a.weights->find("output.weight") == nullptr);  // tied: no lm_head
    for (const auto& t : b.weights->tensors()) {
      QuantWeight qa, qb;
      if (!b.weights->read_grid(t, qb)) continue;
      INFO(t.name);
      REQUIRE(a.weights->read_grid(a.weights->get(t.name), qa));
      CHECK(qa.codes == qb.codes);  // the same run's codes (GPTQ: the same Hessians, fp32 scales in both)
      for (size_t i = 0; i < qb.scales.size(); ++i) CHECK(qa.scales[i] == fp16_to_f32(f32_to_fp16(qb.scales[i])));
    }
  }
  // Refusals: a ggml type, mixed grids, an existing non-empty directory; nothing written.
  fs::create_directories(tmp / "full");
  qt::write_file(tmp / "full/x", "x");
  for (const auto& [flags, fragment] : std::vector<std::pair<std::string, std::string>>{
           {"--qtype Q4_0 -o " + (tmp / "q"), "ggml type"},
           {"--bits 5 -o " + (tmp / "q"), "5-bit grids have no GPTQ layout"},
           {"--bits 4 -o " + (tmp / "full"), "not an empty directory"}}) {
    const qt::RunResult r = qt::run(qt::quant_bin() + " convert " + (tmp / "fp") + " --format gptq-safetensors " + flags + " --quiet");
    INFO(r.out);
    CHECK(r.code == 1);
    CHECK(r.out.find(fragment) != std::string::npos);
    CHECK(!fs::exists(tmp / "q"));
  }
}

TEST_CASE("GPTQ act-order checkpoint: g_idx kept in MatMulNBits (ONNX Runtime agrees) and in gptq-safetensors", "[gptq_checkpoint][cli][peers]") {
  qt::TempDir tmp;
  const qt::Synth s = qt::make_synth(/*tied=*/false, /*bias=*/true, 25);
  const std::string dir = tmp / "act", onnx = tmp / "onnx", back = tmp / "back";
  const auto expected = write_gptq_hf(dir, s, {4, 32, false, GptqZeros::V1, true});
  fs::create_directories(onnx);
  qt::RunResult r = qt::run(qt::quant_bin() + " convert " + dir + " -o " + onnx + "/model.onnx --quiet --json");
  INFO(r.out);
  REQUIRE(r.code == 0);
  const LoadedModel a = load_model(dir), o = load_model(onnx + "/model.onnx");
  check_weights(o, expected);  // MatMulNBits with g_idx: the checkpoint's weights, bit for bit
  QuantWeight g;
  REQUIRE(o.weights->read_grid(o.weights->get("blk.1.ffn_down.weight"), g));
  CHECK(!g.g_idx.empty());
  r = qt::run(qt::quant_bin() + " convert " + dir + " --format gptq-safetensors --gptq-zeros v2 -o " + back + " --quiet");
  INFO(r.out);
  REQUIRE(r.code == 0);
  const nlohmann::json cfg = nlohmann::json::parse(qt::slurp(back + "/config.json"));
  CHECK(cfg["quantization_config"]["desc_act"] == true);
  CHECK(cfg["quantization_config"]["checkpoint_format"] == "gptq_v2");
  check_weights(load_model(back), expected);  // v1 -> v2, g_idx and every code unchanged
  if (!qt::install_ort()) return;
  // ONNX Runtime's MatMulNBits reads g_idx (its dequantize-then-GEMM path): against our runtime.
  const std::vector<int32_t> flat = [&] {
    std::vector<int32_t> f;
    for (int w = 0; w < 4; ++w)
      for (int i = 0; i < 64; ++i) f.push_back(static_cast<int32_t>((w * 977 + i * 131) % s.cfg.vocab));
    return f;
  }();
  const qt::OrtRun ort = qt::run_ort(onnx + "/model.onnx", flat, 64, 4);
  const qt::Agreement ag = qt::compare_logits(onnx + "/model.onnx", flat, 64, ort);
  std::cout << fmt::format("act-order GPTQ checkpoint in ONNX Runtime vs quant: {} positions, top-1 {:.2f}%, max |dlogit| {:.2e}\n",
                           ag.positions, 100 * ag.top1, ag.max_abs_dlogit);
  CHECK(ag.top1 >= 0.99);
  CHECK(ag.max_abs_dlogit <= 1e-3);
}
