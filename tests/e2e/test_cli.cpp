// The quant CLI: machine-readable output, dry runs, inspect, and clear errors on bad input.
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
  for (const auto& t : nlohmann::json::parse(r.out)["tensors"])
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

TEST_CASE("same inputs give the same output bytes with 1 and 2 threads", "[cli][determinism]") {
  qt::TempDir tmp;
  for (const std::string spec : {"--qtype Q4_0", "--bits 3 --group-size 64 --asym"}) {
    CAPTURE(spec);
    const auto a = qt::run(q() + " convert " + model() + " " + spec + " --threads 1 --quiet -o " + (tmp / "a.gguf"));
    const auto b = qt::run(q() + " convert " + model() + " " + spec + " --threads 2 --quiet -o " + (tmp / "b.gguf"));
    REQUIRE(a.code == 0);
    REQUIRE(b.code == 0);
    CHECK(qt::slurp(tmp / "a.gguf") == qt::slurp(tmp / "b.gguf"));
  }
}

TEST_CASE("GPTQ output bytes are the same with 1 and 2 threads", "[cli][determinism][gptq]") {
  qt::TempDir tmp;
  const std::string base = q() + " convert " + model() + " --method gptq --bits 3 --group-size 64 --act-order --calib " +
                           qt::kjv_calib() + " --nsamples 4 --seqlen 128 --quiet";
  const auto a = qt::run(base + " --threads 1 -o " + (tmp / "a.gguf"));
  const auto b = qt::run(base + " --threads 2 -o " + (tmp / "b.gguf"));
  INFO(a.out << b.out);
  REQUIRE(a.code == 0);
  REQUIRE(b.code == 0);
  CHECK(qt::slurp(tmp / "a.gguf") == qt::slurp(tmp / "b.gguf"));
  const auto ins = nlohmann::json::parse(qt::run(q() + " inspect " + (tmp / "a.gguf") + " --json").out);
  CHECK(ins["metadata"]["quant.method"] == "\"gptq\"");
  for (const auto& t : ins["tensors"])
    if (t["name"] == "blk.2.ffn_up.weight") {
      CHECK(t["method"] == "gptq");
      CHECK(t["grid"] == "int3 g64 asym");
      CHECK(t["type"] == "Q4_1");
    }
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
