// LoCoCo's cache update, per layer and KV head g, once the layer holds
// L > M + buffer slots (col_sums: this chunk's attention, summed over the
// group's query heads and the chunk's queries):
//   HH   = the top (M - Mc) slots by col_sums, kept as they are, in order;
//   rest = the other Lr = L - (M - Mc) slots, in order;
//   sel  = the top Mc of rest by col_sums, in order: R[i, sel[i]] = 1;
//   X    = [keys | values] of rest as [2d, Lr];
//   S    = softmax over Lr of ReLU(Conv1d(X)) [Mc, Lr], the conv as im2col +
//          one GEMM;
//   W    = (1 - alpha) R + alpha S;  fused slots = W [K_rest | V_rest].
// The cache becomes [HH ; fused] (M slots). A fused slot takes the position
// of the token its hard selection points at.
#include "cache/lococo.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>

#include "absl/strings/str_cat.h"
#include "cache/compressors.h"
#include "cache/matryoshka.h"
#include "kernels/ops.h"
#include "kernels/status_macros.h"

namespace kvfold {

absl::Status LoCoCoParams::Validate() const {
  auto bad = [](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat("lococo: ", what));
  };
  if (slots < 1) return bad(absl::StrCat("cache_slots must be >= 1, got ", slots));
  if (compressed_slots < 1 || compressed_slots > slots) {
    return bad(absl::StrCat("compressed_slots must be in [1, ", slots, "], got ",
                            compressed_slots));
  }
  if (kernel < 1 || kernel % 2 == 0) {
    return bad(absl::StrCat("kernel_size must be odd and >= 1, got ", kernel));
  }
  if (head_dim < 1) return bad(absl::StrCat("head_dim must be >= 1, got ", head_dim));
  if (buffer < 0) return bad(absl::StrCat("buffer must be >= 0, got ", buffer));
  const int64_t in = 2 * head_dim * kernel;
  for (size_t l = 0; l < layers.size(); ++l) {
    const LoCoCoLayer& w = layers[l];
    if (w.conv_weight.numel() != compressed_slots * in ||
        w.conv_bias.numel() != compressed_slots) {
      return bad(absl::StrCat("layer ", l, ": conv weight/bias sizes ",
                              w.conv_weight.numel(), "/", w.conv_bias.numel(),
                              ", expected ", compressed_slots * in, "/",
                              compressed_slots));
    }
  }
  return absl::OkStatus();
}

LoCoCoParams RandomLoCoCo(int64_t num_layers, int64_t head_dim, int64_t slots,
                          double hh_keep_rate, int64_t kernel, uint64_t seed) {
  LoCoCoParams p;
  p.slots = slots;
  p.compressed_slots = static_cast<int64_t>(double(slots) * (1.0 - hh_keep_rate));
  p.kernel = kernel;
  p.head_dim = head_dim;
  p.hh_keep_rate = hh_keep_rate;
  p.variant = hh_keep_rate == 0 ? "pure" : "official";
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const int64_t in = 2 * head_dim * kernel;
  std::uniform_real_distribution<float> uniform(-1.0f / std::sqrt(float(in)),
                                                1.0f / std::sqrt(float(in)));
  for (int64_t l = 0; l < num_layers; ++l) {
    LoCoCoLayer w;
    w.conv_weight = Tensor({p.compressed_slots, 2 * head_dim, kernel}, DType::kF32);
    w.conv_bias = Tensor({p.compressed_slots}, DType::kF32);
    for (int64_t i = 0; i < w.conv_weight.numel(); ++i) w.conv_weight.as<float>()[i] = normal(rng);
    for (int64_t i = 0; i < w.conv_bias.numel(); ++i) w.conv_bias.as<float>()[i] = uniform(rng);
    w.alpha = hh_keep_rate == 0 ? 1.0f : 0.5f;
    p.layers.push_back(std::move(w));
  }
  return p;
}

namespace {

class LoCoCoCompressor : public Compressor {
 public:
  LoCoCoCompressor(std::shared_ptr<const LoCoCoParams> p, int64_t buffer)
      : p_(std::move(p)), buffer_(buffer) {}

  int64_t ColumnSumQueries(int64_t chunk) const override { return chunk; }
  bool EvictsInDecode() const override { return true; }
  bool DecodesToBudget() const override { return true; }
  int64_t Slack() const override { return buffer_; }
  bool NeedsHostKeys() const override { return true; }  // fuses vectors

  absl::Status Compress(LayerState& layer,
                        const CompressRequest& r) const override {
    Work w;
    w.length = layer.slots.length;
    w.d = r.shape->head_dim;
    w.mc = p_->compressed_slots;
    w.keep = p_->heavy_slots();
    w.rest = w.length - w.keep;
    w.channels = 2 * w.d;
    w.in = w.channels * p_->kernel;
    if (r.target != p_->slots || w.rest < w.mc) {
      return absl::InternalError(absl::StrCat(
          "lococo: cannot compress ", w.length, " slots to ", r.target,
          " (calibrated for ", p_->slots, ")"));
    }
    // Working memory: X [2d, rest], its columns [rest, in], the weights
    // [mc, rest], the fused slots [mc, 2d] and, for projected features, a
    // reconstructed key or value [rest, d].
    std::vector<float>& buf = *r.scratch;
    buf.resize(w.channels * w.rest + w.rest * w.in + w.mc * w.rest + w.mc * w.channels +
               (r.shape->features ? w.rest * w.d : 0));
    w.x = buf.data();
    w.cols = w.x + w.channels * w.rest;
    w.weights = w.cols + w.rest * w.in;
    w.fused = w.weights + w.mc * w.rest;
    w.full = w.fused + w.mc * w.channels;
    for (int64_t g = 0; g < r.shape->kv_heads; ++g) {
      KVFOLD_RETURN_IF_ERROR(CompressHead(layer, r, g, w));
    }
    layer.slots.length = p_->slots;
    return absl::OkStatus();
  }

 private:
  // The sizes of one layer's compression and the scratch it works in.
  struct Work {
    int64_t length, d, mc, keep, rest, channels, in;
    float* x;        // [channels, rest]
    float* cols;     // [rest, in]
    float* weights;  // [mc, rest]
    float* fused;    // [mc, channels]
    float* full;     // [rest, d] (projected features only)
  };

  // X[c, t] = the c-th feature of `rows[others[t]]` (n features each, c from
  // `first`); projected features are reconstructed in the full head_dim
  // first: the conv was calibrated on full keys and values.
  static void GatherColumns(const float* rows, int64_t n, const std::vector<int64_t>& others,
                            const float* basis, const float* offset, const Work& s,
                            int64_t first) {
    const int64_t rest = s.rest, d = s.d;
    for (int64_t t = 0; t < rest; ++t) {
      const float* src = rows + others[t] * n;
      if (basis != nullptr) {
        FeatureLayout::Reconstruct(basis, n, d, offset, src, n, 1, s.full + t * d, d);
        src = s.full + t * d;
      }
      for (int64_t c = 0; c < d; ++c) s.x[(first + c) * rest + t] = src[c];
    }
  }

  absl::Status CompressHead(LayerState& layer, const CompressRequest& r,
                            int64_t g, const Work& s) const {
    const Stream& stream = r.shape->stream;
    const LoCoCoLayer& w = p_->layers[r.layer];
    const int64_t length = s.length, d = s.d, mc = s.mc, keep = s.keep;
    const int64_t rest = s.rest, channels = s.channels, in = s.in;
    const int64_t cap = layer.slots.capacity();
    const int64_t dk = layer.slots.key_dims[g], dv = layer.slots.value_dims[g];
    float* keys = layer.slots.head_keys(g);
    float* values = layer.slots.head_values(g);
    const ProjectedHead* proj =
        r.shape->features ? &r.shape->features->head(r.layer, g) : nullptr;
    int32_t* pos = layer.slots.positions.as<int32_t>() + g * cap;
    const float* hh = r.col_sums + g * length;

    const std::vector<int64_t> heavy = TopKAscending(hh, length, keep);
    std::vector<int64_t> others;
    std::vector<float> others_hh;
    others.reserve(rest);
    for (int64_t j = 0, h = 0; j < length; ++j) {
      if (h < keep && heavy[h] == j) {
        ++h;
        continue;
      }
      others.push_back(j);
      others_hh.push_back(hh[j]);
    }
    const std::vector<int64_t> sel = TopKAscending(others_hh.data(), rest, mc);

    GatherColumns(keys, dk, others, proj ? proj->key_rows.data() : nullptr,
                  proj ? proj->key_offset.data() : nullptr, s, 0);
    GatherColumns(values, dv, others, proj ? proj->value_rows.data() : nullptr,
                  proj ? proj->value_offset.data() : nullptr, s, d);
    KVFOLD_RETURN_IF_ERROR(
        Im2Col1d(stream, s.x, channels, rest, p_->kernel, s.cols, in));
    const float* bias = w.conv_bias.as<float>();
    for (int64_t i = 0; i < mc; ++i) {
      std::fill(s.weights + i * rest, s.weights + (i + 1) * rest, bias[i]);
    }
    KVFOLD_RETURN_IF_ERROR(MatMulNT(stream, w.conv_weight.as<float>(), in,
                                    s.cols, in, s.weights, rest, mc, rest, in,
                                    /*accumulate=*/true));
    KVFOLD_RETURN_IF_ERROR(Relu(stream, s.weights, mc * rest));
    KVFOLD_RETURN_IF_ERROR(Softmax(stream, s.weights, mc, rest));
    for (int64_t i = 0; i < mc; ++i) {
      float* row = s.weights + i * rest;
      for (int64_t t = 0; t < rest; ++t) row[t] *= w.alpha;
      row[sel[i]] += 1.0f - w.alpha;
    }
    // fused [mc, 2d] = weights [mc, rest] . X[2d, rest]^T. Projected: the
    // same weights (each row sums to 1) over the cached features, which is
    // the projection of the fused reconstructions.
    const int64_t fused_channels = dk + dv;
    if (proj != nullptr) {
      for (int64_t t = 0; t < rest; ++t) {
        for (int64_t c = 0; c < dk; ++c) s.x[c * rest + t] = keys[others[t] * dk + c];
        for (int64_t c = 0; c < dv; ++c) s.x[(dk + c) * rest + t] = values[others[t] * dv + c];
      }
    }
    KVFOLD_RETURN_IF_ERROR(MatMulNT(stream, s.weights, rest, s.x, rest, s.fused,
                                    fused_channels, mc, fused_channels, rest, false));

    // Heavy hitters to the front (heavy[i] >= i: nothing unread is
    // overwritten), then the fused slots.
    std::vector<int32_t> fused_pos(mc);
    for (int64_t i = 0; i < mc; ++i) fused_pos[i] = pos[others[sel[i]]];
    for (int64_t i = 0; i < keep; ++i) {
      if (heavy[i] == i) continue;
      std::memcpy(keys + i * dk, keys + heavy[i] * dk, dk * sizeof(float));
      std::memcpy(values + i * dv, values + heavy[i] * dv, dv * sizeof(float));
      pos[i] = pos[heavy[i]];
    }
    for (int64_t i = 0; i < mc; ++i) {
      std::memcpy(keys + (keep + i) * dk, s.fused + i * fused_channels,
                  dk * sizeof(float));
      std::memcpy(values + (keep + i) * dv, s.fused + i * fused_channels + dk,
                  dv * sizeof(float));
      pos[keep + i] = fused_pos[i];
    }
    return absl::OkStatus();
  }

  std::shared_ptr<const LoCoCoParams> p_;
  int64_t buffer_;
};

}  // namespace

std::shared_ptr<const Compressor> MakeLoCoCoCompressor(
    std::shared_ptr<const LoCoCoParams> params, int64_t buffer) {
  return std::make_shared<LoCoCoCompressor>(std::move(params), buffer);
}

}  // namespace kvfold
