// Sequence parallelism (SP, DESIGN.md "Data flow" steps 2-4; ALGORITHMS.md
// section 5): which tokens of a document each rank of an SP group prefills
// (contiguous blocks), behind which anchor (the document's first tokens,
// prefixed to every block but the first, positions absolute). The attention
// pieces (merge, passing blocks) are in models/sp_attention.h.
#ifndef KVFOLD_RUNTIME_SEQUENCE_PARALLEL_H_
#define KVFOLD_RUNTIME_SEQUENCE_PARALLEL_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"

namespace kvfold {

struct SpBlock {
  int64_t begin = 0;  // first token of the block in the document
  int64_t end = 0;    // one past its last token
  int64_t size() const { return end - begin; }
};

struct SpPlan {
  // Tokens [0, anchor) of the document are prefixed to every block but the
  // first (which starts with them anyway); 0 = no anchor.
  int64_t anchor = 0;
  std::vector<SpBlock> blocks;  // one per SP rank, in order, covering the document
};

// The anchor when none is asked for: a quarter of a block, at most 4096
// tokens (APB's setting for 128K tokens on 8 ranks: 16K-token blocks,
// 4096-token anchors); none for one rank.
int64_t DefaultAnchorTokens(int64_t document_tokens, int sp);

// `sp` contiguous blocks of near-equal size (the first document_tokens % sp
// one token longer). Errors: sp < 1; fewer tokens than ranks; an anchor
// longer than the shortest block it would be prefixed to, or negative.
absl::StatusOr<SpPlan> PlanBlocks(int64_t document_tokens, int sp, int64_t anchor);

// What one rank's block prefill costs per layer, in FLOPs, for blocks
// balanced by cost: `token` for each row through the projections and the
// MLP (block and anchor rows), `pair` for each (query, key) pair of
// attention. A block query sees its rank's cache (`cache` slots on
// average), the anchor, and `passing` slots of each earlier rank's cache.
struct SpCostModel {
  double token = 0;
  double pair = 0;
  int64_t cache = 0;
  int64_t passing = 0;
};

// The model's cost of rank `rank` prefilling `block` tokens behind an
// anchor of `anchor` tokens (none for rank 0).
double BlockCost(const SpCostModel& cost, int rank, int64_t block, int64_t anchor);

// Contiguous blocks sized so that every rank's BlockCost is about the same:
// later ranks attend over more passing blocks and carry the anchor, so they
// get fewer tokens. Every block holds at least one token and, after the
// first, at least the anchor (a plan PlanBlocks accepts always leaves room
// for them). The errors of PlanBlocks; equal blocks when `cost` is empty.
absl::StatusOr<SpPlan> PlanBalancedBlocks(int64_t document_tokens, int sp, int64_t anchor,
                                          const SpCostModel& cost);

}  // namespace kvfold

#endif  // KVFOLD_RUNTIME_SEQUENCE_PARALLEL_H_
