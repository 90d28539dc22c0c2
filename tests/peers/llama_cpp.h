// Runs GGUF files through the real llama.cpp (libllama of node-llama-cpp from npm) and compares its
// next-token log-probabilities with our runtime's on the same files.
#pragma once

#include <algorithm>
#include <cstring>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "../common.h"
#include "quant/formats/gguf.h"
#include "quant/formats/loader.h"
#include "quant/runtime.h"

namespace qt {

struct PeerAgreement {
  std::string file;
  std::string error;       // llama.cpp's reason when it rejected the file
  int64_t positions = 0;
  double top1 = 0;         // share of positions where llama.cpp's argmax equals ours
  double mean_abs_dlogp = 0;
  // The same against our runtime with llama.cpp's CPU arithmetic for quantized weights:
  // activations rounded to int8 in blocks of 32 (its Q8_0 / Q8_1) before every quantized dot.
  double top1_q8act = 0, mean_abs_dlogp_q8act = 0;
  std::vector<int32_t> tokenized;  // llama.cpp's tokenization of the text (no BOS)
};

// Installs node-llama-cpp into build/peers/llama. False (with a WARN) only where npm is missing.
inline bool install_llama_cpp() {
  const RunResult r = run("bash " + repo("tests/peers/install.sh") + " " + QUANT_BUILD_DIR + " llama");
  if (r.code == 3) {
    WARN("skipped: npm is not installed, llama.cpp cannot be fetched");
    return false;
  }
  INFO(r.out);
  REQUIRE(r.code == 0);
  return true;
}

// Our runtime's log p(next) and argmax at positions 0..n-2 of each sequence.
inline void our_logprobs(const std::string& gguf, const std::vector<std::vector<int32_t>>& seqs, std::vector<double>& logp,
                         std::vector<int32_t>& top1, const quant::RuntimeOptions& opts = {}) {
  quant::LoadedModel m = quant::load_model(gguf);
  quant::LlamaRuntime rt(m.config, *m.weights, opts);
  const int64_t V = m.config.vocab;
  std::vector<float> logits;
  for (const auto& s : seqs) {
    rt.forward(s, 0, logits);
    for (size_t i = 0; i + 1 < s.size(); ++i) {
      const float* row = logits.data() + i * V;
      double mx = row[0], sum = 0;
      for (int64_t v = 0; v < V; ++v) mx = std::max(mx, static_cast<double>(row[v]));
      for (int64_t v = 0; v < V; ++v) sum += std::exp(row[v] - mx);
      logp.push_back(row[s[i + 1]] - mx - std::log(sum));
      top1.push_back(static_cast<int32_t>(std::max_element(row, row + V) - row));
    }
  }
}

inline std::string libllama() {
  return std::string(QUANT_BUILD_DIR) + "/peers/llama/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64/libllama.v0.5.0.so";
}

// q8act: also compare against our runtime with int8 block activations (top1_q8act).
inline std::vector<PeerAgreement> compare_with_llama_cpp(const std::vector<std::string>& files,
                                                         const std::vector<std::vector<int32_t>>& seqs,
                                                         const std::string& text, bool q8act = false) {
  TempDir tmp;
  nlohmann::json req = {{"models", files}, {"sequences", seqs}, {"text", text}};
  write_file(tmp / "req.json", req.dump());
  const std::string cmd = std::string(QUANT_BIN_DIR) + "/llama_logprobs_shim " + libllama() + " " + (tmp / "req.json") + " " +
                          (tmp / "out.json");
  const RunResult r = run(cmd);
  INFO(cmd << "\n" << r.out);
  REQUIRE(r.code == 0);
  const auto out = nlohmann::json::parse(slurp(tmp / "out.json"));
  std::vector<PeerAgreement> res;
  for (size_t k = 0; k < files.size(); ++k) {
    const auto& e = out["models"][k];
    PeerAgreement a;
    a.file = files[k];
    if (e.contains("error")) {
      a.error = e["error"].get<std::string>();
      res.push_back(a);
      continue;
    }
    a.tokenized = e["tokenized"].get<std::vector<int32_t>>();
    const auto theirs_lp = e["logp"].get<std::vector<double>>();
    const auto theirs_top = e["top1"].get<std::vector<int32_t>>();
    std::vector<double> lp;
    std::vector<int32_t> top;
    our_logprobs(files[k], seqs, lp, top);
    REQUIRE(lp.size() == theirs_lp.size());
    a.positions = static_cast<int64_t>(lp.size());
    int64_t agree = 0;
    double d = 0;
    for (size_t i = 0; i < lp.size(); ++i) {
      agree += top[i] == theirs_top[i];
      d += std::fabs(lp[i] - theirs_lp[i]);
    }
    a.top1 = static_cast<double>(agree) / static_cast<double>(lp.size());
    a.mean_abs_dlogp = d / static_cast<double>(lp.size());
    if (!q8act) {
      res.push_back(a);
      continue;
    }
    quant::RuntimeOptions q8;
    q8.act_bits = 8;
    q8.act_quant = quant::ActQuant::PerBlock;
    lp.clear();
    top.clear();
    our_logprobs(files[k], seqs, lp, top, q8);
    agree = 0;
    d = 0;
    for (size_t i = 0; i < lp.size(); ++i) {
      agree += top[i] == theirs_top[i];
      d += std::fabs(lp[i] - theirs_lp[i]);
    }
    a.top1_q8act = static_cast<double>(agree) / static_cast<double>(lp.size());
    a.mean_abs_dlogp_q8act = d / static_cast<double>(lp.size());
    res.push_back(a);
  }
  return res;
}

// Two BOS-led 512-token windows of kjv_heldout (1,022 scored positions).
inline std::vector<std::vector<int32_t>> heldout_seqs() {
  quant::LoadedModel m = quant::load_model(bundled_model());
  std::ifstream in(repo("data/kjv/kjv_heldout.txt"));
  const std::string text((std::istreambuf_iterator<char>(in)), {});
  const auto tokens = m.tokenizer->encode(text, true);
  std::vector<std::vector<int32_t>> seqs;
  for (int w = 0; w < 2; ++w) {
    seqs.emplace_back(tokens.begin() + w * 512, tokens.begin() + (w + 1) * 512);
    seqs.back()[0] = m.config.bos_id;
  }
  return seqs;
}

// llama.cpp loads every file and agrees with our runtime on top-1 at >= min_top1 of the positions.
inline void check_llama_agreement(const std::vector<std::string>& names, const std::vector<std::string>& files, double min_top1) {
  const auto res = compare_with_llama_cpp(files, heldout_seqs(), "");
  for (size_t i = 0; i < files.size(); ++i) {
    INFO(names[i] << ": " << res[i].error);
    REQUIRE(res[i].error.empty());
    std::cout << "llama.cpp vs quant on " << names[i] << ": " << res[i].positions << " positions, top-1 agreement "
              << 100 * res[i].top1 << "%, mean |dlogp| " << res[i].mean_abs_dlogp << "\n";
    CHECK(res[i].positions >= 512);
    CHECK(res[i].top1 >= min_top1);
  }
}

// llama.cpp's quantizer on `in`: llama_ftype, output.weight's ggml type (-1: its own rule), pure.
inline void llama_quantize(const std::string& in, const std::string& out, int ftype, int out_type, bool pure,
                    const std::string& imatrix = "") {
  const auto r = qt::run(std::string(QUANT_BIN_DIR) + "/llama_quantize_shim " + libllama() + " " + in + " " + out + " " +
                         std::to_string(ftype) + " " + std::to_string(out_type) + (pure ? " 1" : " 0") +
                         (imatrix.empty() ? "" : " " + imatrix));
  INFO(r.out);
  REQUIRE(r.code == 0);
}

// Same tensors, types and bytes; returns how many tensors were compared.
inline int64_t require_same_tensors(const std::string& theirs, const std::string& ours) {
  quant::GgufFile a(theirs), b(ours);
  REQUIRE(a.tensors().size() == b.tensors().size());
  int64_t same = 0;
  for (const auto& t : a.tensors()) {
    const auto it = std::find_if(b.tensors().begin(), b.tensors().end(), [&](const auto& u) { return u.name == t.name; });
    REQUIRE(it != b.tensors().end());
    CAPTURE(t.name);
    REQUIRE(quant::ttype_name(it->type) == quant::ttype_name(t.type));
    REQUIRE(it->nbytes == t.nbytes);
    const bool eq = std::memcmp(it->data, t.data, t.nbytes) == 0;
    CHECK(eq);
    same += eq;
  }
  return same;
}

}  // namespace qt
