// Tokenizer parity: llama.cpp's own test vectors, Llama 2's known ids, SentencePiece vs our SPM.
#include <nlohmann/json.hpp>
#include <sstream>

#include "../common.h"
#include "quant/formats/gguf.h"
#include "quant/formats/gguf_model.h"
#include "quant/formats/loader.h"
#include "quant/calibration/text.h"

using namespace quant;

namespace {

// llama.cpp's test vectors for one vocabulary: texts separated by "\n__ggml_vocab_test__\n" in
// .inp, one line of token ids per text in .out. Returns how many cases were checked.
size_t check_vocab_vectors(const std::string& name) {
  const std::string base = "models/ggml-vocab/ggml-vocab-" + name + ".gguf";
  GgufFile f(qt::shared(base));
  const std::unique_ptr<Tokenizer> tok = make_tokenizer(read_gguf_vocab(f));
  const std::string inp = qt::slurp(qt::shared(base + ".inp"));
  const std::string out = qt::slurp(qt::shared(base + ".out"));
  std::vector<std::string> texts;
  const std::string sep = "\n__ggml_vocab_test__\n";
  for (size_t pos = 0;;) {
    const size_t next = inp.find(sep, pos);
    if (next == std::string::npos) break;
    texts.push_back(inp.substr(pos, next - pos));
    pos = next + sep.size();
  }
  std::vector<std::string> lines;
  std::istringstream ls(out);
  for (std::string l; std::getline(ls, l);) lines.push_back(l);
  REQUIRE(texts.size() >= 40);
  REQUIRE(lines.size() >= texts.size());
  for (size_t i = 0; i < texts.size(); ++i) {
    std::vector<int32_t> want;
    std::istringstream ids(lines[i]);
    for (int32_t id; ids >> id;) want.push_back(id);
    CAPTURE(name, i, texts[i]);
    const std::vector<int32_t> got = tok->encode(texts[i], false);
    CHECK(got == want);
    // Decoding the ids gives the text back (byte-level BPE loses nothing).
    if (f.get_str("tokenizer.ggml.model") == "gpt2") {
      std::string back;
      for (size_t k = 0; k < got.size(); ++k) back += tok->decode(k ? got[k - 1] : -1, got[k]);
      CHECK(back == texts[i]);
    }
  }
  return texts.size();
}

}  // namespace

TEST_CASE("SPM tokenizer reproduces llama.cpp's test vectors for the Llama SPM vocabulary", "[unit][tokenizer]") {
  REQUIRE_SHARED("models/ggml-vocab/ggml-vocab-llama-spm.gguf");
  check_vocab_vectors("llama-spm");
}

TEST_CASE("byte-level BPE reproduces llama.cpp's test vectors for gpt-2, falcon, starcoder, deepseek-llm",
          "[unit][tokenizer][bpe]") {
  REQUIRE_SHARED("models/ggml-vocab/ggml-vocab-gpt-2.gguf");
  for (const char* name : {"gpt-2", "falcon", "starcoder", "deepseek-llm"}) {
    GgufFile f(qt::shared(std::string("models/ggml-vocab/ggml-vocab-") + name + ".gguf"));
    CHECK(read_gguf_vocab(f).pre == name);
    check_vocab_vectors(name);
  }
}

namespace {

// A tokenizer.json of a GGUF BPE vocabulary, with the given pre_tokenizer.
void write_tokenizer_json(const std::string& dir, const Vocab& v, const nlohmann::json& pre) {
  nlohmann::json vocab = nlohmann::json::object(), added = nlohmann::json::array();
  for (int32_t i = 0; i < v.size(); ++i) {
    if (v.types[static_cast<size_t>(i)] == TokenType::Control)
      added.push_back({{"id", i}, {"content", v.pieces[static_cast<size_t>(i)]}, {"special", true}});
    else
      vocab[v.pieces[static_cast<size_t>(i)]] = i;
  }
  nlohmann::json merges = nlohmann::json::array();
  for (size_t r = 0; r < v.merges.size(); ++r) {
    const std::string& m = v.merges[r];
    const size_t sp = m.find(' ', 1);
    // Both spellings of a merge occur in the wild: "a b" (tokenizers < 0.20) and ["a", "b"].
    if (r % 2) merges.push_back(m); else merges.push_back({m.substr(0, sp), m.substr(sp + 1)});
  }
  const nlohmann::json j = {{"version", "1.0"}, {"added_tokens", added}, {"normalizer", nullptr},
                            {"pre_tokenizer", pre}, {"decoder", {{"type", "ByteLevel"}}},
                            {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}}}};
  std::filesystem::create_directories(dir);
  qt::write_file(dir + "/tokenizer.json", j.dump());
}

nlohmann::json split_then_bytes(const char* regex) {
  return {{"type", "Sequence"},
          {"pretokenizers",
           {{{"type", "Split"}, {"pattern", {{"Regex", regex}}}, {"behavior", "Isolated"}, {"invert", false}},
            {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}}}}};
}

}  // namespace

TEST_CASE("tokenizer.json: a byte-level BPE read from HF's format tokenizes as its GGUF does", "[unit][tokenizer][bpe]") {
  REQUIRE_SHARED("models/ggml-vocab/ggml-vocab-gpt-2.gguf");
  GgufFile f(qt::shared("models/ggml-vocab/ggml-vocab-gpt-2.gguf"));
  const Vocab gguf = read_gguf_vocab(f);
  qt::TempDir tmp;
  const std::string dir = tmp / "tok";
  write_tokenizer_json(dir, gguf, {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}});
  const Vocab hf = read_hf_tokenizer(dir, gguf.size() + 3);  // config's vocab_size may exceed the tokenizer's
  CHECK(hf.pre == "gpt-2");
  CHECK(hf.merges == gguf.merges);
  REQUIRE(hf.size() == gguf.size() + 3);
  CHECK(std::equal(gguf.pieces.begin(), gguf.pieces.end(), hf.pieces.begin()));
  CHECK(hf.pieces.back() == "[PAD" + std::to_string(gguf.size() + 2) + "]");
  CHECK(hf.types.back() == TokenType::Unused);
  BpeTokenizer a(gguf), b(hf);
  const std::string text = qt::slurp(qt::shared("models/ggml-vocab/ggml-vocab-gpt-2.gguf.inp"));
  CHECK(a.encode(text, false) == b.encode(text, false));

  // The Llama 3 and Qwen2 split regexes name their families.
  write_tokenizer_json(dir, gguf, split_then_bytes(find_pre_tokenizer("llama-bpe")->hf_pattern));
  CHECK(read_hf_tokenizer(dir, gguf.size()).pre == "llama-bpe");
  write_tokenizer_json(dir, gguf, split_then_bytes(find_pre_tokenizer("qwen2")->hf_pattern));
  CHECK(read_hf_tokenizer(dir, gguf.size()).pre == "qwen2");
  // An unknown regex is refused, naming the families that exist.
  write_tokenizer_json(dir, gguf, split_then_bytes("\\p{L}+"));
  CHECK_THROWS_WITH(read_hf_tokenizer(dir, gguf.size()), Catch::Contains("no supported family") && Catch::Contains("qwen2"));
  write_tokenizer_json(dir, gguf, {{"type", "Metaspace"}});
  CHECK_THROWS_WITH(read_hf_tokenizer(dir, gguf.size()), Catch::Contains("Metaspace is not supported"));
  // A vocabulary larger than config.json says is refused.
  write_tokenizer_json(dir, gguf, {{"type", "ByteLevel"}});
  CHECK_THROWS_WITH(read_hf_tokenizer(dir, gguf.size() - 1), Catch::Contains("vocab_size"));
}

TEST_CASE("pre-tokenizers split as the Llama 3 and Qwen2 regexes do", "[unit][tokenizer][bpe]") {
  REQUIRE_SHARED("models/ggml-vocab/ggml-vocab-gpt-2.gguf");
  GgufFile f(qt::shared("models/ggml-vocab/ggml-vocab-gpt-2.gguf"));
  Vocab v = read_gguf_vocab(f);
  using S = std::vector<std::string>;
  v.pre = "llama-bpe";
  BpeTokenizer llama3(v);
  CHECK(llama3.pre_tokenize("Hello world") == S{"Hello", " world"});
  CHECK(llama3.pre_tokenize("1234567") == S{"123", "456", "7"});  // digits in threes
  CHECK(llama3.pre_tokenize("I'M here, don't") == S{"I", "'M", " here", ",", " don", "'t"});
  CHECK(llama3.pre_tokenize("  x") == S{" ", " x"});
  CHECK(llama3.pre_tokenize("a\n\nb") == S{"a", "\n\n", "b"});
  CHECK(llama3.pre_tokenize("x!!\n\ny") == S{"x", "!!\n\n", "y"});
  v.pre = "qwen2";
  BpeTokenizer qwen(v);
  CHECK(qwen.pre_tokenize("1234567") == S{"1", "2", "3", "4", "5", "6", "7"});  // digits one by one
  CHECK(qwen.pre_tokenize("I'M here") == S{"I", "'M", " here"});
  v.pre = "gpt-2";
  BpeTokenizer gpt2(v);
  CHECK(gpt2.pre_tokenize("I'M 1234567") == S{"I", "'", "M", " 1234567"});  // GPT-2 is case-sensitive
  // Invalid UTF-8 reads as U+FFFD, as llama.cpp replaces it.
  CHECK(gpt2.pre_tokenize("a\xff") == S{"a", "\xEF\xBF\xBD"});
}

TEST_CASE("Llama 2 tokenizer: 'Once upon a time' -> 1 9038 2501 263 931 from both file formats", "[unit][tokenizer]") {
  REQUIRE_SHARED("models/llama2-tokenizer/tokenizer.model");
  const std::vector<int32_t> want = {1, 9038, 2501, 263, 931};
  auto sp = load_sentencepiece(qt::shared("models/llama2-tokenizer/tokenizer.model"));
  CHECK(sp->encode("Once upon a time", true) == want);
  SpmTokenizer bin(read_llama2c_tokenizer(qt::shared("models/llama2-tokenizer/tokenizer.bin"), 32000));
  CHECK(bin.encode("Once upon a time", true) == want);
  // Same vocabulary either way (llama2.c stores spaces as ' ' and BOS as "\n<s>\n").
  CHECK(bin.vocab().pieces == sp->vocab().pieces);
  CHECK(bin.decode(1, 9038) == "Once");
  CHECK(bin.decode(9038, 2501) == " upon");
}

TEST_CASE("our SPM tokenizer equals SentencePiece on the bundled model's vocabulary", "[unit][tokenizer]") {
  auto sp = load_sentencepiece(qt::bundled_model() + "/tokenizer.model");
  SpmTokenizer ours(sp->vocab());
  std::vector<std::string> texts = {"", " ", "  ", "\n", "a\n\nb", "In the beginning God created the heaven and the earth.",
                                    "  leading and  double  spaces ", "numbers 1234567 and 3.14159",
                                    "Ünïcödé, emoji \xF0\x9F\x98\x80, CJK \xE4\xB8\xAD\xE6\x96\x87, tab\there",
                                    "<s> is not parsed as a control token </s>"};
  // Not compared: invalid UTF-8, which SentencePiece replaces with U+FFFD before encoding while
  // llama.cpp's SPM (and ours, which follows it) keeps the raw bytes as byte tokens.
  std::istringstream kjv(read_text(qt::repo("data/kjv/kjv_heldout.txt")));
  int lines = 0;
  for (std::string l; std::getline(kjv, l) && lines < 300; ++lines) texts.push_back(l);
  const std::string wiki = qt::shared("data/wikitext-2-raw/wiki.test.raw");
  if (std::filesystem::exists(wiki)) texts.push_back(read_text(wiki).substr(0, 200000));
  for (const auto& t : texts) {
    CAPTURE(t.substr(0, 80));
    CHECK(ours.encode(t, true) == sp->encode(t, true));
  }
  // The whole held-out text as one string, as perplexity tokenizes it.
  const std::string whole = read_text(qt::repo("data/kjv/kjv_heldout.txt"));
  CHECK(ours.encode(whole, true) == sp->encode(whole, true));
}
