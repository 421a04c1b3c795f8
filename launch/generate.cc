// kvfold generate and score, on every rank of the job: start-up agreed over
// the world, the model sharded over each TP group, the documents of
// --documents_file shared out over the data-parallel replicas, and every
// result written by world rank 0 in input order.
#include <csignal>
#include <cstdio>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <unistd.h>

#include <nlohmann/json.hpp>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "cache/policies.h"
#include "kernels/device_stream.h"
#include "kernels/status_macros.h"
#include "launch/commands.h"
#include "launch/flags.h"
#include "launch/prompt.h"
#include "launch/ranks.h"
#include "launch/report.h"
#include "launch/run.h"
#include "models/tokenizer/tokenizer.h"
#include "runtime/engine.h"
#include "runtime/memory_plan.h"

namespace kvfold {
namespace {

// Result lines from a replica's leader to the writer; messages between two
// ranks keep their order, so one tag serves every document.
constexpr int kResultTag = 1;

// --fault=RANK:KIND (tests of failure handling): after start-up, rank RANK
// returns an error (error), throws (throw), is killed (kill) or stops
// answering while staying alive (hang).
absl::Status InjectFault(const Ranks& ranks) {
  const std::string fault = absl::GetFlag(FLAGS_fault);
  if (fault.empty()) return absl::OkStatus();
  std::pair<std::string, std::string> parts = absl::StrSplit(fault, ':');
  int rank = -1;
  if (!absl::SimpleAtoi(parts.first, &rank) ||
      (parts.second != "error" && parts.second != "throw" && parts.second != "kill" &&
       parts.second != "hang")) {
    return absl::InvalidArgumentError(
        absl::StrCat("--fault=", fault, ": expected RANK:error|throw|kill|hang"));
  }
  if (rank != ranks.rank()) return absl::OkStatus();
  if (parts.second == "kill") std::raise(SIGKILL);
  if (parts.second == "hang") {
    for (;;) pause();
  }
  if (parts.second == "throw") throw std::runtime_error("fault injected by --fault");
  return absl::InternalError("fault injected by --fault");
}

}  // namespace

absl::Status CheckIds(const Prompt& prompt, int64_t vocab, const Tokenizer* tokenizer,
                      const std::string& where) {
  auto check = [&](const std::vector<int32_t>& ids, const std::string& what) {
    for (size_t i = 0; i < ids.size(); ++i) {
      if (ids[i] >= 0 && ids[i] < vocab) continue;
      if (prompt.from_text && tokenizer != nullptr) {
        return absl::InvalidArgumentError(absl::StrCat(
            tokenizer->name(), ": ", what, " tokenizes to id ", ids[i],
            ", outside the model's vocabulary of ", vocab, " (config.json vocab_size)"));
      }
      return absl::InvalidArgumentError(absl::StrCat(
          where, what, ": token id ", ids[i], " at index ", i,
          " is outside the vocabulary [0, ", vocab, ")"));
    }
    return absl::OkStatus();
  };
  KVFOLD_RETURN_IF_ERROR(check(prompt.document, prompt.from_text ? "the text" : "the document"));
  for (size_t i = 0; i < prompt.questions.size(); ++i) {
    KVFOLD_RETURN_IF_ERROR(check(prompt.questions[i], absl::StrCat("question ", i)));
  }
  return absl::OkStatus();
}

absl::StatusOr<GenerateOptions> GenerateOptionsFromFlags() {
  GenerateOptions o;
  o.max_new_tokens = absl::GetFlag(FLAGS_max_new_tokens);
  o.sampling.temperature = static_cast<float>(absl::GetFlag(FLAGS_temperature));
  o.sampling.top_k = absl::GetFlag(FLAGS_top_k);
  o.sampling.top_p = static_cast<float>(absl::GetFlag(FLAGS_top_p));
  o.seed = absl::GetFlag(FLAGS_seed);
  o.stop_at_eos = !absl::GetFlag(FLAGS_ignore_eos);
  KVFOLD_RETURN_IF_ERROR(AsFlagError(ValidateGenerateOptions(o)));
  return o;
}

namespace {

// Memory admission (runtime/memory_plan.h): this rank's weights, caches and
// workspace against --memory_limit, or on the CPU the machine's memory.
absl::Status AdmitMemory(const ModelConfig& config, const EngineOptions& options,
                         const LoadOptions& load, const std::vector<Prompt>& prompts) {
  int64_t longest = 0;  // document + longest question
  for (const Prompt& p : prompts) {
    size_t question = 0;
    for (const auto& q : p.questions) question = std::max(question, q.size());
    longest = std::max<int64_t>(longest, p.document.size() + question);
  }
  if (prompts.empty()) longest = absl::GetFlag(FLAGS_max_document_tokens);  // kvfold run
  const int bytes = load.device.kind == Device::Kind::kCpu ? 4 : DTypeSize(load.dtype);
  KVFOLD_ASSIGN_OR_RETURN(
      const MemoryPlan plan,
      PlanMemory(config, options, std::max(1, absl::GetFlag(FLAGS_tp)), bytes, longest,
                 absl::GetFlag(FLAGS_max_new_tokens), std::max(1, absl::GetFlag(FLAGS_sp))));
  const std::string flag = absl::GetFlag(FLAGS_memory_limit);
  if (!flag.empty()) {
    absl::StatusOr<double> limit = ParseBytes(flag);
    if (!limit.ok()) return AsFlagError(absl::InvalidArgumentError(
        absl::StrCat("memory_limit: ", limit.status().message())));
    return CheckMemoryPlan(plan, *limit, "--memory_limit=" + flag);
  }
  KVFOLD_ASSIGN_OR_RETURN(const double have, DeviceMemoryBytes(load.device));
  return CheckMemoryPlan(plan, have,
                         load.device.kind == Device::Kind::kCpu
                             ? std::string("this machine's memory")
                             : absl::StrCat(load.device.ToString(), "'s free memory"));
}

}  // namespace

absl::StatusOr<std::unique_ptr<LlamaModel>> StartModel(Ranks& ranks, absl::Status prepared,
                                                      const EngineOptions& options,
                                                      const std::vector<Prompt>& prompts,
                                                      const Tokenizer* tokenizer) {
  const std::string dir = absl::GetFlag(FLAGS_model);
  LoadOptions load;
  if (prepared.ok()) {
    prepared = [&]() -> absl::Status {
      if (dir.empty()) return absl::InvalidArgumentError("--model is required");
      KVFOLD_ASSIGN_OR_RETURN(ModelConfig config, ModelConfig::FromFile(dir + "/config.json"));
      // Checked before a possibly large model is read.
      KVFOLD_RETURN_IF_ERROR(ValidateCacheOptions(options, config));
      KVFOLD_RETURN_IF_ERROR(ValidateSpOptions(options, absl::GetFlag(FLAGS_sp)));
      const std::string documents = absl::GetFlag(FLAGS_documents_file);
      for (size_t i = 0; i < prompts.size(); ++i) {
        const std::string where =
            documents.empty() ? "" : absl::StrCat(documents, ": document ", i, ": ");
        KVFOLD_RETURN_IF_ERROR(CheckIds(prompts[i], config.vocab_size, tokenizer, where));
      }
      KVFOLD_ASSIGN_OR_RETURN(load, LoadOptionsFromFlags());
      KVFOLD_RETURN_IF_ERROR(AdmitMemory(config, options, load, prompts));
      if (options.projection != nullptr && load.device.kind != Device::Kind::kCpu) {
        return absl::UnimplementedError(
            "MatryoshkaKV projections (--compressor with a matryoshka file) run on the CPU "
            "backend only so far: add --device=cpu");
      }
      return ranks.PlanMesh(config);
    }();
  }
  KVFOLD_RETURN_IF_ERROR(ranks.AgreeOnStartup(prepared));
  KVFOLD_RETURN_IF_ERROR(ranks.SplitGroups());
  KVFOLD_ASSIGN_OR_RETURN(load.tp, ranks.TpFor(load.device));
  load.sp = ranks.sp();
  absl::StatusOr<std::unique_ptr<LlamaModel>> model = LlamaModel::Load(dir, load);
  KVFOLD_RETURN_IF_ERROR(ranks.AgreeOnStartup(model.status()));
  KVFOLD_RETURN_IF_ERROR(InjectFault(ranks));
  return model;
}

namespace {

// One result line: the answers of one document, each a JSON object.
std::string AnswerLines(const std::vector<GenerateResult>& results, const Prompt& prompt,
                        const EngineOptions& options, const Tokenizer* tokenizer,
                        std::optional<size_t> document) {
  std::string out;
  for (size_t i = 0; i < results.size(); ++i) {
    const GenerateResult& r = results[i];
    // The first new token comes from prefill's logits; decode made the rest.
    const double decode_tps = r.tokens.size() > 1 && r.decode_seconds > 0
                                  ? double(r.tokens.size() - 1) / r.decode_seconds
                                  : 0.0;
    nlohmann::json j;
    if (document) j["document"] = *document;
    if (!prompt.questions.empty()) j["question"] = i;
    j.update({{"ids", r.tokens},
              {"prompt_tokens", r.prompt_tokens},
              {"new_tokens", r.tokens.size()},
              {"stopped_at_eos", r.stopped_at_eos},
              {"prefill_seconds", r.prefill_seconds},
              {"prefill_tokens_per_s", r.prompt_tokens / r.prefill_seconds},
              {"decode_seconds", r.decode_seconds},
              {"decode_tokens_per_s", decode_tps},
              {"cache_policy", PolicyName(options.cache)},
              {"document_cache", CacheStatsJson(r.document_cache)},
              {"cache", CacheStatsJson(r.cache)}});
    if (!r.sp_bytes_per_rank.empty()) j["sp_exchange"] = SpExchangeJson(r.sp_bytes_per_rank);
    if (tokenizer) j["text"] = tokenizer->Decode(r.tokens, /*skip_special_tokens=*/true);
    out += j.dump() + "\n";
  }
  return out;
}

}  // namespace

absl::Status RunGenerate(Ranks& ranks) {
  EngineOptions options;
  GenerateOptions opts;
  std::optional<Tokenizer> tokenizer;
  std::vector<Prompt> prompts;
  const std::string dir = absl::GetFlag(FLAGS_model);
  const std::string documents_file = absl::GetFlag(FLAGS_documents_file);
  absl::Status prepared = [&]() -> absl::Status {
    KVFOLD_ASSIGN_OR_RETURN(options, EngineOptionsFromFlags());
    KVFOLD_ASSIGN_OR_RETURN(opts, GenerateOptionsFromFlags());
    KVFOLD_ASSIGN_OR_RETURN(tokenizer, TokenizerFromFlags(dir));
    if (absl::GetFlag(FLAGS_stream) && !tokenizer) {
      return absl::InvalidArgumentError("--stream needs the model's tokenizer.json");
    }
    if (absl::GetFlag(FLAGS_stream) && options.batch > 1) {
      return absl::InvalidArgumentError(
          "--stream prints one answer at a time: it cannot be combined with --batch > 1");
    }
    if (documents_file.empty()) {
      KVFOLD_ASSIGN_OR_RETURN(Prompt p, PromptFromFlags(dir, tokenizer ? &*tokenizer : nullptr));
      prompts.push_back(std::move(p));
    } else {
      KVFOLD_ASSIGN_OR_RETURN(prompts, DocumentsFromFlags());
    }
    return absl::OkStatus();
  }();
  const Tokenizer* tok = tokenizer ? &*tokenizer : nullptr;
  KVFOLD_ASSIGN_OR_RETURN(std::unique_ptr<LlamaModel> model,
                          StartModel(ranks, prepared, options, prompts, tok));
  // --stream: the writer's answers on stderr as their tokens arrive.
  std::optional<StreamDecoder> stream;
  size_t streaming_answer = 0;
  if (absl::GetFlag(FLAGS_stream) && ranks.writer()) {
    stream.emplace(*tokenizer, /*skip_special_tokens=*/true);
    opts.on_token = [&](size_t answer, int32_t id) {
      if (answer != streaming_answer) {
        std::fprintf(stderr, "%s\n", stream->Finish().c_str());
        stream.emplace(*tokenizer, /*skip_special_tokens=*/true);
        streaming_answer = answer;
      }
      std::fputs(stream->Step(id).c_str(), stderr);
      std::fflush(stderr);
    };
  }
  Engine engine(*model, options);
  // Document i belongs to replica i mod D. The writer (world rank 0, leader
  // of replica 0) answers its own and receives the others' in input order
  // while the other replicas run ahead.
  const int replicas = ranks.dp_size();
  for (size_t i = 0; i < prompts.size(); ++i) {
    const int owner = int(i % replicas);
    std::string lines;
    if (owner == ranks.dp_rank()) {
      KVFOLD_RETURN_IF_ERROR(ranks.SyncReplica());
      KVFOLD_ASSIGN_OR_RETURN(std::vector<GenerateResult> results,
                              engine.Answer(prompts[i].document, prompts[i].questions, opts));
      if (stream) std::fprintf(stderr, "%s\n", stream->Finish().c_str());
      lines = AnswerLines(results, prompts[i], options, tok,
                          documents_file.empty() ? std::nullopt : std::optional(i));
      if (!ranks.writer() && ranks.replica_leader()) {
        KVFOLD_RETURN_IF_ERROR(SendText(ranks.results(), lines, 0, kResultTag));
      }
    } else if (ranks.writer()) {
      KVFOLD_ASSIGN_OR_RETURN(lines, RecvText(ranks.results(), ranks.ReplicaLeader(owner), kResultTag));
    }
    if (ranks.writer()) {
      std::fputs(lines.c_str(), stdout);
      std::fflush(stdout);
    }
  }
  return ranks.results().Barrier();
}

absl::Status RunScore(Ranks& ranks) {
  EngineOptions options;
  std::optional<Tokenizer> tokenizer;
  std::vector<Prompt> prompts(1);
  const std::string dir = absl::GetFlag(FLAGS_model);
  absl::Status prepared = [&]() -> absl::Status {
    KVFOLD_ASSIGN_OR_RETURN(options, EngineOptionsFromFlags());
    if (!absl::GetFlag(FLAGS_question).empty() || !absl::GetFlag(FLAGS_questions_file).empty() ||
        !absl::GetFlag(FLAGS_questions).empty()) {
      return absl::InvalidArgumentError("score takes one sequence, no questions");
    }
    KVFOLD_ASSIGN_OR_RETURN(tokenizer, TokenizerFromFlags(dir));
    KVFOLD_ASSIGN_OR_RETURN(prompts[0], PromptFromFlags(dir, tokenizer ? &*tokenizer : nullptr));
    return absl::OkStatus();
  }();
  KVFOLD_ASSIGN_OR_RETURN(
      std::unique_ptr<LlamaModel> model,
      StartModel(ranks, prepared, options, prompts, tokenizer ? &*tokenizer : nullptr));
  const std::vector<int32_t>& tokens = prompts[0].document;
  Engine engine(*model, options);
  KVFOLD_ASSIGN_OR_RETURN(ScoreResult r, engine.Score(tokens));
  if (!ranks.writer()) return absl::OkStatus();
  PrintJson({{"tokens", tokens.size()},
             {"logprobs", r.logprobs},
             {"nll", r.nll},
             {"mean_nll", r.nll / r.logprobs.size()},
             {"perplexity", r.perplexity},
             {"cache_policy", PolicyName(options.cache)},
             {"cache", CacheStatsJson(r.cache)}});
  return absl::OkStatus();
}

}  // namespace kvfold
