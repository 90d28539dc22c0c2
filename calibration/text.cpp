// Reading evaluation / calibration text.
#include "quant/calibration/text.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "quant/error.h"
#include "quant/formats/mmap.h"

namespace quant {

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  QUANT_CHECK(in, "{}: cannot open text file", path);
  note_input(path);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string s = ss.str();
  if (path.ends_with(".jsonl")) {
    std::string joined;
    std::istringstream lines(s);
    std::string line;
    for (int64_t no = 1; std::getline(lines, line); ++no) {
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(line);
      } catch (const std::exception& e) {
        fail("{}: line {} is not JSON: {}", path, no, e.what());
      }
      QUANT_CHECK(j.is_object() && j.contains("text") && j["text"].is_string(), "{}: line {} has no string field \"text\"",
                  path, no);
      if (!joined.empty()) joined += "\n\n";
      joined += j["text"].get<std::string>();
    }
    s = std::move(joined);
  }
  QUANT_CHECK(s.find_first_not_of(" \t\r\n") != std::string::npos, "{}: text is empty", path);
  return s;
}

}  // namespace quant
