// What `quant inspect` reads of a GGUF file, and the size figures `quant compare` reports.
#include <filesystem>
#include <fstream>

#include "commands.h"
#include "quant/error.h"
#include "quant/formats/gguf.h"
#include "quant/formats/loader.h"
#include "quant/formats/mmap.h"
#include "quant/formats/onnx_model.h"
#include "quant/qtype.h"

namespace quant::cli {

namespace fs = std::filesystem;

nlohmann::json read_json_file(const std::string& path, const char* what) {
  std::ifstream in(path);
  QUANT_CHECK(in, "{}: cannot open {} file", path, what);
  note_input(path);
  try {
    return nlohmann::json::parse(in);
  } catch (const std::exception& e) {
    fail("{}: not valid JSON: {}", path, e.what());
  }
}

nlohmann::json inspect_gguf_json(const std::string& path) {
  GgufFile f(path);
  nlohmann::json tensor_meta = nlohmann::json::array();
  if (const GgufValue* v = f.find("quant.tensors"); v && v->type == GgufType::STR) {
    // Tolerated when unreadable: inspect still lists the tensors, without plan columns.
    if (nlohmann::json j = nlohmann::json::parse(v->str, nullptr, false); !j.is_discarded()) tensor_meta = std::move(j);
  }
  auto meta_for = [&](const std::string& name) -> nlohmann::json {
    for (const auto& t : tensor_meta)
      if (t.is_object() && t.value("name", "") == name) return t;
    return nlohmann::json::object();
  };
  nlohmann::json j = {{"file", path}, {"version", f.version()}, {"size_bytes", f.file_size()}};
  j["metadata"] = nlohmann::json::object();
  for (const auto& [k, v] : f.kv()) j["metadata"][k] = v.summary();
  j["tensors"] = nlohmann::json::array();
  uint64_t n_total = 0, bytes_total = 0;
  double logical_total = 0;
  for (const auto& t : f.tensors()) {
    uint64_t n = 1;
    for (auto e : t.ne) n *= static_cast<uint64_t>(e);
    // Per-tensor metadata describes this tensor only while its type is the one it recorded
    // (llama-quantize copies our keys into files it requantizes).
    nlohmann::json m = meta_for(t.name);
    if (m.value("stored", "") != ttype_name(t.type)) m = nlohmann::json::object();
    const double logical = m.is_object() && m.contains("logical_bpw") ? m["logical_bpw"].get<double>() : type_bpw(t.type);
    n_total += n;
    bytes_total += t.nbytes;
    logical_total += logical * static_cast<double>(n);
    j["tensors"].push_back({{"name", t.name}, {"shape", t.ne}, {"type", std::string(ttype_name(t.type))},
                            {"bytes", t.nbytes}, {"bpw", type_bpw(t.type)}, {"method", m.value("method", "")},
                            {"grid", m.value("requested", "")}, {"logical_bpw", logical}});
  }
  j["params"] = n_total;
  j["tensor_bytes"] = bytes_total;
  j["bpw"] = 8.0 * static_cast<double>(bytes_total) / static_cast<double>(n_total);
  j["logical_bpw"] = logical_total / static_cast<double>(n_total);
  return j;
}

nlohmann::json model_footprint(const std::string& path) {
  nlohmann::json tensors;
  nlohmann::json out;
  uint64_t file_bytes = 0;
  const fs::path p(path);
  const bool onnx = p.extension() == ".onnx" || (fs::is_directory(p) && fs::exists(p / "model.onnx"));
  if (onnx) {
    const nlohmann::json j = nlohmann::json::parse(inspect_onnx_json(p.extension() == ".onnx" ? path : (p / "model.onnx").string()));
    tensors = j["tensors"];
    file_bytes = j["size_bytes"].get<uint64_t>();
    out["format"] = "onnx";
  } else if (fs::is_regular_file(p) && p.extension() == ".gguf") {
    const nlohmann::json j = inspect_gguf_json(path);
    tensors = j["tensors"];
    file_bytes = j["size_bytes"].get<uint64_t>();
    out["format"] = "gguf";
  } else {
    // A checkpoint: every tensor at its stored float type.
    LoadedModel m = load_model(path);
    tensors = nlohmann::json::array();
    for (const auto& t : m.weights->tensors())
      tensors.push_back({{"name", t.name}, {"shape", {t.cols, t.rows}}, {"bpw", type_bpw(t.type)}, {"logical_bpw", type_bpw(t.type)}});
    if (fs::is_directory(p)) {
      for (const auto& e : fs::directory_iterator(p))
        if (e.is_regular_file() && e.path().extension() == ".safetensors") file_bytes += e.file_size();
    } else {
      file_bytes = fs::file_size(p);
    }
    out["format"] = m.format;
  }
  double params = 0, stored = 0, logical = 0, lin_n = 0, lin_logical = 0;
  for (const auto& t : tensors) {
    double n = 1;
    for (const auto& e : t["shape"]) n *= e.get<double>();
    const std::string name = t["name"].get<std::string>();
    params += n;
    stored += n * t["bpw"].get<double>();
    logical += n * t["logical_bpw"].get<double>();
    const bool vec = t["shape"].size() < 2 || t["shape"][0].get<int64_t>() == 1 || t["shape"][1].get<int64_t>() == 1;
    if (name.rfind("blk.", 0) == 0 && !vec) {
      lin_n += n;
      lin_logical += n * t["logical_bpw"].get<double>();
    }
  }
  out["file_bytes"] = file_bytes;
  out["params"] = params;
  out["stored_bpw"] = params > 0 ? stored / params : 0.0;
  out["logical_bpw"] = params > 0 ? logical / params : 0.0;
  out["decoder_linear_logical_bpw"] = lin_n > 0 ? lin_logical / lin_n : 0.0;
  out["logical_bytes"] = logical / 8;
  return out;
}

}  // namespace quant::cli
