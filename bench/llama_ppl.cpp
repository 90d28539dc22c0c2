// llama.cpp's perplexity, timed: the loop of llama-perplexity (tools/perplexity) over libllama
// from node-llama-cpp, loaded at run time (no llama.h here: the few structs it needs are declared
// below, the rest of the parameters set by offset from llama.cpp's defaults). Each window of CTX
// tokens starts from an empty cache with its first token replaced by BOS, all CTX logits are
// computed in one batch, and positions CTX/2 .. CTX-2 are scored. Prints one JSON line:
//   {"ppl", "chunks", "tokens", "seconds", "tokens_per_s", "threads", "backend"}
// Usage: bench_llama_ppl LIBLLAMA_DIR MODEL.gguf TEXT CTX CHUNKS THREADS [CPU_VARIANT]
//   CPU_VARIANT: a libggml-cpu-*.so name part (haswell = AVX2, zen4, ...); default: ggml's pick.
#include <dlfcn.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace {

struct Opaque {  // bigger than llama_model_params / llama_context_params of any release
  unsigned char bytes[1024];
};
struct Batch {  // include/llama.h: struct llama_batch
  int32_t n_tokens;
  int32_t* token;
  float* embd;
  int32_t* pos;
  int32_t* n_seq_id;
  int32_t** seq_id;
  int8_t* logits;
};

template <typename F>
F sym(void* lib, const char* name) {
  void* p = dlsym(lib, name);
  if (!p) {
    std::fprintf(stderr, "libllama lacks %s\n", name);
    std::exit(2);
  }
  return reinterpret_cast<F>(p);
}

void quiet_log(int, const char*, void*) {}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 7) {
    std::fprintf(stderr, "usage: %s LIBLLAMA_DIR MODEL.gguf TEXT CTX CHUNKS THREADS [CPU_VARIANT]\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  const int ctx_len = std::atoi(argv[4]), chunks_max = std::atoi(argv[5]), threads = std::atoi(argv[6]);
  void* ggml = dlopen((dir + "/libggml.v0.5.0.so").c_str(), RTLD_NOW | RTLD_GLOBAL);
  void* lib = dlopen((dir + "/libllama.v0.5.0.so").c_str(), RTLD_NOW | RTLD_GLOBAL);
  if (!ggml || !lib) {
    std::fprintf(stderr, "cannot load libllama from %s: %s\n", dir.c_str(), dlerror());
    return 2;
  }
  std::string backend = "auto";
  if (argc > 7) {
    backend = argv[7];
    const std::string so = dir + "/libggml-cpu-" + backend + ".so";
    if (!sym<void* (*)(const char*)>(ggml, "ggml_backend_load")(so.c_str())) {
      std::fprintf(stderr, "cannot load %s\n", so.c_str());
      return 2;
    }
  } else {
    sym<void (*)(const char*)>(ggml, "ggml_backend_load_all_from_path")(dir.c_str());
  }
  sym<void (*)(void (*)(int, const char*, void*), void*)>(lib, "llama_log_set")(quiet_log, nullptr);
  sym<void (*)()>(lib, "llama_backend_init")();
  Opaque mp = sym<Opaque (*)()>(lib, "llama_model_default_params")();
  void* model = sym<void* (*)(const char*, Opaque)>(lib, "llama_model_load_from_file")(argv[2], mp);
  if (!model) {
    std::fprintf(stderr, "llama.cpp cannot load %s\n", argv[2]);
    return 1;
  }
  const void* vocab = sym<const void* (*)(const void*)>(lib, "llama_model_get_vocab")(model);
  const int n_vocab = sym<int32_t (*)(const void*)>(lib, "llama_vocab_n_tokens")(vocab);
  const int32_t bos = sym<int32_t (*)(const void*)>(lib, "llama_vocab_bos")(vocab);

  std::ifstream in(argv[3], std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string text = ss.str();
  auto tokenize = sym<int32_t (*)(const void*, const char*, int32_t, int32_t*, int32_t, bool, bool)>(lib, "llama_tokenize");
  std::vector<int32_t> tokens(text.size() + 16);
  const int32_t n_tok = tokenize(vocab, text.data(), static_cast<int32_t>(text.size()), tokens.data(),
                                 static_cast<int32_t>(tokens.size()), true, false);
  if (n_tok < 0) return 1;
  tokens.resize(static_cast<size_t>(n_tok));
  int chunks = n_tok / ctx_len;
  if (chunks_max > 0 && chunks_max < chunks) chunks = chunks_max;

  // llama_context_params starts n_ctx, n_batch, n_ubatch, n_seq_max (u32); the thread counts
  // moved between releases, so they are set by llama_set_n_threads below.
  Opaque cp = sym<Opaque (*)()>(lib, "llama_context_default_params")();
  uint32_t u[4] = {static_cast<uint32_t>(ctx_len), static_cast<uint32_t>(ctx_len), static_cast<uint32_t>(ctx_len), 1};
  std::memcpy(cp.bytes, u, sizeof u);
  void* ctx = sym<void* (*)(void*, Opaque)>(lib, "llama_init_from_model")(model, cp);
  if (!ctx) return 1;
  sym<void (*)(void*, int32_t, int32_t)>(lib, "llama_set_n_threads")(ctx, threads, threads);
  Batch batch = sym<Batch (*)(int32_t, int32_t, int32_t)>(lib, "llama_batch_init")(ctx_len, 0, 1);
  auto decode = sym<int32_t (*)(void*, Batch)>(lib, "llama_decode");
  auto logits_ith = sym<float* (*)(void*, int32_t)>(lib, "llama_get_logits_ith");
  auto memory = sym<void* (*)(void*)>(lib, "llama_get_memory");
  auto clear = sym<void (*)(void*, bool)>(lib, "llama_memory_clear");

  double nll = 0, seconds = 0;
  int64_t scored = 0;
  const int first = ctx_len / 2;
  for (int c = 0; c < chunks; ++c) {
    const auto t0 = std::chrono::steady_clock::now();
    clear(memory(ctx), true);
    batch.n_tokens = ctx_len;
    for (int i = 0; i < ctx_len; ++i) {
      batch.token[i] = i == 0 ? bos : tokens[static_cast<size_t>(c * ctx_len + i)];
      batch.pos[i] = i;
      batch.n_seq_id[i] = 1;
      batch.seq_id[i][0] = 0;
      batch.logits[i] = 1;
    }
    if (decode(ctx, batch) != 0) {
      std::fprintf(stderr, "llama_decode failed\n");
      return 1;
    }
    for (int i = first; i < ctx_len - 1; ++i) {
      const float* l = logits_ith(ctx, i);
      float mx = l[0];
      for (int v = 1; v < n_vocab; ++v) mx = std::max(mx, l[v]);
      double s = 0;
      for (int v = 0; v < n_vocab; ++v) s += std::exp(static_cast<double>(l[v] - mx));
      nll += -(static_cast<double>(l[tokens[static_cast<size_t>(c * ctx_len + i + 1)]] - mx) - std::log(s));
      ++scored;
    }
    seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  const double tokens_eval = static_cast<double>(chunks) * ctx_len;
  std::printf("{\"ppl\": %.6f, \"chunks\": %d, \"tokens\": %.0f, \"seconds\": %.3f, \"tokens_per_s\": %.2f, \"threads\": %d, "
              "\"backend\": \"%s\"}\n",
              std::exp(nll / static_cast<double>(scored)), chunks, tokens_eval, seconds, tokens_eval / seconds, threads,
              backend.c_str());
  return 0;
}
