// The bundled model end to end: perplexity from safetensors equals perplexity of our GGUF, and
// stories260K greedy decoding reproduces llama2.c byte for byte.
#include <cctype>

#include "../common.h"
#include "quant/formats/gguf_model.h"
#include "quant/formats/loader.h"
#include "quant/runtime.h"
#include "quant/calibration/text.h"

using namespace quant;

namespace {
PplResult ppl_of(const LoadedModel& m, const std::string& text, PplProtocol proto, int64_t chunks) {
  LlamaRuntime rt(m.config, *m.weights);
  PplOptions o;
  o.protocol = proto;
  o.max_chunks = chunks;
  return perplexity(rt, m.tokenizer->encode(text, true), m.config.bos_id, o);
}
}  // namespace

TEST_CASE("perplexity from safetensors equals that of our F32 GGUF, both protocols", "[e2e][ppl]") {
  qt::TempDir tmp;
  const LoadedModel hf = load_model(qt::bundled_model());
  const Policy p = Policy::defaults(QuantSpec::parse("F32"));
  {
    RtnTensors src(*hf.weights, resolve_policy(p, hf.weights->tensors()));
    write_gguf_model(hf, p, src, tmp / "f32.gguf", {});
  }
  const LoadedModel gg = load_model(tmp / "f32.gguf");
  const std::string text = read_text(qt::repo("data/kjv/kjv_heldout.txt"));
  for (PplProtocol proto : {PplProtocol::LlamaCpp, PplProtocol::Gptq}) {
    CAPTURE(protocol_name(proto));
    const PplResult a = ppl_of(hf, text, proto, 12), b = ppl_of(gg, text, proto, 12);
    CHECK(a.tokens_scored == b.tokens_scored);
    CHECK(a.tokens_scored == 12 * (proto == PplProtocol::LlamaCpp ? 255 : 511));
    CHECK(std::fabs(a.ppl - b.ppl) <= 1e-4 * a.ppl);
    CHECK(a.ppl > 10);
    CHECK(a.ppl < 200);
  }
}

TEST_CASE("perplexity protocols chunk as their definitions say", "[e2e][ppl]") {
  const LoadedModel m = load_model(qt::bundled_model());
  LlamaRuntime rt(m.config, *m.weights);
  std::vector<int32_t> toks = m.tokenizer->encode(read_text(qt::repo("data/kjv/kjv_heldout.txt")), true);
  toks.resize(64 * 3 + 10);
  // llamacpp: chunk i = toks[i*ctx, (i+1)*ctx) with BOS first; score positions ctx/2 .. ctx-2.
  PplOptions o;
  o.ctx = 64;
  const PplResult r = perplexity(rt, toks, m.config.bos_id, o);
  CHECK(r.chunks == 3);
  CHECK(r.tokens_scored == 3 * 31);
  double nll = 0;
  std::vector<float> logits;
  for (int c = 0; c < 3; ++c) {
    std::vector<int32_t> w(toks.begin() + c * 64, toks.begin() + (c + 1) * 64);
    w[0] = m.config.bos_id;
    rt.forward(w, 0, logits);
    for (int j = 32; j < 63; ++j) {
      const float* row = logits.data() + j * m.config.vocab;
      double mx = *std::max_element(row, row + m.config.vocab), s = 0;
      for (int64_t v = 0; v < m.config.vocab; ++v) s += std::exp(row[v] - mx);
      nll += mx + std::log(s) - row[w[static_cast<size_t>(j + 1)]];
    }
  }
  CHECK(r.ppl == Approx(std::exp(nll / 93)).epsilon(1e-9));
  o.protocol = PplProtocol::Gptq;
  CHECK(perplexity(rt, toks, m.config.bos_id, o).tokens_scored == 3 * 63);
  // A model is its own KL base: KL 0, full agreement.
  o.max_chunks = 1;
  const PplResult self = perplexity(rt, toks, m.config.bos_id, o, &rt);
  CHECK(self.kl_mean == Approx(0).margin(1e-9));
  CHECK(self.top1_agree == 1.0);
  toks.resize(100);
  o.protocol = PplProtocol::LlamaCpp;
  CHECK_THROWS_WITH(perplexity(rt, toks, 1, o), Catch::Contains("text too short: 100 tokens"));
}

TEST_CASE("stories260K greedy decoding reproduces llama2.c's output byte for byte", "[e2e][llama2c]") {
  REQUIRE_SHARED("models/stories260K/stories260K.bin");
  const LoadedModel m = load_model(qt::shared("models/stories260K/stories260K.bin"));
  LlamaRuntime rt(m.config, *m.weights);
  // run.c -t 0 -n 200 with an empty prompt: 200 forward steps from BOS, each printing the token
  // it predicts, stopping early at BOS.
  const auto toks = generate_greedy(rt, {m.config.bos_id}, 200);
  std::string out;
  for (size_t i = 1; i < toks.size(); ++i) {
    if (toks[i] == m.config.bos_id) break;
    const std::string piece = m.tokenizer->decode(toks[i - 1], toks[i]);
    // run.c's safe_printf drops single non-printable, non-space bytes.
    if (piece.size() == 1 && !std::isprint(static_cast<unsigned char>(piece[0])) && !std::isspace(static_cast<unsigned char>(piece[0])))
      continue;
    out += piece;
  }
  CHECK(out == qt::slurp(qt::shared("models/stories260K/expected_greedy_200.txt")));
}
