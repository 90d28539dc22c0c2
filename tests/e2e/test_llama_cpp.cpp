// llama.cpp itself runs every GGUF type we write of the bundled model and agrees with us.
#include <fmt/format.h>

#include <iostream>

#include "../peers/llama_cpp.h"
#include "quant/formats/gguf_model.h"
#include "quant/text.h"

using namespace quant;

TEST_CASE("llama.cpp loads each GGUF type we write and agrees with our runtime", "[e2e][peers][llama.cpp]") {
  if (!qt::install_llama_cpp()) return;
  qt::TempDir tmp;
  LoadedModel m = load_model(qt::bundled_model());
  const std::string text = read_text(qt::repo("data/kjv/kjv_heldout.txt"));
  const std::vector<int32_t> tokens = m.tokenizer->encode(text, true);
  // Two 512-token windows (the model's context), each starting with BOS: 1022 positions.
  std::vector<std::vector<int32_t>> seqs;
  for (int w = 0; w < 2; ++w) {
    std::vector<int32_t> s(tokens.begin() + w * 512, tokens.begin() + (w + 1) * 512);
    s[0] = m.config.bos_id;
    seqs.push_back(s);
  }
  struct Case {
    std::string qtype;
    double min_top1;
  };
  const std::vector<Case> cases = {{"F32", 0.99}, {"F16", 0.99}, {"BF16", 0.99}, {"Q8_0", 0.99},
                                   {"Q4_0", 0.97}, {"Q4_1", 0.97}, {"int3 g32 asym", 0.97}};
  std::vector<std::string> files;
  for (const auto& c : cases) {
    const Policy policy = Policy::defaults(QuantSpec::parse(c.qtype));
    const auto plans = resolve_policy(policy, m.weights->tensors());
    std::string name = c.qtype;
    std::replace(name.begin(), name.end(), ' ', '_');
    files.push_back(tmp / ("kjv-" + name + ".gguf"));
    write_gguf_model(m, policy, plans, files.back(), {});
  }
  const auto res = qt::compare_with_llama_cpp(files, seqs, text);
  nlohmann::json report = nlohmann::json::array();
  for (size_t i = 0; i < cases.size(); ++i) {
    const auto& a = res[i];
    INFO(cases[i].qtype << ": " << a.error);
    REQUIRE(a.error.empty());
    std::cout << fmt::format("llama.cpp vs quant on {:>14}: {} positions, top-1 agreement {:.2f}%, mean |dlogp| {:.5f}\n",
                             cases[i].qtype, a.positions, 100 * a.top1, a.mean_abs_dlogp);
    report.push_back({{"qtype", cases[i].qtype}, {"positions", a.positions}, {"top1", a.top1},
                      {"mean_abs_dlogp", a.mean_abs_dlogp}});
    CHECK(a.positions >= 512);
    CHECK(a.top1 >= cases[i].min_top1);
    // llama.cpp's tokenization of the whole text equals ours (it adds no BOS here).
    CHECK(a.tokenized == std::vector<int32_t>(tokens.begin() + 1, tokens.end()));
  }
  std::filesystem::create_directories(std::string(QUANT_BUILD_DIR) + "/reports");
  qt::write_file(std::string(QUANT_BUILD_DIR) + "/reports/llama_cpp_agreement.json", report.dump(2));
}

TEST_CASE("llama.cpp runs the GGUF files GPTQ writes and agrees with our runtime", "[e2e][peers][llama.cpp][gptq]") {
  if (!qt::install_llama_cpp()) return;
  qt::TempDir tmp;
  const std::string calib = qt::repo("data/kjv/kjv_train.txt");
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"w4g128", "--bits 4 --group-size 128 --asym"}, {"w3g128", "--bits 3 --group-size 128 --asym --act-order"},
      {"w4g32sym", "--bits 4 --group-size 32 --sym --act-order"}};
  std::vector<std::string> files;
  for (const auto& [name, args] : cases) {
    files.push_back(tmp / (name + ".gguf"));
    const auto r = qt::run(qt::quant_bin() + " convert " + qt::bundled_model() + " --method gptq " + args + " --calib " + calib +
                           " --nsamples 16 --seqlen 256 --quiet -o " + files.back());
    INFO(r.out);
    REQUIRE(r.code == 0);
  }
  LoadedModel m = load_model(qt::bundled_model());
  const std::string text = read_text(qt::repo("data/kjv/kjv_heldout.txt"));
  const auto tokens = m.tokenizer->encode(text, true);
  std::vector<std::vector<int32_t>> seqs = {std::vector<int32_t>(tokens.begin(), tokens.begin() + 512)};
  const auto res = qt::compare_with_llama_cpp(files, seqs, "");
  for (size_t i = 0; i < cases.size(); ++i) {
    INFO(cases[i].first << ": " << res[i].error);
    REQUIRE(res[i].error.empty());
    std::cout << fmt::format("llama.cpp vs quant on GPTQ {:>9}: {} positions, top-1 agreement {:.2f}%, mean |dlogp| {:.5f}\n",
                             cases[i].first, res[i].positions, 100 * res[i].top1, res[i].mean_abs_dlogp);
    CHECK(res[i].top1 >= 0.97);
  }
}
