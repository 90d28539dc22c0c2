// Quantizes a GGUF with llama.cpp's own llama_model_quantize, loaded at run time from the
// libllama.so that node-llama-cpp ships (no llama.h here: only the first, long-stable fields of
// llama_model_quantize_params are set). For tests: our quantizers must write the same bytes.
// Usage: llama_quantize_shim LIBLLAMA IN.gguf OUT.gguf FTYPE [OUTPUT_GGML_TYPE]
#include <dlfcn.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace {
// Bigger than any version of llama_model_quantize_params; returned through a hidden pointer
// (x86-64 SysV, structs over 16 bytes), so the callee writes only its own size.
struct Params {
  unsigned char bytes[1024];
};
using DefaultParams = Params (*)();
using Quantize = uint32_t (*)(const char*, const char*, const Params*);
}  // namespace

int main(int argc, char** argv) {
  if (argc < 5) {
    std::fprintf(stderr, "usage: %s LIBLLAMA IN OUT FTYPE [OUTPUT_TYPE]\n", argv[0]);
    return 2;
  }
  void* lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    std::fprintf(stderr, "dlopen %s: %s\n", argv[1], dlerror());
    return 3;
  }
  auto defaults = reinterpret_cast<DefaultParams>(dlsym(lib, "llama_model_quantize_default_params"));
  auto quantize = reinterpret_cast<Quantize>(dlsym(lib, "llama_model_quantize"));
  if (!defaults || !quantize) {
    std::fprintf(stderr, "libllama lacks llama_model_quantize\n");
    return 3;
  }
  Params p = defaults();
  const int32_t nthread = 1, ftype = std::atoi(argv[4]);
  std::memcpy(p.bytes + 0, &nthread, 4);  // int32_t nthread
  std::memcpy(p.bytes + 4, &ftype, 4);    // enum llama_ftype ftype
  if (argc > 5) {
    const int32_t out_type = std::atoi(argv[5]);
    std::memcpy(p.bytes + 8, &out_type, 4);  // enum ggml_type output_tensor_type
  }
  p.bytes[19] = 1;  // bool pure: every tensor the ftype's type, no k-quant mixtures
  const uint32_t rc = quantize(argv[2], argv[3], &p);
  if (rc != 0) std::fprintf(stderr, "llama_model_quantize returned %u\n", rc);
  return rc == 0 ? 0 : 1;
}
