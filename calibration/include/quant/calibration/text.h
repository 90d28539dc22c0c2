// Evaluation and calibration text: plain UTF-8 files, or JSON Lines with a "text" field.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace quant {

class Tokenizer;

// Reads the whole text. *.jsonl files are joined record by record with "\n\n" (as the GPTQ
// papers join WikiText rows). Throws naming the file when it is missing, empty or malformed.
std::string read_text(const std::string& path);

// tok.encode(read_text(path), BOS first), remembered for the process (the last two texts): a
// command that reads one text more than once (quantize --target-size: the sweep's evaluation, its
// statistics, then GPTQ's windows) tokenizes it once. Keyed by the file (path, size, mtime) and
// the tokenizer (its kind and a hash of its vocabulary).
std::vector<int32_t> encode_text_file(const Tokenizer& tok, const std::string& path);

}  // namespace quant
