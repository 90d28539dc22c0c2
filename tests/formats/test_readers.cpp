// Checkpoint readers: synthetic HF variants agree through every path; broken files fail clearly.
#include "../synth.h"
#include "quant/formats/gguf_model.h"
#include "quant/formats/loader.h"
#include "quant/runtime.h"

using namespace quant;

namespace {

std::vector<float> logits_of(const LoadedModel& m, const std::vector<int32_t>& toks) {
  LlamaRuntime rt(m.config, *m.weights);
  std::vector<float> out;
  rt.forward(toks, 0, out);
  return out;
}

const std::vector<int32_t> kTokens = {1, 450, 3030, 310, 278, 5, 17, 4000, 8000, 2, 33, 900};

// Builds the raw bytes of a safetensors file from a header string and a data size.
void write_raw_safetensors(const std::string& path, const std::string& header, size_t data_bytes, uint64_t claimed_len = 0) {
  std::string s;
  const uint64_t n = claimed_len ? claimed_len : header.size();
  s.append(reinterpret_cast<const char*>(&n), 8);
  s += header;
  s.append(data_bytes, '\0');
  qt::write_file(path, s);
}

}  // namespace

TEST_CASE("synthetic checkpoints: tied head, qkv bias, F32/BF16/F16, sharded files", "[formats][hf]") {
  qt::TempDir tmp;
  const qt::Synth s = qt::make_synth(/*tied=*/true, /*bias=*/true, 7);
  qt::write_hf(tmp / "f32", s, TType::F32);
  qt::write_hf(tmp / "sharded", s, TType::F32, 3);
  const LoadedModel a = load_model(tmp / "f32");
  CHECK(a.config.tied_embeddings);
  CHECK(a.config.qkv_bias);
  CHECK(a.weights->find("output.weight") == nullptr);
  const auto ref = logits_of(a, kTokens);
  const LoadedModel b = load_model(tmp / "sharded");
  CHECK(b.info.at("shards") == "3");
  CHECK(logits_of(b, kTokens) == ref);

  SECTION("BF16 checkpoint equals F32 checkpoint of the bf16-rounded weights") {
    qt::Synth r = s;
    for (auto& [n, t] : r.tensors)
      for (auto& x : t.second) x = bf16_to_f32(f32_to_bf16(x));
    qt::write_hf(tmp / "bf16", s, TType::BF16);
    qt::write_hf(tmp / "rounded", r, TType::F32);
    CHECK(logits_of(load_model(tmp / "bf16"), kTokens) == logits_of(load_model(tmp / "rounded"), kTokens));
  }
  SECTION("F32 GGUF of it computes the same logits (q/k and their biases permuted and back)") {
    const Policy p = Policy::defaults(QuantSpec::parse("F32"));
    {
      RtnTensors src(*a.weights, resolve_policy(p, a.weights->tensors()));
      write_gguf_model(a, p, src, tmp / "m.gguf", {});
    }
    const LoadedModel g = load_model(tmp / "m.gguf");
    CHECK(g.config.tied_embeddings);
    CHECK(g.config.qkv_bias);
    CHECK(logits_of(g, kTokens) == ref);
  }
  SECTION("untied F16 without bias") {
    const qt::Synth u = qt::make_synth(false, false, 8);
    qt::write_hf(tmp / "f16", u, TType::F16);
    const LoadedModel m = load_model(tmp / "f16");
    CHECK_FALSE(m.config.tied_embeddings);
    CHECK_FALSE(m.config.qkv_bias);
    CHECK(m.weights->get("output.weight").type == TType::F16);
  }
}

TEST_CASE("llama2.c checkpoint: stories260K reads with its tokenizer", "[formats][llama2c]") {
  REQUIRE_SHARED("models/stories260K/stories260K.bin");
  const LoadedModel m = load_model(qt::shared("models/stories260K/stories260K.bin"));
  CHECK(m.config.dim == 64);
  CHECK(m.config.hidden == 172);
  CHECK(m.config.n_layers == 5);
  CHECK(m.config.n_kv_heads == 4);
  CHECK(m.config.vocab == 512);
  CHECK(m.config.tied_embeddings);
  CHECK(m.tokenizer->encode("Once upon a time", true).front() == 1);
  qt::TempDir tmp;
  const std::string cut = tmp / "cut.bin";
  const std::string data = qt::slurp(qt::shared("models/stories260K/stories260K.bin"));
  qt::write_file(cut, data.substr(0, data.size() - 100));
  CHECK_THROWS_WITH(load_llama2c(cut, qt::shared("models/stories260K/tok512.bin")),
                    Catch::Contains("cut.bin") && Catch::Contains("header implies"));
  CHECK_THROWS_WITH(read_llama2c_tokenizer(qt::shared("models/stories260K/tok512.bin"), 600),
                    Catch::Contains("tok512.bin") && Catch::Contains("truncated"));
}

TEST_CASE("broken safetensors files give one clear error naming the file and the field", "[formats][hf][bad-input]") {
  qt::TempDir tmp;
  const std::string p = tmp / "x.safetensors";
  auto expect = [&](const std::string& fragment) {
    CAPTURE(fragment);
    CHECK_THROWS_WITH(SafetensorsFile(p), Catch::Contains("x.safetensors") && Catch::Contains(fragment));
  };
  write_raw_safetensors(p, R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 8, 1000000);
  expect("header length");
  write_raw_safetensors(p, R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 8);
  expect("out of range");
  write_raw_safetensors(p, R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12);
  expect("overlap");
  write_raw_safetensors(p, R"({"a":{"dtype":"I64","shape":[2],"data_offsets":[0,16]}})", 16);
  expect("unsupported dtype I64");
  write_raw_safetensors(p, R"({"a":{"dtype":"F16","shape":[3],"data_offsets":[0,8]}})", 8);
  expect("shape needs 6 bytes");
  write_raw_safetensors(p, R"({"a":{"dtype":"F32","shape":[2]}})", 8);
  expect("data_offsets");
  write_raw_safetensors(p, R"({"a": oops})", 0);
  expect("not valid JSON");
  qt::write_file(p, "abc");
  expect("truncated");
}

TEST_CASE("broken Hugging Face directories give one clear error", "[formats][hf][bad-input]") {
  qt::TempDir tmp;
  const qt::Synth s = qt::make_synth(false, false, 9);
  auto expect = [&](const std::string& dir, const std::string& a, const std::string& b) {
    CAPTURE(a, b);
    CHECK_THROWS_WITH(load_model(dir), Catch::Contains(a) && Catch::Contains(b));
  };
  nlohmann::json cfg = qt::synth_config(s.cfg);
  cfg.erase("hidden_size");
  qt::write_hf(tmp / "missing", s, TType::F16, 1, cfg);
  expect(tmp / "missing", "config.json", "missing field hidden_size");

  cfg = qt::synth_config(s.cfg);
  cfg["architectures"] = {"MambaForCausalLM"};
  qt::write_hf(tmp / "arch", s, TType::F16, 1, cfg);
  expect(tmp / "arch", "config.json", "MambaForCausalLM is not supported");

  cfg = qt::synth_config(s.cfg);
  cfg["num_attention_heads"] = "four";
  qt::write_hf(tmp / "type", s, TType::F16, 1, cfg);
  expect(tmp / "type", "config.json", "num_attention_heads is not an integer");

  // A model of vocabulary 8000 with the 8192-piece tokenizer.
  const qt::Synth small = qt::make_synth(false, false, 10, 8000);
  qt::write_hf(tmp / "vocab", small, TType::F16);
  expect(tmp / "vocab", "tokenizer.model", "8192 pieces but config.json vocab_size is 8000");

  // Tensor shape that contradicts the config.
  qt::Synth bad = s;
  bad.tensors["model.layers.1.mlp.up_proj.weight"].first = {48, 128};
  qt::write_hf(tmp / "shape", bad, TType::F16);
  expect(tmp / "shape", "ffn_up.weight", "the config implies");

  qt::Synth missing = s;
  missing.tensors.erase("model.norm.weight");
  qt::write_hf(tmp / "tensor", missing, TType::F16);
  expect(tmp / "tensor", "output_norm.weight", "is missing");

  expect(tmp / "nope", "nope", "no such file");
}

#include "quant/calibration/calibration.h"
#include "quant/calibration/sequential.h"

TEST_CASE("NaN in weights or activations is detected and named before anything is written", "[formats][bad-input][gptq]") {
  qt::TempDir tmp;
  qt::Synth s = qt::make_synth(false, false, 11);
  s.tensors["model.layers.1.mlp.up_proj.weight"].second[17] = std::nanf("");
  qt::write_hf(tmp / "nan_w", s, TType::F32);
  const LoadedModel m = load_model(tmp / "nan_w");
  const Policy p = Policy::defaults(QuantSpec::parse("int4 g32 asym"));
  auto plans = resolve_policy(p, m.weights->tensors());
  RtnTensors rtn(*m.weights, plans);
  CHECK_THROWS_WITH(write_gguf_model(m, p, rtn, tmp / "x.gguf", {}),
                    Catch::Contains("blk.1.ffn_up.weight") && Catch::Contains("not finite"));
  CHECK_FALSE(std::filesystem::exists(tmp / "x.gguf"));
  const std::vector<std::vector<int32_t>> windows(2, std::vector<int32_t>{1, 5, 9, 13, 17, 21, 25, 29});
  CHECK_THROWS_WITH(gptq_sequential(m.config, *m.weights, windows, plans, {}),
                    Catch::Contains("blk.1.ffn_up.weight") && Catch::Contains("not finite"));

  // A finite but huge norm weight overflows the activations it scales (a NaN weight is refused
  // when read, naming the tensor).
  qt::Synth a = qt::make_synth(false, false, 12);
  for (auto& v : a.tensors["model.layers.0.post_attention_layernorm.weight"].second) v = 3e38f;
  qt::write_hf(tmp / "nan_a", a, TType::F32);
  const LoadedModel ma = load_model(tmp / "nan_a");
  CHECK_THROWS_WITH(gptq_sequential(ma.config, *ma.weights, windows, resolve_policy(p, ma.weights->tensors()), {}),
                    Catch::Contains("block 0 input mlp_in") && Catch::Contains("not finite"));
}
