// Runs llama.cpp on GGUF files and reports, for every position of a token sequence, llama.cpp's
// log-probability of the next token and its top-1 token, plus llama.cpp's own tokenization of a
// text: the libllama.so that node-llama-cpp ships, loaded at run time (no llama.h here: the
// leading sizes of llama_context_params are set by offset, the thread counts through
// llama_set_n_threads, as bench/llama_ppl.cpp does). The same answers as node-llama-cpp's
// controlledEvaluate (llama_logprobs.mjs, which built a sorted map of the whole vocabulary per
// position: minutes for a 128k vocabulary), read straight from llama_get_logits_ith.
// Usage: llama_logprobs_shim LIBLLAMA REQUEST OUT
//   REQUEST: {"models": [path...], "sequences": [[id...]...], "text": "..."}
//   OUT:     {"models": [{"model", "error"?, "tokenized", "logp": [...], "top1": [...]}]}
// logp/top1 concatenate the positions 0..n-2 of every sequence, each run from an empty cache.
#include <dlfcn.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace {

// Bigger than any version of llama_model_params / llama_context_params. Returned through a
// hidden pointer (x86-64 SysV, structs over 16 bytes) and passed by value in memory: the callee
// reads and writes only its own prefix of it.
struct Params {
  unsigned char bytes[1024];
};
// include/llama.h: struct llama_batch (unchanged since 2023).
struct Batch {
  int32_t n_tokens;
  int32_t* token;
  float* embd;
  int32_t* pos;
  int32_t* n_seq_id;
  int32_t** seq_id;
  int8_t* logits;
};

struct Api {
  void (*backend_init)();
  void (*log_set)(void (*)(int, const char*, void*), void*);
  Params (*model_default_params)();
  Params (*context_default_params)();
  void* (*model_load_from_file)(const char*, Params);
  void (*model_free)(void*);
  const void* (*model_get_vocab)(const void*);
  int32_t (*vocab_n_tokens)(const void*);
  int32_t (*tokenize)(const void*, const char*, int32_t, int32_t*, int32_t, bool, bool);
  void* (*init_from_model)(void*, Params);
  void (*free)(void*);
  void (*set_n_threads)(void*, int32_t, int32_t);
  Batch (*batch_init)(int32_t, int32_t, int32_t);
  void (*batch_free)(Batch);
  int32_t (*decode)(void*, Batch);
  float* (*get_logits_ith)(void*, int32_t);
  void* (*get_memory)(void*);
  void (*memory_clear)(void*, bool);
};

template <class F>
bool bind(void* lib, const char* name, F& f) {
  f = reinterpret_cast<F>(dlsym(lib, name));
  if (!f) std::fprintf(stderr, "libllama lacks %s\n", name);
  return f != nullptr;
}

bool load_api(void* lib, Api& a) {
  return bind(lib, "llama_backend_init", a.backend_init) && bind(lib, "llama_log_set", a.log_set) &&
         bind(lib, "llama_model_default_params", a.model_default_params) &&
         bind(lib, "llama_context_default_params", a.context_default_params) &&
         bind(lib, "llama_model_load_from_file", a.model_load_from_file) && bind(lib, "llama_model_free", a.model_free) &&
         bind(lib, "llama_model_get_vocab", a.model_get_vocab) && bind(lib, "llama_vocab_n_tokens", a.vocab_n_tokens) &&
         bind(lib, "llama_tokenize", a.tokenize) && bind(lib, "llama_init_from_model", a.init_from_model) &&
         bind(lib, "llama_free", a.free) && bind(lib, "llama_set_n_threads", a.set_n_threads) &&
         bind(lib, "llama_batch_init", a.batch_init) && bind(lib, "llama_batch_free", a.batch_free) &&
         bind(lib, "llama_decode", a.decode) && bind(lib, "llama_get_logits_ith", a.get_logits_ith) &&
         bind(lib, "llama_get_memory", a.get_memory) && bind(lib, "llama_memory_clear", a.memory_clear);
}

// llama.cpp's errors while loading a model: what a rejected file reports.
std::string g_errors;
void on_log(int level, const char* text, void*) {
  if (level == 4 /* GGML_LOG_LEVEL_ERROR */) g_errors += text;
}

// common_tokenize(vocab, text, add_special = false, parse_special = false), as node-llama-cpp's
// model.tokenize(text).
std::vector<int32_t> tokenize(const Api& a, const void* vocab, const std::string& text) {
  std::vector<int32_t> ids(text.size() + 2);
  int32_t n = a.tokenize(vocab, text.data(), static_cast<int32_t>(text.size()), ids.data(), static_cast<int32_t>(ids.size()), false, false);
  if (n < 0) {
    ids.resize(static_cast<size_t>(-n));
    n = a.tokenize(vocab, text.data(), static_cast<int32_t>(text.size()), ids.data(), static_cast<int32_t>(ids.size()), false, false);
  }
  ids.resize(static_cast<size_t>(std::max(n, 0)));
  return ids;
}

nlohmann::json run_model(const Api& a, const std::string& path, const nlohmann::json& req) {
  nlohmann::json result = {{"model", path}};
  g_errors.clear();
  void* model = a.model_load_from_file(path.c_str(), a.model_default_params());
  if (!model) {
    result["error"] = g_errors.empty() ? std::string("llama_model_load_from_file failed") : g_errors;
    return result;
  }
  const void* vocab = a.model_get_vocab(model);
  const int32_t V = a.vocab_n_tokens(vocab);
  if (req.contains("text")) result["tokenized"] = tokenize(a, vocab, req["text"].get<std::string>());
  const auto seqs = req["sequences"].get<std::vector<std::vector<int32_t>>>();
  size_t longest = 0;
  for (const auto& s : seqs) longest = std::max(longest, s.size());
  const uint32_t n = static_cast<uint32_t>(std::max<size_t>(longest, 512));
  // llama_context_params starts n_ctx, n_batch, n_ubatch (u32) in every release; the thread counts
  // moved between releases, so they are set by llama_set_n_threads (as bench/llama_ppl.cpp does).
  Params cp = a.context_default_params();
  const uint32_t sizes[3] = {n, n, n};
  std::memcpy(cp.bytes, sizes, sizeof sizes);
  void* ctx = a.init_from_model(model, cp);
  if (!ctx) {
    result["error"] = "llama_init_from_model failed: " + g_errors;
    a.model_free(model);
    return result;
  }
  a.set_n_threads(ctx, 1, 1);  // node-llama-cpp's threads: 1
  std::vector<double> logp;
  std::vector<int32_t> top1;
  Batch b = a.batch_init(static_cast<int32_t>(n), 0, 1);
  for (const auto& s : seqs) {
    a.memory_clear(a.get_memory(ctx), true);
    b.n_tokens = static_cast<int32_t>(s.size());
    for (size_t i = 0; i < s.size(); ++i) {
      b.token[i] = s[i];
      b.pos[i] = static_cast<int32_t>(i);
      b.n_seq_id[i] = 1;
      b.seq_id[i][0] = 0;
      b.logits[i] = i + 1 < s.size();
    }
    if (a.decode(ctx, b) != 0) {
      result["error"] = "llama_decode failed: " + g_errors;
      break;
    }
    for (size_t i = 0; i + 1 < s.size(); ++i) {
      const float* row = a.get_logits_ith(ctx, static_cast<int32_t>(i));
      const float* best = std::max_element(row, row + V);
      double sum = 0;
      for (int32_t v = 0; v < V; ++v) sum += std::exp(static_cast<double>(row[v]) - *best);
      logp.push_back(static_cast<double>(row[s[i + 1]]) - (*best + std::log(sum)));
      top1.push_back(static_cast<int32_t>(best - row));
    }
  }
  a.batch_free(b);
  a.free(ctx);
  a.model_free(model);
  result["logp"] = logp;
  result["top1"] = top1;
  return result;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s LIBLLAMA REQUEST OUT\n", argv[0]);
    return 2;
  }
  void* lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    std::fprintf(stderr, "dlopen %s: %s\n", argv[1], dlerror());
    return 3;
  }
  Api a{};
  if (!load_api(lib, a)) return 3;
  // The CPU backends (one per ISA level) sit beside libllama in libggml-cpu-*.so: ggml picks the
  // best this CPU runs, as node-llama-cpp does (ggml_backend_load_all_from_path).
  const std::string dir = std::string(argv[1]).substr(0, std::string(argv[1]).rfind('/') + 1);
  void (*load_all)(const char*) = nullptr;
  for (const auto& e : std::filesystem::directory_iterator(dir.empty() ? "." : dir)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("libggml.", 0) == 0 && name.find(".so") != std::string::npos)
      if (void* ggml = dlopen(e.path().c_str(), RTLD_NOW | RTLD_LOCAL)) bind(ggml, "ggml_backend_load_all_from_path", load_all);
  }
  if (!load_all) {
    std::fprintf(stderr, "no libggml.*.so with ggml_backend_load_all_from_path beside %s\n", argv[1]);
    return 3;
  }
  load_all(dir.empty() ? "." : dir.c_str());
  a.log_set(on_log, nullptr);
  a.backend_init();
  nlohmann::json req;
  try {
    req = nlohmann::json::parse(std::ifstream(argv[2]));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", argv[2], e.what());
    return 2;
  }
  nlohmann::json out = {{"models", nlohmann::json::array()}};
  for (const auto& m : req["models"]) out["models"].push_back(run_model(a, m.get<std::string>(), req));
  std::ofstream(argv[3]) << out.dump();
  return 0;
}
