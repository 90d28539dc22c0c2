// The quantization stage: methods assigned per tensor, the activation-aware transforms folded
// into the weights, GPTQ block by block as the writer asks, RTN for the rest.
#include "quant/calibration/stage.h"

#include <nlohmann/json.hpp>

#include "quant/error.h"

namespace quant {

namespace {

bool is_decoder_linear(const TensorPlan& p) { return p.name.rfind("blk.", 0) == 0 && p.n_dims == 2; }
bool gptq_target(const TensorPlan& p) { return uses_gptq(p.method) && gptq_quantizable(p.requested); }

}  // namespace

void assign_methods(std::vector<TensorPlan>& plans, Method m) {
  for (auto& p : plans) {
    if (!is_decoder_linear(p)) continue;
    if (uses_gptq(m) && gptq_quantizable(p.requested)) p.method = Method::Gptq;
    if (is_act_aware(m) && p.requested.kind != QuantSpec::Kind::Float) p.method = p.method == Method::Gptq ? Method::AwqGptq : m;
  }
}

QuantStage::QuantStage(const LlamaConfig& cfg, const WeightStore& weights, std::vector<TensorPlan> plans, StageSpec spec)
    : cfg_(cfg), base_(weights), plans_(std::move(plans)), spec_(std::move(spec)) {
  QUANT_CHECK(spec_.method != Method::None, "the quantization stage needs a method");
  assign_methods(plans_, spec_.method);
}

QuantStage::~QuantStage() = default;

const WeightStore& QuantStage::weights() const { return overlay_ ? static_cast<const WeightStore&>(*overlay_) : base_; }

const SequentialResult* QuantStage::gptq() const { return gptq_ ? &gptq_->result() : nullptr; }

void QuantStage::prepare() {
  QUANT_CHECK(!prepared_, "the quantization stage was prepared twice");
  prepared_ = true;
  const Method m = spec_.method;
  QUANT_CHECK(!uses_gptq(m) || !spec_.windows.empty() || spec_.stats, "--method {} needs calibration windows or saved statistics",
              method_name(m));
  QUANT_CHECK(!uses_awq(m) || spec_.act_plan || !spec_.windows.empty(), "--method {} searches scales on calibration windows",
              method_name(m));
  auto progress_of = [&](const std::string& step) {
    return [this, step](const std::string& what, int64_t d, int64_t t) {
      if (spec_.progress) spec_.progress(step, what, d, t);
    };
  };
  if (is_act_aware(m)) {
    // Search (or take) the plan, then fold it into an overlay of the weights: everything after
    // (GPTQ, RTN) sees the transformed model.
    if (spec_.act_plan) {
      act_plan_ = spec_.act_plan;
      QUANT_CHECK((act_plan_->method == "awq") == uses_awq(m), "{}: a {} plan cannot serve --method {}", spec_.act_plan_file,
                  act_plan_->method, method_name(m));
    } else if (uses_awq(m)) {
      AwqOptions ao = spec_.awq;
      ao.progress = progress_of(method_name(m));
      act_plan_ = awq_search(cfg_, base_, spec_.windows, plans_, ao);
    } else {
      SmoothOptions so = spec_.smooth;
      if (spec_.windows.empty()) so.stats = spec_.stats;
      so.progress = progress_of(method_name(m));
      act_plan_ = smoothquant_search(cfg_, base_, spec_.windows, so);
    }
    overlay_ = std::make_unique<OverlayStore>(base_);
    act_plan_->apply(base_, *overlay_);
  }
  // MatMulNBits and the GPTQ layout hold act-order groups (g_idx); ggml blocks do not.
  rtn_ = std::make_unique<RtnTensors>(weights(), plans_, spec_.grid_store == GridStore::Exact, spec_.importance);
  if (uses_gptq(m)) {
    SequentialOptions so;
    so.gptq = spec_.gptq;
    so.grid_store = spec_.grid_store;
    so.importance = spec_.importance;
    so.acts = spec_.acts;
    so.progress = progress_of("gptq");
    so.sink = [this](const TensorPlan& p, QuantWeight&& q, const TensorReport& r) {
      QuantizedTensor& t = gptq_done_[p.name];
      t.q = std::move(q);
      t.report = r;
    };
    if (!spec_.stats && !spec_.work_dir.empty()) {
      ckpt_ = std::make_unique<RunCheckpoints>(spec_.work_dir,
                                               run_identity(cfg_, weights(), plans_, method_name(m), spec_.gptq,
                                                            static_cast<int>(spec_.grid_store), spec_.windows),
                                               spec_.resume);
      resumed_ = ckpt_->blocks_done();
      so.checkpoints = ckpt_.get();
    }
    gptq_ = spec_.stats ? gptq_stats_driver(cfg_, weights(), *spec_.stats, plans_, so)
                        : gptq_sequential_driver(cfg_, weights(), spec_.windows, plans_, so);
  }
}

QuantizedTensor QuantStage::take(const TensorPlan& plan) {
  QUANT_CHECK(prepared_, "tensor {}: the quantization stage was not prepared", plan.name);
  const TensorPlan& p = this->plan(plan.name);
  QuantizedTensor out;
  if (gptq_ && gptq_target(p)) {
    // The driver runs block by block up to this tensor's; blocks taken in order keep one
    // block's grids in memory.
    const int64_t block = std::stoll(p.name.substr(4, p.name.find('.', 4) - 4));
    if (block < resumed_ && !gptq_done_.count(p.name))  // finished before the resume: from its checkpoint
      for (auto& t : ckpt_->load_block(block)) {
        QuantizedTensor& q = gptq_done_[t.name];
        q.q = std::move(t.q);
        q.report = t.report;
      }
    while (!gptq_done_.count(p.name) && !gptq_->done()) gptq_->run_block();
    auto it = gptq_done_.find(p.name);
    QUANT_CHECK(it != gptq_done_.end(), "tensor {}: taken twice from the quantization stage", p.name);
    out = std::move(it->second);
    gptq_done_.erase(it);
  } else {
    out = rtn_->take(p);
  }
  reports_.push_back(out.report);
  return out;
}

void QuantStage::finish() {
  if (ckpt_) ckpt_->finish();
}

std::map<std::string, std::string> QuantStage::metadata() const {
  std::map<std::string, std::string> md;
  if (act_plan_) {
    md[act_plan_->method] = nlohmann::json({{"settings", nlohmann::json::parse(act_plan_->settings_json)},
                                            {"plan", spec_.act_plan ? spec_.act_plan_file : "searched"}})
                                .dump();
    if (!spec_.calib.file.empty() && !spec_.act_plan) md["calibration"] = spec_.calib.to_json().dump();
  }
  if (uses_gptq(spec_.method)) {
    nlohmann::json calib = spec_.calib.to_json();
    if (spec_.stats) {
      calib = nlohmann::json::parse(spec_.stats->calibration_json());
      calib["stats"] = spec_.stats->dir();
    }
    const GptqOptions& g = spec_.gptq;
    md["calibration"] = calib.dump();
    md["gptq"] = nlohmann::json({{"damp", g.damp}, {"act_order", g.act_order}, {"block", g.block},
                                 {"static_groups", g.static_groups || g.act_order}, {"true_sequential", spec_.stats == nullptr}})
                     .dump();
  }
  return md;
}

PlanTotals plan_totals(const std::vector<TensorPlan>& plans) {
  double logical_bits = 0, stored_bits = 0, linear_logical = 0, linear_n = 0;
  for (const auto& p : plans) {
    const double n = static_cast<double>(p.rows * p.cols);
    logical_bits += n * p.logical_bpw;
    stored_bits += n * p.stored_bpw;
    if (is_decoder_linear(p)) {
      linear_logical += n * p.logical_bpw;
      linear_n += n;
    }
  }
  return {linear_n > 0 ? linear_logical / linear_n : 0.0, logical_bits / 8, stored_bits / 8};
}

}  // namespace quant
