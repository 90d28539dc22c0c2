// pytorch_model.bin as Python's torch.save writes it (protocol 2: an OrderedDict with its
// _metadata state, backward hooks as OrderedDict(), storages shared between tensors), built byte
// by byte here; and the hostile ones: globals that run code, opcodes outside the data subset,
// compressed or truncated zip members. LibTorch-written files: tests/torch/test_torch_bin.cpp.
#include "../common.h"
#include "quant/formats/loader.h"
#include "quant/formats/torch_bin.h"

using namespace quant;
namespace fs = std::filesystem;

namespace {

struct Member {
  std::string name, data;
  uint16_t method = 0;
  uint32_t claimed_size = 0;  // when nonzero, the size the headers claim
};

template <typename T>
void put(std::string& s, T v) {
  s.append(reinterpret_cast<const char*>(&v), sizeof(T));
}

// A zip archive of stored members (APPNOTE local headers, central directory, end record).
std::string make_zip(const std::vector<Member>& members) {
  std::string out, cd;
  for (const auto& m : members) {
    const uint32_t off = static_cast<uint32_t>(out.size());
    const uint32_t size = m.claimed_size ? m.claimed_size : static_cast<uint32_t>(m.data.size());
    auto header = [&](std::string& s, bool central) {
      put<uint32_t>(s, central ? 0x02014b50 : 0x04034b50);
      if (central) put<uint16_t>(s, 20);
      for (uint16_t v : {uint16_t{20}, uint16_t{0}, m.method, uint16_t{0}, uint16_t{0}}) put(s, v);
      put<uint32_t>(s, 0);  // crc
      put(s, size);
      put(s, size);
      put<uint16_t>(s, static_cast<uint16_t>(m.name.size()));
      put<uint16_t>(s, 0);
      if (central) {
        for (int k = 0; k < 3; ++k) put<uint16_t>(s, 0);  // comment length, disk, internal attributes
        put<uint32_t>(s, 0);
        put(s, off);
      }
      s += m.name;
    };
    header(out, false);
    out += m.data;
    header(cd, true);
  }
  const uint32_t cd_off = static_cast<uint32_t>(out.size());
  out += cd;
  put<uint32_t>(out, 0x06054b50);
  put<uint16_t>(out, 0);
  put<uint16_t>(out, 0);
  put<uint16_t>(out, static_cast<uint16_t>(members.size()));
  put<uint16_t>(out, static_cast<uint16_t>(members.size()));
  put<uint32_t>(out, static_cast<uint32_t>(cd.size()));
  put(out, cd_off);
  put<uint16_t>(out, 0);
  return out;
}

// A protocol-2 pickle, opcode by opcode (CPython Lib/pickle.py names).
struct Pickle {
  std::string s = "\x80\x02";
  Pickle& global(const std::string& m, const std::string& n) { s += "c" + m + "\n" + n + "\n"; return *this; }
  Pickle& str(const std::string& v) { s += 'X'; put<uint32_t>(s, static_cast<uint32_t>(v.size())); s += v; return *this; }
  Pickle& integer(int32_t v) { s += 'J'; put(s, v); return *this; }
  Pickle& op(char c) { s += c; return *this; }
  Pickle& ints(const std::vector<int32_t>& v) {
    op('(');
    for (int32_t x : v) integer(x);
    return op('t');
  }
  // torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())
  Pickle& tensor(const std::string& type, const std::string& key, int32_t numel, int32_t offset,
                 const std::vector<int32_t>& size, const std::vector<int32_t>& stride) {
    global("torch._utils", "_rebuild_tensor_v2").op('(');
    op('(').str("storage").global("torch", type).str(key).str("cpu").integer(numel).op('t').op('Q');
    integer(offset).ints(size).ints(stride).op('\x89');
    global("collections", "OrderedDict").op(')').op('R');
    return op('t').op('R');
  }
};

std::string f32_bytes(const std::vector<float>& v) { return std::string(reinterpret_cast<const char*>(v.data()), v.size() * 4); }

// Python's torch.save of OrderedDict{w: [2,3] at storage 0 offset 0, w2: rows 1.. of the same
// storage, h: F16 [4]} with state_dict's _metadata attribute.
std::string python_state_dict() {
  Pickle p;
  p.global("collections", "OrderedDict").op(')').op('R').op('(');
  p.str("w").tensor("FloatStorage", "0", 9, 0, {2, 3}, {3, 1});
  p.str("w2").tensor("FloatStorage", "0", 9, 3, {2, 3}, {3, 1});
  p.str("h").tensor("HalfStorage", "1", 4, 0, {4}, {1});
  p.op('u');
  p.op('}').op('(').str("_metadata").global("collections", "OrderedDict").op(')').op('R');
  p.op('(').str("").op('}').op('(').str("version").integer(1).op('u').op('u').op('u').op('b').op('.');
  return p.s;
}

std::vector<Member> python_members(const std::string& pkl) {
  std::vector<float> w(9);
  for (int i = 0; i < 9; ++i) w[static_cast<size_t>(i)] = 0.5f * static_cast<float>(i) - 1;
  const uint16_t h[4] = {0x3c00, 0x4000, 0xbc00, 0x0000};  // 1, 2, -1, 0
  return {{"archive/data.pkl", pkl},
          {"archive/byteorder", "little"},
          {"archive/data/0", f32_bytes(w)},
          {"archive/data/1", std::string(reinterpret_cast<const char*>(h), 8)},
          {"archive/version", "3\n"}};
}

std::string write_bin(const qt::TempDir& tmp, const std::vector<Member>& members) {
  const std::string path = tmp / "pytorch_model.bin";
  qt::write_file(path, make_zip(members));
  return path;
}

}  // namespace

TEST_CASE("torch .bin: Python's torch.save layout (OrderedDict, _metadata, shared storage)", "[formats][torch_bin]") {
  qt::TempDir tmp;
  const TorchBinFile f(write_bin(tmp, python_members(python_state_dict())));
  REQUIRE(f.tensors().size() == 3);
  const SafeTensor& w2 = f.tensors().at("w2");
  CHECK(w2.dtype == TType::F32);
  CHECK(w2.shape == std::vector<int64_t>{2, 3});
  std::vector<float> got(6);
  std::memcpy(got.data(), w2.data, 24);
  CHECK(got == std::vector<float>{0.5f, 1, 1.5f, 2, 2.5f, 3});
  const SafeTensor& h = f.tensors().at("h");
  CHECK(h.dtype == TType::F16);
  std::vector<float> hf(4);
  dequantize_row(TType::F16, h.data, hf.data(), 4);
  CHECK(hf == std::vector<float>{1, 2, -1, 0});
}

TEST_CASE("torch .bin: hostile pickles and archives fail with one line naming file and cause", "[formats][torch_bin]") {
  qt::TempDir tmp;
  auto refuses = [&](const std::vector<Member>& members, const std::string& fragment) {
    INFO(fragment);
    const std::string path = write_bin(tmp, members);
    CHECK_THROWS_WITH(TorchBinFile(path), Catch::Contains("pytorch_model.bin") && Catch::Contains(fragment));
  };
  auto with_pickle = [&](const std::string& pkl) { return python_members(pkl); };
  // A pickle is code: os.system('...') must be refused before anything runs.
  refuses(with_pickle(Pickle().global("os", "system").str("touch /tmp/pwned").op('\x85').op('R').op('.').s), "os.system");
  refuses(with_pickle(Pickle().str("builtins").str("eval").op('\x93').s), "builtins.eval");
  // Opcodes outside the data subset: INST, OBJ, NEWOBJ.
  refuses(with_pickle("\x80\x02" "ios\nsystem\n"), "opcode 0x69");
  refuses(with_pickle("\x80\x02(o."), "opcode 0x6f");
  refuses(with_pickle("\x80\x02" ")\x81."), "opcode 0x81");
  // Storage globals may be named but never called.
  refuses(with_pickle(Pickle().global("torch", "FloatStorage").op(')').op('R').op('.').s), "not a tensor constructor");
  refuses(with_pickle(Pickle().op('}').op('(').str("w").tensor("LongStorage", "0", 9, 0, {9}, {1}).op('u').op('.').s),
          "torch.LongStorage is not supported");
  refuses(with_pickle(Pickle().op('}').op('(').str("w").tensor("FloatStorage", "0", 9, 4, {2, 3}, {3, 1}).op('u').op('.').s),
          "runs past its storage");
  refuses(with_pickle(Pickle().op('}').op('(').str("w").tensor("FloatStorage", "0", 9, 0, {3, 3}, {1, 3}).op('u').op('.').s),
          "not contiguous");
  refuses(with_pickle(Pickle().op('}').op('(').str("w").tensor("FloatStorage", "7", 9, 0, {9}, {1}).op('u').op('.').s),
          "no member archive/data/7");
  refuses(with_pickle(Pickle().op('}').op('(').str("w").integer(3).op('u').op('.').s), "is a int, not a tensor");
  refuses(with_pickle(Pickle().op(']').op('.').s), "not a state_dict");
  refuses(with_pickle("\x80\x02}("), "truncated");
  refuses(with_pickle("\x80\x02h\x05."), "memo 5 read before");
  // Archives: a deflated member, a member past the end, no data.pkl.
  auto deflated = python_members(python_state_dict());
  deflated[2].method = 8;
  refuses(deflated, "archive/data/0 is compressed (method 8, deflate)");
  auto past = python_members(python_state_dict());
  past.back().claimed_size = 1000;
  refuses(past, "runs past the end of the archive");
  refuses({{"archive/other", "x"}}, "no <archive>/data.pkl");
  qt::write_file(tmp / "junk.bin", "not a zip at all, just some bytes........");
  CHECK_THROWS_WITH(TorchBinFile(tmp / "junk.bin"), Catch::Contains("junk.bin") && Catch::Contains("not a zip archive"));
}

TEST_CASE("torch .bin: quant convert of a checkpoint whose pickle names os.system: one error line, nothing written",
          "[formats][torch_bin][cli]") {
  qt::TempDir tmp;
  const std::string dir = tmp / "model", out = tmp / "out";
  fs::create_directories(dir);
  fs::create_directories(out);
  fs::copy_file(qt::bundled_model() + "/config.json", dir + "/config.json");
  fs::copy_file(qt::bundled_model() + "/tokenizer.model", dir + "/tokenizer.model");
  qt::write_file(dir + "/pytorch_model.bin",
                 make_zip(python_members(Pickle().global("os", "system").str("touch " + out + "/pwned").op('\x85').op('R').op('.').s)));
  const qt::RunResult r = qt::run(qt::quant_bin() + " convert " + dir + " --qtype Q8_0 -o " + out + "/m.gguf --quiet");
  INFO(r.out);
  CHECK(r.code == 1);
  CHECK(r.out.rfind("error: ", 0) == 0);
  CHECK(std::count(r.out.begin(), r.out.end(), '\n') == 1);
  CHECK(r.out.find("pytorch_model.bin") != std::string::npos);
  CHECK(r.out.find("os.system") != std::string::npos);
  CHECK(fs::is_empty(out));
}
