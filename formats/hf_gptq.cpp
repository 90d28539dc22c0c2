// GPTQ-format HF checkpoints: quantization_config and the packed tensors of each linear.
#include "hf_gptq.h"

#include <cstring>
#include <filesystem>

#include "quant/formats/loader.h"

namespace quant {

std::optional<GptqConfig> read_gptq_config(const std::string& dir, const nlohmann::json& config) {
  namespace fs = std::filesystem;
  nlohmann::json q;
  std::string source = (fs::path(dir) / "config.json").string();
  if (config.contains("quantization_config") && !config["quantization_config"].is_null()) {
    q = config["quantization_config"];
  } else if (fs::exists(fs::path(dir) / "quantize_config.json")) {
    source = (fs::path(dir) / "quantize_config.json").string();
    q = read_json_file(source);
    if (!q.contains("quant_method")) q["quant_method"] = "gptq";  // AutoGPTQ's file predates the field
  } else {
    return std::nullopt;
  }
  QUANT_CHECK(q.is_object(), "{}: quantization_config is not an object", source);
  const std::string method = q.value("quant_method", std::string("(none)"));
  QUANT_CHECK(method == "gptq", "{}: quantization_config.quant_method = {} is not supported (gptq is)", source, method);
  auto field = [&](const char* k, auto dflt) {
    if (!q.contains(k) || q[k].is_null()) return dflt;
    try {
      return q[k].get<decltype(dflt)>();
    } catch (const std::exception&) {
      fail("{}: quantization_config.{} has the wrong type", source, k);
    }
  };
  GptqConfig c;
  c.source = source;
  c.bits = field("bits", 4);
  QUANT_CHECK(c.bits == 2 || c.bits == 3 || c.bits == 4 || c.bits == 8, "{}: quantization_config.bits = {} (2, 3, 4 or 8)",
              source, c.bits);
  c.group = field("group_size", int64_t{128});
  QUANT_CHECK(c.group == -1 || c.group > 0, "{}: quantization_config.group_size = {}", source, c.group);
  c.desc_act = field("desc_act", false);
  c.sym = field("sym", true);
  const std::string fmt = field("checkpoint_format", std::string("gptq"));
  QUANT_CHECK(fmt == "gptq" || fmt == "gptq_v2", "{}: quantization_config.checkpoint_format = {} (gptq or gptq_v2)", source, fmt);
  c.zeros = fmt == "gptq_v2" ? GptqZeros::V2 : GptqZeros::V1;
  return c;
}

namespace {
std::vector<int32_t> int32_data(const SafeTensor& t, const std::string& file, const char* field) {
  QUANT_CHECK(t.dtype == TType::I32, "{}: {} is {}, not I32", file, t.name, ttype_name(t.dtype));
  (void)field;
  std::vector<int32_t> v(t.nbytes / 4);
  std::memcpy(v.data(), t.data, t.nbytes);
  return v;
}
}  // namespace

GptqPacked gather_gptq(const GptqTensorsIn& t, const GptqConfig& cfg, const std::string& file, const std::string& prefix) {
  QUANT_CHECK(t.qzeros && t.scales, "{}: {}.qweight without {}.qzeros and {}.scales", file, prefix, prefix, prefix);
  auto dims = [&](const SafeTensor* s) {
    QUANT_CHECK(s->shape.size() == 2, "{}: {} has {} dims, 2 expected", file, s->name, s->shape.size());
    return std::pair{s->shape[0], s->shape[1]};
  };
  const auto [qw_rows, out] = dims(t.qweight);
  GptqPacked p;
  p.bits = cfg.bits;
  p.in = qw_rows * 32 / cfg.bits;
  QUANT_CHECK(qw_rows * 32 % cfg.bits == 0, "{}: {} has {} rows, not whole {}-bit codes", file, t.qweight->name, qw_rows, cfg.bits);
  p.out = out;
  p.group = cfg.group == -1 ? p.in : cfg.group;
  const auto [zr, zc] = dims(t.qzeros);
  const auto [sr, sc] = dims(t.scales);
  QUANT_CHECK(zr == p.n_groups() && zc * 32 == p.out * cfg.bits,
              "{}: {} is [{}, {}] but quantization_config (bits {}, group_size {}) and qweight imply [{}, {}]", file,
              t.qzeros->name, zr, zc, cfg.bits, cfg.group, p.n_groups(), p.out * cfg.bits / 32);
  QUANT_CHECK(sr == p.n_groups() && sc == p.out,
              "{}: {} is [{}, {}] but quantization_config (group_size {}) and qweight imply [{}, {}]", file, t.scales->name, sr,
              sc, cfg.group, p.n_groups(), p.out);
  QUANT_CHECK(t.scales->dtype == TType::F16, "{}: {} is {}, not F16", file, t.scales->name, ttype_name(t.scales->dtype));
  p.qweight = int32_data(*t.qweight, file, "qweight");
  p.qzeros = int32_data(*t.qzeros, file, "qzeros");
  p.scales.resize(static_cast<size_t>(sr * sc));
  std::memcpy(p.scales.data(), t.scales->data, t.scales->nbytes);
  if (t.g_idx) {
    QUANT_CHECK(t.g_idx->shape == std::vector<int64_t>{p.in}, "{}: {} has {} entries but qweight implies in_features {}", file,
                t.g_idx->name, t.g_idx->shape.empty() ? 0 : t.g_idx->shape[0], p.in);
    p.g_idx = int32_data(*t.g_idx, file, "g_idx");
  } else {
    p.g_idx.resize(static_cast<size_t>(p.in));
    for (int64_t i = 0; i < p.in; ++i) p.g_idx[static_cast<size_t>(i)] = static_cast<int32_t>(i / p.group);
  }
  p.validate(file + ": " + prefix);
  return p;
}

}  // namespace quant
