// Llama -> ONNX: input_ids [batch, sequence] -> logits [batch, sequence, vocab] in standard
// ai.onnx ops (opset 17) plus com.microsoft MatMulNBits for the quantized linears; and the
// reader of what this writes. Byte layouts and graph: docs/formats.md.
#include "quant/formats/onnx_model.h"

#include <onnx/onnx_pb.h>

#include <cmath>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <cstring>
#include <optional>
#include <set>

#include "quant/formats/mmap.h"
#include "quant/half.h"
#include "quant/runtime.h"

namespace quant {

namespace fs = std::filesystem;

std::string OnnxStorage::str() const {
  switch (kind) {
    case Kind::F32: return "F32";
    case Kind::F16: return "F16";
    case Kind::NBits: return fmt::format("MatMulNBits {}b b{}", bits, block);
  }
  return "?";
}

namespace {

bool is_embedding(const std::string& name) { return name == "token_embd.weight"; }

OnnxStorage storage_for(TensorPlan& p) {
  OnnxStorage s;
  const QuantSpec& r = p.requested;
  auto as_float = [&](TType t, std::string note) {
    s.kind = t == TType::F32 ? OnnxStorage::Kind::F32 : OnnxStorage::Kind::F16;
    p.stored = t == TType::F32 ? TType::F32 : TType::F16;
    p.stored_bpw = t == TType::F32 ? 32 : 16;
    if (!note.empty()) {
      p.note = std::move(note);
      p.exact = false;
    }
  };
  if (p.n_dims == 1 || r.kind == QuantSpec::Kind::Float) {
    as_float(p.n_dims == 1 ? TType::F32 : r.type,
             r.kind == QuantSpec::Kind::Float && r.type == TType::BF16 ? "ONNX keeps BF16 weights as F16" : "");
    if (p.n_dims == 1 && r.kind != QuantSpec::Kind::Float) p.note = "vectors stay F32";
    p.stored_as = s.str();
    return s;
  }
  if (is_embedding(p.name)) {
    as_float(TType::F16, r.kind == QuantSpec::Kind::Float ? "" : fmt::format("the embedding is a Gather of rows: F16, not {}", r.str()));
    p.method = "none";
    p.requested = QuantSpec{QuantSpec::Kind::Float, TType::F16, {}};
    p.logical_bpw = 16;
    p.stored_as = s.str();
    return s;
  }
  int grid_bits = 0;
  int64_t group = 0;
  if (r.kind == QuantSpec::Kind::Ggml) {
    QUANT_CHECK(r.type == TType::Q4_0 || r.type == TType::Q5_0 || r.type == TType::Q8_0,
                "tensor {}: {} has a float min per block, which MatMulNBits (integer zero points) cannot hold; "
                "use --bits 4 --asym (the integer-zero grid)", p.name, ttype_name(r.type));
    if (p.cols % 32 != 0) {
      as_float(TType::F16, fmt::format("{} columns do not tile {} blocks: F16 instead", p.cols, ttype_name(r.type)));
      p.stored_as = s.str();
      return s;
    }
    grid_bits = r.type == TType::Q4_0 ? 4 : r.type == TType::Q5_0 ? 5 : 8;
    group = 32;
  } else {
    grid_bits = r.grid.bits;
    group = r.grid.group;
  }
  s.kind = OnnxStorage::Kind::NBits;
  s.bits = nbits_storage_bits(grid_bits, group, p.name.c_str());
  s.block = group;
  p.stored = TType::F32;  // no GGUF type; stored_as names the container
  p.exact = true;
  const bool default_zero = (r.kind == QuantSpec::Kind::Grid ? r.grid.sym : r.type != TType::Q5_0) && grid_bits == s.bits;
  const double kb = std::ceil(static_cast<double>(p.cols) / static_cast<double>(group));
  p.stored_bpw = (static_cast<double>(s.bits) * kb * static_cast<double>(group) + 32.0 * kb +
                  (default_zero ? 0.0 : std::ceil(kb * s.bits / 8.0) * 8.0)) /
                 static_cast<double>(p.cols);
  p.note = grid_bits == s.bits ? (p.cols % group ? fmt::format("K padded to {}", static_cast<int64_t>(kb) * group) : "exact")
                               : fmt::format("exact: {}-bit codes in {}-bit blobs", grid_bits, s.bits);
  p.stored_as = s.str();
  return s;
}

}  // namespace

std::vector<OnnxStorage> resolve_onnx_storage(std::vector<TensorPlan>& plans) {
  std::vector<OnnxStorage> out;
  for (auto& p : plans) out.push_back(storage_for(p));
  return out;
}

namespace {

// ---------------------------------------------------------------------------------------------
// Writer

nlohmann::json config_json(const LlamaConfig& c) {
  return {{"dim", c.dim}, {"hidden", c.hidden}, {"n_layers", c.n_layers}, {"n_heads", c.n_heads},
          {"n_kv_heads", c.n_kv_heads}, {"vocab", c.vocab}, {"max_ctx", c.max_ctx}, {"norm_eps", c.norm_eps},
          {"rope_theta", c.rope_theta}, {"tied_embeddings", c.tied_embeddings}, {"qkv_bias", c.qkv_bias},
          {"bos_id", c.bos_id}, {"eos_id", c.eos_id}};
}

nlohmann::json vocab_json(const Vocab& v) {
  std::vector<int32_t> types;
  for (auto t : v.types) types.push_back(static_cast<int32_t>(t));
  return {{"model", "llama"}, {"pieces", v.pieces}, {"scores", v.scores}, {"types", types}, {"bos", v.bos},
          {"eos", v.eos}, {"unk", v.unk}, {"add_bos", v.add_bos}, {"add_space_prefix", v.add_space_prefix}};
}

constexpr uint64_t kExternalMin = 1024;      // initializers at least this large go to external data
constexpr uint64_t kExternalAlign = 4096;    // page-aligned so ONNX Runtime can map them
constexpr uint64_t kInlineLimit = 1800000000;  // protobuf's 2 GiB message limit, with margin

class GraphWriter {
 public:
  GraphWriter(onnx::GraphProto* g, AtomicFile* data, std::string data_name)
      : g_(g), data_(data), data_name_(std::move(data_name)) {}

  std::string fresh(const std::string& hint) { return fmt::format("{}_{}", hint, n_++); }

  onnx::NodeProto* node(const std::string& op, std::vector<std::string> in, const std::string& out,
                        const std::string& domain = "") {
    onnx::NodeProto* n = g_->add_node();
    n->set_op_type(op);
    if (!domain.empty()) n->set_domain(domain);
    n->set_name(out);
    for (auto& i : in) n->add_input(i);
    n->add_output(out);
    return n;
  }
  std::string op(const std::string& type, std::vector<std::string> in, const std::string& hint) {
    const std::string out = fresh(hint);
    node(type, std::move(in), out);
    return out;
  }
  static void attr(onnx::NodeProto* n, const std::string& name, int64_t v) {
    auto* a = n->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::INT);
    a->set_i(v);
  }
  static void attr(onnx::NodeProto* n, const std::string& name, const std::vector<int64_t>& v) {
    auto* a = n->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::INTS);
    for (auto x : v) a->add_ints(x);
  }

  // An initializer; large ones go to the external data file when there is one.
  void init(const std::string& name, int dtype, const std::vector<int64_t>& dims, const void* data, uint64_t nbytes) {
    onnx::TensorProto* t = g_->add_initializer();
    t->set_name(name);
    t->set_data_type(dtype);
    for (auto d : dims) t->add_dims(d);
    if (data_ && nbytes >= kExternalMin) {
      static const char zeros[kExternalAlign] = {};
      const uint64_t pad = (kExternalAlign - offset_ % kExternalAlign) % kExternalAlign;
      data_->write(zeros, pad);
      offset_ += pad;
      data_->write(data, nbytes);
      t->set_data_location(onnx::TensorProto::EXTERNAL);
      auto kv = [&](const char* k, const std::string& v) {
        auto* e = t->add_external_data();
        e->set_key(k);
        e->set_value(v);
      };
      kv("location", data_name_);
      kv("offset", std::to_string(offset_));
      kv("length", std::to_string(nbytes));
      offset_ += nbytes;
    } else {
      t->set_raw_data(data, nbytes);
      inline_bytes_ += nbytes;
    }
  }
  std::string const_i64(const std::vector<int64_t>& v, bool scalar = false) {
    const std::string name = fresh("const_i64");
    init(name, onnx::TensorProto::INT64, scalar ? std::vector<int64_t>{} : std::vector<int64_t>{static_cast<int64_t>(v.size())},
         v.data(), v.size() * sizeof(int64_t));
    return name;
  }
  std::string const_f32(float v) {
    const std::string name = fresh("const_f32");
    init(name, onnx::TensorProto::FLOAT, {}, &v, sizeof v);
    return name;
  }
  uint64_t inline_bytes() const { return inline_bytes_; }
  uint64_t external_bytes() const { return offset_; }

 private:
  onnx::GraphProto* g_;
  AtomicFile* data_;
  std::string data_name_;
  int n_ = 0;
  uint64_t offset_ = 0, inline_bytes_ = 0;
};

void set_value_info(onnx::ValueInfoProto* v, const std::string& name, int elem, const std::vector<std::string>& dims,
                    const std::vector<int64_t>& fixed) {
  v->set_name(name);
  auto* tt = v->mutable_type()->mutable_tensor_type();
  tt->set_elem_type(elem);
  auto* shape = tt->mutable_shape();
  for (size_t i = 0; i < dims.size(); ++i) {
    auto* d = shape->add_dim();
    if (dims[i].empty())
      d->set_dim_value(fixed[i]);
    else
      d->set_dim_param(dims[i]);
  }
}

// Estimated bytes of every tensor as the plans store it: decides external data.
uint64_t estimated_bytes(const std::vector<TensorPlan>& plans) {
  double b = 0;
  for (const auto& p : plans) b += static_cast<double>(p.rows * p.cols) * p.stored_bpw / 8.0;
  return static_cast<uint64_t>(b);
}

// The output directory: refuse one that holds files unless forced; remember whether we made it.
struct OutDir {
  fs::path dir;
  bool created = false;
};

OutDir prepare_dir(const std::string& path, bool force) {
  const fs::path p(path);
  QUANT_CHECK(p.has_filename() && !fs::is_directory(p), "{}: give the output file (DIR/model.onnx), not a directory", path);
  OutDir o;
  o.dir = p.has_parent_path() ? p.parent_path() : fs::path(".");
  std::error_code ec;
  if (fs::exists(o.dir)) {
    QUANT_CHECK(fs::is_directory(o.dir), "{}: exists and is not a directory", o.dir.string());
    if (!force && p.has_parent_path()) {
      bool empty = fs::directory_iterator(o.dir, ec) == fs::directory_iterator();
      QUANT_CHECK(!ec, "{}: cannot list: {}", o.dir.string(), ec.message());
      QUANT_CHECK(empty, "{}: the output directory exists and is not empty (use --force to write into it)", o.dir.string());
    } else if (!force) {
      QUANT_CHECK(!fs::exists(p), "{}: exists (use --force to overwrite)", path);
    }
  } else {
    fs::create_directories(o.dir, ec);
    QUANT_CHECK(!ec, "{}: cannot create the output directory: {}", o.dir.string(), ec.message());
    o.created = true;
  }
  return o;
}

struct DirGuard {
  OutDir& d;
  bool done = false;
  ~DirGuard() {
    if (!done && d.created) {
      std::error_code ec;
      fs::remove_all(d.dir, ec);
    }
  }
};

}  // namespace

OnnxExportResult write_onnx_model(const LoadedModel& model, const Policy& policy, const std::vector<TensorPlan>& plans_in,
                                  const std::string& path, const OnnxExportInfo& info) {
  const LlamaConfig& c = model.config;
  const Vocab& vocab = model.tokenizer->vocab();
  QUANT_CHECK(vocab.size() == c.vocab, "{}: tokenizer has {} pieces but the model's vocabulary is {}", model.path,
              vocab.size(), c.vocab);
  QUANT_CHECK(info.accuracy_level == 0 || info.accuracy_level == 4,
              "--onnx-accuracy-level {} (0: fp32 math, 4: int8 activations)", info.accuracy_level);
  std::vector<TensorPlan> plans = plans_in;
  const std::vector<OnnxStorage> storage = resolve_onnx_storage(plans);
  std::map<std::string, size_t> plan_index;
  for (size_t i = 0; i < plans.size(); ++i) plan_index[plans[i].name] = i;

  OutDir out = prepare_dir(path, info.force);
  DirGuard guard{out};
  const std::string data_name = fs::path(path).filename().string() + ".data";
  const std::string data_path = (out.dir / data_name).string();
  const bool external = info.external_data || estimated_bytes(plans) > kInlineLimit;
  std::unique_ptr<AtomicFile> data_file;
  if (external) data_file = std::make_unique<AtomicFile>(data_path);

  onnx::ModelProto mp;
  mp.set_ir_version(kOnnxIrVersion);
  mp.set_producer_name("quant");
  mp.set_producer_version("0.1.0");
  mp.set_domain("quant");
  mp.set_model_version(1);
  mp.set_doc_string(fmt::format("{} quantized by quant ({}), Llama decoder", info.name, info.method));
  auto* ops = mp.add_opset_import();
  ops->set_domain("");
  ops->set_version(kOnnxOpset);
  ops = mp.add_opset_import();
  ops->set_domain("com.microsoft");
  ops->set_version(kOnnxMsOpset);
  auto meta = [&](const std::string& k, const std::string& v) {
    auto* e = mp.add_metadata_props();
    e->set_key(k);
    e->set_value(v);
  };
  const QuantSpec& target = policy.rules.back().spec;
  meta("quant.format", "1");
  meta("quant.method", info.method);
  meta("quant.target", target.str());
  if (target.kind == QuantSpec::Kind::Grid) {
    meta("quant.bits", std::to_string(target.grid.bits));
    meta("quant.group", std::to_string(target.grid.group));
    meta("quant.sym", target.grid.sym ? "true" : "false");
  }
  meta("quant.accuracy_level", std::to_string(info.accuracy_level));
  meta("quant.source", model.path);
  meta("quant.name", info.name);
  meta("quant.config", config_json(c).dump());
  meta("quant.policy", policy.to_json().dump());
  meta("quant.tensors", plans_to_json(plans).dump());
  for (const auto& [k, v] : info.extra) meta("quant." + k, v);
  meta("quant.vocab", vocab_json(vocab).dump());

  onnx::GraphProto* g = mp.mutable_graph();
  g->set_name(info.name.empty() ? "llama" : info.name);
  set_value_info(g->add_input(), "input_ids", onnx::TensorProto::INT64, {"batch", "sequence"}, {0, 0});
  set_value_info(g->add_output(), "logits", onnx::TensorProto::FLOAT, {"batch", "sequence", ""}, {0, 0, c.vocab});
  GraphWriter w(g, data_file.get(), data_name);

  size_t done = 0;
  auto progress = [&](const std::string& name) {
    if (info.progress) info.progress(done, plans.size(), name);
    ++done;
  };
  auto read = [&](const std::string& name) {
    const TensorDesc& t = model.weights->get(name);
    std::vector<float> f(static_cast<size_t>(t.numel()));
    model.weights->read_f32(t, f.data());
    return f;
  };
  // A float tensor as an initializer named `name`; returns the fp32 value (Cast from F16).
  auto float_init = [&](const std::string& name, const std::vector<int64_t>& dims, bool f16) -> std::string {
    const std::vector<float> f = read(name);
    if (!f16) {
      w.init(name, onnx::TensorProto::FLOAT, dims, f.data(), f.size() * 4);
      return name;
    }
    std::vector<uint16_t> h(f.size());
    for (size_t i = 0; i < f.size(); ++i) h[i] = f32_to_fp16(f[i]);
    w.init(name, onnx::TensorProto::FLOAT16, dims, h.data(), h.size() * 2);
    auto* n = w.node("Cast", {name}, w.fresh(name + "/f32"));
    GraphWriter::attr(n, "to", static_cast<int64_t>(onnx::TensorProto::FLOAT));
    return n->output(0);
  };
  auto vector_init = [&](const std::string& name) {
    progress(name);
    const std::vector<float> f = read(name);
    w.init(name, onnx::TensorProto::FLOAT, {static_cast<int64_t>(f.size())}, f.data(), f.size() * 4);
    return name;
  };

  // y = x W^T for the linear `name` ([rows][cols] canonical).
  auto linear = [&](const std::string& x, const std::string& name) -> std::string {
    progress(name);
    const size_t pi = plan_index.at(name);
    const TensorPlan& p = plans[pi];
    const OnnxStorage& s = storage[pi];
    if (s.kind != OnnxStorage::Kind::NBits) {
      const std::string wf = float_init(name, {p.rows, p.cols}, s.kind == OnnxStorage::Kind::F16);
      auto* tr = w.node("Transpose", {wf}, w.fresh(name + "/T"));
      GraphWriter::attr(tr, "perm", std::vector<int64_t>{1, 0});
      return w.op("MatMul", {x, tr->output(0)}, name + "/out");
    }
    NBitsTensor nb;
    const NBitsTensor* src = nullptr;
    if (info.prequantized)
      if (auto it = info.prequantized->find(name); it != info.prequantized->end()) src = &it->second;
    if (!src) {
      const std::vector<float> f = read(name);
      check_finite_weights(f.data(), p.rows, p.cols, name);
      const QuantSpec& r = p.requested;
      const QuantWeight q = r.kind == QuantSpec::Kind::Ggml ? quantize_ggml(r.type, f.data(), p.rows, p.cols)
                                                            : rtn_grid(f.data(), p.rows, p.cols, r.grid);
      nb = pack_nbits(q, s.bits, name.c_str());
      src = &nb;
    }
    QUANT_CHECK(src->n == p.rows && src->k == p.cols && src->bits == s.bits && src->block == s.block,
                "{}: quantized tensor does not match its plan", name);
    src->validate(name.c_str());
    w.init(name + ".qweight", onnx::TensorProto::UINT8, {src->n, src->k_blocks(), src->blob()}, src->b.data(), src->b.size());
    w.init(name + ".scales", onnx::TensorProto::FLOAT, {static_cast<int64_t>(src->scales.size())}, src->scales.data(),
           src->scales.size() * 4);
    std::vector<std::string> in = {x, name + ".qweight", name + ".scales"};
    if (src->has_zeros()) {
      w.init(name + ".qzeros", onnx::TensorProto::UINT8, {static_cast<int64_t>(src->zeros.size())}, src->zeros.data(),
             src->zeros.size());
      in.push_back(name + ".qzeros");
    }
    auto* n = w.node("MatMulNBits", in, name + "/out", "com.microsoft");
    n->set_name(name);
    GraphWriter::attr(n, "K", src->k);
    GraphWriter::attr(n, "N", src->n);
    GraphWriter::attr(n, "bits", static_cast<int64_t>(src->bits));
    GraphWriter::attr(n, "block_size", src->block);
    GraphWriter::attr(n, "accuracy_level", static_cast<int64_t>(info.accuracy_level));
    return n->output(0);
  };
  const std::string eps = w.const_f32(c.norm_eps);
  auto rmsnorm = [&](const std::string& x, const std::string& weight_name) {
    const std::string sq = w.op("Mul", {x, x}, "sq");
    auto* mean = w.node("ReduceMean", {sq}, w.fresh("ms"));
    GraphWriter::attr(mean, "axes", std::vector<int64_t>{-1});
    GraphWriter::attr(mean, "keepdims", int64_t{1});
    const std::string inv = w.op("Reciprocal", {w.op("Sqrt", {w.op("Add", {mean->output(0), eps}, "ms_eps")}, "rms")}, "inv_rms");
    return w.op("Mul", {w.op("Mul", {x, inv}, "normed"), vector_init(weight_name)}, weight_name + "/out");
  };

  // Sequence length, causal mask [T, T] (-inf above the diagonal) and RoPE tables [T, hd].
  auto* shape_t = w.node("Shape", {"input_ids"}, "seq_len");
  GraphWriter::attr(shape_t, "start", int64_t{1});
  GraphWriter::attr(shape_t, "end", int64_t{2});
  const std::string tt = w.op("Concat", {"seq_len", "seq_len"}, "seq_len_2");
  GraphWriter::attr(g->mutable_node(g->node_size() - 1), "axis", int64_t{0});
  auto* full = w.node("ConstantOfShape", {tt}, "mask_full");
  {
    auto* a = full->add_attribute();
    a->set_name("value");
    a->set_type(onnx::AttributeProto::TENSOR);
    auto* t = a->mutable_t();
    t->set_data_type(onnx::TensorProto::FLOAT);
    t->add_dims(1);
    t->add_float_data(-std::numeric_limits<float>::infinity());
  }
  const std::string mask = w.op("Trilu", {"mask_full", w.const_i64({1}, true)}, "causal_mask");  // keeps j >= i + 1
  const int64_t hd = c.head_dim(), half = hd / 2, rep = c.n_heads / c.n_kv_heads;
  std::vector<float> cos_t(static_cast<size_t>(c.max_ctx * hd)), sin_t(cos_t.size());
  const std::vector<float> inv_freq = rope_inv_freq(c.rope_theta, hd);  // the runtime's angles, fp32
  for (int64_t i = 0; i < half; ++i) {
    for (int64_t t = 0; t < c.max_ctx; ++t) {
      const float a = static_cast<float>(t) * inv_freq[static_cast<size_t>(i)];
      const size_t o = static_cast<size_t>(t * hd + i);
      cos_t[o] = cos_t[o + half] = std::cos(a);
      sin_t[o] = sin_t[o + half] = std::sin(a);
    }
  }
  w.init("rope.cos", onnx::TensorProto::FLOAT, {c.max_ctx, hd}, cos_t.data(), cos_t.size() * 4);
  w.init("rope.sin", onnx::TensorProto::FLOAT, {c.max_ctx, hd}, sin_t.data(), sin_t.size() * 4);
  const std::string zero1 = w.const_i64({0}), axis0 = w.const_i64({0});
  const std::string cos_s = w.op("Slice", {"rope.cos", zero1, "seq_len", axis0}, "cos");
  const std::string sin_s = w.op("Slice", {"rope.sin", zero1, "seq_len", axis0}, "sin");
  const std::string lo_s = w.const_i64({0}), lo_e = w.const_i64({half}), hi_e = w.const_i64({hd}), last = w.const_i64({-1});
  auto rope = [&](const std::string& x) {  // x * cos + rotate_half(x) * sin over the last axis
    const std::string x1 = w.op("Slice", {x, lo_s, lo_e, last}, "x1");
    const std::string x2 = w.op("Slice", {x, lo_e, hi_e, last}, "x2");
    const std::string rot = w.op("Concat", {w.op("Neg", {x2}, "neg_x2"), x1}, "rot");
    GraphWriter::attr(g->mutable_node(g->node_size() - 1), "axis", int64_t{-1});
    return w.op("Add", {w.op("Mul", {x, cos_s}, "xcos"), w.op("Mul", {rot, sin_s}, "xsin")}, "roped");
  };
  auto transpose = [&](const std::string& x, std::vector<int64_t> perm, const std::string& hint) {
    auto* n = w.node("Transpose", {x}, w.fresh(hint));
    GraphWriter::attr(n, "perm", perm);
    return n->output(0);
  };
  // [B, T, heads*hd] -> [B, kv_heads, group, T, hd]: q head h = kv head (h / rep), as repeat_kv.
  const std::string q_shape = w.const_i64({0, 0, c.n_kv_heads, rep, hd});
  const std::string kv_shape = w.const_i64({0, 0, c.n_kv_heads, 1, hd});
  const std::string merge_shape = w.const_i64({0, 0, c.n_heads * hd});
  const std::string attn_scale = w.const_f32(1.0f / std::sqrt(static_cast<float>(hd)));

  // Embedding.
  progress("token_embd.weight");
  const size_t ei = plan_index.at("token_embd.weight");
  const bool emb_f16 = storage[ei].kind == OnnxStorage::Kind::F16;
  const std::string emb = float_init("token_embd.weight", {c.vocab, c.dim}, emb_f16);
  std::string x;
  if (emb_f16) {  // gather the fp16 rows, then cast: the fp32 table is never materialized
    const std::string rows = w.op("Gather", {"token_embd.weight", "input_ids"}, "embed_f16");
    auto* cast = w.node("Cast", {rows}, w.fresh("embed"));
    GraphWriter::attr(cast, "to", static_cast<int64_t>(onnx::TensorProto::FLOAT));
    x = cast->output(0);
  } else {
    x = w.op("Gather", {emb, "input_ids"}, "embed");
  }

  for (int64_t l = 0; l < c.n_layers; ++l) {
    const std::string b = fmt::format("blk.{}.", l);
    const std::string h = rmsnorm(x, b + "attn_norm.weight");
    auto proj = [&](const char* n) {
      std::string y = linear(h, b + n + ".weight");
      if (c.qkv_bias) y = w.op("Add", {y, vector_init(b + n + ".bias")}, b + n + ".bias/out");
      return y;
    };
    const std::string q = proj("attn_q"), k = proj("attn_k"), v = proj("attn_v");
    const std::string q5 = transpose(w.op("Reshape", {q, q_shape}, "q5"), {0, 2, 3, 1, 4}, "q_heads");
    const std::string k5 = transpose(w.op("Reshape", {k, kv_shape}, "k5"), {0, 2, 3, 1, 4}, "k_heads");
    const std::string v5 = transpose(w.op("Reshape", {v, kv_shape}, "v5"), {0, 2, 3, 1, 4}, "v_heads");
    const std::string kt = transpose(rope(k5), {0, 1, 2, 4, 3}, "k_t");
    std::string s = w.op("Mul", {w.op("MatMul", {rope(q5), kt}, "qk"), attn_scale}, "scores");
    s = w.op("Add", {s, mask}, "masked");
    auto* sm = w.node("Softmax", {s}, w.fresh("probs"));
    GraphWriter::attr(sm, "axis", int64_t{-1});
    const std::string o = w.op("MatMul", {sm->output(0), v5}, "attn");
    const std::string merged = w.op("Reshape", {transpose(o, {0, 3, 1, 2, 4}, "attn_t"), merge_shape}, "attn_merged");
    x = w.op("Add", {x, linear(merged, b + "attn_output.weight")}, b + "attn_residual");
    const std::string h2 = rmsnorm(x, b + "ffn_norm.weight");
    const std::string gate = linear(h2, b + "ffn_gate.weight");
    const std::string up = linear(h2, b + "ffn_up.weight");
    const std::string act = w.op("Mul", {w.op("Mul", {gate, w.op("Sigmoid", {gate}, "sig")}, "silu"), up}, "swiglu");
    x = w.op("Add", {x, linear(act, b + "ffn_down.weight")}, b + "ffn_residual");
  }
  const std::string hn = rmsnorm(x, "output_norm.weight");
  std::string logits;
  if (c.tied_embeddings) {
    const std::string e32 = emb_f16 ? w.op("Cast", {"token_embd.weight"}, "embed_table") : emb;
    if (emb_f16) GraphWriter::attr(g->mutable_node(g->node_size() - 1), "to", static_cast<int64_t>(onnx::TensorProto::FLOAT));
    logits = w.op("MatMul", {hn, transpose(e32, {1, 0}, "embed_t")}, "head");
  } else {
    logits = linear(hn, "output.weight");
  }
  w.node("Identity", {logits}, "logits");
  QUANT_CHECK(done == plans.size(), "ONNX export visited {} of {} tensors", done, plans.size());
  QUANT_CHECK(w.inline_bytes() < kInlineLimit, "{}: {:.2f} GB of weights inline exceed protobuf's 2 GB: use --external-data",
              path, w.inline_bytes() / 1e9);

  std::string bytes;
  QUANT_CHECK(mp.SerializeToString(&bytes), "{}: protobuf serialization failed", path);
  OnnxExportResult res;
  res.external = external;
  if (data_file) {
    data_file->commit();
    res.files.push_back(data_path);
  }
  try {
    AtomicFile mf(path);
    mf.write(bytes.data(), bytes.size());
    mf.commit();
  } catch (...) {
    if (data_file) std::remove(data_path.c_str());
    throw;
  }
  if (!external) {  // a forced rewrite must not leave an old weights file beside the new model
    std::error_code ec;
    fs::remove(data_path, ec);
  }
  res.files.insert(res.files.begin(), path);
  for (const auto& f : res.files) res.bytes += fs::file_size(f);
  guard.done = true;
  return res;
}

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
        try {
          if (e.key() == "location") loc = e.value();
          else if (e.key() == "offset") off = std::stoull(e.value());
          else if (e.key() == "length") { len = std::stoull(e.value()); has_len = true; }
        } catch (const std::exception&) {
          fail("{}: initializer {}: external_data {} = \"{}\" is not a number", path_, t.name(), e.key(), e.value());
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
};

class OnnxStore final : public WeightStore {
 public:
  OnnxStore(std::shared_ptr<OnnxFile> f, const LlamaConfig& c) : f_(std::move(f)) {
    std::map<std::string, const onnx::NodeProto*> nbits;
    for (const auto& n : f_->model().graph().node())
      if (n.op_type() == "MatMulNBits") {
        QUANT_CHECK(n.domain() == "com.microsoft", "{}: MatMulNBits node {} in domain \"{}\"", f_->path(), n.name(), n.domain());
        QUANT_CHECK(nbits.emplace(n.name(), &n).second, "{}: two MatMulNBits nodes named {}", f_->path(), n.name());
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
    return true;
  }

  void read_f32(const TensorDesc& d, float* out) const override {
    const size_t i = static_cast<size_t>(&d - descs_.data());
    QUANT_CHECK(i < descs_.size(), "{}: foreign tensor descriptor {}", source(), d.name);
    const OnnxTensor& t = t_[i];
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
  } catch (const nlohmann::json::exception& e) {
    fail("{}: metadata quant.config: {}", path, e.what());
  }
  c.validate(path);
  return c;
}

Vocab vocab_from_json(const nlohmann::json& j, const std::string& path) {
  Vocab v;
  try {
    QUANT_CHECK(j.at("model").get<std::string>() == "llama", "{}: quant.vocab model {} is not supported", path,
                j.at("model").get<std::string>());
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
  m.tokenizer = std::make_unique<SpmTokenizer>(std::move(v));
  m.weights = std::make_unique<OnnxStore>(f, m.config);
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
  if (auto it = f.meta().find("quant.tensors"); it != f.meta().end()) try {
      plans = nlohmann::json::parse(it->second);
    } catch (const std::exception&) {
    }
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
