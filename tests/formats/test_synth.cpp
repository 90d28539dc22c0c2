// quant synth's checkpoints: each real shape's config.json reads back as that shape, the weights
// load through the HF reader (single file and shards), and a seed gives the same bytes at any
// thread count.
#include <omp.h>

#include <catch2/catch.hpp>

#include "../common.h"
#include "quant/formats/loader.h"
#include "quant/formats/synth.h"

using namespace quant;

TEST_CASE("synth: every shape's config.json reads back as that shape", "[synth][formats]") {
  qt::TempDir tmp;
  for (const SynthShape& s : synth_shapes()) {
    INFO(s.name);
    const std::string path = tmp / (s.name + ".json");
    std::ofstream(path) << synth_hf_config(s).dump(2);
    const LlamaConfig c = parse_hf_config(path);
    CHECK(c.arch == s.cfg.arch);
    CHECK(c.dim == s.cfg.dim);
    CHECK(c.hidden == s.cfg.hidden);
    CHECK(c.n_layers == s.cfg.n_layers);
    CHECK(c.n_heads == s.cfg.n_heads);
    CHECK(c.n_kv_heads == s.cfg.n_kv_heads);
    CHECK(c.vocab == s.cfg.vocab);
    CHECK(c.tied_embeddings == s.cfg.tied_embeddings);
    CHECK(c.qkv_bias == s.cfg.qkv_bias);
    CHECK(c.sliding_window == s.cfg.sliding_window);
    CHECK(c.rope_freq_factors == s.cfg.rope_freq_factors);
  }
  CHECK_THROWS_WITH(synth_shape("llama-9"), Catch::Contains("unknown shape llama-9") && Catch::Contains("tinyllama-1.1b"));
}

TEST_CASE("synth: small checkpoints load, shard, and do not depend on the thread count", "[synth][formats]") {
  qt::TempDir tmp;
  SynthShape s = synth_shape("qwen2.5-0.5b");  // biases and tied embeddings
  s.cfg.dim = 64, s.cfg.hidden = 96, s.cfg.n_layers = 2, s.cfg.n_heads = 4, s.cfg.n_kv_heads = 2, s.cfg.vocab = 256;
  s.cfg.bos_id = 1, s.cfg.eos_id = 2;
  SynthOptions o;
  o.seed = 9;
  const int before = omp_get_max_threads();
  omp_set_num_threads(1);
  const int64_t bytes = write_synth_checkpoint(s, tmp / "one", o);
  omp_set_num_threads(3);
  write_synth_checkpoint(s, tmp / "three", o);
  omp_set_num_threads(before);
  CHECK(qt::slurp(tmp / "one/model.safetensors") == qt::slurp(tmp / "three/model.safetensors"));
  o.shard_mb = 0;  // one file
  o.seed = 10;
  CHECK(write_synth_checkpoint(s, tmp / "other", o) == bytes);
  CHECK(qt::slurp(tmp / "other/model.safetensors") != qt::slurp(tmp / "one/model.safetensors"));

  // Shards: a shard size below one tensor gives one file per tensor and an index the reader follows.
  s.cfg.vocab = 8192;  // token_embd of 8192 x 64 F16 = 1 MiB: the rest goes to a second shard of 1 MiB
  o.shard_mb = 1;
  o.tokenizer = qt::bundled_model();  // its tokenizer.model (8,192 pieces)
  write_synth_checkpoint(s, tmp / "sharded", o);
  CHECK(qt::fs::exists(tmp / "sharded/tokenizer.model"));
  CHECK(qt::fs::exists(tmp / "sharded/model.safetensors.index.json"));
  CHECK(checkpoint_files(tmp / "sharded").size() > 1);
  const LoadedModel m = load_hf(tmp / "sharded");
  CHECK(m.config.qkv_bias);
  CHECK(m.config.tied_embeddings);
  const std::vector<float> norm = m.weights->read_f32("blk.1.ffn_norm.weight");
  CHECK(norm[0] == 1.0f);  // norms are 1
  const std::vector<float> q = m.weights->read_f32("blk.0.attn_q.weight");
  double ss = 0;
  for (float v : q) ss += static_cast<double>(v) * v;
  CHECK(std::sqrt(ss / static_cast<double>(q.size())) == Approx(0.02).epsilon(0.05));  // the initializer's std
}
