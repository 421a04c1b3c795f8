#include "launch/commands.h"

#include <cstdio>
#include <nlohmann/json.hpp>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "kernels/status_macros.h"
#include "launch/flags.h"
#include "cache/policies.h"
#include "models/config.h"
#include "models/files.h"
#include "runtime/engine.h"

namespace kvfold {

absl::StatusOr<std::vector<int32_t>> ParseIds(const std::string& text,
                                              const std::string& source) {
  std::vector<int32_t> ids;
  for (absl::string_view item :
       absl::StrSplit(text, absl::ByAnyChar(", \t\r\n"), absl::SkipEmpty())) {
    int32_t id;
    if (!absl::SimpleAtoi(item, &id) || id < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          source, ": \"", item, "\" is not a token id (a non-negative integer)"));
    }
    ids.push_back(id);
  }
  if (ids.empty()) return absl::InvalidArgumentError(source + ": no token ids");
  return ids;
}

namespace {

absl::StatusOr<std::vector<int32_t>> IdsFromFlags() {
  const std::string ids = absl::GetFlag(FLAGS_ids);
  const std::string file = absl::GetFlag(FLAGS_ids_file);
  if (ids.empty() == file.empty()) {
    return absl::InvalidArgumentError("give exactly one of --ids and --ids_file");
  }
  if (!ids.empty()) return ParseIds(ids, "--ids");
  KVFOLD_ASSIGN_OR_RETURN(std::string text, ReadTextFile(file, 1 << 30));
  return ParseIds(text, file);
}

// Loads --model after checking the engine options against its config.json
// (so a bad cache budget fails before gigabytes are read).
absl::StatusOr<std::unique_ptr<LlamaModel>> ModelFromFlags(
    const EngineOptions& options) {
  const std::string dir = absl::GetFlag(FLAGS_model);
  if (dir.empty()) return absl::InvalidArgumentError("--model is required");
  KVFOLD_ASSIGN_OR_RETURN(ModelConfig config,
                          ModelConfig::FromFile(dir + "/config.json"));
  KVFOLD_RETURN_IF_ERROR(ValidateCacheOptions(options, config.num_layers));
  KVFOLD_ASSIGN_OR_RETURN(LoadOptions load, LoadOptionsFromFlags());
  return LlamaModel::Load(dir, load);
}

// Prefixes "--" to a validation message, which names the field as its flag.
absl::Status AsFlagError(const absl::Status& s) {
  if (s.ok()) return s;
  return absl::Status(s.code(), absl::StrCat("--", s.message()));
}

// "1,2;3 4" -> {{1,2},{3,4}}.
absl::StatusOr<std::vector<std::vector<int32_t>>> ParseQuestions(
    const std::string& text) {
  std::vector<std::vector<int32_t>> questions;
  if (text.empty()) return questions;
  int index = 0;
  for (absl::string_view q : absl::StrSplit(text, ';')) {
    KVFOLD_ASSIGN_OR_RETURN(
        std::vector<int32_t> ids,
        ParseIds(std::string(q), absl::StrCat("--questions (question ", index++, ")")));
    questions.push_back(std::move(ids));
  }
  return questions;
}

void PrintJson(const nlohmann::json& j) {
  std::printf("%s\n", j.dump().c_str());
  std::fflush(stdout);
}

}  // namespace

absl::StatusOr<LoadOptions> LoadOptionsFromFlags() {
  LoadOptions o;
  KVFOLD_ASSIGN_OR_RETURN(o.device, ParseDevice(absl::GetFlag(FLAGS_device)));
  const std::string dtype = absl::GetFlag(FLAGS_dtype);
  if (dtype == "auto") {
    o.dtype = o.device.kind == Device::Kind::kCpu ? DType::kF32 : DType::kBF16;
  } else if (dtype == "f32") {
    o.dtype = DType::kF32;
  } else if (dtype == "bf16") {
    o.dtype = DType::kBF16;
  } else if (dtype == "f16") {
    o.dtype = DType::kF16;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "--dtype=", dtype, ": expected auto, f32, bf16 or f16"));
  }
  KVFOLD_RETURN_IF_ERROR(ValidateLoadOptions(o));
  return o;
}

absl::StatusOr<EngineOptions> EngineOptionsFromFlags() {
  EngineOptions o{.threads = absl::GetFlag(FLAGS_threads),
                  .prefill_chunk = absl::GetFlag(FLAGS_prefill_chunk),
                  .cache = {}};
  KVFOLD_RETURN_IF_ERROR(AsFlagError(ValidateEngineOptions(o)));
  KVFOLD_ASSIGN_OR_RETURN(o.cache, CacheConfigFromFlags());
  return o;
}

nlohmann::json CacheStatsJson(const CacheStats& s) {
  return {{"tokens_seen", s.tokens_seen},
          {"slots_held", s.slots_held},
          {"compression_ratio", s.compression_ratio},
          {"bytes", s.bytes}};
}

absl::Status RunGenerate() {
  KVFOLD_ASSIGN_OR_RETURN(EngineOptions options, EngineOptionsFromFlags());
  GenerateOptions opts;
  opts.max_new_tokens = absl::GetFlag(FLAGS_max_new_tokens);
  opts.sampling.temperature = static_cast<float>(absl::GetFlag(FLAGS_temperature));
  opts.sampling.top_k = absl::GetFlag(FLAGS_top_k);
  opts.sampling.top_p = static_cast<float>(absl::GetFlag(FLAGS_top_p));
  opts.seed = absl::GetFlag(FLAGS_seed);
  opts.stop_at_eos = !absl::GetFlag(FLAGS_ignore_eos);
  KVFOLD_RETURN_IF_ERROR(AsFlagError(ValidateGenerateOptions(opts)));
  KVFOLD_ASSIGN_OR_RETURN(std::vector<int32_t> prompt, IdsFromFlags());
  KVFOLD_ASSIGN_OR_RETURN(auto questions,
                          ParseQuestions(absl::GetFlag(FLAGS_questions)));
  KVFOLD_ASSIGN_OR_RETURN(std::unique_ptr<LlamaModel> model, ModelFromFlags(options));
  Engine engine(*model, options);
  KVFOLD_ASSIGN_OR_RETURN(std::vector<GenerateResult> results,
                          engine.Answer(prompt, questions, opts));
  for (size_t i = 0; i < results.size(); ++i) {
    const GenerateResult& r = results[i];
    // The first new token comes from prefill's logits; decode made the rest.
    const double decode_tps = r.tokens.size() > 1 && r.decode_seconds > 0
                                  ? double(r.tokens.size() - 1) / r.decode_seconds
                                  : 0.0;
    nlohmann::json j = {{"ids", r.tokens},
                        {"prompt_tokens", r.prompt_tokens},
                        {"new_tokens", r.tokens.size()},
                        {"stopped_at_eos", r.stopped_at_eos},
                        {"prefill_seconds", r.prefill_seconds},
                        {"prefill_tokens_per_s", r.prompt_tokens / r.prefill_seconds},
                        {"decode_seconds", r.decode_seconds},
                        {"decode_tokens_per_s", decode_tps},
                        {"cache_policy", PolicyName(options.cache)},
                        {"document_cache", CacheStatsJson(r.document_cache)},
                        {"cache", CacheStatsJson(r.cache)}};
    if (!questions.empty()) j["question"] = i;
    PrintJson(j);
  }
  return absl::OkStatus();
}

absl::Status RunScore() {
  KVFOLD_ASSIGN_OR_RETURN(EngineOptions options, EngineOptionsFromFlags());
  KVFOLD_ASSIGN_OR_RETURN(std::vector<int32_t> tokens, IdsFromFlags());
  KVFOLD_ASSIGN_OR_RETURN(std::unique_ptr<LlamaModel> model, ModelFromFlags(options));
  Engine engine(*model, options);
  KVFOLD_ASSIGN_OR_RETURN(ScoreResult r, engine.Score(tokens));
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
