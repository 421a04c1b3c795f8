// Shared by the "calibration learns" tests (LoCoCo, MatryoshkaKV): token-id
// files and kvfold's own held-out NLL.
#ifndef KVFOLD_TESTS_LEARN_UTIL_H_
#define KVFOLD_TESTS_LEARN_UTIL_H_

#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "runtime/engine.h"

namespace kvfold {

// One sequence per line, ids separated by commas and/or spaces.
inline std::vector<std::vector<int32_t>> ReadIds(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << path;
  std::vector<std::vector<int32_t>> out;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    std::vector<int32_t> ids;
    for (absl::string_view item : absl::StrSplit(line, absl::ByAnyChar(", "), absl::SkipEmpty())) {
      int32_t id;
      EXPECT_TRUE(absl::SimpleAtoi(item, &id)) << path << ": " << item;
      ids.push_back(id);
    }
    out.push_back(std::move(ids));
  }
  EXPECT_FALSE(out.empty()) << path;
  return out;
}

// Mean NLL per predicted token over `docs` with `options` (Engine::Score,
// what `kvfold score` prints).
inline double MeanNll(const LlamaModel& model, const EngineOptions& options,
                      const std::vector<std::vector<int32_t>>& docs) {
  Engine engine(model, options);
  double nll = 0;
  int64_t tokens = 0;
  for (const auto& doc : docs) {
    auto r = engine.Score(doc);
    EXPECT_TRUE(r.ok()) << r.status();
    if (!r.ok()) return 1e30;
    nll += r->nll;
    tokens += static_cast<int64_t>(r->logprobs.size());
  }
  return nll / tokens;
}

}  // namespace kvfold

#endif  // KVFOLD_TESTS_LEARN_UTIL_H_
