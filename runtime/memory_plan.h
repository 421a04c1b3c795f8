// Memory admission: what one rank will hold at its peak (its slice of the
// weights, the caches of the sequences it works on at once, and the forward
// pass's workspace), estimated before anything is loaded, so that a job that
// cannot fit is refused at start-up with the numbers rather than dying in
// the middle.
#ifndef KVFOLD_RUNTIME_MEMORY_PLAN_H_
#define KVFOLD_RUNTIME_MEMORY_PLAN_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "models/config.h"
#include "runtime/engine.h"

namespace kvfold {

struct MemoryPlan {
  double weights = 0;    // this rank's slice, as held (f32 on the CPU)
  double caches = 0;     // `sequences` caches at their largest
  double workspace = 0;  // activations of one prefill chunk, logits, scores
  int64_t sequences = 0;
  int64_t longest = 0;   // tokens a sequence may reach (0: unknown)
  double total() const { return weights + caches + workspace; }
};

// The plan for `tp` tensor-parallel ranks running `options` (cache policy,
// batch, prefill chunk) on documents of at most `longest_document` tokens
// (0: unknown; then a full cache is not counted) with answers of up to
// `answer_tokens` more. The options must be valid for the model.
// `sp` > 1: each rank prefills one block of the document (PlanSpBlocks) in
// one pass, layer after layer: its workspace holds every row of the block
// and the anchor (residual stream, queries, attention), the anchor's keys
// and values for every layer, and the gathered passing blocks; a full cache
// holds the rank's block rather than the document.
absl::StatusOr<MemoryPlan> PlanMemory(const ModelConfig& config, const EngineOptions& options,
                                      int tp, int weight_bytes, int64_t longest_document,
                                      int64_t answer_tokens, int sp = 1);

// An error naming each part when the plan exceeds `limit` bytes (the
// machine's or --memory_limit's, described by `what`).
absl::Status CheckMemoryPlan(const MemoryPlan& plan, double limit, const std::string& what);

// "24G", "512M", "1.5T", "123456" (bytes) -> bytes.
absl::StatusOr<double> ParseBytes(const std::string& text);

}  // namespace kvfold

#endif  // KVFOLD_RUNTIME_MEMORY_PLAN_H_
