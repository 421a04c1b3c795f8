// KVMerger (ALGORITHMS.md section 2), per layer and KV head:
//   protect = the top `heavy` slots by accumulated attention and the last
//   `window` slots; each stays alone. The other slots form contiguous merging
//   sets, split wherever adjacent keys' cosine similarity is below eps. Each
//   set becomes one slot: Gaussian-kernel weights around the set's most
//   attended key (the pivot), at the pivot's position.
//
// Exact budget: rather than bisecting eps, the split points are the pairs of
// smallest cosine, as many as the budget allows; bisection on eps converges
// to the same split set whenever those cosines are distinct. If the protected
// slots alone leave too many runs for the budget, the least attended heavy
// hitters are released until it fits (the window never is: it is < budget).
#include <algorithm>
#include <cmath>
#include <numeric>

#include "cache/compressors.h"
#include "cache/matryoshka.h"

namespace kvfold {

namespace {

// Cosine similarity of two keys; `offset_sq` (MatryoshkaKV's |mu_perp_k|^2,
// else 0) makes it that of the keys the projected ones reconstruct.
double Cosine(const float* a, const float* b, int64_t d, double offset_sq) {
  double ab = offset_sq, aa = offset_sq, bb = offset_sq;
  for (int64_t t = 0; t < d; ++t) {
    ab += double(a[t]) * b[t];
    aa += double(a[t]) * a[t];
    bb += double(b[t]) * b[t];
  }
  const double den = std::sqrt(aa * bb);
  return den > 0 ? ab / den : 0.0;
}

// Sets when no unprotected pair is split: each protected slot alone, plus
// each maximal run of unprotected slots.
int64_t MinimumSets(const std::vector<char>& prot) {
  int64_t sets = 0;
  for (size_t i = 0; i < prot.size(); ++i) {
    if (prot[i] || i == 0 || prot[i - 1]) ++sets;
  }
  return sets;
}

class KVMergerCompressor : public Compressor {
 public:
  bool NeedsHostKeys() const override { return true; }  // merges vectors
  explicit KVMergerCompressor(const KVMergerParams& p) : p_(p) {}

  int64_t ColumnSumQueries(int64_t chunk) const override { return chunk; }
  bool AccumulatesScores() const override { return true; }

  absl::Status Compress(LayerState& layer,
                        const CompressRequest& r) const override {
    for (int64_t g = 0; g < r.shape->kv_heads; ++g) CompressHead(layer, r, g);
    layer.slots.length = r.target;
    return absl::OkStatus();
  }

 private:
  void CompressHead(LayerState& layer, const CompressRequest& r,
                    int64_t g) const {
    const int64_t n = layer.slots.length, cap = layer.slots.capacity();
    const Dims d{layer.slots.key_dims[g], layer.slots.value_dims[g]};
    const double offset_sq =
        r.shape->features ? r.shape->features->head(r.layer, g).key_offset_sq : 0.0;
    float* keys = layer.slots.head_keys(g);
    float* values = layer.slots.head_values(g);
    int32_t* pos = layer.slots.positions.as<int32_t>() + g * cap;
    float* score = layer.head_scores(g);

    // Protected slots.
    const int64_t window = std::min(p_.window, r.target - 1);
    std::vector<char> prot(n, 0);
    for (int64_t j = n - window; j < n; ++j) prot[j] = 1;
    std::vector<int64_t> heavy =
        TopKAscending(score, n - window, std::min(p_.heavy, r.target - window));
    // Most attended first, so releasing pops the least attended.
    std::stable_sort(heavy.begin(), heavy.end(), [score](int64_t a, int64_t b) {
      return score[a] > score[b];
    });
    for (int64_t j : heavy) prot[j] = 1;
    while (MinimumSets(prot) > r.target && !heavy.empty()) {
      prot[heavy.back()] = 0;
      heavy.pop_back();
    }

    // Split the unprotected pairs of lowest cosine similarity.
    const int64_t splits = r.target - MinimumSets(prot);
    std::vector<std::pair<double, int64_t>> pairs;  // (cos, i): pair i, i+1
    for (int64_t i = 0; i + 1 < n; ++i) {
      if (!prot[i] && !prot[i + 1]) {
        pairs.emplace_back(Cosine(keys + i * d.k, keys + (i + 1) * d.k, d.k, offset_sq),
                           i);
      }
    }
    std::partial_sort(pairs.begin(), pairs.begin() + splits, pairs.end());
    std::vector<char> split_after(n, 0);
    for (int64_t s = 0; s < splits; ++s) split_after[pairs[s].second] = 1;

    // Merge each set into the next output slot. Set t starts at or after
    // slot t, so writing slot t never clobbers an unread slot.
    std::vector<float> k_out(d.k), v_out(d.v), w;
    int64_t out = 0;
    for (int64_t begin = 0; begin < n;) {
      int64_t end = begin + 1;
      while (end < n && !prot[begin] && !prot[end] && !split_after[end - 1]) {
        ++end;
      }
      MergeSet(keys, values, pos, score, d, begin, end, out, k_out, v_out, w);
      ++out;
      begin = end;
    }
  }

  // Features per slot of keys and of values (MatryoshkaKV ranks, else
  // head_dim both). Merging averages projected slots as it would full ones:
  // the weights sum to 1, so the result is the projection of the average.
  // (SCALED_BY_SIZE values are the exception: |S| times the projection,
  // whose reconstruction misses (|S| - 1) mu_perp_v.)
  struct Dims {
    int64_t k, v;
  };

  void MergeSet(float* keys, float* values, int32_t* pos, float* score,
                Dims d, int64_t begin, int64_t end, int64_t out,
                std::vector<float>& k_out, std::vector<float>& v_out,
                std::vector<float>& w) const {
    int64_t pivot = begin;
    double total = 0;
    for (int64_t i = begin; i < end; ++i) {
      if (score[i] > score[pivot]) pivot = i;
      total += score[i];
    }
    if (end - begin == 1) {
      if (out != begin) {
        std::copy_n(keys + begin * d.k, d.k, keys + out * d.k);
        std::copy_n(values + begin * d.v, d.v, values + out * d.v);
        pos[out] = pos[begin];
        score[out] = score[begin];
      }
      return;
    }
    // Gaussian kernel of the squared distance to the pivot key (projection
    // by orthonormal rows keeps distances between reconstructions).
    const float* kp = keys + pivot * d.k;
    w.assign(end - begin, 0.0f);
    double wsum = 0;
    for (int64_t i = begin; i < end; ++i) {
      double dist2 = 0;
      for (int64_t t = 0; t < d.k; ++t) {
        const double diff = double(kp[t]) - keys[i * d.k + t];
        dist2 += diff * diff;
      }
      const double gi = std::exp(-dist2 / (2.0 * p_.sigma * p_.sigma));
      w[i - begin] = static_cast<float>(gi);
      wsum += gi;
    }
    const float vscale =
        p_.scale_values_by_size ? static_cast<float>(end - begin) : 1.0f;
    std::fill(k_out.begin(), k_out.end(), 0.0f);
    std::fill(v_out.begin(), v_out.end(), 0.0f);
    for (int64_t i = begin; i < end; ++i) {
      const float wi = static_cast<float>(w[i - begin] / wsum);
      for (int64_t t = 0; t < d.k; ++t) k_out[t] += wi * keys[i * d.k + t];
      for (int64_t t = 0; t < d.v; ++t) v_out[t] += wi * values[i * d.v + t];
    }
    for (float& x : v_out) x *= vscale;
    std::copy(k_out.begin(), k_out.end(), keys + out * d.k);
    std::copy(v_out.begin(), v_out.end(), values + out * d.v);
    pos[out] = pos[pivot];
    score[out] = static_cast<float>(total);
  }

  KVMergerParams p_;
};

}  // namespace

std::shared_ptr<const Compressor> MakeKVMergerCompressor(
    const KVMergerParams& params) {
  return std::make_shared<KVMergerCompressor>(params);
}

}  // namespace kvfold
