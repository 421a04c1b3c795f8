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

}  // namespace
}  // namespace kvfold
