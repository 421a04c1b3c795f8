#include "launch/tasks_file.h"

#include <map>
#include <set>
#include <utility>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "kernels/status_macros.h"
#include "models/files.h"
#include "models/json_parse.h"

namespace kvfold {
namespace {

constexpr size_t kMaxTasksBytes = size_t{1} << 34;

absl::Status LineError(const std::string& path, int line, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(path, ":", line, ": ", what));
}

absl::StatusOr<nlohmann::json> ParseLine(absl::string_view text, const std::string& path,
                                         int line) {
  KVFOLD_ASSIGN_OR_RETURN(nlohmann::json o, ParseJsonLimited(text, absl::StrCat(path, ":", line)));
  if (!o.is_object()) return LineError(path, line, "expected a JSON object");
  return o;
}

// A string field that must be present and non-empty.
absl::StatusOr<std::string> Text(const nlohmann::json& o, const char* key,
                                 const std::string& path, int line) {
  if (!o.contains(key) || !o[key].is_string() || o[key].get<std::string>().empty()) {
    return LineError(path, line, absl::StrCat("\"", key, "\" must be a non-empty string"));
  }
  return o[key].get<std::string>();
}

absl::StatusOr<int64_t> Count(const nlohmann::json& o, const char* key,
                              const std::string& path, int line) {
  if (!o.contains(key) || !o[key].is_number_integer() || o[key].get<int64_t>() <= 0) {
    return LineError(path, line, absl::StrCat("\"", key, "\" must be a positive integer"));
  }
  return o[key].get<int64_t>();
}

absl::Status ParseHeader(const nlohmann::json& h, const std::string& path, TasksFile& file) {
  if (!h.contains("kvfold_tasks")) {
    return LineError(path, 1,
                     "not a kvfold task file (the first line must be the header "
                     "{\"kvfold_tasks\": 1, ...} that tools/tasks/make_tasks.py writes)");
  }
  if (h["kvfold_tasks"] != 1) {
    return LineError(path, 1, absl::StrCat("task file version ", h["kvfold_tasks"].dump(),
                                           " (this kvfold reads version 1)"));
  }
  if (h.contains("seed") && h["seed"].is_number_integer()) file.seed = h["seed"];
  const nlohmann::json* probe = h.contains("tokenizer_probe") ? &h["tokenizer_probe"] : nullptr;
  if (probe == nullptr || !probe->is_object() || !probe->contains("text") ||
      !(*probe)["text"].is_string() || !probe->contains("ids") || !(*probe)["ids"].is_array()) {
    return LineError(path, 1, "header: \"tokenizer_probe\" must be {\"text\": ..., \"ids\": [...]}");
  }
  file.probe_text = (*probe)["text"];
  for (const nlohmann::json& id : (*probe)["ids"]) {
    if (!id.is_number_integer()) return LineError(path, 1, "header: probe ids must be integers");
    file.probe_ids.push_back(id.get<int32_t>());
  }
  return absl::OkStatus();
}

}  // namespace

const std::vector<std::string>& KnownTasks() {
  static const std::vector<std::string> kTasks = {"passkey", "niah_multikey", "kv", "vt", "qa"};
  return kTasks;
}

absl::StatusOr<TasksFile> ParseTasks(absl::string_view text, const std::string& path) {
  TasksFile file;
  file.path = path;
  std::set<std::string> ids;
  const std::set<std::string> known(KnownTasks().begin(), KnownTasks().end());
  int line = 0;
  bool header = false;
  for (absl::string_view row : absl::StrSplit(text, '\n')) {
    ++line;
    if (row.find_first_not_of(" \t\r") == absl::string_view::npos) continue;
    KVFOLD_ASSIGN_OR_RETURN(nlohmann::json o, ParseLine(row, path, line));
    if (!header) {
      KVFOLD_RETURN_IF_ERROR(ParseHeader(o, path, file));
      header = true;
      continue;
    }
    TaskSample s;
    s.line = line;
    KVFOLD_ASSIGN_OR_RETURN(s.id, Text(o, "id", path, line));
    KVFOLD_ASSIGN_OR_RETURN(s.task, Text(o, "task", path, line));
    if (!known.count(s.task)) {
      return LineError(path, line, absl::StrCat("unknown task \"", s.task, "\" (known: ",
                                                absl::StrJoin(KnownTasks(), ", "), ")"));
    }
    KVFOLD_ASSIGN_OR_RETURN(s.length, Count(o, "length", path, line));
    KVFOLD_ASSIGN_OR_RETURN(s.tokens, Count(o, "tokens", path, line));
    KVFOLD_ASSIGN_OR_RETURN(s.document, Text(o, "document", path, line));
    KVFOLD_ASSIGN_OR_RETURN(s.question, Text(o, "question", path, line));
    KVFOLD_ASSIGN_OR_RETURN(s.answer, Text(o, "answer", path, line));
    if (!ids.insert(s.id).second) {
      return LineError(path, line, absl::StrCat("id \"", s.id, "\" given twice"));
    }
    file.samples.push_back(std::move(s));
  }
  if (!header) return absl::InvalidArgumentError(absl::StrCat(path, ": empty task file"));
  if (file.samples.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": no samples after the header"));
  }
  return file;
}

absl::StatusOr<TasksFile> ReadTasks(const std::string& path) {
  KVFOLD_ASSIGN_OR_RETURN(std::string text, ReadTextFile(path, kMaxTasksBytes));
  return ParseTasks(text, path);
}

absl::StatusOr<std::vector<TaskSample>> SelectSamples(const TasksFile& file,
                                                      const std::vector<std::string>& tasks,
                                                      const std::vector<int64_t>& lengths,
                                                      int64_t per_group) {
  const std::set<std::string> known(KnownTasks().begin(), KnownTasks().end());
  for (const std::string& t : tasks) {
    if (!known.count(t)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--eval_tasks: unknown task \"", t, "\" (known: ", absl::StrJoin(KnownTasks(), ", "),
          ")"));
    }
  }
  const std::set<std::string> want_tasks(tasks.begin(), tasks.end());
  const std::set<int64_t> want_lengths(lengths.begin(), lengths.end());
  std::map<std::pair<std::string, int64_t>, int64_t> taken;
  std::vector<TaskSample> out;
  for (const TaskSample& s : file.samples) {
    if (!want_tasks.empty() && !want_tasks.count(s.task)) continue;
    if (!want_lengths.empty() && !want_lengths.count(s.length)) continue;
    int64_t& n = taken[{s.task, s.length}];
    if (per_group > 0 && n >= per_group) continue;
    ++n;
    out.push_back(s);
  }
  if (out.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        file.path, ": no sample matches --eval_tasks/--eval_lengths"));
  }
  return out;
}

}  // namespace kvfold
