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

double log_sum_exp(const float* x, int64_t n) {
  double mx = x[0];
  for (int64_t i = 1; i < n; ++i) mx = std::max(mx, static_cast<double>(x[i]));
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += std::exp(static_cast<double>(x[i]) - mx);
  return mx + std::log(sum);
}

void PplChunks::window(std::span<const int32_t> tokens, int64_t c, std::vector<int32_t>& out) const {
  out.assign(tokens.begin() + c * stride * ctx, tokens.begin() + (c * stride + 1) * ctx);
  if (protocol == PplProtocol::LlamaCpp) out[0] = bos;  // as llama-perplexity does
}

PplChunks ppl_chunks(int64_t n, int32_t bos, const PplOptions& o, int64_t max_ctx) {
  const int64_t ctx = o.ctx;
  QUANT_CHECK(ctx >= 4, "context {} is too small", ctx);
  QUANT_CHECK(ctx <= max_ctx, "context {} exceeds the model's {} positions", ctx, max_ctx);
  // llama-perplexity refuses texts under 2 * ctx tokens; the gptq protocol needs one window.
  const int64_t need = o.protocol == PplProtocol::LlamaCpp ? 2 * ctx : ctx;
  QUANT_CHECK(n >= need, "text too short: {} tokens, protocol {} with ctx {} needs at least {}", n,
              protocol_name(o.protocol), ctx, need);
  PplChunks c;
  c.protocol = o.protocol;
  c.ctx = ctx;
  c.chunks = n / ctx;
  if (o.max_chunks > 0 && o.max_chunks < c.chunks) {
    if (o.spread) c.stride = c.chunks / o.max_chunks;
    c.chunks = o.max_chunks;
  }
  c.first = o.protocol == PplProtocol::LlamaCpp ? ctx / 2 : 0;
  c.bos = bos;
  return c;
}

void PplScorer::add(const float* row, int64_t V, int32_t target, const float* base_row, double base_lse) {
  const double lse = log_sum_exp(row, V);
  const double x = lse - static_cast<double>(row[target]);
  // A NaN or infinite logit (overflowing activations) is an error, never a NaN perplexity.
  QUANT_CHECK(std::isfinite(x), "perplexity: the logits of scored position {} are not finite (the forward pass overflowed)", n_);
  nll_ += x;
  nll2_ += x * x;
  ++n_;
  if (!base_row) return;
  const double xb = base_lse - static_cast<double>(base_row[target]);
  base_nll_ += xb;
  dnll2_ += (x - xb) * (x - xb);
  double k = 0;
  for (int64_t i = 0; i < V; ++i) {
    const double lp = static_cast<double>(base_row[i]) - base_lse;
    k += std::exp(lp) * (lp - (static_cast<double>(row[i]) - lse));
  }
  kl_ += k;
  kls_.push_back(k);
  agree_ += (std::max_element(row, row + V) - row) == (std::max_element(base_row, base_row + V) - base_row);
}

void PplScorer::result(PplResult& r) const {
  QUANT_CHECK(n_ > 0, "perplexity: no position was scored");
  const double m = static_cast<double>(n_);
  r.tokens_scored = n_;
  r.nll_mean = nll_ / m;
  r.ppl = std::exp(r.nll_mean);
  // Standard error of the mean NLL, carried to ppl as llama-perplexity reports it.
  const double var = std::max(0.0, nll2_ / m - r.nll_mean * r.nll_mean);
  r.ppl_stderr = r.ppl * std::sqrt(var / std::max(1.0, m - 1));
  r.has_kl = !kls_.empty();
  if (!r.has_kl) return;
  r.base_nll_mean = base_nll_ / m;
  r.base_ppl = std::exp(r.base_nll_mean);
  const double d = r.nll_mean - r.base_nll_mean;
  r.dnll_stderr = std::sqrt(std::max(0.0, dnll2_ / m - d * d) / std::max(1.0, m - 1));
  r.kl_mean = kl_ / m;
  r.top1_agree = static_cast<double>(agree_) / m;
  std::vector<double> kls = kls_;
  const size_t at = std::min(kls.size() - 1, static_cast<size_t>(0.99 * static_cast<double>(kls.size())));
  std::nth_element(kls.begin(), kls.begin() + static_cast<std::ptrdiff_t>(at), kls.end());
  r.kl_p99 = kls[at];
}

PplResult perplexity(LlamaRuntime& model, std::span<const int32_t> tokens, int32_t bos, const PplOptions& o,
                     LlamaRuntime* base) {
  const int64_t V = model.config().vocab;
  if (base) QUANT_CHECK(base->config().vocab == V, "KL base has vocabulary {} but the model {}", base->config().vocab, V);
  const PplChunks ch = ppl_chunks(static_cast<int64_t>(tokens.size()), bos, o, model.config().max_ctx);
  PplResult r;
  r.protocol = o.protocol;
  r.ctx = ch.ctx;
  r.tokens_total = static_cast<int64_t>(tokens.size());
  r.chunks = ch.chunks;
  const auto t0 = std::chrono::steady_clock::now();
  PplScorer scorer;
  std::vector<float> logits, base_logits;
  std::vector<int32_t> window;
  for (int64_t c = 0; c < ch.chunks; ++c) {
    ch.window(tokens, c, window);
    model.forward(window, ch.first, logits);
    if (base) base->forward(window, ch.first, base_logits);
    for (int64_t j = ch.first; j < ch.ctx - 1; ++j) {
      const float* brow = base ? base_logits.data() + (j - ch.first) * V : nullptr;
      scorer.add(logits.data() + (j - ch.first) * V, V, window[static_cast<size_t>(j + 1)], brow,
                 brow ? log_sum_exp(brow, V) : 0.0);
    }
    r.tokens_evaluated += ch.ctx;
    if (o.progress) o.progress(c + 1, ch.chunks);
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  scorer.result(r);
  return r;
}

}  // namespace quant
