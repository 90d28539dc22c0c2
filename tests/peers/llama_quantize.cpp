// Quantizes a GGUF with llama.cpp's own llama_model_quantize, loaded at run time from the
// libllama.so that node-llama-cpp ships (no llama.h here: the fields of
// llama_model_quantize_params are set by offset). An importance matrix file is read by llama.cpp's
// own common_imatrix_load (libllama-common.so, next to libllama) and normalized as llama-quantize
// does (tools/quantize/quantize.cpp, load_imatrix). For tests: our quantizers must write the same
// bytes, and our imatrix files must be what llama.cpp reads.
// Usage: llama_quantize_shim LIBLLAMA IN.gguf OUT.gguf FTYPE OUTPUT_GGML_TYPE|-1 PURE(0|1) [IMATRIX]
#include <dlfcn.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

namespace {
// Bigger than any version of llama_model_quantize_params; returned through a hidden pointer
// (x86-64 SysV, structs over 16 bytes), so the callee writes only its own size.
struct Params {
  unsigned char bytes[1024];
};
using DefaultParams = Params (*)();
using Quantize = uint32_t (*)(const char*, const char*, const Params*);

// common/imatrix-loader.h of the same llama.cpp release.
struct common_imatrix_entry {
  std::vector<float> sums;
  std::vector<int64_t> counts;
};
struct common_imatrix {
  std::map<std::string, common_imatrix_entry> entries;
  std::vector<std::string> datasets;
  int32_t chunk_count = 0;
  int32_t chunk_size = 0;
  bool is_legacy = false;
  bool has_metadata = false;
};
using ImatrixLoad = bool (*)(const std::string&, common_imatrix&);

// include/llama.h: struct llama_model_imatrix_data, a list ended by a null name.
struct ImatrixData {
  const char* name;
  const float* data;
  size_t size;
};

// load_imatrix of tools/quantize: GGUF sums over counts (1 where a count is 0); legacy sums over ncall.
bool load_imatrix(void* common, const char* file, std::map<std::string, std::vector<float>>& out) {
  auto load = reinterpret_cast<ImatrixLoad>(
      dlsym(common, "_Z19common_imatrix_loadRKNSt7__cxx1112basic_stringIcSt11char_traitsIcESaIcEEER14common_imatrix"));
  if (!load) {
    std::fprintf(stderr, "libllama-common lacks common_imatrix_load\n");
    return false;
  }
  common_imatrix loaded;
  if (!load(file, loaded)) {
    std::fprintf(stderr, "common_imatrix_load failed on %s\n", file);
    return false;
  }
  if (!loaded.is_legacy && !loaded.has_metadata) {
    std::fprintf(stderr, "missing imatrix metadata in %s\n", file);
    return false;
  }
  for (const auto& [name, entry] : loaded.entries) {
    auto& e = out[name];
    e.resize(entry.sums.size());
    if (!loaded.is_legacy) {
      const int64_t ncounts = static_cast<int64_t>(entry.counts.size()), ne0 = static_cast<int64_t>(entry.sums.size()) / ncounts;
      for (int64_t j = 0; j < ncounts; ++j) {
        const float count = static_cast<float>(entry.counts[j]);
        for (int64_t i = 0; i < ne0; ++i) e[j * ne0 + i] = count > 0.0f ? entry.sums[j * ne0 + i] / count : 1;
      }
    } else {
      const int64_t ncall = entry.counts.empty() ? 0 : entry.counts[0];
      for (size_t i = 0; i < entry.sums.size(); ++i) e[i] = ncall > 0 ? entry.sums[i] / ncall : entry.sums[i];
    }
  }
  std::fprintf(stderr, "imatrix %s: %zu entries, %d chunks, %s format\n", file, out.size(), loaded.chunk_count,
               loaded.is_legacy ? "legacy" : "GGUF");
  return true;
}
}  // namespace

int main(int argc, char** argv) {
  if (argc < 7) {
    std::fprintf(stderr, "usage: %s LIBLLAMA IN OUT FTYPE OUTPUT_TYPE|-1 PURE [IMATRIX]\n", argv[0]);
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
  std::map<std::string, std::vector<float>> imatrix;
  std::vector<ImatrixData> list;
  if (argc > 7) {
    std::string common_path = argv[1];
    common_path = common_path.substr(0, common_path.rfind('/') + 1) + "libllama-common.so";
    void* common = dlopen(common_path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!common) {
      std::fprintf(stderr, "dlopen %s: %s\n", common_path.c_str(), dlerror());
      return 3;
    }
    if (!load_imatrix(common, argv[7], imatrix)) return 4;
    for (const auto& [name, v] : imatrix) list.push_back({name.c_str(), v.data(), v.size()});
    list.push_back({nullptr, nullptr, 0});
  }
  Params p = defaults();
  const int32_t nthread = 1, ftype = std::atoi(argv[4]), out_type = std::atoi(argv[5]);
  std::memcpy(p.bytes + 0, &nthread, 4);  // int32_t nthread
  std::memcpy(p.bytes + 4, &ftype, 4);    // enum llama_ftype ftype
  if (out_type >= 0) std::memcpy(p.bytes + 8, &out_type, 4);  // enum ggml_type output_tensor_type
  p.bytes[19] = std::atoi(argv[6]) != 0;  // bool pure: every tensor the ftype's type, no k-quant mixtures
  if (!list.empty()) {
    const ImatrixData* ptr = list.data();
    std::memcpy(p.bytes + 24, &ptr, sizeof ptr);  // const llama_model_imatrix_data* imatrix
  }
  const uint32_t rc = quantize(argv[2], argv[3], &p);
  if (rc != 0) std::fprintf(stderr, "llama_model_quantize returned %u\n", rc);
  return rc == 0 ? 0 : 1;
}
