// The output of `kvfold run`: JSONL, one line per finished job, appended with
// one write and flushed to disk before the next job's line, so a crash or a
// kill loses only jobs in flight. Reopening a file resumes it: the ids of its
// lines count as done, and a half-written last line (a machine that went
// down mid-write) is cut off with a warning.
#ifndef KVFOLD_LAUNCH_RESULTS_FILE_H_
#define KVFOLD_LAUNCH_RESULTS_FILE_H_

#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace kvfold {

class ResultsFile {
 public:
  // Opens or creates `path` for appending and locks it (a second run on the
  // same output is refused). Lines of an existing file must be JSON objects
  // with an "id".
  static absl::StatusOr<ResultsFile> Open(const std::string& path,
                                          std::vector<std::string>* warnings);
  ResultsFile(ResultsFile&& other) noexcept;
  ResultsFile& operator=(ResultsFile&&) = delete;
  ~ResultsFile();

  const std::string& path() const { return path_; }
  // Ids with a line in the file (from earlier runs or appended here).
  const std::set<std::string>& done() const { return done_; }
  int64_t lines_before() const { return lines_before_; }

  // Appends `json_line` (one JSON object with an "id", no newline) and its
  // newline in one write, then flushes it to the disk.
  absl::Status Append(const std::string& id, const std::string& json_line);

  // Removes the file if Open created it and nothing was appended (a run
  // refused at start-up leaves no empty output behind).
  void RemoveIfUnused();

 private:
  ResultsFile(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}

  std::string path_;
  int fd_ = -1;
  std::set<std::string> done_;
  int64_t lines_before_ = 0;
  bool created_ = false;
  bool appended_ = false;
};

}  // namespace kvfold

#endif  // KVFOLD_LAUNCH_RESULTS_FILE_H_
