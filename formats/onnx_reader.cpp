// ONNX -> Llama: reads back the files the exporter (onnx_model.cpp) writes: config, vocabulary
// and weights from the graph's initializers and MatMulNBits nodes; and what `quant inspect` shows.
#include <onnx/onnx_pb.h>

#include <charconv>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>

#include "quant/formats/mmap.h"
#include "quant/formats/onnx_model.h"
#include "quant/half.h"

namespace quant {

namespace fs = std::filesystem;

// ---------------------------------------------------------------------------------------------
// Reader

namespace {

// One initializer's bytes, inline or in the external data file (bounds checked).
struct Blob {
  const uint8_t* data = nullptr;
  uint64_t size = 0;
};

class OnnxFile {
 public:
  explicit OnnxFile(const std::string& path) : path_(path) {
    MappedFile f(path);
    QUANT_CHECK(f.size() > 0 && f.size() < (uint64_t{1} << 31), "{}: {} bytes is not an ONNX model protobuf", path, f.size());
    QUANT_CHECK(model_.ParseFromArray(f.data(), static_cast<int>(f.size())), "{}: not an ONNX model (protobuf parse failed)", path);
    QUANT_CHECK(model_.has_graph(), "{}: ONNX model without a graph", path);
    for (const auto& m : model_.metadata_props()) meta_[m.key()] = m.value();
    for (const auto& t : model_.graph().initializer()) {
      QUANT_CHECK(inits_.emplace(t.name(), &t).second, "{}: initializer {} appears twice", path, t.name());
      if (t.data_location() == onnx::TensorProto::EXTERNAL) raw(t);  // every reference checked up front
    }
  }
  const onnx::ModelProto& model() const { return model_; }
  const std::string& path() const { return path_; }
  const std::map<std::string, std::string>& meta() const { return meta_; }
  std::string meta_str(const std::string& key) const {
    auto it = meta_.find(key);
    QUANT_CHECK(it != meta_.end(), "{}: metadata {} is missing (only ONNX files written by quant convert are read)", path_, key);
    return it->second;
  }
  const onnx::TensorProto& init(const std::string& name) const {
    auto it = inits_.find(name);
    QUANT_CHECK(it != inits_.end(), "{}: initializer {} is missing", path_, name);
    return *it->second;
  }
  bool has_init(const std::string& name) const { return inits_.count(name) > 0; }

  // The tensor's bytes, checked against its type and dims.
  Blob bytes(const onnx::TensorProto& t, int want_type, uint64_t elem_size) const {
    QUANT_CHECK(t.data_type() == want_type, "{}: initializer {} has data type {}, expected {}", path_, t.name(),
                t.data_type(), want_type);
    uint64_t n = 1;
    for (auto d : t.dims()) {
      QUANT_CHECK(d >= 0 && d < (int64_t{1} << 40), "{}: initializer {} has dimension {}", path_, t.name(), d);
      n *= static_cast<uint64_t>(d);
      QUANT_CHECK(n < (uint64_t{1} << 40), "{}: initializer {} is too large", path_, t.name());
    }
    const Blob b = raw(t);
    QUANT_CHECK(b.size == n * elem_size, "{}: initializer {} holds {} bytes, its dims imply {}", path_, t.name(), b.size,
                n * elem_size);
    return b;
  }

  // Where the bytes are: inline, or a checked range of a file beside the model.
  Blob raw(const onnx::TensorProto& t) const {
    Blob b;
    if (t.data_location() == onnx::TensorProto::EXTERNAL) {
      std::string loc;
      uint64_t off = 0, len = 0;
      bool has_len = false;
      for (const auto& e : t.external_data()) {
        auto number = [&](uint64_t& out) {
          const std::string& v = e.value();
          const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), out);
          QUANT_CHECK(!v.empty() && ec == std::errc() && end == v.data() + v.size(),
                      "{}: initializer {}: external_data {} = \"{}\" is not a number", path_, t.name(), e.key(), v);
        };
        if (e.key() == "location") {
          loc = e.value();
        } else if (e.key() == "offset") {
          number(off);
        } else if (e.key() == "length") {
          number(len);
          has_len = true;
        }
      }
      QUANT_CHECK(!loc.empty() && loc.find('/') == std::string::npos && loc.find('\\') == std::string::npos && loc != "." && loc != "..",
                  "{}: initializer {}: external data location \"{}\" is not a file beside the model", path_, t.name(), loc);
      const MappedFile& f = external(loc);
      if (!has_len) len = f.size() >= off ? f.size() - off : 0;
      QUANT_CHECK(off <= f.size() && len <= f.size() - off, "{}: initializer {}: bytes [{}, {}) outside {} ({} bytes)", path_,
                  t.name(), off, off + len, loc, f.size());
      b = {f.data() + off, len};
    } else {
      QUANT_CHECK(t.has_raw_data(), "{}: initializer {} does not use raw_data", path_, t.name());
      b = {reinterpret_cast<const uint8_t*>(t.raw_data().data()), t.raw_data().size()};
    }
    return b;
  }

 private:
  const MappedFile& external(const std::string& loc) const {
    auto it = ext_.find(loc);
    if (it == ext_.end())
      it = ext_.emplace(loc, std::make_unique<MappedFile>((fs::path(path_).parent_path() / loc).string())).first;
    return *it->second;
  }
  std::string path_;
  onnx::ModelProto model_;
  std::map<std::string, std::string> meta_;
  std::map<std::string, const onnx::TensorProto*> inits_;
  mutable std::map<std::string, std::unique_ptr<MappedFile>> ext_;
};

int64_t attr_int(const onnx::NodeProto& n, const std::string& name, const std::string& path, std::optional<int64_t> dflt = {}) {
  for (const auto& a : n.attribute())
    if (a.name() == name) {
      QUANT_CHECK(a.type() == onnx::AttributeProto::INT, "{}: node {} attribute {} is not an int", path, n.name(), name);
      return a.i();
    }
  QUANT_CHECK(dflt.has_value(), "{}: node {} lacks attribute {}", path, n.name(), name);
  return *dflt;
}

struct OnnxTensor {
  OnnxStorage storage;
  const onnx::NodeProto* node = nullptr;     // NBits
  const onnx::TensorProto* init = nullptr;   // float
  int accuracy_level = 0;
  std::vector<int64_t> perm;  // NBits over gathered input columns (an act-order grid): B's column j is W's perm[j]
};

class OnnxStore final : public WeightStore {
 public:
  OnnxStore(std::shared_ptr<OnnxFile> f, const LlamaConfig& c) : f_(std::move(f)) {
    std::map<std::string, const onnx::NodeProto*> nbits, producer;
    for (const auto& n : f_->model().graph().node()) {
      for (const auto& o : n.output()) producer[o] = &n;
      if (n.op_type() == "MatMulNBits") {
        QUANT_CHECK(n.domain() == "com.microsoft", "{}: MatMulNBits node {} in domain \"{}\"", f_->path(), n.name(), n.domain());
        QUANT_CHECK(nbits.emplace(n.name(), &n).second, "{}: two MatMulNBits nodes named {}", f_->path(), n.name());
      }
    }
    for (TensorDesc d : llama_tensor_layout(c)) {
      OnnxTensor t;
      if (auto it = nbits.find(d.name); it != nbits.end()) {
        const onnx::NodeProto& n = *it->second;
        t.node = &n;
        t.storage.kind = OnnxStorage::Kind::NBits;
        t.storage.bits = static_cast<int>(attr_int(n, "bits", f_->path(), 4));
        t.storage.block = attr_int(n, "block_size", f_->path());
        t.accuracy_level = static_cast<int>(attr_int(n, "accuracy_level", f_->path(), 0));
        QUANT_CHECK(attr_int(n, "N", f_->path()) == d.rows && attr_int(n, "K", f_->path()) == d.cols,
                    "{}: MatMulNBits {} is {}x{}, the config implies {}x{}", f_->path(), d.name, attr_int(n, "N", f_->path()),
                    attr_int(n, "K", f_->path()), d.rows, d.cols);
        QUANT_CHECK(n.input_size() >= 3, "{}: MatMulNBits {} has {} inputs", f_->path(), d.name, n.input_size());
        QUANT_CHECK(n.input_size() < 5 || n.input(4).empty(), "{}: MatMulNBits {} has a g_idx input (not read)", f_->path(), d.name);
        if (auto g = producer.find(n.input(0)); g != producer.end() && g->second->op_type() == "Gather" &&
                                                g->second->input_size() == 2 && g->second->input(1) == d.name + ".perm")
          t.perm = read_perm(f_->init(d.name + ".perm"), d);
        d.type = TType::F32;
      } else {
        t.init = &f_->init(d.name);
        QUANT_CHECK(t.init->data_type() == onnx::TensorProto::FLOAT || t.init->data_type() == onnx::TensorProto::FLOAT16,
                    "{}: initializer {} has data type {} (float or float16 are read)", f_->path(), d.name, t.init->data_type());
        const bool f16 = t.init->data_type() == onnx::TensorProto::FLOAT16;
        t.storage.kind = f16 ? OnnxStorage::Kind::F16 : OnnxStorage::Kind::F32;
        d.type = f16 ? TType::F16 : TType::F32;
        uint64_t n = 1;
        for (auto x : t.init->dims()) n *= static_cast<uint64_t>(std::max<int64_t>(x, 0));
        QUANT_CHECK(n == static_cast<uint64_t>(d.numel()), "{}: initializer {} has {} elements, the config implies {}",
                    f_->path(), d.name, n, d.numel());
      }
      descs_.push_back(d);
      t_.push_back(t);
    }
  }
  const std::vector<TensorDesc>& tensors() const override { return descs_; }
  std::string source() const override { return f_->path(); }
  const OnnxTensor& storage(size_t i) const { return t_[i]; }

  // The int64 [K] permutation a MatMulNBits input is gathered by; every index once.
  std::vector<int64_t> read_perm(const onnx::TensorProto& init, const TensorDesc& d) const {
    const Blob b = f_->bytes(init, onnx::TensorProto::INT64, 8);
    QUANT_CHECK(static_cast<int64_t>(b.size / 8) == d.cols, "{}: {}.perm has {} entries, K = {}", f_->path(), d.name, b.size / 8, d.cols);
    std::vector<int64_t> perm(static_cast<size_t>(d.cols));
    std::memcpy(perm.data(), b.data, b.size);
    std::vector<bool> seen(perm.size());
    for (int64_t v : perm) {
      QUANT_CHECK(v >= 0 && v < d.cols && !seen[static_cast<size_t>(v)], "{}: {}.perm is not a permutation of 0..{}", f_->path(),
                  d.name, d.cols - 1);
      seen[static_cast<size_t>(v)] = true;
    }
    return perm;
  }
  const OnnxFile& file() const { return *f_; }

  NBitsTensor nbits(size_t i) const {
    const TensorDesc& d = descs_[i];
    const onnx::NodeProto& n = *t_[i].node;
    NBitsTensor nb;
    nb.n = d.rows;
    nb.k = d.cols;
    nb.bits = t_[i].storage.bits;
    nb.block = t_[i].storage.block;
    nb.grid_bits = nb.bits;
    QUANT_CHECK(nb.bits == 4 || nb.bits == 8, "{}: MatMulNBits {} has bits = {} (4 or 8 are read)", f_->path(), d.name, nb.bits);
    QUANT_CHECK(nb.block >= 16 && nb.block <= 1024 && (nb.block & (nb.block - 1)) == 0,
                "{}: MatMulNBits {} has block_size {}", f_->path(), d.name, nb.block);
    const Blob b = f_->bytes(f_->init(n.input(1)), onnx::TensorProto::UINT8, 1);
    const Blob s = f_->bytes(f_->init(n.input(2)), onnx::TensorProto::FLOAT, 4);
    nb.b.assign(b.data, b.data + b.size);
    nb.scales.resize(s.size / 4);
    std::memcpy(nb.scales.data(), s.data, s.size);
    if (n.input_size() >= 4 && !n.input(3).empty()) {
      const Blob z = f_->bytes(f_->init(n.input(3)), onnx::TensorProto::UINT8, 1);
      nb.zeros.assign(z.data, z.data + z.size);
    }
    nb.validate((f_->path() + ": " + d.name).c_str());
    return nb;
  }

  bool read_grid(const TensorDesc& d, QuantWeight& out) const override {
    const size_t i = static_cast<size_t>(&d - descs_.data());
    QUANT_CHECK(i < descs_.size(), "{}: foreign tensor descriptor {}", source(), d.name);
    if (!t_[i].node) return false;
    out = unpack_nbits(nbits(i));
    if (!t_[i].perm.empty()) out = unsort_columns(out, t_[i].perm);
    return true;
  }

  void read_f32(const TensorDesc& d, float* out) const override {
    const size_t i = static_cast<size_t>(&d - descs_.data());
    QUANT_CHECK(i < descs_.size(), "{}: foreign tensor descriptor {}", source(), d.name);
    const OnnxTensor& t = t_[i];
    if (t.node && !t.perm.empty()) {
      QuantWeight q;
      read_grid(d, q);
      q.dequantize(out);
      return;
    }
    if (t.node) {
      nbits(i).dequantize(out);
      return;
    }
    const bool f16 = t.storage.kind == OnnxStorage::Kind::F16;
    const Blob b = f_->bytes(*t.init, f16 ? onnx::TensorProto::FLOAT16 : onnx::TensorProto::FLOAT, f16 ? 2 : 4);
    const size_t n = static_cast<size_t>(d.numel());
    if (!f16) {
      std::memcpy(out, b.data, n * 4);
      return;
    }
    for (size_t j = 0; j < n; ++j) {
      uint16_t h;
      std::memcpy(&h, b.data + 2 * j, 2);
      out[j] = fp16_to_f32(h);
    }
  }

 private:
  std::shared_ptr<OnnxFile> f_;
  std::vector<TensorDesc> descs_;
  std::vector<OnnxTensor> t_;
};

nlohmann::json parse_meta_json(const OnnxFile& f, const std::string& key) {
  try {
    return nlohmann::json::parse(f.meta_str(key));
  } catch (const nlohmann::json::exception& e) {
    fail("{}: metadata {} is not valid JSON: {}", f.path(), key, e.what());
  }
}

LlamaConfig config_from_json(const nlohmann::json& j, const std::string& path) {
  LlamaConfig c;
  try {
    c.dim = j.at("dim").get<int64_t>();
    c.hidden = j.at("hidden").get<int64_t>();
    c.n_layers = j.at("n_layers").get<int64_t>();
    c.n_heads = j.at("n_heads").get<int64_t>();
    c.n_kv_heads = j.at("n_kv_heads").get<int64_t>();
    c.vocab = j.at("vocab").get<int64_t>();
    c.max_ctx = j.at("max_ctx").get<int64_t>();
    c.norm_eps = j.at("norm_eps").get<float>();
    c.rope_theta = j.at("rope_theta").get<float>();
    c.tied_embeddings = j.at("tied_embeddings").get<bool>();
    c.qkv_bias = j.at("qkv_bias").get<bool>();
    c.bos_id = j.at("bos_id").get<int32_t>();
    c.eos_id = j.at("eos_id").get<int32_t>();
    // Files from before BPE families carry none of these: a Llama without scaling.
    const std::string arch = j.value("arch", std::string(arch_hf_name(Arch::Llama)));
    bool known = false;
    for (Arch a : {Arch::Llama, Arch::Mistral, Arch::Qwen2})
      if (arch == arch_hf_name(a)) c.arch = a, known = true;
    QUANT_CHECK(known, "{}: quant.config arch {} is not supported", path, arch);
    c.rope_freq_factors = j.value("rope_freq_factors", std::vector<float>{});
    c.sliding_window = j.value("sliding_window", int64_t{0});
  } catch (const nlohmann::json::exception& e) {
    fail("{}: metadata quant.config: {}", path, e.what());
  }
  c.validate(path);
  return c;
}

Vocab vocab_from_json(const nlohmann::json& j, const std::string& path) {
  Vocab v;
  try {
    const std::string model = j.at("model").get<std::string>();
    QUANT_CHECK(model == "llama" || model == "gpt2", "{}: quant.vocab model {} is not supported", path, model);
    if (model == "gpt2") {
      v.model = VocabModel::Bpe;
      v.merges = j.at("merges").get<std::vector<std::string>>();
      v.pre = j.at("pre").get<std::string>();
      QUANT_CHECK(find_pre_tokenizer(v.pre), "{}: quant.vocab pre-tokenizer {} is not supported (these are: {})", path,
                  v.pre, pre_tokenizer_names());
    }
    v.pieces = j.at("pieces").get<std::vector<std::string>>();
    v.scores = j.at("scores").get<std::vector<float>>();
    for (int t : j.at("types").get<std::vector<int>>()) {
      QUANT_CHECK(t >= 1 && t <= 6, "{}: quant.vocab has token type {}", path, t);
      v.types.push_back(static_cast<TokenType>(t));
    }
    v.bos = j.at("bos").get<int32_t>();
    v.eos = j.at("eos").get<int32_t>();
    v.unk = j.at("unk").get<int32_t>();
    v.add_bos = j.at("add_bos").get<bool>();
    v.add_space_prefix = j.at("add_space_prefix").get<bool>();
  } catch (const nlohmann::json::exception& e) {
    fail("{}: metadata quant.vocab: {}", path, e.what());
  }
  QUANT_CHECK(v.scores.size() == v.pieces.size() && v.types.size() == v.pieces.size(),
              "{}: quant.vocab has {} pieces, {} scores, {} types", path, v.pieces.size(), v.scores.size(), v.types.size());
  v.validate(path);
  return v;
}

}  // namespace

LoadedModel load_onnx(const std::string& path) {
  auto f = std::make_shared<OnnxFile>(path);
  LoadedModel m;
  m.path = path;
  m.format = "onnx";
  m.config = config_from_json(parse_meta_json(*f, "quant.config"), path);
  Vocab v = vocab_from_json(parse_meta_json(*f, "quant.vocab"), path);
  QUANT_CHECK(v.size() == m.config.vocab, "{}: quant.vocab has {} pieces, quant.config says {}", path, v.size(), m.config.vocab);
  m.tokenizer = make_tokenizer(std::move(v));
  m.weights = std::make_unique<OnnxStore>(f, m.config);
  check_tensors_match(m.config, *m.weights);
  for (const char* k : {"quant.name", "quant.method", "quant.source", "quant.target"})
    if (auto it = f->meta().find(k); it != f->meta().end()) m.info[k] = it->second;
  return m;
}

std::string inspect_onnx_json(const std::string& path) {
  LoadedModel m = load_onnx(path);
  const auto& store = static_cast<const OnnxStore&>(*m.weights);
  const OnnxFile& f = store.file();
  nlohmann::json j = {{"file", path}, {"format", "onnx"}, {"ir_version", f.model().ir_version()},
                      {"producer", f.model().producer_name() + " " + f.model().producer_version()}};
  uint64_t files_bytes = fs::file_size(path);
  std::set<std::string> ext;
  for (const auto& t : f.model().graph().initializer())
    for (const auto& e : t.external_data())
      if (e.key() == "location") ext.insert(e.value());
  for (const auto& e : ext) files_bytes += fs::file_size(fs::path(path).parent_path() / e);
  j["size_bytes"] = files_bytes;
  j["external_data"] = std::vector<std::string>(ext.begin(), ext.end());
  j["opsets"] = nlohmann::json::object();
  for (const auto& o : f.model().opset_import()) j["opsets"][o.domain().empty() ? "ai.onnx" : o.domain()] = o.version();
  std::map<std::string, int> ops;
  for (const auto& n : f.model().graph().node()) ops[(n.domain().empty() ? "" : n.domain() + ".") + n.op_type()]++;
  j["operators"] = ops;
  j["metadata"] = nlohmann::json::object();
  for (const auto& [k, v] : f.meta())
    if (k != "quant.vocab" && k != "quant.tensors") j["metadata"][k] = v.size() > 200 ? v.substr(0, 200) + "..." : v;
  nlohmann::json plans = nlohmann::json::array();
  if (auto it = f.meta().find("quant.tensors"); it != f.meta().end())  // unreadable: no plan columns
    if (nlohmann::json j = nlohmann::json::parse(it->second, nullptr, false); !j.is_discarded()) plans = std::move(j);
  auto plan_for = [&](const std::string& name) -> nlohmann::json {
    for (const auto& p : plans)
      if (p.is_object() && p.value("name", "") == name) return p;
    return nlohmann::json::object();
  };
  j["tensors"] = nlohmann::json::array();
  uint64_t params = 0;
  double stored_bits = 0, logical_bits = 0;
  for (size_t i = 0; i < store.tensors().size(); ++i) {
    const TensorDesc& d = store.tensors()[i];
    const OnnxTensor& t = store.storage(i);
    const nlohmann::json p = plan_for(d.name);
    double bpw = t.storage.kind == OnnxStorage::Kind::F16 ? 16 : 32;
    nlohmann::json row = {{"name", d.name}, {"shape", {d.rows, d.cols}}, {"stored", t.storage.str()},
                          {"method", p.value("method", "")}, {"grid", p.value("requested", "")}};
    if (t.node) {
      const NBitsTensor nb = store.nbits(i);
      bpw = nb.stored_bpw();
      row["bits"] = nb.bits;
      row["block_size"] = nb.block;
      row["zero_points"] = nb.has_zeros();
      row["accuracy_level"] = t.accuracy_level;
    }
    const double logical = p.contains("logical_bpw") ? p["logical_bpw"].get<double>() : bpw;
    row["bpw"] = bpw;
    row["logical_bpw"] = logical;
    const double n = static_cast<double>(d.numel());
    params += static_cast<uint64_t>(d.numel());
    stored_bits += bpw * n;
    logical_bits += logical * n;
    j["tensors"].push_back(row);
  }
  j["params"] = params;
  j["bpw"] = stored_bits / static_cast<double>(params);
  j["logical_bpw"] = logical_bits / static_cast<double>(params);
  return j.dump();
}

}  // namespace quant
