// The memory plan (calibration/memory_plan.h) on the bundled model: --dry-run prints it with the
// projected time; a budget below the all-in-memory plan spills activations to the work directory
// and writes the same bytes; a budget below one block is one error line; synthetic header-only
// checkpoints (70B shapes) plan without data.
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "../common.h"

namespace {

const std::string kGptq = "--method gptq --bits 4 --group-size 128 --nsamples 64 --seqlen 256 --calib ";

nlohmann::json run_json(const std::string& cmd) {
  const auto r = qt::run("{ " + cmd + " --json 2>/dev/null; }");
  INFO(cmd << "\n" << r.out);
  REQUIRE(r.code == 0);
  return nlohmann::json::parse(r.out);
}

}  // namespace

TEST_CASE("memory plan: dry run, spilled activations give the same bytes, a budget below one block is refused",
          "[e2e][scale]") {
  qt::TempDir tmp;
  const std::string base = qt::quant_bin() + " convert " + qt::bundled_model() + " " + kGptq + qt::kjv_calib();
  const nlohmann::json dry = run_json(base + " --dry-run --threads 2");
  const nlohmann::json& plan = dry.at("memory_plan");
  const double peak = plan.at("peak_bytes").get<double>();
  CHECK(peak > 0);
  CHECK(plan.at("spilled").get<std::string>().empty());
  CHECK(plan.at("time").at("total_seconds").get<double>() > 0);
  {
    const auto r = qt::run(base + " --dry-run --threads 2");
    CHECK(r.out.find("memory plan: peak") != std::string::npos);
    CHECK(r.out.find("one decoder block's weights in fp32") != std::string::npos);
    CHECK(r.out.find("time: ") != std::string::npos);
  }

  const nlohmann::json mem = run_json(base + " --threads 2 -o " + tmp / "mem.gguf");
  CHECK(mem.at("memory_plan").at("spilled").get<std::string>().empty());
  const double measured = mem.at("peak_anon_bytes").get<double>(), planned = mem.at("memory_plan").at("peak_bytes").get<double>();
  INFO("measured " << measured << " planned " << planned);
  CHECK(measured <= planned * 1.10);

  // The down_proj inputs alone are 64 x 256 x 768 x 4 = 50 MB: half of them less than the plan
  // forces them (at least) to disk.
  const double budget = (peak - 25e6) / 1e9;
  const nlohmann::json spill =
      run_json(base + fmt::format(" --threads 1 --max-memory {:.4f} --work {} -o {}", budget, tmp / "work", tmp / "spill.gguf"));
  CHECK(!spill.at("memory_plan").at("spilled").get<std::string>().empty());
  CHECK(spill.at("memory_plan").at("peak_bytes").get<double>() <= budget * 1e9);
  CHECK(qt::slurp(tmp / "spill.gguf") == qt::slurp(tmp / "mem.gguf"));
  CHECK(!std::filesystem::exists(tmp / "work"));  // the spill files are gone with the run

  qt::expect_error(qt::run(base + " --max-memory 0.001 -o " + tmp / "tiny.gguf"),
                   {"--max-memory 0.00 GB", "one block's weights", "give --max-memory"});
  CHECK(!std::filesystem::exists(tmp / "tiny.gguf"));
}

TEST_CASE("memory plan: a header-only 70B checkpoint plans GPTQ within 24 GB by spilling", "[e2e][scale]") {
  qt::TempDir tmp;
  const auto s = qt::run(qt::quant_bin() + " synth llama-2-70b --header-only -q -o " + tmp / "m70 --tokenizer " +
                         qt::shared("models/llama2-tokenizer/tokenizer.model"));
  REQUIRE_SHARED("models/llama2-tokenizer/tokenizer.model");
  INFO(s.out);
  REQUIRE(s.code == 0);
  // Not one byte of weights on disk: the shards are holes.
  std::uintmax_t apparent = 0;
  for (const auto& e : std::filesystem::directory_iterator(tmp.path / "m70")) apparent += e.file_size();
  CHECK(apparent > 130'000'000'000ull);
  const nlohmann::json j = run_json(qt::quant_bin() + " convert " + tmp / "m70" +
                                    " --method gptq --bits 4 --group-size 128 --nsamples 128 --seqlen 2048 --calib " + qt::kjv_calib() +
                                    " --max-memory 24 --dry-run --work " + tmp / "work");
  const auto& plan = j.at("memory_plan");
  CHECK(plan.at("peak_bytes").get<double>() <= 24e9);
  CHECK(!plan.at("spilled").get<std::string>().empty());
  CHECK(plan.at("time").at("total_seconds").get<double>() > 0);
  qt::expect_error(qt::run(qt::quant_bin() + " convert " + tmp / "m70" + " --method gptq --bits 4 --group-size 128 --nsamples 128 " +
                           "--seqlen 2048 --calib " + qt::kjv_calib() + " --max-memory 8 --dry-run --work " + tmp / "work"),
                   {"--max-memory 8.00 GB", "give --max-memory"});
}

namespace {

// Starts `cmd` and kills it (SIGKILL) once `file` exists; returns the shell's report.
qt::RunResult kill_when(const std::string& cmd, const std::string& file) {
  return qt::run(fmt::format("bash -c '{} >/dev/null 2>&1 & p=$!; for i in $(seq 3000); do [ -e {} ] && break; sleep 0.01; done; "
                             "kill -KILL $p; wait $p; echo rc=$?'",
                             cmd, file));
}

}  // namespace

TEST_CASE("resume: a GPTQ convert killed (SIGKILL) after three different blocks resumes to the uninterrupted bytes, and "
          "another run's work directory, a corrupt or a truncated checkpoint are refused",
          "[e2e][scale][reliability]") {
  qt::TempDir tmp;
  const std::string conv = qt::quant_bin() + " convert " + qt::bundled_model() +
                           " --method gptq --bits 4 --group-size 32 --nsamples 16 --seqlen 128 --threads 2 --calib " + qt::kjv_calib();
  const nlohmann::json full = run_json(conv + " -o " + tmp / "full.gguf");
  CHECK(!full.contains("resumed_blocks"));
  CHECK(!std::filesystem::exists(tmp / "full.gguf.work"));  // checkpoints go once the file is written
  const std::string want = qt::slurp(tmp / "full.gguf");
  for (int k : {0, 2, 4}) {
    const std::string out = tmp / fmt::format("k{}.gguf", k), work = tmp / fmt::format("w{}", k);
    const auto killed = kill_when(conv + " -o " + out + " --work " + work, fmt::format("{}/block-{:04d}.qckpt", work, k));
    INFO("kill after block " << k << ": " << killed.out);
    CHECK(killed.out.find("rc=137") != std::string::npos);
    CHECK(!std::filesystem::exists(out));
    const nlohmann::json r = run_json(conv + " -o " + out + " --work " + work + " --resume");
    CHECK(r.value("resumed_blocks", 0) >= k);
    CHECK(r.value("resumed_blocks", 0) < 6);
    CHECK(qt::slurp(out) == want);
  }

  const std::string work = tmp / "wx";
  kill_when(conv + " -o " + tmp / "x.gguf --work " + work, work + "/block-0002.qckpt");
  REQUIRE(std::filesystem::exists(work + "/block-0001.qckpt"));
  qt::expect_error(qt::run(qt::quant_bin() + " convert " + qt::bundled_model() + " --method gptq --bits 4 --group-size 32 --nsamples 8 "
                           "--seqlen 128 --calib " + qt::kjv_calib() + " -o " + tmp / "x.gguf --work " + work + " --resume"),
                   {"belongs to another run", "calibration.n_windows was 16, is 8"});
  {
    std::string b = qt::slurp(work + "/block-0000.qckpt");
    b[b.size() / 2] ^= 0x5a;
    qt::write_file(work + "/block-0000.qckpt", b);
  }
  qt::expect_error(qt::run(qt::quant_bin() + " convert " + qt::bundled_model() + " --qtype Q4_0 -o " + tmp / "x.gguf --resume"),
                   {"--resume continues a GPTQ run", "--method rtn has none"});
  qt::expect_error(qt::run(conv + " -o " + tmp / "x.gguf --work " + work + " --resume"), {"block-0000.qckpt", "corrupt"});
  CHECK(!std::filesystem::exists(tmp / "x.gguf"));
  std::filesystem::resize_file(work + "/acts.qckpt", std::filesystem::file_size(work + "/acts.qckpt") / 2);
  qt::expect_error(qt::run(conv + " -o " + tmp / "x.gguf --work " + work + " --resume"), {"acts.qckpt", "truncated"});
  CHECK(!std::filesystem::exists(tmp / "x.gguf"));
}
