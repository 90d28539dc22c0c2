// A C interface to libsentencepiece, built as a module that quant loads with dlopen(RTLD_LOCAL |
// RTLD_DEEPBIND). libsentencepiece carries its own copy of protobuf-lite and exports its symbols;
// loaded normally next to the system libprotobuf (LibTorch, ONNX) the two copies interpose and
// the process crashes during static initialisation. Kept in a local scope they cannot meet.
#include <sentencepiece_processor.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {
struct Handle {
  sentencepiece::SentencePieceProcessor sp;
  std::string serialized;
};
void set_err(char* err, size_t n, const std::string& msg) {
  if (err && n) {
    std::strncpy(err, msg.c_str(), n - 1);
    err[n - 1] = '\0';
  }
}
}  // namespace

extern "C" {

__attribute__((visibility("default"))) void* quant_spm_load(const char* path, char* err, size_t errlen) {
  auto* h = new Handle;
  const auto st = h->sp.Load(path);
  if (!st.ok()) {
    set_err(err, errlen, st.ToString());
    delete h;
    return nullptr;
  }
  h->serialized = h->sp.serialized_model_proto();
  return h;
}

__attribute__((visibility("default"))) void quant_spm_free(void* h) { delete static_cast<Handle*>(h); }

__attribute__((visibility("default"))) int quant_spm_size(void* h) { return static_cast<Handle*>(h)->sp.GetPieceSize(); }

// Copies piece `id` into buf (NUL-terminated); returns its length.
__attribute__((visibility("default"))) size_t quant_spm_piece(void* h, int id, char* buf, size_t n) {
  const std::string& p = static_cast<Handle*>(h)->sp.IdToPiece(id);
  set_err(buf, n, p);
  return p.size();
}

__attribute__((visibility("default"))) float quant_spm_score(void* h, int id) { return static_cast<Handle*>(h)->sp.GetScore(id); }

// which: 0 bos, 1 eos, 2 unk.
__attribute__((visibility("default"))) int quant_spm_special(void* h, int which) {
  auto& sp = static_cast<Handle*>(h)->sp;
  return which == 0 ? sp.bos_id() : which == 1 ? sp.eos_id() : sp.unk_id();
}

__attribute__((visibility("default"))) const char* quant_spm_serialized(void* h, size_t* n) {
  auto* p = static_cast<Handle*>(h);
  *n = p->serialized.size();
  return p->serialized.data();
}

// Encodes text; *ids is malloc'ed (free with quant_spm_free_ids). Returns 0 on success.
__attribute__((visibility("default"))) int quant_spm_encode(void* h, const char* text, size_t len, int** ids, size_t* n,
                                                             char* err, size_t errlen) {
  std::vector<int> out;
  const auto st = static_cast<Handle*>(h)->sp.Encode(std::string_view(text, len), &out);
  if (!st.ok()) {
    set_err(err, errlen, st.ToString());
    return 1;
  }
  *n = out.size();
  *ids = static_cast<int*>(std::malloc(std::max<size_t>(1, out.size()) * sizeof(int)));
  std::memcpy(*ids, out.data(), out.size() * sizeof(int));
  return 0;
}

__attribute__((visibility("default"))) void quant_spm_free_ids(int* ids) { std::free(ids); }
}
