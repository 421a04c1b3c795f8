// Engine: runs requests on a loaded model: chunked prefill into a cache,
// the decode loop with sampling (many answer streams batched into one
// forward per step), and scoring of a token sequence.
#ifndef KVFOLD_RUNTIME_ENGINE_H_
#define KVFOLD_RUNTIME_ENGINE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "cache/cache_config.pb.h"
#include "cache/policies.h"
#include "cache/kv_cache.h"
#include "kernels/device_stream.h"
#include "kernels/ops.h"
#include "kernels/sampling.h"
#include "kernels/thread_pool.h"
#include "models/compressor_file.h"
#include "models/llama.h"
#include "runtime/sequence_parallel.h"

namespace kvfold {

inline constexpr int kMaxThreads = 1024;

struct EngineOptions {
  int threads = 0;              // 0 = one per core
  int64_t prefill_chunk = 512;  // tokens per prefill forward call
  CacheConfig cache;            // the policy of every request's cache
  // A learned policy's parameters (--compressor: a LoCoCo file), or null.
  std::shared_ptr<const CompressorFile> compressor;
  // MatryoshkaKV projections (--compressor: a matryoshka file), or null;
  // CacheConfig::feature_budget picks the rank allocation.
  std::shared_ptr<const CompressorFile> projection;
  OpTimers* timers = nullptr;   // where op time is accounted (benchmarks)
  // Answer streams decoded together in one forward step (AnswerBatch,
  // Answer): the rows of the batch, >= 1.
  int batch = 1;
  // Sequence parallelism (the model's SP group, LoadOptions::sp): the
  // anchor prefixed to every block but the first (-1 = DefaultAnchorTokens
  // of the document) and the passing slots per KV head and layer each rank
  // shows the later ones (0 = its whole cache; BlockPrefill).
  int64_t sp_anchor = -1;
  int64_t sp_passing_slots = 0;
  // Blocks balanced by cost (PlanBalancedBlocks with SpCosts; the default)
  // rather than of equal size.
  bool sp_balance = true;
};

// Checks of option values, shared by the engine and the CLI (which checks
// them before loading a model). Messages name the field as its flag.
absl::Status ValidateEngineOptions(const EngineOptions& options);
// The cache config against the model (budgets per layer, the policy's
// windows vs the prefill chunk, the compressor's model and slots).
absl::Status ValidateCacheOptions(const EngineOptions& options,
                                  const ModelConfig& model);
// What sequence parallelism over `sp` ranks cannot do with these options:
// MatryoshkaKV projections, re-indexed positions, passing blocks larger
// than the cache budget.
absl::Status ValidateSpOptions(const EngineOptions& options, int sp);
// The anchor of a document of `tokens` split over `sp` ranks:
// options.sp_anchor, or when that is -1 DefaultAnchorTokens capped at the
// cache budget (every block query attends over the whole anchor, so a longer
// one would cost more than the compressed cache it sits beside).
int64_t SpAnchorTokens(const EngineOptions& options, int64_t tokens, int sp);
// The cost model of a block prefill of this model (per layer, FLOPs; the
// cache a block query sees is the policy's budget plus half a chunk, or half
// a block with the Full policy; passing blocks are --sp_passing_slots, or
// the budget, or a whole block with the Full policy).
SpCostModel SpCosts(const EngineOptions& options, const ModelConfig& model, int64_t tokens,
                    int sp);
// The blocks of a document of `tokens` over `sp` ranks, as PrefillDocument
// plans them: equal, or balanced by SpCosts.
absl::StatusOr<SpPlan> PlanSpBlocks(const EngineOptions& options, const ModelConfig& model,
                                    int64_t tokens, int sp);
// The learned parameters of options.compressor, for MakeCache.
LearnedParams Learned(const EngineOptions& options);

struct GenerateOptions {
  int64_t max_new_tokens = 16;
  SamplingParams sampling;      // temperature 0 = greedy
  uint64_t seed = 0;
  bool stop_at_eos = true;      // stop after emitting an eos_token_id
  // Called with each new token as soon as it is chosen (e.g. to stream
  // detokenized text): the answer's index (the question's) and the token.
  // May be empty.
  std::function<void(size_t answer, int32_t token)> on_token;
  // Called with the logits [vocab] each token is sampled from, before
  // sampling (scores, tests). May be empty.
  std::function<void(size_t answer, absl::Span<const float> logits)> on_logits;
  // Called after each prefill chunk of the document with the tokens of the
  // document done so far and its length (progress; a question-aware
  // document is prefilled once per question). May be empty.
  std::function<void(int64_t done, int64_t total)> on_prefill;
};

absl::Status ValidateGenerateOptions(const GenerateOptions& options);

struct GenerateResult {
  std::vector<int32_t> tokens;  // the new tokens only
  bool stopped_at_eos = false;
  int64_t prompt_tokens = 0;
  double prefill_seconds = 0;
  double decode_seconds = 0;
  // Over an SP group: the group's caches together (tokens, slots and bytes
  // summed over its ranks).
  CacheStats document_cache;  // after the document's prefill
  CacheStats cache;           // at the end
  // Sequence parallelism: payload bytes each SP rank put into the group's
  // collectives for this answer: its share of the merges of its question
  // and decode steps, plus, in a document's first answer, the document's
  // prefill (passing blocks). Empty without SP.
  std::vector<int64_t> sp_bytes_per_rank;
};

// One document with its questions, for AnswerBatch.
struct AnswerRequest {
  absl::Span<const int32_t> document;
  std::vector<std::vector<int32_t>> questions;  // empty: continue the document itself
  GenerateOptions options;  // this request's sampling, max_new_tokens, callbacks
  // Null: EngineOptions::cache. The caller validated it (ValidateCacheConfig)
  // against the model.
  const CacheConfig* cache = nullptr;
};

struct ScoreResult {
  std::vector<double> logprobs;  // log p(tokens[i] | tokens[<i]), i >= 1
  double nll = 0;                // -sum(logprobs)
  double perplexity = 0;         // exp(nll / logprobs.size())
  CacheStats cache;              // after the last token was fed
};

class Engine {
 public:
  Engine(const LlamaModel& model, const EngineOptions& options);

  const LlamaModel& model() const { return model_; }
  const Stream& stream() const { return stream_; }
  // Waits for queued device work (benchmarks time with it).
  absl::Status Synchronize() const {
    return device_stream_ ? device_stream_->Synchronize() : status_;
  }

  absl::StatusOr<std::unique_ptr<KvCache>> NewCache() const;
  // A cache of another policy than EngineOptions::cache (validated by the
  // caller).
  absl::StatusOr<std::unique_ptr<KvCache>> NewCache(const CacheConfig& config) const;

  // Feeds `tokens` (continuing at position cache.next_position()) in chunks of
  // prefill_chunk. Logits as `which` says, [1 or tokens.size(), vocab].
  // `on_chunk` (may be empty) gets the tokens fed so far and
  // tokens.size() after each chunk.
  absl::Status Prefill(absl::Span<const int32_t> tokens, LogitsFor which,
                       KvCache& cache, std::vector<float>* logits,
                       const std::function<void(int64_t, int64_t)>& on_chunk = {});

  // Prefills a document into an empty cache, with the logits after its last
  // token when `logits` is not null. Over an SP group each rank prefills its
  // block (PrefillBlock); the last token then goes through phase 2 when its
  // logits are wanted. `observer` (SP, question-aware; needs logits null):
  // the question, whose rows observe every rank's last chunk (votes in its
  // compression) and are then dropped; the caller appends it afterwards.
  absl::Status PrefillDocument(absl::Span<const int32_t> document, KvCache& cache,
                               std::vector<float>* logits,
                               const std::function<void(int64_t, int64_t)>& on_progress = {},
                               absl::Span<const int32_t> observer = {});

  // Appends `question` to a cache holding a document: uncompressed when
  // question-agnostic (the cache then holds budget + question slots),
  // compressed with the document's last chunk when question-aware.
  absl::Status PrefillQuestion(absl::Span<const int32_t> question,
                               LogitsFor which, KvCache& cache,
                               std::vector<float>* logits);

  // One decode step: feeds `token` at position cache.next_position() and
  // writes the next-token logits [vocab] to `logits`.
  absl::Status Decode(int32_t token, KvCache& cache, std::vector<float>* logits);
  // One decode step of B sequences in one forward: tokens[b] is fed to
  // caches[b] (distinct) at position caches[b]->next_position(); writes the
  // next-token logits [B, vocab]. Decode is the case B = 1.
  absl::Status DecodeBatch(absl::Span<const int32_t> tokens,
                           absl::Span<KvCache* const> caches,
                           std::vector<float>* logits);

  absl::StatusOr<GenerateResult> Generate(absl::Span<const int32_t> prompt,
                                          const GenerateOptions& options);

  // An answer to each question about `document`. Question-agnostic (the
  // default): the document is prefilled and compressed once and each
  // question continues a copy of that cache. Question-aware: document and
  // question are prefilled together, once per question, the question in the
  // same chunk as the document's last tokens (`document_cache` is then the
  // cache before that chunk). Question-aware over an SP group: the question
  // observes every rank's last chunk (PrefillDocument's `observer`), then
  // goes through phase 2 as a question-agnostic one does (`document_cache`
  // is the cache between the two).
  absl::StatusOr<std::vector<GenerateResult>> Answer(
      absl::Span<const int32_t> document,
      const std::vector<std::vector<int32_t>>& questions,
      const GenerateOptions& options);

  // What Answer gives for each request, with every answer stream (each
  // question of each request) decoded together, EngineOptions::batch rows
  // per forward step. A stream enters the batch when a row is free: its
  // document is prefilled then (once per request when question-agnostic,
  // documents one after the other), its question appended, and it leaves
  // at eos or max_new_tokens, making room for the next. A request that
  // fails gets its own error; the others go on. decode_seconds is the wall
  // time of the steps a stream took part in. Answer is the case of one
  // request.
  std::vector<absl::StatusOr<std::vector<GenerateResult>>> AnswerBatch(
      absl::Span<const AnswerRequest> requests);

  // Needs at least two tokens.
  absl::StatusOr<ScoreResult> Score(absl::Span<const int32_t> tokens);

 private:
  struct RequestState;  // one AnswerBatch request while it runs (engine.cc)
  struct AnswerStream;  // one of its answers

  absl::Status CheckWindow(int64_t tokens) const;
  // PrefillQuestion for a request's own cache config.
  absl::Status PrefillQuestion(absl::Span<const int32_t> question, bool aware,
                               LogitsFor which, KvCache& cache,
                               std::vector<float>* logits);
  // Prefills what answer `stream.answer` of `request` needs before its first
  // token (the document when not yet done, the question).
  absl::Status StartAnswer(RequestState& request, AnswerStream& stream);
  // Samples the stream's next token from `logits`; false when the stream
  // is done (eos or max_new_tokens) and needs no further step.
  bool NextToken(AnswerStream& stream, const float* logits) const;
  // Sequence parallelism: fills every result's sp_bytes_per_rank and makes
  // its cache stats those of the whole SP group (collective over it).
  void ShareSpResults(std::vector<RequestState>& states);

  const LlamaModel& model_;
  EngineOptions options_;
  ThreadPool pool_;
  std::unique_ptr<DeviceStream> device_stream_;
  Stream stream_;
  absl::Status status_;  // why the device stream could not open
  // Learned(options_), with the MatryoshkaKV layouts of this rank's KV heads
  // built once (every cache shares them).
  LearnedParams learned_;
  ForwardScratch scratch_;
};

}  // namespace kvfold

#endif  // KVFOLD_RUNTIME_ENGINE_H_
