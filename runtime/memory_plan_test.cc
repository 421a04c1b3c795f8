// Memory admission arithmetic on Llama-3.1-8B's shape, against sizes worked
// out by hand: weights 4 bytes x parameters / TP; a cache holds keys and
// values (2 x 4 bytes) x layers x KV heads x head_dim per slot.
#include "runtime/memory_plan.h"

#include "gtest/gtest.h"

namespace kvfold {
namespace {

ModelConfig Llama8B() {
  ModelConfig c;
  c.vocab_size = 128256;
  c.hidden_size = 4096;
  c.intermediate_size = 14336;
  c.num_layers = 32;
  c.num_heads = 32;
  c.num_kv_heads = 8;
  c.head_dim = 128;
  c.max_position_embeddings = 131072;
  return c;
}

constexpr double kPerSlot = 2.0 * 4 * 32 * 8 * 128;  // bytes per token, all layers

TEST(MemoryPlanTest, FullCacheOfKnownLength) {
  EngineOptions o;
  o.cache.mutable_full();
  o.batch = 1;
  auto p = PlanMemory(Llama8B(), o, 1, 4, 100000, 16);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_DOUBLE_EQ(p->weights, 4.0 * Llama8B().NumParameters());
  EXPECT_EQ(p->sequences, 2);  // the document's cache and one answer's copy
  EXPECT_DOUBLE_EQ(p->caches, 2 * kPerSlot * 100016);
  EXPECT_GT(p->workspace, 0);
  // Unknown length: a full cache cannot be sized and is not counted.
  auto unknown = PlanMemory(Llama8B(), o, 1, 4, 0, 16);
  ASSERT_TRUE(unknown.ok());
  EXPECT_EQ(unknown->caches, 0);
}

TEST(MemoryPlanTest, FixedBudgetBatchTensorParallelAndFeatures) {
  EngineOptions o;
  o.cache.mutable_snapkv();
  o.cache.set_slots(512);
  o.prefill_chunk = 512;
  o.batch = 8;
  auto p = PlanMemory(Llama8B(), o, 1, 4, 0, 0);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->sequences, 9);
  EXPECT_DOUBLE_EQ(p->caches, 9 * kPerSlot * (512 + 512));
  auto tp2 = PlanMemory(Llama8B(), o, 2, 4, 0, 0);
  ASSERT_TRUE(tp2.ok());
  EXPECT_DOUBLE_EQ(tp2->weights, p->weights / 2);
  EXPECT_DOUBLE_EQ(tp2->caches, p->caches / 2);  // 4 of the 8 KV heads each
  o.cache.set_feature_budget(0.25);  // MatryoshkaKV: a quarter of the features
  auto quarter = PlanMemory(Llama8B(), o, 1, 4, 0, 0);
  ASSERT_TRUE(quarter.ok()) << quarter.status();
  EXPECT_DOUBLE_EQ(quarter->caches, p->caches / 4);
}

TEST(MemoryPlanTest, SequenceParallelBlocks) {
  ModelConfig c = Llama8B();
  c.max_position_embeddings = 1 << 20;
  EngineOptions o;
  o.cache.mutable_snapkv();
  o.cache.set_slots(512);
  o.prefill_chunk = 512;
  o.sp_balance = false;  // blocks of 1M / 4 tokens
  auto one = PlanMemory(c, o, 1, 4, 1 << 20, 16);
  auto sp4 = PlanMemory(c, o, 1, 4, 1 << 20, 16, 4);
  ASSERT_TRUE(one.ok() && sp4.ok()) << sp4.status();
  EXPECT_EQ(sp4->caches, one->caches);  // a fixed budget either way
  // Blocks of 262144 tokens behind a 512-token anchor (capped at the
  // budget), 16 question rows: the residual stream, queries, attention and
  // log-sum-exp of every row; the anchor's and question's keys and values
  // in 32 layers; 4 ranks' passing blocks of 512 slots, packed, gathered
  // and unpacked.
  const double rows = 262144 + 512 + 16, kv_row = 2.0 * 8 * 128;
  EXPECT_DOUBLE_EQ(sp4->workspace - one->workspace,
                   4 * rows * (4096 + 2 * 4096 + 32) + 4 * (512 + 16) * 32 * kv_row +
                       4 * 2 * 4 * (512 * kv_row + 1));
  // The Full policy: a rank's cache holds its block (and the answer).
  o.cache = CacheConfig();
  o.cache.mutable_full();
  auto full = PlanMemory(c, o, 1, 4, 1 << 20, 16, 4);
  ASSERT_TRUE(full.ok()) << full.status();
  EXPECT_DOUBLE_EQ(full->caches, 2 * kPerSlot * (262144 + 16));
  // Balanced blocks: the first rank's is the largest, and costs more memory.
  o.sp_balance = true;
  auto balanced = PlanMemory(c, o, 1, 4, 1 << 20, 16, 4);
  ASSERT_TRUE(balanced.ok()) << balanced.status();
  EXPECT_GT(balanced->caches, full->caches);
}

TEST(MemoryPlanTest, RefusalNamesEveryPart) {
  MemoryPlan p;
  p.weights = 3.0 * (1 << 30);
  p.caches = 1.0 * (1 << 30);
  p.workspace = 0.5 * (1 << 30);
  p.sequences = 2;
  p.longest = 4096;
  EXPECT_TRUE(CheckMemoryPlan(p, 8.0 * (1 << 30), "x").ok());
  const absl::Status s = CheckMemoryPlan(p, 4.0 * (1 << 30), "--memory_limit=4G");
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(s.message().find("about 4.50 GiB per rank (weights 3.00 GiB, caches 1.00 GiB "
                             "for 2 sequences of up to 4096 tokens, workspace 512.0 MiB), "
                             "more than --memory_limit=4G (4.00 GiB)"),
            std::string::npos)
      << s;
}

TEST(MemoryPlanTest, ParsesSizes) {
  EXPECT_DOUBLE_EQ(*ParseBytes("24G"), 24.0 * (1 << 30));
  EXPECT_DOUBLE_EQ(*ParseBytes("512m"), 512.0 * (1 << 20));
  EXPECT_DOUBLE_EQ(*ParseBytes("1000"), 1000.0);
  EXPECT_FALSE(ParseBytes("lots").ok());
  EXPECT_FALSE(ParseBytes("-3G").ok());
  EXPECT_FALSE(ParseBytes("").ok());
}

}  // namespace
}  // namespace kvfold
