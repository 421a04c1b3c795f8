// A KV cache with a fixed budget of slots per layer and KV head, and the
// Compressor interface the policies implement.
//
// After every chunk's attention, a layer holding more than its budget is
// handed to the policy's Compressor, which shrinks every KV head to the
// budget (each head choosing its own tokens). Selection and merging policies
// keep slots in position order (positions strictly increasing per head);
// LoCoCo's fused slots follow its heavy hitters. Attention's causal mask
// counts slots (the chunk's are the last), never positions.
#ifndef KVFOLD_CACHE_COMPRESSED_CACHE_H_
#define KVFOLD_CACHE_COMPRESSED_CACHE_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/types/span.h"
#include "cache/kv_cache.h"
#include "kernels/tensor.h"

namespace kvfold {

// One layer of a compressed cache.
struct LayerState {
  LayerSlots slots;
  // [kv_heads, capacity] f32: attention accumulated per slot over every
  // query so far (kept only for policies that ask for it).
  Tensor scores;

  float* head_scores(int64_t head) {
    return scores.as<float>() + head * slots.capacity();
  }
  // Keeps slots `keep` (ascending) of `head`, moved to the front in order.
  // The caller sets slots.length once every head is done. On a device,
  // keys and values move when FlushKeeps() runs (one gather per layer).
  void KeepSlots(const CacheShape& shape, int64_t head,
                 absl::Span<const int64_t> keep);
  absl::Status FlushKeeps(const CacheShape& shape);

  // [kv_heads, capacity] per-head source slots awaiting FlushKeeps (-1: the
  // head kept its slots in place); empty when none.
  std::vector<int32_t> pending_keep;
  Tensor keep_device;  // the same indices, [kv_heads, length], on the device
  std::vector<int32_t> keep_uploaded;  // what keep_device holds
};

// What a policy gets when a layer must shrink.
struct CompressRequest {
  const CacheShape* shape = nullptr;
  int64_t target = 0;               // slots per head to leave
  const float* col_sums = nullptr;  // [kv_heads, length] this chunk's, or null
  int32_t last_position = 0;        // absolute position of the newest token
  bool decoding = false;            // evicting while decoding
  int layer = 0;
  std::vector<float>* scratch = nullptr;  // the cache's, reused across calls
};

class Compressor {
 public:
  virtual ~Compressor() = default;
  // Queries of a chunk whose attention the policy needs summed (0 = none).
  virtual int64_t ColumnSumQueries(int64_t chunk) const = 0;
  // Whether per-slot scores accumulate every chunk's column sums.
  virtual bool AccumulatesScores() const { return false; }
  // Whether the policy keeps the cache size fixed while decoding.
  virtual bool EvictsInDecode() const { return false; }
  // Whether decoding compresses back to the budget itself rather than to the
  // size the cache had when decoding began (a module with a fixed output).
  virtual bool DecodesToBudget() const { return false; }
  // Slots a layer may hold beyond its budget before it is compressed.
  virtual int64_t Slack() const { return 0; }
  // Whether new tokens take RoPE positions from their slot index.
  virtual bool ReindexesPositions() const { return false; }
  // Whether Compress reads or rewrites key/value data itself (then the
  // cache must live in host memory); selection policies only choose slots.
  virtual bool NeedsHostKeys() const { return false; }
  // Shrinks every head of `layer` to `request.target` slots and sets
  // layer.slots.length.
  virtual absl::Status Compress(LayerState& layer,
                                const CompressRequest& request) const = 0;
};

class CompressedKvCache : public KvCache {
 public:
  // `budgets`: slots per layer; `max_chunk`: the longest chunk appended at
  // once (storage for budget + max_chunk is reserved up front).
  CompressedKvCache(const CacheShape& shape, std::vector<int64_t> budgets,
                    int64_t max_chunk,
                    std::shared_ptr<const Compressor> compressor);

  absl::Status Append(int layer, const float* k, const float* v,
                      const int32_t* positions, int64_t n) override;
  LayerView View(int layer) const override;
  int64_t ColumnSumQueries(int64_t chunk) const override;
  absl::Status AfterAttention(int layer, const ChunkStats& stats) override;
  void RopePositions(int layer, const int32_t* absolute, int64_t n,
                     int32_t* rope) const override;
  void SetPhase(CachePhase phase) override;
  const CacheShape& shape() const override { return shape_; }
  int64_t tokens_seen() const override { return tokens_seen_; }
  int64_t bytes() const override;
  std::unique_ptr<KvCache> Clone() const override;

 private:
  CacheShape shape_;
  std::vector<int64_t> budgets_;
  std::shared_ptr<const Compressor> compressor_;
  std::vector<LayerState> layers_;
  // Size each layer keeps while decoding (set when decoding begins).
  std::vector<int64_t> decode_caps_;
  CachePhase phase_ = CachePhase::kPrefill;
  int64_t tokens_seen_ = 0;
  // Per layer: a sequence-parallel prefill runs a layer over the whole block
  // before the next layer starts.
  std::vector<int32_t> last_position_;
  absl::Status status_;  // a failed reservation, reported by Append
  std::vector<float> host_col_sums_;  // device column sums copied for policies
  std::vector<float> scratch_;        // the compressor's working memory
};

}  // namespace kvfold

#endif  // KVFOLD_CACHE_COMPRESSED_CACHE_H_
