// MatryoshkaKV (ALGORITHMS.md section 3): per layer and KV head, orthogonal
// bases U_k, U_v and means mu_k, mu_v shrink the cached feature axis to ranks
// r_k, r_v. The parameters come from a compressor file (kvfold calibrate
// --method=pca, or tools/calibrate/matryoshka_calibrate.py), which stores
// several rank allocations; a feature budget picks one.
//
// What the cache holds. The paper caches k~ = (k - mu) U_r. Since
//   (k - mu) U_r U_r^T + mu = k U_r U_r^T + mu_perp,  mu_perp = mu - mu U_r U_r^T,
// kvfold caches k' = k U_r instead (and v' = v U_r): then
//   q . k^ = (q U_r) . k' + q . mu_perp_k    (the last term is the same for
//                                             every key: softmax ignores it)
//   o      = (softmax . v') U_r^T + mu_perp_v
// which is the paper's attention exactly, and a weighted average of cached
// slots (merging, fusing) is the projection of the average of their
// reconstructions, so slot policies work on the projected cache unchanged.
// The reconstructed key of a slot is k' U_r^T + mu_perp_k; dot products of
// reconstructions are k'_a . k'_b + |mu_perp_k|^2 (KVMerger's similarity).
#ifndef KVFOLD_CACHE_MATRYOSHKA_H_
#define KVFOLD_CACHE_MATRYOSHKA_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/ops.h"

namespace kvfold {

// Everything a MatryoshkaKV compressor file holds.
struct MatryoshkaParams {
  int64_t num_layers = 0;
  int64_t kv_heads = 0;
  int64_t head_dim = 0;
  // Per (layer, KV head), index layer * kv_heads + head: [d, d] row-major,
  // column j the j-th basis vector (most important first), and [d] means.
  struct Head {
    std::vector<float> key_basis, value_basis;
    std::vector<float> key_mean, value_mean;
  };
  std::vector<Head> heads;
  // Stored allocations, budgets strictly descending; ranks[a] holds
  // 2 * num_layers * kv_heads ranks: layer-major, then head, then K, V.
  std::vector<double> budgets;
  std::vector<std::vector<int32_t>> ranks;

  const Head& head(int64_t layer, int64_t h) const {
    return heads[layer * kv_heads + h];
  }
  // Features kept by allocation a: sum of its ranks / (2 L H d).
  double Fraction(int a) const;
  // Sizes, ranks in [1, d], budgets descending in (0, 1] and not exceeded,
  // finite values, orthonormal bases (|U^T U - I| <= 1e-4). Errors name the
  // layer, the head and what is wrong.
  absl::Status Validate() const;
  // The allocation stored for `budget` (within 1e-6); the error lists them.
  absl::StatusOr<int> Allocation(double budget) const;
  std::string BudgetList() const;  // "1, 0.5, 0.25"
};

// Seeded random projections (Gram-Schmidt of Gaussian bases, means of
// scale `mean_scale`) with uniform allocations r = max(1, floor(b * d)) for
// each budget b (descending): what benchmarks time and tests check against.
MatryoshkaParams RandomMatryoshka(int64_t num_layers, int64_t kv_heads, int64_t head_dim,
                                  const std::vector<double>& budgets, float mean_scale,
                                  uint64_t seed);

// One (layer, KV head) of a cache with projected features.
struct ProjectedHead {
  int64_t key_dim = 0, value_dim = 0;  // r_k, r_v
  std::vector<float> key_rows;    // [r_k, d]: the kept basis vectors as rows
  std::vector<float> value_rows;  // [r_v, d]
  std::vector<float> key_offset;    // [d] mu_perp_k
  std::vector<float> value_offset;  // [d] mu_perp_v
  float key_offset_sq = 0;          // |mu_perp_k|^2
};

// The projected feature layout of one cache: every layer, the KV heads one
// rank holds. Immutable, shared by every cache of an engine.
class FeatureLayout {
 public:
  // Allocation `a` of `p` for KV heads [head_begin, head_begin + heads).
  static absl::StatusOr<std::shared_ptr<const FeatureLayout>> Make(
      const MatryoshkaParams& p, int a, int64_t head_begin, int64_t heads);

  int64_t num_layers() const { return layers_; }
  int64_t kv_heads() const { return heads_; }
  int64_t head_begin() const { return head_begin_; }  // the first model KV head
  int64_t head_dim() const { return d_; }
  double budget() const { return budget_; }
  const ProjectedHead& head(int64_t layer, int64_t h) const {
    return heads_data_[layer * heads_ + h];
  }

  // out[t, :] = rows . x[t, :] for n vectors x (stride `x_stride` floats),
  // out rows `out_stride` apart: the projection of keys or values (rows =
  // key_rows or value_rows, r of them).
  static void Project(const float* rows, int64_t r, int64_t d, const float* x,
                      int64_t x_stride, int64_t n, float* out, int64_t out_stride);
  // out[t, :] = y[t, :] . rows + offset: a reconstruction in the full d.
  static void Reconstruct(const float* rows, int64_t r, int64_t d,
                          const float* offset, const float* y, int64_t y_stride,
                          int64_t n, float* out, int64_t out_stride);

 private:
  int64_t layers_ = 0, heads_ = 0, head_begin_ = 0, d_ = 0;
  double budget_ = 1;
  std::vector<ProjectedHead> heads_data_;
};

struct LayerView;

// Attention of one layer over a projected cache (CPU): per KV head, the
// group's queries are projected to q U_r, attend over the cached k', v'
// (scale 1/sqrt(d) of the full head_dim) and the outputs are reconstructed.
// `a` is the full-dimension call (q, out, counts, col_sums, lse as for
// Attention); its k, v, kv_stride are taken from `view`. lse includes the
// q . mu_perp_k term, so it equals the paper's.
//
// With `folded` (the caller folds U_v and mu_perp_v into its output
// projection), query head h's projected output [n, r_v] is written at
// a.out + folded->offsets[h], rows folded->stride apart, instead.
struct FoldedLayout {
  const int64_t* offsets = nullptr;  // [q_heads]
  int64_t stride = 0;
};
absl::Status ProjectedAttention(const Stream& s, const FeatureLayout& layout,
                                int layer, const LayerView& view,
                                const AttentionArgs& a,
                                const FoldedLayout* folded = nullptr);

}  // namespace kvfold

#endif  // KVFOLD_CACHE_MATRYOSHKA_H_
