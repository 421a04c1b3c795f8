// Policies that keep a subset of the cached tokens: StreamingLLM, H2O,
// SnapKV (and PyramidKV through its budgets).
#include <algorithm>
#include <numeric>

#include "cache/compressors.h"
#include "kernels/ops.h"
#include "kernels/status_macros.h"

namespace kvfold {

std::vector<int64_t> TopKAscending(const float* scores, int64_t n, int64_t k) {
  k = std::clamp<int64_t>(k, 0, n);
  std::vector<int64_t> idx(n);
  std::iota(idx.begin(), idx.end(), 0);
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(),
                    [scores](int64_t a, int64_t b) {
                      return scores[a] > scores[b] ||
                             (scores[a] == scores[b] && a < b);
                    });
  idx.resize(k);
  std::sort(idx.begin(), idx.end());
  return idx;
}

void AveragePool(const float* x, int64_t n, int64_t kernel, float* out) {
  const int64_t r = kernel / 2;
  for (int64_t j = 0; j < n; ++j) {
    double sum = 0;
    for (int64_t t = std::max<int64_t>(0, j - r); t <= std::min(n - 1, j + r);
         ++t) {
      sum += x[t];
    }
    out[j] = static_cast<float>(sum / kernel);
  }
}

std::vector<int64_t> PyramidBudgets(int64_t slots, int64_t window,
                                    int64_t beta, int64_t num_layers) {
  if (num_layers <= 1) return std::vector<int64_t>(num_layers, slots);
  const int64_t prefix = slots - window;
  const int64_t min_num = prefix / beta;
  const int64_t max_num = 2 * prefix - min_num;
  const int64_t step = (max_num - min_num) / (num_layers - 1);
  std::vector<int64_t> budgets(num_layers);
  for (int64_t l = 0; l < num_layers; ++l) {
    budgets[l] = window + max_num - l * step;
  }
  return budgets;
}

namespace {

// Keeps the last `window` slots and the top (target - window) of the others
// by rank[j], per head; `rank_of(head, out)` fills out[0, prefix).
template <typename RankFn>
absl::Status KeepTopAndWindow(LayerState& layer, const CompressRequest& r,
                              int64_t window, RankFn rank_of) {
  const int64_t length = layer.slots.length;
  window = std::min(window, r.target);
  const int64_t prefix = length - window;
  std::vector<float> rank(prefix);
  for (int64_t g = 0; g < r.shape->kv_heads; ++g) {
    rank_of(g, prefix, rank.data());
    std::vector<int64_t> keep =
        TopKAscending(rank.data(), prefix, r.target - window);
    for (int64_t j = prefix; j < length; ++j) keep.push_back(j);
    layer.KeepSlots(*r.shape, g, keep);
  }
  layer.slots.length = r.target;
  return absl::OkStatus();
}

class StreamingCompressor : public Compressor {
 public:
  StreamingCompressor(int64_t sinks, bool reindex)
      : sinks_(sinks), reindex_(reindex) {}

  int64_t ColumnSumQueries(int64_t) const override { return 0; }
  bool EvictsInDecode() const override { return true; }
  bool ReindexesPositions() const override { return reindex_; }
  bool NeedsHostKeys() const override { return reindex_; }  // re-rotation

  absl::Status Compress(LayerState& layer,
                        const CompressRequest& r) const override {
    const int64_t length = layer.slots.length;
    const int64_t sinks = std::min(sinks_, r.target);
    std::vector<int64_t> keep(r.target);
    std::iota(keep.begin(), keep.begin() + sinks, 0);
    std::iota(keep.begin() + sinks, keep.end(), length - (r.target - sinks));
    for (int64_t g = 0; g < r.shape->kv_heads; ++g) {
      layer.KeepSlots(*r.shape, g, keep);
      if (reindex_) KVFOLD_RETURN_IF_ERROR(Rerotate(layer, r, g, keep));
    }
    layer.slots.length = r.target;
    return absl::OkStatus();
  }

 private:
  // A key cached at slot keep[i] was rotated to position keep[i]; it now
  // sits at slot i, so it turns by i - keep[i] (rotations compose).
  static absl::Status Rerotate(LayerState& layer, const CompressRequest& r, int64_t g,
                       const std::vector<int64_t>& keep) {
    const int64_t d = r.shape->head_dim;
    std::vector<int32_t> delta(keep.size());
    for (size_t i = 0; i < keep.size(); ++i) {
      delta[i] = static_cast<int32_t>(int64_t(i) - keep[i]);
    }
    Stream cpu;
    cpu.device = Device::Cpu();
    float* k = layer.slots.head_keys(g);  // full head_dim (no projection)
    // Validated at creation: the shape carries the frequencies.
    return ApplyRope(cpu, k, delta.data(), r.shape->rope_inv_freq.data(),
                     static_cast<int64_t>(keep.size()), 1, d);
  }

  int64_t sinks_;
  bool reindex_;
};

class H2OCompressor : public Compressor {
 public:
  H2OCompressor(int64_t window, bool average)
      : window_(window), average_(average) {}

  int64_t ColumnSumQueries(int64_t chunk) const override { return chunk; }
  bool AccumulatesScores() const override { return true; }
  bool EvictsInDecode() const override { return true; }

  absl::Status Compress(LayerState& layer,
                        const CompressRequest& r) const override {
    // While decoding the newest token is always kept (with window 0 it
    // would otherwise be dropped right after its own step).
    const int64_t window = r.decoding ? std::max<int64_t>(window_, 1) : window_;
    return KeepTopAndWindow(layer, r, window,
                     [&](int64_t g, int64_t prefix, float* rank) {
                       const float* sc = layer.head_scores(g);
                       const int32_t* pos = layer.slots.positions.as<int32_t>() +
                                            g * layer.slots.capacity();
                       for (int64_t j = 0; j < prefix; ++j) {
                         // Queries that attended to the token: it and all
                         // after it (evicted tokens never come back).
                         rank[j] = average_
                                       ? sc[j] / float(r.last_position + 1 - pos[j])
                                       : sc[j];
                       }
                     });
  }

 private:
  int64_t window_;
  bool average_;
};

class SnapKVCompressor : public Compressor {
 public:
  SnapKVCompressor(int64_t window, int64_t kernel)
      : window_(window), kernel_(kernel) {}

  int64_t ColumnSumQueries(int64_t chunk) const override {
    return std::min(window_, chunk);
  }

  absl::Status Compress(LayerState& layer,
                        const CompressRequest& r) const override {
    const int64_t length = layer.slots.length;
    return KeepTopAndWindow(layer, r, window_,
                     [&](int64_t g, int64_t prefix, float* rank) {
                       AveragePool(r.col_sums + g * length, prefix, kernel_,
                                   rank);
                     });
  }

 private:
  int64_t window_;
  int64_t kernel_;
};

}  // namespace

std::shared_ptr<const Compressor> MakeStreamingCompressor(int64_t sinks,
                                                          bool reindex) {
  return std::make_shared<StreamingCompressor>(sinks, reindex);
}

std::shared_ptr<const Compressor> MakeH2OCompressor(int64_t window,
                                                    bool average_over_queries) {
  return std::make_shared<H2OCompressor>(window, average_over_queries);
}

std::shared_ptr<const Compressor> MakeSnapKVCompressor(int64_t window,
                                                       int64_t kernel) {
  return std::make_shared<SnapKVCompressor>(window, kernel);
}

}  // namespace kvfold
