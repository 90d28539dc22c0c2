// torch.save checkpoints (torch/serialization.py _save, zip format since PyTorch 1.6):
//   <archive>/data.pkl       the pickled object; storages appear as persistent ids
//                            ('storage', torch.<T>Storage, key, location, numel)
//   <archive>/data/<key>     the storage's bytes, stored, 64-byte aligned
//   <archive>/byteorder      "little" (absent in older files: little)
// A state_dict pickles each tensor as torch._utils._rebuild_tensor_v2(storage, offset, size,
// stride, requires_grad, backward_hooks[, metadata]) and the dict as a dict or an OrderedDict;
// LibTorch's torch::pickle_save wraps the dict in torch.jit._pickle.restore_type_tag(d, type).
#include "quant/formats/torch_bin.h"

#include "pickle.h"

namespace quant {

namespace {

using pickle::Ref;
using pickle::Value;
using K = Value::Kind;

struct StorageRef {
  TType dtype;
  std::string key;
  int64_t numel;
};
struct TensorRef {
  std::shared_ptr<StorageRef> storage;
  int64_t offset = 0;
  std::vector<int64_t> size, stride;
};

const std::map<std::string, TType>& storage_types() {
  static const std::map<std::string, TType> t = {{"torch.FloatStorage", TType::F32},
                                                 {"torch.HalfStorage", TType::F16},
                                                 {"torch.BFloat16Storage", TType::BF16},
                                                 {"torch.IntStorage", TType::I32}};
  return t;
}

class StateDictReader {
 public:
  StateDictReader(const ZipArchive& zip, std::string prefix) : zip_(zip), prefix_(std::move(prefix)) {
    hooks_.globals = {"collections.OrderedDict", "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_parameter",
                      "torch.jit._pickle.restore_type_tag"};
    for (const auto& [name, t] : storage_types()) hooks_.globals.insert(name);
    // Storage types a state_dict may hold but we cannot use: named in the error, not "forbidden".
    for (const char* other : {"torch.DoubleStorage", "torch.LongStorage", "torch.ShortStorage", "torch.CharStorage",
                              "torch.ByteStorage", "torch.BoolStorage"})
      hooks_.globals.insert(other);
    hooks_.reduce = [this](const std::string& g, const Ref& args) { return reduce(g, args); };
    hooks_.persistent_load = [this](const Ref& pid) { return storage(pid); };
    hooks_.build = [this](const Ref& obj, const Ref&) {
      // OrderedDict's state is its _metadata attribute (module versions): data, already parsed.
      QUANT_CHECK(obj->kind == K::Dict || obj->kind == K::Object, "{}: BUILD on a {}", source(), pickle::kind_name(obj->kind));
    };
  }

  std::map<std::string, SafeTensor> read(const ZipMember& pkl) {
    const Ref root = pickle::load(pkl.data, pkl.size, source(), hooks_);
    QUANT_CHECK(root->kind == K::Dict, "{}: the pickle holds a {}, not a state_dict (a dict of tensors)", source(),
                pickle::kind_name(root->kind));
    std::map<std::string, SafeTensor> out;
    for (size_t i = 0; i + 1 < root->items.size(); i += 2) {
      const Ref& k = root->items[i];
      const Ref& v = root->items[i + 1];
      QUANT_CHECK(k->kind == K::Str, "{}: state_dict key {} is a {}, not a string", source(), i / 2, pickle::kind_name(k->kind));
      QUANT_CHECK(v->kind == K::Object && v->s == "tensor", "{}: state_dict[{}] is a {}, not a tensor", source(), k->s,
                  v->kind == K::Object ? v->s : pickle::kind_name(v->kind));
      QUANT_CHECK(!out.count(k->s), "{}: tensor {} appears twice", source(), k->s);
      out.emplace(k->s, place(k->s, *std::static_pointer_cast<TensorRef>(v->object)));
    }
    return out;
  }

 private:
  std::string source() const { return zip_.path() + ": " + prefix_ + "data.pkl"; }

  int64_t as_int(const Ref& v, const char* what) const {
    QUANT_CHECK(v->kind == K::Int, "{}: {} is a {}, not an int", source(), what, pickle::kind_name(v->kind));
    return v->i;
  }
  std::vector<int64_t> int_tuple(const Ref& v, const char* what) const {
    QUANT_CHECK(v->kind == K::Tuple && v->items.size() <= 8, "{}: {} is not a tuple of at most 8 ints", source(), what);
    std::vector<int64_t> out;
    for (const auto& x : v->items) out.push_back(as_int(x, what));
    return out;
  }

  Ref storage(const Ref& pid) {
    QUANT_CHECK(pid->kind == K::Tuple && pid->items.size() == 5 && pid->items[0]->kind == K::Str &&
                    pid->items[0]->s == "storage" && pid->items[1]->kind == K::Global && pid->items[2]->kind == K::Str,
                "{}: persistent id is not ('storage', type, key, location, numel)", source());
    const std::string& type = pid->items[1]->s;
    auto it = storage_types().find(type);
    QUANT_CHECK(it != storage_types().end(), "{}: storage type {} is not supported (Float, Half, BFloat16, Int are)",
                source(), type);
    auto s = std::make_shared<StorageRef>(StorageRef{it->second, pid->items[2]->s, as_int(pid->items[4], "storage numel")});
    QUANT_CHECK(s->numel >= 0 && s->numel <= (int64_t{1} << 40), "{}: storage {} numel {} out of range", source(), s->key, s->numel);
    const ZipMember* m = zip_.find(prefix_ + "data/" + s->key);
    QUANT_CHECK(m, "{}: storage {} has no member {}data/{}", source(), s->key, prefix_, s->key);
    const uint64_t want = static_cast<uint64_t>(s->numel) * static_cast<uint64_t>(traits(s->dtype).block_bytes);
    QUANT_CHECK(m->size == want, "{}: storage {} ({} x {}) needs {} bytes, member {} holds {}", source(), s->key, s->numel,
                ttype_name(s->dtype), want, m->name, m->size);
    auto v = std::make_shared<Value>();
    v->kind = K::Object;
    v->s = "storage";
    v->object = s;
    return v;
  }

  Ref reduce(const std::string& g, const Ref& args) {
    const auto& a = args->items;
    if (g == "collections.OrderedDict") {
      QUANT_CHECK(a.empty(), "{}: OrderedDict called with {} arguments", source(), a.size());
      auto d = std::make_shared<Value>();
      d->kind = K::Dict;
      return d;
    }
    if (g == "torch.jit._pickle.restore_type_tag") {  // LibTorch's pickle_save: (obj, "Dict[str, Tensor]")
      QUANT_CHECK(a.size() == 2 && a[1]->kind == K::Str, "{}: restore_type_tag needs (object, type name)", source());
      return a[0];
    }
    if (g == "torch._utils._rebuild_parameter") {
      QUANT_CHECK(a.size() >= 1 && a[0]->kind == K::Object && a[0]->s == "tensor", "{}: _rebuild_parameter of a non-tensor",
                  source());
      return a[0];
    }
    if (g == "torch._utils._rebuild_tensor_v2") {
      QUANT_CHECK(a.size() >= 4 && a.size() <= 7 && a[0]->kind == K::Object && a[0]->s == "storage",
                  "{}: _rebuild_tensor_v2 needs (storage, offset, size, stride, ...)", source());
      auto t = std::make_shared<TensorRef>();
      t->storage = std::static_pointer_cast<StorageRef>(a[0]->object);
      t->offset = as_int(a[1], "storage offset");
      t->size = int_tuple(a[2], "tensor size");
      t->stride = int_tuple(a[3], "tensor stride");
      auto v = std::make_shared<Value>();
      v->kind = K::Object;
      v->s = "tensor";
      v->object = t;
      return v;
    }
    // Only storage types reach here: they are named in persistent ids, never called.
    fail("{}: the pickle calls {}, which is not a tensor constructor", source(), g);
  }

  SafeTensor place(const std::string& name, const TensorRef& t) const {
    QUANT_CHECK(t.size.size() == t.stride.size(), "{}: tensor {}: size and stride differ in length", source(), name);
    int64_t numel = 1, expect = 1;
    for (size_t d = t.size.size(); d-- > 0;) {
      QUANT_CHECK(t.size[d] >= 0 && t.size[d] <= (int64_t{1} << 40), "{}: tensor {}: dim {} = {} out of range", source(),
                  name, d, t.size[d]);
      QUANT_CHECK(t.size[d] <= 1 || t.stride[d] == expect,
                  "{}: tensor {} is not contiguous (stride {} at dim {}, expected {}); re-save it with .contiguous()",
                  source(), name, t.stride[d], d, expect);
      expect *= t.size[d];
      numel = expect;
      QUANT_CHECK(numel <= (int64_t{1} << 40), "{}: tensor {}: shape overflows", source(), name);
    }
    const StorageRef& s = *t.storage;
    QUANT_CHECK(t.offset >= 0 && t.offset <= s.numel && numel <= s.numel - t.offset,
                "{}: tensor {} ([{}, +{}) elements) runs past its storage {} of {}", source(), name, t.offset, numel, s.key,
                s.numel);
    const int64_t esize = traits(s.dtype).block_bytes;
    const ZipMember* m = zip_.find(prefix_ + "data/" + s.key);
    return SafeTensor{name, s.dtype, t.size, m->data + t.offset * esize, static_cast<uint64_t>(numel * esize)};
  }

  const ZipArchive& zip_;
  std::string prefix_;
  pickle::Hooks hooks_;
};

}  // namespace

TorchBinFile::TorchBinFile(const std::string& path) : zip_(path) {
  // The archive's one top-level folder holds data.pkl; its name varies with the file name.
  std::string prefix;
  for (const auto& [name, m] : zip_.members()) {
    const auto slash = name.find('/');
    if (slash != std::string::npos && name.substr(slash + 1) == "data.pkl") {
      QUANT_CHECK(prefix.empty(), "{}: more than one data.pkl", path);
      prefix = name.substr(0, slash + 1);
    }
  }
  QUANT_CHECK(!prefix.empty(), "{}: no <archive>/data.pkl member: not a torch.save checkpoint (the legacy pre-1.6 format "
                               "is not read)", path);
  if (const ZipMember* bo = zip_.find(prefix + "byteorder"))
    QUANT_CHECK(std::string_view(reinterpret_cast<const char*>(bo->data), bo->size) == "little",
                "{}: byteorder is not little-endian", path);
  tensors_ = StateDictReader(zip_, prefix).read(*zip_.find(prefix + "data.pkl"));
}

}  // namespace quant
