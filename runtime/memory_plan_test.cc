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
