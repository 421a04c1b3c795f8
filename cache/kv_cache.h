// The KV cache interface the forward pass writes to and attends over, the
// per-layer slot storage, and the full (uncompressed) cache.
//
// Compression policies (compressed_cache.h) implement KvCache and keep a fixed
// number of slots per layer; the model only appends a chunk, attends over
// View(), and reports the chunk's attention statistics through
// AfterAttention().
#ifndef KVFOLD_CACHE_KV_CACHE_H_
#define KVFOLD_CACHE_KV_CACHE_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "kernels/ops.h"
#include "kernels/tensor.h"

namespace kvfold {

class FeatureLayout;  // cache/matryoshka.h

struct CacheShape {
  int64_t num_layers = 0;
  int64_t kv_heads = 0;
  int64_t head_dim = 0;
  // RoPE frequencies [head_dim / 2]; needed only by a policy that re-rotates
  // cached keys (StreamingLLM position re-indexing).
  std::vector<float> rope_inv_freq;
  // Where keys and values live and the cache's copies run (a CUDA stream
  // keeps them in device memory; positions and scores stay on the host).
  Stream stream;
  // MatryoshkaKV: the projected features each (layer, KV head) caches; null
  // when every head caches head_dim features of keys and of values.
  std::shared_ptr<const FeatureLayout> features;
  int64_t kv_head_begin = 0;  // the model's first KV head this cache holds (TP)

  int64_t key_dim(int64_t layer, int64_t head) const;
  int64_t value_dim(int64_t layer, int64_t head) const;
};

// What attention reads for one layer.
struct LayerView {
  const float* keys = nullptr;    // [kv_heads, stride, head_dim], post-RoPE (device)
  const float* values = nullptr;  // [kv_heads, stride, head_dim] (device)
  const int32_t* positions = nullptr;  // [kv_heads, stride], absolute (host)
  int64_t length = 0;             // slots in use (the chunk's are the last)
  int64_t stride = 0;             // slots allocated per head
  // Projected features (CacheShape::features): head h's keys are
  // [stride, key_dim(h)] from keys + key_offsets[h], its values likewise;
  // null otherwise.
  const int64_t* key_offsets = nullptr;
  const int64_t* value_offsets = nullptr;
};

// Statistics of one chunk's attention over a layer's cache.
struct ChunkStats {
  const float* col_sums = nullptr;  // [kv_heads, length] or null (device)
  const float* lse = nullptr;       // [q_heads, chunk] or null
  int64_t chunk = 0;
};

// The slots of one layer. Positions are per head so that policies selecting
// different tokens per KV head can keep them.
//
// Head h's keys are [capacity, key_dims[h]] from keys + key_offsets[h]:
// [kv_heads, capacity, head_dim] without projected features, packed head
// after head (host memory) with them. Values likewise.
struct LayerSlots {
  Tensor keys;       // on shape.stream's device
  Tensor values;     // on shape.stream's device
  Tensor positions;  // [kv_heads, capacity] i32, absolute, on the host
  int64_t length = 0;
  int64_t cap = 0;
  std::vector<int64_t> key_dims, value_dims;        // per KV head
  std::vector<int64_t> key_offsets, value_offsets;  // per KV head, in floats

  int64_t capacity() const { return cap; }
  float* head_keys(int64_t h) { return keys.as<float>() + key_offsets[h]; }
  float* head_values(int64_t h) { return values.as<float>() + value_offsets[h]; }
  // Grows capacity to exactly `slots` if it is smaller, keeping the first
  // `length` slots. `layer` picks the feature widths from the shape.
  absl::Status Reserve(const CacheShape& shape, int layer, int64_t slots);
  // Copies a chunk k, v: [n, kv_heads, head_dim] into slots [length, length+n)
  // (projecting them when the shape has projected features), growing
  // capacity geometrically when needed.
  absl::Status AppendChunk(const CacheShape& shape, int layer, const float* k,
                           const float* v, const int32_t* positions, int64_t n);
  LayerView View() const;
  LayerSlots Copy() const;
};

// Where a request is; policies compress differently in each phase.
enum class CachePhase {
  kPrefill,  // prompt chunks: compress to the budget after each chunk
  kAppend,   // a question-agnostic question: appended as is, no compression
  kDecode,   // generated tokens: policies that evict in decode keep the size
             // the cache had when decoding began
};

// Per-document accounting, reported with every result.
struct CacheStats {
  int64_t tokens_seen = 0;
  int64_t slots_held = 0;       // per KV head, summed over layers
  // tokens_seen * layers / slots_held; with MatryoshkaKV projections the
  // ratio of full-cache features to the features held (slots x ranks)
  double compression_ratio = 1;
  int64_t bytes = 0;            // key/value storage allocated
};

// tokens_seen * num_layers / slots_held, the ratio of a cache without
// MatryoshkaKV projections (1 when nothing is held).
double SlotCompressionRatio(int64_t tokens_seen, int64_t slots_held, int num_layers);

class KvCache {
 public:
  virtual ~KvCache() = default;

  // Appends a chunk's post-RoPE keys and values, k, v: [n, kv_heads,
  // head_dim] (device memory), at absolute `positions` [n] (host).
  virtual absl::Status Append(int layer, const float* k, const float* v,
                              const int32_t* positions, int64_t n) = 0;
  virtual LayerView View(int layer) const = 0;
  // How many of a chunk's last queries attention must sum into column sums
  // for the policy: 0 = none (costs nothing), `chunk` = all of them.
  virtual int64_t ColumnSumQueries(int64_t chunk) const = 0;
  // Called once per layer after the chunk's attention: policies compress here.
  virtual absl::Status AfterAttention(int layer, const ChunkStats& stats) = 0;
  // RoPE positions for the next chunk's queries and keys of `layer`: the
  // absolute ones, unless the policy re-indexes positions inside the cache.
  virtual void RopePositions(int layer, const int32_t* absolute, int64_t n,
                             int32_t* rope) const;
  virtual void SetPhase(CachePhase phase) {}

  virtual const CacheShape& shape() const = 0;
  // Tokens appended so far (per layer; equal across layers between calls).
  virtual int64_t tokens_seen() const = 0;
  // Bytes of key/value storage held now.
  virtual int64_t bytes() const = 0;
  // A deep copy (one compressed document, many questions).
  virtual std::unique_ptr<KvCache> Clone() const = 0;

  CacheStats Stats() const;

  // Sequence parallelism: positions this cache passes over without holding
  // their tokens (the document blocks other SP ranks hold, and the question
  // and answer tokens a rank other than the last attends without keeping).
  // The next token goes at next_position().
  void SkipPositions(int64_t n) { skipped_ += n; }
  int64_t next_position() const { return skipped_ + tokens_seen(); }

 protected:
  // Clone() implementations copy it.
  int64_t skipped_ = 0;
};

// Keeps every token: the baseline and the reference for all policies.
class FullKvCache : public KvCache {
 public:
  explicit FullKvCache(const CacheShape& shape);

  absl::Status Append(int layer, const float* k, const float* v,
                      const int32_t* positions, int64_t n) override;
  LayerView View(int layer) const override;
  int64_t ColumnSumQueries(int64_t) const override { return 0; }
  absl::Status AfterAttention(int layer, const ChunkStats& stats) override {
    return absl::OkStatus();
  }
  const CacheShape& shape() const override { return shape_; }
  int64_t tokens_seen() const override;
  int64_t bytes() const override;
  std::unique_ptr<KvCache> Clone() const override;

 private:
  CacheShape shape_;
  std::vector<LayerSlots> layers_;
};

}  // namespace kvfold

#endif  // KVFOLD_CACHE_KV_CACHE_H_
