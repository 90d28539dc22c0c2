// Llama -> ONNX: input_ids [batch, sequence] -> logits [batch, sequence, vocab] in standard
// ai.onnx ops (opset 17) plus com.microsoft MatMulNBits for the quantized linears; and the
// storage each plan gets there (the reader is onnx_reader.cpp). Byte layouts and graph: docs/formats.md.
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
    p.method = Method::None;
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
          {"bos_id", c.bos_id}, {"eos_id", c.eos_id}, {"arch", arch_hf_name(c.arch)},
          {"rope_freq_factors", c.rope_freq_factors}, {"sliding_window", c.sliding_window}};
}

nlohmann::json vocab_json(const Vocab& v) {
  std::vector<int32_t> types;
  for (auto t : v.types) types.push_back(static_cast<int32_t>(t));
  nlohmann::json j = {{"model", v.model == VocabModel::Bpe ? "gpt2" : "llama"},
                      {"pieces", v.pieces}, {"scores", v.scores}, {"types", types}, {"bos", v.bos},
                      {"eos", v.eos}, {"unk", v.unk}, {"add_bos", v.add_bos}, {"add_space_prefix", v.add_space_prefix}};
  if (v.model == VocabModel::Bpe) {
    j["merges"] = v.merges;
    j["pre"] = v.pre;
  }
  return j;
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

namespace {

// The decoder graph, input_ids -> logits, built while each tensor is taken once from the stage:
// float tensors as (F16 + Cast or F32) initializers, quantized linears as MatMulNBits. Node
// names come from one counter, so the order of the calls below is part of the file's bytes.
class DecoderGraph {
 public:
  DecoderGraph(onnx::GraphProto* g, GraphWriter& w, const LlamaConfig& c, TensorSource& src, const std::vector<TensorPlan>& plans,
               const std::vector<OnnxStorage>& storage, const OnnxExportInfo& info)
      : g_(g), w_(w), c_(c), src_(src), plans_(plans), storage_(storage), info_(info) {
    for (size_t i = 0; i < plans.size(); ++i) plan_index_[plans[i].name] = i;
    eps_ = w_.const_f32(c.norm_eps);
    mask_and_rope();
    const int64_t hd = c.head_dim(), rep = c.n_heads / c.n_kv_heads;
    // [B, T, heads*hd] -> [B, kv_heads, group, T, hd]: q head h = kv head (h / rep), as repeat_kv.
    q_shape_ = w_.const_i64({0, 0, c.n_kv_heads, rep, hd});
    kv_shape_ = w_.const_i64({0, 0, c.n_kv_heads, 1, hd});
    merge_shape_ = w_.const_i64({0, 0, c.n_heads * hd});
    attn_scale_ = w_.const_f32(1.0f / std::sqrt(static_cast<float>(hd)));
  }

  void build() {
    std::string x = embed();
    for (int64_t l = 0; l < c_.n_layers; ++l) x = block(x, fmt::format("blk.{}.", l));
    const std::string hn = rmsnorm(x, "output_norm.weight");
    std::string logits;
    if (c_.tied_embeddings) {
      const std::string e32 = emb_f16_ ? w_.op("Cast", {"token_embd.weight"}, "embed_table") : emb_;
      if (emb_f16_) GraphWriter::attr(g_->mutable_node(g_->node_size() - 1), "to", static_cast<int64_t>(onnx::TensorProto::FLOAT));
      logits = w_.op("MatMul", {hn, transpose(e32, {1, 0}, "embed_t")}, "head");
    } else {
      logits = linear(hn, "output.weight");
    }
    w_.node("Identity", {logits}, "logits");
    QUANT_CHECK(done_ == plans_.size(), "ONNX export visited {} of {} tensors", done_, plans_.size());
  }

 private:
  void progress(const std::string& name) {
    if (info_.progress) info_.progress(done_, plans_.size(), name);
    ++done_;
  }
  QuantizedTensor take(const std::string& name) { return src_.take(src_.plan(name)); }
  std::vector<float> read(const std::string& name) {
    QuantizedTensor t = take(name);
    QUANT_CHECK(!t.q, "{}: a grid where the plan stores float values", name);
    return std::move(t.values);
  }
  // A float tensor as an initializer named `name`; returns the fp32 value (Cast from F16).
  std::string float_init(const std::string& name, const std::vector<int64_t>& dims, bool f16) {
    const std::vector<float> f = read(name);
    if (!f16) {
      w_.init(name, onnx::TensorProto::FLOAT, dims, f.data(), f.size() * 4);
      return name;
    }
    std::vector<uint16_t> h(f.size());
    for (size_t i = 0; i < f.size(); ++i) h[i] = f32_to_fp16(f[i]);
    w_.init(name, onnx::TensorProto::FLOAT16, dims, h.data(), h.size() * 2);
    auto* n = w_.node("Cast", {name}, w_.fresh(name + "/f32"));
    GraphWriter::attr(n, "to", static_cast<int64_t>(onnx::TensorProto::FLOAT));
    return n->output(0);
  }
  std::string vector_init(const std::string& name) {
    progress(name);
    const std::vector<float> f = read(name);
    w_.init(name, onnx::TensorProto::FLOAT, {static_cast<int64_t>(f.size())}, f.data(), f.size() * 4);
    return name;
  }
  // y = x W^T for the linear `name` ([rows][cols] canonical).
  std::string linear(const std::string& x, const std::string& name) {
    progress(name);
    const size_t pi = plan_index_.at(name);
    const TensorPlan& p = plans_[pi];
    const OnnxStorage& s = storage_[pi];
    if (s.kind != OnnxStorage::Kind::NBits) {
      const std::string wf = float_init(name, {p.rows, p.cols}, s.kind == OnnxStorage::Kind::F16);
      return w_.op("MatMul", {x, transpose(wf, {1, 0}, name + "/T")}, name + "/out");
    }
    QuantizedTensor t = take(name);
    QUANT_CHECK(t.q, "{}: float values where the plan stores MatMulNBits", name);
    std::string a = x;
    if (!t.q->g_idx.empty()) {
      // An act-order grid (a GPTQ checkpoint's g_idx): MatMulNBits over the input columns sorted
      // by group, the input gathered in the same order. (Its own g_idx input is deprecated and
      // ONNX Runtime's CPU kernel indexes it wrongly past the first 8 columns of a block.)
      std::vector<int64_t> perm;
      t.q = sort_columns_by_group(*t.q, perm, name);
      w_.init(name + ".perm", onnx::TensorProto::INT64, {p.cols}, perm.data(), perm.size() * 8);
      auto* g = w_.node("Gather", {x, name + ".perm"}, name + "/perm");
      GraphWriter::attr(g, "axis", int64_t{-1});
      a = g->output(0);
    }
    const NBitsTensor nb = pack_nbits(*t.q, s.bits, name.c_str());
    QUANT_CHECK(nb.n == p.rows && nb.k == p.cols && nb.bits == s.bits && nb.block == s.block,
                "{}: quantized tensor does not match its plan", name);
    nb.validate(name.c_str());
    w_.init(name + ".qweight", onnx::TensorProto::UINT8, {nb.n, nb.k_blocks(), nb.blob()}, nb.b.data(), nb.b.size());
    w_.init(name + ".scales", onnx::TensorProto::FLOAT, {static_cast<int64_t>(nb.scales.size())}, nb.scales.data(),
            nb.scales.size() * 4);
    std::vector<std::string> in = {a, name + ".qweight", name + ".scales"};
    if (nb.has_zeros()) {
      w_.init(name + ".qzeros", onnx::TensorProto::UINT8, {static_cast<int64_t>(nb.zeros.size())}, nb.zeros.data(),
              nb.zeros.size());
      in.push_back(name + ".qzeros");
    }
    auto* n = w_.node("MatMulNBits", in, name + "/out", "com.microsoft");
    n->set_name(name);
    GraphWriter::attr(n, "K", nb.k);
    GraphWriter::attr(n, "N", nb.n);
    GraphWriter::attr(n, "bits", static_cast<int64_t>(nb.bits));
    GraphWriter::attr(n, "block_size", nb.block);
    GraphWriter::attr(n, "accuracy_level", static_cast<int64_t>(info_.accuracy_level));
    return n->output(0);
  }
  std::string rmsnorm(const std::string& x, const std::string& weight_name) {
    const std::string sq = w_.op("Mul", {x, x}, "sq");
    auto* mean = w_.node("ReduceMean", {sq}, w_.fresh("ms"));
    GraphWriter::attr(mean, "axes", std::vector<int64_t>{-1});
    GraphWriter::attr(mean, "keepdims", int64_t{1});
    const std::string inv = w_.op("Reciprocal", {w_.op("Sqrt", {w_.op("Add", {mean->output(0), eps_}, "ms_eps")}, "rms")}, "inv_rms");
    return w_.op("Mul", {w_.op("Mul", {x, inv}, "normed"), vector_init(weight_name)}, weight_name + "/out");
  }
  std::string transpose(const std::string& x, std::vector<int64_t> perm, const std::string& hint) {
    auto* n = w_.node("Transpose", {x}, w_.fresh(hint));
    GraphWriter::attr(n, "perm", perm);
    return n->output(0);
  }

  // Sequence length, causal mask [T, T] (-inf above the diagonal) and RoPE tables [T, hd].
  void mask_and_rope() {
    auto* shape_t = w_.node("Shape", {"input_ids"}, "seq_len");
    GraphWriter::attr(shape_t, "start", int64_t{1});
    GraphWriter::attr(shape_t, "end", int64_t{2});
    const std::string tt = w_.op("Concat", {"seq_len", "seq_len"}, "seq_len_2");
    GraphWriter::attr(g_->mutable_node(g_->node_size() - 1), "axis", int64_t{0});
    auto* full = w_.node("ConstantOfShape", {tt}, "mask_full");
    auto* a = full->add_attribute();
    a->set_name("value");
    a->set_type(onnx::AttributeProto::TENSOR);
    auto* t = a->mutable_t();
    t->set_data_type(onnx::TensorProto::FLOAT);
    t->add_dims(1);
    t->add_float_data(-std::numeric_limits<float>::infinity());
    mask_ = w_.op("Trilu", {"mask_full", w_.const_i64({1}, true)}, "causal_mask");  // keeps j >= i + 1
    const int64_t hd = c_.head_dim(), half = hd / 2;
    std::vector<float> cos_t(static_cast<size_t>(c_.max_ctx * hd)), sin_t(cos_t.size());
    const std::vector<float> inv_freq = rope_inv_freq(c_);  // the runtime's angles, fp32
    for (int64_t i = 0; i < half; ++i) {
      for (int64_t p = 0; p < c_.max_ctx; ++p) {
        const float ang = static_cast<float>(p) * inv_freq[static_cast<size_t>(i)];
        const size_t o = static_cast<size_t>(p * hd + i);
        cos_t[o] = cos_t[o + half] = std::cos(ang);
        sin_t[o] = sin_t[o + half] = std::sin(ang);
      }
    }
    w_.init("rope.cos", onnx::TensorProto::FLOAT, {c_.max_ctx, hd}, cos_t.data(), cos_t.size() * 4);
    w_.init("rope.sin", onnx::TensorProto::FLOAT, {c_.max_ctx, hd}, sin_t.data(), sin_t.size() * 4);
    const std::string zero1 = w_.const_i64({0}), axis0 = w_.const_i64({0});
    cos_ = w_.op("Slice", {"rope.cos", zero1, "seq_len", axis0}, "cos");
    sin_ = w_.op("Slice", {"rope.sin", zero1, "seq_len", axis0}, "sin");
    lo_s_ = w_.const_i64({0});
    lo_e_ = w_.const_i64({half});
    hi_e_ = w_.const_i64({hd});
    last_ = w_.const_i64({-1});
  }
  std::string rope(const std::string& x) {  // x * cos + rotate_half(x) * sin over the last axis
    const std::string x1 = w_.op("Slice", {x, lo_s_, lo_e_, last_}, "x1");
    const std::string x2 = w_.op("Slice", {x, lo_e_, hi_e_, last_}, "x2");
    const std::string rot = w_.op("Concat", {w_.op("Neg", {x2}, "neg_x2"), x1}, "rot");
    GraphWriter::attr(g_->mutable_node(g_->node_size() - 1), "axis", int64_t{-1});
    return w_.op("Add", {w_.op("Mul", {x, cos_}, "xcos"), w_.op("Mul", {rot, sin_}, "xsin")}, "roped");
  }

  std::string embed() {
    progress("token_embd.weight");
    emb_f16_ = storage_[plan_index_.at("token_embd.weight")].kind == OnnxStorage::Kind::F16;
    emb_ = float_init("token_embd.weight", {c_.vocab, c_.dim}, emb_f16_);
    if (!emb_f16_) return w_.op("Gather", {emb_, "input_ids"}, "embed");
    // Gather the fp16 rows, then cast: the fp32 table is never materialized.
    const std::string rows = w_.op("Gather", {"token_embd.weight", "input_ids"}, "embed_f16");
    auto* cast = w_.node("Cast", {rows}, w_.fresh("embed"));
    GraphWriter::attr(cast, "to", static_cast<int64_t>(onnx::TensorProto::FLOAT));
    return cast->output(0);
  }

  std::string block(std::string x, const std::string& b) {
    const std::string h = rmsnorm(x, b + "attn_norm.weight");
    auto proj = [&](const char* n) {
      std::string y = linear(h, b + n + ".weight");
      if (c_.qkv_bias) y = w_.op("Add", {y, vector_init(b + n + ".bias")}, b + n + ".bias/out");
      return y;
    };
    const std::string q = proj("attn_q"), k = proj("attn_k"), v = proj("attn_v");
    const std::string q5 = transpose(w_.op("Reshape", {q, q_shape_}, "q5"), {0, 2, 3, 1, 4}, "q_heads");
    const std::string k5 = transpose(w_.op("Reshape", {k, kv_shape_}, "k5"), {0, 2, 3, 1, 4}, "k_heads");
    const std::string v5 = transpose(w_.op("Reshape", {v, kv_shape_}, "v5"), {0, 2, 3, 1, 4}, "v_heads");
    const std::string kt = transpose(rope(k5), {0, 1, 2, 4, 3}, "k_t");
    std::string s = w_.op("Mul", {w_.op("MatMul", {rope(q5), kt}, "qk"), attn_scale_}, "scores");
    s = w_.op("Add", {s, mask_}, "masked");
    auto* sm = w_.node("Softmax", {s}, w_.fresh("probs"));
    GraphWriter::attr(sm, "axis", int64_t{-1});
    const std::string o = w_.op("MatMul", {sm->output(0), v5}, "attn");
    const std::string merged = w_.op("Reshape", {transpose(o, {0, 3, 1, 2, 4}, "attn_t"), merge_shape_}, "attn_merged");
    x = w_.op("Add", {x, linear(merged, b + "attn_output.weight")}, b + "attn_residual");
    const std::string h2 = rmsnorm(x, b + "ffn_norm.weight");
    const std::string gate = linear(h2, b + "ffn_gate.weight");
    const std::string up = linear(h2, b + "ffn_up.weight");
    const std::string act = w_.op("Mul", {w_.op("Mul", {gate, w_.op("Sigmoid", {gate}, "sig")}, "silu"), up}, "swiglu");
    return w_.op("Add", {x, linear(act, b + "ffn_down.weight")}, b + "ffn_residual");
  }

  onnx::GraphProto* g_;
  GraphWriter& w_;
  const LlamaConfig& c_;
  TensorSource& src_;
  const std::vector<TensorPlan>& plans_;
  const std::vector<OnnxStorage>& storage_;
  const OnnxExportInfo& info_;
  std::map<std::string, size_t> plan_index_;
  size_t done_ = 0;
  std::string eps_, mask_, cos_, sin_, lo_s_, lo_e_, hi_e_, last_, q_shape_, kv_shape_, merge_shape_, attn_scale_, emb_;
  bool emb_f16_ = false;
};

// The model's header: IR and opsets, producer, and the quant.* metadata (recipe, config, vocabulary).
void set_model_header(onnx::ModelProto& mp, const LoadedModel& model, const Policy& policy, const std::vector<TensorPlan>& plans,
                      const OnnxExportInfo& info) {
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
  meta("quant.config", config_json(model.config).dump());
  meta("quant.policy", policy.to_json().dump());
  meta("quant.tensors", plans_to_json(plans).dump());
  for (const auto& [k, v] : info.extra) meta("quant." + k, v);
  meta("quant.vocab", vocab_json(model.tokenizer->vocab()).dump());
}

}  // namespace

OnnxExportResult write_onnx_model(const LoadedModel& model, const Policy& policy, TensorSource& src, const std::string& path,
                                  const OnnxExportInfo& info) {
  const LlamaConfig& c = model.config;
  const Vocab& vocab = model.tokenizer->vocab();
  QUANT_CHECK(vocab.size() == c.vocab, "{}: tokenizer has {} pieces but the model's vocabulary is {}", model.path,
              vocab.size(), c.vocab);
  QUANT_CHECK(info.accuracy_level == 0 || info.accuracy_level == 4,
              "--onnx-accuracy-level {} (0: fp32 math, 4: int8 activations)", info.accuracy_level);
  std::vector<TensorPlan> plans = src.plans();
  const std::vector<OnnxStorage> storage = resolve_onnx_storage(plans);  // the container's view of each plan

  OutDir out = prepare_dir(path, info.force);
  DirGuard guard{out};
  const std::string data_name = fs::path(path).filename().string() + ".data";
  const std::string data_path = (out.dir / data_name).string();
  const bool external = info.external_data || estimated_bytes(plans) > kInlineLimit;
  std::unique_ptr<AtomicFile> data_file;
  if (external) data_file = std::make_unique<AtomicFile>(data_path);

  onnx::ModelProto mp;
  set_model_header(mp, model, policy, plans, info);
  onnx::GraphProto* g = mp.mutable_graph();
  g->set_name(info.name.empty() ? "llama" : info.name);
  set_value_info(g->add_input(), "input_ids", onnx::TensorProto::INT64, {"batch", "sequence"}, {0, 0});
  set_value_info(g->add_output(), "logits", onnx::TensorProto::FLOAT, {"batch", "sequence", ""}, {0, 0, c.vocab});
  GraphWriter w(g, data_file.get(), data_name);
  DecoderGraph(g, w, c, src, plans, storage, info).build();
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

}  // namespace quant
