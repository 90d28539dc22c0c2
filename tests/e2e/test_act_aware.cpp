// AWQ and SmoothQuant: folding a plan keeps the FP function, plans are data (JSON round trip),
// the GGUFs they write run in llama.cpp, and bad plans / α / statistics are refused.
#include <fmt/format.h>

#include <algorithm>
#include <iostream>
#include <random>
#include <nlohmann/json.hpp>

#include "../common.h"
#include "../synth.h"
#include "../peers/llama_cpp.h"
#include "quant/calibration/act_aware.h"
#include "quant/formats/loader.h"
#include "quant/kquants.h"
#include "quant/formats/safetensors.h"
#include "quant/runtime.h"
#include "quant/calibration/text.h"

using namespace quant;

namespace {

std::vector<std::vector<int32_t>> small_windows(const LoadedModel& m, int64_t n, int64_t len) {
  CalibSpec spec;
  spec.nsamples = n;
  spec.seqlen = len;
  return calibration_windows(m.tokenizer->encode(read_text(qt::kjv_calib()), true), spec, m.config.max_ctx);
}

// max |logit difference| / max |logit| of two stores on one held-out window.
double logit_gap(const LoadedModel& m, const WeightStore& a, const WeightStore& b) {
  const auto toks = m.tokenizer->encode(read_text(qt::repo("data/kjv/kjv_heldout.txt")), true);
  const std::vector<int32_t> win(toks.begin(), toks.begin() + 256);
  LlamaRuntime ra(m.config, a), rb(m.config, b);
  std::vector<float> la, lb;
  ra.forward(win, 0, la);
  rb.forward(win, 0, lb);
  double gap = 0, mag = 0;
  for (size_t i = 0; i < la.size(); ++i) {
    gap = std::max(gap, static_cast<double>(std::fabs(la[i] - lb[i])));
    mag = std::max(mag, static_cast<double>(std::fabs(la[i])));
  }
  return gap / mag;
}

}  // namespace

TEST_CASE("AWQ clip search keeps, per group, the candidate with the least partial-output error (direct sums)", "[unit][awq]") {
  // Inputs with unequal channels (as activations are) and weights with a skewed group range.
  const int64_t rows = 5, in = 200, nt = 48;  // groups of 64: the last one is 8 wide
  std::mt19937 rng(7);
  std::normal_distribution<float> nd;
  std::vector<float> x(static_cast<size_t>(nt * in)), w(static_cast<size_t>(rows * in));
  for (int64_t t = 0; t < nt; ++t)
    for (int64_t c = 0; c < in; ++c) x[static_cast<size_t>(t * in + c)] = nd(rng) * (1.0f + static_cast<float>(c % 7));
  for (auto& v : w) v = nd(rng) * 0.05f + (nd(rng) > 1.5f ? 0.2f : 0.0f);
  // The direct error of clamping one group to [lo, hi], then min-max quantizing it on `g`.
  auto direct = [&](const GridSpec& g, int64_t r, int64_t c0, int64_t len, float lo, float hi) {
    std::vector<float> wc(static_cast<size_t>(len));
    for (int64_t j = 0; j < len; ++j) wc[static_cast<size_t>(j)] = std::clamp(w[static_cast<size_t>(r * in + c0 + j)], lo, hi);
    const GridParams p = fit_grid_group(wc.data(), len, 1, g);
    const float maxq = static_cast<float>((1 << g.bits) - 1);
    double err = 0;
    for (int64_t t = 0; t < nt; ++t) {
      double acc = 0;
      for (int64_t j = 0; j < len; ++j) {
        const float q = p.scale * (std::clamp(std::nearbyint(wc[static_cast<size_t>(j)] / p.scale) + p.zero, 0.0f, maxq) - p.zero);
        acc += static_cast<double>(x[static_cast<size_t>(t * in + c0 + j)]) * (q - w[static_cast<size_t>(r * in + c0 + j)]);
      }
      err += acc * acc;
    }
    return err;
  };
  for (bool sym_grid : {false, true})
    for (AwqClip mode : {AwqClip::Sym, AwqClip::Range, AwqClip::Ends}) {
      const GridSpec g{3, 64, sym_grid, false};
      CAPTURE(sym_grid, awq_clip_name(mode));
      const ClipEntry ce = clip_search("t", w.data(), rows, in, g, x.data(), nt, mode);
      const bool sym = sym_grid || mode == AwqClip::Sym;
      REQUIRE(ce.max.size() == static_cast<size_t>(rows * 4));
      REQUIRE(ce.min.size() == (sym ? 0 : ce.max.size()));
      int shrunk = 0;
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t gi = 0; gi < 4; ++gi) {
          const int64_t c0 = gi * 64, len = std::min<int64_t>(64, in - c0);
          float lo0 = 0, hi0 = 0;
          for (int64_t j = 0; j < len; ++j) {
            lo0 = std::min(lo0, w[static_cast<size_t>(r * in + c0 + j)]);
            hi0 = std::max(hi0, w[static_cast<size_t>(r * in + c0 + j)]);
          }
          if (sym) hi0 = std::max(hi0, -lo0), lo0 = -hi0;
          double best = INFINITY;
          const bool ends = mode == AwqClip::Ends && !sym;
          for (int i = 0; i < 10; ++i)
            for (int k = 0; k < (ends ? 10 : 1); ++k) {
              const float f_lo = 1 - static_cast<float>(ends ? k : i) / 20, f_hi = 1 - static_cast<float>(i) / 20;
              best = std::min(best, direct(g, r, c0, len, lo0 * f_lo, hi0 * f_hi));
            }
          const size_t e = static_cast<size_t>(r * 4 + gi);
          const float lo = sym ? -ce.max[e] : ce.min[e];
          const double chosen = direct(g, r, c0, len, lo, ce.max[e]);
          CHECK(chosen <= best * (1 + 1e-6) + 1e-12);
          CHECK(direct(g, r, c0, len, lo0, hi0) >= chosen * (1 - 1e-6));  // the unclipped range is a candidate
          shrunk += ce.max[e] < hi0 || lo > lo0;
        }
      CHECK(shrunk > 0);
    }
}

TEST_CASE("AWQ clip search onto super-block types: never more output error than unclipped, by direct sums", "[unit][awq][kquant]") {
  const int64_t rows = 6, in = 512, nt = 40;  // two super-blocks per row
  std::mt19937 rng(11);
  std::normal_distribution<float> nd;
  std::vector<float> x(static_cast<size_t>(nt * in)), w(static_cast<size_t>(rows * in));
  for (int64_t t = 0; t < nt; ++t)
    for (int64_t c = 0; c < in; ++c) x[static_cast<size_t>(t * in + c)] = nd(rng) * (1.0f + static_cast<float>(c % 5));
  for (auto& v : w) v = nd(rng) * 0.05f + (nd(rng) > 1.8f ? 0.25f : 0.0f);  // outliers worth clipping
  // Σ_t Σ_rows (x_t · (Q(w') - w))² with Q ggml's quantizer row by row, summed directly.
  auto out_error = [&](TType t, const std::vector<float>& wq) {
    std::vector<uint8_t> buf(static_cast<size_t>(row_bytes(t, in)));
    std::vector<float> deq(static_cast<size_t>(in));
    double err = 0;
    for (int64_t r = 0; r < rows; ++r) {
      quantize_kquant(t, wq.data() + r * in, buf.data(), in);
      dequantize_kquant(t, buf.data(), deq.data(), in);
      for (int64_t i = 0; i < nt; ++i) {
        double acc = 0;
        for (int64_t c = 0; c < in; ++c)
          acc += static_cast<double>(x[static_cast<size_t>(i * in + c)]) * (deq[static_cast<size_t>(c)] - w[static_cast<size_t>(r * in + c)]);
        err += acc * acc;
      }
    }
    return err;
  };
  for (TType t : {TType::Q4_K, TType::Q2_K, TType::Q3_K, TType::Q6_K, TType::IQ4_XS}) {
    CAPTURE(ttype_name(t));
    const ClipEntry ce = clip_search_blocks("t", w.data(), rows, in, t, x.data(), nt);
    const bool mins = t == TType::Q2_K || t == TType::Q4_K;
    CHECK(ce.group == kquant_group(t));
    REQUIRE(ce.max.size() == static_cast<size_t>(rows * in / kquant_group(t)));
    CHECK(ce.min.size() == (mins ? ce.max.size() : 0));
    std::vector<float> clipped = w;
    ce.apply(clipped.data(), rows, in);
    int shrunk = 0;
    for (size_t i = 0; i < w.size(); ++i) shrunk += clipped[i] != w[i];
    const double before = out_error(t, w), after = out_error(t, clipped);
    CHECK(shrunk > 0);
    CHECK(after < before);  // each step keeps the current state among its candidates
  }
  CHECK_THROWS_WITH(clip_search_blocks("t", w.data(), rows, 320, TType::Q4_K, x.data(), nt),
                    Catch::Contains("not whole 256-blocks of Q4_K"));
}

TEST_CASE("AWQ and SmoothQuant scales fold into norms and rows without changing the FP function", "[e2e][awq][smoothquant]") {
  LoadedModel m = load_model(qt::bundled_model());
  const auto windows = small_windows(m, 4, 128);
  const Policy pol = Policy::defaults(QuantSpec::parse("int3 g128 asym"));
  const auto plans = resolve_policy(pol, m.weights->tensors());
  AwqOptions ao;
  ao.grid = 5;
  ao.clip = false;  // clipping changes the function on purpose; checked below
  ao.search_windows = 2;
  const ActPlan awq = awq_search(m.config, *m.weights, windows, plans, ao);
  // q/k/v, o (v's rows, each shared by the kv_group query heads of its kv head), gate/up, down.
  REQUIRE(awq.scales.size() == static_cast<size_t>(4 * m.config.n_layers));
  REQUIRE(m.config.n_kv_heads < m.config.n_heads);  // the bundled model has GQA
  int gqa_entries = 0;
  for (const auto& e : awq.scales)
    if (e.prev.find("attn_v") != std::string::npos) {
      ++gqa_entries;
      CHECK(e.kv_group == m.config.n_heads / m.config.n_kv_heads);
      CHECK(e.scales.size() == static_cast<size_t>(m.config.kv_dim()));
    }
  CHECK(gqa_entries == m.config.n_layers);
  CHECK(awq.notes.empty());
  for (const auto& e : awq.scales) CHECK(e.loss_after <= e.loss_before);  // α = 0 (plain RTN) is a candidate
  SmoothOptions so;
  so.search_windows = 2;
  const ActPlan sq = smoothquant_search(m.config, *m.weights, windows, so);
  so.alpha = -1;  // auto
  const ActPlan sq_auto = smoothquant_search(m.config, *m.weights, windows, so);
  for (const auto& e : sq_auto.scales) {
    CHECK(e.alpha >= 0.3 - 1e-9);
    CHECK(e.alpha <= 0.95 + 1e-9);
    CHECK(e.loss_after > 0);  // the best α's W8A8 block-output MSE (0.30..0.95 need not beat no smoothing)
    CHECK(std::isfinite(e.loss_before));
  }
  for (const ActPlan* p : {&awq, &sq, &sq_auto}) {
    CAPTURE(p->method);
    OverlayStore o(*m.weights);
    p->apply(*m.weights, o);
    const double gap = logit_gap(m, *m.weights, o);
    std::cout << fmt::format("{} plan folded: max |dlogit| / max |logit| = {:.2e}\n", p->method, gap);
    CHECK(gap < 1e-4);
    // The plan is data: JSON round trip, same weights.
    const ActPlan back = ActPlan::from_json(nlohmann::json::parse(p->to_json().dump()), m.config, *m.weights, "roundtrip");
    OverlayStore o2(*m.weights);
    back.apply(*m.weights, o2);
    for (const auto& t : o.tensors()) CHECK(o.read_f32(t.name) == o2.read_f32(t.name));
  }
  // With clipping, the FP function changes (weights are clamped) but the scales still fold.
  ao.clip = true;
  const ActPlan clipped = awq_search(m.config, *m.weights, windows, plans, ao);
  CHECK(clipped.clips.size() == static_cast<size_t>(5 * m.config.n_layers));
  bool any_clipped = false;
  for (const auto& c : clipped.clips) {
    // The asym grid clips each group's range [min, max] (both ends shrink), not ±max|w|.
    REQUIRE(c.min.size() == c.max.size());
    const std::vector<float> w = m.weights->read_f32(c.tensor);
    float mx = 0;
    for (float v : w) mx = std::max(mx, std::fabs(v));
    for (size_t g = 0; g < c.max.size(); ++g) {
      CHECK(c.min[g] <= 0);
      CHECK(c.max[g] >= 0);
      any_clipped = any_clipped || c.max[g] < mx;
    }
  }
  CHECK(any_clipped);
  {
    // Clipped weights lie inside their group's range, and the JSON round trip keeps the minima.
    OverlayStore o(*m.weights), o2(*m.weights);
    clipped.apply(*m.weights, o);
    const ActPlan back = ActPlan::from_json(nlohmann::json::parse(clipped.to_json().dump()), m.config, *m.weights, "roundtrip");
    back.apply(*m.weights, o2);
    for (const auto& t : o.tensors()) CHECK(o.read_f32(t.name) == o2.read_f32(t.name));
    for (const auto& c : clipped.clips) {
      const TensorDesc& d = m.weights->get(c.tensor);
      const std::vector<float> w = o.read_f32(c.tensor);
      const int64_t ng = (d.cols + c.group - 1) / c.group;
      bool inside = true;
      for (int64_t i = 0; i < d.rows * d.cols; ++i) {
        const size_t g = static_cast<size_t>(i / d.cols * ng + i % d.cols / c.group);
        inside = inside && w[static_cast<size_t>(i)] >= c.min[g] && w[static_cast<size_t>(i)] <= c.max[g];
      }
      CHECK(inside);
    }
  }
  // A symmetric grid keeps llm-awq's clip: one max per group, [-max, max].
  const auto sym_plans = resolve_policy(Policy::defaults(QuantSpec::parse("int3 g128 sym")), m.weights->tensors());
  ao.search_windows = 1;
  const ActPlan sym = awq_search(m.config, *m.weights, windows, sym_plans, ao);
  REQUIRE(!sym.clips.empty());
  for (const auto& c : sym.clips) CHECK(c.min.empty());
}

TEST_CASE("AWQ / SmoothQuant bad input: plan for another model, alpha out of range, missing statistics", "[cli][bad-input][awq]") {
  qt::TempDir tmp;
  const std::string q = qt::quant_bin(), model = qt::bundled_model(), calib = qt::kjv_calib();
  auto expect_error = [](const qt::RunResult& r, std::vector<std::string> parts) {
    INFO(r.out);
    CHECK(r.code == 1);
    CHECK(r.out.rfind("error: ", 0) == 0);
    for (const auto& p : parts) CHECK(r.out.find(p) != std::string::npos);
  };
  const auto ok = qt::run(q + " convert " + model + " --method smoothquant --alpha 0.5 --calib " + calib +
                          " --nsamples 4 --seqlen 128 --qtype Q8_0 --dump-plan " + (tmp / "sq.json") + " -o " + (tmp / "sq.gguf") + " --quiet");
  INFO(ok.out);
  REQUIRE(ok.code == 0);
  auto plan = nlohmann::json::parse(qt::slurp(tmp / "sq.json"));
  REQUIRE(plan["method"] == "smoothquant");
  REQUIRE(plan["scales"].size() == 12);
  // Another model's plan (its dimensions), a plan naming a tensor this model lacks, a short scale vector.
  REQUIRE_SHARED("models/stories260K/stories260K.bin");
  expect_error(qt::run(q + " convert " + qt::shared("models/stories260K/stories260K.bin") + " --method smoothquant --plan " + (tmp / "sq.json") +
                       " --qtype Q8_0 -o " + (tmp / "x.gguf")),
               {"sq.json", "another model"});
  auto bad = plan;
  bad["scales"][0]["linears"][0] = "blk.0.attn_qq.weight";
  qt::write_file(tmp / "bad1.json", bad.dump());
  expect_error(qt::run(q + " convert " + model + " --method smoothquant --plan " + (tmp / "bad1.json") + " --qtype Q8_0 -o " + (tmp / "x.gguf")),
               {"bad1.json", "blk.0.attn_qq.weight"});
  bad = plan;
  bad["scales"][1]["scales"].erase(0);
  qt::write_file(tmp / "bad2.json", bad.dump());
  expect_error(qt::run(q + " convert " + model + " --method smoothquant --plan " + (tmp / "bad2.json") + " --qtype Q8_0 -o " + (tmp / "x.gguf")),
               {"bad2.json", "255 values"});
  // v -> o scales under GQA: 128 v rows cannot scale o_proj's 256 columns without kv_group.
  bad = plan;
  bad["scales"][0] = {{"prev", "blk.0.attn_v.weight"}, {"linears", {"blk.0.attn_output.weight"}}, {"alpha", 0.5},
                      {"scales", std::vector<float>(128, 1.0f)}};
  qt::write_file(tmp / "bad3.json", bad.dump());
  expect_error(qt::run(q + " convert " + model + " --method smoothquant --plan " + (tmp / "bad3.json") + " --qtype Q8_0 -o " + (tmp / "x.gguf")),
               {"bad3.json", "blk.0.attn_output.weight (256 columns) with 128 values"});
  bad["scales"][0]["kv_group"] = 2;
  bad["scales"][0]["head_dim"] = 48;
  qt::write_file(tmp / "bad4.json", bad.dump());
  expect_error(qt::run(q + " convert " + model + " --method smoothquant --plan " + (tmp / "bad4.json") + " --qtype Q8_0 -o " + (tmp / "x.gguf")),
               {"bad4.json", "kv_group 2 with head_dim 48"});
  expect_error(qt::run(q + " convert " + model + " --method awq --plan " + (tmp / "sq.json") + " --bits 4 -o " + (tmp / "x.gguf")),
               {"smoothquant plan cannot serve --method awq"});
  // An AWQ clip whose minima do not match its maxima, or a minimum above zero.
  bad = plan;
  bad["method"] = "awq";
  bad["clips"] = {{{"tensor", "blk.0.attn_v.weight"}, {"group", 128}, {"max", std::vector<float>(256, 0.1f)},
                   {"min", std::vector<float>(255, -0.1f)}}};
  qt::write_file(tmp / "bad5.json", bad.dump());
  expect_error(qt::run(q + " convert " + model + " --method awq --plan " + (tmp / "bad5.json") + " --bits 4 -o " + (tmp / "x.gguf")),
               {"bad5.json", "clip of blk.0.attn_v.weight has 255 minima for 256 maxima"});
  bad["clips"][0]["min"] = std::vector<float>(256, 0.05f);
  qt::write_file(tmp / "bad6.json", bad.dump());
  expect_error(qt::run(q + " convert " + model + " --method awq --plan " + (tmp / "bad6.json") + " --bits 4 -o " + (tmp / "x.gguf")),
               {"bad6.json", "clip minimum 0.05 of blk.0.attn_v.weight"});
  // α out of range, or not a number.
  expect_error(qt::run(q + " convert " + model + " --method smoothquant --alpha 1.5 --calib " + calib + " --qtype Q8_0 -o " + (tmp / "x.gguf")),
               {"--alpha 1.5 outside [0, 1]"});
  expect_error(qt::run(q + " convert " + model + " --method smoothquant --alpha half --calib " + calib + " --qtype Q8_0 -o " + (tmp / "x.gguf")),
               {"--alpha half is not a number"});
  // AWQ searches on activations: statistics alone do not do.
  expect_error(qt::run(q + " convert " + model + " --method awq --bits 4 --stats " + (tmp / "stats") + " -o " + (tmp / "x.gguf")),
               {"--method awq searches scales on calibration activations"});
  // Saved statistics that lack max|x| for a module.
  const auto cal = qt::run(q + " calibrate " + model + " --calib " + calib + " --nsamples 4 --seqlen 128 -o " + (tmp / "stats") + " --quiet");
  REQUIRE(cal.code == 0);
  {
    SafetensorsFile f(tmp / "stats/blk.2.safetensors");
    std::vector<SafeTensorOut> keep;
    for (const auto& [name, t] : f.tensors())
      if (name != "mlp_in.max_abs") keep.push_back({name, t.dtype, t.shape, std::vector<uint8_t>(t.data, t.data + t.nbytes)});
    write_safetensors(tmp / "blk2.tmp", keep);
  }
  std::filesystem::rename(tmp / "blk2.tmp", tmp / "stats/blk.2.safetensors");
  expect_error(qt::run(q + " convert " + model + " --method smoothquant --alpha 0.5 --stats " + (tmp / "stats") + " --qtype Q8_0 -o " +
                       (tmp / "x.gguf") + " --quiet"),
               {"blk.2.safetensors", "mlp_in.max_abs is missing"});
  CHECK(!std::filesystem::exists(tmp / "x.gguf"));
}

TEST_CASE("llama.cpp runs the AWQ and SmoothQuant GGUFs and agrees with our runtime", "[e2e][peers][llama.cpp][awq]") {
  if (!qt::install_llama_cpp()) return;
  qt::TempDir tmp;
  const std::string calib = qt::kjv_calib();
  const std::vector<std::pair<std::string, std::string>> cases = {
      // The files are what is tested here (llama.cpp runs folded scales and clipped rows): a short
      // search, clipped on one of them (the search itself: the AWQ tests above).
      {"awq-w4g128", "--method awq --bits 4 --group-size 128 --asym --awq-grid 4 --search-windows 4"},
      {"awq-w3g128", "--method awq --bits 3 --group-size 128 --asym --awq-grid 4 --search-windows 4 --awq-no-clip"},
      {"awq+gptq-w4g128", "--method awq+gptq --bits 4 --group-size 128 --asym --awq-grid 4 --search-windows 4 --awq-no-clip"},
      {"smoothquant-q8", "--method smoothquant --alpha 0.5 --qtype Q8_0"}};
  std::vector<std::string> files;
  for (const auto& [name, args] : cases) {
    files.push_back(tmp / (name + ".gguf"));
    const auto r = qt::run(qt::quant_bin() + " convert " + qt::bundled_model() + " " + args + " --calib " + calib +
                           " --nsamples 16 --seqlen 256 --quiet -o " + files.back());
    INFO(r.out);
    REQUIRE(r.code == 0);
  }
  std::vector<std::string> names;
  for (const auto& c : cases) names.push_back(c.first);
  qt::check_llama_agreement(names, files, 0.97);
}

TEST_CASE("AWQ clips each linear on the weights its plan's scales give (the search folds scales as the plan does)", "[unit][awq]") {
  // Every clip bound is (1 - i/20) times its group's max over the scaled, unclipped weight the
  // plan folds (clip_search's candidates): a search that scaled a weight otherwise than
  // ScaleEntry::fold (up_proj's rows, hidden != dim) clips it for other values.
  qt::TempDir tmp;
  qt::write_hf(tmp / "m", qt::make_synth(false, false, 31), TType::F32);
  const LoadedModel m = load_model(tmp / "m");
  REQUIRE(m.config.hidden != m.config.dim);
  std::vector<std::vector<int32_t>> windows;
  for (int s = 0; s < 4; ++s) {
    windows.emplace_back();
    for (int t = 0; t < 32; ++t) windows.back().push_back((s * 131 + t * 17) % 8000 + 3);
  }
  const auto plans = resolve_policy(Policy::defaults(QuantSpec::parse("int3 g32 asym")), m.weights->tensors());
  AwqOptions ao;
  ao.grid = 4;
  ao.search_windows = 4;
  ActPlan plan = awq_search(m.config, *m.weights, windows, plans, ao);
  ActPlan scales_only = plan;
  scales_only.clips.clear();
  OverlayStore folded(*m.weights);
  scales_only.apply(*m.weights, folded);
  int checked = 0;
  for (const ClipEntry& c : plan.clips) {
    INFO(c.tensor);
    const TensorDesc& d = m.weights->get(c.tensor);
    const std::vector<float> w = folded.read_f32(c.tensor);
    const int64_t ng = (d.cols + c.group - 1) / c.group;
    int64_t off = 0;
    for (int64_t r = 0; r < d.rows; ++r)
      for (int64_t g = 0; g < ng; ++g) {
        float hi0 = 0;
        for (int64_t j = g * c.group; j < std::min(d.cols, (g + 1) * c.group); ++j) hi0 = std::max(hi0, w[static_cast<size_t>(r * d.cols + j)]);
        const float got = c.max[static_cast<size_t>(r * ng + g)];
        bool candidate = false;
        for (int i = 0; i < 10; ++i) candidate = candidate || got == hi0 * (1.0f - static_cast<float>(i) / 20.0f);
        off += !candidate;
      }
    CHECK(off == 0);
    ++checked;
  }
  CHECK(checked == 5 * m.config.n_layers);  // v, o, gate, up, down in every block
}
