#include "parallel/mesh.h"

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"

namespace kvfold {

absl::StatusOr<TpHeads> SplitHeads(int t, const TpLimits& limits) {
  if (t < 1) return absl::InvalidArgumentError(absl::StrCat("--tp=", t, " must be >= 1"));
  if (limits.heads % t != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--tp=", t, " does not divide the model's ", limits.heads, " attention heads"));
  }
  if (limits.intermediate % t != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--tp=", t, " does not divide the model's MLP width ", limits.intermediate));
  }
  if (t <= limits.kv_heads) {
    if (limits.kv_heads % t != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--tp=", t, " does not divide the model's ", limits.kv_heads, " KV heads"));
    }
    return TpHeads{limits.kv_heads / t, 1};
  }
  // More ranks than KV heads: each KV head is replicated on t / kv_heads
  // ranks, which must come out whole.
  if (t % limits.kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--tp=", t, " is larger than the model's ", limits.kv_heads,
        " KV heads and not a multiple of them, so the heads cannot be replicated evenly"));
  }
  return TpHeads{1, t / limits.kv_heads};
}

absl::StatusOr<Mesh> Mesh::Create(int world, int rank, MeshShape shape,
                                  const TpLimits& limits) {
  if (shape.tp < 1 || shape.sp < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--tp=", shape.tp, " --sp=", shape.sp, ": both must be >= 1"));
  }
  if (world < 1 || rank < 0 || rank >= world) {
    return absl::InvalidArgumentError(absl::StrCat("rank ", rank, " of a world of ", world));
  }
  if (world % (shape.tp * shape.sp) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "world size ", world, " is not divisible by --tp=", shape.tp, " x --sp=", shape.sp,
        " (the data-parallel degree is world / (tp x sp); launch tp x sp x dp ranks "
        "with mpirun -np)"));
  }
  KVFOLD_ASSIGN_OR_RETURN(const TpHeads heads, SplitHeads(shape.tp, limits));
  Mesh m;
  m.local_kv_heads_ = heads.local_kv_heads;
  m.kv_replication_ = heads.kv_replication;
  m.world_ = world;
  m.rank_ = rank;
  m.tp_ = shape.tp;
  m.sp_ = shape.sp;
  return m;
}

std::vector<int> Mesh::TpGroup() const {
  std::vector<int> g;
  for (int t = 0; t < tp_; ++t) g.push_back(RankOf(dp_rank(), sp_rank(), t));
  return g;
}

std::vector<int> Mesh::SpGroup() const {
  std::vector<int> g;
  for (int s = 0; s < sp_; ++s) g.push_back(RankOf(dp_rank(), s, tp_rank()));
  return g;
}

std::vector<int> Mesh::DpGroup() const {
  std::vector<int> g;
  for (int d = 0; d < dp_size(); ++d) g.push_back(RankOf(d, sp_rank(), tp_rank()));
  return g;
}

}  // namespace kvfold
