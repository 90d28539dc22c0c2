// SentencePiece tokenizer.model through libsentencepiece (the reference for HF checkpoints),
// reached through the quant_spm module (spm_shim/) so its bundled protobuf stays out of the
// process's global symbol scope.
#include <dlfcn.h>
#include <unistd.h>

#include <filesystem>
#include <mutex>

#include "quant/error.h"
#include "quant/formats/loader.h"
#include "quant/formats/mmap.h"

namespace quant {

namespace {

// The few ModelProto fields libsentencepiece's API does not expose, read from the serialized
// proto's wire format: piece types (field 1 -> 3) and normalizer add_dummy_prefix (3 -> 3).
struct ProtoFacts {
  std::vector<int> piece_types;
  bool add_dummy_prefix = true;
};

class Wire {
 public:
  Wire(std::string_view b, std::string_view src) : b_(b), src_(src) {}
  bool done() const { return p_ >= b_.size(); }
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      QUANT_CHECK(p_ < b_.size(), "{}: truncated protobuf varint", src_);
      const uint8_t c = static_cast<uint8_t>(b_[p_++]);
      v |= static_cast<uint64_t>(c & 0x7F) << shift;
      if (!(c & 0x80)) return v;
    }
    fail("{}: bad protobuf varint", src_);
  }
  std::string_view take(uint64_t n) {
    QUANT_CHECK(n <= b_.size() - p_, "{}: truncated protobuf field", src_);
    auto s = b_.substr(p_, n);
    p_ += n;
    return s;
  }
  // Reads one field; returns (number, wire type); length-delimited payload in *sub.
  std::pair<uint32_t, int> field(std::string_view* sub, uint64_t* value) {
    const uint64_t key = varint();
    const int wt = static_cast<int>(key & 7);
    switch (wt) {
      case 0: *value = varint(); break;
      case 1: take(8); break;
      case 2: *sub = take(varint()); break;
      case 5: take(4); break;
      default: fail("{}: unsupported protobuf wire type {}", src_, wt);
    }
    return {static_cast<uint32_t>(key >> 3), wt};
  }

 private:
  std::string_view b_, src_;
  size_t p_ = 0;
};

ProtoFacts read_proto_facts(std::string_view bytes, std::string_view src) {
  ProtoFacts f;
  Wire w(bytes, src);
  while (!w.done()) {
    std::string_view sub;
    uint64_t v = 0;
    const auto [num, wt] = w.field(&sub, &v);
    if (wt != 2 || (num != 1 && num != 3)) continue;
    Wire inner(sub, src);
    int type = 1;  // NORMAL unless stated
    while (!inner.done()) {
      std::string_view s2;
      uint64_t v2 = 1;
      const auto [n2, wt2] = inner.field(&s2, &v2);
      if (num == 1 && n2 == 3 && wt2 == 0) type = static_cast<int>(v2);
      if (num == 3 && n2 == 3 && wt2 == 0) f.add_dummy_prefix = v2 != 0;
    }
    if (num == 1) f.piece_types.push_back(type);
  }
  return f;
}

// The module's functions, resolved once.
struct SpmApi {
  void* (*load)(const char*, char*, size_t);
  void (*free)(void*);
  int (*size)(void*);
  size_t (*piece)(void*, int, char*, size_t);
  float (*score)(void*, int);
  int (*special)(void*, int);
  const char* (*serialized)(void*, size_t*);
  int (*encode)(void*, const char*, size_t, int**, size_t*, char*, size_t);
  void (*free_ids)(int*);
};

std::string module_path() {
  if (const char* env = std::getenv("QUANT_SPM_MODULE")) return env;
  std::error_code ec;
  const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  for (const auto& dir : {exe.parent_path(), exe.parent_path() / "../lib"}) {
    const auto p = dir / "libquant_spm.so";
    if (std::filesystem::exists(p)) return p.string();
  }
  return "libquant_spm.so";  // the dynamic linker's search path
}

const SpmApi& spm_api() {
  static SpmApi api;
  static std::once_flag once;
  static std::string error;
  std::call_once(once, [] {
    const std::string path = module_path();
#if defined(__SANITIZE_ADDRESS__)
    // AddressSanitizer refuses RTLD_DEEPBIND; a link-map namespace of the module's own isolates it
    // as well (its libsentencepiece, protobuf-lite and C++ runtime included: the API is C, and
    // what the module allocates it frees). Such a build makes the module without sanitizers.
    void* lib = ::dlmopen(LM_ID_NEWLM, path.c_str(), RTLD_NOW | RTLD_LOCAL);
#else
    void* lib = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
#endif
    if (!lib) {
      error = fmt::format("cannot load the SentencePiece module {}: {}", path, ::dlerror());
      return;
    }
    auto sym = [&](const char* name) {
      void* f = ::dlsym(lib, name);
      if (!f) error = fmt::format("{}: missing symbol {}", path, name);
      return f;
    };
    api.load = reinterpret_cast<decltype(api.load)>(sym("quant_spm_load"));
    api.free = reinterpret_cast<decltype(api.free)>(sym("quant_spm_free"));
    api.size = reinterpret_cast<decltype(api.size)>(sym("quant_spm_size"));
    api.piece = reinterpret_cast<decltype(api.piece)>(sym("quant_spm_piece"));
    api.score = reinterpret_cast<decltype(api.score)>(sym("quant_spm_score"));
    api.special = reinterpret_cast<decltype(api.special)>(sym("quant_spm_special"));
    api.serialized = reinterpret_cast<decltype(api.serialized)>(sym("quant_spm_serialized"));
    api.encode = reinterpret_cast<decltype(api.encode)>(sym("quant_spm_encode"));
    api.free_ids = reinterpret_cast<decltype(api.free_ids)>(sym("quant_spm_free_ids"));
  });
  QUANT_CHECK(error.empty(), "{}", error);
  return api;
}

class SentencePieceTokenizer final : public Tokenizer {
 public:
  explicit SentencePieceTokenizer(const std::string& path) : api_(spm_api()) {
    char err[512] = {};
    sp_ = api_.load(path.c_str(), err, sizeof(err));
    QUANT_CHECK(sp_, "{}: not a SentencePiece model: {}", path, err);
    size_t nser = 0;
    const char* ser = api_.serialized(sp_, &nser);
    const ProtoFacts facts = read_proto_facts(std::string_view(ser, nser), path);
    const int n = api_.size(sp_);
    QUANT_CHECK(static_cast<int>(facts.piece_types.size()) == n, "{}: {} pieces but {} piece records", path, n,
                facts.piece_types.size());
    for (int i = 0; i < n; ++i) {
      char buf[1024];
      const size_t len = api_.piece(sp_, i, buf, sizeof(buf));
      QUANT_CHECK(len < sizeof(buf), "{}: piece {} is {} bytes long", path, i, len);
      vocab_.pieces.emplace_back(buf, len);
      vocab_.scores.push_back(api_.score(sp_, i));
      // SentencePiece's enum: NORMAL 1, UNKNOWN 2, CONTROL 3, USER_DEFINED 4, BYTE 6, UNUSED 5 —
      // the same numbers GGUF uses.
      const int t = facts.piece_types[static_cast<size_t>(i)];
      QUANT_CHECK(t >= 1 && t <= 6, "{}: piece {} has unknown type {}", path, i, t);
      vocab_.types.push_back(static_cast<TokenType>(t));
    }
    const int bos = api_.special(sp_, 0), eos = api_.special(sp_, 1), unk = api_.special(sp_, 2);
    vocab_.bos = bos >= 0 ? bos : 1;
    vocab_.eos = eos >= 0 ? eos : 2;
    vocab_.unk = unk >= 0 ? unk : 0;
    vocab_.add_space_prefix = facts.add_dummy_prefix;
    vocab_.validate(path);
  }
  ~SentencePieceTokenizer() override { api_.free(sp_); }
  SentencePieceTokenizer(const SentencePieceTokenizer&) = delete;
  SentencePieceTokenizer& operator=(const SentencePieceTokenizer&) = delete;

  std::vector<int32_t> encode(std::string_view text, bool add_bos) const override {
    int* ids = nullptr;
    size_t n = 0;
    char err[512] = {};
    QUANT_CHECK(api_.encode(sp_, text.data(), text.size(), &ids, &n, err, sizeof(err)) == 0,
                "SentencePiece encode failed: {}", err);
    std::vector<int32_t> out;
    out.reserve(n + 1);
    if (add_bos) out.push_back(vocab_.bos);
    out.insert(out.end(), ids, ids + n);
    api_.free_ids(ids);
    return out;
  }
  std::string decode(int32_t prev, int32_t tok) const override { return spm_decode(vocab_, prev, tok); }
  const Vocab& vocab() const override { return vocab_; }

 private:
  const SpmApi& api_;
  void* sp_ = nullptr;
  Vocab vocab_;
};

}  // namespace

std::unique_ptr<Tokenizer> load_sentencepiece(const std::string& path) {
  note_input(path);
  return std::make_unique<SentencePieceTokenizer>(path);
}

}  // namespace quant
