// quant sweep / plan / compare on the bundled model: the sweep's measured damage equals quant
// ppl --kl-base on the same unit-quantized file, plans meet their budgets and convert applies
// them, llama.cpp runs the mixed GGUF, the report renders in headless Chromium, bad input.
#include <fmt/format.h>

#include <iostream>
#include <map>
#include <set>
#include <nlohmann/json.hpp>

#include "../common.h"
#include "../peers/llama_cpp.h"

namespace {

std::string q() { return qt::quant_bin(); }
const std::string kCalib = " --calib " + qt::kjv_calib() + " --nsamples 8 --seqlen 128";
const std::string kText = qt::repo("data/kjv/kjv_heldout.txt");

nlohmann::json run_json(const std::string& cmd) {
  const auto r = qt::run(cmd + " --json --quiet");
  INFO(cmd << "\n" << r.out);
  REQUIRE(r.code == 0);
  return nlohmann::json::parse(r.out);
}

void expect_error(const std::string& cmd, const std::string& what) {
  const auto r = qt::run(cmd);
  INFO(cmd << "\n" << r.out);
  CHECK(r.code == 1);
  CHECK(r.out.find("error: ") != std::string::npos);
  CHECK(r.out.find(what) != std::string::npos);
}

}  // namespace

TEST_CASE("sweep: one unit at a time, damage equal to quant ppl --kl-base on the same file, computed-once costs", "[e2e][sweep]") {
  qt::TempDir tmp;
  const std::string model = qt::bundled_model();
  const std::string sweep = tmp / "sweep.json";
  const auto j = run_json(fmt::format("{} sweep {} {} --text {} --ctx 128 --chunks 6 --method rtn --bits 2,8 --granularity tensor -o {}",
                                      q(), model, kCalib, kText, sweep));
  REQUIRE(j["units"].size() == 42);  // 6 blocks x 7 linears
  for (const auto& u : j["units"]) {
    REQUIRE(u["options"].size() == 2);
    const auto& o2 = u["options"][0];
    const auto& o8 = u["options"][1];
    CHECK(o2["measured"].get<bool>());
    CHECK(o2["kl_mean"].get<double>() > o8["kl_mean"].get<double>());
    CHECK(o8["kl_mean"].get<double>() >= 0);
    CHECK(o2["proxy"].get<double>() > o8["proxy"].get<double>());
    CHECK(o8["spec"] == "int8 g32 sym");  // Q8_0 holds it exactly
    CHECK(o8["qtype"] == "Q8_0");
    CHECK(o2["qtype"] == "Q4_1");
  }
  CHECK(j["cost"]["evaluations"] == 84);
  CHECK(j["cost"]["fp_forward_passes"] == 6);
  CHECK(j["cost"]["fp_logits"].get<std::string>().find("once") != std::string::npos);
  CHECK(j["rank"]["spearman_all"].get<double>() > 0.5);  // the proxy ranks 2-bit above 8-bit damage at least
  // The FP pass equals quant ppl on the FP model.
  const auto fp = run_json(fmt::format("{} ppl {} --text {} --ctx 128 --chunks 6", q(), model, kText));
  CHECK(j["fp"]["ppl"].get<double>() == Approx(fp["ppl"].get<double>()).epsilon(1e-6));
  // One unit's damage: the same tensor quantized alone into a GGUF (the rest F32), measured by
  // quant ppl --reference --kl-base through the runtime (the sweep measures the dequantized weights:
  // the fp32 reference path, not the block kernels with their int8 activations).
  const auto& unit = j["units"][17];  // blk.2.attn_output.weight
  REQUIRE(unit["name"] == "blk.2.attn_output.weight");
  qt::write_file(tmp / "one.json", R"([{"match": "blk.2.attn_output.weight", "qtype": "int2 g32 asym"}, {"match": "*", "qtype": "F32"}])");
  const auto c = qt::run(fmt::format("{} convert {} --qtype F32 --policy {} -o {} --quiet", q(), model, tmp / "one.json", tmp / "one.gguf"));
  INFO(c.out);
  REQUIRE(c.code == 0);
  const auto one = run_json(fmt::format("{} ppl {} --text {} --ctx 128 --chunks 6 --reference --kl-base {}", q(), tmp / "one.gguf", kText, model));
  CHECK(unit["options"][0]["kl_mean"].get<double>() == Approx(one["kl_mean"].get<double>()).epsilon(1e-3));
  CHECK(unit["options"][0]["ppl"].get<double>() == Approx(one["ppl"].get<double>()).epsilon(1e-5));
  CHECK(unit["options"][0]["top1"].get<double>() == Approx(one["top1_agreement"].get<double>()).margin(2e-3));
}

TEST_CASE("sweep --method awq: scales folded per block keep the FP function (8-bit damage ~ 0), 3-bit damage measured",
          "[e2e][sweep][awq]") {
  qt::TempDir tmp;
  const auto j = run_json(fmt::format("{} sweep {} {} --text {} --ctx 128 --chunks 3 --method awq --awq-grid 4 --search-windows 2 "
                                      "--bits 3,8 --granularity kind -o {}",
                                      q(), qt::bundled_model(), kCalib, kText, tmp / "awq.json"));
  REQUIRE(j["units"].size() == 7);
  CHECK(j["cost"]["awq_search_seconds"].get<double>() > 0);
  for (const auto& u : j["units"]) {
    INFO(u["name"] << ": KL " << u["options"][0]["kl_mean"] << " at 3 bits, " << u["options"][1]["kl_mean"] << " at 8");
    CHECK(u["options"][0]["kl_mean"].get<double>() > 1e-4);  // 3 bits: real damage
    // 8 bits over folded scales: tens of times below 3 bits (the RTN 8-bit units measure ~1e-6;
    // a wrong fold would cost as much as 3 bits).
    CHECK(u["options"][1]["kl_mean"].get<double>() < u["options"][0]["kl_mean"].get<double>() / 20);
    CHECK(u["options"][0]["proxy"].get<double>() > u["options"][1]["proxy"].get<double>());
  }
}

TEST_CASE("plan: budget met, exact vs greedy, convert --plan writes the mixed GGUF that llama.cpp runs", "[e2e][sweep][peers][llama.cpp]") {
  qt::TempDir tmp;
  const std::string model = qt::bundled_model();
  const std::string sweep = tmp / "sweep.json";
  run_json(fmt::format("{} sweep {} {} --text {} --ctx 128 --chunks 4 --method gptq --bits 2,3,4,8 --granularity block -o {}", q(), model,
                       kCalib, kText, sweep));
  for (double target : {3.5, 4.5}) {
    const std::string plan = tmp / fmt::format("plan-{}.json", target);
    const auto p = run_json(fmt::format("{} plan {} --linear-bpw {} -o {}", q(), sweep, target, plan));
    CHECK(p["budget"]["decoder_linear_bpw"].get<double>() <= target);
    CHECK(p["budget"]["decoder_linear_bpw"].get<double>() > target - 1.0);
    CHECK(p["predicted"]["exact"]["damage"].get<double>() <= p["predicted"]["greedy"]["damage"].get<double>() * (1 + 1e-12));
    REQUIRE(p["rules"].size() == 42);  // block units list their seven linears
    // convert applies it: every decoder linear gets its rule's grid, the budget holds in the file.
    const std::string gguf = tmp / fmt::format("mixed-{}.gguf", target);
    const auto r = qt::run(fmt::format("{} convert {} --plan {} {} -o {} --quiet", q(), model, plan, kCalib, gguf));
    INFO(r.out);
    REQUIRE(r.code == 0);
    const auto ir = qt::run(fmt::format("{} inspect {} --json", q(), gguf));
    REQUIRE(ir.code == 0);
    const auto ins = nlohmann::json::parse(ir.out);
    double n = 0, bits = 0;
    for (const auto& t : ins["tensors"]) {
      const std::string name = t["name"];
      if (name.rfind("blk.", 0) != 0 || t["shape"].size() != 2) continue;
      std::string want;
      for (const auto& rule : p["rules"])
        if (rule["match"] == name) want = fmt::format("int{} g{} {}", rule["bits"].get<int>(), rule["group"].get<int>(), rule["sym"] ? "sym" : "asym");
      CHECK(t["grid"] == want);
      CHECK(t["method"] == "gptq");
      const double cnt = t["shape"][0].get<double>() * t["shape"][1].get<double>();
      n += cnt;
      bits += cnt * t["logical_bpw"].get<double>();
    }
    CHECK(bits / n == Approx(p["budget"]["decoder_linear_bpw"].get<double>()).epsilon(1e-9));
    CHECK(ins["metadata"].contains("quant.bitplan"));
  }
  // --bits: the plan chooses only among the widths named, still within the budget, and never
  // predicts less damage than the plan free to use every width.
  // (5.5 bpw: room for one block unit at 8 bits over g32's 4.625.)
  const auto all = run_json(fmt::format("{} plan {} --linear-bpw 5.5 -o {}", q(), sweep, tmp / "all.json"));
  const auto p48 = run_json(fmt::format("{} plan {} --linear-bpw 5.5 --bits 8,4 -o {}", q(), sweep, tmp / "p48.json"));
  CHECK(p48["budget"]["widths"] == nlohmann::json::array({4, 8}));
  CHECK(p48["budget"]["decoder_linear_bpw"].get<double>() <= 5.5);
  CHECK(p48["predicted"]["sum_kl"].get<double>() >= all["predicted"]["sum_kl"].get<double>());
  int at8 = 0;
  for (const auto& r : p48["rules"]) {
    CHECK((r["bits"] == 4 || r["bits"] == 8));
    at8 += r["bits"] == 8;
  }
  CHECK(at8 > 0);
  if (!qt::install_llama_cpp()) return;
  qt::check_llama_agreement({"mixed 3.5 bpw", "mixed 4.5 bpw"}, {tmp / "mixed-3.5.gguf", tmp / "mixed-4.5.gguf"}, 0.97);
}

TEST_CASE("sweep --qtypes: GGUF types per tensor with token_embd and output as units, a plan at a file size, convert --plan "
          "writes those types and llama.cpp runs them",
          "[e2e][sweep][kquant][peers][llama.cpp]") {
  qt::TempDir tmp;
  const std::string model = qt::bundled_model();
  const std::string sweep = tmp / "typed.json";
  const auto j = run_json(fmt::format("{} sweep {} {} --text {} --ctx 128 --chunks 4 --method rtn --qtypes Q2_K,Q4_K,Q8_0 "
                                      "--granularity kind -o {}",
                                      q(), model, kCalib, kText, sweep));
  CHECK(j["settings"]["qtypes"] == nlohmann::json::array({"Q2_K", "Q4_K", "Q8_0"}));
  CHECK(j["settings"]["bits"] == nlohmann::json::array({2, 4, 8}));
  REQUIRE(j["units"].size() == 9);  // the embedding table first, seven kinds, the head last
  CHECK(j["units"][0]["name"] == "token_embd.weight");
  CHECK(j["units"][8]["name"] == "output.weight");
  CHECK(j["units"][0]["outer"].get<bool>());
  for (const auto& u : j["units"]) {
    REQUIRE(u["options"].size() == 3);
    for (size_t k = 0; k < 3; ++k) {
      const auto& o = u["options"][k];
      CHECK(o["spec"] == j["settings"]["qtypes"][k]);
      CHECK(o["qtype"] == o["spec"]);  // every row of the bundled model tiles 256
      CHECK(o["logical_bits"].get<int64_t>() == 8 * o["stored_bytes"].get<int64_t>());
    }
    CHECK(u["options"][0]["kl_mean"].get<double>() > u["options"][1]["kl_mean"].get<double>());
    CHECK(u["options"][1]["kl_mean"].get<double>() > u["options"][2]["kl_mean"].get<double>());
  }
  // The outer units' damage is what quant ppl --kl-base measures on a file with only that tensor
  // quantized: the table read back by the embedding lookup, the head by the logits.
  for (const auto& [unit, name] : {std::pair{0, "token_embd.weight"}, std::pair{8, "output.weight"}}) {
    const std::string pol = tmp / fmt::format("{}.json", unit), one = tmp / fmt::format("{}.gguf", unit);
    qt::write_file(pol, fmt::format(R"([{{"match": "{}", "qtype": "Q2_K"}}, {{"match": "*", "qtype": "F32"}}])", name));
    const auto c = qt::run(fmt::format("{} convert {} --qtype F32 --policy {} -o {} --quiet", q(), model, pol, one));
    INFO(c.out);
    REQUIRE(c.code == 0);
    const auto m = run_json(fmt::format("{} ppl {} --text {} --ctx 128 --chunks 4 --reference --kl-base {}", q(), one, kText, model));
    const auto& o = j["units"][unit]["options"][0];
    CHECK(o["kl_mean"].get<double>() == Approx(m["kl_mean"].get<double>()).epsilon(1e-3));
    CHECK(o["ppl"].get<double>() == Approx(m["ppl"].get<double>()).epsilon(1e-5));
  }
  // A plan at a size between all-Q2_K and all-Q4_K: every matrix gets its unit's type, and the
  // file's tensor bytes (vectors F32 included) stay within the budget.
  const double target = 4.0;  // MB; all-Q2_K is ~3.2 MB, all-Q4_K ~5.2 MB
  const auto p = run_json(fmt::format("{} plan {} --target-size {} -o {}", q(), sweep, target, tmp / "plan.json"));
  CHECK(p["budget"]["logical_size_mb"].get<double>() <= target);
  CHECK(p["budget"]["logical_size_mb"].get<double>() > target - 0.3);
  CHECK(p["budget"].contains("share_of_weights_by_type"));
  REQUIRE(p["rules"].size() == 9);
  std::map<std::string, std::string> type_of;
  for (const auto& r : p["rules"]) type_of[r["match"]] = r["type"];
  const std::string gguf = tmp / "typed.gguf";
  const auto r = qt::run(fmt::format("{} convert {} --plan {} -o {} --quiet", q(), model, tmp / "plan.json", gguf));
  INFO(r.out);
  REQUIRE(r.code == 0);
  const auto ins = nlohmann::json::parse(qt::run(fmt::format("{} inspect {} --json", q(), gguf)).out);
  std::set<std::string> types;
  for (const auto& t : ins["tensors"]) {
    if (t["shape"].size() != 2) continue;
    const std::string name = t["name"];
    const std::string kind = name.rfind("blk.", 0) == 0 ? "blk.*." + name.substr(name.find('.', 4) + 1) : name;
    INFO(name);
    REQUIRE(type_of.count(kind));
    CHECK(t["type"] == type_of[kind]);
    types.insert(t["type"].get<std::string>());
  }
  CHECK(types.size() >= 2);  // a mix, not one type
  CHECK(ins["tensor_bytes"].get<double>() <= target * 1e6);
  // Choosing among fewer types never predicts less damage.
  const auto p24 = run_json(fmt::format("{} plan {} --target-size {} --qtypes Q2_K,Q4_K -o {}", q(), sweep, target, tmp / "p24.json"));
  CHECK(p24["budget"]["qtypes"] == nlohmann::json::array({"Q2_K", "Q4_K"}));
  CHECK(p24["predicted"]["sum_kl"].get<double>() >= p["predicted"]["sum_kl"].get<double>());
  // Bad input: the options of another kind of sweep, types not measured, float types, repeats.
  const std::string x = tmp / "x.json";
  expect_error(fmt::format("{} plan {} --target-size 4 --bits 2,4 -o {}", q(), sweep, x), "choose among them with --qtypes");
  expect_error(fmt::format("{} plan {} --target-size 4 --qtypes Q3_K -o {}", q(), sweep, x), "measured only Q2_K,Q4_K,Q8_0");
  expect_error(fmt::format("{} sweep {} {} --text {} --qtypes Q4_K,F16 -o {}", q(), model, kCalib, kText, x), "F16 is not a quantized");
  expect_error(fmt::format("{} sweep {} {} --text {} --qtypes Q4_K,Q4_K -o {}", q(), model, kCalib, kText, x), "a type is repeated");
  CHECK(!qt::fs::exists(x));
  if (!qt::install_llama_cpp()) return;
  qt::check_llama_agreement({"typed plan (4 MB)"}, {gguf}, 0.97);
}

TEST_CASE("compare: one run over the same tokens, Markdown / JSON / HTML, warnings, plots render in headless Chromium",
          "[e2e][sweep][report]") {
  qt::TempDir tmp;
  const std::string model = qt::bundled_model();
  const std::string sweep = tmp / "sweep.json";
  run_json(fmt::format("{} sweep {} {} --text {} --ctx 128 --chunks 4 --method rtn --bits 2,4 --granularity kind -o {}", q(), model, kCalib,
                       kText, sweep));
  for (const char* t : {"Q4_0", "Q8_0"}) {
    const auto r = qt::run(fmt::format("{} convert {} --qtype {} -o {} --quiet", q(), model, t, tmp / (std::string(t) + ".gguf")));
    REQUIRE(r.code == 0);
  }
  // A result measured elsewhere (another context): included, with a warning.
  const auto imported = qt::run(fmt::format("{} ppl {} --text {} --ctx 256 --chunks 2 --json --quiet > {}", q(), tmp / "Q8_0.gguf", kText,
                                            tmp / "q8-ctx256.json"));
  REQUIRE(imported.code == 0);
  const std::string out = tmp / "report";
  const auto j = run_json(fmt::format("{} compare {} {} {} {} --text {} --ctx 128 --chunks 4 --sweep {} -o {}", q(), model,
                                      tmp / "Q4_0.gguf", tmp / "Q8_0.gguf", tmp / "q8-ctx256.json", kText, sweep, out));
  REQUIRE(j["models"].size() == 4);
  CHECK(j["tokens_scored"] == 4 * 63);  // llamacpp protocol at ctx 128: 63 scored rows a chunk
  CHECK(j["models"][1]["kl_mean"].get<double>() > j["models"][2]["kl_mean"].get<double>());  // Q4_0 hurts more than Q8_0
  CHECK(j["models"][1]["file_bytes"].get<double>() < j["models"][2]["file_bytes"].get<double>());
  // The same numbers as quant ppl --kl-base on the same tokens (both on the default block path).
  const auto q4 = run_json(fmt::format("{} ppl {} --text {} --ctx 128 --chunks 4 --kl-base {}", q(), tmp / "Q4_0.gguf", kText, model));
  CHECK(j["models"][1]["ppl"].get<double>() == Approx(q4["ppl"].get<double>()).epsilon(1e-9));
  CHECK(j["models"][1]["kl_mean"].get<double>() == Approx(q4["kl_mean"].get<double>()).epsilon(1e-9));
  REQUIRE(j["warnings"].size() >= 1);
  auto warned = [&](const std::string& a, const std::string& b) {
    for (const auto& w : j["warnings"])
      if (w.get<std::string>().find(a) != std::string::npos && w.get<std::string>().find(b) != std::string::npos) return true;
    return false;
  };
  CHECK(warned("q8-ctx256.json", "ctx 256"));
  // A change under two paired standard errors is called noise, by name.
  for (int i : {1, 2}) {
    const auto& m = j["models"][i];
    CHECK(m["dppl_stderr"].get<double>() > 0);
    const bool noise = std::abs(m["dppl"].get<double>()) < 1.5 * m["dppl_stderr"].get<double>();
    const bool clear = std::abs(m["dppl"].get<double>()) > 2.5 * m["dppl_stderr"].get<double>();
    if (noise) CHECK(warned(m["label"].get<std::string>(), "within noise"));
    if (clear) CHECK_FALSE(warned(m["label"].get<std::string>(), "within noise"));
  }
  const std::string md = qt::slurp(out + "/report.md");
  CHECK(md.find("Warning") != std::string::npos);
  CHECK(md.find("| Q4_0.gguf |") != std::string::npos);
  // The page in a real browser: every plot parsed, laid out and drew its marks.
  const bool have = qt::run("command -v chromium").code == 0;
  INFO("chromium is needed for this test: bash scripts/deps.sh installs Debian's chromium");
  REQUIRE(have);
  const std::string flags = "--headless --no-sandbox --disable-gpu --hide-scrollbars --user-data-dir=" + tmp / "chromium";
  const auto dom = qt::run(fmt::format("chromium {} --dump-dom file://{}/report.html 2>/dev/null", flags, out));
  REQUIRE(dom.code == 0);
  size_t ok = 0;
  for (size_t p = dom.out.find("data-rendered=\"ok\""); p != std::string::npos; p = dom.out.find("data-rendered=\"ok\"", p + 1)) ++ok;
  CHECK(ok == 4);  // Pareto scatter, KL-vs-file-size Pareto scatter, sweep heatmap, proxy-vs-KL scatter
  CHECK(dom.out.find("id=\"pareto-kl\"") != std::string::npos);
  CHECK(dom.out.find("data-rendered=\"empty\"") == std::string::npos);
  const auto shot = qt::run(fmt::format("chromium {} --window-size=1100,1800 --screenshot={} file://{}/report.html", flags, tmp / "shot.png", out));
  INFO(shot.out);
  REQUIRE(qt::fs::exists(tmp / "shot.png"));
  CHECK(qt::fs::file_size(tmp / "shot.png") > 20000);  // a blank page is a few kB
  qt::fs::create_directories(std::string(QUANT_BUILD_DIR) + "/reports");
  qt::fs::copy_file(tmp / "shot.png", std::string(QUANT_BUILD_DIR) + "/reports/compare_report.png",
                    qt::fs::copy_options::overwrite_existing);
}

TEST_CASE("sweep / plan bad input: another model, older format, budgets out of range, no output left", "[cli][bad-input][sweep]") {
  qt::TempDir tmp;
  const std::string model = qt::bundled_model();
  const std::string sweep = tmp / "sweep.json";
  run_json(fmt::format("{} sweep {} {} --proxy-only --method rtn --bits 2,4 --granularity kind -o {}", q(), model, kCalib, sweep));
  const std::string plan = tmp / "plan.json";
  run_json(fmt::format("{} plan {} --linear-bpw 3 -o {}", q(), sweep, plan));
  const std::string x = tmp / "x.json";
  // Budgets.
  expect_error(fmt::format("{} plan {} --linear-bpw 1.5 -o {}", q(), sweep, x), "below the smallest plan");
  expect_error(fmt::format("{} plan {} --linear-bpw 17 -o {}", q(), sweep, x), "above FP16");
  expect_error(fmt::format("{} plan {} --linear-bpw 3 --bits 3,4 -o {}", q(), sweep, x), "measured only 2,4");
  expect_error(fmt::format("{} plan {} --linear-bpw 3 --bits 4 -o {}", q(), sweep, x), "every unit at its smallest of 4");
  expect_error(fmt::format("{} plan {} --target-size 1000 -o {}", q(), sweep, x), "above the FP16 model");
  expect_error(fmt::format("{} plan {} --target-size 1 -o {}", q(), sweep, x), "below the smallest plan");
  expect_error(fmt::format("{} plan {} --linear-bpw 3 --objective kl -o {}", q(), sweep, x), "--proxy-only sweep has no measured kl");
  // Whole-model budgets count token_embd and output (at --rest, Q8_0) and the vectors too.
  const auto whole = run_json(fmt::format("{} plan {} --target-bpw 6 -o {}", q(), sweep, tmp / "whole.json"));
  CHECK(whole["budget"]["model_bpw"].get<double>() <= 6);
  CHECK(whole["budget"]["model_bpw"].get<double>() > 5.5);
  CHECK(whole["budget"]["decoder_linear_bpw"].get<double>() < whole["budget"]["model_bpw"].get<double>());
  expect_error(fmt::format("{} plan {} --target-bpw 3 -o {}", q(), sweep, x), "over all 8916224 parameters");
  expect_error(fmt::format("{} plan {} --target-bpw 6 --linear-bpw 3 -o {}", q(), sweep, x), "give one of");
  // An older sweep format.
  auto sj = nlohmann::json::parse(qt::slurp(sweep));
  sj["version"] = 0;
  qt::write_file(tmp / "old.json", sj.dump());
  expect_error(fmt::format("{} plan {} --linear-bpw 3 -o {}", q(), tmp / "old.json", x), "sweep format version 0");
  // A plan and a sweep from another model (another fingerprint, or other shapes).
  auto pj = nlohmann::json::parse(qt::slurp(plan));
  pj["model"]["fingerprint"] = "fnv1a64:0123456789abcdef";
  qt::write_file(tmp / "other-plan.json", pj.dump());
  expect_error(fmt::format("{} convert {} --plan {} -o {}", q(), model, tmp / "other-plan.json", tmp / "x.gguf"), "made for another model");
  pj = nlohmann::json::parse(qt::slurp(plan));
  pj["model"]["dim"] = 512;
  qt::write_file(tmp / "other-dim.json", pj.dump());
  expect_error(fmt::format("{} convert {} --plan {} -o {}", q(), model, tmp / "other-dim.json", tmp / "x.gguf"), "dim is 512");
  sj = nlohmann::json::parse(qt::slurp(sweep));
  sj["proxy_only"] = false;
  for (auto& u : sj["units"])
    for (auto& o : u["options"]) {
      o["measured"] = true;
      o["ppl"] = 1.0;
      o["dppl"] = 0.0;
      o["kl_mean"] = 0.01;
    }
  sj["model"]["fingerprint"] = "fnv1a64:0123456789abcdef";
  qt::write_file(tmp / "other-sweep.json", sj.dump());
  expect_error(fmt::format("{} compare {} {} --text {} --chunks 2 --sweep {} -o {}", q(), model, model, kText, tmp / "other-sweep.json",
                           tmp / "rep"),
               "made for another model");
  // A plan's method against --method, and --bits with a plan.
  expect_error(fmt::format("{} convert {} --plan {} --method gptq {} -o {}", q(), model, plan, kCalib, tmp / "x.gguf"), "is a rtn plan");
  expect_error(fmt::format("{} convert {} --plan {} --bits 4 -o {}", q(), model, plan, tmp / "x.gguf"), "drop --bits");
  CHECK(!qt::fs::exists(x));
  CHECK(!qt::fs::exists(tmp / "x.gguf"));
  CHECK(!qt::fs::exists(tmp / "rep"));
  // Leftover statistics of the sweep's own calibration are removed.
  for (const auto& e : qt::fs::directory_iterator(tmp.path)) CHECK(e.path().string().find(".stats.tmp") == std::string::npos);
}
