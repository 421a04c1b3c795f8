#include "parallel/mesh.h"

#include <set>

#include "gtest/gtest.h"

namespace kvfold {
namespace {

const TpLimits kLlama8b{.heads = 32, .kv_heads = 8, .intermediate = 14336};

TEST(MeshTest, GroupsPartitionTheWorld) {
  // world 16 = dp 2 x sp 2 x tp 4: every group has the right size, contains
  // the rank, and the groups of each kind partition the world.
  for (int rank = 0; rank < 16; ++rank) {
    absl::StatusOr<Mesh> m = Mesh::Create(16, rank, {.tp = 4, .sp = 2}, kLlama8b);
    ASSERT_TRUE(m.ok()) << m.status();
    EXPECT_EQ(m->dp_size(), 2);
    EXPECT_EQ(m->local_kv_heads(), 2);
    for (const std::vector<int>& g : {m->TpGroup(), m->SpGroup(), m->DpGroup()}) {
      EXPECT_EQ(std::set<int>(g.begin(), g.end()).count(rank), 1u);
    }
    EXPECT_EQ(m->TpGroup().size(), 4u);
    EXPECT_EQ(m->SpGroup().size(), 2u);
    EXPECT_EQ(m->DpGroup().size(), 2u);
    // TP innermost: a TP group is 4 consecutive ranks.
    EXPECT_EQ(m->TpGroup().front(), rank / 4 * 4);
    EXPECT_EQ(m->TpGroup().back(), rank / 4 * 4 + 3);
  }
  std::set<std::vector<int>> sp_groups;
  for (int rank = 0; rank < 16; ++rank) {
    sp_groups.insert(Mesh::Create(16, rank, {.tp = 4, .sp = 2}, kLlama8b)->SpGroup());
  }
  EXPECT_EQ(sp_groups.size(), 8u);  // 16 ranks / 2 per group
}

TEST(MeshTest, KvHeadsReplicatedWhenTpExceedsThem) {
  absl::StatusOr<Mesh> m = Mesh::Create(16, 0, {.tp = 16, .sp = 1}, kLlama8b);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->local_kv_heads(), 1);
  EXPECT_EQ(m->kv_replication(), 2);
}

TEST(MeshTest, ImpossibleLayoutsAreClearErrors) {
  auto error = [](int world, MeshShape shape, TpLimits limits) {
    absl::StatusOr<Mesh> m = Mesh::Create(world, 0, shape, limits);
    return m.ok() ? std::string("ok") : std::string(m.status().message());
  };
  EXPECT_NE(error(6, {.tp = 4, .sp = 1}, kLlama8b).find("not divisible"), std::string::npos);
  EXPECT_NE(error(3, {.tp = 3, .sp = 1}, kLlama8b).find("32 attention heads"), std::string::npos);
  EXPECT_NE(error(4, {.tp = 4, .sp = 1}, {.heads = 8, .kv_heads = 8, .intermediate = 10})
                .find("MLP width 10"),
            std::string::npos);
  EXPECT_NE(error(4, {.tp = 4, .sp = 1}, {.heads = 12, .kv_heads = 6, .intermediate = 64})
                .find("6 KV heads"),
            std::string::npos);
  EXPECT_NE(error(12, {.tp = 12, .sp = 1}, {.heads = 24, .kv_heads = 8, .intermediate = 96})
                .find("cannot be replicated"),
            std::string::npos);
  EXPECT_NE(error(4, {.tp = 0, .sp = 1}, kLlama8b).find(">= 1"), std::string::npos);
}

}  // namespace
}  // namespace kvfold
