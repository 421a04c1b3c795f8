#include "cache/kv_cache.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"

namespace kvfold {

absl::Status LayerSlots::Reserve(const CacheShape& shape, int64_t slots) {
  if (slots <= capacity()) return absl::OkStatus();
  const int64_t cap = slots, old = capacity();
  const int64_t h = shape.kv_heads, d = shape.head_dim;
  const Stream& s = shape.stream;
  absl::StatusOr<Tensor> k = Tensor::Allocate({h, cap, d}, DType::kF32, s.device);
  if (!k.ok()) return k.status();
  absl::StatusOr<Tensor> v = Tensor::Allocate({h, cap, d}, DType::kF32, s.device);
  if (!v.ok()) return v.status();
  Tensor p({h, cap}, DType::kI32);
  if (length > 0) {
    const size_t row = d * sizeof(float);
    KVFOLD_RETURN_IF_ERROR(CopyRowsOnDevice(s, k->data(), cap * row, keys.data(),
                                            old * row, length * row, h));
    KVFOLD_RETURN_IF_ERROR(CopyRowsOnDevice(s, v->data(), cap * row,
                                            values.data(), old * row,
                                            length * row, h));
    for (int64_t g = 0; g < h; ++g) {
      std::memcpy(p.as<int32_t>() + g * cap, positions.as<int32_t>() + g * old,
                  length * sizeof(int32_t));
    }
  }
  keys = std::move(*k);
  values = std::move(*v);
  positions = std::move(p);
  return absl::OkStatus();
}

absl::Status LayerSlots::AppendChunk(const CacheShape& shape, const float* k,
                                     const float* v, const int32_t* pos,
                                     int64_t n) {
  // Geometric growth keeps appends amortised O(1).
  if (length + n > capacity()) {
    KVFOLD_RETURN_IF_ERROR(
        Reserve(shape, std::max<int64_t>(length + n, capacity() * 2)));
  }
  const int64_t h = shape.kv_heads, d = shape.head_dim, cap = capacity();
  // [n, heads, d] -> [heads, slots, d]
  KVFOLD_RETURN_IF_ERROR(AppendKv(shape.stream, k, v, n, h, d, keys.as<float>(),
                                  values.as<float>(), cap, length));
  for (int64_t g = 0; g < h; ++g) {
    std::copy(pos, pos + n, positions.as<int32_t>() + g * cap + length);
  }
  length += n;
  return absl::OkStatus();
}

LayerSlots LayerSlots::Copy() const {
  LayerSlots c;
  if (!keys.empty()) {
    c.keys = keys.Copy();
    c.values = values.Copy();
    c.positions = positions.Copy();
  }
  c.length = length;
  return c;
}

void KvCache::RopePositions(int, const int32_t* absolute, int64_t n,
                            int32_t* rope) const {
  std::copy(absolute, absolute + n, rope);
}

CacheStats KvCache::Stats() const {
  CacheStats st;
  st.tokens_seen = tokens_seen();
  for (int layer = 0; layer < shape().num_layers; ++layer) {
    st.slots_held += View(layer).length;
  }
  if (st.slots_held > 0) {
    st.compression_ratio =
        double(st.tokens_seen) * shape().num_layers / st.slots_held;
  }
  st.bytes = bytes();
  return st;
}

FullKvCache::FullKvCache(const CacheShape& shape)
    : shape_(shape), layers_(shape.num_layers) {}

absl::Status FullKvCache::Append(int layer, const float* k, const float* v,
                                 const int32_t* positions, int64_t n) {
  if (layer < 0 || layer >= shape_.num_layers) {
    return absl::InvalidArgumentError(absl::StrCat("no cache layer ", layer));
  }
  return layers_[layer].AppendChunk(shape_, k, v, positions, n);
}

LayerView FullKvCache::View(int layer) const {
  const LayerSlots& s = layers_[layer];
  return {s.keys.as<float>(), s.values.as<float>(), s.positions.as<int32_t>(),
          s.length, s.capacity()};
}

int64_t FullKvCache::tokens_seen() const {
  return layers_.empty() ? 0 : layers_[0].length;
}

int64_t FullKvCache::bytes() const {
  int64_t b = 0;
  for (const LayerSlots& s : layers_) b += s.keys.bytes() + s.values.bytes();
  return b;
}

std::unique_ptr<KvCache> FullKvCache::Clone() const {
  auto c = std::make_unique<FullKvCache>(shape_);
  for (size_t i = 0; i < layers_.size(); ++i) c->layers_[i] = layers_[i].Copy();
  return c;
}

}  // namespace kvfold
