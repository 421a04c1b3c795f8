#include "runtime/engine.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>
#include <random>

#include "absl/strings/str_cat.h"
#include "cache/policies.h"
#include "kernels/status_macros.h"

namespace kvfold {

namespace {

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since)
      .count();
}

// log softmax(row)[target], in double.
double LogProb(const float* row, int64_t vocab, int32_t target) {
  const float mx = *std::max_element(row, row + vocab);
  double sum = 0;
  for (int64_t j = 0; j < vocab; ++j) sum += std::exp(double(row[j]) - mx);
  return double(row[target]) - mx - std::log(sum);
}

}  // namespace

Engine::Engine(const LlamaModel& model, const EngineOptions& options)
    : model_(model), options_(options), pool_(options.threads) {
  // The engine runs where the model's weights are.
  absl::StatusOr<std::unique_ptr<DeviceStream>> ds =
      DeviceStream::Open(model.device(), &pool_, options.timers);
  if (ds.ok()) {
    device_stream_ = std::move(*ds);
    stream_ = device_stream_->stream();
  } else {
    status_ = ds.status();  // reported by NewCache, where every request starts
    stream_.pool = &pool_;
  }
}

absl::Status Engine::CheckWindow(int64_t tokens) const {
  // Mistral v0.1's sliding window is not implemented: past it the result
  // would silently differ from the reference, so refuse instead.
  const int64_t window = model_.config().sliding_window;
  if (window > 0 && tokens > window) {
    return absl::UnimplementedError(absl::StrCat(
        "sequence of ", tokens, " tokens exceeds the model's sliding_window (",
        window, "); sliding-window attention is not supported yet"));
  }
  return absl::OkStatus();
}

absl::Status ValidateEngineOptions(const EngineOptions& options) {
  if (options.prefill_chunk < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "prefill_chunk must be >= 1, got ", options.prefill_chunk));
  }
  if (options.threads < 0 || options.threads > kMaxThreads) {
    return absl::InvalidArgumentError(absl::StrCat(
        "threads must be in [0, ", kMaxThreads, "], got ", options.threads));
  }
  return absl::OkStatus();
}

LearnedParams Learned(const EngineOptions& options) {
  LearnedParams l;
  if (options.compressor != nullptr) l.lococo = options.compressor->lococo;
  return l;
}

absl::Status ValidateCacheOptions(const EngineOptions& options,
                                  const ModelConfig& model) {
  KVFOLD_RETURN_IF_ERROR(ValidateEngineOptions(options));
  if (options.compressor != nullptr) {
    KVFOLD_RETURN_IF_ERROR(CheckCompressorModel(*options.compressor, model));
  }
  return ValidateCacheConfig(options.cache, model.num_layers,
                             options.prefill_chunk, Learned(options));
}

absl::Status ValidateGenerateOptions(const GenerateOptions& options) {
  KVFOLD_RETURN_IF_ERROR(ValidateSamplingParams(options.sampling));
  if (options.max_new_tokens < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_new_tokens must be >= 0, got ", options.max_new_tokens));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<KvCache>> Engine::NewCache() const {
  KVFOLD_RETURN_IF_ERROR(status_);
  KVFOLD_RETURN_IF_ERROR(ValidateEngineOptions(options_));
  return MakeCache(options_.cache, model_.cache_shape(stream_),
                   options_.prefill_chunk, Learned(options_));
}

absl::Status Engine::Prefill(absl::Span<const int32_t> tokens,
                             LogitsFor which, KvCache& cache,
                             std::vector<float>* logits) {
  KVFOLD_RETURN_IF_ERROR(ValidateEngineOptions(options_));
  const int64_t n = static_cast<int64_t>(tokens.size());
  const ModelConfig& c = model_.config();
  const int64_t vocab = c.vocab_size;
  if (n == 0) return absl::InvalidArgumentError("prefill: no tokens");
  KVFOLD_RETURN_IF_ERROR(CheckWindow(cache.tokens_seen() + n));
  if (logits != nullptr) {
    logits->assign((which == LogitsFor::kAll ? n : 1) * vocab, 0.0f);
  }
  std::vector<int32_t> positions;
  for (int64_t begin = 0; begin < n; begin += options_.prefill_chunk) {
    const int64_t len = std::min(options_.prefill_chunk, n - begin);
    const int64_t start = cache.tokens_seen();
    positions.resize(len);
    std::iota(positions.begin(), positions.end(), static_cast<int32_t>(start));
    const bool last = begin + len == n;
    LogitsFor chunk_which = LogitsFor::kNone;
    float* out = nullptr;
    if (which == LogitsFor::kAll) {
      chunk_which = LogitsFor::kAll;
      out = logits->data() + begin * vocab;
    } else if (which == LogitsFor::kLast && last) {
      chunk_which = LogitsFor::kLast;
      out = logits->data();
    }
    KVFOLD_RETURN_IF_ERROR(model_.Forward(stream_, tokens.subspan(begin, len),
                                          positions, chunk_which, cache,
                                          scratch_, out));
  }
  return absl::OkStatus();
}

absl::Status Engine::PrefillQuestion(absl::Span<const int32_t> question,
                                     LogitsFor which, KvCache& cache,
                                     std::vector<float>* logits) {
  cache.SetPhase(options_.cache.question_aware() ? CachePhase::kPrefill
                                                 : CachePhase::kAppend);
  return Prefill(question, which, cache, logits);
}

absl::Status Engine::Decode(int32_t token, KvCache& cache,
                            std::vector<float>* logits) {
  const int32_t pos = static_cast<int32_t>(cache.tokens_seen());
  KVFOLD_RETURN_IF_ERROR(CheckWindow(pos + 1));
  cache.SetPhase(CachePhase::kDecode);
  logits->resize(model_.config().vocab_size);
  return model_.Forward(stream_, {&token, 1}, {&pos, 1}, LogitsFor::kLast,
                        cache, scratch_, logits->data());
}

absl::Status Engine::DecodeLoop(size_t answer, KvCache& cache, std::vector<float>& logits,
                                const GenerateOptions& options,
                                GenerateResult* result) {
  const ModelConfig& c = model_.config();
  const auto t0 = std::chrono::steady_clock::now();
  std::mt19937_64 rng(options.seed);
  for (int64_t step = 0; step < options.max_new_tokens; ++step) {
    const int32_t next = Sample(logits.data(), c.vocab_size, options.sampling, rng);
    result->tokens.push_back(next);
    if (options.on_token) options.on_token(answer, next);
    if (options.stop_at_eos &&
        std::find(c.eos_token_ids.begin(), c.eos_token_ids.end(), next) !=
            c.eos_token_ids.end()) {
      result->stopped_at_eos = true;
      break;
    }
    if (step + 1 == options.max_new_tokens) break;  // no forward for unused logits
    KVFOLD_RETURN_IF_ERROR(Decode(next, cache, &logits));
  }
  result->decode_seconds = Seconds(t0);
  result->cache = cache.Stats();
  return absl::OkStatus();
}

absl::StatusOr<GenerateResult> Engine::Generate(
    absl::Span<const int32_t> prompt, const GenerateOptions& options) {
  KVFOLD_ASSIGN_OR_RETURN(std::vector<GenerateResult> r,
                          Answer(prompt, {}, options));
  return std::move(r[0]);
}

absl::StatusOr<std::vector<GenerateResult>> Engine::Answer(
    absl::Span<const int32_t> document,
    const std::vector<std::vector<int32_t>>& questions,
    const GenerateOptions& options) {
  KVFOLD_RETURN_IF_ERROR(ValidateGenerateOptions(options));
  if (document.empty()) return absl::InvalidArgumentError("empty prompt");
  for (size_t i = 0; i < questions.size(); ++i) {
    if (questions[i].empty()) {
      return absl::InvalidArgumentError(absl::StrCat("question ", i, " is empty"));
    }
  }
  const bool aware = options_.cache.question_aware();
  std::vector<float> logits;
  // Question-agnostic: the document once, shared by every question.
  std::unique_ptr<KvCache> doc_cache;
  double doc_seconds = 0;
  if (!aware || questions.empty()) {
    KVFOLD_ASSIGN_OR_RETURN(doc_cache, NewCache());
    const auto t0 = std::chrono::steady_clock::now();
    KVFOLD_RETURN_IF_ERROR(Prefill(document, LogitsFor::kLast, *doc_cache, &logits));
    doc_seconds = Seconds(t0);
  }
  std::vector<GenerateResult> results;
  if (questions.empty()) {
    GenerateResult r;
    r.prompt_tokens = static_cast<int64_t>(document.size());
    r.prefill_seconds = doc_seconds;
    r.document_cache = doc_cache->Stats();
    KVFOLD_RETURN_IF_ERROR(DecodeLoop(results.size(), *doc_cache, logits, options, &r));
    results.push_back(std::move(r));
    return results;
  }
  for (const std::vector<int32_t>& question : questions) {
    GenerateResult r;
    r.prompt_tokens = static_cast<int64_t>(document.size() + question.size());
    std::unique_ptr<KvCache> cache;
    auto t0 = std::chrono::steady_clock::now();
    if (aware) {
      // The question joins the document's last chunk, so that chunk is
      // compressed once, with the question's queries voting.
      KVFOLD_ASSIGN_OR_RETURN(cache, NewCache());
      const int64_t n = static_cast<int64_t>(document.size());
      const int64_t q = static_cast<int64_t>(question.size());
      const int64_t tail = std::min(n, std::max<int64_t>(0, options_.prefill_chunk - q));
      if (n > tail) {
        KVFOLD_RETURN_IF_ERROR(
            Prefill(document.subspan(0, n - tail), LogitsFor::kNone, *cache, nullptr));
      }
      r.document_cache = cache->Stats();
      std::vector<int32_t> last(document.end() - tail, document.end());
      last.insert(last.end(), question.begin(), question.end());
      KVFOLD_RETURN_IF_ERROR(PrefillQuestion(last, LogitsFor::kLast, *cache, &logits));
    } else {
      cache = doc_cache->Clone();
      r.document_cache = doc_cache->Stats();
      KVFOLD_RETURN_IF_ERROR(PrefillQuestion(question, LogitsFor::kLast, *cache, &logits));
    }
    r.prefill_seconds = Seconds(t0) + doc_seconds;
    KVFOLD_RETURN_IF_ERROR(DecodeLoop(results.size(), *cache, logits, options, &r));
    results.push_back(std::move(r));
  }
  return results;
}

absl::StatusOr<ScoreResult> Engine::Score(absl::Span<const int32_t> tokens) {
  if (tokens.size() < 2) {
    return absl::InvalidArgumentError("score needs at least two tokens");
  }
  KVFOLD_ASSIGN_OR_RETURN(std::unique_ptr<KvCache> cache, NewCache());
  const int64_t n = static_cast<int64_t>(tokens.size());
  const int64_t vocab = model_.config().vocab_size;
  ScoreResult r;
  // One chunk of logits at a time: [chunk, vocab], never [n, vocab].
  std::vector<float> logits;
  for (int64_t begin = 0; begin < n - 1; begin += options_.prefill_chunk) {
    const int64_t len = std::min(options_.prefill_chunk, n - 1 - begin);
    KVFOLD_RETURN_IF_ERROR(
        Prefill(tokens.subspan(begin, len), LogitsFor::kAll, *cache, &logits));
    for (int64_t i = 0; i < len; ++i) {
      r.logprobs.push_back(
          LogProb(&logits[i * vocab], vocab, tokens[begin + i + 1]));
      r.nll -= r.logprobs.back();
    }
  }
  r.perplexity = std::exp(r.nll / r.logprobs.size());
  r.cache = cache->Stats();
  return r;
}

}  // namespace kvfold
