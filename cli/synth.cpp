// quant synth: a random-weight Hugging Face checkpoint of a real model shape (formats/synth.h).
#include "quant/formats/synth.h"

#include <fmt/format.h>

#include <iostream>

#include "commands.h"
#include "progress.h"

namespace quant::cli {

CLI::App* add_synth_command(CLI::App& app, SynthArgs& a) {
  std::string names;
  for (const auto& s : synth_shapes()) names += (names.empty() ? "" : ", ") + s.name;
  auto* c = app.add_subcommand("synth", "write a random-weight Hugging Face checkpoint of a real model shape (" + names + ")");
  c->add_option("shape", a.shape, "model shape")->required();
  c->add_option("-o,--out", a.out, "output directory")->required();
  c->add_option("--dtype", a.dtype, "f16 | bf16 | f32")->check(CLI::IsMember({"f16", "bf16", "f32"}))->capture_default_str();
  c->add_option("--seed", a.seed, "random seed")->capture_default_str();
  c->add_option("--layers", a.layers, "decoder blocks (default: the shape's)")->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  c->add_option("--shard-mb", a.shard_mb, "shard size in MiB (0: one file)")->capture_default_str()->check(CLI::NonNegativeNumber);
  c->add_option("--tokenizer", a.tokenizer, "tokenizer.model, or a directory with tokenizer.model / tokenizer.json, to copy");
  c->add_flag("--header-only", a.header_only, "tensors as holes in sparse files: shapes, no data (for --dry-run plans)");
  c->add_flag("--json", a.json, "print one JSON object");
  c->add_flag("-q,--quiet", a.quiet, "no progress");
  return c;
}

int run_synth_cmd(const SynthArgs& a) {
  SynthShape s = synth_shape(a.shape);
  if (a.layers > 0) s.cfg.n_layers = a.layers;
  SynthOptions o;
  o.dtype = a.dtype == "f32" ? TType::F32 : a.dtype == "bf16" ? TType::BF16 : TType::F16;
  o.seed = a.seed;
  o.shard_mb = a.shard_mb;
  o.tokenizer = a.tokenizer;
  o.header_only = a.header_only;
  Progress prog("synth", a.quiet || a.json);
  o.progress = [&](int64_t done, int64_t total) { prog.update(done, total); };
  const int64_t bytes = write_synth_checkpoint(s, a.out, o);
  int64_t params = 0;
  for (const auto& t : llama_tensor_layout(s.cfg)) params += t.numel();
  if (a.json)
    std::cout << nlohmann::json{{"shape", s.name}, {"out", a.out}, {"layers", s.cfg.n_layers}, {"params", params}, {"bytes", bytes},
                                {"dtype", a.dtype}, {"header_only", a.header_only}}.dump(2)
              << "\n";
  else
    std::cout << fmt::format("{}: {} ({} layers, {:.3f} B parameters, {:.2f} GB {})\n", a.out, s.name, s.cfg.n_layers,
                             static_cast<double>(params) * 1e-9, static_cast<double>(bytes) * 1e-9, a.dtype);
  return 0;
}

}  // namespace quant::cli
