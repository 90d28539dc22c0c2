// GPTQ-format checkpoint writer: HF directory with quantization_config and packed linears.
#include "quant/formats/gptq_writer.h"

#include <unistd.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "hf_gptq.h"
#include "quant/formats/mmap.h"

namespace quant {

namespace fs = std::filesystem;

void resolve_gptq_storage(std::vector<TensorPlan>& plans) {
  const GridSpec* first = nullptr;
  std::string first_name;
  for (auto& p : plans) {
    if (!plan_quantizes(p)) {
      p.stored = p.requested.type;
      p.stored_as = std::string(ttype_name(p.stored));
      p.stored_bpw = 8.0 * traits(p.stored).block_bytes;
      continue;
    }
    QUANT_CHECK(p.requested.kind == QuantSpec::Kind::Grid,
                "tensor {}: {} is a ggml type; a GPTQ checkpoint holds integer grids: give --bits (2, 3, 4 or 8)", p.name,
                p.requested.str());
    const GridSpec& g = p.requested.grid;
    QUANT_CHECK(g.bits == 2 || g.bits == 3 || g.bits == 4 || g.bits == 8, "tensor {}: {}-bit grids have no GPTQ layout (2, 3, 4, 8)",
                p.name, g.bits);
    QUANT_CHECK(p.rows * g.bits % 32 == 0 && p.cols * g.bits % 32 == 0,
                "tensor {}: [{}, {}] at {} bits does not split into the 32-bit words of a GPTQ checkpoint", p.name, p.rows, p.cols,
                g.bits);
    if (!first) {
      first = &g;
      first_name = p.name;
    }
    QUANT_CHECK(g.bits == first->bits && g.group == first->group && g.sym == first->sym,
                "tensor {} is {} but {} is {}: quantization_config holds one grid for every linear", p.name, g.str(), first_name,
                first->str());
    const int64_t group = g.group == 0 ? p.cols : g.group, ng = (p.cols + group - 1) / group;
    p.stored = TType::I32;
    p.stored_as = fmt::format("GPTQ {}b g{}", g.bits, g.group == 0 ? -1 : g.group);
    // qweight, qzeros and fp16 scales per group, g_idx per column.
    const double bits = static_cast<double>(p.rows) * p.cols * g.bits + static_cast<double>(ng) * p.rows * (g.bits + 16) +
                        32.0 * static_cast<double>(p.cols);
    p.stored_bpw = bits / (static_cast<double>(p.rows) * p.cols);
    p.note = "exact (scales in fp16)";
  }
}

namespace {

std::vector<SafeTensorDecl> declare(const std::vector<TensorPlan>& plans) {
  std::vector<SafeTensorDecl> out;
  for (const auto& p : plans) {
    const std::string hf = hf_tensor_name(p.name);
    std::vector<int64_t> shape = p.n_dims == 1 ? std::vector<int64_t>{p.cols} : std::vector<int64_t>{p.rows, p.cols};
    if (!plan_quantizes(p)) {
      out.push_back({hf, p.stored, shape});
      continue;
    }
    const GridSpec& g = p.requested.grid;
    const int64_t group = g.group == 0 ? p.cols : g.group, ng = (p.cols + group - 1) / group;
    const std::string pre = hf.substr(0, hf.size() - std::string("weight").size());
    out.push_back({pre + "qweight", TType::I32, {p.cols * g.bits / 32, p.rows}});
    out.push_back({pre + "qzeros", TType::I32, {ng, p.rows * g.bits / 32}});
    out.push_back({pre + "scales", TType::F16, {ng, p.rows}});
    out.push_back({pre + "g_idx", TType::I32, {p.cols}});
  }
  return out;
}

nlohmann::json quantization_config(const std::vector<TensorPlan>& plans, const GptqExportInfo& info, bool act_order) {
  for (const auto& p : plans)
    if (plan_quantizes(p)) {
      const GridSpec& g = p.requested.grid;
      return {{"quant_method", "gptq"}, {"bits", g.bits}, {"group_size", g.group == 0 ? -1 : g.group},
              // Our act-order keeps static groups (g_idx = i / group); a kept checkpoint's g_idx may not.
              {"desc_act", act_order}, {"static_groups", !act_order}, {"sym", g.sym}, {"true_sequential", true}, {"damp_percent", info.damp},
              {"checkpoint_format", info.zeros == GptqZeros::V1 ? "gptq" : "gptq_v2"}, {"pack_dtype", "int32"},
              {"meta", {{"quantizer", {"quant"}}, {"method", info.method}}}};
    }
  fail("a GPTQ checkpoint needs at least one quantized linear (give --bits)");
}

// Writes the tensors in plan order: a linear's four packed arrays, or a float tensor's values.
uint64_t write_tensors(const std::vector<TensorPlan>& plans, TensorSource& src, const std::string& path, const GptqExportInfo& info,
                       bool& act_order) {
  nlohmann::json meta = {{"format", "pt"}};
  for (const auto& [k, v] : info.extra) meta["quant." + k] = v;
  SafetensorsWriter w(path, declare(plans), meta);
  for (size_t i = 0; i < plans.size(); ++i) {
    const TensorPlan& p = plans[i];
    if (info.progress) info.progress(i, plans.size(), p.name);
    QuantizedTensor t = src.take(p);
    const std::string hf = hf_tensor_name(p.name);
    if (!plan_quantizes(p)) {
      const PackedTensor f = pack_float(t.values.data(), p.n_dims == 1 ? 1 : p.rows, p.cols, p.stored);
      w.write(hf, f.data.data(), f.data.size());
      continue;
    }
    QUANT_CHECK(t.q.has_value(), "tensor {}: the stage handed out no grid", p.name);
    const GptqPacked g = pack_gptq(*t.q, info.zeros, p.name);
    act_order = act_order || !t.q->g_idx.empty();
    const std::string pre = hf.substr(0, hf.size() - std::string("weight").size());
    w.write(pre + "qweight", g.qweight.data(), g.qweight.size() * 4);
    w.write(pre + "qzeros", g.qzeros.data(), g.qzeros.size() * 4);
    w.write(pre + "scales", g.scales.data(), g.scales.size() * 2);
    w.write(pre + "g_idx", g.g_idx.data(), g.g_idx.size() * 4);
  }
  w.commit();
  return w.bytes();
}

}  // namespace

GptqExportResult write_gptq_checkpoint(const LoadedModel& model, TensorSource& src, const std::string& dir,
                                       const GptqExportInfo& info) {
  QUANT_CHECK(model.format == "hf", "{}: --format gptq-safetensors writes beside an HF checkpoint's config.json and tokenizer "
              "files; this source is {}", model.path, model.format);
  QUANT_CHECK(!fs::exists(dir) || (fs::is_directory(dir) && fs::is_empty(dir)), "{}: exists and is not an empty directory", dir);
  const fs::path final_dir = fs::absolute(dir);
  const fs::path tmp = final_dir.parent_path() / fmt::format(".{}.tmp-{}", final_dir.filename().string(), ::getpid());
  std::error_code ec;
  fs::remove_all(tmp, ec);
  QUANT_CHECK(fs::create_directories(tmp, ec), "{}: cannot create: {}", tmp.string(), ec.message());
  struct Cleanup {
    fs::path p;
    bool keep = false;
    ~Cleanup() {
      std::error_code e;
      if (!keep) fs::remove_all(p, e);
    }
  } cleanup{tmp};
  GptqExportResult r;
  const std::vector<TensorPlan>& plans = src.plans();
  nlohmann::json cfg = read_json_file((fs::path(model.path) / "config.json").string());
  bool act_order = false;
  r.bytes += write_tensors(plans, src, (tmp / "model.safetensors").string(), info, act_order);
  cfg["quantization_config"] = quantization_config(plans, info, act_order);
  cfg["torch_dtype"] = "float16";
  {
    AtomicFile f((tmp / "config.json").string());
    const std::string text = cfg.dump(2) + "\n";
    f.write(text.data(), text.size());
    f.commit();
  }
  r.files = {"config.json", "model.safetensors"};
  for (const char* f : {"tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
                        "generation_config.json"}) {
    const fs::path from = fs::path(model.path) / f;
    if (!fs::exists(from)) continue;
    fs::copy_file(from, tmp / f);
    r.files.push_back(f);
  }
  for (const auto& f : r.files) r.bytes += f == "model.safetensors" ? 0 : fs::file_size(tmp / f);
  if (fs::exists(final_dir)) fs::remove(final_dir);  // empty, checked above
  fs::rename(tmp, final_dir);
  cleanup.keep = true;
  return r;
}

}  // namespace quant
