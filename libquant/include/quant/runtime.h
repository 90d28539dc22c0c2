// The reference FP32 forward pass of the Llama family and perplexity over a token stream.
#pragma once

#include <cmath>

#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string_view>
#include <string>
#include <vector>

#include "quant/int_gemm.h"
#include "quant/model.h"

namespace quant {

// The inputs of a decoder block's linears, one statistic each: q/k/v share AttnIn, gate/up
// share MlpIn.
enum class Tap { AttnIn = 0, OIn = 1, MlpIn = 2, DownIn = 3 };
inline constexpr int kNumTaps = 4;
const char* tap_name(Tap t);  // "attn_in", "o_in", "mlp_in", "down_in"

// The decoder linears by the input they read, in block order (GPTQ's sequential steps, AWQ's
// scale points): attn_q/k/v read attn_in, attn_output o_in, ffn_gate/up mlp_in, ffn_down down_in.
struct TapLinears {
  Tap tap;
  std::vector<const char*> linears;  // GGUF short names
};
const std::vector<TapLinears>& linears_by_tap();
const std::vector<const char*>& linears_reading(Tap tap);  // linears_by_tap()'s entry for `tap`
const std::vector<const char*>& decoder_linear_names();    // all seven in block order: attn_q ... ffn_down
Tap tap_of_linear(const std::string& short_name);  // throws for a name that is no decoder linear
// The width of a tap: the columns of the linears reading it (ffn_down's: hidden; the rest: dim).
inline int64_t tap_width(const LlamaConfig& c, Tap t) { return t == Tap::DownIn ? c.hidden : c.dim; }
inline bool tap_in_mlp(Tap t) { return t == Tap::MlpIn || t == Tap::DownIn; }  // run_mlp's taps, not run_attention's

// A linear computed some other way than the fp32 GEMM (the integer kernels):
// y [T][out] (= or +=) x [T][in] Wᵀ.
class LinearOp {
 public:
  virtual ~LinearOp() = default;
  virtual void apply(const float* x, int64_t T, float* y, bool accumulate) const = 0;
};

// One block's weights, fp32 [out][in] in canonical (rotate-half) layout; biases may be null.
// A non-null op replaces its weight's fp32 GEMM.
struct BlockWeights {
  const float *attn_norm = nullptr, *wq = nullptr, *wk = nullptr, *wv = nullptr, *bq = nullptr, *bk = nullptr, *bv = nullptr,
              *wo = nullptr;
  const float *ffn_norm = nullptr, *wg = nullptr, *wu = nullptr, *wd = nullptr;
  const LinearOp *oq = nullptr, *ok = nullptr, *ov = nullptr, *oo = nullptr, *og = nullptr, *ou = nullptr, *od = nullptr;
  // The weight of a decoder linear by its short name (attn_q ... ffn_down); throws for any other.
  const float*& weight(std::string_view short_name);
  const LinearOp*& op(std::string_view short_name);  // its replacing op, by the same names
};

// Called with each linear's input [rows][width] as the block runs.
using TapFn = std::function<void(Tap, const float* data, int64_t rows, int64_t width)>;

// RoPE's inverse frequencies theta^(-2i/hd) / rope_freq_factors[i], i < hd/2, in fp32 (Hugging
// Face's formula): the runtime's rotation angle at position t is t * inv_freq[i]; the ONNX
// exporter's tables use them.
std::vector<float> rope_inv_freq(const LlamaConfig& cfg);

// Runs one decoder block in place over x [T][dim] (positions 0..T-1). With stop_after, returns
// right after that tap has been reported (x is then left partly updated).
void run_block(const LlamaConfig& cfg, const BlockWeights& w, float* x, int64_t T, const TapFn& tap = {},
               int stop_after = -1);
// The two halves of run_block: x += attention(norm(x)), then x += mlp(norm(x)).
void run_attention(const LlamaConfig& cfg, const BlockWeights& w, float* x, int64_t T, const TapFn& tap = {},
                   int stop_after = -1);
void run_mlp(const LlamaConfig& cfg, const BlockWeights& w, float* x, int64_t T, const TapFn& tap = {},
             int stop_after = -1);

struct RuntimeOptions {
  // Converted fp32 weights are kept while their total stays under this; beyond it each
  // tensor is converted when used and dropped after, so memory grows with one layer.
  int64_t cache_mb = 2048;
  // 8: every linear whose input width is a multiple of 32 quantizes its input to int8
  // (dynamic, `act_quant` granularity) and runs an integer GEMM: W4A8 on 4-bit grids, blocked
  // W8A8 on 5..8-bit grids (Q8_0), per-channel W8A8 on float weights (quantized at load to
  // int8 per output channel, SmoothQuant's weights). The head stays float unless quantized.
  int act_bits = 0;
  ActQuant act_quant = ActQuant::PerToken;
  // With act_bits 0, matrices run on their stored bytes where the store keeps them: quantized
  // GGUF types with a block kernel (block_gemm.h) on their blocks with int8 activations per 32
  // columns, as llama.cpp does; F32/F16/BF16 through fp32 panels converted on the fly (the same
  // bytes as the reference). `reference` turns that off: every weight is converted to an fp32
  // copy (the path the fast one is checked against).
  bool reference = false;
  Isa isa = Isa::Scalar;  // set from best_isa() by LlamaRuntime for the integer and block kernels
};

// The integer linear the runtime uses for `t` under `opts` (null: stays fp32).
std::shared_ptr<const LinearOp> make_int_linear(const WeightStore& store, const TensorDesc& t, const RuntimeOptions& opts);
// A linear on a matrix's stored bytes: the block kernel of a quantized type, or the fp32 GEMM
// over converted panels of an F32/F16/BF16 one (null: no kernel for the type, or the store does
// not keep the bytes).
std::shared_ptr<const LinearOp> make_stored_linear(const WeightStore& store, const TensorDesc& t, Isa isa);
// W8A8 from float weights [n][k]: int8 per output channel, activations per opts.act_quant.
std::shared_ptr<const LinearOp> make_w8a8_linear(const float* w, int64_t n, int64_t k, const RuntimeOptions& opts);

class LlamaRuntime {
 public:
  LlamaRuntime(const LlamaConfig& cfg, const WeightStore& weights, RuntimeOptions opts = {});
  // Runs tokens at positions 0..T-1 (causal) and writes the logits of rows [logits_from, T) to
  // out, [(T - logits_from)][vocab] row-major.
  void forward(std::span<const int32_t> tokens, int64_t logits_from, std::vector<float>& out);
  const LlamaConfig& config() const { return cfg_; }
  // How the linears run so far, counted by path: "block Q4_0", "int8 ...", "fp32 F16" (the
  // stored type, converted), for reports.
  std::map<std::string, int64_t> linear_paths() const;

 private:
  std::shared_ptr<const std::vector<float>> weight(const std::string& name);
  const LinearOp* op(const std::string& name);  // the integer linear, or null
  void embed(std::span<const int32_t> tokens, float* x);  // x [T][dim]: the tokens' rows of token_embd
  LlamaConfig cfg_;
  const WeightStore& weights_;
  RuntimeOptions opts_;
  std::map<std::string, std::shared_ptr<const std::vector<float>>> cache_;
  std::map<std::string, std::shared_ptr<const LinearOp>> ops_;
  int64_t cached_bytes_ = 0;
};

// The head: RMSNorm (weights norm [dim]) then logits [T][vocab] = xn [T][dim] head^T, head
// [vocab][dim] fp32; the float path of LlamaRuntime::forward.
void run_head(const LlamaConfig& cfg, const float* x, int64_t T, const float* norm, const float* head, float* logits);

// Greedy decoding from `prompt` (recomputes the window each step; for tests and demos).
std::vector<int32_t> generate_greedy(LlamaRuntime& rt, std::vector<int32_t> prompt, int64_t steps);

enum class PplProtocol { LlamaCpp, Gptq };
std::string protocol_name(PplProtocol p);
PplProtocol parse_protocol(const std::string& s);

struct PplOptions {
  PplProtocol protocol = PplProtocol::LlamaCpp;
  int64_t ctx = 512;
  int64_t max_chunks = -1;  // all
  // With max_chunks: take the windows evenly spread over the text (every (n / ctx) / max_chunks-th)
  // instead of the first max_chunks; a sample of the whole text rather than of its beginning.
  bool spread = false;
  std::function<void(int64_t done, int64_t total)> progress;
};

struct PplResult {
  PplProtocol protocol = PplProtocol::LlamaCpp;
  int64_t ctx = 0, chunks = 0, tokens_total = 0, tokens_scored = 0, tokens_evaluated = 0;
  double nll_mean = 0, ppl = 0, ppl_stderr = 0;
  double seconds = 0;
  bool has_kl = false;
  double kl_mean = 0, kl_p99 = 0, top1_agree = 0;  // against the base model
  // The base model's perplexity on the same positions, and the standard error of the mean
  // per-token NLL difference (model - base): paired, so far tighter than either ppl's own error.
  // |nll_mean - base_nll_mean| < 2 * dnll_stderr: the two are within noise on this text.
  double base_nll_mean = 0, base_ppl = 0, dnll_stderr = 0;
  bool within_noise() const { return std::abs(nll_mean - base_nll_mean) < 2 * dnll_stderr; }
  double dppl() const { return ppl / base_ppl - 1; }
  double dppl_stderr() const { return ppl / base_ppl * dnll_stderr; }  // d(e^x) = e^x dx
};

// log Σ_i exp(x_i) in double; log p_i = x_i - lse is the log-softmax every score here uses.
double log_sum_exp(const float* x, int64_t n);

// A protocol's chunking of a token stream (docs/algorithms.md): `chunks` windows of ctx tokens;
// in each, rows [first, ctx - 1) are scored (row j predicts token j + 1).
struct PplChunks {
  PplProtocol protocol = PplProtocol::LlamaCpp;
  int64_t ctx = 0, chunks = 0, first = 0;
  int64_t stride = 1;  // chunk c is the text's window c * stride
  int32_t bos = 1;
  // Chunk c as the model sees it (llamacpp: its first token replaced by BOS).
  void window(std::span<const int32_t> tokens, int64_t c, std::vector<int32_t>& out) const;
};
// Throws, as perplexity() does, when the text is too short or ctx is outside the model's range.
PplChunks ppl_chunks(int64_t n_tokens, int32_t bos, const PplOptions& opts, int64_t max_ctx);

// Accumulates NLL, and with a base row KL(base || model) and top-1 agreement, one scored row at a
// time; result() fills the score fields of a PplResult.
class PplScorer {
 public:
  // row: the model's logits [V]; base_row / base_lse: the base model's logits and log_sum_exp.
  void add(const float* row, int64_t V, int32_t target, const float* base_row = nullptr, double base_lse = 0);
  void result(PplResult& r) const;
  int64_t scored() const { return n_; }

 private:
  double nll_ = 0, nll2_ = 0, kl_ = 0, base_nll_ = 0, dnll2_ = 0;
  int64_t n_ = 0, agree_ = 0;
  std::vector<double> kls_;
  std::vector<double> lq_;
};

// Chunks `tokens` per the protocol (docs/algorithms.md) and scores them. With `base`, also the
// mean KL(base || model) and top-1 agreement at every scored position.
PplResult perplexity(LlamaRuntime& model, std::span<const int32_t> tokens, int32_t bos, const PplOptions& opts,
                     LlamaRuntime* base = nullptr);

}  // namespace quant
