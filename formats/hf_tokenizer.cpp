// tokenizer.json (Hugging Face `tokenizers`) with a byte-level BPE model -> our Vocab, as
// llama.cpp's converter reads it: vocabulary and merges from `model`, added tokens as control
// (special) or user-defined tokens, holes up to config's vocab_size as [PAD<i>] unused tokens,
// and the pre-tokenizer family named by its split regex.
#include <filesystem>
#include <nlohmann/json.hpp>

#include "quant/error.h"
#include "quant/formats/loader.h"

namespace quant {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// The family of a byte-level pre_tokenizer: ByteLevel with its own (GPT-2) regex, or a Split by
// a regex we know followed by ByteLevel without one.
std::string pre_tokenizer_family(const json& pre, const std::string& path) {
  QUANT_CHECK(pre.is_object() && pre.contains("type") && pre["type"].is_string(),
              "{}: pre_tokenizer is missing or has no type", path);
  const std::string type = pre["type"].get<std::string>();
  auto byte_level_regex = [](const json& p) { return !p.contains("use_regex") || p["use_regex"] == true; };
  if (type == "ByteLevel" && byte_level_regex(pre)) return "gpt-2";
  if (type == "Sequence" && pre.contains("pretokenizers") && pre["pretokenizers"].is_array()) {
    const json& seq = pre["pretokenizers"];
    if (seq.size() == 2 && seq[0].value("type", "") == "Split" && seq[1].value("type", "") == "ByteLevel" &&
        !byte_level_regex(seq[1]) && seq[0].contains("pattern") && seq[0]["pattern"].is_object() &&
        seq[0]["pattern"].contains("Regex") && seq[0]["pattern"]["Regex"].is_string()) {
      const std::string regex = seq[0]["pattern"]["Regex"].get<std::string>();
      for (const auto& p : pre_tokenizers())
        if (*p.hf_pattern && regex == p.hf_pattern) return p.name;
      fail("{}: pre_tokenizer.pretokenizers[0] splits by the regex {} which no supported family uses (these are: {})",
           path, regex, pre_tokenizer_names());
    }
  }
  fail("{}: pre_tokenizer of type {} is not supported (byte-level BPE with the pre-tokenizer of one of: {})", path,
       type, pre_tokenizer_names());
}

// A token named in tokenizer_config.json: a string or {"content": ...}.
std::string token_text(const json& j) {
  if (j.is_string()) return j.get<std::string>();
  if (j.is_object() && j.contains("content") && j["content"].is_string()) return j["content"].get<std::string>();
  return {};
}

}  // namespace

namespace {

Vocab read_tokenizer_json(const std::string& dir, int64_t vocab_size) {
  const std::string path = (fs::path(dir) / "tokenizer.json").string();
  const json j = read_json_file(path);
  QUANT_CHECK(j.is_object() && j.contains("model") && j["model"].is_object(), "{}: missing field model", path);
  const json& model = j["model"];
  const std::string type = model.value("type", "(none)");
  QUANT_CHECK(type == "BPE", "{}: model.type = {} is not supported (BPE is)", path, type);
  QUANT_CHECK(!model.value("byte_fallback", false),
              "{}: model.byte_fallback = true is a SentencePiece-style BPE; give its tokenizer.model instead", path);
  QUANT_CHECK(model.contains("vocab") && model["vocab"].is_object(), "{}: model.vocab is missing", path);
  QUANT_CHECK(model.contains("merges") && model["merges"].is_array(), "{}: model.merges is missing", path);

  Vocab v;
  v.model = VocabModel::Bpe;
  v.pre = pre_tokenizer_family(j.contains("pre_tokenizer") ? j["pre_tokenizer"] : json(), path);
  auto place = [&](const std::string& text, const json& id, TokenType t, const char* field) {
    QUANT_CHECK(id.is_number_integer() && id.get<int64_t>() >= 0 && id.get<int64_t>() < (1 << 24),
                "{}: {} gives token {} a bad id", path, field, text);
    const auto i = static_cast<size_t>(id.get<int64_t>());
    if (i >= v.pieces.size()) {
      v.pieces.resize(i + 1);
      v.types.resize(i + 1, TokenType::Unused);
    }
    QUANT_CHECK(v.types[i] == TokenType::Unused || v.pieces[i] == text, "{}: {}: id {} is both {} and {}", path, field, i,
                v.pieces[i], text);
    v.pieces[i] = text;
    v.types[i] = t;
  };
  for (const auto& [text, id] : model["vocab"].items()) place(text, id, TokenType::Normal, "model.vocab");
  if (j.contains("added_tokens") && j["added_tokens"].is_array())
    for (const auto& a : j["added_tokens"]) {
      QUANT_CHECK(a.is_object() && a.contains("content") && a["content"].is_string() && a.contains("id"),
                  "{}: added_tokens has an entry without content and id", path);
      place(a["content"].get<std::string>(), a["id"], a.value("special", false) ? TokenType::Control : TokenType::UserDefined,
            "added_tokens");
    }
  QUANT_CHECK(static_cast<int64_t>(v.pieces.size()) <= vocab_size,
              "{}: the tokenizer has {} tokens but config.json vocab_size is {}", path, v.pieces.size(), vocab_size);
  const size_t n = static_cast<size_t>(vocab_size);
  v.types.resize(n, TokenType::Unused);
  v.pieces.resize(n);
  for (size_t i = 0; i < n; ++i)
    if (v.types[i] == TokenType::Unused) v.pieces[i] = "[PAD" + std::to_string(i) + "]";
  v.scores.assign(n, 0.0f);

  QUANT_CHECK(model.contains("merges") && model["merges"].is_array(), "{}: model.merges is missing", path);
  for (const auto& m : model["merges"]) {
    if (m.is_string()) {
      v.merges.push_back(m.get<std::string>());
    } else {
      QUANT_CHECK(m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string(),
                  "{}: model.merges has an entry that is neither 'a b' nor [a, b]", path);
      v.merges.push_back(m[0].get<std::string>() + " " + m[1].get<std::string>());
    }
  }

  // BOS/EOS and whether BOS is added: tokenizer_config.json, else the post-processor's template
  // (Llama 3 adds <|begin_of_text|> there).
  std::map<std::string, int32_t> id_of;
  for (size_t i = 0; i < n; ++i) id_of.emplace(v.pieces[i], static_cast<int32_t>(i));
  v.add_bos = false;
  v.add_space_prefix = false;
  v.bos = v.eos = -1;
  const fs::path cfg_path = fs::path(dir) / "tokenizer_config.json";
  json cfg = fs::exists(cfg_path) ? read_json_file(cfg_path.string()) : json::object();
  if (!cfg.is_object()) cfg = json::object();
  auto lookup = [&](const char* key) -> int32_t {
    if (!cfg.contains(key)) return -1;
    const std::string t = token_text(cfg[key]);
    auto it = id_of.find(t);
    return it == id_of.end() ? -1 : it->second;
  };
  v.bos = lookup("bos_token");
  v.eos = lookup("eos_token");
  if (j.contains("post_processor") && j["post_processor"].is_object() &&
      j["post_processor"].value("type", "") == "TemplateProcessing") {
    const json& pp = j["post_processor"];
    const json single = pp.contains("single") ? pp["single"] : json();
    if (single.is_array() && !single.empty() && single[0].is_object() && single[0].contains("SpecialToken") &&
        single[0]["SpecialToken"].is_object()) {
      const std::string t = single[0]["SpecialToken"].value("id", "");
      if (auto it = id_of.find(t); it != id_of.end()) {
        v.bos = it->second;
        v.add_bos = true;
      }
    }
  }
  if (cfg.contains("add_bos_token") && cfg["add_bos_token"].is_boolean()) v.add_bos = cfg["add_bos_token"].get<bool>();
  // Models without a BOS (Qwen2) point it at EOS, as llama.cpp's converter does.
  if (v.eos < 0) v.eos = v.bos >= 0 ? v.bos : 0;
  if (v.bos < 0) v.bos = v.eos;
  v.unk = 0;
  v.validate(path);
  return v;
}

}  // namespace

Vocab read_hf_tokenizer(const std::string& dir, int64_t vocab_size) {
  try {
    return read_tokenizer_json(dir, vocab_size);
  } catch (const nlohmann::json::exception& e) {  // a field of the wrong JSON type somewhere: one error, naming the file
    fail("{}: malformed tokenizer.json: {}", (fs::path(dir) / "tokenizer.json").string(), e.what());
  }
}

}  // namespace quant
