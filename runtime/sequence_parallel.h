// Sequence parallelism (SP, DESIGN.md "Data flow" steps 2-4; ALGORITHMS.md
// section 5), the parts that need no model:
// - PlanBlocks: which tokens of a document each rank of an SP group
//   prefills (contiguous blocks), behind which anchor (the document's first
//   tokens, prefixed to every block but the first, positions absolute);
// - MergePartialAttention / MergeAcrossGroup: the exact log-sum-exp merge of
//   the attention each rank computed over its own cache, so that question
//   and answer tokens see the union of the ranks' caches.
#ifndef KVFOLD_RUNTIME_SEQUENCE_PARALLEL_H_
#define KVFOLD_RUNTIME_SEQUENCE_PARALLEL_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/tensor.h"
#include "parallel/communicator.h"

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

// Rank h's attention over its own keys gave outs[h] ([rows, dim], row-major)
// and lses[h] ([rows]: the log-sum-exp of the row's scaled logits; -inf for
// a rank without keys). Writes the attention over all ranks' keys:
// out = sum_h exp(lse_h - lse) out_h, lse = log sum_h exp(lse_h). `out` and
// `lse` may alias outs[0] and lses[0].
void MergePartialAttention(const std::vector<const float*>& outs,
                           const std::vector<const float*>& lses, int64_t rows, int64_t dim,
                           float* out, float* lse);

// The same across the ranks of `sp` (collective): every rank passes its
// partial `out` [rows, dim] and `lse` [rows] (f32 CPU tensors) and ends with
// the merged ones in place.
absl::Status MergeAcrossGroup(Communicator& sp, const TensorView& out, const TensorView& lse);

}  // namespace kvfold

#endif  // KVFOLD_RUNTIME_SEQUENCE_PARALLEL_H_
