#include "parallel/mesh.h"

#include "absl/strings/str_cat.h"

namespace kvfold {

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
        " (the data-parallel degree is world / (tp x sp))"));
  }
  const int t = shape.tp;
  if (limits.heads % t != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--tp=", t, " does not divide the model's ", limits.heads, " attention heads"));
  }
  if (limits.intermediate % t != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--tp=", t, " does not divide the model's MLP width ", limits.intermediate));
  }
  Mesh m;
  if (t <= limits.kv_heads) {
    if (limits.kv_heads % t != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--tp=", t, " does not divide the model's ", limits.kv_heads, " KV heads"));
    }
    m.local_kv_heads_ = limits.kv_heads / t;
    m.kv_replication_ = 1;
  } else {
    // More ranks than KV heads: each KV head is replicated on t / kv_heads
    // ranks, which must come out whole.
    if (t % limits.kv_heads != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--tp=", t, " is larger than the model's ", limits.kv_heads,
          " KV heads and not a multiple of them, so the heads cannot be replicated evenly"));
    }
    m.local_kv_heads_ = 1;
    m.kv_replication_ = t / limits.kv_heads;
  }
  m.world_ = world;
  m.rank_ = rank;
  m.tp_ = t;
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
