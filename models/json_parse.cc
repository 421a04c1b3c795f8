#include "models/json_parse.h"

#include "absl/strings/str_cat.h"

namespace kvfold {
namespace {

// nlohmann's message without its "[json.exception...] " prefix.
std::string JsonError(const std::exception& e) {
  std::string m = e.what();
  if (!m.empty() && m[0] == '[') {
    const size_t end = m.find("] ");
    if (end != std::string::npos) m = m.substr(end + 2);
  }
  return m;
}

}  // namespace

absl::StatusOr<nlohmann::json> ParseJsonLimited(absl::string_view text,
                                                const std::string& where) {
  bool too_deep = false;
  const nlohmann::json::parser_callback_t limit_depth =
      [&too_deep](int depth, nlohmann::json::parse_event_t, nlohmann::json&) {
        if (depth > kMaxJsonDepth) too_deep = true;
        return !too_deep;
      };
  nlohmann::json o;
  try {
    o = nlohmann::json::parse(text.begin(), text.end(), limit_depth);
  } catch (const nlohmann::json::parse_error& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": not valid JSON (at byte ", e.byte, "): ", JsonError(e)));
  } catch (const nlohmann::json::exception& e) {  // e.g. a number too large for a double
    return absl::InvalidArgumentError(absl::StrCat(where, ": not valid JSON: ", JsonError(e)));
  }
  if (too_deep) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": nests deeper than ", kMaxJsonDepth, " levels"));
  }
  return o;
}

}  // namespace kvfold
