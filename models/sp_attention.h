// Sequence-parallel attention (ALGORITHMS.md section 5), the pieces the
// forward pass runs on an SP group:
// - the exact log-sum-exp merge of attention computed over disjoint key
//   sets (a rank's own cache, the anchor, the other ranks' passing blocks or
//   caches);
// - passing blocks: the slots of one layer of a rank's compressed cache,
//   packed for the all-gather that shows them to the later ranks.
// Layouts are the attention kernel's: out [queries, heads, dim], lse [heads,
// queries] (log-sum-exp of the scaled logits; -inf where a part had no key).
#ifndef KVFOLD_MODELS_SP_ATTENTION_H_
#define KVFOLD_MODELS_SP_ATTENTION_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "cache/kv_cache.h"
#include "kernels/ops.h"
#include "parallel/communicator.h"

namespace kvfold {

// Part p's attention gave outs[p] and lses[p]; writes the attention over
// every part's keys: out = sum_p exp(lse_p - lse) out_p, lse = log sum_p
// exp(lse_p) (host memory). `out` and `lse` may alias outs[0] and lses[0].
void MergePartialAttention(const std::vector<const float*>& outs,
                           const std::vector<const float*>& lses, int64_t queries,
                           int64_t heads, int64_t dim, float* out, float* lse);

// The same for two parts on the stream's device: acc = merge(acc, part).
// `host` is working memory (used on a device).
absl::Status MergeInto(const Stream& s, float* acc_out, float* acc_lse, const float* part_out,
                       const float* part_lse, int64_t queries, int64_t heads, int64_t dim,
                       std::vector<float>* host);

// Collective over `sp`: every rank passes its partial attention (host
// memory) and ends with the merge of all of them, in rank order (so every
// rank holds the same bits).
absl::Status MergeAcrossGroup(Communicator& sp, float* out, float* lse, int64_t queries,
                              int64_t heads, int64_t dim);

// A passing block of `slots` slots per KV head packed as f32: the number of
// slots it holds, then keys and values [kv_heads, slots, head_dim] each.
int64_t PassingBlockFloats(int64_t kv_heads, int64_t slots, int64_t head_dim);

// Packs the last min(slots, view.length) slots of each KV head of `view`
// (the most recent tokens under every policy that keeps slots in position
// order) into `packed` (the view's device).
absl::Status PackPassingBlock(const Stream& s, const LayerView& view, int64_t kv_heads,
                              int64_t head_dim, int64_t slots, float* packed);

// The passing blocks of `ranks` ranks, gathered ([ranks, PassingBlockFloats]
// on the stream's device), concatenated into keys and values [kv_heads,
// capacity, head_dim] (capacity >= ranks * slots); returns the slots used.
absl::StatusOr<int64_t> UnpackPassingBlocks(const Stream& s, const float* gathered, int ranks,
                                            int64_t kv_heads, int64_t head_dim, int64_t slots,
                                            int64_t capacity, float* keys, float* values);

}  // namespace kvfold

#endif  // KVFOLD_MODELS_SP_ATTENTION_H_
