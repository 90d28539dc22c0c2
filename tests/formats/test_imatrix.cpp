// llama.cpp's importance matrix files: both layouts round-trip, and a broken or foreign file is
// refused with one line naming the file and the field, before anything is written.
#include <cmath>
#include <cstring>
#include <fstream>

#include "../common.h"
#include "quant/error.h"
#include "quant/formats/imatrix.h"

using namespace quant;

namespace {

Imatrix small_imatrix() {
  Imatrix im;
  im.datasets = {"kjv_train.txt"};
  im.chunk_count = 3;
  im.chunk_size = 256;
  im.entries["blk.0.attn_q.weight"] = {{1.5, 0.25, 9, 0}, 768};
  im.entries["blk.0.ffn_down.weight"] = {{3, 4, 5, 6, 7, 8}, 768};
  return im;
}

std::string bytes_of(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

void put_bytes(const std::string& path, const std::string& b) { std::ofstream(path, std::ios::binary) << b; }

std::vector<TensorDesc> model_of(int64_t q_cols, int64_t down_cols) {
  return {{"blk.0.attn_q.weight", 8, q_cols, 2, TType::F32}, {"blk.0.ffn_down.weight", 8, down_cols, 2, TType::F32}};
}

}  // namespace

TEST_CASE("imatrix: GGUF and legacy .dat round-trip to llama-quantize's importance", "[formats][imatrix]") {
  qt::TempDir tmp;
  const Imatrix im = small_imatrix();
  for (bool legacy : {false, true}) {
    CAPTURE(legacy);
    const std::string path = tmp / (legacy ? "im.dat" : "im.gguf");
    write_imatrix(im, path, legacy);
    const Imatrix back = read_imatrix(path);
    CHECK(back.chunk_count == 3);
    CHECK(back.datasets == im.datasets);
    REQUIRE(back.entries.size() == 2);
    const auto imp = imatrix_importance(back, model_of(4, 6), path);
    // Σx² / tokens, divided in float as llama-quantize does (legacy: stored ·ncall, read /ncall).
    const std::vector<float> q = imp.at("blk.0.attn_q.weight");
    for (size_t i = 0; i < 4; ++i) {
      const float want = static_cast<float>(im.entries.at("blk.0.attn_q.weight").sums[i]) / 768.f;
      CHECK(std::fabs(q[i] - want) <= 1e-6f * std::fabs(want));
    }
    if (!legacy) CHECK(back.chunk_size == 256);
  }
}

TEST_CASE("imatrix: broken and foreign files fail with one line naming file and field", "[formats][imatrix][bad-input]") {
  qt::TempDir tmp;
  write_imatrix(small_imatrix(), tmp / "im.gguf", false);
  write_imatrix(small_imatrix(), tmp / "im.dat", true);
  const std::string gguf = bytes_of(tmp / "im.gguf"), dat = bytes_of(tmp / "im.dat");
  auto fails = [&](const std::string& name, const std::string& content, const std::vector<std::string>& what) {
    CAPTURE(name);
    put_bytes(tmp / name, content);
    try {
      (void)imatrix_importance(read_imatrix(tmp / name), model_of(4, 6), tmp / name);
      FAIL("accepted " << name);
    } catch (const Error& e) {
      const std::string msg = e.what();
      CHECK(msg.find(name) != std::string::npos);
      for (const auto& w : what) CHECK(msg.find(w) != std::string::npos);
    }
  };
  fails("trunc.gguf", gguf.substr(0, gguf.size() / 2), {});
  fails("trunc.dat", dat.substr(0, 40), {"blk.0.attn_q.weight", "cannot fit"});
  fails("empty.dat", "", {"truncated"});
  // A value NaN, and a zero count (the legacy ncall): llama-quantize would quantize on garbage.
  std::string nan = dat;
  const float qnan = std::nanf("");
  // entry 1 ("blk.0.attn_q.weight", 19 bytes): 4 + 4 + 19 + 4 + 4 bytes before its first value.
  std::memcpy(nan.data() + 4 + 4 + 19 + 8, &qnan, 4);
  fails("nan.dat", nan, {"blk.0.attn_q.weight", "not a finite"});
  std::string zero = dat;
  const int32_t z = 0;
  std::memcpy(zero.data() + 4 + 4 + 19, &z, 4);
  fails("zero.dat", zero, {"count is 0"});
  // Another model: a name it lacks, or another width.
  Imatrix other = small_imatrix();
  other.entries["blk.9.attn_q.weight"] = {{1, 2, 3, 4}, 10};
  write_imatrix(other, tmp / "other.gguf", false);
  try {
    (void)imatrix_importance(read_imatrix(tmp / "other.gguf"), model_of(4, 6), tmp / "other.gguf");
    FAIL("accepted another model's names");
  } catch (const Error& e) {
    CHECK(std::string(e.what()).find("blk.9.attn_q.weight") != std::string::npos);
  }
  try {
    (void)imatrix_importance(read_imatrix(tmp / "im.gguf"), model_of(8, 6), tmp / "im.gguf");
    FAIL("accepted another width");
  } catch (const Error& e) {
    CHECK(std::string(e.what()).find("8 columns") != std::string::npos);
  }
  // Through the CLI: one error line, exit 1, no output file.
  put_bytes(tmp / "bad.dat", dat.substr(0, 40));
  const auto r = qt::run(qt::quant_bin() + " convert " + qt::bundled_model() + " --qtype Q4_K_M --imatrix " + (tmp / "bad.dat") +
                         " --quiet -o " + (tmp / "out.gguf"));
  INFO(r.out);
  CHECK(r.code == 1);
  CHECK(r.out.rfind("error: ", 0) == 0);
  CHECK(r.out.find("bad.dat") != std::string::npos);
  CHECK_FALSE(std::filesystem::exists(tmp / "out.gguf"));
  const auto r2 = qt::run(qt::quant_bin() + " convert " + qt::bundled_model() + " --qtype Q4_K_M --imatrix " + (tmp / "im.gguf") +
                          " --quiet -o " + (tmp / "out.gguf"));
  CHECK(r2.code == 1);
  CHECK(r2.out.find("has 4 values but the tensor has 256 columns") != std::string::npos);
  CHECK_FALSE(std::filesystem::exists(tmp / "out.gguf"));
}
