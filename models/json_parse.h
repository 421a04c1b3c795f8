// JSON from files other people made (tokenizer.json, config.json, job and
// task lines, earlier results), parsed with a nesting limit: a hostile file
// cannot build a structure that is costly to hold, print or destroy, or
// that code walking it recursively would overflow the stack on. Deeper
// values are dropped while parsing and the file is refused.
#ifndef KVFOLD_MODELS_JSON_PARSE_H_
#define KVFOLD_MODELS_JSON_PARSE_H_

#include <string>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kvfold {

// Far more than any real file needs (a job line nests 4 levels, a
// tokenizer.json about 6).
constexpr int kMaxJsonDepth = 32;

// The value of `text`, or InvalidArgument "WHERE: not valid JSON (at byte
// N): ..." / "WHERE: nests deeper than 32 levels".
absl::StatusOr<nlohmann::json> ParseJsonLimited(absl::string_view text, const std::string& where);

}  // namespace kvfold

#endif  // KVFOLD_MODELS_JSON_PARSE_H_
