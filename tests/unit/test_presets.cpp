// llama.cpp's presets expanded for real model shapes (the byte-for-byte check against
// llama-quantize itself, on the bundled model and stories260K, is in e2e/test_llama_cpp.cpp).
#include <catch2/catch.hpp>

#include "quant/presets.h"

using namespace quant;

namespace {

std::vector<TensorDesc> llama_tensors(int64_t layers, int64_t dim, int64_t kv, int64_t hidden, bool tied) {
  std::vector<TensorDesc> t = {{"token_embd.weight", 32000, dim, 2, TType::F16}};
  if (!tied) t.push_back({"output.weight", 32000, dim, 2, TType::F16});
  for (int64_t i = 0; i < layers; ++i) {
    const std::string b = "blk." + std::to_string(i) + ".";
    t.push_back({b + "attn_norm.weight", 1, dim, 1, TType::F32});
    t.push_back({b + "attn_q.weight", dim, dim, 2, TType::F16});
    t.push_back({b + "attn_v.weight", kv, dim, 2, TType::F16});
    t.push_back({b + "attn_output.weight", dim, dim, 2, TType::F16});
    t.push_back({b + "ffn_down.weight", dim, hidden, 2, TType::F16});
  }
  return t;
}

LlamaConfig config(int64_t dim, int64_t hidden, int64_t layers, int64_t heads, int64_t kv_heads) {
  LlamaConfig c;
  c.dim = dim;
  c.hidden = hidden;
  c.n_layers = layers;
  c.n_heads = heads;
  c.n_kv_heads = kv_heads;
  c.vocab = 32000;
  return c;
}

// The stored type of blk.i.<role>.weight.
TType type_of(const std::vector<TensorPlan>& plans, int64_t i, const std::string& role) {
  const std::string name = "blk." + std::to_string(i) + "." + role + ".weight";
  for (const auto& p : plans)
    if (p.name == name) return p.stored;
  FAIL("no tensor " << name);
  return TType::F32;
}

std::vector<TensorPlan> plan(const char* preset, const LlamaConfig& c, const std::vector<TensorDesc>& t, bool imatrix = false) {
  const Preset* p = find_preset(preset);
  REQUIRE(p != nullptr);
  return resolve_policy(preset_policy(*p, preset_model(c, t, imatrix)), t);
}

}  // namespace

TEST_CASE("presets: llama-quantize's mixes for Llama-3-8B, Llama-2-70B and a tied 1B", "[unit][policy][presets]") {
  const LlamaConfig c8 = config(4096, 14336, 32, 32, 8);
  const auto t8 = llama_tensors(32, 4096, 1024, 14336, false);
  // Q4_K_M: attn_v and ffn_down at Q6_K in the first and last eighth and every third layer between.
  const auto q4km = plan("Q4_K_M", c8, t8);
  for (int64_t i = 0; i < 32; ++i) {
    const bool more = i < 4 || i >= 28 || (i - 4) % 3 == 2;
    CAPTURE(i);
    CHECK(type_of(q4km, i, "attn_v") == (more ? TType::Q6_K : TType::Q4_K));
    CHECK(type_of(q4km, i, "ffn_down") == (more ? TType::Q6_K : TType::Q4_K));
    CHECK(type_of(q4km, i, "attn_q") == TType::Q4_K);
  }
  CHECK(q4km[0].stored == TType::Q4_K);  // token_embd keeps the base type
  CHECK(q4km[1].stored == TType::Q6_K);  // output.weight
  // GQA 4: Q2_K's attn_v is Q4_K, IQ4_XS's Q5_K; Q3_K_M's first two attn_v and first sixteenth ffn_down Q5_K.
  CHECK(type_of(plan("Q2_K", c8, t8), 7, "attn_v") == TType::Q4_K);
  CHECK(type_of(plan("Q2_K", c8, t8), 7, "ffn_down") == TType::Q3_K);
  CHECK(type_of(plan("IQ4_XS", c8, t8), 7, "attn_v") == TType::Q5_K);
  const auto q3km = plan("Q3_K_M", c8, t8);
  CHECK(type_of(q3km, 1, "attn_v") == TType::Q5_K);
  CHECK(type_of(q3km, 2, "attn_v") == TType::Q4_K);
  CHECK(type_of(q3km, 1, "ffn_down") == TType::Q5_K);
  CHECK(type_of(q3km, 2, "ffn_down") == TType::Q4_K);
  CHECK(type_of(q3km, 2, "attn_output") == TType::Q4_K);
  // IQ4's first-eighth ffn_down bump only without an importance matrix.
  CHECK(type_of(plan("IQ4_NL", c8, t8), 0, "ffn_down") == TType::Q5_K);
  CHECK(type_of(plan("IQ4_NL", c8, t8, true), 0, "ffn_down") == TType::IQ4_NL);
  // 70B: attn_v that would be Q3_K / Q4_K is Q5_K (8 heads share it), Q6_K stays.
  const LlamaConfig c70 = config(8192, 28672, 80, 64, 8);
  const auto t70 = llama_tensors(80, 8192, 1024, 28672, false);
  const auto q70 = plan("Q4_K_M", c70, t70);
  CHECK(type_of(q70, 0, "attn_v") == TType::Q6_K);
  CHECK(type_of(q70, 11, "attn_v") == TType::Q5_K);
  CHECK(type_of(q70, 11, "attn_q") == TType::Q4_K);
  CHECK(type_of(plan("Q2_K", c70, t70), 11, "attn_v") == TType::Q5_K);
  CHECK(type_of(plan("Q3_K_M", c70, t70), 11, "attn_v") == TType::Q5_K);
  // Tied embeddings: token_embd takes the head's Q6_K.
  const LlamaConfig c1 = config(2048, 8192, 16, 32, 8);
  const auto t1 = llama_tensors(16, 2048, 512, 8192, true);
  CHECK(plan("Q4_K_M", c1, t1)[0].stored == TType::Q6_K);
  CHECK(find_preset("Q4_K_X") == nullptr);
  CHECK_THROWS_WITH(QuantSpec::parse("Q4_K_X"), Catch::Contains("Q4_K_M"));
}

TEST_CASE("block fallbacks follow llama.cpp's tensor_type_fallback", "[unit][policy]") {
  CHECK(block_fallback(TType::Q4_K, 4096) == TType::Q4_K);
  CHECK(block_fallback(TType::Q4_K, 64) == TType::Q5_0);
  CHECK(block_fallback(TType::Q5_K, 96) == TType::Q5_1);
  CHECK(block_fallback(TType::Q6_K, 64) == TType::Q8_0);
  CHECK(block_fallback(TType::Q2_K, 64) == TType::Q4_0);
  CHECK(block_fallback(TType::Q3_K, 64) == TType::Q4_0);
  CHECK(block_fallback(TType::IQ4_XS, 64) == TType::IQ4_NL);
  CHECK(block_fallback(TType::Q4_K, 172) == TType::F16);
  CHECK(block_fallback(TType::Q4_0, 172) == TType::F16);
}
