// Tokenizer parity: llama.cpp's own test vectors, Llama 2's known ids, SentencePiece vs our SPM.
#include <sstream>

#include "../common.h"
#include "quant/formats/gguf.h"
#include "quant/formats/gguf_model.h"
#include "quant/formats/loader.h"
#include "quant/calibration/text.h"

using namespace quant;

TEST_CASE("SPM tokenizer reproduces llama.cpp's test vectors for the Llama SPM vocabulary", "[unit][tokenizer]") {
  REQUIRE_SHARED("models/ggml-vocab/ggml-vocab-llama-spm.gguf");
  GgufFile f(qt::shared("models/ggml-vocab/ggml-vocab-llama-spm.gguf"));
  SpmTokenizer tok(read_gguf_vocab(f));
  const std::string inp = qt::slurp(qt::shared("models/ggml-vocab/ggml-vocab-llama-spm.gguf.inp"));
  const std::string out = qt::slurp(qt::shared("models/ggml-vocab/ggml-vocab-llama-spm.gguf.out"));
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
    CAPTURE(i, texts[i]);
    CHECK(tok.encode(texts[i], false) == want);
  }
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
