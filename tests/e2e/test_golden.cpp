// The bytes of every method and format on the bundled model, fixed: a refactor of the pipeline
// (the quantization stage, the writers) must not move a single output byte. Commands run in a
// temporary directory with relative paths (model, calibration text, plans), so the paths the
// files record are the same on every machine. A change that is meant to change outputs updates
// the hashes here, in the same commit, and says why.
#include <fmt/format.h>

#include <map>

#include "../common.h"

namespace {

struct Golden {
  const char* name;
  const char* args;    // after `quant convert m`
  const char* out;     // output path, relative to the run directory
  const char* sha256;  // of `out`, recorded at 2 threads
  int threads;         // run at: every method at 1 and at 4 threads somewhere below, so the hashes
                       // also prove the bytes do not depend on the thread count
};

// Calibration small enough for seconds per run; the flags are the ones each path needs.
const char* kCal = "--calib calib.txt --nsamples 8 --seqlen 128";

    // rtn Q4_0 changed 2026-12-03: quantizers compiled without FMA write llama.cpp's bytes exactly.
const Golden kGolden[] = {
    {"rtn Q4_0", "--qtype Q4_0", "rtn-q4_0.gguf", "aac253193081fc5ce6dbf5eff6a323f6d44a16c0294247e687e56247b0775e85", 1},
    {"rtn int3 g32", "--bits 3 --group-size 32", "rtn-int3.gguf", "22d123cba589e19266f263afde4cb1c473ff3d1165412e87f65d572a6e8f281e", 4},
    {"rtn int4 g128 sym mse", "--bits 4 --group-size 128 --sym --grid-search mse", "rtn-int4-mse.gguf", "885d3a1af49b48da88db71868338c8c65a06c5bd8df4d2c4e794cf93db1343f6", 2},
    {"gptq int4 g32 act-order", "--method gptq --bits 4 --group-size 32 --act-order {cal}", "gptq-int4.gguf", "92a2a1f54182ffe844103199b85af300b489fdec26db7d944cc9d61154a65edd", 1},
    {"gptq int3 g128 from stats", "--method gptq --bits 3 --group-size 128 --stats stats", "gptq-stats.gguf", "8171ba45b39704cfb4a6c012c1d6dc97e1f2967ab6f227dd47ff594c02358a33", 4},
    {"awq int4 g32", "--method awq --bits 4 --group-size 32 --search-windows 4 --awq-grid 5 {cal}", "awq-int4.gguf", "b60498a937b1a81ea0deb839594f050bdc7d5c318783b2e5f3f154932ee26856", 1},
    {"awq+gptq int3 g32", "--method awq+gptq --bits 3 --group-size 32 --search-windows 4 --awq-grid 5 {cal}", "awq-gptq-int3.gguf", "81817cb0179eef5fbfb9390fba3b0f16a044b800a03ceb5eb5544dd49cb769ae", 4},
    {"smoothquant 0.5 Q8_0", "--method smoothquant --alpha 0.5 --qtype Q8_0 {cal}", "sq.gguf", "27c90cf262a830e2bdbb2f6055de29b0e0fd46e3c761bfa60a65da7e5f4a361a", 1},
    {"smoothquant auto Q8_0", "--method smoothquant --alpha auto --search-windows 4 --qtype Q8_0 {cal}", "sq-auto.gguf", "33f0b424e0483dc614511045ea673ac5a4578595c555985d64cb49d844ac5a1a", 4},
    {"plan rtn gguf", "--plan plan-rtn.json", "plan-rtn.gguf", "0cc2c78fe906feca75631cfc8c3a1470a9a6f22e69294f39dc9253d56926812e", 4},
    {"plan gptq gguf", "--plan plan-gptq.json {cal}", "plan-gptq.gguf", "ceb2b63d1bbf907dc43e320f5c9199a37304113d65130082b82d03e076659049", 1},
    {"onnx rtn int4 g32", "--bits 4 --group-size 32", "onnx-rtn/model.onnx", "da871a2dbb5beccc5746280d16d10f5712bb116ffe56693ea8e7e08d9d785fdc", 1},
    {"onnx gptq int4 g128 act-order", "--method gptq --bits 4 --group-size 128 --act-order --sym {cal}", "onnx-gptq/model.onnx", "b567ff7b745bb3fbac9e852e23ce7c551918860aa36cce91d818c50363422a29", 4},
    {"onnx awq int4 g32", "--method awq --bits 4 --group-size 32 --search-windows 4 --awq-grid 5 {cal}", "onnx-awq/model.onnx", "4472e4d0312b8bc713271e360160257014249459503cab8d047d07cd7bb37849", 4},
    {"onnx plan gptq", "--plan plan-gptq.json {cal}", "onnx-plan/model.onnx", "2cd3395a71044123bbf31f14bbff2655e794afa96514389780596fc1683a7520", 1},
};

// The plans `quant plan` writes from proxy-only sweeps (they feed the plan rows above).
const std::map<std::string, std::string> kPlans = {{"plan-rtn.json", "3b26bc79b6b4341bb8d2ce9a8567943aff5b110363b67974349e02c9057b115d"}, {"plan-gptq.json", "9981e75e8ac324a8c0e53cc7610033376621beaaeb6bbcb9d7a60bd316cb8a77"}};

std::string sha256(const std::string& path) {
  const auto r = qt::run("sha256sum '" + path + "'");
  REQUIRE(r.code == 0);
  return r.out.substr(0, 64);
}

}  // namespace

TEST_CASE("golden: every method and format writes the same bytes as before", "[e2e][golden]") {
  qt::TempDir tmp;
  namespace fs = std::filesystem;
  fs::create_directory_symlink(qt::bundled_model(), tmp.path / "m");
  fs::create_symlink(qt::kjv_calib(), tmp.path / "calib.txt");
  const std::string cd = "cd '" + tmp.path.string() + "' && " + qt::quant_bin();
  auto step = [&](const std::string& cmd) {
    const auto r = qt::run(cd + " " + cmd + " --quiet");
    INFO(cmd << "\n" << r.out);
    REQUIRE(r.code == 0);
  };
  step(fmt::format("calibrate m -o stats {} --threads 4", kCal));
  step(fmt::format("sweep m --proxy-only --method rtn --bits 3,4,8 --group-size 32 --granularity block -o sweep-rtn.json {} --threads 1", kCal));
  step("plan sweep-rtn.json --linear-bpw 4.5 -o plan-rtn.json");
  step(fmt::format("sweep m --proxy-only --method gptq --bits 2,4,8 --group-size 64 --granularity kind -o sweep-gptq.json {} --threads 4", kCal));
  step("plan sweep-gptq.json --linear-bpw 4 -o plan-gptq.json");
  std::map<std::string, std::string> got;
  for (const char* plan : {"plan-rtn.json", "plan-gptq.json"}) got[plan] = sha256(tmp / plan);
  for (const Golden& g : kGolden) {
    step(fmt::format("convert m -o {} {} --threads {}", g.out, fmt::format(fmt::runtime(g.args), fmt::arg("cal", kCal)), g.threads));
    got[g.name] = sha256(tmp / g.out);
  }
  for (const auto& [plan, sha] : kPlans) {
    INFO(plan << ": " << got[plan]);
    CHECK(got[plan] == sha);
  }
  for (const Golden& g : kGolden) {
    INFO(g.name << ": " << got[g.name]);
    CHECK(got[g.name] == g.sha256);
  }
}
