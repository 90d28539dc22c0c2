// llama.cpp's importance matrix files: GGUF (in_sum2 / counts tensors) and the legacy .dat.
#include "quant/formats/imatrix.h"

#include <cmath>
#include <cstring>

#include "quant/formats/gguf.h"
#include "quant/formats/mmap.h"

namespace quant {

namespace {

constexpr uint32_t kGgufMagic = 0x46554747;  // "GGUF"
constexpr std::string_view kSums = ".in_sum2", kCounts = ".counts";

void check_values(const std::string& path, const std::string& name, const ImatrixEntry& e) {
  QUANT_CHECK(!e.sums.empty(), "{}: {}: no values", path, name);
  QUANT_CHECK(e.count > 0, "{}: {}: count is {} (no tokens reached this weight)", path, name, e.count);
  for (size_t i = 0; i < e.sums.size(); ++i)
    QUANT_CHECK(std::isfinite(e.sums[i]) && e.sums[i] >= 0, "{}: {}: value {} of column {} is not a finite sum of squares", path,
                name, e.sums[i], i);
}

std::vector<double> f32_values(const GgufTensorInfo& t) {
  std::vector<double> v(t.nbytes / 4);
  for (size_t i = 0; i < v.size(); ++i) {
    float f;
    std::memcpy(&f, t.data + 4 * i, 4);
    v[i] = f;
  }
  return v;
}

Imatrix read_gguf_imatrix(const std::string& path) {
  GgufFile f(path);
  Imatrix im;
  const GgufValue* type = f.find("general.type");
  QUANT_CHECK(type && type->type == GgufType::STR && type->str == "imatrix", "{}: general.type is not \"imatrix\" (not an importance matrix)",
              path);
  const GgufValue* ds = f.find("imatrix.datasets");
  const GgufValue* cc = f.find("imatrix.chunk_count");
  const GgufValue* cs = f.find("imatrix.chunk_size");
  QUANT_CHECK(ds && ds->type == GgufType::ARR && ds->elem == GgufType::STR && cc && cc->type == GgufType::U32 && cs &&
                  cs->type == GgufType::U32,
              "{}: imatrix.datasets, imatrix.chunk_count and imatrix.chunk_size are required (llama-quantize refuses the file without them)",
              path);
  im.datasets = ds->strs;
  im.chunk_count = static_cast<int32_t>(cc->num);
  im.chunk_size = static_cast<int32_t>(cs->num);
  std::map<std::string, std::pair<const GgufTensorInfo*, const GgufTensorInfo*>> pairs;
  for (const auto& t : f.tensors()) {
    const std::string& n = t.name;
    if (n.size() > kSums.size() && n.ends_with(kSums))
      pairs[n.substr(0, n.size() - kSums.size())].first = &t;
    else if (n.size() > kCounts.size() && n.ends_with(kCounts))
      pairs[n.substr(0, n.size() - kCounts.size())].second = &t;
  }
  QUANT_CHECK(!pairs.empty(), "{}: no in_sum2 / counts tensors", path);
  for (const auto& [name, p] : pairs) {
    QUANT_CHECK(p.first && p.second, "{}: {}: in_sum2 and counts must come in pairs", path, name);
    QUANT_CHECK(p.first->type == TType::F32 && p.second->type == TType::F32, "{}: {}: in_sum2 and counts must be F32", path, name);
    const int64_t n_mat = p.first->ne.size() > 1 ? p.first->ne[1] : 1;
    QUANT_CHECK(p.second->nbytes == 4 * static_cast<uint64_t>(n_mat), "{}: {}.counts holds {} values for {} matrices", path, name,
                p.second->nbytes / 4, n_mat);
    QUANT_CHECK(n_mat == 1, "{}: {}: {} expert matrices (a mixture of experts; the models we read have one)", path, name, n_mat);
    ImatrixEntry e;
    e.sums = f32_values(*p.first);
    const double c = f32_values(*p.second)[0];
    QUANT_CHECK(std::isfinite(c), "{}: {}.counts is not finite", path, name);
    e.count = std::lround(c);
    check_values(path, name, e);
    im.entries.emplace(name, std::move(e));
  }
  return im;
}

// common_imatrix_load_legacy's layout, every length checked against the bytes left.
Imatrix read_dat_imatrix(const std::string& path, const MappedFile& file) {
  ByteCursor c(file.data(), file.size(), path);
  Imatrix im;
  const int32_t n = c.read<int32_t>("entry count");
  QUANT_CHECK(n >= 1 && static_cast<uint64_t>(n) <= c.left() / 12, "{}: entry count {} is not a legacy imatrix", path, n);
  for (int32_t i = 0; i < n; ++i) {
    const int32_t len = c.read<int32_t>("name length");
    QUANT_CHECK(len > 0 && len <= 4096, "{}: entry {}: name length {}", path, i, len);
    std::string name(c.bytes(static_cast<uint64_t>(len), "name"));
    const int32_t ncall = c.read<int32_t>("ncall");
    const int32_t nval = c.read<int32_t>("value count");
    QUANT_CHECK(nval >= 1 && static_cast<uint64_t>(nval) <= c.left() / 4, "{}: {}: {} values cannot fit in the {} bytes left", path,
                name, nval, c.left());
    ImatrixEntry e;
    e.sums.resize(static_cast<size_t>(nval));
    for (auto& v : e.sums) v = c.read<float>("value");
    e.count = ncall;  // the stored values are Σx²/tokens · ncall: over ncall, llama-quantize's importance
    check_values(path, name, e);
    QUANT_CHECK(im.entries.emplace(std::move(name), std::move(e)).second, "{}: entry {} appears twice", path, i);
  }
  if (c.left() >= 4) {
    im.chunk_count = c.read<int32_t>("chunk count");
    if (c.left() >= 4) {
      const int32_t len = c.read<int32_t>("dataset length");
      if (len > 0 && static_cast<uint64_t>(len) <= c.left()) im.datasets.emplace_back(c.bytes(static_cast<uint64_t>(len), "dataset"));
    }
  }
  return im;
}

}  // namespace

Imatrix read_imatrix(const std::string& path) {
  MappedFile file(path);
  uint32_t magic = 0;
  if (file.size() >= 4) std::memcpy(&magic, file.data(), 4);
  return magic == kGgufMagic ? read_gguf_imatrix(path) : read_dat_imatrix(path, file);
}

void write_imatrix(const Imatrix& im, const std::string& path, bool legacy) {
  QUANT_CHECK(!im.entries.empty(), "{}: an importance matrix needs at least one entry", path);
  if (legacy) {
    AtomicFile f(path);
    auto put = [&](const auto& v) { f.write(&v, sizeof v); };
    put(static_cast<int32_t>(im.entries.size()));
    for (const auto& [name, e] : im.entries) {  // std::map: sorted names, as llama-imatrix sorts them
      put(static_cast<int32_t>(name.size()));
      f.write(name.data(), name.size());
      const int32_t ncall = im.chunk_count;
      put(ncall);
      put(static_cast<int32_t>(e.sums.size()));
      for (double s : e.sums) put(static_cast<float>(s) / static_cast<float>(e.count) * static_cast<float>(ncall));
    }
    put(im.chunk_count);
    const std::string ds = im.datasets.empty() ? std::string() : im.datasets.back();
    put(static_cast<int32_t>(ds.size()));
    f.write(ds.data(), ds.size());
    f.commit();
    return;
  }
  GgufWriter w;
  w.set_str("general.type", "imatrix");
  w.set_str_array("imatrix.datasets", im.datasets);
  w.set_u32("imatrix.chunk_count", static_cast<uint32_t>(im.chunk_count));
  w.set_u32("imatrix.chunk_size", static_cast<uint32_t>(im.chunk_size));
  std::vector<const std::pair<const std::string, ImatrixEntry>*> order;
  for (const auto& kv : im.entries) {
    order.push_back(&kv);
    const int64_t cols = static_cast<int64_t>(kv.second.sums.size());
    w.add_tensor(kv.first + std::string(kSums), 1, cols, 1, TType::F32);
    w.add_tensor(kv.first + std::string(kCounts), 1, 1, 1, TType::F32);
  }
  w.write(path, [&](size_t i) {
    const ImatrixEntry& e = order[i / 2]->second;
    std::vector<float> v;
    if (i % 2 == 0)
      v.assign(e.sums.begin(), e.sums.end());
    else
      v = {static_cast<float>(e.count)};
    PackedTensor t{TType::F32, 1, static_cast<int64_t>(v.size()), std::vector<uint8_t>(v.size() * 4)};
    std::memcpy(t.data.data(), v.data(), v.size() * 4);
    return t;
  });
}

std::map<std::string, std::vector<float>> imatrix_importance(const Imatrix& im, const std::vector<TensorDesc>& tensors,
                                                             const std::string& path) {
  std::map<std::string, std::vector<float>> out;
  for (const auto& entry : im.entries) {
    const std::string& name = entry.first;  // not a structured binding: clang 14 cannot capture one
    const ImatrixEntry& e = entry.second;
    const auto t = std::find_if(tensors.begin(), tensors.end(), [&](const TensorDesc& d) { return d.name == name; });
    QUANT_CHECK(t != tensors.end(), "{}: entry {} names no tensor of this model (an importance matrix of another model?)", path, name);
    QUANT_CHECK(static_cast<int64_t>(e.sums.size()) == t->cols,
                "{}: {} has {} values but the tensor has {} columns (an importance matrix of another model?)", path, name, e.sums.size(),
                t->cols);
    std::vector<float> v(e.sums.size());
    const float count = static_cast<float>(e.count);  // llama-quantize divides in float
    for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(e.sums[i]) / count;
    out.emplace(name, std::move(v));
  }
  return out;
}

}  // namespace quant
