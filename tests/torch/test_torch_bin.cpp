// pytorch_model.bin: LibTorch writes the files (torch::pickle_save, the format torch.save and
// torch.load share) and loads them back; our reader must see the same tensors, byte for byte,
// and a checkpoint saved that way must run exactly as its safetensors twin.
#include <torch/torch.h>

#include <fmt/format.h>

#include "../common.h"
#include "../synth.h"
#include "quant/formats/loader.h"
#include "quant/formats/torch_bin.h"
#include "quant/runtime.h"

using namespace quant;
namespace fs = std::filesystem;

namespace {

void save(const std::string& path, const c10::Dict<std::string, at::Tensor>& d) {
  const std::vector<char> bytes = torch::pickle_save(c10::IValue(d));
  qt::write_file(path, std::string(bytes.begin(), bytes.end()));
}

c10::Dict<std::string, at::Tensor> load_with_torch(const std::string& path) {
  const std::string s = qt::slurp(path);
  return c10::impl::toTypedDict<std::string, at::Tensor>(torch::pickle_load(std::vector<char>(s.begin(), s.end())).toGenericDict());
}

TType ttype_of(at::ScalarType s) {
  switch (s) {
    case at::kFloat: return TType::F32;
    case at::kHalf: return TType::F16;
    case at::kBFloat16: return TType::BF16;
    case at::kInt: return TType::I32;
    default: FAIL("unexpected dtype"); return TType::F32;
  }
}

// Every tensor LibTorch loads from `path` is in our reading, same dtype, shape and bytes.
void check_same(const std::string& path) {
  const TorchBinFile ours(path);
  const auto theirs = load_with_torch(path);
  REQUIRE(ours.tensors().size() == theirs.size());
  for (const auto& kv : theirs) {
    INFO(kv.key());
    const at::Tensor t = kv.value().contiguous();
    auto it = ours.tensors().find(kv.key());
    REQUIRE(it != ours.tensors().end());
    const SafeTensor& s = it->second;
    CHECK(s.dtype == ttype_of(t.scalar_type()));
    CHECK(s.shape == std::vector<int64_t>(t.sizes().begin(), t.sizes().end()));
    REQUIRE(s.nbytes == t.nbytes());
    CHECK(std::memcmp(s.data, t.data_ptr(), s.nbytes) == 0);
  }
}

}  // namespace

TEST_CASE("torch .bin: every tensor as LibTorch loads it (F32, F16, BF16, I32, views with offsets)", "[formats][torch_bin]") {
  qt::TempDir tmp;
  torch::manual_seed(3);
  c10::Dict<std::string, at::Tensor> d;
  d.insert("a.weight", torch::randn({17, 33}));
  d.insert("b.weight", torch::randn({8, 64}).to(torch::kHalf));
  d.insert("c.weight", torch::randn({5, 7}).to(torch::kBFloat16));
  d.insert("qweight", torch::randint(-1000000, 1000000, {4, 9}, torch::kInt));
  d.insert("bias", torch::randn({33}));
  d.insert("scalar", torch::tensor(2.5f));
  d.insert("empty", torch::empty({0, 4}));
  const auto base = torch::randn({10, 6});
  d.insert("rows_3_to_7", base.slice(0, 3, 7));  // a view: storage offset 18, whole storage saved
  d.insert("base", base);                        // shares the view's storage
  save(tmp / "pytorch_model.bin", d);
  check_same(tmp / "pytorch_model.bin");
}

TEST_CASE("torch .bin: a non-contiguous tensor is refused by name", "[formats][torch_bin]") {
  qt::TempDir tmp;
  c10::Dict<std::string, at::Tensor> d;
  d.insert("w.t", torch::randn({6, 4}).t());
  save(tmp / "t.bin", d);
  CHECK_THROWS_WITH(TorchBinFile(tmp / "t.bin"), Catch::Contains("t.bin") && Catch::Contains("w.t") && Catch::Contains("not contiguous"));
}

TEST_CASE("torch .bin: a checkpoint as pytorch_model.bin (single and sharded) runs as its safetensors twin", "[formats][torch_bin]") {
  qt::TempDir tmp;
  const qt::Synth s = qt::make_synth(/*tied=*/false, /*bias=*/true, 11);
  qt::write_hf(tmp / "st", s, TType::BF16);
  for (int shards : {1, 3}) {
    const std::string dir = tmp / fmt::format("bin{}", shards);
    fs::create_directories(dir);
    for (const char* f : {"config.json", "tokenizer.model"}) fs::copy_file(tmp / (std::string("st/") + f), dir + "/" + f);
    std::vector<c10::Dict<std::string, at::Tensor>> parts(static_cast<size_t>(shards));
    nlohmann::json index = {{"weight_map", nlohmann::json::object()}};
    size_t k = 0;
    for (const auto& [name, t] : s.tensors) {
      const size_t p = k++ % static_cast<size_t>(shards);
      auto tensor = torch::from_blob(const_cast<float*>(t.second.data()), t.first, torch::kFloat32).to(torch::kBFloat16);
      parts[p].insert(name, tensor);
      index["weight_map"][name] = shards == 1 ? "pytorch_model.bin" : fmt::format("pytorch_model-{:05d}-of-{:05d}.bin", p + 1, shards);
    }
    if (shards == 1) {
      save(dir + "/pytorch_model.bin", parts[0]);
    } else {
      for (int p = 0; p < shards; ++p)
        save(dir + fmt::format("/pytorch_model-{:05d}-of-{:05d}.bin", p + 1, shards), parts[static_cast<size_t>(p)]);
      qt::write_file(dir + "/pytorch_model.bin.index.json", index.dump());
    }
    const LoadedModel a = load_model(tmp / "st"), b = load_model(dir);
    CHECK(b.info.at("shards") == std::to_string(shards));
    const std::vector<int32_t> toks = {1, 450, 3030, 310, 278, 5, 17, 4000};
    std::vector<float> la, lb;
    LlamaRuntime(a.config, *a.weights).forward(toks, 0, la);
    LlamaRuntime(b.config, *b.weights).forward(toks, 0, lb);
    CHECK(la == lb);
  }
}
