// The quantization stage: methods per tensor, GPTQ run block by block as a writer takes tensors,
// the same grids as the whole-model driver, and its errors (one clear message each).
#include <cmath>

#include "../common.h"
#include "../synth.h"
#include "quant/calibration/stage.h"
#include "quant/formats/loader.h"

using namespace quant;

namespace {

const std::vector<std::vector<int32_t>> kWindows = {{1, 5, 9, 13, 17, 21, 25, 29, 33, 37, 41, 45, 49, 53, 57, 61},
                                                    {2, 6, 10, 14, 18, 22, 26, 30, 34, 38, 42, 46, 50, 54, 58, 62},
                                                    {3, 7, 11, 15, 19, 23, 27, 31, 35, 39, 43, 47, 51, 55, 59, 63}};

std::vector<TensorPlan> grid_plans(const LoadedModel& m, const char* spec) {
  return resolve_policy(Policy::defaults(QuantSpec::parse(spec)), m.weights->tensors());
}

// A small synthetic Llama (tests/synth.h) written as an HF directory under tmp and loaded.
LoadedModel synth_model(const qt::TempDir& tmp, const qt::Synth& s) {
  qt::write_hf(tmp / "m", s, TType::F32);
  return load_model(tmp / "m");
}

bool same_grid(const QuantWeight& a, const QuantWeight& b) {
  return a.rows == b.rows && a.cols == b.cols && a.codes == b.codes && a.scales == b.scales && a.mins == b.mins;
}

}  // namespace

TEST_CASE("stage: methods per tensor, GPTQ block by block as tensors are taken, same grids as the whole-model driver",
          "[unit][stage]") {
  qt::TempDir tmp;
  const LoadedModel m = synth_model(tmp, qt::make_synth(false, false, 21));
  StageSpec spec;
  spec.method = Method::Gptq;
  spec.windows = kWindows;
  QuantStage stage(m.config, *m.weights, grid_plans(m, "int4 g32 asym"), spec);
  for (const auto& p : stage.plans()) {
    INFO(p.name);
    const bool linear = p.name.rfind("blk.", 0) == 0 && p.n_dims == 2;
    CHECK(p.method == (linear ? Method::Gptq : p.n_dims == 1 ? Method::None : Method::Rtn));
  }
  stage.prepare();
  // Taking a block-0 linear runs block 0 only: the writer holds one block's grids at a time.
  const QuantizedTensor q0 = stage.take(stage.plan("blk.0.attn_q.weight"));
  REQUIRE(q0.q);
  CHECK(q0.report.method == Method::Gptq);
  CHECK(q0.report.loss > 0);
  CHECK(stage.gptq()->layers.size() == 7);
  const QuantizedTensor d1 = stage.take(stage.plan("blk.1.ffn_down.weight"));
  CHECK(stage.gptq()->layers.size() == 14);
  CHECK_THROWS_WITH(stage.take(stage.plan("blk.0.attn_q.weight")), Catch::Contains("blk.0.attn_q.weight") && Catch::Contains("taken twice"));
  // RTN and float tensors come from the weights when taken.
  const QuantizedTensor emb = stage.take(stage.plan("token_embd.weight"));
  REQUIRE(emb.q);
  CHECK(emb.report.method == Method::Rtn);
  CHECK(emb.report.nmse > 0);
  CHECK(emb.report.nmse < 0.05);
  const QuantizedTensor norm = stage.take(stage.plan("blk.0.attn_norm.weight"));
  CHECK_FALSE(norm.q);
  CHECK(norm.values == m.weights->read_f32("blk.0.attn_norm.weight"));

  // The same grids as the whole-model sequential driver.
  std::map<std::string, QuantWeight> all;
  SequentialOptions so;
  so.sink = [&](const TensorPlan& p, QuantWeight&& q, const TensorReport&) { all.emplace(p.name, std::move(q)); };
  gptq_sequential(m.config, *m.weights, kWindows, stage.plans(), so);
  REQUIRE(all.size() == 14);
  CHECK(same_grid(*q0.q, all.at("blk.0.attn_q.weight")));
  CHECK(same_grid(*d1.q, all.at("blk.1.ffn_down.weight")));
}

TEST_CASE("stage: AWQ+GPTQ marks the linears and hands out the norms with the searched scales folded in", "[unit][stage]") {
  qt::TempDir tmp;
  const LoadedModel m = synth_model(tmp, qt::make_synth(false, true, 22));
  StageSpec awq;
  awq.method = Method::AwqGptq;
  awq.windows = kWindows;
  awq.awq.grid = 4;
  awq.awq.search_windows = 2;
  QuantStage a(m.config, *m.weights, grid_plans(m, "int3 g32 asym"), awq);
  CHECK(a.plan("blk.1.ffn_up.weight").method == Method::AwqGptq);
  CHECK(a.plan("output.weight").method == Method::Rtn);
  a.prepare();
  REQUIRE(a.act_plan());
  CHECK(a.act_plan()->method == "awq");
  CHECK(a.metadata().count("awq") == 1);
  CHECK(a.metadata().count("gptq") == 1);
  // The stage hands out the norm with the searched scales folded in: norm / s.
  const std::vector<float> folded = a.take(a.plan("blk.0.attn_norm.weight")).values;
  const std::vector<float> base = m.weights->read_f32("blk.0.attn_norm.weight");
  const ScaleEntry* e = nullptr;
  for (const auto& s : a.act_plan()->scales)
    if (s.prev == "blk.0.attn_norm.weight") e = &s;
  REQUIRE(e);
  REQUIRE(folded.size() == e->scales.size());
  for (size_t i = 0; i < folded.size(); ++i) CHECK(folded[i] == base[i] / e->scales[i]);
}

TEST_CASE("stage bad input: missing calibration, take before prepare, NaN weights named", "[unit][stage][bad-input]") {
  qt::TempDir tmp;
  qt::Synth s = qt::make_synth(false, false, 23);
  s.tensors["model.layers.1.self_attn.o_proj.weight"].second[5] = std::nanf("");
  const LoadedModel m = synth_model(tmp, s);
  StageSpec gptq;
  gptq.method = Method::Gptq;
  QuantStage g(m.config, *m.weights, grid_plans(m, "int4 g32 asym"), gptq);
  CHECK_THROWS_WITH(g.take(g.plan("blk.0.attn_q.weight")), Catch::Contains("not prepared"));
  CHECK_THROWS_WITH(g.prepare(), Catch::Contains("--method gptq needs calibration windows or saved statistics"));
  StageSpec awq;
  awq.method = Method::Awq;
  CHECK_THROWS_WITH(QuantStage(m.config, *m.weights, grid_plans(m, "int4 g32 asym"), awq).prepare(),
                    Catch::Contains("--method awq searches scales on calibration windows"));
  StageSpec rtn;
  QuantStage r(m.config, *m.weights, grid_plans(m, "Q4_0"), rtn);
  r.prepare();
  CHECK_THROWS_WITH(r.take(r.plan("blk.1.attn_output.weight")), Catch::Contains("blk.1.attn_output.weight") && Catch::Contains("not finite"));
  CHECK_THROWS_WITH(r.plan("blk.9.attn_q.weight"), Catch::Contains("no plan for tensor blk.9.attn_q.weight"));
  CHECK_THROWS_WITH(parse_method("gptq2"), "--method gptq2 is not available (rtn, gptq, awq, awq+gptq, smoothquant are)");
}
