// Replays every file of tests/fuzz/corpus/<target>/ through its target without libFuzzer: each
// is accepted or refused with quant::Error, never anything else, so a bug the fuzzer found stays
// fixed. (Crashes and sanitizer reports need the fuzz build: scripts/fuzz.sh.)
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>

#include "../common.h"
#include "targets.h"

TEST_CASE("fuzz corpus: every saved input is accepted or refused with one error, per reader", "[fuzz][bad-input]") {
  const auto root = std::filesystem::path(qt::repo("tests/fuzz/corpus"));
  int files = 0;
  for (const auto& t : qfuzz::targets()) {
    const auto dir = root / t.name;
    if (!std::filesystem::is_directory(dir)) continue;
    int accepted = 0, refused = 0;
    for (const auto& e : std::filesystem::directory_iterator(dir)) {
      std::ifstream in(e.path(), std::ios::binary);
      const std::string bytes((std::istreambuf_iterator<char>(in)), {});
      INFO(t.name << ": " << e.path().filename().string());
      bool ok = false;
      REQUIRE_NOTHROW(ok = qfuzz::run_bytes(t, reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()));
      (ok ? accepted : refused)++;
      ++files;
    }
    std::cout << "corpus " << t.name << ": " << accepted << " accepted, " << refused << " refused\n";
  }
  CHECK(files > 0);
}
