// kvfold run: the batch job. Every rank reads the job file; world rank 0
// (the writer) hands jobs out to the data-parallel replicas as they ask for
// them, answers its own share, and appends every result line to --output as
// soon as it arrives. A replica answers up to --batch jobs together: each
// document is prefilled and compressed once, and every question of every
// job in the batch decodes in one dense batch.
#include "launch/run.h"

#include <unistd.h>

#include <algorithm>
#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "cache/policies.h"
#include "kernels/status_macros.h"
#include "launch/commands.h"
#include "launch/flags.h"
#include "launch/jobs.h"
#include "launch/progress.h"
#include "launch/prompt.h"
#include "launch/ranks.h"
#include "launch/report.h"
#include "launch/results_file.h"
#include "models/files.h"
#include "models/tokenizer/tokenizer.h"
#include "runtime/engine.h"

ABSL_FLAG(std::string, input, "", "run: JSONL file of jobs, one per line (README \"kvfold run\")");
ABSL_FLAG(std::string, output, "",
          "run: JSONL results, one line per job, appended as jobs finish; a rerun "
          "skips the ids already there");
ABSL_FLAG(std::string, summary, "",
          "run: where the end-of-run summary JSON goes (default OUTPUT.summary.json)");
ABSL_FLAG(double, progress_interval, 30,
          "run: seconds between progress lines when stderr is not a terminal");
ABSL_FLAG(int64_t, max_document_tokens, 0,
          "run: a job whose document has more tokens fails (0 = no limit)");

namespace kvfold {
namespace {

// Point-to-point messages between replica leaders and the writer. A leader's
// messages share one tag, so the writer receives them in the order they were
// sent (MPI orders messages only within a tag): a leader's results always
// arrive before its next request. The writer answers requests between its
// own steps, so a leader waits for an assignment for Ranks::silence_limit()
// (a collective's timeout and health check, with a margin: if the writer is
// stuck in a collective, it reports first); and a leader that sends nothing
// at all (no result, no request, no heartbeat) for that long has stopped:
// the writer ends the job naming it.
constexpr int kLeaderTag = 11;  // 'R' + result line, 'Q' + jobs wanted, 'H' (alive)
constexpr int kAssignTag = 13;  // job indices ("" = no more), writer -> leader
// Once every job is handed out, the writer tells the ranks that wait for the
// rest to finish that it is alive ('H'), then that all is done ('D').
constexpr int kWriterTag = 15;

constexpr size_t kMaxDocumentBytes = size_t{1} << 33;

// What every rank knows before the first job.
struct Setup {
  std::string model_dir;
  EngineOptions options;
  GenerateOptions generate;
  JobsFile input;
  ModelConfig config;
  std::unique_ptr<Tokenizer> tokenizer;  // null: the model has none
  std::optional<TextPrompter> prompter;  // with the tokenizer
  int64_t max_document_tokens = 0;
};

bool HasText(const Job& job) { return job.document_ids().empty(); }

absl::Status LoadTokenizer(Setup& s) {
  bool needed = false;
  for (const JobLine& j : s.input.jobs) needed |= HasText(j.job);
  const std::string path = s.model_dir + "/tokenizer.json";
  if (!needed && !std::filesystem::exists(path)) return absl::OkStatus();
  absl::StatusOr<Tokenizer> t = Tokenizer::FromDirectory(s.model_dir);
  if (!t.ok()) {
    if (needed) {
      return absl::Status(t.status().code(), absl::StrCat("jobs with text need the model's "
                                                          "tokenizer: ", t.status().message()));
    }
    std::fprintf(stderr, "kvfold: warning: answers will have ids only: %s\n",
                 std::string(t.status().message()).c_str());
    return absl::OkStatus();
  }
  s.tokenizer = std::make_unique<Tokenizer>(std::move(*t));
  KVFOLD_ASSIGN_OR_RETURN(TextPrompter p, TextPrompter::Create(*s.tokenizer, s.model_dir,
                                                               absl::GetFlag(FLAGS_chat)));
  s.prompter.emplace(std::move(p));
  return absl::OkStatus();
}

// Flags and inputs, checked on every rank before the model is loaded.
absl::Status Prepare(Setup& s) {
  const std::pair<const char*, std::string> document_flags[] = {
      {"ids", absl::GetFlag(FLAGS_ids)},
      {"ids_file", absl::GetFlag(FLAGS_ids_file)},
      {"text", absl::GetFlag(FLAGS_text)},
      {"text_file", absl::GetFlag(FLAGS_text_file)},
      {"question", absl::GetFlag(FLAGS_question)},
      {"questions_file", absl::GetFlag(FLAGS_questions_file)},
      {"questions", absl::GetFlag(FLAGS_questions)},
      {"documents_file", absl::GetFlag(FLAGS_documents_file)}};
  for (const auto& [flag, value] : document_flags) {
    if (!value.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--", flag, ": run takes its documents and questions from --input"));
    }
  }
  s.model_dir = absl::GetFlag(FLAGS_model);
  const std::string input = absl::GetFlag(FLAGS_input), output = absl::GetFlag(FLAGS_output);
  if (input.empty()) return absl::InvalidArgumentError("--input is required (a JSONL job file)");
  if (output.empty()) return absl::InvalidArgumentError("--output is required (a JSONL file)");
  std::error_code ec;
  if (std::filesystem::equivalent(input, output, ec)) {
    return absl::InvalidArgumentError("--output must not be the --input file");
  }
  s.max_document_tokens = absl::GetFlag(FLAGS_max_document_tokens);
  if (s.max_document_tokens < 0) {
    return absl::InvalidArgumentError("--max_document_tokens must be >= 0");
  }
  if (absl::GetFlag(FLAGS_progress_interval) < 0) {
    return absl::InvalidArgumentError("--progress_interval must be >= 0");
  }
  KVFOLD_ASSIGN_OR_RETURN(s.options, EngineOptionsFromFlags());
  KVFOLD_ASSIGN_OR_RETURN(s.generate, GenerateOptionsFromFlags());
  KVFOLD_ASSIGN_OR_RETURN(s.input, ReadJobs(input));
  if (s.model_dir.empty()) return absl::InvalidArgumentError("--model is required");
  KVFOLD_ASSIGN_OR_RETURN(s.config, ModelConfig::FromFile(s.model_dir + "/config.json"));
  return LoadTokenizer(s);
}

// One job made ready for the engine (on every rank of its replica).
struct ReadyJob {
  const JobLine* job = nullptr;
  absl::Status status;
  Prompt prompt;
  GenerateOptions generate;
  CacheConfig cache;
};

ReadyJob MakeReady(const Setup& s, const JobLine& j) {
  ReadyJob r;
  r.job = &j;
  r.status = [&]() -> absl::Status {
    KVFOLD_RETURN_IF_ERROR(j.status);
    KVFOLD_ASSIGN_OR_RETURN(r.generate, JobGenerateOptions(j.job, s.generate));
    r.cache = JobCacheConfig(j, s.options.cache);
    EngineOptions o = s.options;
    o.cache = r.cache;
    KVFOLD_RETURN_IF_ERROR(ValidateCacheOptions(o, s.config));
    KVFOLD_RETURN_IF_ERROR(ValidateSpOptions(o, absl::GetFlag(FLAGS_sp)));
    if (!HasText(j.job)) {
      r.prompt.document.assign(j.job.document_ids().begin(), j.job.document_ids().end());
      for (const TokenIds& q : j.job.question_ids()) {
        r.prompt.questions.emplace_back(q.ids().begin(), q.ids().end());
      }
    } else {
      if (!s.prompter) return absl::FailedPreconditionError("text needs the model's tokenizer");
      std::string text = j.job.document(), what = "the document";
      if (!j.job.document_file().empty()) {
        what = j.job.document_file();
        KVFOLD_ASSIGN_OR_RETURN(text, ReadTextFile(what, kMaxDocumentBytes));
        if (text.empty()) return absl::InvalidArgumentError(what + ": empty document");
      }
      const std::vector<std::string> questions(j.job.question().begin(), j.job.question().end());
      const std::string system =
          j.job.has_system() ? j.job.system() : absl::GetFlag(FLAGS_system);
      KVFOLD_ASSIGN_OR_RETURN(r.prompt, s.prompter->Build(text, questions, system, what));
    }
    KVFOLD_RETURN_IF_ERROR(CheckIds(r.prompt, s.config.vocab_size, s.tokenizer.get(), ""));
    const int64_t n = static_cast<int64_t>(r.prompt.document.size());
    if (s.max_document_tokens > 0 && n > s.max_document_tokens) {
      return absl::OutOfRangeError(absl::StrCat("the document has ", n,
                                                " tokens, over --max_document_tokens=",
                                                s.max_document_tokens));
    }
    return absl::OkStatus();
  }();
  if (!r.status.ok() && j.status.ok()) {
    r.status = absl::Status(r.status.code(), absl::StrCat(s.input.path, ":", j.line, ": job \"",
                                                          j.id, "\": ", r.status.message()));
  }
  return r;
}

std::string ErrorLine(const JobLine& j, const absl::Status& status, int replica) {
  return nlohmann::ordered_json{{"id", j.id},
                        {"line", j.line},
                        {"error", std::string(status.message())},
                        {"replica", replica}}
      .dump();
}

std::string ResultLine(const Setup& s, const ReadyJob& r, const std::vector<GenerateResult>& results,
                       double wall, int replica) {
  nlohmann::ordered_json answers = nlohmann::ordered_json::array();
  int64_t tokens_out = 0;
  double prefill = 0, decode = 0;
  int64_t peak_bytes = 0;
  for (size_t i = 0; i < results.size(); ++i) {
    const GenerateResult& g = results[i];
    nlohmann::ordered_json a;
    if (!r.prompt.questions.empty()) {
      a["question"] = HasText(r.job->job) ? nlohmann::ordered_json(r.job->job.question(int(i)))
                                          : nlohmann::ordered_json(i);
    }
    if (s.tokenizer) a["text"] = s.tokenizer->Decode(g.tokens, /*skip_special_tokens=*/true);
    a["ids"] = g.tokens;
    a["new_tokens"] = g.tokens.size();
    a["stopped_at_eos"] = g.stopped_at_eos;
    a["prefill_seconds"] = g.prefill_seconds;
    a["decode_seconds"] = g.decode_seconds;
    answers.push_back(std::move(a));
    tokens_out += static_cast<int64_t>(g.tokens.size());
    prefill = std::max(prefill, g.prefill_seconds);
    decode += g.decode_seconds;
    peak_bytes = std::max(peak_bytes, g.cache.bytes);
  }
  int64_t question_tokens = 0;
  std::vector<int64_t> per_question;
  for (const std::vector<int32_t>& q : r.prompt.questions) {
    per_question.push_back(static_cast<int64_t>(q.size()));
    question_tokens += per_question.back();
  }
  const int64_t document_tokens = static_cast<int64_t>(r.prompt.document.size());
  // The document's cache, after its prefill and compression.
  const CacheStats& doc = results.front().document_cache;
  const nlohmann::ordered_json cache = {{"policy", PolicyName(r.cache)},
                                        {"tokens_seen", doc.tokens_seen},
                                        {"slots_held", doc.slots_held},
                                        {"compression_ratio", doc.compression_ratio},
                                        {"bytes", doc.bytes},
                                        {"peak_bytes", peak_bytes}};
  const int64_t tokens_in = document_tokens + question_tokens;
  // Sequence parallelism: what each SP rank put into the group's collectives.
  std::vector<int64_t> sp_bytes;
  for (const GenerateResult& g : results) {
    sp_bytes.resize(g.sp_bytes_per_rank.size());
    for (size_t i = 0; i < sp_bytes.size(); ++i) sp_bytes[i] += g.sp_bytes_per_rank[i];
  }
  nlohmann::ordered_json line{
      {"id", r.job->id},
      {"answers", std::move(answers)},
      {"document_tokens", document_tokens},
      {"question_tokens", per_question},
      {"tokens_in", tokens_in},
      {"tokens_out", tokens_out},
      {"cache", std::move(cache)},
      {"timings",
       {{"prefill_seconds", prefill},
        {"decode_seconds", decode},
        {"wall_seconds", wall},
        {"tokens_per_s", wall > 0 ? (tokens_in + tokens_out) / wall : 0.0},
        {"decode_tokens_per_s", decode > 0 ? tokens_out / decode : 0.0}}},
      {"replica", replica}};
  if (!sp_bytes.empty()) line["sp_exchange"] = SpExchangeJson(sp_bytes);
  return line.dump();
}

// A sign of life ('H') sent to `peers` on `tag`, at most four times per
// --collective_timeout and at most once a second: a replica leader's to the
// writer between its steps (after each prefill chunk and decode step), and
// the writer's to the ranks waiting for the end.
class Heartbeat {
 public:
  Heartbeat(Ranks& ranks, std::vector<int> peers, int tag)
      : ranks_(ranks), peers_(std::move(peers)), tag_(tag),
        every_(std::min(absl::Seconds(1),
                        absl::Seconds(absl::GetFlag(FLAGS_collective_timeout)) / 4)) {}

  void Beat() {
    const absl::Time now = absl::Now();
    if (now - last_ < every_) return;
    last_ = now;
    for (int peer : peers_) {
      const absl::Status sent = SendText(ranks_.results(), "H", peer, tag_);
      if (!sent.ok()) ranks_.Fail(std::string(sent.message()), 1);
    }
  }

 private:
  Ranks& ranks_;
  std::vector<int> peers_;
  int tag_;
  absl::Duration every_;
  absl::Time last_ = absl::InfinitePast();
};

std::vector<int> AllButWriter(const Ranks& ranks) {
  std::vector<int> v;
  for (int r = 1; r < ranks.size(); ++r) v.push_back(r);
  return v;
}

// Every rank but the writer, once it has no more jobs: waits for the
// writer's 'D' while its heartbeats keep coming.
absl::Status WaitForWriter(Ranks& ranks) {
  const absl::Duration limit = Ranks::silence_limit();
  absl::Time heard = absl::Now();
  for (;;) {
    KVFOLD_ASSIGN_OR_RETURN(bool waiting, ranks.results().Probe(0, kWriterTag));
    if (waiting) {
      KVFOLD_ASSIGN_OR_RETURN(std::string message, RecvText(ranks.watch(), 0, kWriterTag));
      if (message == "D") return absl::OkStatus();
      heard = absl::Now();
      continue;
    }
    if (absl::Now() - heard > limit) {
      return absl::DeadlineExceededError(absl::StrCat(
          "rank 0 (the writer) has sent nothing for ", absl::FormatDuration(absl::Now() - heard),
          " while the last jobs finish (limit: 2 x --collective_timeout + 10s): stopped, hung "
          "or dead"));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

// World rank 0: the job queue, the output file and the progress display.
class Writer {
 public:
  Writer(Ranks& ranks, ResultsFile file, std::deque<int> pending, Progress progress)
      : ranks_(ranks), file_(std::move(file)), pending_(std::move(pending)),
        progress_(std::move(progress)), silence_limit_(Ranks::silence_limit()),
        beat_(ranks, AllButWriter(ranks), kWriterTag) {
    for (int d = 1; d < ranks.dp_size(); ++d) {
      active_.push_back(ranks.ReplicaLeader(d));
      heard_[ranks.ReplicaLeader(d)] = absl::Now();
    }
  }

  Progress& progress() { return progress_; }
  bool others_active() const { return !active_.empty(); }

  std::vector<int> Take(int n) {
    std::vector<int> jobs;
    while (!pending_.empty() && int(jobs.size()) < n) {
      jobs.push_back(pending_.front());
      pending_.pop_front();
    }
    return jobs;
  }

  void Write(const std::string& line) {
    const nlohmann::json j = nlohmann::json::parse(line);
    Check(file_.Append(j["id"].get<std::string>(), line));
    progress_.Finished(j);
  }

  // Serves the other replicas: writes the results they sent and answers
  // their requests for jobs. Cheap when nothing waits; called between jobs,
  // after every prefill chunk and every decode step.
  void Service() {
    Communicator& c = ranks_.results();
    // Silence counts only while the writer listens: after a long time away
    // (its own long step, or stopped), the leaders get a fresh start.
    const absl::Time now = absl::Now();
    if (now - last_service_ > silence_limit_ / 2) {
      for (auto& [leader, heard] : heard_) heard = std::max(heard, now);
    }
    last_service_ = now;
    for (auto it = active_.begin(); it != active_.end();) {
      const int leader = *it;
      bool finished = false;
      while (!finished && Waiting(c.Probe(leader, kLeaderTag))) {
        const std::string message = Checked(RecvText(ranks_.watch(), leader, kLeaderTag));
        heard_[leader] = absl::Now();
        if (message == "H") continue;
        if (!message.empty() && message[0] == 'R') {
          Write(message.substr(1));
          continue;
        }
        int want = 1;
        (void)absl::SimpleAtoi(message.substr(1), &want);
        const std::vector<int> jobs = Take(want);
        Check(SendText(c, absl::StrJoin(jobs, ","), leader, kAssignTag));
        finished = jobs.empty();
      }
      if (!finished && absl::Now() - heard_[leader] > silence_limit_) {
        SaveArrivedResults(leader);
        Check(absl::DeadlineExceededError(absl::StrCat(
            "rank ", leader, " (leader of a data-parallel replica) has sent nothing for ",
            absl::FormatDuration(absl::Now() - heard_[leader]),
            " (limit: 2 x --collective_timeout + 10s): stopped, hung or dead. The jobs in "
            "flight are lost, those written so far are in ",
            file_.path(), ": run the same command again to resume")));
      }
      it = finished ? active_.erase(it) : std::next(it);
    }
    if (pending_.empty()) beat_.Beat();
    progress_.Tick();
  }

  // Before the job ends over `silent`: writes the results the other replicas
  // already sent, so that only jobs in flight are lost.
  void SaveArrivedResults(int silent) {
    Communicator& c = ranks_.results();
    for (int leader : active_) {
      if (leader == silent) continue;
      while (Waiting(c.Probe(leader, kLeaderTag))) {
        const absl::StatusOr<std::string> message = RecvText(ranks_.watch(), leader, kLeaderTag);
        if (!message.ok()) break;
        if (!message->empty() && (*message)[0] == 'R') Write(message->substr(1));
      }
    }
  }

  // Tells every other rank that all is done (after the others finished).
  void Done() {
    for (int r = 1; r < ranks_.size(); ++r) Check(SendText(ranks_.results(), "D", r, kWriterTag));
  }

 private:
  // A failure here (the output became unwritable, a rank died) ends the
  // run; every line already written stays.
  void Check(const absl::Status& s) {
    if (!s.ok()) {
      progress_.Close();
      ranks_.Fail(std::string(s.message()), 1);
    }
  }
  template <typename T>
  T Checked(absl::StatusOr<T> v) {
    Check(v.status());
    return *std::move(v);
  }
  bool Waiting(absl::StatusOr<bool> v) { return Checked(std::move(v)); }

  Ranks& ranks_;
  ResultsFile file_;
  std::deque<int> pending_;
  Progress progress_;
  std::vector<int> active_;  // leaders of replicas still working
  std::map<int, absl::Time> heard_;  // when each leader last sent anything
  absl::Duration silence_limit_;
  absl::Time last_service_ = absl::Now();
  Heartbeat beat_;  // to the ranks that wait for the end
};

// Answers `indices` on every rank of this replica; the result lines.
// `writer` (world rank 0) serves the other replicas between steps; `beat`
// (another replica's leader) tells the writer it is alive.
std::vector<std::string> Answer(const Setup& s, Engine& engine, int replica,
                                const std::vector<int>& indices, Writer* writer,
                                Heartbeat* beat) {
  std::vector<ReadyJob> ready;
  ready.reserve(indices.size());
  for (int i : indices) {
    ready.push_back(MakeReady(s, s.input.jobs[i]));  // may read a document file
    if (writer != nullptr) writer->Service();
    if (beat != nullptr) beat->Beat();
  }
  std::vector<AnswerRequest> requests;
  std::vector<size_t> slot(ready.size(), 0);
  for (size_t k = 0; k < ready.size(); ++k) {
    if (!ready[k].status.ok()) continue;
    slot[k] = requests.size();
    AnswerRequest& q = requests.emplace_back();
    q.document = ready[k].prompt.document;
    q.questions = ready[k].prompt.questions;
    q.options = ready[k].generate;
    q.cache = &ready[k].cache;
    if (writer != nullptr) {
      const std::string id = ready[k].job->id;
      q.options.on_prefill = [writer, id](int64_t done, int64_t total) {
        writer->progress().Prefill(id, done, total);
        writer->Service();
      };
      q.options.on_token = [writer](size_t, int32_t) { writer->Service(); };
    } else if (beat != nullptr) {
      q.options.on_prefill = [beat](int64_t, int64_t) { beat->Beat(); };
      q.options.on_token = [beat](size_t, int32_t) { beat->Beat(); };
    }
  }
  const Clock::time_point start = Clock::now();
  std::vector<absl::StatusOr<std::vector<GenerateResult>>> results;
  if (!requests.empty()) results = engine.AnswerBatch(requests);
  const double wall = Since(start);
  std::vector<std::string> lines;
  for (size_t k = 0; k < ready.size(); ++k) {
    const JobLine& j = *ready[k].job;
    if (!ready[k].status.ok()) {
      lines.push_back(ErrorLine(j, ready[k].status, replica));
      continue;
    }
    const absl::StatusOr<std::vector<GenerateResult>>& r = results[slot[k]];
    if (!r.ok()) {
      lines.push_back(ErrorLine(
          j,
          absl::Status(r.status().code(), absl::StrCat(s.input.path, ":", j.line, ": job \"",
                                                       j.id, "\": ", r.status().message())),
          replica));
    } else {
      lines.push_back(ResultLine(s, ready[k], *r, wall, replica));
    }
  }
  return lines;
}

std::vector<int> ParseIndices(const std::string& text) {
  std::vector<int> v;
  for (absl::string_view item : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    int i = 0;
    if (absl::SimpleAtoi(item, &i)) v.push_back(i);
  }
  return v;
}

}  // namespace

absl::Status RunRun(Ranks& ranks) {
  Setup s;
  std::optional<ResultsFile> file;
  std::vector<std::string> warnings;
  absl::Status prepared = Prepare(s);
  if (prepared.ok() && ranks.writer()) {
    absl::StatusOr<ResultsFile> f = ResultsFile::Open(absl::GetFlag(FLAGS_output), &warnings);
    if (f.ok()) {
      file.emplace(*std::move(f));
    } else {
      prepared = f.status();
    }
  }
  absl::StatusOr<std::unique_ptr<LlamaModel>> started =
      StartModel(ranks, prepared, s.options, {}, s.tokenizer.get());
  if (!started.ok()) {
    if (file) file->RemoveIfUnused();
    return started.status();
  }
  std::unique_ptr<LlamaModel> model = *std::move(started);
  Engine engine(*model, s.options);
  std::unique_ptr<Writer> writer;
  std::optional<Heartbeat> beat;
  if (!ranks.writer() && ranks.replica_leader()) {
    beat.emplace(ranks, std::vector<int>{0}, kLeaderTag);
  }
  if (ranks.writer()) {
    warnings.insert(warnings.begin(), s.input.warnings.begin(), s.input.warnings.end());
    std::deque<int> pending;
    for (size_t i = 0; i < s.input.jobs.size(); ++i) {
      const JobLine& j = s.input.jobs[i];
      if (file->done().count(j.id)) continue;
      pending.push_back(int(i));
      if (!j.status.ok()) warnings.push_back(absl::StrCat(j.status.message(), " (will fail)"));
    }
    for (const std::string& w : warnings) std::fprintf(stderr, "kvfold: warning: %s\n", w.c_str());
    const int64_t total = int64_t(s.input.jobs.size());
    std::fprintf(stderr, "kvfold: run: %lld jobs, %lld to do (%lld already in %s), %d replica%s\n",
                 (long long)total, (long long)pending.size(),
                 (long long)(total - int64_t(pending.size())), file->path().c_str(),
                 ranks.dp_size(), ranks.dp_size() == 1 ? "" : "s");
    Progress progress(total, total - int64_t(pending.size()), stderr, isatty(STDERR_FILENO),
                      absl::GetFlag(FLAGS_progress_interval));
    writer = std::make_unique<Writer>(ranks, *std::move(file), std::move(pending),
                                      std::move(progress));
  }
  // Each round: the replica's leader gets up to --batch jobs (from the
  // writer's queue), shares them with its TP group, and all answer them.
  for (;;) {
    std::string assigned;
    if (ranks.writer()) {
      writer->Service();
      assigned = absl::StrJoin(writer->Take(s.options.batch), ",");
    } else if (ranks.replica_leader()) {
      KVFOLD_RETURN_IF_ERROR(
          SendText(ranks.results(), absl::StrCat("Q", s.options.batch), 0, kLeaderTag));
      KVFOLD_ASSIGN_OR_RETURN(assigned, RecvText(ranks.watch(), 0, kAssignTag));
    }
    KVFOLD_RETURN_IF_ERROR(ranks.ShareWithReplica(&assigned));
    const std::vector<int> jobs = ParseIndices(assigned);
    if (jobs.empty()) break;
    const std::vector<std::string> lines =
        Answer(s, engine, ranks.dp_rank(), jobs, writer.get(), beat ? &*beat : nullptr);
    // A job that failed because a rank stopped did not fail on its own:
    // the run ends, and a rerun does it again.
    KVFOLD_RETURN_IF_ERROR(ranks.CommunicationFailure());
    for (const std::string& line : lines) {
      if (ranks.writer()) {
        writer->Write(line);
      } else if (ranks.replica_leader()) {
        KVFOLD_RETURN_IF_ERROR(SendText(ranks.results(), "R" + line, 0, kLeaderTag));
      }
    }
  }
  if (writer) {
    while (writer->others_active()) {
      writer->Service();
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    writer->Done();
  } else if (ranks.size() > 1) {
    KVFOLD_RETURN_IF_ERROR(WaitForWriter(ranks));
  }
  // Every rank's accounting, for the summary (all ranks are here by now).
  const nlohmann::json mine = {{"rank", ranks.rank()},
                               {"peak_rss_bytes", PeakRssBytes()},
                               {"bytes_exchanged", ranks.BytesExchanged()}};
  KVFOLD_ASSIGN_OR_RETURN(std::vector<std::string> all, AllGatherText(ranks.world(), mine.dump()));
  if (!writer) return absl::OkStatus();
  writer->progress().Close();
  nlohmann::json summary = writer->progress().Totals();
  int64_t exchanged = 0, peak = 0;
  nlohmann::json per_rank = nlohmann::json::array();
  for (const std::string& text : all) {
    nlohmann::json r = nlohmann::json::parse(text);
    exchanged += r["bytes_exchanged"].get<int64_t>();
    peak = std::max(peak, r["peak_rss_bytes"].get<int64_t>());
    per_rank.push_back(std::move(r));
  }
  const Mesh* mesh = &ranks.mesh();
  summary.update({{"input", s.input.path},
                  {"output", absl::GetFlag(FLAGS_output)},
                  {"model", s.model_dir},
                  {"cache_policy", PolicyName(s.options.cache)},
                  {"cache_slots", s.options.cache.slots()},
                  {"batch", s.options.batch},
                  {"mesh",
                   {{"world", ranks.size()},
                    {"tp", mesh->tp_size()},
                    {"sp", mesh->sp_size()},
                    {"dp", mesh->dp_size()}}},
                  {"ranks", per_rank},
                  {"peak_rss_bytes_max", peak},
                  {"bytes_exchanged", exchanged}});
  std::string path = absl::GetFlag(FLAGS_summary);
  if (path.empty()) path = absl::GetFlag(FLAGS_output) + ".summary.json";
  std::fputs(writer->progress().Table(summary).c_str(), stderr);
  std::fprintf(stderr, "kvfold: results in %s, summary in %s\n",
               absl::GetFlag(FLAGS_output).c_str(), path.c_str());
  return WriteFileAtomically(path, summary.dump(2) + "\n");
}

}  // namespace kvfold
