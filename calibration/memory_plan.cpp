// The memory plan: byte counts of what the sequential GPTQ driver, the stage and the writer hold,
// step by step (calibration/sequential.cpp, libquant/algo/gptq.cpp), and the time at measured rates.
#include "quant/calibration/memory_plan.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <thread>

#include "quant/calibration/calibration.h"
#include "quant/error.h"
#include "quant/runtime.h"

namespace quant {

namespace {

constexpr double kStrip = 256;  // InputStats::add's strip of X^T X rows

struct Linear {
  std::string name;
  double n = 0, k = 0, group = 0;
  bool gptq = false;
};

// One block's decoder linears by tap step, as linears_by_tap() runs them.
std::vector<std::vector<Linear>> block_linears(const std::vector<TensorPlan>& plans, int64_t l) {
  std::vector<std::vector<Linear>> out;
  for (const auto& step : linears_by_tap()) {
    out.emplace_back();
    for (const char* n : step.linears) {
      const std::string name = fmt::format("blk.{}.{}.weight", l, n);
      Linear li{n, 0, 0, 0, false};
      for (const auto& p : plans)
        if (p.name == name) {
          li.n = static_cast<double>(p.rows), li.k = static_cast<double>(p.cols);
          li.gptq = uses_gptq(p.method) && gptq_quantizable(p.requested);
          li.group = p.requested.kind == QuantSpec::Kind::Grid && p.requested.grid.group > 0 ? static_cast<double>(p.requested.grid.group) : li.k;
        }
      QUANT_CHECK(li.n > 0, "memory plan: {} is not in the model", name);
      out.back().push_back(li);
    }
  }
  return out;
}

// What quantize_gptq hands back for one linear: a code per weight, a scale and a min per group.
double codes_bytes(const Linear& li) { return li.n * li.k + li.n * (li.k / std::max(1.0, li.group)) * 8; }

std::string gb(double b) { return fmt::format("{:.2f} GB", b / 1e9); }

struct Candidate {
  ActPlacement acts;
  std::string spilled;
};

// Time at the measured rates: the forward of every window through every block (once, or with the
// MLP's gate/up again when it is recomputed), X^T X of the four taps, the solves.
void project_time(const MemoryPlanInputs& in, const std::vector<std::vector<Linear>>& steps, MemoryPlan& p) {
  const LlamaConfig& c = *in.cfg;
  const double D = static_cast<double>(c.dim), F = static_cast<double>(c.hidden), KV = static_cast<double>(c.kv_dim());
  const double T = static_cast<double>(in.seqlen), S = static_cast<double>(in.windows);
  double stats = 0, solve = 0;
  for (const auto& st : steps) {
    const double k = st[0].k;
    stats += S * T * k * (k + kStrip);
    for (const auto& li : st)
      if (li.gptq) solve += 4.0 / 3.0 * k * k * k + 2 * li.n * k * k;
  }
  const double mlp_share = 2 * D * F / (2 * D * F + 2 * D * D + 2 * D * KV + D * F);  // gate/up of a block's weights
  p.forward_s = S * in.rates.window_block_s * (p.acts.down == ActPlacement::Down::Recompute ? 1 + mlp_share : 1);
  p.stats_s = stats / in.rates.gemm_flops;
  p.solve_s = solve / in.rates.gemm_flops;
  p.block_s = p.forward_s + p.stats_s + p.solve_s;
  p.total_s = p.block_s * static_cast<double>(c.n_layers);
}

}  // namespace

MemoryPlan plan_memory(const MemoryPlanInputs& in) {
  const LlamaConfig& c = *in.cfg;
  const double D = static_cast<double>(c.dim), F = static_cast<double>(c.hidden), KV = static_cast<double>(c.kv_dim());
  const double T = static_cast<double>(in.seqlen), S = static_cast<double>(in.windows), V = static_cast<double>(c.vocab);
  const bool gptq = uses_gptq(in.method) && in.windows > 0;
  const auto steps = block_linears(*in.plans, 0);
  double block_w = 2 * D * 4;  // the two norms
  for (const auto& st : steps)
    for (const auto& li : st) block_w += li.n * li.k * 4;
  if (c.qkv_bias) block_w += (D + 2 * KV) * 4;
  // The widest non-block tensor (token_embd, output) as the stage rounds it: fp32, its dequantized
  // copy (the report's nmse), codes, packed.
  const double head = V * D * (4 + 4 + 1 + 0.6);

  std::vector<Candidate> cands;
  using Down = ActPlacement::Down;
  const std::string dir = in.spill_dir;
  auto cand = [&](bool x, bool attn, Down down, std::string what) {
    Candidate cd;
    cd.acts.spill_dir = dir;
    cd.acts.x_on_disk = x, cd.acts.attn_on_disk = attn, cd.acts.down = down;
    cd.spilled = std::move(what);
    cands.push_back(std::move(cd));
  };
  cand(false, false, Down::Memory, "");
  if (gptq && !dir.empty()) {
    cand(false, false, Down::Disk, "the down_proj inputs");
    cand(false, true, Down::Disk, "the down_proj inputs and the attention outputs");
    cand(true, true, Down::Disk, "the down_proj inputs, the attention outputs and the block inputs");
  }
  if (gptq)
    cand(!dir.empty(), !dir.empty(), Down::Recompute,
         dir.empty() ? "nothing (no work directory): the MLP is recomputed" : "the attention outputs and the block inputs; the MLP is recomputed");

  MemoryPlan best;
  for (size_t ci = 0; ci < cands.size(); ++ci) {
    const Candidate& cd = cands[ci];
    MemoryPlan p;
    p.budget = in.budget;
    p.acts = cd.acts;
    p.spilled = cd.spilled;
    p.held.push_back({"process (tokenizer, calibration tokens, runtime)", in.base});
    if (!gptq) {  // RTN: one tensor at a time
      double widest = 0;
      for (const auto& t : *in.plans) widest = std::max(widest, static_cast<double>(t.rows * t.cols));
      p.peak_at = "rounding the largest tensor";
      p.at_peak = {{"the largest tensor in fp32, dequantized again (its nmse), its codes and its packed bytes", widest * 9.6}};
    } else {
      const double x = cd.acts.x_on_disk ? 0 : S * T * D * 4;
      p.held.push_back({"one decoder block's weights in fp32", block_w});
      p.held.push_back({cd.acts.x_on_disk ? "block inputs: on disk" : "block inputs (calibration activations, fp32)", x});
      p.held.push_back({"one window's buffers", T * D * 4 + T * std::max(D, F) * 4});
      const double a_store = cd.acts.attn_on_disk ? 0 : S * T * D * 4;
      const double g_store = cd.acts.down == Down::Memory ? S * T * F * 4 : 0;
      const double threads = std::max(1, in.threads);
      const double attn_rt = T * (3 * D + 2 * KV) * 4 + threads * T * T * 4;
      const double mlp_rt = T * (D + 2 * F) * 4;
      const char* tap_names[] = {"q/k/v", "o_proj", "gate/up", "down_proj"};
      double best_step = -1;
      double codes_so_far = 0;
      for (size_t si = 0; si < steps.size(); ++si) {
        const double k = steps[si][0].k;
        const double kept = si == 1 ? a_store : si == 3 ? g_store : 0;
        std::vector<std::pair<std::string, std::vector<MemoryItem>>> phases;
        const double rt = si < 2 ? attn_rt : mlp_rt;
        const std::string kept_name = si == 1 ? "attention outputs kept (fp32)" : "down_proj inputs kept (fp32)";
        phases.push_back({"statistics pass", {{kept_name, kept}, {"runtime buffers", rt}, {"X^T X sums (double)", 8 * k * k},
                                              {"X^T transposed and one strip", (T + kStrip) * k * 4}}});
        phases.push_back({"Hessian to fp32", {{kept_name, kept}, {"Hessian, double and fp32", 12 * k * k}}});
        for (const auto& li : steps[si]) {
          if (!li.gptq) continue;
          phases.push_back({fmt::format("GPTQ of {}", li.name),
                            {{kept_name, kept},
                             {"Hessian (fp32), its damped copy and inverse", 12 * k * k},
                             {"weights, codes", li.n * k * 7},
                             {"this block's codes so far, and their copy for the block's checkpoint", 2 * codes_so_far}}});
          codes_so_far += codes_bytes(li);
        }
        for (auto& [name, items] : phases) {
          double sum = 0;
          items.erase(std::remove_if(items.begin(), items.end(), [](const MemoryItem& m) { return m.bytes <= 0; }), items.end());
          for (const auto& m : items) sum += m.bytes;
          if (sum > best_step) {
            best_step = sum;
            p.peak_at = fmt::format("{} ({} step of a block)", name, tap_names[si]);
            p.at_peak = items;
          }
        }
      }
      // Before the block loop: the embedding table while the windows are embedded; and the head
      // (token_embd, output) as the writer rounds it, beside the block inputs.
      const double ends = std::max(V * D * 4, head) - block_w - T * D * 4 - T * std::max(D, F) * 4;
      if (ends > best_step) {
        best_step = ends;
        p.peak_at = "rounding token_embd / output (beside the block inputs)";
        p.at_peak = {{"the head tensor in fp32, dequantized again, its codes and packed bytes, less the block's weights", ends}};
      }
    }
    p.peak = 0;
    for (const auto& m : p.held) p.peak += m.bytes;
    for (const auto& m : p.at_peak) p.peak += m.bytes;
    if (ci == 0) best = p;
    if (in.budget <= 0 || p.peak <= in.budget) {
      best = p;
      break;
    }
    if (ci + 1 == cands.size()) {
      const MemoryItem* big = &p.at_peak[0];
      for (const auto& m : p.at_peak)
        if (m.bytes > big->bytes) big = &m;
      fail("--max-memory {}: even the smallest plan needs {} at its peak ({}: {} {}; one block's weights {}){}: give --max-memory {:.1f} "
           "or more", gb(in.budget), gb(p.peak), p.peak_at, big->what, gb(big->bytes), gb(block_w),
           dir.empty() ? "; no work directory to spill activations to" : "", std::ceil(p.peak / 1e8) / 10);
    }
  }
  if (gptq && in.rates.window_block_s > 0 && in.rates.gemm_flops > 0) project_time(in, steps, best);
  {
    double spill = 0;
    if (best.acts.x_on_disk) spill += 3 * S * T * D * 4 * 4;  // read by each pass, written back twice
    if (best.acts.attn_on_disk) spill += 2 * S * T * D * 4;
    if (best.acts.down == Down::Disk) spill += 2 * S * T * F * 4;
    best.spill_bytes_per_block = spill;
    if (gptq) {  // the work directory: per-block checkpoints (codes packed), the last block's outputs, spilled stores
      double ckpt = 0;
      for (const auto& st : steps)
        for (const auto& li : st) ckpt += codes_bytes(li) - li.n * li.k * 0.5;
      best.disk_bytes = ckpt * static_cast<double>(c.n_layers) + S * T * D * 4 +
                        S * T * 4 * ((best.acts.x_on_disk ? D : 0) + (best.acts.attn_on_disk ? D : 0) + (best.acts.down == Down::Disk ? F : 0));
    }
  }
  return best;
}

nlohmann::json MemoryPlan::to_json() const {
  auto items = [](const std::vector<MemoryItem>& v) {
    nlohmann::json a = nlohmann::json::array();
    for (const auto& m : v) a.push_back({{"what", m.what}, {"bytes", m.bytes}});
    return a;
  };
  nlohmann::json j = {{"budget_bytes", budget}, {"peak_bytes", peak}, {"work_dir", acts.spill_dir}, {"disk_bytes", disk_bytes}, {"peak_at", peak_at}, {"held", items(held)},
                      {"at_peak", items(at_peak)}, {"spilled", spilled}, {"spill_bytes_per_block", spill_bytes_per_block}};
  if (total_s > 0)
    j["time"] = {{"block_seconds", block_s}, {"forward_seconds", forward_s}, {"statistics_seconds", stats_s},
                 {"solve_seconds", solve_s}, {"total_seconds", total_s}};
  return j;
}

std::string MemoryPlan::to_text() const {
  std::string s = fmt::format("memory plan: peak {} of anonymous memory{} (mapped model files are page cache, not counted)\n", gb(peak),
                              budget > 0 ? fmt::format(", within --max-memory {}", gb(budget)) : std::string());
  for (const auto& m : held)
    if (m.bytes > 0) s += fmt::format("  {:>10}  {}\n", gb(m.bytes), m.what);
  s += fmt::format("  at the peak, {}:\n", peak_at);
  for (const auto& m : at_peak) s += fmt::format("  {:>10}  {}\n", gb(m.bytes), m.what);
  if (!spilled.empty()) s += fmt::format("  spilled to {}: {} ({} of I/O per block)\n", acts.spill_dir, spilled, gb(spill_bytes_per_block));
  if (disk_bytes > 0) s += fmt::format("disk: {} in {} (per-block checkpoints, the last block's outputs, spilled activations)\n", gb(disk_bytes), acts.spill_dir);
  if (total_s > 0)
    s += fmt::format("time: {:.0f} s per block (forward {:.0f} s, X^T X {:.0f} s, solves {:.0f} s), {:.2f} h in all\n", block_s,
                     forward_s, stats_s, solve_s, total_s / 3600);
  return s;
}

PlanRates probe_rates(const LlamaConfig& cfg, const WeightStore& weights, int64_t window) {
  // At most 256 tokens, scaled to the window linearly (the linears; attention's T^2 share is a few
  // percent at 2,048 tokens of a 70B shape).
  const int64_t seqlen = std::min<int64_t>(window, 256);
  BlockTensors blk(cfg, weights, 0);
  const BlockWeights bw = blk.view();
  std::vector<float> x(static_cast<size_t>(seqlen * cfg.dim));
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>((i * 2654435761u) % 1000) * 1e-3f - 0.5f;
  PlanRates r;
  std::vector<float> tap_rows;
  const auto t0 = std::chrono::steady_clock::now();
  run_attention(cfg, bw, x.data(), seqlen);
  run_mlp(cfg, bw, x.data(), seqlen, [&](Tap t, const float* d, int64_t rows, int64_t width) {
    if (t == Tap::DownIn) tap_rows.assign(d, d + rows * width);
  });
  r.window_block_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() * static_cast<double>(window) /
                     static_cast<double>(seqlen);
  const int64_t k = std::min<int64_t>(cfg.hidden, 4096);  // the rate levels off well before the widest tap
  std::vector<float> rows(static_cast<size_t>(seqlen * k));
  for (int64_t t = 0; t < seqlen; ++t)
    std::copy_n(tap_rows.data() + t * cfg.hidden, k, rows.data() + t * k);
  InputStats st(k);
  const auto t1 = std::chrono::steady_clock::now();
  st.add(rows.data(), seqlen);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
  r.gemm_flops = static_cast<double>(seqlen) * static_cast<double>(k) * static_cast<double>(k + 256) / std::max(s, 1e-6);
  return r;
}

double anon_bytes_now() {
  std::FILE* f = std::fopen("/proc/self/statm", "r");
  if (!f) return 0;
  long long size = 0, resident = 0, shared = 0;
  const int n = std::fscanf(f, "%lld %lld %lld", &size, &resident, &shared);
  std::fclose(f);
  if (n != 3) return 0;
  return static_cast<double>(resident - shared) * static_cast<double>(::sysconf(_SC_PAGESIZE));
}

struct PeakAnonSampler::Impl {
  std::atomic<bool> stop{false};
  std::atomic<double> peak{0};
  std::thread t;
};

PeakAnonSampler::PeakAnonSampler() : impl_(new Impl) {
  impl_->peak = anon_bytes_now();
  impl_->t = std::thread([i = impl_] {
    while (!i->stop) {
      const double a = anon_bytes_now();
      if (a > i->peak) i->peak = a;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  });
}

PeakAnonSampler::~PeakAnonSampler() {
  impl_->stop = true;
  impl_->t.join();
  delete impl_;
}

double PeakAnonSampler::peak() const {
  const double a = anon_bytes_now();
  return std::max(a, impl_->peak.load());
}

}  // namespace quant
