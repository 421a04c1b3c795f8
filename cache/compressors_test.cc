// Each compressor on small hand-made layers whose right answer follows from
// ALGORITHMS.md by hand.
#include "cache/compressors.h"

#include <cmath>
#include <numeric>
#include <vector>

#include "gtest/gtest.h"

namespace kvfold {
namespace {

// A one-layer state with `n` slots per head: key/value rows filled by `fill`,
// positions 0..n-1 (or `positions`), scores zero.
LayerState MakeLayer(const CacheShape& shape, int64_t n,
                     const std::vector<float>& keys = {},
                     const std::vector<float>& values = {}) {
  LayerState s;
  const int64_t h = shape.kv_heads, d = shape.head_dim;
  std::vector<float> k(n * h * d), v(n * h * d);
  std::vector<int32_t> pos(n);
  for (int64_t t = 0; t < n; ++t) {
    pos[t] = static_cast<int32_t>(t);
    for (int64_t g = 0; g < h; ++g) {
      for (int64_t i = 0; i < d; ++i) {
        // [n, heads, d] layout as the model appends it.
        const int64_t at = (t * h + g) * d + i;
        k[at] = keys.empty() ? float(t * 100 + g * 10 + i) : keys[(g * n + t) * d + i];
        v[at] = values.empty() ? -float(t * 100 + g * 10 + i) : values[(g * n + t) * d + i];
      }
    }
  }
  EXPECT_TRUE(s.slots.AppendChunk(shape, 0, k.data(), v.data(), pos.data(), n).ok());
  s.scores = Tensor({h, s.slots.capacity()}, DType::kF32);
  return s;
}

std::vector<int32_t> Positions(LayerState& s, int64_t head) {
  const int32_t* p = s.slots.positions.as<int32_t>() + head * s.slots.capacity();
  return {p, p + s.slots.length};
}

float Key(LayerState& s, int64_t head, int64_t slot, int64_t i, int64_t d) {
  return s.slots.keys.as<float>()[(head * s.slots.capacity() + slot) * d + i];
}

TEST(TopKAscendingTest, LargestInIndexOrderTiesToEarlier) {
  const std::vector<float> x = {0.5f, 3, 1, 3, -2, 2};
  EXPECT_EQ(TopKAscending(x.data(), 6, 3), (std::vector<int64_t>{1, 3, 5}));
  EXPECT_EQ(TopKAscending(x.data(), 6, 1), (std::vector<int64_t>{1}));
  EXPECT_EQ(TopKAscending(x.data(), 6, 0), (std::vector<int64_t>{}));
  EXPECT_EQ(TopKAscending(x.data(), 6, 9).size(), 6u);
}

TEST(AveragePoolTest, ZeroPaddedDividesByKernel) {
  const std::vector<float> x = {1, 2, 3, 4, 5, 6};
  std::vector<float> out(6);
  AveragePool(x.data(), 6, 3, out.data());
  const std::vector<float> want = {1.0f, 2, 3, 4, 5, 11.0f / 3};
  for (int i = 0; i < 6; ++i) EXPECT_FLOAT_EQ(out[i], want[i]) << i;
  AveragePool(x.data(), 6, 5, out.data());
  EXPECT_FLOAT_EQ(out[0], 6.0f / 5);   // (0 + 0 + 1 + 2 + 3) / 5
  EXPECT_FLOAT_EQ(out[5], 15.0f / 5);  // (4 + 5 + 6 + 0 + 0) / 5
}

TEST(PyramidBudgetsTest, LinearFromMaxToMin) {
  // B = 512, w = 32: prefix 480, min 480/20 = 24, max 960 - 24 = 936,
  // step floor(912 / 15) = 60.
  const std::vector<int64_t> b = PyramidBudgets(512, 32, 20, 16);
  ASSERT_EQ(b.size(), 16u);
  EXPECT_EQ(b[0], 32 + 936);
  EXPECT_EQ(b[1], 32 + 876);
  EXPECT_EQ(b[15], 32 + 936 - 15 * 60);
  EXPECT_EQ(PyramidBudgets(512, 32, 20, 1), std::vector<int64_t>{512});
}

TEST(StreamingTest, KeepsSinksAndMostRecent) {
  const CacheShape shape{1, 2, 3};
  LayerState s = MakeLayer(shape, 12);
  CompressRequest r{&shape, 7, nullptr, 11};
  ASSERT_TRUE(MakeStreamingCompressor(2, false)->Compress(s, r).ok());
  ASSERT_EQ(s.slots.length, 7);
  for (int64_t g = 0; g < 2; ++g) {
    EXPECT_EQ(Positions(s, g), (std::vector<int32_t>{0, 1, 7, 8, 9, 10, 11}));
    // The rows moved with their positions.
    EXPECT_EQ(Key(s, g, 2, 1, 3), 7 * 100 + g * 10 + 1);
    EXPECT_EQ(s.slots.values.as<float>()[(g * s.slots.capacity() + 6) * 3],
              -(11 * 100 + g * 10));
  }
}

TEST(StreamingTest, ReindexRerotatesKeysToSlotIndex) {
  // Keys are one base vector rotated to their position; after eviction the
  // key in slot i must equal the base rotated to i.
  const int64_t d = 4, n = 10;
  CacheShape shape{1, 1, d, {1.0f, 0.1f}};
  auto rotated = [&](int64_t p) {
    const float base[4] = {1.0f, 0.5f, -0.25f, 2.0f};
    std::vector<float> out(d);
    for (int i = 0; i < d / 2; ++i) {
      const double a = p * shape.rope_inv_freq[i];
      out[i] = float(base[i] * std::cos(a) - base[i + 2] * std::sin(a));
      out[i + 2] = float(base[i + 2] * std::cos(a) + base[i] * std::sin(a));
    }
    return out;
  };
  std::vector<float> keys;
  for (int64_t p = 0; p < n; ++p) {
    auto k = rotated(p);
    keys.insert(keys.end(), k.begin(), k.end());
  }
  LayerState s = MakeLayer(shape, n, keys, keys);
  CompressRequest r{&shape, 5, nullptr, 9};
  ASSERT_TRUE(MakeStreamingCompressor(1, true)->Compress(s, r).ok());
  ASSERT_EQ(Positions(s, 0), (std::vector<int32_t>{0, 6, 7, 8, 9}));
  for (int64_t slot = 0; slot < 5; ++slot) {
    const auto want = rotated(slot);
    for (int i = 0; i < d; ++i) EXPECT_NEAR(Key(s, 0, slot, i, d), want[i], 1e-5);
  }
}

TEST(H2OTest, RecentWindowPlusHeaviestPerHead) {
  const CacheShape shape{1, 2, 2};
  LayerState s = MakeLayer(shape, 8);
  const float sc0[8] = {5, 1, 4, 0, 3, 0, 0, 0};
  const float sc1[8] = {0, 9, 0, 8, 0, 7, 1, 1};
  std::copy(sc0, sc0 + 8, s.head_scores(0));
  std::copy(sc1, sc1 + 8, s.head_scores(1));
  CompressRequest r{&shape, 4, nullptr, 7};
  ASSERT_TRUE(MakeH2OCompressor(2, false)->Compress(s, r).ok());
  EXPECT_EQ(Positions(s, 0), (std::vector<int32_t>{0, 2, 6, 7}));
  EXPECT_EQ(Positions(s, 1), (std::vector<int32_t>{1, 3, 6, 7}));
  // Scores moved with their slots.
  EXPECT_EQ(s.head_scores(1)[1], 8);
}

TEST(H2OTest, AverageOverQueriesDividesByQueriesThatSawTheToken) {
  // Token p was seen by last_position + 1 - p = 8 - p queries.
  const CacheShape shape{1, 1, 2};
  LayerState s = MakeLayer(shape, 8);
  const float sc[8] = {8, 3.5f, 0, 0, 0, 2.9f, 0, 0};  // / 8, 7, .., 3
  std::copy(sc, sc + 8, s.head_scores(0));
  CompressRequest r{&shape, 2, nullptr, 7};
  ASSERT_TRUE(MakeH2OCompressor(0, true)->Compress(s, r).ok());
  EXPECT_EQ(Positions(s, 0), (std::vector<int32_t>{0, 5}));  // 1.0 and 0.967
  LayerState t = MakeLayer(shape, 8);
  std::copy(sc, sc + 8, t.head_scores(0));
  ASSERT_TRUE(MakeH2OCompressor(0, false)->Compress(t, r).ok());
  EXPECT_EQ(Positions(t, 0), (std::vector<int32_t>{0, 1}));  // plain sums
}

TEST(SnapKVTest, PooledVotesOfPrefixPlusWindow) {
  const CacheShape shape{1, 1, 2};
  LayerState s = MakeLayer(shape, 12);
  // Window 3 = slots 9..11. Votes on the prefix: a spike at 2 and two
  // smaller neighbours at 6, 7 whose pooled mass beats the spike's edges.
  std::vector<float> cols(12, 0.0f);
  cols[2] = 1.0f;
  cols[6] = 0.6f;
  cols[7] = 0.6f;
  cols[10] = 100.0f;  // window column: never a vote
  CompressRequest r{&shape, 6, cols.data(), 11};
  ASSERT_TRUE(MakeSnapKVCompressor(3, 3)->Compress(s, r).ok());
  // Pooled (kernel 3): 6 -> 0.4, 7 -> 0.4, 2 -> 0.33, 5/8 -> 0.2, 1/3 -> 0.33.
  // Top 3 of the prefix: 6, 7, then 1/2/3 tie at 1/3 -> earliest index 1.
  EXPECT_EQ(Positions(s, 0), (std::vector<int32_t>{1, 6, 7, 9, 10, 11}));
}

TEST(KVMergerTest, MergesSimilarRunsAtThePivot) {
  // One head, d = 2. Keys form runs of nearly parallel vectors:
  //   0: (1, 0) 1: (1, .05) 2: (1, .1) | 3: (0, 1) 4: (.05, 1) | 5: (-1, 0)
  //   6: (-1, .05) 7: (1, 1) | 8: (0, -1) 9: (.3, -1)
  // window 1 protects 9; heavy 1 protects the top score (slot 7).
  const CacheShape shape{1, 1, 2};
  const std::vector<float> keys = {1, 0,  1, .05f, 1, .1f, 0, 1, .05f, 1,
                                   -1, 0, -1, .05f, 1, 1,  0, -1, .3f, -1};
  std::vector<float> values(20);
  std::iota(values.begin(), values.end(), 0.0f);
  LayerState s = MakeLayer(shape, 10, keys, values);
  const float sc[10] = {1, 3, 2, 1, 2, 0.5f, 1, 10, 1, 0};
  std::copy(sc, sc + 10, s.head_scores(0));
  // Target 5 slots: protected 7 and 9 alone; the runs 0..6 and 8 give 4
  // sets at least... 2 protected + runs {0..6}, {8} = 4; one split left: the
  // lowest cosine among unprotected neighbours, (4, 5) at cos -0.05 vs (2, 3)
  // at 0.1 and (5, 6)... -> split between 4 and 5.
  KVMergerParams p;
  p.window = 1;
  p.heavy = 1;
  p.sigma = 1.0f;
  CompressRequest r{&shape, 5, nullptr, 9};
  ASSERT_TRUE(MakeKVMergerCompressor(p)->Compress(s, r).ok());
  ASSERT_EQ(s.slots.length, 5);
  // Sets {0..4} pivot 1 (score 3), {5, 6} pivot 6, {7}, {8}, {9}.
  EXPECT_EQ(Positions(s, 0), (std::vector<int32_t>{1, 6, 7, 8, 9}));
  // Merged key of {0..4} by hand: w_i ~ exp(-|k_1 - k_i|^2 / 2).
  double w[5], wsum = 0, k0 = 0, k1 = 0, v0 = 0;
  for (int i = 0; i < 5; ++i) {
    const double dx = keys[2] - keys[2 * i], dy = keys[3] - keys[2 * i + 1];
    w[i] = std::exp(-(dx * dx + dy * dy) / 2.0);
    wsum += w[i];
  }
  for (int i = 0; i < 5; ++i) {
    k0 += w[i] / wsum * keys[2 * i];
    k1 += w[i] / wsum * keys[2 * i + 1];
    v0 += w[i] / wsum * values[2 * i];
  }
  EXPECT_NEAR(Key(s, 0, 0, 0, 2), k0, 1e-6);
  EXPECT_NEAR(Key(s, 0, 0, 1, 2), k1, 1e-6);
  EXPECT_NEAR(s.slots.values.as<float>()[0], v0, 1e-5);
  // Singletons are untouched; merged scores add up.
  EXPECT_EQ(Key(s, 0, 2, 0, 2), 1.0f);
  EXPECT_FLOAT_EQ(s.head_scores(0)[0], 9.0f);
  EXPECT_FLOAT_EQ(s.head_scores(0)[1], 1.5f);
}

TEST(KVMergerTest, ScaledValuesAndReleasedHeavyHitters) {
  // Heavy hitters at 1, 3, 5 fragment the run so much that 4 slots cannot
  // hold them all: the least attended (5, then 3) are released.
  const CacheShape shape{1, 1, 2};
  std::vector<float> keys(20, 1.0f);  // all parallel: no split wanted
  std::vector<float> values(20, 1.0f);
  LayerState s = MakeLayer(shape, 10, keys, values);
  const float sc[10] = {0, 9, 0, 8, 0, 7, 0, 0, 0, 0};
  std::copy(sc, sc + 10, s.head_scores(0));
  KVMergerParams p;
  p.window = 1;
  p.heavy = 3;
  p.scale_values_by_size = true;
  CompressRequest r{&shape, 4, nullptr, 9};
  ASSERT_TRUE(MakeKVMergerCompressor(p)->Compress(s, r).ok());
  // Protected {1, 9}: sets {0}, {1}, {2..8}, {9}.
  EXPECT_EQ(Positions(s, 0), (std::vector<int32_t>{0, 1, 3, 9}));
  // Equal keys -> equal weights; |S| = 7 scales the mean value 1 to 7.
  EXPECT_FLOAT_EQ(s.slots.values.as<float>()[2 * 2], 7.0f);
  EXPECT_FLOAT_EQ(s.slots.values.as<float>()[0], 1.0f);
}

}  // namespace
}  // namespace kvfold
