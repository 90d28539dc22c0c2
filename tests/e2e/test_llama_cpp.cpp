// llama.cpp itself runs every GGUF type we write of the bundled model and agrees with us.
#include <fmt/format.h>

#include <iostream>

#include "../peers/llama_cpp.h"
#include "quant/formats/gguf_model.h"
#include "quant/calibration/text.h"

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
                                   {"Q4_0", 0.97}, {"Q4_1", 0.97}, {"int3 g32 asym", 0.97}, {"Q2_K", 0.97},
                                   {"Q3_K", 0.97}, {"Q4_K", 0.97}, {"Q5_K", 0.97}, {"Q6_K", 0.97}, {"IQ4_NL", 0.97},
                                   {"IQ4_XS", 0.97}};
  std::vector<std::string> files;
  for (const auto& c : cases) {
    const Policy policy = Policy::defaults(QuantSpec::parse(c.qtype));
    const auto plans = resolve_policy(policy, m.weights->tensors());
    std::string name = c.qtype;
    std::replace(name.begin(), name.end(), ' ', '_');
    files.push_back(tmp / ("kjv-" + name + ".gguf"));
    {
      RtnTensors src(*m.weights, plans);
      write_gguf_model(m, policy, src, files.back(), {});
    }
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
  const std::string calib = qt::kjv_calib();
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"w4g128", "--bits 4 --group-size 128 --asym"}, {"w3g128", "--bits 3 --group-size 128 --asym --act-order"},
      {"w4g32sym", "--bits 4 --group-size 32 --sym --act-order"},
      {"w3pc-mse", "--bits 3 --group-size 0 --asym --act-order --damp 0.1 --grid-search mse"},
      // onto llama.cpp's super-block grids and presets
      {"Q4_K_M", "--qtype Q4_K_M"}, {"Q3_K_M", "--qtype Q3_K_M"}, {"Q2_K", "--qtype Q2_K"}, {"IQ4_XS-act", "--qtype IQ4_XS --act-order"},
      {"Q6_K", "--qtype Q6_K"}};
  std::vector<std::string> files;
  for (const auto& [name, args] : cases) {
    files.push_back(tmp / (name + ".gguf"));
    const auto r = qt::run(qt::quant_bin() + " convert " + qt::bundled_model() + " --method gptq " + args + " --calib " + calib +
                           " --nsamples 16 --seqlen 256 --quiet -o " + files.back());
    INFO(r.out);
    REQUIRE(r.code == 0);
  }
  std::vector<std::string> names;
  for (const auto& c : cases) names.push_back("GPTQ " + c.first);
  qt::check_llama_agreement(names, files, 0.97);
}

#include "quant/formats/gguf.h"

namespace {

// The model as F32 GGUF: llama.cpp's quantizer's input.
void write_f32_gguf(const LoadedModel& m, const std::string& path) {
  const Policy f32 = Policy::defaults(QuantSpec::parse("F32"));
  RtnTensors src(*m.weights, resolve_policy(f32, m.weights->tensors()));
  write_gguf_model(m, f32, src, path, {});
}

uint32_t file_type(const std::string& gguf) {
  GgufFile f(gguf);
  const GgufValue* v = f.find("general.file_type");
  REQUIRE(v != nullptr);
  return static_cast<uint32_t>(v->num);
}

}  // namespace

TEST_CASE("llama.cpp's own quantizer writes the same bytes as ours, and we run its files", "[e2e][peers][llama.cpp]") {
  if (!qt::install_llama_cpp()) return;
  REQUIRE(std::filesystem::exists(qt::libllama()));
  qt::TempDir tmp;
  LoadedModel m = load_model(qt::bundled_model());
  write_f32_gguf(m, tmp / "f32.gguf");
  // llama_ftype (llama.h): F16 1, Q4_0 2, Q4_1 3, Q8_0 7, Q5_0 8, Q5_1 9, Q2_K 10, Q3_K_S 11, Q4_K_S 14,
  // Q5_K_S 16, Q6_K 18, IQ4_NL 25, IQ4_XS 30; pure: every tensor that type. Below 8 bits our default
  // policy keeps output.weight at Q8_0: llama.cpp is told the same (ggml type 8).
  for (const auto& [qtype, ftype] : std::vector<std::pair<std::string, int>>{
           {"F16", 1}, {"Q4_0", 2}, {"Q4_1", 3}, {"Q8_0", 7}, {"Q5_0", 8}, {"Q5_1", 9}, {"Q2_K", 10}, {"Q3_K", 11},
           {"Q4_K", 14}, {"Q5_K", 16}, {"Q6_K", 18}, {"IQ4_NL", 25}, {"IQ4_XS", 30}}) {
    CAPTURE(qtype);
    const std::string theirs = tmp / ("llama-" + qtype + ".gguf"), ours = tmp / ("ours-" + qtype + ".gguf");
    qt::llama_quantize(tmp / "f32.gguf", theirs, ftype, (qtype == "F16" || qtype == "Q8_0") ? -1 : 8, true);
    const Policy p = Policy::defaults(QuantSpec::parse(qtype));
    {
      RtnTensors src(*m.weights, resolve_policy(p, m.weights->tensors()));
      write_gguf_model(m, p, src, ours, {});
    }
    // Identical bytes, tensor for tensor, every type. (Our quantizers are compiled without fused
    // multiply-add, as llama.cpp's ggml-base is: with it, ~5% of k-quant blocks chose another
    // sub-block scale and a few Q4_0/Q5_0 codes rounded the other way.)
    CHECK(qt::require_same_tensors(theirs, ours) == static_cast<int64_t>(m.weights->tensors().size()));
    // Our runtime evaluates llama.cpp's file exactly as it evaluates ours.
    const LoadedModel lm = load_model(theirs);
    LlamaRuntime rt(lm.config, *lm.weights);
    PplOptions o;
    o.max_chunks = 2;
    const auto toks = lm.tokenizer->encode(read_text(qt::repo("data/kjv/kjv_heldout.txt")), true);
    const LoadedModel om = load_model(ours);
    LlamaRuntime ort(om.config, *om.weights);
    const double p_theirs = perplexity(rt, toks, lm.config.bos_id, o).ppl, p_ours = perplexity(ort, toks, om.config.bos_id, o).ppl;
    CHECK(p_theirs == p_ours);
  }
}

TEST_CASE("quant convert --qtype PRESET writes llama-quantize's tensor-type mix, byte for byte", "[e2e][peers][llama.cpp][presets]") {
  if (!qt::install_llama_cpp()) return;
  qt::TempDir tmp;
  LoadedModel m = load_model(qt::bundled_model());
  write_f32_gguf(m, tmp / "f32.gguf");
  for (const auto& [preset, ftype] : std::vector<std::pair<std::string, int>>{
           {"Q2_K", 10}, {"Q3_K_S", 11}, {"Q3_K_M", 12}, {"Q3_K_L", 13}, {"Q4_K_S", 14}, {"Q4_K_M", 15}, {"Q5_K_S", 16},
           {"Q5_K_M", 17}, {"Q6_K", 18}, {"IQ4_NL", 25}, {"IQ4_XS", 30}}) {
    CAPTURE(preset);
    const std::string theirs = tmp / ("llama-" + preset + ".gguf"), ours = tmp / ("ours-" + preset + ".gguf");
    qt::llama_quantize(tmp / "f32.gguf", theirs, ftype, -1, false);
    const auto r = qt::run(qt::quant_bin() + " convert " + qt::bundled_model() + " --qtype " + preset + " --quiet -o " + ours);
    INFO(r.out);
    REQUIRE(r.code == 0);
    CHECK(qt::require_same_tensors(theirs, ours) == static_cast<int64_t>(m.weights->tensors().size()));
    CHECK(file_type(ours) == file_type(theirs));
    CHECK(file_type(ours) == static_cast<uint32_t>(ftype));
  }
  // stories260K: rows of 64 and 172 tile no super-block, and its head is the embedding (tied):
  // the fallbacks (Q4_K -> Q5_0, Q3_K -> Q4_0, IQ4_XS -> IQ4_NL, Q6_K -> Q8_0, then F16).
  const std::string stories = qt::shared("models/stories260K/stories260K.bin");
  if (!std::filesystem::exists(stories)) return;
  auto r = qt::run(qt::quant_bin() + " convert " + stories + " --qtype F32 --quiet -o " + (tmp / "s-f32.gguf"));
  REQUIRE(r.code == 0);
  for (const auto& [preset, ftype] : std::vector<std::pair<std::string, int>>{
           {"Q2_K", 10}, {"Q3_K_M", 12}, {"Q4_K_M", 15}, {"Q6_K", 18}, {"IQ4_XS", 30}}) {
    CAPTURE(preset);
    const std::string theirs = tmp / ("s-llama-" + preset + ".gguf"), ours = tmp / ("s-ours-" + preset + ".gguf");
    qt::llama_quantize(tmp / "s-f32.gguf", theirs, ftype, -1, false);
    r = qt::run(qt::quant_bin() + " convert " + stories + " --qtype " + preset + " --quiet -o " + ours);
    INFO(r.out);
    REQUIRE(r.code == 0);
    CHECK(qt::require_same_tensors(theirs, ours) == static_cast<int64_t>(GgufFile(ours).tensors().size()));
  }
}

TEST_CASE("imatrix: llama-quantize reads ours, and its importance-weighted quantizers write our bytes", "[e2e][peers][llama.cpp][imatrix]") {
  if (!qt::install_llama_cpp()) return;
  qt::TempDir tmp;
  LoadedModel m = load_model(qt::bundled_model());
  write_f32_gguf(m, tmp / "f32.gguf");
  // One calibration pass, both of llama.cpp's file formats.
  auto r = qt::run(qt::quant_bin() + " calibrate " + qt::bundled_model() + " --calib " + qt::kjv_calib() +
                   " --nsamples 16 --seqlen 256 --quiet --imatrix " + (tmp / "im.gguf"));
  INFO(r.out);
  REQUIRE(r.code == 0);
  r = qt::run(qt::quant_bin() + " calibrate " + qt::bundled_model() + " --calib " + qt::kjv_calib() +
              " --nsamples 16 --seqlen 256 --quiet --imatrix " + (tmp / "im.dat"));
  REQUIRE(r.code == 0);
  // Presets with the importance matrix (no --pure: llama.cpp's IQ4 ffn_down rule changes with it),
  // and the legacy types every tensor that type (output.weight Q8_0 as our default).
  struct Case {
    std::string qtype;
    int ftype, out_type;
    bool pure;
  };
  const std::vector<Case> cases = {{"Q2_K", 10, -1, false},  {"Q3_K_M", 12, -1, false}, {"Q4_K_M", 15, -1, false},
                                   {"Q5_K_M", 17, -1, false}, {"Q6_K", 18, -1, false},   {"IQ4_NL", 25, -1, false},
                                   {"IQ4_XS", 30, -1, false}, {"Q4_0", 2, 8, true},      {"Q4_1", 3, 8, true},
                                   {"Q5_0", 8, 8, true},      {"Q5_1", 9, 8, true}};
  for (const auto& c : cases) {
    for (const char* im : {"im.gguf", "im.dat"}) {
      if (std::string(im) == "im.dat" && c.qtype != "Q4_K_M" && c.qtype != "Q4_0") continue;  // one k-quant, one legacy
      CAPTURE(c.qtype, im);
      const std::string theirs = tmp / ("llama-" + c.qtype + ".gguf"), ours = tmp / ("ours-" + c.qtype + ".gguf");
      qt::llama_quantize(tmp / "f32.gguf", theirs, c.ftype, c.out_type, c.pure, tmp / im);
      r = qt::run(qt::quant_bin() + " convert " + qt::bundled_model() + " --qtype " + c.qtype + " --imatrix " + (tmp / im) +
                  " --quiet -o " + ours);
      INFO(r.out);
      REQUIRE(r.code == 0);
      CHECK(qt::require_same_tensors(theirs, ours) == static_cast<int64_t>(m.weights->tensors().size()));
    }
  }
  // The importance changes what is written: Q4_K_M with and without it differ.
  r = qt::run(qt::quant_bin() + " convert " + qt::bundled_model() + " --qtype Q4_K_M --quiet -o " + (tmp / "plain.gguf"));
  REQUIRE(r.code == 0);
  GgufFile a(tmp / "plain.gguf"), b(tmp / "ours-Q4_K_M.gguf");
  int64_t differ = 0;
  for (size_t i = 0; i < a.tensors().size(); ++i)
    differ += std::memcmp(a.tensors()[i].data, b.tensors()[i].data, a.tensors()[i].nbytes) != 0;
  CHECK(differ >= 42);  // every decoder linear
}
