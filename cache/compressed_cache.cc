#include "cache/compressed_cache.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"

namespace kvfold {

void LayerState::KeepSlots(const CacheShape& shape, int64_t head,
                           absl::Span<const int64_t> keep) {
  const int64_t cap = slots.capacity();
  const int64_t dk = slots.key_dims[head], dv = slots.value_dims[head];
  const bool on_host = shape.stream.device.kind == Device::Kind::kCpu;
  float* k = on_host ? slots.head_keys(head) : nullptr;
  float* v = on_host ? slots.head_values(head) : nullptr;
  int32_t* p = slots.positions.as<int32_t>() + head * cap;
  float* sc = scores.empty() ? nullptr : head_scores(head);
  if (!on_host) {
    // Device keys/values move in one gather per layer (FlushKeeps).
    if (pending_keep.empty()) pending_keep.assign(shape.kv_heads * cap, -1);
    for (size_t i = 0; i < keep.size(); ++i) {
      pending_keep[head * cap + i] = static_cast<int32_t>(keep[i]);
    }
  }
  // keep is ascending, so keep[i] >= i: moving forward never overwrites a
  // slot still to be read.
  for (size_t i = 0; i < keep.size(); ++i) {
    const int64_t from = keep[i];
    if (from == static_cast<int64_t>(i)) continue;
    if (on_host) {
      std::memcpy(k + i * dk, k + from * dk, dk * sizeof(float));
      std::memcpy(v + i * dv, v + from * dv, dv * sizeof(float));
    }
    p[i] = p[from];
    if (sc != nullptr) sc[i] = sc[from];
  }
}

absl::Status LayerState::FlushKeeps(const CacheShape& shape) {
  if (pending_keep.empty()) return absl::OkStatus();
  const int64_t heads = shape.kv_heads, cap = slots.capacity();
  const int64_t count = slots.length;
  std::vector<int32_t> keep(heads * count);
  for (int64_t g = 0; g < heads; ++g) {
    const bool moved = pending_keep[g * cap] >= 0;
    for (int64_t i = 0; i < count; ++i) {
      keep[g * count + i] = moved ? pending_keep[g * cap + i] : int32_t(i);
    }
  }
  pending_keep.clear();
  const Stream& s = shape.stream;
  if (keep_device.empty() || keep_device.numel() < heads * count) {
    KVFOLD_ASSIGN_OR_RETURN(keep_device,
                            Tensor::Allocate({heads, cap}, DType::kI32, s.device));
    keep_uploaded.clear();
  }
  // Decoding evicts the same slots every step (StreamingLLM): upload (a
  // synchronising copy) only when the indices change.
  if (keep != keep_uploaded) {
    KVFOLD_RETURN_IF_ERROR(CopyToDevice(s, keep_device.data(), keep.data(),
                                        keep.size() * sizeof(int32_t)));
    keep_uploaded = std::move(keep);
  }
  const int32_t* idx = keep_device.as<int32_t>();
  KVFOLD_RETURN_IF_ERROR(GatherRows(s, slots.keys.as<float>(), idx, count,
                                    heads, cap, shape.head_dim));
  return GatherRows(s, slots.values.as<float>(), idx, count, heads, cap,
                    shape.head_dim);
}

CompressedKvCache::CompressedKvCache(
    const CacheShape& shape, std::vector<int64_t> budgets, int64_t max_chunk,
    std::shared_ptr<const Compressor> compressor)
    : shape_(shape),
      budgets_(std::move(budgets)),
      compressor_(std::move(compressor)),
      layers_(shape.num_layers),
      decode_caps_(budgets_),
      last_position_(shape.num_layers, -1) {
  // Fixed-size storage, reserved up front (static shapes; MakeCache checked
  // that it fits in memory).
  for (int64_t l = 0; l < shape_.num_layers; ++l) {
    LayerState& s = layers_[l];
    const int64_t reserve = budgets_[l] + compressor_->Slack() + max_chunk;
    if (absl::Status st = s.slots.Reserve(shape_, static_cast<int>(l), reserve);
        !st.ok() && status_.ok()) {
      status_ = st;  // reported by the first Append
    }
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
  KVFOLD_RETURN_IF_ERROR(status_);
  LayerState& s = layers_[layer];
  const int64_t old_cap = s.slots.capacity();
  KVFOLD_RETURN_IF_ERROR(s.slots.AppendChunk(shape_, layer, k, v, positions, n));
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
  if (layer == 0) tokens_seen_ += n;
  for (int64_t i = 0; i < n; ++i) {
    last_position_[layer] = std::max(last_position_[layer], positions[i]);
  }
  return absl::OkStatus();
}

LayerView CompressedKvCache::View(int layer) const { return layers_[layer].slots.View(); }

int64_t CompressedKvCache::ColumnSumQueries(int64_t chunk) const {
  return compressor_->ColumnSumQueries(chunk);
}

void CompressedKvCache::SetPhase(CachePhase phase) {
  if (phase == CachePhase::kDecode && phase_ != CachePhase::kDecode) {
    for (int64_t l = 0; l < shape_.num_layers; ++l) {
      decode_caps_[l] = compressor_->DecodesToBudget()
                            ? budgets_[l]
                            : std::max(budgets_[l], layers_[l].slots.length);
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
  const float* col_sums = stats.col_sums;
  if (col_sums != nullptr && shape_.stream.device.kind != Device::Kind::kCpu) {
    // Policies choose slots on the host.
    host_col_sums_.resize(shape_.kv_heads * length);
    KVFOLD_RETURN_IF_ERROR(CopyToHost(shape_.stream, host_col_sums_.data(),
                                      col_sums,
                                      host_col_sums_.size() * sizeof(float)));
    col_sums = host_col_sums_.data();
  }
  if (compressor_->AccumulatesScores()) {
    for (int64_t g = 0; g < shape_.kv_heads; ++g) {
      float* sc = s.head_scores(g);
      const float* cs = col_sums + g * length;
      for (int64_t j = 0; j < length; ++j) sc[j] += cs[j];
    }
  }
  int64_t target = -1;
  const int64_t slack = compressor_->Slack();
  if (phase_ == CachePhase::kPrefill && length > budgets_[layer] + slack) {
    target = budgets_[layer];
  } else if (phase_ == CachePhase::kDecode && compressor_->EvictsInDecode() &&
             length > decode_caps_[layer] + slack) {
    target = decode_caps_[layer];
  }
  if (target < 0) return absl::OkStatus();
  CompressRequest r;
  r.shape = &shape_;
  r.layer = layer;
  r.target = target;
  r.col_sums = col_sums;
  r.last_position = last_position_[layer];
  r.decoding = phase_ == CachePhase::kDecode;
  r.scratch = &scratch_;
  KVFOLD_RETURN_IF_ERROR(compressor_->Compress(s, r));
  return s.FlushKeeps(shape_);
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
  c->skipped_ = skipped_;
  return c;
}

}  // namespace kvfold
