// The quant CLI: machine-readable output, dry runs, inspect, and clear errors on bad input.
#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "../common.h"

namespace {
std::string q() { return qt::quant_bin(); }
std::string model() { return qt::bundled_model(); }
std::string heldout() { return qt::repo("data/kjv/kjv_heldout.txt"); }

using qt::expect_error;  // exit 1 and one "error:" line

bool dir_is_empty(const std::string& d) { return std::filesystem::is_empty(d); }
}  // namespace

TEST_CASE("quant ppl --json reports protocol, ctx, chunks and tokens", "[cli]") {
  const auto r = qt::run(q() + " ppl " + model() + " --text " + heldout() + " --chunks 2 --ctx 256 --protocol gptq --json --quiet");
  INFO(r.out);
  REQUIRE(r.code == 0);
  const auto j = nlohmann::json::parse(r.out);
  CHECK(j["protocol"] == "gptq");
  CHECK(j["ctx"] == 256);
  CHECK(j["chunks"] == 2);
  CHECK(j["tokens_scored"] == 2 * 255);
  CHECK(j["ppl"].get<double>() > 1);
  CHECK(j.contains("tokens_per_second"));
}

TEST_CASE("quant convert --dry-run prints the policy and convert + inspect show grid and stored type", "[cli]") {
  qt::TempDir tmp;
  auto r = qt::run(q() + " convert " + model() + " --bits 3 --group-size 32 --dry-run");
  INFO(r.out);
  REQUIRE(r.code == 0);
  CHECK(r.out.find("policy (first match wins)") != std::string::npos);
  CHECK(r.out.find("int3 g32 asym") != std::string::npos);
  CHECK(r.out.find("Q4_1") != std::string::npos);
  CHECK(dir_is_empty(tmp.path.string()));

  r = qt::run(q() + " convert " + model() + " --bits 3 --group-size 32 -o " + (tmp / "m.gguf") + " --quiet --json");
  INFO(r.out);
  REQUIRE(r.code == 0);
  const auto j = nlohmann::json::parse(r.out);
  CHECK(j["decoder_linear_logical_bpw"].get<double>() == Approx(3 + 19.0 / 32));
  // The stage's per-tensor metrics, one per tensor in file order: RTN's weight nmse where quantized.
  REQUIRE(j["tensor_reports"].size() == j["tensors"].size());
  for (size_t i = 0; i < j["tensors"].size(); ++i) {
    const auto& r = j["tensor_reports"][i];
    CHECK(r["name"] == j["tensors"][i]["name"]);
    if (r["name"] == "blk.0.ffn_down.weight") {
      CHECK(r["method"] == "rtn");
      CHECK(r["nmse"].get<double>() > 0);
      CHECK(r["nmse"].get<double>() < 0.1);
    }
  }
  r = qt::run(q() + " inspect " + (tmp / "m.gguf") + " --json");
  REQUIRE(r.code == 0);
  const auto ins = nlohmann::json::parse(r.out);
  bool seen = false;
  for (const auto& t : ins["tensors"])
    if (t["name"] == "blk.0.ffn_down.weight") {
      seen = true;
      CHECK(t["type"] == "Q4_1");
      CHECK(t["grid"] == "int3 g32 asym");
      CHECK(t["method"] == "rtn");
      CHECK(t["bpw"].get<double>() == 5.0);
    }
  CHECK(seen);
  CHECK(ins["metadata"]["quant.method"] == "\"rtn\"");
}

TEST_CASE("stories260K: ffn_down (K = 172) falls back to F16, documented in the dry run", "[cli]") {
  REQUIRE_SHARED("models/stories260K/stories260K.bin");
  const auto r = qt::run(q() + " convert " + qt::shared("models/stories260K/stories260K.bin") + " --qtype Q4_0 --dry-run --json");
  INFO(r.out);
  REQUIRE(r.code == 0);
  const auto j = nlohmann::json::parse(r.out);  // named: a temporary would die before the loop runs
  for (const auto& t : j["tensors"])
    if (t["name"] == "blk.0.ffn_down.weight") {
      CHECK(t["stored"] == "F16");
      CHECK(t["note"].get<std::string>().find("172 columns do not tile") != std::string::npos);
    }
}

TEST_CASE("bad input: one clear error, non-zero exit, no partial output", "[cli][bad-input]") {
  qt::TempDir tmp;
  qt::write_file(tmp / "empty.txt", "  \n\n");
  expect_error(qt::run(q() + " ppl " + model() + " --text " + (tmp / "empty.txt")), {"empty.txt", "text is empty"});
  qt::write_file(tmp / "short.txt", "In the beginning God created the heaven and the earth.");
  expect_error(qt::run(q() + " ppl " + model() + " --text " + (tmp / "short.txt")), {"text too short", "needs at least 1024"});
  expect_error(qt::run(q() + " ppl " + model() + " --text " + (tmp / "absent.txt")), {"absent.txt", "cannot open"});
  expect_error(qt::run(q() + " ppl " + model() + " --text " + heldout() + " --ctx 4096"), {"context 4096 exceeds"});
  const std::string out_dir = tmp / "out";
  std::filesystem::create_directories(out_dir);
  expect_error(qt::run(q() + " convert " + model() + " --qtype Q4_0 -o " + out_dir + "/no/such/dir/m.gguf --quiet"),
               {"m.gguf", "cannot write"});
  expect_error(qt::run(q() + " convert " + model() + " --qtype Q4_0 -o " + out_dir + " --quiet"), {"is a directory"});
  expect_error(qt::run(q() + " convert " + model() + " --qtype Q9_9 -o " + out_dir + "/x.gguf"), {"unknown quant spec \"Q9_9\""});
  expect_error(qt::run(q() + " convert " + model() + " --qtype Q4_K_X -o " + out_dir + "/x.gguf"), {"Q4_K_X", "Q4_K_M", "presets"});
  expect_error(qt::run(q() + " convert " + model() + " --qtype Q4_0 --pure -o " + out_dir + "/x.gguf"), {"--pure applies to a preset"});
  expect_error(qt::run(q() + " convert " + (tmp / "nope") + " --qtype Q4_0 -o " + out_dir + "/x.gguf"), {"nope", "no such file"});
  qt::write_file(tmp / "policy.json", R"([{"match": "*", "qtype": 4}])");
  expect_error(qt::run(q() + " convert " + model() + " --qtype Q4_0 --policy " + (tmp / "policy.json") + " -o " + out_dir + "/x.gguf"),
               {"policy.json", "match and qtype"});
  CHECK(dir_is_empty(out_dir));
}

// A JSON file or printed result without what measures time (seconds, rates): what must not depend
// on the thread count.
nlohmann::json without_timings(nlohmann::json j) {
  if (j.is_object()) {
    for (auto it = j.begin(); it != j.end();) {
      const std::string& k = it.key();
      if (k.find("seconds") != std::string::npos || k.find("per_s") != std::string::npos || k == "threads" || k == "time")
        it = j.erase(it);
      else
        *it = without_timings(*it), ++it;
    }
  } else if (j.is_array()) {
    for (auto& e : j) e = without_timings(e);
  }
  return j;
}

TEST_CASE("every method and output gives the same bytes and figures at 1, 2 and 4 threads", "[cli][determinism]") {
  qt::TempDir tmp;
  const std::string calib = " --calib " + qt::kjv_calib() + " --nsamples 4 --seqlen 128";
  struct Case {
    std::string name, command, out;
  };
  // RTN (a preset's k-quant mix, an integer grid), GPTQ with act-order, AWQ, SmoothQuant, the ONNX
  // export of RTN and GPTQ, a sweep and the plan made from it; then ppl's printed figures.
  const std::vector<Case> cases = {
      {"rtn Q4_K_M", "convert " + model() + " --qtype Q4_K_M", "x.gguf"},
      {"rtn int3", "convert " + model() + " --bits 3 --group-size 64 --asym", "x.gguf"},
      {"gptq act-order", "convert " + model() + " --method gptq --bits 3 --group-size 64 --act-order" + calib, "x.gguf"},
      {"awq", "convert " + model() + " --method awq --bits 4 --group-size 32 --search-windows 4 --awq-grid 4" + calib, "x.gguf"},
      {"smoothquant", "convert " + model() + " --method smoothquant --alpha 0.5 --qtype Q8_0" + calib, "x.gguf"},
      {"onnx rtn", "convert " + model() + " --format onnx --bits 4 --group-size 32", "o/model.onnx"},
      {"onnx gptq", "convert " + model() + " --format onnx --method gptq --bits 4 --group-size 128 --act-order" + calib, "o/model.onnx"},
      {"sweep", "sweep " + model() + calib + " --text " + qt::repo("data/kjv/kjv_heldout.txt") +
                    " --ctx 128 --chunks 2 --method gptq --bits 3,4 --granularity block", "sweep.json"},
  };
  for (size_t k = 0; k < cases.size(); ++k) {
    const Case& c = cases[k];
    CAPTURE(c.name);
    std::vector<std::string> outs;
    for (int threads : {1, 2, 4}) {
      const std::string dir = tmp / fmt::format("{}-{}", k, threads);
      std::filesystem::create_directories(dir);
      const auto r = qt::run(q() + " " + c.command + " --threads " + std::to_string(threads) + " --quiet -o " + dir + "/" + c.out);
      INFO(r.out);
      REQUIRE(r.code == 0);
      const std::string bytes = qt::slurp(dir + "/" + c.out);
      outs.push_back(c.out == "sweep.json" ? without_timings(nlohmann::json::parse(bytes)).dump() : bytes);
      if (c.out == "sweep.json") {  // the plan made from each thread count's sweep; the files named without their directory
        const auto p = qt::run(q() + " plan " + dir + "/sweep.json --linear-bpw 3.6 -o " + dir + "/plan.json");
        INFO(p.out);
        REQUIRE(p.code == 0);
        outs.back() += without_timings(nlohmann::json::parse(qt::slurp(dir + "/plan.json"))).dump();
        for (size_t at; (at = outs.back().find(dir)) != std::string::npos;) outs.back().replace(at, dir.size(), "DIR");
      }
    }
    CHECK(outs[0] == outs[1]);
    CHECK(outs[0] == outs[2]);
  }
  // Printed figures: ppl with KL against the base, at each thread count.
  std::vector<std::string> printed;
  for (int threads : {1, 2, 4}) {
    const auto r = qt::run(q() + " ppl " + tmp / "0-1/x.gguf" + " --text " + qt::repo("data/kjv/kjv_heldout.txt") + " --chunks 3 --kl-base " +
                           model() + " --json --quiet --threads " + std::to_string(threads));
    INFO(r.out);
    REQUIRE(r.code == 0);
    printed.push_back(without_timings(nlohmann::json::parse(r.out.substr(r.out.find('{')))).dump());  // after --threads 4's warning
  }
  CHECK(printed[0] == printed[1]);
  CHECK(printed[0] == printed[2]);
}

TEST_CASE("GPTQ bad input: short calibration text, window past the context, missing --calib", "[cli][bad-input][gptq]") {
  qt::TempDir tmp;
  qt::write_file(tmp / "short.txt", "And God said, Let there be light: and there was light.");
  const std::string base = q() + " convert " + model() + " --method gptq --bits 4 --group-size 128 -o " + (tmp / "x.gguf");
  expect_error(qt::run(base + " --calib " + (tmp / "short.txt") + " --seqlen 256"), {"short.txt", "shorter than one window of 256"});
  expect_error(qt::run(base + " --calib " + qt::kjv_calib() + " --seqlen 1024"),
               {"window of 1024 tokens is longer than the model's context of 512"});
  expect_error(qt::run(base), {"--method gptq needs --calib"});
  expect_error(qt::run(q() + " convert " + model() + " --method gptq --qtype Q4_0 --calib x -o " + (tmp / "x.gguf")),
               {"integer grid (--bits", "super-block type or preset", "not --qtype Q4_0"});
  CHECK_FALSE(std::filesystem::exists(tmp / "x.gguf"));
}

TEST_CASE("quant calibrate saves statistics and convert --stats reuses them but refuses another model", "[cli][gptq][calibration]") {
  qt::TempDir tmp;
  const std::string stats = tmp / "stats";
  auto r = qt::run(q() + " calibrate " + model() + " --calib " + qt::kjv_calib() +
                   " --nsamples 4 --seqlen 128 --quiet -o " + stats);
  INFO(r.out);
  REQUIRE(r.code == 0);
  CHECK(std::filesystem::exists(stats + "/manifest.json"));
  CHECK(std::filesystem::exists(stats + "/blk.5.safetensors"));
  r = qt::run(q() + " convert " + model() + " --method gptq --bits 4 --group-size 128 --stats " + stats + " --json --quiet -o " +
              (tmp / "m.gguf"));
  INFO(r.out);
  REQUIRE(r.code == 0);
  const auto j = nlohmann::json::parse(r.out);
  CHECK(j["gptq"]["layers"].size() == 42);
  CHECK(j["calibration"]["nsamples"] == 4);
  CHECK(j["gptq"]["recipe"]["true_sequential"] == false);
  // Statistics of another model (the synthetic shapes differ): refused with a clear error.
  qt::write_file(stats + "/manifest.json",
                 R"({"format": "quant-stats", "version": 1, "model": {"dim": 64}, "calibration": {}, "tokens": 1})");
  expect_error(qt::run(q() + " convert " + model() + " --method gptq --bits 4 --stats " + stats + " -o " + (tmp / "n.gguf")),
               {"manifest.json", "statistics are of another model"});
  CHECK_FALSE(std::filesystem::exists(tmp / "n.gguf"));
}
