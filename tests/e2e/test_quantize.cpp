// quant quantize: the main job in one command (the recipe's convert, then before/after).
#include <nlohmann/json.hpp>
#include <set>

#include "../common.h"
#include "quant/recipes.h"

namespace {
std::string q() { return qt::quant_bin(); }
std::string model() { return qt::bundled_model(); }

// What the code defaults to at W4 g32 (tests/unit/test_recipes.cpp holds it to the measured table).
std::string quant_default_w4g32() { return quant::default_recipe({4, 32}).name(); }

using qt::expect_error;
}  // namespace

TEST_CASE("quant quantize: the recipe's convert bytes, then before/after on the held-out text and the report", "[cli][quantize]") {
  qt::TempDir tmp;
  const std::string calib = " --calib " + qt::kjv_calib() + " --nsamples 8 --seqlen 128";
  const auto r = qt::run(q() + " quantize " + model() + " --bits 3 --group-size 128 --recipe gptq-act-damp0.1-mse" + calib +
                         " --chunks 4 -o " + (tmp / "m.gguf") + " --json --quiet");
  INFO(r.out);
  REQUIRE(r.code == 0);
  const auto j = nlohmann::json::parse(r.out);
  CHECK(j["recipe"] == "gptq-act-damp0.1-mse");
  CHECK(j["recipe_source"] == "--recipe");
  CHECK(j["calibration"] == qt::kjv_calib());
  const auto& e = j["eval"];
  CHECK(e["chunks"] == 4);
  CHECK(e["text"].get<std::string>().find("kjv_heldout.txt") != std::string::npos);  // the shipped default
  CHECK(e["after"]["file_bytes"] == std::filesystem::file_size(tmp / "m.gguf"));
  CHECK(e["after"]["file_bytes"] == j["file_size_bytes"]);
  CHECK(e["before"]["ppl"].get<double>() > 1);
  CHECK(e["after"]["dppl"].get<double>() == Approx(e["after"]["ppl"].get<double>() / e["before"]["ppl"].get<double>() - 1));
  CHECK(e["after"]["kl_mean"].get<double>() > 0);
  CHECK(std::filesystem::exists(tmp / "m-report/report.html"));
  CHECK(j["report"] == tmp / "m-report/report.html");

  // The same flags through quant convert write the same bytes: the recipe is those flags.
  const auto f = qt::run(q() + " quantize " + model() + " --bits 3 --group-size 128 --recipe gptq-act-damp0.1-mse --print-flags");
  REQUIRE(f.code == 0);
  std::string flags = f.out;
  flags.erase(flags.find_last_not_of('\n') + 1);
  CHECK(j["convert_flags"].size() == 12);
  const auto c = qt::run(q() + " convert " + model() + " " + flags + calib + " -o " + (tmp / "c.gguf") + " --quiet");
  INFO(c.out);
  REQUIRE(c.code == 0);
  CHECK(c.out.empty());  // --quiet: the file is the result
  CHECK(qt::slurp(tmp / "m.gguf") == qt::slurp(tmp / "c.gguf"));

  // Without --recipe: the measured default for the target, and its reason.
  const auto d = qt::run(q() + " quantize " + model() + " --bits 4" + calib + " --no-eval -o " + (tmp / "d.gguf") + " --json --quiet");
  INFO(d.out);
  REQUIRE(d.code == 0);
  const auto dj = nlohmann::json::parse(d.out);
  CHECK(dj["recipe_source"].get<std::string>().find("measured best at 4 bits, group 32") != std::string::npos);
  CHECK(dj["recipe"] == quant_default_w4g32());
  CHECK(!dj.contains("eval"));
}

TEST_CASE("quant quantize: bad input is one error line, exit 1, no output file", "[cli][quantize][bad-input]") {
  qt::TempDir tmp;
  const std::string out = " -o " + (tmp / "x.gguf");
  expect_error(qt::run(q() + " quantize " + model() + out), {"needs a target", "--bits"});
  expect_error(qt::run(q() + " quantize " + model() + " --bits 4 --recipe gptq-fast" + out), {"gptq-fast", "'fast'", "METHOD"});
  expect_error(qt::run(q() + " quantize " + model() + " --bits 9" + out), {"--bits"});
  expect_error(qt::run(q() + " quantize " + model() + " --bits 4 --group-size 48" + out), {"--group-size"});
  expect_error(qt::run(q() + " quantize " + model() + " --qtype Q4_K_X" + out), {"Q4_K_X", "Q4_K_M"});
  expect_error(qt::run(q() + " quantize " + model() + " --bits 4 --text " + (tmp / "absent.txt") + out), {"absent.txt"});
  qt::write_file(tmp / "short.txt", "In the beginning God created the heaven and the earth.\n");
  expect_error(qt::run(q() + " quantize " + model() + " --bits 4 --recipe gptq --calib " + (tmp / "short.txt") + out), {"short.txt"});
  expect_error(qt::run(q() + " quantize " + model() + " --bits 4 --no-such-flag" + out), {"--no-such-flag"});
  CHECK_FALSE(std::filesystem::exists(tmp / "x.gguf"));
}

TEST_CASE("quant ppl --kl-base: the base's perplexity on the same windows, the paired error of the change", "[cli][ppl]") {
  qt::TempDir tmp;
  REQUIRE(qt::run(q() + " convert " + model() + " --qtype Q4_0 -o " + (tmp / "q.gguf") + " --quiet").code == 0);
  const std::string text = " --text " + qt::repo("data/kjv/kjv_heldout.txt") + " --chunks 3 --json --quiet";
  const auto b = qt::run(q() + " ppl " + model() + text);
  const auto r = qt::run(q() + " ppl " + (tmp / "q.gguf") + " --kl-base " + model() + text);
  INFO(b.out << r.out);
  REQUIRE((b.code == 0 && r.code == 0));
  const auto bj = nlohmann::json::parse(b.out), j = nlohmann::json::parse(r.out);
  CHECK(j["base_ppl"].get<double>() == Approx(bj["ppl"].get<double>()).epsilon(1e-12));
  CHECK(j["dppl"].get<double>() == Approx(j["ppl"].get<double>() / bj["ppl"].get<double>() - 1).epsilon(1e-12));
  // Paired: the change's error is well below either perplexity's own.
  CHECK(j["dppl_stderr"].get<double>() > 0);
  CHECK(j["dppl_stderr"].get<double>() < 0.5 * j["ppl_stderr"].get<double>() / j["ppl"].get<double>());
  const double ratio = 1 + j["dppl"].get<double>();  // the rule in NLL terms: |Δnll| < 2 se(Δnll)
  CHECK(j["within_noise"] == (std::abs(std::log(ratio)) < 2 * j["dppl_stderr"].get<double>() / ratio));
}

TEST_CASE("convert --plan of a GPTQ plan without calibration names the plan, compare names same-named files by path",
          "[cli][bad-input]") {
  qt::TempDir tmp;
  const std::string cal = " --calib " + qt::kjv_calib() + " --nsamples 8 --seqlen 128";
  REQUIRE(qt::run(q() + " sweep " + model() + " --proxy-only --method gptq --bits 2,4 --granularity kind -o " + (tmp / "s.json") + cal +
                  " --quiet")
              .code == 0);
  REQUIRE(qt::run(q() + " plan " + (tmp / "s.json") + " --linear-bpw 4 -o " + (tmp / "p.json") + " --quiet").code == 0);
  const auto r = qt::run(q() + " convert " + model() + " --plan " + (tmp / "p.json") + " -o " + (tmp / "x.gguf"));
  expect_error(r, {"--plan", "a gptq plan", "needs --calib"});
  CHECK(r.out.find("--method gptq") == std::string::npos);  // no --method was given
  CHECK_FALSE(std::filesystem::exists(tmp / "x.gguf"));

  std::filesystem::create_directories(tmp / "a");
  std::filesystem::create_directories(tmp / "b");
  REQUIRE(qt::run(q() + " convert " + model() + " --qtype Q4_0 -o " + (tmp / "a/model.gguf") + " --quiet").code == 0);
  REQUIRE(qt::run(q() + " convert " + model() + " --qtype Q8_0 -o " + (tmp / "b/model.gguf") + " --quiet").code == 0);
  const auto c = qt::run(q() + " compare " + model() + " " + (tmp / "a/model.gguf") + " " + (tmp / "b/model.gguf") + " --text " +
                         qt::repo("data/kjv/kjv_heldout.txt") + " --ctx 128 --chunks 1 -o " + (tmp / "rep") + " --json --quiet");
  INFO(c.out);
  REQUIRE(c.code == 0);
  const auto j = nlohmann::json::parse(c.out);
  CHECK(j["models"][1]["label"] == tmp / "a/model.gguf");
  CHECK(j["models"][2]["label"] == tmp / "b/model.gguf");
}

TEST_CASE("quant quantize --target-size / --target-bpw: a GGUF type per tensor, the whole file within budget, the sweep reused",
          "[cli][quantize]") {
  qt::TempDir tmp;
  const std::string small = " --calib " + qt::kjv_calib() + " --nsamples 8 --seqlen 128 --sweep-types Q3_K,Q4_K,Q6_K --sweep-chunks 2" +
                            " --no-eval --json --quiet";
  auto quantize = [&](const std::string& flags) {
    const auto r = qt::run(q() + " quantize " + model() + " " + flags + small);
    INFO(flags << "\n" << r.out);
    REQUIRE(r.code == 0);
    return nlohmann::json::parse(r.out);
  };
  auto types = [&](const std::string& gguf) {
    const auto r = qt::run(q() + " inspect " + gguf + " --json");
    REQUIRE(r.code == 0);
    const auto j = nlohmann::json::parse(r.out);
    std::set<std::string> used;
    for (const auto& t : j["tensors"])
      if (t["shape"].size() == 2 && t["shape"][1].get<int64_t>() > 1) used.insert(t["type"].get<std::string>());
    return std::pair{used, j["params"].get<double>()};
  };
  const auto a = quantize("--target-size 5.0 -o " + (tmp / "a.gguf"));
  const auto bytes = std::filesystem::file_size(tmp / "a.gguf");
  CHECK(a["file_size_bytes"] == bytes);
  CHECK(bytes <= 5'000'000);
  CHECK(bytes > 4'950'000);  // the budget is used, not just met
  CHECK(a["target"]["sweep_reused"] == false);
  CHECK(a["target"]["plan"] == tmp / "a-plan/plan.json");
  const auto [used, params] = types(tmp / "a.gguf");
  CHECK(used.size() >= 2);  // a mix, not one type
  for (const auto& t : used) CHECK((t == "Q3_K" || t == "Q4_K" || t == "Q6_K"));

  // The same target on the kept sweep: reused, and the same bytes.
  const auto b = quantize("--target-size 5.0 --work " + (tmp / "a-plan") + " -o " + (tmp / "b.gguf"));
  CHECK(b["target"]["sweep_reused"] == true);
  CHECK(qt::slurp(tmp / "a.gguf") == qt::slurp(tmp / "b.gguf"));

  // --target-bpw: the whole file's bits over every parameter.
  const auto c = quantize("--target-bpw 4.2 --work " + (tmp / "a-plan") + " -o " + (tmp / "c.gguf"));
  CHECK(c["target"]["sweep_reused"] == true);
  const double bpw = 8.0 * static_cast<double>(std::filesystem::file_size(tmp / "c.gguf")) / params;
  CHECK(bpw <= 4.2);
  CHECK(bpw > 4.15);
}

TEST_CASE("quant quantize with a size target: bad input is one error line, exit 1, no output file", "[cli][quantize][bad-input]") {
  qt::TempDir tmp;
  const std::string out = " -o " + (tmp / "x.gguf");
  const std::string cal = " --calib " + qt::kjv_calib() + " --nsamples 8 --seqlen 128 --sweep-chunks 2 --no-eval";
  expect_error(qt::run(q() + " quantize " + model() + " --target-size 2" + cal + out), {"--target-size 2 MB", "below the smallest file"});
  expect_error(qt::run(q() + " quantize " + model() + " --target-bpw 2" + cal + out), {"--target-bpw 2", "below the smallest file"});
  expect_error(qt::run(q() + " quantize " + model() + " --target-bpw 17" + cal + out), {"above FP16"});
  expect_error(qt::run(q() + " quantize " + model() + " --target-size 5 --bits 4" + cal + out), {"--target-size"});
  expect_error(qt::run(q() + " quantize " + model() + " --target-size 5 --recipe awq" + cal + out), {"awq", "rtn or gptq"});
  expect_error(qt::run(q() + " quantize " + model() + " --target-size 5 --sweep-types Q3_K,Q9_K" + cal + out), {"Q9_K"});
  CHECK_FALSE(std::filesystem::exists(tmp / "x.gguf"));
  CHECK_FALSE(std::filesystem::exists(tmp / "x-plan"));
}
