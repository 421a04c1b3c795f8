// The process mesh: world = DP x SP x TP ranks, TP innermost (neighbouring
// ranks share the fastest links), then SP, then DP replicas:
//   rank = (dp * sp_size + sp) * tp_size + tp.
// Mesh::Create checks the layout against the model before anything is
// loaded, so every rank fails at start-up with the same clear message.
#ifndef KVFOLD_PARALLEL_MESH_H_
#define KVFOLD_PARALLEL_MESH_H_

#include <vector>

#include "absl/status/statusor.h"

namespace kvfold {

struct MeshShape {
  int tp = 1;
  int sp = 1;
};

// What the model allows a TP degree to split.
struct TpLimits {
  int heads = 1;          // attention (query) heads
  int kv_heads = 1;       // key/value heads
  int64_t intermediate = 1;  // MLP width
};

// How a TP degree splits the heads: KV heads per rank (kv_heads / tp, or 1
// when replicated) and how many TP ranks share one KV head. Errors name the
// flag and the model's numbers.
struct TpHeads {
  int local_kv_heads = 1;
  int kv_replication = 1;
};
absl::StatusOr<TpHeads> SplitHeads(int tp, const TpLimits& limits);

class Mesh {
 public:
  static absl::StatusOr<Mesh> Create(int world, int rank, MeshShape shape,
                                     const TpLimits& limits);

  int world() const { return world_; }
  int rank() const { return rank_; }
  int tp_size() const { return tp_; }
  int sp_size() const { return sp_; }
  int dp_size() const { return world_ / (tp_ * sp_); }
  int tp_rank() const { return rank_ % tp_; }
  int sp_rank() const { return (rank_ / tp_) % sp_; }
  int dp_rank() const { return rank_ / (tp_ * sp_); }
  // KV heads each TP rank holds (kv_heads / tp, or 1 when replicated), and
  // how many TP ranks share one KV head.
  int local_kv_heads() const { return local_kv_heads_; }
  int kv_replication() const { return kv_replication_; }

  // World ranks of this rank's groups, in group-rank order.
  std::vector<int> TpGroup() const;
  std::vector<int> SpGroup() const;
  std::vector<int> DpGroup() const;

 private:
  int RankOf(int dp, int sp, int tp) const { return (dp * sp_ + sp) * tp_ + tp; }
  int world_ = 1, rank_ = 0, tp_ = 1, sp_ = 1;
  int local_kv_heads_ = 1, kv_replication_ = 1;
};

}  // namespace kvfold

#endif  // KVFOLD_PARALLEL_MESH_H_
