// kvfold eval: exact-match accuracy of a model and cache policy on a task
// file of tools/tasks/make_tasks.py, per task and length, as JSON.
//
// Every sample is checked before the model is loaded: the model's
// tokenizer must give the file's probe ids (the lengths were counted with
// it), and a prompt longer than the model's max_position_embeddings is an
// error. Answers are greedy by default; an answer is right when its text,
// trimmed, equals the expected answer. Each sample's prediction is
// appended to --predictions as soon as it is known.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/flags/flag.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "cache/policies.h"
#include "google/protobuf/util/json_util.h"
#include "kernels/status_macros.h"
#include "launch/chat_prompt.h"
#include "launch/commands.h"
#include "launch/flags.h"
#include "launch/prompt.h"
#include "launch/ranks.h"
#include "launch/report.h"
#include "launch/tasks_file.h"
#include "models/tokenizer/tokenizer.h"
#include "runtime/engine.h"

ABSL_DECLARE_FLAG(std::string, output);
ABSL_FLAG(std::string, tasks, "", "eval: task file (tools/tasks/make_tasks.py)");
ABSL_FLAG(std::string, eval_tasks, "",
          "eval: comma-separated task names to run (default: all in the file)");
ABSL_FLAG(std::string, eval_lengths, "",
          "eval: comma-separated lengths to run (default: all in the file)");
ABSL_FLAG(int64_t, per_group, 0, "eval: samples per (task, length) at most; 0 = all");
ABSL_FLAG(std::string, predictions, "",
          "eval: JSONL file each sample's answer is appended to as it is known");

namespace kvfold {
namespace {

using Clock = std::chrono::steady_clock;

std::vector<std::string> SplitList(const std::string& text) {
  std::vector<std::string> out;
  for (absl::string_view s : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    out.emplace_back(absl::StripAsciiWhitespace(s));
  }
  return out;
}

absl::StatusOr<std::vector<int64_t>> Lengths(const std::string& text) {
  std::vector<int64_t> out;
  for (const std::string& s : SplitList(text)) {
    int64_t n = 0;
    if (!absl::SimpleAtoi(s, &n) || n <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("--eval_lengths: \"", s, "\" is not a positive integer"));
    }
    out.push_back(n);
  }
  return out;
}

struct Item {
  const TaskSample* sample;
  Prompt prompt;
  int64_t answer_tokens = 0;
};

// Per (task, length) totals.
struct Group {
  int64_t samples = 0, correct = 0, prompt_tokens = 0, cache_bytes = 0;
  double compression = 0, seconds = 0;
};

nlohmann::ordered_json GroupJson(const std::string& task, int64_t length, const Group& g) {
  return {{"task", task},
          {"length", length},
          {"samples", g.samples},
          {"correct", g.correct},
          {"accuracy", g.samples ? double(g.correct) / g.samples : 0.0},
          {"mean_prompt_tokens", g.samples ? double(g.prompt_tokens) / g.samples : 0.0},
          {"mean_compression_ratio", g.samples ? g.compression / g.samples : 0.0},
          {"peak_cache_bytes", g.cache_bytes},
          {"seconds", g.seconds}};
}

// The file's probe under the model's tokenizer: other ids mean the task file
// was made for another tokenizer.
absl::Status CheckProbe(const TasksFile& file, const Tokenizer& tokenizer) {
  KVFOLD_ASSIGN_OR_RETURN(std::vector<int32_t> ids, tokenizer.Encode(file.probe_text, false));
  if (ids == file.probe_ids) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      file.path, " was made for another tokenizer: its probe text encodes to ",
      ids.size(), " ids under ", tokenizer.name(), " but to ", file.probe_ids.size(),
      " in the file (regenerate it with tools/tasks/make_tasks.py --tokenizer=<the model>)"));
}

}  // namespace

absl::Status RunEval(Ranks& ranks) {
  const std::string model_dir = absl::GetFlag(FLAGS_model);
  std::optional<Tokenizer> tokenizer;
  std::optional<TasksFile> file;
  std::vector<TaskSample> samples;
  std::vector<Item> items;
  EngineOptions options;
  GenerateOptions generate;
  std::optional<std::ofstream> predictions;
  absl::Status prepared = [&]() -> absl::Status {
    if (absl::GetFlag(FLAGS_tasks).empty()) return absl::InvalidArgumentError("--tasks is required");
    if (model_dir.empty()) return absl::InvalidArgumentError("--model is required");
    if (TextFlagsGiven()) {
      return absl::InvalidArgumentError("eval reads its documents from --tasks, not --text*");
    }
    KVFOLD_ASSIGN_OR_RETURN(options, EngineOptionsFromFlags());
    KVFOLD_ASSIGN_OR_RETURN(generate, GenerateOptionsFromFlags());
    KVFOLD_ASSIGN_OR_RETURN(file, ReadTasks(absl::GetFlag(FLAGS_tasks)));
    const std::vector<std::string> names = SplitList(absl::GetFlag(FLAGS_eval_tasks));
    KVFOLD_ASSIGN_OR_RETURN(std::vector<int64_t> lengths,
                            Lengths(absl::GetFlag(FLAGS_eval_lengths)));
    if (absl::GetFlag(FLAGS_per_group) < 0) {
      return absl::InvalidArgumentError("--per_group must be >= 0");
    }
    KVFOLD_ASSIGN_OR_RETURN(samples,
                            SelectSamples(*file, names, lengths, absl::GetFlag(FLAGS_per_group)));
    KVFOLD_ASSIGN_OR_RETURN(ModelConfig config,
                            ModelConfig::FromFile(model_dir + "/config.json"));
    if (!std::filesystem::exists(model_dir + "/tokenizer.json")) {
      return absl::InvalidArgumentError(
          absl::StrCat(model_dir, " has no tokenizer.json (eval tokenizes the task file)"));
    }
    KVFOLD_ASSIGN_OR_RETURN(tokenizer, Tokenizer::FromDirectory(model_dir));
    KVFOLD_RETURN_IF_ERROR(CheckProbe(*file, *tokenizer));
    KVFOLD_ASSIGN_OR_RETURN(TextPrompter prompter,
                            TextPrompter::Create(*tokenizer, model_dir, absl::GetFlag(FLAGS_chat)));
    for (const TaskSample& s : samples) {
      const std::string where = absl::StrCat(file->path, ":", s.line);
      Item item{&s};
      KVFOLD_ASSIGN_OR_RETURN(item.prompt, prompter.Build(s.document, {s.question},
                                                          absl::GetFlag(FLAGS_system), where));
      KVFOLD_RETURN_IF_ERROR(CheckIds(item.prompt, config.vocab_size, &*tokenizer, where + ": "));
      KVFOLD_ASSIGN_OR_RETURN(std::vector<int32_t> answer,
                              tokenizer->Encode(" " + s.answer, false));
      item.answer_tokens = static_cast<int64_t>(answer.size());
      const int64_t total = static_cast<int64_t>(item.prompt.document.size() +
                                                 item.prompt.questions[0].size()) +
                            item.answer_tokens + 1;
      if (config.max_position_embeddings > 0 && total > config.max_position_embeddings) {
        return absl::InvalidArgumentError(absl::StrCat(
            where, ": ", s.task, " of length ", s.length, " needs ", total,
            " positions (prompt + answer), beyond the model's max_position_embeddings of ",
            config.max_position_embeddings, " (", model_dir, "/config.json)"));
      }
      items.push_back(std::move(item));
    }
    const std::string pred = absl::GetFlag(FLAGS_predictions);
    if (!pred.empty() && ranks.writer()) {
      predictions.emplace(pred, std::ios::app);
      if (!*predictions) return absl::InvalidArgumentError(absl::StrCat("cannot open ", pred));
    }
    return absl::OkStatus();
  }();
  std::vector<Prompt> prompts;
  for (const Item& item : items) prompts.push_back(item.prompt);
  KVFOLD_ASSIGN_OR_RETURN(
      std::unique_ptr<LlamaModel> model,
      StartModel(ranks, prepared, options, prompts, tokenizer ? &*tokenizer : nullptr));
  // The mesh is known once the model has started (every rank sees the same).
  if (ranks.dp_size() > 1) {
    return absl::InvalidArgumentError("eval runs one model replica: use --tp, not more ranks");
  }
  Engine engine(*model, options);
  const bool say = ranks.writer();
  std::map<std::pair<std::string, int64_t>, Group> groups;
  int64_t correct = 0, tokens_in = 0;
  const Clock::time_point start = Clock::now();
  const size_t batch = static_cast<size_t>(std::max(1, options.batch));
  for (size_t first = 0; first < items.size(); first += batch) {
    const size_t end = std::min(items.size(), first + batch);
    std::vector<AnswerRequest> requests;
    for (size_t i = first; i < end; ++i) {
      AnswerRequest r;
      r.document = items[i].prompt.document;
      r.questions = items[i].prompt.questions;
      r.options = generate;
      // Room for the answer, its eos and a few more: a longer output is wrong anyway.
      r.options.max_new_tokens = std::min(generate.max_new_tokens, items[i].answer_tokens + 4);
      requests.push_back(std::move(r));
    }
    const Clock::time_point t0 = Clock::now();
    std::vector<absl::StatusOr<std::vector<GenerateResult>>> results =
        engine.AnswerBatch(requests);
    const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    for (size_t i = first; i < end; ++i) {
      const Item& item = items[i];
      absl::StatusOr<std::vector<GenerateResult>>& r = results[i - first];
      if (!r.ok()) {
        return absl::Status(r.status().code(),
                            absl::StrCat(file->path, ":", item.sample->line, " (",
                                         item.sample->id, "): ", r.status().message()));
      }
      const GenerateResult& g = r->front();
      std::vector<int32_t> ids = g.tokens;
      if (g.stopped_at_eos && !ids.empty()) ids.pop_back();
      const std::string text = tokenizer->Decode(ids, true);
      const std::string got(absl::StripAsciiWhitespace(text));
      const bool ok = g.stopped_at_eos && got == item.sample->answer;
      Group& grp = groups[{item.sample->task, item.sample->length}];
      ++grp.samples;
      grp.correct += ok;
      grp.prompt_tokens += g.prompt_tokens;
      grp.compression += g.document_cache.compression_ratio;
      grp.cache_bytes = std::max({grp.cache_bytes, g.document_cache.bytes, g.cache.bytes});
      grp.seconds += seconds / double(end - first);
      correct += ok;
      tokens_in += g.prompt_tokens;
      if (!say) continue;
      if (predictions) {
        *predictions << nlohmann::ordered_json{{"id", item.sample->id},
                                               {"task", item.sample->task},
                                               {"length", item.sample->length},
                                               {"answer", item.sample->answer},
                                               {"prediction", got},
                                               {"correct", ok},
                                               {"prompt_tokens", g.prompt_tokens},
                                               {"compression_ratio",
                                                g.document_cache.compression_ratio}}
                             .dump()
                      << "\n";
        predictions->flush();
      }
      std::fprintf(stderr, "eval %zu/%zu %s: %s (expected \"%s\", got \"%s\") accuracy so far %.3f\n",
                   i + 1, items.size(), item.sample->id.c_str(), ok ? "right" : "wrong",
                   item.sample->answer.c_str(), got.c_str(), double(correct) / double(i + 1));
    }
  }
  if (!say) return absl::OkStatus();
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  nlohmann::ordered_json by_group = nlohmann::ordered_json::array();
  std::map<std::string, std::pair<int64_t, int64_t>> by_task;
  for (const auto& [key, g] : groups) {
    by_group.push_back(GroupJson(key.first, key.second, g));
    by_task[key.first].first += g.correct;
    by_task[key.first].second += g.samples;
  }
  nlohmann::ordered_json tasks = nlohmann::ordered_json::object();
  for (const auto& [name, cs] : by_task) tasks[name] = double(cs.first) / double(cs.second);
  std::string cache_json;
  auto to_json = google::protobuf::util::MessageToJsonString(options.cache, &cache_json);
  if (!to_json.ok()) cache_json = "{}";
  const nlohmann::ordered_json out = {
      {"model", model_dir},
      {"tasks_file", file->path},
      {"cache_policy", PolicyName(options.cache)},
      {"cache", nlohmann::json::parse(cache_json, nullptr, false)},
      {"samples", items.size()},
      {"correct", correct},
      {"accuracy", double(correct) / double(items.size())},
      {"accuracy_by_task", tasks},
      {"groups", by_group},
      {"seconds", seconds},
      {"prompt_tokens_per_second", seconds > 0 ? double(tokens_in) / seconds : 0.0},
      {"peak_rss_bytes", PeakRssBytes()},
      {"tp", ranks.mesh().tp_size()},
      {"sp", ranks.mesh().sp_size()}};
  const std::string path = absl::GetFlag(FLAGS_output);
  if (path.empty()) {
    std::fputs((out.dump(2) + "\n").c_str(), stdout);
    return absl::OkStatus();
  }
  return WriteFileAtomically(path, out.dump(2) + "\n");
}

}  // namespace kvfold
