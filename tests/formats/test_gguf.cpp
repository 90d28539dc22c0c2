// GGUF writer/reader round trip, llama.cpp's own vocab GGUF, and broken files.
#include "../common.h"
#include "quant/formats/gguf.h"

using namespace quant;

namespace {

// A small valid GGUF: a few keys and two tensors.
void write_small(const std::string& path) {
  GgufWriter w;
  w.set_str("general.architecture", "test");
  w.set_u32("general.alignment", 32);
  w.set_f32("x.f", 0.5f);
  w.set_bool("x.b", true);
  w.set_i32_array("x.ints", {1, -2, 3});
  w.set_str_array("x.strs", {"a", "", "ccc"});
  w.add_tensor("t.q", 2, 64, 2, TType::Q4_0);
  w.add_tensor("t.v", 1, 5, 1, TType::F32);
  std::vector<float> q(128), v = {1, 2, 3, 4, 5};
  for (int i = 0; i < 128; ++i) q[static_cast<size_t>(i)] = static_cast<float>(i % 17) - 8;
  w.write(path, [&](size_t i) {
    return i == 0 ? pack(quantize_ggml(TType::Q4_0, q.data(), 2, 64), TType::Q4_0) : pack_float(v.data(), 1, 5, TType::F32);
  });
}

// Offset of the first byte after the KV section (the tensor infos) in the small file.
size_t find(const std::string& hay, const std::string& needle) {
  const size_t p = hay.find(needle);
  REQUIRE(p != std::string::npos);
  return p;
}

}  // namespace

TEST_CASE("GGUF writer and reader round-trip keys and tensors", "[formats][gguf]") {
  qt::TempDir tmp;
  write_small(tmp / "a.gguf");
  GgufFile f(tmp / "a.gguf");
  CHECK(f.version() == 3);
  CHECK(f.file_size() % 32 == 0);  // padded after the last tensor too, as ggml writes
  CHECK(f.get_str("general.architecture") == "test");
  CHECK(f.get_num("x.f") == 0.5);
  CHECK(f.get_num("x.b") == 1);
  CHECK(f.find("x.ints")->nums == std::vector<double>{1, -2, 3});
  CHECK(f.find("x.strs")->strs == std::vector<std::string>{"a", "", "ccc"});
  REQUIRE(f.tensors().size() == 2);
  CHECK(f.tensors()[0].ne == std::vector<int64_t>{64, 2});
  CHECK(f.tensors()[0].type == TType::Q4_0);
  CHECK(f.tensors()[0].nbytes == 2 * 2 * 18);
  CHECK(f.tensors()[1].offset % 32 == 0);
  float v[5];
  dequantize_row(TType::F32, f.tensors()[1].data, v, 5);
  CHECK(v[4] == 5);
  CHECK_THROWS_WITH(f.get_str("missing.key"), Catch::Contains("missing key missing.key"));
  CHECK_THROWS_WITH(f.get_str("x.f"), Catch::Contains("x.f is not a string"));
}

TEST_CASE("llama.cpp's vocab-only GGUF reads", "[formats][gguf]") {
  REQUIRE_SHARED("models/ggml-vocab/ggml-vocab-llama-spm.gguf");
  GgufFile f(qt::shared("models/ggml-vocab/ggml-vocab-llama-spm.gguf"));
  CHECK(f.get_str("tokenizer.ggml.model") == "llama");
  CHECK(f.find("tokenizer.ggml.tokens")->strs.size() == 32000);
  CHECK(f.tensors().empty());
}

TEST_CASE("broken GGUF files fail with the file, the field and the offset", "[formats][gguf][bad-input]") {
  qt::TempDir tmp;
  write_small(tmp / "ok.gguf");
  const std::string good = qt::slurp(tmp / "ok.gguf");
  const std::string p = tmp / "bad.gguf";
  auto expect = [&](const std::string& bytes, const std::string& fragment) {
    qt::write_file(p, bytes);
    CAPTURE(fragment);
    CHECK_THROWS_WITH(GgufFile(p), Catch::Contains("bad.gguf") && Catch::Contains(fragment));
  };
  std::string b = good;
  b[0] = 'X';
  expect(b, "not a GGUF file");
  b = good;
  b[4] = 99;
  expect(b, "version 99");
  // Every truncation point fails cleanly (never a crash or an out-of-bounds read), up to the end of
  // the last tensor's data (t.v's 20 bytes; the 12 bytes of padding after it may be missing).
  for (size_t cut = 0; cut < good.size() - 12; cut += 7) {
    qt::write_file(p, good.substr(0, cut));
    CHECK_THROWS_AS(GgufFile(p), quant::Error);
  }
  // A string length far past the end.
  b = good;
  const size_t key = find(b, "general.architecture") - 8;
  const uint64_t huge = 1ull << 40;
  std::memcpy(&b[key], &huge, 8);
  expect(b, "exceeds the");
  // An unknown ggml type for tensor t.v (type field follows its 1 dim).
  b = good;
  const size_t tv = find(b, "t.v") + 3;
  const uint32_t bad_type = 77;
  std::memcpy(&b[tv + 4 + 8], &bad_type, 4);
  expect(b, "ggml type 77 is not supported");
  // A tensor offset past the data section.
  b = good;
  const uint64_t far = 1 << 20;
  std::memcpy(&b[tv + 4 + 8 + 4], &far, 8);
  expect(b, "past the end of the data section");
  // A misaligned offset.
  b = good;
  const uint64_t odd = 33;
  std::memcpy(&b[tv + 4 + 8 + 4], &odd, 8);
  expect(b, "not aligned");
  // A count that cannot fit.
  b = good;
  const uint64_t many = 1ull << 50;
  std::memcpy(&b[8], &many, 8);
  expect(b, "tensor count");
}
