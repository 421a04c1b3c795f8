#include "launch/commands.h"

#include <algorithm>
#include <cstdio>
#include <optional>
#include <nlohmann/json.hpp>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "kernels/status_macros.h"
#include "launch/flags.h"
#include "launch/prompt.h"
#include "launch/report.h"
#include "models/tokenizer/tokenizer.h"
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

// Text input must tokenize to ids the model has (a tokenizer with more ids
// than the model's vocabulary is a mismatched checkpoint).
absl::Status CheckIds(const Prompt& prompt, const LlamaModel& model,
                      const Tokenizer* tokenizer) {
  if (!prompt.from_text || tokenizer == nullptr) return absl::OkStatus();
  const int64_t vocab = model.config().vocab_size;
  auto check = [&](const std::vector<int32_t>& ids, const std::string& what) {
    for (int32_t id : ids) {
      if (id < 0 || id >= vocab) {
        return absl::InvalidArgumentError(absl::StrCat(
            tokenizer->name(), ": ", what, " tokenizes to id ", id,
            ", outside the model's vocabulary of ", vocab, " (config.json vocab_size)"));
      }
    }
    return absl::OkStatus();
  };
  KVFOLD_RETURN_IF_ERROR(check(prompt.document, "the text"));
  for (size_t i = 0; i < prompt.questions.size(); ++i) {
    KVFOLD_RETURN_IF_ERROR(check(prompt.questions[i], absl::StrCat("question ", i)));
  }
  return absl::OkStatus();
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
  const std::string dir = absl::GetFlag(FLAGS_model);
  KVFOLD_ASSIGN_OR_RETURN(std::optional<Tokenizer> tokenizer, TokenizerFromFlags(dir));
  KVFOLD_ASSIGN_OR_RETURN(Prompt prompt, PromptFromFlags(dir, tokenizer ? &*tokenizer : nullptr));
  const auto& questions = prompt.questions;
  KVFOLD_ASSIGN_OR_RETURN(std::unique_ptr<LlamaModel> model, ModelFromFlags(options));
  KVFOLD_RETURN_IF_ERROR(CheckIds(prompt, *model, tokenizer ? &*tokenizer : nullptr));
  // --stream: each answer's text on stderr as its tokens arrive.
  std::optional<StreamDecoder> stream;
  size_t streaming_answer = 0;
  if (absl::GetFlag(FLAGS_stream)) {
    if (!tokenizer) return absl::InvalidArgumentError("--stream needs the model's tokenizer.json");
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
  KVFOLD_ASSIGN_OR_RETURN(std::vector<GenerateResult> results,
                          engine.Answer(prompt.document, questions, opts));
  if (stream) std::fprintf(stderr, "%s\n", stream->Finish().c_str());
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
    if (tokenizer) j["text"] = tokenizer->Decode(r.tokens, /*skip_special_tokens=*/true);
    PrintJson(j);
  }
  return absl::OkStatus();
}

absl::Status RunScore() {
  KVFOLD_ASSIGN_OR_RETURN(EngineOptions options, EngineOptionsFromFlags());
  if (!absl::GetFlag(FLAGS_question).empty() || !absl::GetFlag(FLAGS_questions_file).empty() ||
      !absl::GetFlag(FLAGS_questions).empty()) {
    return absl::InvalidArgumentError("score takes one sequence, no questions");
  }
  const std::string dir = absl::GetFlag(FLAGS_model);
  KVFOLD_ASSIGN_OR_RETURN(std::optional<Tokenizer> tokenizer, TokenizerFromFlags(dir));
  KVFOLD_ASSIGN_OR_RETURN(Prompt prompt, PromptFromFlags(dir, tokenizer ? &*tokenizer : nullptr));
  const std::vector<int32_t>& tokens = prompt.document;
  KVFOLD_ASSIGN_OR_RETURN(std::unique_ptr<LlamaModel> model, ModelFromFlags(options));
  KVFOLD_RETURN_IF_ERROR(CheckIds(prompt, *model, tokenizer ? &*tokenizer : nullptr));
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

absl::Status RunTokenize() {
  const std::string dir = absl::GetFlag(FLAGS_model);
  if (dir.empty()) return absl::InvalidArgumentError("--model is required");
  KVFOLD_ASSIGN_OR_RETURN(Tokenizer tokenizer, Tokenizer::FromDirectory(dir));
  KVFOLD_ASSIGN_OR_RETURN(Prompt prompt, PromptFromFlags(dir, &tokenizer));
  nlohmann::json j;
  if (prompt.from_text) {
    j = {{"ids", prompt.document}, {"tokens", prompt.document.size()}};
    if (!prompt.questions.empty()) j["questions"] = prompt.questions;
    j["chat_template"] = prompt.chat_template;
  } else {
    j = {{"text", tokenizer.Decode(prompt.document, /*skip_special_tokens=*/false)}};
  }
  PrintJson(j);
  return absl::OkStatus();
}

}  // namespace kvfold
