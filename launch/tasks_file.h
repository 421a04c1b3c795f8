// The input of `kvfold eval`: a task file written by tools/tasks/make_tasks.py.
// JSONL; the first line is a header, every other line one sample:
//
//   {"kvfold_tasks": 1, "seed": 0, "haystack_sha256": "...",
//    "tokenizer_probe": {"text": "...", "ids": [...]}}
//   {"id": "passkey-8192-0", "task": "passkey", "length": 8192,
//    "tokens": 8170, "document": "...", "question": "...", "answer": "48213"}
//
// `length` is the target (document + question tokens under the tokenizer
// the file was made for); `tokens` what the generator counted. The probe
// is a text and its ids under that tokenizer: a model whose tokenizer gives
// other ids is refused (the lengths would mean nothing).
#ifndef KVFOLD_LAUNCH_TASKS_FILE_H_
#define KVFOLD_LAUNCH_TASKS_FILE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kvfold {

// The tasks kvfold knows how to score (exact match of the answer text).
const std::vector<std::string>& KnownTasks();

struct TaskSample {
  int line = 0;  // 1-based line of the file
  std::string id;
  std::string task;
  int64_t length = 0;
  int64_t tokens = 0;
  std::string document;
  std::string question;
  std::string answer;
};

struct TasksFile {
  std::string path;
  int64_t seed = 0;
  std::string probe_text;
  std::vector<int32_t> probe_ids;
  std::vector<TaskSample> samples;
};

// Parses the file's text. Errors name `path` and the line: not JSON, no
// header, an unknown task, a missing or empty field, an id given twice.
absl::StatusOr<TasksFile> ParseTasks(absl::string_view text, const std::string& path);
absl::StatusOr<TasksFile> ReadTasks(const std::string& path);

// The samples whose task is in `tasks` and length in `lengths` (empty: any),
// at most `per_group` (> 0) of each (task, length), in file order.
// `tasks` entries must be known task names.
absl::StatusOr<std::vector<TaskSample>> SelectSamples(const TasksFile& file,
                                                      const std::vector<std::string>& tasks,
                                                      const std::vector<int64_t>& lengths,
                                                      int64_t per_group);

}  // namespace kvfold

#endif  // KVFOLD_LAUNCH_TASKS_FILE_H_
