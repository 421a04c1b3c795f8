// The sequence-parallel block plan and its errors.
#include "runtime/sequence_parallel.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace kvfold {
namespace {

TEST(PlanBlocksTest, ContiguousNearEqualBlocks) {
  absl::StatusOr<SpPlan> p = PlanBlocks(10, 3, 3);
  ASSERT_TRUE(p.ok()) << p.status();
  ASSERT_EQ(p->blocks.size(), 3u);
  EXPECT_EQ(p->blocks[0].begin, 0);
  EXPECT_EQ(p->blocks[0].end, 4);
  EXPECT_EQ(p->blocks[1].begin, 4);
  EXPECT_EQ(p->blocks[1].end, 7);
  EXPECT_EQ(p->blocks[2].begin, 7);
  EXPECT_EQ(p->blocks[2].end, 10);
  EXPECT_EQ(p->anchor, 3);
  absl::StatusOr<SpPlan> one = PlanBlocks(10, 1, 5);
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(one->anchor, 0);  // nothing to prefix
  EXPECT_EQ(one->blocks[0].size(), 10);
}

TEST(PlanBlocksTest, ClearErrors) {
  struct Case {
    int64_t tokens;
    int sp;
    int64_t anchor;
    std::string message;
  };
  for (const Case& c : std::vector<Case>{
           {3, 4, 0, "--sp=4 needs a document of at least 4 tokens"},
           {10, 0, 0, "--sp=0: must be >= 1"},
           {10, 3, 4, "an anchor of 4 tokens is longer than a block"},
           {10, 2, -1, "must be >= 0"},
       }) {
    absl::StatusOr<SpPlan> p = PlanBlocks(c.tokens, c.sp, c.anchor);
    ASSERT_FALSE(p.ok()) << c.message;
    EXPECT_NE(std::string(p.status().message()).find(c.message), std::string::npos)
        << p.status();
  }
}

TEST(PlanBlocksTest, DefaultAnchorScalesWithTheDocument) {
  EXPECT_EQ(DefaultAnchorTokens(131072, 8), 4096);  // APB's 128K on 8 ranks
  EXPECT_EQ(DefaultAnchorTokens(100, 4), 6);
  EXPECT_EQ(DefaultAnchorTokens(1 << 20, 2), 4096);
  EXPECT_EQ(DefaultAnchorTokens(100, 1), 0);
  for (int64_t n : {4, 100, 5000, 1 << 20}) {
    for (int sp : {2, 4}) EXPECT_TRUE(PlanBlocks(n, sp, DefaultAnchorTokens(n, sp)).ok());
  }
}

// A model where attention matters: 2 GFLOP-ish per token, 4K per key.
SpCostModel Costs(int64_t passing) {
  return SpCostModel{.token = 2.0e6, .pair = 4096, .cache = 768, .passing = passing};
}

TEST(PlanBalancedBlocksTest, EqualCostsAndFewerTokensForLaterRanks) {
  for (int sp : {2, 3, 4, 8}) {
    for (int64_t tokens : {int64_t{32768}, int64_t{262144}, int64_t{1000003}}) {
      const SpCostModel cost = Costs(512);
      const int64_t anchor = 512;
      absl::StatusOr<SpPlan> p = PlanBalancedBlocks(tokens, sp, anchor, cost);
      ASSERT_TRUE(p.ok()) << p.status();
      ASSERT_EQ(int(p->blocks.size()), sp);
      EXPECT_EQ(p->anchor, anchor);
      int64_t begin = 0;
      double least = 1e300, most = 0, step = 0;
      for (int r = 0; r < sp; ++r) {
        const SpBlock& b = p->blocks[r];
        EXPECT_EQ(b.begin, begin);  // contiguous, in order
        EXPECT_GE(b.size(), r == 0 ? 1 : anchor);
        if (r > 0) EXPECT_LT(b.size(), p->blocks[r - 1].size()) << "rank " << r;
        begin = b.end;
        const double c = BlockCost(cost, r, b.size(), anchor);
        least = std::min(least, c);
        most = std::max(most, c);
        step = std::max(step, BlockCost(cost, r, 1, anchor) - BlockCost(cost, r, 0, anchor));
      }
      EXPECT_EQ(begin, tokens);
      // Whole tokens: every rank within a token's cost of the others.
      EXPECT_LE(most - least, 2 * step) << "sp " << sp << " tokens " << tokens;
      // And better than equal blocks.
      absl::StatusOr<SpPlan> eq = PlanBlocks(tokens, sp, anchor);
      ASSERT_TRUE(eq.ok());
      double eq_most = 0;
      for (int r = 0; r < sp; ++r) {
        eq_most = std::max(eq_most, BlockCost(cost, r, eq->blocks[r].size(), anchor));
      }
      EXPECT_LT(most, eq_most);
    }
  }
}

TEST(PlanBalancedBlocksTest, MinimumsAndDegenerateCosts) {
  // Without attention or anchor every rank costs the same per token: equal
  // blocks.
  absl::StatusOr<SpPlan> p = PlanBalancedBlocks(10, 3, 0, SpCostModel{.token = 1});
  ASSERT_TRUE(p.ok()) << p.status();
  for (const SpBlock& b : p->blocks) EXPECT_GE(b.size(), 3);
  // Huge passing blocks would starve the last ranks: they keep the anchor's
  // length (a block may not be shorter than its anchor).
  p = PlanBalancedBlocks(1000, 4, 100, Costs(1 << 20));
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->blocks[3].size(), 100);
  EXPECT_EQ(p->blocks[3].end, 1000);
  // The errors of PlanBlocks.
  EXPECT_FALSE(PlanBalancedBlocks(3, 4, 0, Costs(1)).ok());
  EXPECT_FALSE(PlanBalancedBlocks(10, 3, 4, Costs(1)).ok());
  // No cost model: equal blocks.
  p = PlanBalancedBlocks(10, 3, 0, SpCostModel{});
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->blocks[0].size(), 4);
}

}  // namespace
}  // namespace kvfold
