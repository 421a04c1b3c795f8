// libFuzzer harness: a `kvfold run` input file (JSONL). Each line must
// parse or say why; a job that parses must give its generation options and
// cache config without a crash.
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "launch/jobs.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  int line = 0;
  for (absl::string_view l : absl::StrSplit(text, '\n')) {
    std::vector<std::string> warnings;
    auto job = kvfold::ParseJobLine(l, ++line, "fuzz", &warnings);
    if (!job.ok()) continue;
    auto options = kvfold::JobGenerateOptions(job->job, kvfold::GenerateOptions{});
    (void)options;
    const kvfold::CacheConfig cache = kvfold::JobCacheConfig(*job, kvfold::CacheConfig{});
    (void)cache;
  }
  return 0;
}
