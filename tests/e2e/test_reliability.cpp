// Outputs that never replace inputs, temporaries that never outlive a run (SIGTERM, SIGKILL, a
// full disk), formats recognised by their magic, and hostile headers or weights refused early.
#include <fmt/format.h>

#include <chrono>
#include <iostream>

#include <nlohmann/json.hpp>

#include "../common.h"
#include "../synth.h"

namespace {

std::string q() { return qt::quant_bin(); }
std::string heldout() { return qt::repo("data/kjv/kjv_heldout.txt"); }

using qt::expect_error;

// Names in `dir` that contain ".tmp".
std::vector<std::string> temporaries(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : qt::fs::directory_iterator(dir))
    if (e.path().filename().string().find(".tmp") != std::string::npos) out.push_back(e.path().filename().string());
  return out;
}

// A GPTQ convert to `out`, killed with `sig` as soon as its temporary appears; returns the shell's report.
qt::RunResult kill_convert(const std::string& dir, const std::string& out, const char* sig) {
  const std::string cmd = fmt::format(
      "bash -c '{} convert {} --method gptq --bits 4 --group-size 128 --calib {} --nsamples 16 --seqlen 256 -o {} --quiet & p=$!; "
      "for i in $(seq 600); do ls {} | grep -q \"$(basename {}).tmp\" && break; sleep 0.02; done; kill -{} $p; wait $p; echo rc=$?'",
      q(), qt::bundled_model(), heldout(), out, dir, out, sig);
  return qt::run(cmd);
}

}  // namespace

TEST_CASE("outputs never replace an input: the same file, a hard link, the model's own files", "[cli][bad-input][reliability]") {
  qt::TempDir tmp;
  const std::string gguf = tmp / "m.gguf";
  REQUIRE(qt::run(fmt::format("{} convert {} --qtype Q8_0 -o {} --quiet", q(), qt::bundled_model(), gguf)).code == 0);
  const std::string before = qt::slurp(gguf);
  expect_error(qt::run(fmt::format("{} convert {} --qtype Q4_0 -o {}", q(), gguf, gguf)), {"m.gguf", "is an input of this run"});
  qt::fs::create_hard_link(gguf, tmp / "link.gguf");
  expect_error(qt::run(fmt::format("{} convert {} --qtype Q4_0 -o {}", q(), gguf, tmp / "link.gguf")), {"link.gguf", "is an input"});
  CHECK(qt::slurp(gguf) == before);
  // A checkpoint directory: its weights are not replaced by GGUF bytes under their own name.
  const std::string dir = tmp / "hf";
  qt::fs::copy(qt::bundled_model(), dir);
  const std::string st = qt::slurp(dir + "/model.safetensors");
  expect_error(qt::run(fmt::format("{} convert {} --qtype Q4_0 -o {}/model.safetensors", q(), dir, dir)), {"model.safetensors", "name it .gguf"});
  expect_error(qt::run(fmt::format("{} convert {} --qtype Q4_0 --format gguf -o {}/tokenizer.model", q(), dir, dir)), {"name it .gguf"});
  CHECK(qt::slurp(dir + "/model.safetensors") == st);
  // The calibration text is an input too.
  qt::fs::copy_file(heldout(), tmp / "calib.txt");
  expect_error(qt::run(fmt::format("{} calibrate {} --calib {} --nsamples 2 --seqlen 64 --imatrix {} --quiet", q(), qt::bundled_model(), tmp / "calib.txt",
                                   tmp / "calib.txt")),
               {"calib.txt", "is an input of this run"});
  CHECK(qt::slurp(tmp / "calib.txt") == qt::slurp(heldout()));
  CHECK(temporaries(tmp.path.string()).empty());
}

TEST_CASE("a convert killed by SIGTERM leaves no temporary and the old file, and after SIGKILL the next run removes it",
          "[cli][reliability][gptq]") {
  qt::TempDir tmp;
  const std::string out = tmp / "out.gguf";
  REQUIRE(qt::run(fmt::format("{} convert {} --qtype Q8_0 -o {} --quiet", q(), qt::bundled_model(), out)).code == 0);
  const std::string old = qt::slurp(out);
  const auto term = kill_convert(tmp.path.string(), out, "TERM");
  INFO(term.out);
  CHECK(term.out.find("rc=143") != std::string::npos);  // died of SIGTERM, after unlinking
  CHECK(temporaries(tmp.path.string()).empty());
  CHECK(qt::slurp(out) == old);
  const auto kill = kill_convert(tmp.path.string(), out, "KILL");
  INFO(kill.out);
  CHECK(kill.out.find("rc=137") != std::string::npos);
  REQUIRE(temporaries(tmp.path.string()).size() == 1);  // what SIGKILL leaves
  CHECK(qt::slurp(out) == old);
  // The next run to the same path removes it (its process is gone) and writes the file.
  const auto again = qt::run(fmt::format("{} convert {} --qtype Q4_0 -o {} --quiet", q(), qt::bundled_model(), out));
  INFO(again.out);
  CHECK(again.code == 0);
  CHECK(temporaries(tmp.path.string()).empty());
  CHECK(qt::slurp(out) != old);
}

TEST_CASE("a full disk (file-size limit) is a clear error with no output and no temporary", "[cli][bad-input][reliability]") {
  qt::TempDir tmp;
  const std::string out = tmp / "out.gguf";
  const auto r = qt::run(fmt::format("bash -c 'ulimit -f 2000; {} convert {} --qtype Q4_0 -o {} --quiet'", q(), qt::bundled_model(), out));
  expect_error(r, {"out.gguf", "write failed", "File too large"});
  CHECK(!qt::fs::exists(out));
  CHECK(temporaries(tmp.path.string()).empty());
}

TEST_CASE("formats by magic: a .gguf without the magic, bytes of no format we read", "[cli][bad-input][reliability]") {
  qt::TempDir tmp;
  qt::write_file(tmp / "bad.gguf", std::string("GGUX") + std::string(200, '\x01'));
  expect_error(qt::run(fmt::format("{} ppl {} --text {}", q(), tmp / "bad.gguf", heldout())), {"bad.gguf", "not a GGUF file (magic"});
  qt::write_file(tmp / "junk.bin", std::string(100, '\x7f'));
  expect_error(qt::run(fmt::format("{} ppl {} --text {}", q(), tmp / "junk.bin", heldout())),
               {"junk.bin", "not a model file we read", "no GGUF magic", "not a llama2.c checkpoint"});
  expect_error(qt::run(fmt::format("{} ppl {}/model.safetensors --text {}", q(), qt::bundled_model(), heldout())), {"give its directory"});
}

TEST_CASE("hostile configs and weights: a layer count the weights do not have, non-finite weights", "[cli][bad-input][reliability]") {
  qt::TempDir tmp;
  qt::Synth s = qt::make_synth(false, false, 3);
  auto cfg = qt::synth_config(s.cfg);
  cfg["num_hidden_layers"] = 1099511627776ll;
  qt::write_hf(tmp / "layers", s, quant::TType::F16, 1, cfg);
  const auto t0 = std::chrono::steady_clock::now();
  expect_error(qt::run(fmt::format("{} ppl {} --text {}", q(), tmp / "layers", heldout())),
               {"config has 1099511627776 layers but the weights hold 2 blocks"});
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(20));  // refused before any allocation
  s.tensors["model.layers.1.mlp.down_proj.weight"].second[37] = std::nanf("");
  qt::write_hf(tmp / "nan", s, quant::TType::F16);
  expect_error(qt::run(fmt::format("{} ppl {} --text {} --ctx 64 --chunks 2", q(), tmp / "nan", heldout())),
               {"blk.1.ffn_down.weight", "not finite", "row 0, column 37"});
  expect_error(qt::run(fmt::format("{} convert {} --qtype Q4_0 -o {} --quiet", q(), tmp / "nan", tmp / "nan.gguf")),
               {"blk.1.ffn_down.weight", "not finite"});
  CHECK(!qt::fs::exists(tmp / "nan.gguf"));
}

TEST_CASE("a GPTQ convert killed (SIGKILL) at 20 points leaves the old file or the whole new one, never a partial one",
          "[cli][reliability][gptq]") {
  qt::TempDir tmp;
  const std::string out = tmp / "out.gguf";
  const std::string convert = fmt::format("{} convert {} --method gptq --bits 4 --group-size 128 --calib {} --nsamples 8 --seqlen 256 -o {} --quiet",
                                          q(), qt::bundled_model(), heldout(), out);
  // The new file, whole: the same command is deterministic.
  const auto t0 = std::chrono::steady_clock::now();
  REQUIRE(qt::run(convert).code == 0);
  const double whole = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const std::string fresh = qt::slurp(out);
  REQUIRE(qt::run(fmt::format("{} convert {} --qtype Q8_0 -o {} --quiet", q(), qt::bundled_model(), out)).code == 0);
  const std::string old = qt::slurp(out);
  int with_temporary = 0, finished = 0;
  for (int i = 0; i < 20; ++i) {
    // Kill points spread over the whole run, loading to writing (the last few after it may have ended).
    const double at = whole * (0.05 + 1.0 * i / 19);
    const auto r = qt::run(fmt::format("bash -c '{} & p=$!; sleep {:.3f}; ls {} | grep -c \"out.gguf.tmp\"; kill -KILL $p 2>/dev/null; wait $p; echo rc=$?'",
                                       convert, at, tmp.path.string()));
    INFO("kill " << i << " at " << at << " s of " << whole << " s\n" << r.out);
    const bool done = r.out.find("rc=0") != std::string::npos;
    CHECK((done || r.out.find("rc=137") != std::string::npos));
    const std::string now = qt::slurp(out);
    // Never a partial or corrupt file. A kill just after the rename (while the work directory is
    // being cleared) leaves the whole new file with rc 137.
    CHECK((now == old || now == fresh));
    CHECK(temporaries(tmp.path.string()).size() <= 1);
    finished += done;
    with_temporary += r.out.rfind("1\n", 0) == 0;
    if (now != old) qt::write_file(out, old);
  }
  std::cout << fmt::format("SIGKILL at 20 points of a {:.1f} s GPTQ convert: {} while its temporary was being written, {} after it ended\n",
                           whole, with_temporary, finished);
  CHECK(with_temporary >= 10);  // most kills land while the output is being written
  // The next run removes what the last SIGKILL left and writes the whole file.
  REQUIRE(qt::run(convert).code == 0);
  CHECK(temporaries(tmp.path.string()).empty());
  CHECK(qt::slurp(out) == fresh);
}
