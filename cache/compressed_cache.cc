#include "cache/compressed_cache.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace kvfold {

void LayerState::KeepSlots(const CacheShape& shape, int64_t head,
                           absl::Span<const int64_t> keep) {
  const int64_t cap = slots.capacity(), d = shape.head_dim;
  float* k = slots.keys.as<float>() + head * cap * d;
  float* v = slots.values.as<float>() + head * cap * d;
  int32_t* p = slots.positions.as<int32_t>() + head * cap;
  float* sc = scores.empty() ? nullptr : head_scores(head);
  // keep is ascending, so keep[i] >= i: moving forward never overwrites a
  // slot still to be read.
  for (size_t i = 0; i < keep.size(); ++i) {
    const int64_t from = keep[i];
    if (from == static_cast<int64_t>(i)) continue;
    std::memcpy(k + i * d, k + from * d, d * sizeof(float));
    std::memcpy(v + i * d, v + from * d, d * sizeof(float));
    p[i] = p[from];
    if (sc != nullptr) sc[i] = sc[from];
  }
}

CompressedKvCache::CompressedKvCache(
    const CacheShape& shape, std::vector<int64_t> budgets, int64_t max_chunk,
    std::shared_ptr<const Compressor> compressor)
    : shape_(shape),
      budgets_(std::move(budgets)),
      compressor_(std::move(compressor)),
      layers_(shape.num_layers),
      decode_caps_(budgets_) {
  // Fixed-size storage, reserved up front (static shapes; MakeCache checked
  // that it fits in memory).
  for (int64_t l = 0; l < shape_.num_layers; ++l) {
    LayerState& s = layers_[l];
    s.slots.Reserve(shape_, budgets_[l] + max_chunk);
    if (compressor_->AccumulatesScores()) {
      s.scores = Tensor({shape_.kv_heads, s.slots.capacity()}, DType::kF32);
    }
  }
}

absl::Status CompressedKvCache::Append(int layer, const float* k,
                                       const float* v,
                                       const int32_t* positions, int64_t n) {
  if (layer < 0 || layer >= shape_.num_layers) {
    return absl::InvalidArgumentError(absl::StrCat("no cache layer ", layer));
  }
  LayerState& s = layers_[layer];
  const int64_t old_cap = s.slots.capacity();
  s.slots.AppendChunk(shape_, k, v, positions, n);
  if (compressor_->AccumulatesScores() && s.slots.capacity() != old_cap) {
    // Storage grew (appending a question or decoding past the reserve).
    Tensor grown({shape_.kv_heads, s.slots.capacity()}, DType::kF32);
    for (int64_t g = 0; g < shape_.kv_heads && old_cap > 0; ++g) {
      std::memcpy(grown.as<float>() + g * s.slots.capacity(),
                  s.scores.as<float>() + g * old_cap, old_cap * sizeof(float));
    }
    s.scores = std::move(grown);
  }
  if (!s.scores.empty()) {
    // New slots start with no attention received.
    for (int64_t g = 0; g < shape_.kv_heads; ++g) {
      float* sc = s.head_scores(g) + s.slots.length - n;
      std::fill(sc, sc + n, 0.0f);
    }
  }
  if (layer == 0) {
    tokens_seen_ += n;
    for (int64_t i = 0; i < n; ++i) {
      last_position_ = std::max(last_position_, positions[i]);
    }
  }
  return absl::OkStatus();
}

LayerView CompressedKvCache::View(int layer) const {
  const LayerSlots& s = layers_[layer].slots;
  return {s.keys.as<float>(), s.values.as<float>(), s.positions.as<int32_t>(),
          s.length, s.capacity()};
}

int64_t CompressedKvCache::ColumnSumQueries(int64_t chunk) const {
  return compressor_->ColumnSumQueries(chunk);
}

void CompressedKvCache::SetPhase(CachePhase phase) {
  if (phase == CachePhase::kDecode && phase_ != CachePhase::kDecode) {
    for (int64_t l = 0; l < shape_.num_layers; ++l) {
      decode_caps_[l] = std::max(budgets_[l], layers_[l].slots.length);
    }
  }
  phase_ = phase;
}

absl::Status CompressedKvCache::AfterAttention(int layer,
                                               const ChunkStats& stats) {
  LayerState& s = layers_[layer];
  const int64_t length = s.slots.length;
  if (compressor_->ColumnSumQueries(stats.chunk) > 0 && stats.col_sums == nullptr) {
    return absl::InternalError("cache policy needs attention column sums");
  }
  if (compressor_->AccumulatesScores()) {
    for (int64_t g = 0; g < shape_.kv_heads; ++g) {
      float* sc = s.head_scores(g);
      const float* cs = stats.col_sums + g * length;
      for (int64_t j = 0; j < length; ++j) sc[j] += cs[j];
    }
  }
  int64_t target = -1;
  if (phase_ == CachePhase::kPrefill && length > budgets_[layer]) {
    target = budgets_[layer];
  } else if (phase_ == CachePhase::kDecode && compressor_->EvictsInDecode() &&
             length > decode_caps_[layer]) {
    target = decode_caps_[layer];
  }
  if (target < 0) return absl::OkStatus();
  CompressRequest r;
  r.shape = &shape_;
  r.target = target;
  r.col_sums = stats.col_sums;
  r.last_position = last_position_;
  r.decoding = phase_ == CachePhase::kDecode;
  compressor_->Compress(s, r);
  return absl::OkStatus();
}

void CompressedKvCache::RopePositions(int layer, const int32_t* absolute,
                                      int64_t n, int32_t* rope) const {
  if (!compressor_->ReindexesPositions()) {
    KvCache::RopePositions(layer, absolute, n, rope);
    return;
  }
  // Cached keys sit rotated at their slot index; new tokens follow them.
  const int64_t next = layers_[layer].slots.length;
  for (int64_t i = 0; i < n; ++i) rope[i] = static_cast<int32_t>(next + i);
}

int64_t CompressedKvCache::bytes() const {
  int64_t b = 0;
  for (const LayerState& s : layers_) {
    b += s.slots.keys.bytes() + s.slots.values.bytes();
  }
  return b;
}

std::unique_ptr<KvCache> CompressedKvCache::Clone() const {
  auto c = std::make_unique<CompressedKvCache>(shape_, budgets_, 0,
                                               compressor_);
  for (int64_t l = 0; l < shape_.num_layers; ++l) {
    c->layers_[l].slots = layers_[l].slots.Copy();
    c->layers_[l].scores =
        layers_[l].scores.empty() ? Tensor() : layers_[l].scores.Copy();
  }
  c->decode_caps_ = decode_caps_;
  c->phase_ = phase_;
  c->tokens_seen_ = tokens_seen_;
  c->last_position_ = last_position_;
  return c;
}

}  // namespace kvfold
