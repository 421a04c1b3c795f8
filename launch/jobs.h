// The input of `kvfold run`: a JSONL file of Job messages (launch/job.proto),
// read and checked before the first job starts. A line that is not JSON,
// a job without an id, or an id given twice stops the run before it starts
// (every such line is named); a bad field only fails its own job, which is
// recorded in the output while the run goes on.
#ifndef KVFOLD_LAUNCH_JOBS_H_
#define KVFOLD_LAUNCH_JOBS_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "cache/cache_config.pb.h"
#include "launch/job.pb.h"
#include "runtime/engine.h"

namespace kvfold {

struct JobLine {
  int line = 0;  // 1-based line of the input
  std::string id;
  Job job;
  // Whether the job's cache gave question_aware (proto3 has no presence).
  std::optional<bool> question_aware;
  // Not OK when a field is bad: the job fails with this message.
  absl::Status status;
};

struct JobsFile {
  std::string path;
  std::vector<JobLine> jobs;
  // Unknown fields and other oddities that do not fail a job.
  std::vector<std::string> warnings;
};

// Parses one input line. Errors only when the line is not a JSON object or
// has no usable id; a bad field sets JobLine::status. `where` prefixes
// messages (e.g. "jobs.jsonl:7").
absl::StatusOr<JobLine> ParseJobLine(absl::string_view text, int line, const std::string& where,
                                     std::vector<std::string>* warnings);

// Reads and parses the whole input (blank lines skipped). Relative
// document_file paths are resolved against the input's directory, and each
// one's readability is checked here (a job whose file is missing fails).
absl::StatusOr<JobsFile> ReadJobs(const std::string& path);

// The job's generation settings: the run's, with the job's fields on top.
absl::StatusOr<GenerateOptions> JobGenerateOptions(const Job& job,
                                                   const GenerateOptions& run);

// The job's cache: the run's with the job's overrides on top (see Job.cache).
CacheConfig JobCacheConfig(const JobLine& job, const CacheConfig& run);

}  // namespace kvfold

#endif  // KVFOLD_LAUNCH_JOBS_H_
