// libFuzzer harness for the tokenizer.json parser and the encoder/decoder.
//
// Input: a tokenizer.json, a NUL byte, then text. With the environment
// variable KVFOLD_FUZZ_TOKENIZER=DIR, the whole input is text for DIR's
// tokenizer instead (fuzzes the encoder with a real vocabulary).
// Must never crash, hang or emit invalid UTF-8; errors are fine.
//   clang build: tools/tokenizer/fuzz.sh   CI: //models/tokenizer:tokenizer_fuzz_test
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>

#include "absl/strings/string_view.h"
#include "models/tokenizer/tokenizer.h"
#include "models/tokenizer/unicode.h"

namespace {

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "tokenizer_fuzz: %s\n", what);
    std::abort();
  }
}

void Exercise(const kvfold::Tokenizer& t, absl::string_view text) {
  for (bool special : {false, true}) {
    absl::StatusOr<std::vector<int32_t>> ids = t.Encode(text, special);
    Check(ids.ok() == kvfold::unicode::IsValidUtf8(text), "Encode ok iff text is UTF-8");
    if (!ids.ok()) return;
    for (int32_t id : *ids) Check(id >= 0 && id < t.IdLimit(), "id out of range");
    const std::string full = t.Decode(*ids, false);
    Check(kvfold::unicode::IsValidUtf8(full), "Decode gave invalid UTF-8");
    kvfold::StreamDecoder stream(t, false);
    std::string streamed;
    for (int32_t id : *ids) {
      const std::string piece = stream.Step(id);
      Check(kvfold::unicode::IsValidUtf8(piece), "stream emitted invalid UTF-8");
      streamed += piece;
    }
    streamed += stream.Finish();
    Check(kvfold::unicode::IsValidUtf8(streamed), "stream gave invalid UTF-8");
  }
  // Decode of arbitrary ids (unknown ones are skipped).
  std::vector<int32_t> ids;
  for (size_t i = 0; i + 1 < text.size() && ids.size() < 64; i += 2) {
    ids.push_back((uint8_t(text[i]) << 8 | uint8_t(text[i + 1])) % (t.IdLimit() + 3) - 1);
  }
  Check(kvfold::unicode::IsValidUtf8(t.Decode(ids, true)), "Decode of ids invalid UTF-8");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view input(reinterpret_cast<const char*>(data), size);
  static const std::unique_ptr<kvfold::Tokenizer> fixed = []() {
    const char* dir = std::getenv("KVFOLD_FUZZ_TOKENIZER");
    if (dir == nullptr) return std::unique_ptr<kvfold::Tokenizer>();
    absl::StatusOr<kvfold::Tokenizer> t = kvfold::Tokenizer::FromDirectory(dir);
    Check(t.ok(), "KVFOLD_FUZZ_TOKENIZER does not load");
    return std::make_unique<kvfold::Tokenizer>(std::move(*t));
  }();
  if (fixed) {
    Exercise(*fixed, input);
    return 0;
  }
  const size_t nul = input.find('\0');
  const absl::string_view json = input.substr(0, nul);
  const absl::string_view text =
      nul == absl::string_view::npos ? absl::string_view() : input.substr(nul + 1);
  absl::StatusOr<kvfold::Tokenizer> t =
      kvfold::Tokenizer::FromJsonText(json, "", "fuzz/tokenizer.json");
  if (t.ok()) Exercise(*t, text.substr(0, 4096));
  return 0;
}
