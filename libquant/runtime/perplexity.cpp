// Perplexity protocols (llama.cpp's llama-perplexity and the GPTQ papers'), KL-divergence.
#include <algorithm>
#include <chrono>
#include <cmath>

#include "quant/error.h"
#include "quant/runtime.h"

namespace quant {

std::string protocol_name(PplProtocol p) { return p == PplProtocol::LlamaCpp ? "llamacpp" : "gptq"; }

PplProtocol parse_protocol(const std::string& s) {
  if (s == "llamacpp") return PplProtocol::LlamaCpp;
  if (s == "gptq") return PplProtocol::Gptq;
  fail("unknown perplexity protocol {} (llamacpp, gptq)", s);
}

namespace {
// log-softmax of one row, in double.
void log_softmax(const float* x, int64_t n, std::vector<double>& out) {
  out.resize(static_cast<size_t>(n));
  double mx = x[0];
  for (int64_t i = 1; i < n; ++i) mx = std::max(mx, static_cast<double>(x[i]));
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += std::exp(static_cast<double>(x[i]) - mx);
  const double lse = mx + std::log(sum);
  for (int64_t i = 0; i < n; ++i) out[static_cast<size_t>(i)] = static_cast<double>(x[i]) - lse;
}
}  // namespace

PplResult perplexity(LlamaRuntime& model, std::span<const int32_t> tokens, int32_t bos, const PplOptions& o,
                     LlamaRuntime* base) {
  const int64_t n = static_cast<int64_t>(tokens.size()), ctx = o.ctx, V = model.config().vocab;
  QUANT_CHECK(ctx >= 4, "context {} is too small", ctx);
  QUANT_CHECK(ctx <= model.config().max_ctx, "context {} exceeds the model's {} positions", ctx, model.config().max_ctx);
  if (base) QUANT_CHECK(base->config().vocab == V, "KL base has vocabulary {} but the model {}", base->config().vocab, V);
  // llama-perplexity refuses texts under 2 * ctx tokens; the gptq protocol needs one window.
  const int64_t need = o.protocol == PplProtocol::LlamaCpp ? 2 * ctx : ctx;
  QUANT_CHECK(n >= need, "text too short: {} tokens, protocol {} with ctx {} needs at least {}", n,
              protocol_name(o.protocol), ctx, need);
  PplResult r;
  r.protocol = o.protocol;
  r.ctx = ctx;
  r.tokens_total = n;
  r.chunks = n / ctx;
  if (o.max_chunks > 0) r.chunks = std::min(r.chunks, o.max_chunks);
  // Scored rows of a chunk: logits at j predict token j+1.
  const int64_t first = o.protocol == PplProtocol::LlamaCpp ? ctx / 2 : 0;
  const auto t0 = std::chrono::steady_clock::now();
  double nll = 0, nll2 = 0, kl = 0;
  int64_t agree = 0;
  std::vector<double> kls;
  std::vector<float> logits, base_logits;
  std::vector<double> lp, lq;
  std::vector<int32_t> window(static_cast<size_t>(ctx));
  for (int64_t c = 0; c < r.chunks; ++c) {
    std::copy_n(tokens.begin() + c * ctx, ctx, window.begin());
    if (o.protocol == PplProtocol::LlamaCpp) window[0] = bos;  // as llama-perplexity does
    model.forward(window, first, logits);
    if (base) base->forward(window, first, base_logits);
    for (int64_t j = first; j < ctx - 1; ++j) {
      const float* row = logits.data() + (j - first) * V;
      log_softmax(row, V, lq);
      const double x = -lq[static_cast<size_t>(window[static_cast<size_t>(j + 1)])];
      nll += x;
      nll2 += x * x;
      ++r.tokens_scored;
      if (base) {
        const float* brow = base_logits.data() + (j - first) * V;
        log_softmax(brow, V, lp);
        double k = 0;
        for (int64_t i = 0; i < V; ++i) k += std::exp(lp[static_cast<size_t>(i)]) * (lp[static_cast<size_t>(i)] - lq[static_cast<size_t>(i)]);
        kl += k;
        kls.push_back(k);
        agree += (std::max_element(row, row + V) - row) == (std::max_element(brow, brow + V) - brow);
      }
    }
    r.tokens_evaluated += ctx;
    if (o.progress) o.progress(c + 1, r.chunks);
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double m = static_cast<double>(r.tokens_scored);
  r.nll_mean = nll / m;
  r.ppl = std::exp(r.nll_mean);
  // Standard error of the mean NLL, carried to ppl as llama-perplexity reports it.
  const double var = std::max(0.0, nll2 / m - r.nll_mean * r.nll_mean);
  r.ppl_stderr = r.ppl * std::sqrt(var / std::max(1.0, m - 1));
  if (base) {
    r.has_kl = true;
    r.kl_mean = kl / m;
    r.top1_agree = static_cast<double>(agree) / m;
    std::sort(kls.begin(), kls.end());
    r.kl_p99 = kls[std::min(kls.size() - 1, static_cast<size_t>(0.99 * static_cast<double>(kls.size())))];
  }
  return r;
}

}  // namespace quant
