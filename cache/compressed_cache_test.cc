// The invariants every policy keeps, driven through the KvCache interface with
// random chunks and attention statistics, and the config checks.
#include <random>
#include <set>
#include <string>
#include <vector>

#include "cache/policies.h"
#include "gtest/gtest.h"

namespace kvfold {
namespace {

constexpr int64_t kLayers = 3, kHeads = 2, kDim = 8;

CacheConfig Config(const std::string& text) {
  auto c = ParseCacheConfig(text, "test");
  EXPECT_TRUE(c.ok()) << c.status();
  return *c;
}

// Feeds chunks of random keys/values with random positive column sums, as
// the model does: Append, View, AfterAttention, per layer.
class Driver {
 public:
  explicit Driver(KvCache& cache) : cache_(cache) {}

  void Feed(int64_t n) {
    std::vector<float> k(n * kHeads * kDim), v(k.size());
    for (float& x : k) x = dist_(rng_);
    for (float& x : v) x = dist_(rng_);
    std::vector<int32_t> pos(n);
    for (int64_t i = 0; i < n; ++i) pos[i] = static_cast<int32_t>(next_++);
    for (int layer = 0; layer < kLayers; ++layer) {
      ASSERT_TRUE(cache_.Append(layer, k.data(), v.data(), pos.data(), n).ok());
      const LayerView view = cache_.View(layer);
      max_seen_ = std::max(max_seen_, view.length);
      std::vector<float> cols;
      if (cache_.ColumnSumQueries(n) > 0) {
        cols.resize(kHeads * view.length);
        for (float& x : cols) x = std::abs(dist_(rng_));
      }
      ASSERT_TRUE(cache_.AfterAttention(layer, {cols.empty() ? nullptr : cols.data(),
                                                nullptr, n}).ok());
    }
  }

  // Positions of a layer/head as the cache holds them.
  std::vector<int32_t> Positions(int layer, int64_t head) const {
    const LayerView v = cache_.View(layer);
    return {v.positions + head * v.stride, v.positions + head * v.stride + v.length};
  }

  int64_t next() const { return next_; }
  int64_t max_seen() const { return max_seen_; }

 private:
  KvCache& cache_;
  std::mt19937 rng_{7};
  std::normal_distribution<float> dist_{0.0f, 1.0f};
  int64_t next_ = 0;
  int64_t max_seen_ = 0;
};

struct PolicyCase {
  std::string config;
  int64_t sinks;   // first positions always kept
  int64_t window;  // last positions always kept
};

class InvariantsTest : public ::testing::TestWithParam<PolicyCase> {};

TEST_P(InvariantsTest, BudgetPositionsSinksWindow) {
  const PolicyCase& pc = GetParam();
  const int64_t chunk = 16;
  CacheShape shape{kLayers, kHeads, kDim, std::vector<float>(kDim / 2, 0.01f)};
  auto made = MakeCache(Config(pc.config), shape, chunk);
  ASSERT_TRUE(made.ok()) << made.status();
  KvCache& cache = **made;
  auto budgets = LayerBudgets(Config(pc.config), kLayers, chunk);
  ASSERT_TRUE(budgets.ok());
  Driver d(cache);
  for (int64_t n : {16, 5, 16, 16, 1, 16, 16, 9, 16, 16, 16, 16}) {
    d.Feed(n);
    for (int layer = 0; layer < kLayers; ++layer) {
      const int64_t budget = (*budgets)[layer];
      const LayerView v = cache.View(layer);
      ASSERT_EQ(v.length, std::min(budget, d.next())) << pc.config << " layer " << layer;
      for (int64_t g = 0; g < kHeads; ++g) {
        const std::vector<int32_t> p = d.Positions(layer, g);
        for (size_t i = 1; i < p.size(); ++i) ASSERT_LT(p[i - 1], p[i]);
        const std::set<int32_t> held(p.begin(), p.end());
        for (int64_t s = 0; s < std::min(pc.sinks, d.next()); ++s) {
          EXPECT_TRUE(held.count(s)) << pc.config << ": sink " << s;
        }
        for (int64_t w = std::max<int64_t>(0, d.next() - pc.window); w < d.next(); ++w) {
          EXPECT_TRUE(held.count(w)) << pc.config << ": recent " << w;
        }
      }
    }
  }
  // Never more than the budget plus one chunk.
  const int64_t max_budget = *std::max_element(budgets->begin(), budgets->end());
  EXPECT_LE(d.max_seen(), max_budget + chunk);
  // Storage is exactly budget + one chunk per layer.
  int64_t want_bytes = 0;
  for (int64_t b : *budgets) want_bytes += (b + chunk) * kHeads * kDim * 2 * 4;
  EXPECT_EQ(cache.bytes(), want_bytes);
  EXPECT_EQ(cache.tokens_seen(), d.next());
  const CacheStats st = cache.Stats();
  EXPECT_EQ(st.tokens_seen, d.next());
  EXPECT_NEAR(st.compression_ratio, double(d.next()) * kLayers / st.slots_held, 1e-9);
}

INSTANTIATE_TEST_SUITE_P(
    Policies, InvariantsTest,
    ::testing::Values(
        PolicyCase{"slots: 24 streaming {}", 4, 20},
        PolicyCase{"slots: 24 streaming { sinks: 2 window: 10 }", 2, 10},
        PolicyCase{"slots: 24 streaming { reindex_positions: true }", 4, 20},
        PolicyCase{"slots: 24 h2o {}", 0, 12},
        PolicyCase{"slots: 24 h2o { window: 0 average_over_queries: true }", 0, 0},
        PolicyCase{"slots: 24 snapkv { window: 8 }", 0, 8},
        PolicyCase{"layer_slots: 20 layer_slots: 28 layer_slots: 24 snapkv { window: 4 }", 0, 4},
        PolicyCase{"slots: 40 pyramidkv { window: 8 beta: 4 }", 0, 8},
        PolicyCase{"slots: 24 kvmerger {}", 0, 3},
        PolicyCase{"slots: 24 kvmerger { window: 5 heavy: 10 value_norm: SCALED_BY_SIZE }", 0, 5}));

TEST(PhasesTest, AppendKeepsQuestionDecodeEvictsOnlyWherePolicySays) {
  CacheShape shape{kLayers, kHeads, kDim};
  for (const char* text : {"slots: 20 h2o {}", "slots: 20 streaming {}",
                           "slots: 20 snapkv { window: 4 }", "slots: 20 kvmerger {}"}) {
    auto made = MakeCache(Config(text), shape, 16);
    ASSERT_TRUE(made.ok());
    KvCache& cache = **made;
    Driver d(cache);
    for (int i = 0; i < 4; ++i) d.Feed(16);
    ASSERT_EQ(cache.View(0).length, 20);
    // A question-agnostic question stays whole.
    std::unique_ptr<KvCache> copy = cache.Clone();
    cache.SetPhase(CachePhase::kAppend);
    d.Feed(7);
    EXPECT_EQ(cache.View(0).length, 27) << text;
    EXPECT_EQ(copy->View(0).length, 20) << "clone shares no state";
    EXPECT_EQ(copy->tokens_seen(), 64);
    cache.SetPhase(CachePhase::kDecode);
    for (int i = 0; i < 5; ++i) d.Feed(1);
    const bool evicts = std::string(text).find("h2o") != std::string::npos ||
                        std::string(text).find("streaming") != std::string::npos;
    EXPECT_EQ(cache.View(0).length, evicts ? 27 : 32) << text;
    // The newest token is always held.
    EXPECT_EQ(d.Positions(0, 0).back(), d.next() - 1);
  }
}

TEST(PhasesTest, FullCacheKeepsEverything) {
  auto made = MakeCache(Config("full {}"), {kLayers, kHeads, kDim}, 16);
  ASSERT_TRUE(made.ok());
  Driver d(**made);
  for (int i = 0; i < 5; ++i) d.Feed(16);
  EXPECT_EQ((*made)->View(2).length, 80);
  EXPECT_EQ((*made)->Stats().compression_ratio, 1.0);
}

// Bad configs: a clear error naming the field, before any work.
TEST(ValidateTest, RejectsImpossibleConfigs) {
  struct Bad {
    const char* text;
    const char* says;
  };
  for (const Bad& b : {
           Bad{"slots: 6 streaming { sinks: 4 window: 4 }", "smaller than sinks 4 + window 4"},
           Bad{"slots: 4 streaming { sinks: 4 }", "smaller than sinks 4"},
           Bad{"slots: 8 h2o { window: 9 }", "smaller than the window 9"},
           Bad{"slots: 64 snapkv { window: 32 }", "larger than the prefill chunk 16"},
           Bad{"slots: 16 snapkv {}", "window 32 (the default)"},
           Bad{"slots: 64 snapkv { window: 8 kernel: 4 }", "kernel must be odd"},
           Bad{"layer_slots: 10 layer_slots: 10 snapkv { window: 4 }", "has 2 budgets but the model has 3"},
           Bad{"slots: 64 layer_slots: 1 layer_slots: 1 layer_slots: 1 h2o {}", "not both"},
           Bad{"layer_slots: 9 layer_slots: 0 layer_slots: 9 h2o {}", "layer_slots[1] must be > 0"},
           Bad{"layer_slots: 9 layer_slots: 9 layer_slots: 9 pyramidkv { window: 4 }", "computes its own"},
           Bad{"slots: 12 pyramidkv { window: 8 beta: 0 }", "beta must be >= 1"},
           Bad{"slots: 16 kvmerger { window: 8 heavy: 8 }", "larger than window 8 + heavy 8"},
           Bad{"slots: 16 kvmerger { sigma: 0 }", "sigma must be a positive"},
           Bad{"h2o {}", "needs a budget"},
           Bad{"slots: 2000000000 h2o {}", "exceeds the limit"},
           Bad{"slots: 512", "keeps every token"},
       }) {
    const absl::Status s = ValidateCacheConfig(Config(b.text), kLayers, 16);
    ASSERT_FALSE(s.ok()) << b.text;
    EXPECT_NE(std::string(s.message()).find(b.says), std::string::npos)
        << b.text << " -> " << s.message();
    EXPECT_FALSE(MakeCache(Config(b.text), {kLayers, kHeads, kDim}, 16).ok());
  }
}

TEST(ValidateTest, PolicyNames) {
  CacheConfig c;
  for (const char* name : {"full", "streaming", "h2o", "snapkv", "pyramidkv", "kvmerger"}) {
    ASSERT_TRUE(SetPolicyByName(name, &c).ok());
    EXPECT_EQ(PolicyName(c), name);
  }
  const absl::Status s = SetPolicyByName("snapkvv", &c);
  EXPECT_NE(std::string(s.message()).find("unknown cache policy \"snapkvv\""), std::string::npos);
}

TEST(ValidateTest, CacheLargerThanMemoryIsAnError) {
  // 2^24 slots x 64 heads x 128 dims x 8 bytes x 3 layers = 3 TiB.
  auto made = MakeCache(Config("slots: 16777216 h2o {}"), {kLayers, 64, 128}, 16);
  ASSERT_FALSE(made.ok());
  EXPECT_NE(std::string(made.status().message()).find("more than this machine"),
            std::string::npos) << made.status();
}

TEST(ValidateTest, HugeChunkReserveIsAnErrorNotACrash) {
  // 64 slots + a 2^31-token chunk x 64 heads x 128 dims x 8 bytes.
  auto made = MakeCache(Config("slots: 64 h2o {}"), {kLayers, 64, 128}, int64_t{1} << 31);
  ASSERT_FALSE(made.ok());
  EXPECT_NE(std::string(made.status().message()).find("budget + prefill chunk"),
            std::string::npos) << made.status();
}

TEST(PhasesTest, H2OWithoutWindowKeepsTheDecodedToken) {
  auto made = MakeCache(Config("slots: 6 h2o { window: 0 }"), {kLayers, kHeads, kDim}, 16);
  ASSERT_TRUE(made.ok());
  Driver d(**made);
  d.Feed(16);
  (*made)->SetPhase(CachePhase::kDecode);
  for (int i = 0; i < 4; ++i) {
    d.Feed(1);
    EXPECT_EQ(d.Positions(1, 1).back(), d.next() - 1);
    EXPECT_EQ((*made)->View(1).length, 6);
  }
}

TEST(ValidateTest, ReindexNeedsRopeFrequencies) {
  auto made = MakeCache(Config("slots: 8 streaming { reindex_positions: true }"),
                        {kLayers, kHeads, kDim}, 16);
  EXPECT_FALSE(made.ok());
}

}  // namespace
}  // namespace kvfold
