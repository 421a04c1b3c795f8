#include "cache/policies.h"

#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/text_format.h>

#include "absl/strings/str_cat.h"

namespace kvfold {

absl::StatusOr<std::unique_ptr<KvCache>> MakeCache(const CacheConfig& config,
                                                   const CacheShape& shape) {
  switch (config.policy_case()) {
    case CacheConfig::kFull:
    case CacheConfig::POLICY_NOT_SET:  // no policy given: keep everything
      return std::unique_ptr<KvCache>(std::make_unique<FullKvCache>(shape));
  }
  return absl::InvalidArgumentError("unknown cache policy");
}

namespace {
// Collects the first parse error with its line and column.
class ErrorCollector : public google::protobuf::io::ErrorCollector {
 public:
  void AddError(int line, int column, const std::string& message) override {
    if (first.empty()) first = absl::StrCat(line + 1, ":", column + 1, ": ", message);
  }
  std::string first;
};
}  // namespace

absl::StatusOr<CacheConfig> ParseCacheConfig(const std::string& text,
                                             const std::string& source) {
  CacheConfig config;
  google::protobuf::TextFormat::Parser parser;
  ErrorCollector errors;
  parser.RecordErrorsTo(&errors);
  if (!parser.ParseFromString(text, &config)) {
    return absl::InvalidArgumentError(absl::StrCat(source, ":", errors.first));
  }
  return config;
}

}  // namespace kvfold
