#include "cache/kv_cache.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "cache/matryoshka.h"
#include "kernels/status_macros.h"

namespace kvfold {

int64_t CacheShape::key_dim(int64_t layer, int64_t head) const {
  return features ? features->head(layer, head).key_dim : head_dim;
}

int64_t CacheShape::value_dim(int64_t layer, int64_t head) const {
  return features ? features->head(layer, head).value_dim : head_dim;
}

absl::Status LayerSlots::Reserve(const CacheShape& shape, int layer, int64_t slots) {
  if (slots <= capacity()) return absl::OkStatus();
  const int64_t cap_new = slots, old = capacity();
  const int64_t h = shape.kv_heads;
  const Stream& s = shape.stream;
  if (shape.features != nullptr && s.device.kind != Device::Kind::kCpu) {
    return absl::UnimplementedError("projected (MatryoshkaKV) caches live in host memory");
  }
  const std::vector<int64_t> old_koff = key_offsets, old_voff = value_offsets;
  key_dims.resize(h);
  value_dims.resize(h);
  key_offsets.resize(h);
  value_offsets.resize(h);
  int64_t kw = 0, vw = 0;  // features of all heads
  for (int64_t g = 0; g < h; ++g) {
    key_dims[g] = shape.key_dim(layer, g);
    value_dims[g] = shape.value_dim(layer, g);
    key_offsets[g] = kw * cap_new;
    value_offsets[g] = vw * cap_new;
    kw += key_dims[g];
    vw += value_dims[g];
  }
  // Uniform heads keep the [heads, capacity, head_dim] shape the device
  // kernels index; projected ones are packed (host only).
  const Shape kshape = shape.features ? Shape{kw * cap_new} : Shape{h, cap_new, shape.head_dim};
  const Shape vshape = shape.features ? Shape{vw * cap_new} : Shape{h, cap_new, shape.head_dim};
  absl::StatusOr<Tensor> k = Tensor::Allocate(kshape, DType::kF32, s.device);
  if (!k.ok()) return k.status();
  absl::StatusOr<Tensor> v = Tensor::Allocate(vshape, DType::kF32, s.device);
  if (!v.ok()) return v.status();
  Tensor p({h, cap_new}, DType::kI32);
  if (length > 0 && shape.features == nullptr) {
    const size_t row = shape.head_dim * sizeof(float);  // one copy per tensor
    KVFOLD_RETURN_IF_ERROR(CopyRowsOnDevice(s, k->data(), cap_new * row, keys.data(),
                                            old * row, length * row, h));
    KVFOLD_RETURN_IF_ERROR(CopyRowsOnDevice(s, v->data(), cap_new * row, values.data(),
                                            old * row, length * row, h));
  }
  for (int64_t g = 0; g < h && length > 0; ++g) {
    if (shape.features != nullptr) {  // one head's rows are contiguous
      KVFOLD_RETURN_IF_ERROR(CopyOnDevice(s, k->as<float>() + key_offsets[g],
                                          keys.as<float>() + old_koff[g],
                                          length * key_dims[g] * sizeof(float)));
      KVFOLD_RETURN_IF_ERROR(CopyOnDevice(s, v->as<float>() + value_offsets[g],
                                          values.as<float>() + old_voff[g],
                                          length * value_dims[g] * sizeof(float)));
    }
    std::memcpy(p.as<int32_t>() + g * cap_new, positions.as<int32_t>() + g * old,
                length * sizeof(int32_t));
  }
  keys = std::move(*k);
  values = std::move(*v);
  positions = std::move(p);
  cap = cap_new;
  return absl::OkStatus();
}

absl::Status LayerSlots::AppendChunk(const CacheShape& shape, int layer, const float* k,
                                     const float* v, const int32_t* pos,
                                     int64_t n) {
  // Geometric growth keeps appends amortised O(1).
  if (length + n > capacity()) {
    KVFOLD_RETURN_IF_ERROR(
        Reserve(shape, layer, std::max<int64_t>(length + n, capacity() * 2)));
  }
  const int64_t h = shape.kv_heads, d = shape.head_dim;
  if (shape.features == nullptr) {
    // [n, heads, d] -> [heads, slots, d]
    KVFOLD_RETURN_IF_ERROR(AppendKv(shape.stream, k, v, n, h, d, keys.as<float>(),
                                    values.as<float>(), cap, length));
  } else {
    for (int64_t g = 0; g < h; ++g) {
      const ProjectedHead& p = shape.features->head(layer, g);
      FeatureLayout::Project(p.key_rows.data(), p.key_dim, d, k + g * d, h * d, n,
                             head_keys(g) + length * p.key_dim, p.key_dim);
      FeatureLayout::Project(p.value_rows.data(), p.value_dim, d, v + g * d, h * d, n,
                             head_values(g) + length * p.value_dim, p.value_dim);
    }
  }
  for (int64_t g = 0; g < h; ++g) {
    std::copy(pos, pos + n, positions.as<int32_t>() + g * cap + length);
  }
  length += n;
  return absl::OkStatus();
}

LayerView LayerSlots::View() const {
  LayerView view{keys.as<float>(), values.as<float>(), positions.as<int32_t>(),
                 length, cap};
  if (!key_offsets.empty() && keys.shape().size() == 1) {  // packed (projected) heads
    view.key_offsets = key_offsets.data();
    view.value_offsets = value_offsets.data();
  }
  return view;
}

LayerSlots LayerSlots::Copy() const {
  LayerSlots c;
  if (!keys.empty()) {
    c.keys = keys.Copy();
    c.values = values.Copy();
    c.positions = positions.Copy();
  }
  c.length = length;
  c.cap = cap;
  c.key_dims = key_dims;
  c.value_dims = value_dims;
  c.key_offsets = key_offsets;
  c.value_offsets = value_offsets;
  return c;
}

void KvCache::RopePositions(int, const int32_t* absolute, int64_t n,
                            int32_t* rope) const {
  std::copy(absolute, absolute + n, rope);
}

double SlotCompressionRatio(int64_t tokens_seen, int64_t slots_held, int num_layers) {
  return slots_held > 0 ? double(tokens_seen) * num_layers / slots_held : 1.0;
}

CacheStats KvCache::Stats() const {
  CacheStats st;
  st.tokens_seen = tokens_seen();
  for (int layer = 0; layer < shape().num_layers; ++layer) {
    st.slots_held += View(layer).length;
  }
  st.compression_ratio = SlotCompressionRatio(st.tokens_seen, st.slots_held, shape().num_layers);
  if (const FeatureLayout* f = shape().features.get(); f != nullptr && st.slots_held > 0) {
    // Projected features: the ratio of the features a full cache would hold
    // to those held (slots x (r_k + r_v), summed over layers and heads).
    double held = 0;
    for (int layer = 0; layer < shape().num_layers; ++layer) {
      int64_t per_slot = 0;
      for (int64_t h = 0; h < shape().kv_heads; ++h) {
        per_slot += f->head(layer, h).key_dim + f->head(layer, h).value_dim;
      }
      held += double(View(layer).length) * per_slot;
    }
    st.compression_ratio = double(st.tokens_seen) * shape().num_layers * shape().kv_heads *
                           2 * shape().head_dim / held;
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
  return layers_[layer].AppendChunk(shape_, layer, k, v, positions, n);
}

LayerView FullKvCache::View(int layer) const { return layers_[layer].View(); }

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
  c->skipped_ = skipped_;
  return c;
}

}  // namespace kvfold
