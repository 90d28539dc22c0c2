// GGUF reader (untrusted input: every length is checked against the bytes left) and writer.
#include "quant/formats/gguf.h"

#include <algorithm>
#include <set>

namespace quant {

namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" little-endian
constexpr uint64_t kMaxString = 1ull << 30;

size_t scalar_size(GgufType t) {
  switch (t) {
    case GgufType::U8: case GgufType::I8: case GgufType::BOOL: return 1;
    case GgufType::U16: case GgufType::I16: return 2;
    case GgufType::U32: case GgufType::I32: case GgufType::F32: return 4;
    case GgufType::U64: case GgufType::I64: case GgufType::F64: return 8;
    default: return 0;
  }
}

std::string read_string(ByteCursor& c, std::string_view what) {
  const uint64_t n = c.read<uint64_t>(what);
  QUANT_CHECK(n <= kMaxString && n <= c.left(), "{}: {} length {} at offset {} exceeds the {} bytes left",
              c.source(), what, n, c.pos() - 8, c.left());
  return std::string(c.bytes(n, what));
}

double read_scalar(ByteCursor& c, GgufType t, const std::string& key) {
  switch (t) {
    case GgufType::U8: return c.read<uint8_t>(key);
    case GgufType::I8: return c.read<int8_t>(key);
    case GgufType::U16: return c.read<uint16_t>(key);
    case GgufType::I16: return c.read<int16_t>(key);
    case GgufType::U32: return c.read<uint32_t>(key);
    case GgufType::I32: return c.read<int32_t>(key);
    case GgufType::F32: return c.read<float>(key);
    case GgufType::BOOL: {
      const uint8_t b = c.read<uint8_t>(key);
      QUANT_CHECK(b <= 1, "{}: {}: bool value {}", c.source(), key, b);
      return b;
    }
    case GgufType::U64: return static_cast<double>(c.read<uint64_t>(key));
    case GgufType::I64: return static_cast<double>(c.read<int64_t>(key));
    case GgufType::F64: return c.read<double>(key);
    default: fail("{}: {}: not a scalar type {}", c.source(), key, static_cast<uint32_t>(t));
  }
}

template <typename T>
void put(std::string& out, T v) {
  out.append(reinterpret_cast<const char*>(&v), sizeof(T));
}
void put_string(std::string& out, const std::string& s) {
  put<uint64_t>(out, s.size());
  out += s;
}
void put_scalar(std::string& out, GgufType t, double v) {
  switch (t) {
    case GgufType::U8: put<uint8_t>(out, static_cast<uint8_t>(v)); break;
    case GgufType::I8: put<int8_t>(out, static_cast<int8_t>(v)); break;
    case GgufType::U16: put<uint16_t>(out, static_cast<uint16_t>(v)); break;
    case GgufType::I16: put<int16_t>(out, static_cast<int16_t>(v)); break;
    case GgufType::U32: put<uint32_t>(out, static_cast<uint32_t>(v)); break;
    case GgufType::I32: put<int32_t>(out, static_cast<int32_t>(v)); break;
    case GgufType::F32: put<float>(out, static_cast<float>(v)); break;
    case GgufType::BOOL: put<uint8_t>(out, v != 0 ? 1 : 0); break;
    case GgufType::U64: put<uint64_t>(out, static_cast<uint64_t>(v)); break;
    case GgufType::I64: put<int64_t>(out, static_cast<int64_t>(v)); break;
    case GgufType::F64: put<double>(out, v); break;
    default: fail("GGUF writer: not a scalar type");
  }
}

uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

}  // namespace

std::string GgufValue::summary() const {
  if (type == GgufType::STR) return str.size() > 60 ? fmt::format("\"{}...\" ({} chars)", str.substr(0, 57), str.size()) : "\"" + str + "\"";
  if (type == GgufType::ARR) {
    std::string head;
    for (size_t i = 0; i < std::min<size_t>(array_size(), 4); ++i)
      head += (i ? ", " : "") + (elem == GgufType::STR ? "\"" + strs[i] + "\"" : fmt::format("{}", nums[i]));
    return fmt::format("[{}{}] ({} items)", head, array_size() > 4 ? ", ..." : "", array_size());
  }
  if (type == GgufType::BOOL) return num != 0 ? "true" : "false";
  return fmt::format("{}", num);
}

GgufFile::GgufFile(const std::string& path) : file_(path) {
  ByteCursor c(file_.data(), file_.size(), path);
  const uint32_t magic = c.read<uint32_t>("magic");
  QUANT_CHECK(magic == kMagic, "{}: not a GGUF file (magic 0x{:08x})", path, magic);
  version_ = c.read<uint32_t>("version");
  QUANT_CHECK(version_ == 2 || version_ == 3, "{}: GGUF version {} is not supported (2, 3 are)", path, version_);
  const uint64_t n_tensors = c.read<uint64_t>("tensor count");
  const uint64_t n_kv = c.read<uint64_t>("kv count");
  // Each KV takes >= 12 bytes and each tensor info >= 24: bound the counts by the file.
  QUANT_CHECK(n_kv <= c.left() / 12, "{}: kv count {} cannot fit in {} bytes", path, n_kv, c.left());
  QUANT_CHECK(n_tensors <= c.left() / 24, "{}: tensor count {} cannot fit in {} bytes", path, n_tensors, c.left());
  std::set<std::string> keys;
  for (uint64_t i = 0; i < n_kv; ++i) {
    std::string key = read_string(c, "key");
    QUANT_CHECK(keys.insert(key).second, "{}: duplicate key {}", path, key);
    GgufValue v;
    v.type = static_cast<GgufType>(c.read<uint32_t>(key + " type"));
    if (v.type == GgufType::STR) {
      v.str = read_string(c, key);
    } else if (v.type == GgufType::ARR) {
      v.elem = static_cast<GgufType>(c.read<uint32_t>(key + " element type"));
      const uint64_t n = c.read<uint64_t>(key + " array length");
      if (v.elem == GgufType::STR) {
        QUANT_CHECK(n <= c.left() / 8, "{}: {}: array of {} strings cannot fit in {} bytes", path, key, n, c.left());
        v.strs.reserve(n);
        for (uint64_t k = 0; k < n; ++k) v.strs.push_back(read_string(c, key));
      } else {
        const size_t es = scalar_size(v.elem);
        QUANT_CHECK(es > 0, "{}: {}: unsupported array element type {}", path, key, static_cast<uint32_t>(v.elem));
        QUANT_CHECK(n <= c.left() / es, "{}: {}: array of {} cannot fit in {} bytes", path, key, n, c.left());
        v.nums.reserve(n);
        for (uint64_t k = 0; k < n; ++k) v.nums.push_back(read_scalar(c, v.elem, key));
      }
    } else {
      QUANT_CHECK(scalar_size(v.type) > 0, "{}: {}: unknown value type {}", path, key, static_cast<uint32_t>(v.type));
      v.num = read_scalar(c, v.type, key);
    }
    kv_.emplace_back(std::move(key), std::move(v));
  }
  if (const GgufValue* a = find("general.alignment")) {
    QUANT_CHECK(a->type == GgufType::U32 && a->num > 0 && (static_cast<uint64_t>(a->num) & (static_cast<uint64_t>(a->num) - 1)) == 0,
                "{}: general.alignment {} is not a power of two", path, a->num);
    alignment_ = static_cast<uint64_t>(a->num);
  }
  std::set<std::string> names;
  for (uint64_t i = 0; i < n_tensors; ++i) {
    GgufTensorInfo t;
    t.name = read_string(c, "tensor name");
    QUANT_CHECK(names.insert(t.name).second, "{}: duplicate tensor {}", path, t.name);
    const uint32_t nd = c.read<uint32_t>(t.name + " n_dims");
    QUANT_CHECK(nd >= 1 && nd <= 4, "{}: tensor {}: n_dims {} out of 1..4", path, t.name, nd);
    uint64_t numel = 1;
    for (uint32_t d = 0; d < nd; ++d) {
      const uint64_t ne = c.read<uint64_t>(t.name + " ne");
      QUANT_CHECK(ne >= 1 && ne <= (1ull << 40) && numel <= (1ull << 48) / ne, "{}: tensor {}: dimension {} = {} out of range",
                  path, t.name, d, ne);
      numel *= ne;
      t.ne.push_back(static_cast<int64_t>(ne));
    }
    const uint32_t type = c.read<uint32_t>(t.name + " type");
    const TTypeTraits* tr = ttype_traits(type);
    QUANT_CHECK(tr, "{}: tensor {}: ggml type {} is not supported", path, t.name, type);
    t.type = tr->type;
    QUANT_CHECK(t.ne[0] % tr->block == 0, "{}: tensor {}: row of {} does not tile {} blocks", path, t.name, t.ne[0], tr->name);
    t.nbytes = numel / static_cast<uint64_t>(tr->block) * static_cast<uint64_t>(tr->block_bytes);
    t.offset = c.read<uint64_t>(t.name + " offset");
    QUANT_CHECK(t.offset % alignment_ == 0, "{}: tensor {}: offset {} not aligned to {}", path, t.name, t.offset, alignment_);
    tensors_.push_back(std::move(t));
  }
  if (tensors_.empty()) return;  // vocab-only files end after the metadata, unpadded
  const uint64_t data_start = align_up(c.pos(), alignment_);
  QUANT_CHECK(data_start <= file_.size(), "{}: data section starts at {} past the end ({} bytes)", path, data_start, file_.size());
  const uint64_t data_size = file_.size() - data_start;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (auto& t : tensors_) {
    QUANT_CHECK(t.offset <= data_size && t.nbytes <= data_size - t.offset,
                "{}: tensor {}: data [{}, {}) past the end of the data section ({} bytes)", path, t.name, t.offset,
                t.offset + t.nbytes, data_size);
    t.data = file_.data() + data_start + t.offset;
    ranges.emplace_back(t.offset, t.offset + t.nbytes);
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i)
    QUANT_CHECK(ranges[i].first >= ranges[i - 1].second, "{}: tensor data overlaps at offset {}", path, ranges[i].first);
}

const GgufValue* GgufFile::find(std::string_view key) const {
  for (const auto& [k, v] : kv_)
    if (k == key) return &v;
  return nullptr;
}

double GgufFile::get_num(std::string_view key) const {
  const GgufValue* v = find(key);
  QUANT_CHECK(v, "{}: missing key {}", path(), key);
  QUANT_CHECK(v->type != GgufType::STR && v->type != GgufType::ARR, "{}: key {} is not a number", path(), key);
  return v->num;
}

double GgufFile::get_num(std::string_view key, double dflt) const { return find(key) ? get_num(key) : dflt; }

std::string GgufFile::get_str(std::string_view key) const {
  const GgufValue* v = find(key);
  QUANT_CHECK(v, "{}: missing key {}", path(), key);
  QUANT_CHECK(v->type == GgufType::STR, "{}: key {} is not a string", path(), key);
  return v->str;
}

// --- writer ---

void GgufWriter::set(std::string key, GgufValue v) {
  for (auto& [k, old] : kv_)
    if (k == key) {
      old = std::move(v);
      return;
    }
  kv_.emplace_back(std::move(key), std::move(v));
}
void GgufWriter::set_u32(std::string k, uint32_t v) { set(std::move(k), {GgufType::U32, GgufType::U8, static_cast<double>(v), {}, {}, {}}); }
void GgufWriter::set_i32(std::string k, int32_t v) { set(std::move(k), {GgufType::I32, GgufType::U8, static_cast<double>(v), {}, {}, {}}); }
void GgufWriter::set_f32(std::string k, float v) { set(std::move(k), {GgufType::F32, GgufType::U8, v, {}, {}, {}}); }
void GgufWriter::set_bool(std::string k, bool v) { set(std::move(k), {GgufType::BOOL, GgufType::U8, v ? 1.0 : 0.0, {}, {}, {}}); }
void GgufWriter::set_str(std::string k, std::string v) { set(std::move(k), {GgufType::STR, GgufType::U8, 0, std::move(v), {}, {}}); }
void GgufWriter::set_str_array(std::string k, std::vector<std::string> v) {
  set(std::move(k), {GgufType::ARR, GgufType::STR, 0, {}, {}, std::move(v)});
}
void GgufWriter::set_f32_array(std::string k, std::vector<float> v) {
  set(std::move(k), {GgufType::ARR, GgufType::F32, 0, {}, std::vector<double>(v.begin(), v.end()), {}});
}
void GgufWriter::set_i32_array(std::string k, std::vector<int32_t> v) {
  set(std::move(k), {GgufType::ARR, GgufType::I32, 0, {}, std::vector<double>(v.begin(), v.end()), {}});
}

void GgufWriter::add_tensor(std::string name, int64_t rows, int64_t cols, int n_dims, TType type) {
  QUANT_CHECK(cols % traits(type).block == 0, "GGUF tensor {}: {} columns do not tile {}", name, cols, ttype_name(type));
  tensors_.push_back({std::move(name), rows, cols, n_dims, type});
}

uint64_t GgufWriter::alignment() const {
  for (const auto& [k, v] : kv_)
    if (k == "general.alignment") return static_cast<uint64_t>(v.num);
  return 32;
}

std::string GgufWriter::header(std::vector<uint64_t>* sizes) const {
  const uint64_t alignment = this->alignment();
  std::string head;
  put<uint32_t>(head, kMagic);
  put<uint32_t>(head, 3);
  put<uint64_t>(head, tensors_.size());
  put<uint64_t>(head, kv_.size());
  for (const auto& [k, v] : kv_) {
    put_string(head, k);
    put<uint32_t>(head, static_cast<uint32_t>(v.type));
    if (v.type == GgufType::STR) {
      put_string(head, v.str);
    } else if (v.type == GgufType::ARR) {
      put<uint32_t>(head, static_cast<uint32_t>(v.elem));
      put<uint64_t>(head, v.array_size());
      if (v.elem == GgufType::STR)
        for (const auto& s : v.strs) put_string(head, s);
      else
        for (double x : v.nums) put_scalar(head, v.elem, x);
    } else {
      put_scalar(head, v.type, v.num);
    }
  }
  uint64_t off = 0;
  for (const auto& t : tensors_) {
    put_string(head, t.name);
    put<uint32_t>(head, static_cast<uint32_t>(t.n_dims));
    put<uint64_t>(head, static_cast<uint64_t>(t.cols));
    if (t.n_dims == 2) put<uint64_t>(head, static_cast<uint64_t>(t.rows));
    put<uint32_t>(head, static_cast<uint32_t>(t.type));
    put<uint64_t>(head, off);
    const auto size = static_cast<uint64_t>(t.rows * row_bytes(t.type, t.cols));
    if (sizes) sizes->push_back(size);
    off = align_up(off + size, alignment);
  }
  head.resize(align_up(head.size(), alignment), '\0');
  return head;
}

uint64_t GgufWriter::file_bytes() const {
  std::vector<uint64_t> sizes;
  uint64_t n = header(&sizes).size();
  for (uint64_t s : sizes) n += align_up(s, alignment());
  return n;
}

void GgufWriter::write(const std::string& path, const std::function<PackedTensor(size_t)>& produce) const {
  const uint64_t alignment = this->alignment();
  std::vector<uint64_t> sizes;
  const std::string head = header(&sizes);
  AtomicFile f(path);
  f.write(head.data(), head.size());
  static const char zeros[64] = {};
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const PackedTensor p = produce(i);
    const Decl& t = tensors_[i];
    QUANT_CHECK(p.type == t.type && p.rows == t.rows && p.cols == t.cols && p.data.size() == sizes[i],
                "GGUF writer: tensor {} produced as {} [{}x{}] {} bytes, declared {} [{}x{}] {} bytes", t.name,
                ttype_name(p.type), p.rows, p.cols, p.data.size(), ttype_name(t.type), t.rows, t.cols, sizes[i]);
    f.write(p.data.data(), p.data.size());
    // Every tensor padded to the alignment, the last one too, as ggml's gguf writer does: its
    // reader, when it loads the data (no_alloc false: llama-quantize's imatrix), wants them all.
    for (uint64_t pad = align_up(sizes[i], alignment) - sizes[i]; pad > 0;) {
      const uint64_t n = std::min<uint64_t>(pad, sizeof zeros);
      f.write(zeros, n);
      pad -= n;
    }
  }
  f.commit();
}

}  // namespace quant
