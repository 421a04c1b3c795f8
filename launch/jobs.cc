#include "launch/jobs.h"

#include <unistd.h>

#include <filesystem>
#include <map>

#include <nlohmann/json.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "google/protobuf/util/json_util.h"
#include "kernels/status_macros.h"
#include "models/files.h"
#include "models/json_parse.h"

namespace kvfold {
namespace {

// Inputs may carry whole documents inline.
constexpr size_t kMaxInputBytes = size_t{1} << 36;
constexpr int kMaxListedErrors = 10;

// nlohmann's "[json.exception.parse_error.101] parse error at line 1, ..."
// without the bracketed tag.
bool Has(const nlohmann::json& o, const char* snake, const char* camel) {
  return o.contains(snake) || o.contains(camel);
}

// A field of Job under its proto or JSON name.
bool KnownField(const std::string& key) {
  const google::protobuf::Descriptor* d = Job::descriptor();
  return d->FindFieldByName(key) != nullptr || d->FindFieldByCamelcaseName(key) != nullptr;
}

// The shapes protobuf's JSON mapping would refuse but a person writes:
// "question": "text" and "question_ids": [[1, 2], [3]].
void Normalize(nlohmann::json& o) {
  if (o.contains("question") && o["question"].is_string()) {
    o["question"] = nlohmann::json::array({o["question"]});
  }
  for (const char* key : {"question_ids", "questionIds"}) {
    if (!o.contains(key) || !o[key].is_array()) continue;
    for (nlohmann::json& q : o[key]) {
      if (q.is_array()) q = nlohmann::json{{"ids", q}};
    }
  }
}

// Checks between fields; the values themselves are checked later.
absl::Status CheckFields(const nlohmann::json& o, const Job& job) {
  const int sources = Has(o, "document", "document") +
                      Has(o, "document_file", "documentFile") +
                      Has(o, "document_ids", "documentIds");
  if (sources != 1) {
    return absl::InvalidArgumentError(
        "give exactly one of \"document\", \"document_file\" and \"document_ids\"");
  }
  if (Has(o, "document", "document") && job.document().empty()) {
    return absl::InvalidArgumentError("empty document");
  }
  if (Has(o, "document_file", "documentFile") && job.document_file().empty()) {
    return absl::InvalidArgumentError("empty document_file");
  }
  if (Has(o, "document_ids", "documentIds") && job.document_ids().empty()) {
    return absl::InvalidArgumentError("empty document_ids");
  }
  if (job.document_ids().empty() && job.question_ids_size() > 0) {
    return absl::InvalidArgumentError("\"question_ids\" go with \"document_ids\"");
  }
  if (!job.document_ids().empty() && job.question_size() > 0) {
    return absl::InvalidArgumentError(
        "text questions need a text document: give \"question_ids\" with \"document_ids\"");
  }
  for (int i = 0; i < job.question_size(); ++i) {
    if (job.question(i).empty()) {
      return absl::InvalidArgumentError(absl::StrCat("question ", i, " is empty"));
    }
  }
  for (int i = 0; i < job.question_ids_size(); ++i) {
    if (job.question_ids(i).ids().empty()) {
      return absl::InvalidArgumentError(absl::StrCat("question_ids ", i, " is empty"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<JobLine> ParseJobLine(absl::string_view text, int line, const std::string& where,
                                     std::vector<std::string>* warnings) {
  KVFOLD_ASSIGN_OR_RETURN(nlohmann::json o, ParseJsonLimited(text, where));
  if (!o.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": expected a JSON object"));
  }
  JobLine j;
  j.line = line;
  if (!o.contains("id")) return absl::InvalidArgumentError(absl::StrCat(where, ": no \"id\""));
  const nlohmann::json& id = o["id"];
  if (id.is_string()) {
    j.id = id.get<std::string>();
  } else if (id.is_number_integer()) {
    j.id = std::to_string(id.get<int64_t>());
    o["id"] = j.id;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": \"id\" must be a string or an integer, got ",
                     id.is_structured() ? id.type_name() : id.dump()));
  }
  if (j.id.empty()) return absl::InvalidArgumentError(absl::StrCat(where, ": empty \"id\""));
  for (auto it = o.begin(); it != o.end();) {
    if (KnownField(it.key())) {
      ++it;
      continue;
    }
    if (warnings != nullptr) {
      warnings->push_back(absl::StrCat(where, ": unknown field \"", it.key(), "\" (ignored)"));
    }
    it = o.erase(it);
  }
  Normalize(o);
  if (o.contains("cache") && o["cache"].is_object()) {
    for (const char* key : {"question_aware", "questionAware"}) {
      if (o["cache"].contains(key) && o["cache"][key].is_boolean()) {
        j.question_aware = o["cache"][key].get<bool>();
      }
    }
  }
  const auto bad = [&](absl::string_view message) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": job \"", j.id, "\": ", message));
  };
  // Protobuf 3.21 has its own Status type.
  const auto parsed = google::protobuf::util::JsonStringToMessage(o.dump(), &j.job);
  if (!parsed.ok()) {
    j.status = bad(std::string(parsed.message()));
    return j;
  }
  const absl::Status fields = CheckFields(o, j.job);
  if (!fields.ok()) j.status = bad(fields.message());
  return j;
}

absl::StatusOr<JobsFile> ReadJobs(const std::string& path) {
  KVFOLD_ASSIGN_OR_RETURN(std::string text, ReadTextFile(path, kMaxInputBytes));
  JobsFile f;
  f.path = path;
  const std::filesystem::path dir = std::filesystem::path(path).parent_path();
  std::vector<std::string> errors;
  std::map<std::string, int> first_line;
  int line = 0;
  for (absl::string_view s : absl::StrSplit(text, '\n')) {
    ++line;
    if (absl::StripAsciiWhitespace(s).empty()) continue;
    const std::string where = absl::StrCat(path, ":", line);
    absl::StatusOr<JobLine> j = ParseJobLine(s, line, where, &f.warnings);
    if (!j.ok()) {
      errors.emplace_back(j.status().message());
      continue;
    }
    auto [it, fresh] = first_line.emplace(j->id, line);
    if (!fresh) {
      errors.push_back(absl::StrCat(where, ": id \"", j->id, "\" is already used on line ",
                                    it->second));
      continue;
    }
    if (j->status.ok() && !j->job.document_file().empty()) {
      std::filesystem::path doc(j->job.document_file());
      if (doc.is_relative()) doc = dir / doc;
      j->job.set_document_file(doc.string());
      std::error_code ec;
      if (!std::filesystem::is_regular_file(doc, ec) || access(doc.c_str(), R_OK) != 0) {
        j->status = absl::NotFoundError(absl::StrCat(
            where, ": job \"", j->id, "\": document_file ", doc.string(),
            " is not a readable file"));
      }
    }
    f.jobs.push_back(std::move(*j));
  }
  if (!errors.empty()) {
    const size_t listed = std::min<size_t>(errors.size(), kMaxListedErrors);
    std::string message = absl::StrJoin(errors.begin(), errors.begin() + listed, "\n  ");
    if (errors.size() > listed) {
      absl::StrAppend(&message, "\n  ... and ", errors.size() - listed, " more");
    }
    return absl::InvalidArgumentError(absl::StrCat(
        errors.size(), " bad line", errors.size() == 1 ? "" : "s", " in the input (nothing was run):\n  ",
        message));
  }
  if (f.jobs.empty()) return absl::InvalidArgumentError(absl::StrCat(path, ": no jobs"));
  return f;
}

absl::StatusOr<GenerateOptions> JobGenerateOptions(const Job& job, const GenerateOptions& run) {
  GenerateOptions o = run;
  if (job.has_max_new_tokens()) o.max_new_tokens = job.max_new_tokens();
  if (job.has_temperature()) o.sampling.temperature = static_cast<float>(job.temperature());
  if (job.has_top_k()) o.sampling.top_k = job.top_k();
  if (job.has_top_p()) o.sampling.top_p = static_cast<float>(job.top_p());
  if (job.has_seed()) o.seed = job.seed();
  if (job.has_ignore_eos()) o.stop_at_eos = !job.ignore_eos();
  KVFOLD_RETURN_IF_ERROR(ValidateGenerateOptions(o));
  return o;
}

CacheConfig JobCacheConfig(const JobLine& j, const CacheConfig& run) {
  CacheConfig c = run;
  const CacheConfig& o = j.job.cache();
  if (o.policy_case() != CacheConfig::POLICY_NOT_SET && o.policy_case() != c.policy_case()) {
    c.clear_policy();
  }
  // Same policy: its fields merge; another one replaces the run's.
  CacheConfig policy_only = o;
  policy_only.set_slots(0);
  policy_only.clear_layer_slots();
  policy_only.set_question_aware(false);
  c.MergeFrom(policy_only);
  if (o.slots() != 0) {
    c.set_slots(o.slots());
    c.clear_layer_slots();
  }
  if (o.layer_slots_size() > 0) {
    c.set_slots(0);
    *c.mutable_layer_slots() = o.layer_slots();
  }
  if (j.question_aware) c.set_question_aware(*j.question_aware);
  return c;
}

}  // namespace kvfold
