// Evaluation and calibration text: plain UTF-8 files, or JSON Lines with a "text" field.
#pragma once

#include <string>

namespace quant {

// Reads the whole text. *.jsonl files are joined record by record with "\n\n" (as the GPTQ
// papers join WikiText rows). Throws naming the file when it is missing, empty or malformed.
std::string read_text(const std::string& path);

}  // namespace quant
