// Engine: runs requests on a loaded model: chunked prefill into a cache,
// the decode loop with sampling, and scoring of a token sequence.
#ifndef KVFOLD_RUNTIME_ENGINE_H_
#define KVFOLD_RUNTIME_ENGINE_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "cache/cache_config.pb.h"
#include "cache/kv_cache.h"
#include "kernels/ops.h"
#include "kernels/sampling.h"
#include "kernels/thread_pool.h"
#include "models/llama.h"

namespace kvfold {

inline constexpr int kMaxThreads = 1024;

struct EngineOptions {
  int threads = 0;              // 0 = one per core
  int64_t prefill_chunk = 512;  // tokens per prefill forward call
  CacheConfig cache;            // the policy of every request's cache
  OpTimers* timers = nullptr;   // where op time is accounted (benchmarks)
};

// Checks of option values, shared by the engine and the CLI (which checks
// them before loading a model). Messages name the field as its flag.
absl::Status ValidateEngineOptions(const EngineOptions& options);

struct GenerateOptions {
  int64_t max_new_tokens = 16;
  SamplingParams sampling;      // temperature 0 = greedy
  uint64_t seed = 0;
  bool stop_at_eos = true;      // stop after emitting an eos_token_id
};

absl::Status ValidateGenerateOptions(const GenerateOptions& options);

struct GenerateResult {
  std::vector<int32_t> tokens;  // the new tokens only
  bool stopped_at_eos = false;
  int64_t prompt_tokens = 0;
  double prefill_seconds = 0;
  double decode_seconds = 0;
  int64_t cache_bytes = 0;
};

struct ScoreResult {
  std::vector<double> logprobs;  // log p(tokens[i] | tokens[<i]), i >= 1
  double nll = 0;                // -sum(logprobs)
  double perplexity = 0;         // exp(nll / logprobs.size())
};

class Engine {
 public:
  Engine(const LlamaModel& model, const EngineOptions& options);

  const LlamaModel& model() const { return model_; }
  const Stream& stream() const { return stream_; }

  absl::StatusOr<std::unique_ptr<KvCache>> NewCache() const;

  // Feeds `tokens` (continuing at position cache.tokens_seen()) in chunks of
  // prefill_chunk. Logits as `which` says, [1 or tokens.size(), vocab].
  absl::Status Prefill(absl::Span<const int32_t> tokens, LogitsFor which,
                       KvCache& cache, std::vector<float>* logits);

  // One decode step: feeds `token` at position cache.tokens_seen() and
  // writes the next-token logits [vocab] to `logits`.
  absl::Status Decode(int32_t token, KvCache& cache, std::vector<float>* logits);

  absl::StatusOr<GenerateResult> Generate(absl::Span<const int32_t> prompt,
                                          const GenerateOptions& options);

  // Needs at least two tokens.
  absl::StatusOr<ScoreResult> Score(absl::Span<const int32_t> tokens);

 private:
  absl::Status CheckWindow(int64_t tokens) const;

  const LlamaModel& model_;
  EngineOptions options_;
  ThreadPool pool_;
  Stream stream_;
  ForwardScratch scratch_;
};

}  // namespace kvfold

#endif  // KVFOLD_RUNTIME_ENGINE_H_
