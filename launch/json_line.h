// One line of a JSONL file kvfold reads (jobs, tasks, earlier results),
// parsed with a nesting limit: a hostile line cannot build a structure that
// is costly to hold, print or destroy; deeper values are dropped while
// parsing and the line is refused.
#ifndef KVFOLD_LAUNCH_JSON_LINE_H_
#define KVFOLD_LAUNCH_JSON_LINE_H_

#include <string>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kvfold {

// Far more than any kvfold line needs (a job line nests 4 levels).
constexpr int kMaxJsonDepth = 32;

// The value of `text`, or InvalidArgument "WHERE: not valid JSON: ..." /
// "WHERE: nests deeper than 32 levels".
absl::StatusOr<nlohmann::json> ParseJsonLine(absl::string_view text, const std::string& where);

}  // namespace kvfold

#endif  // KVFOLD_LAUNCH_JSON_LINE_H_
