#include "cache/kv_cache.h"

#include <vector>

#include "gtest/gtest.h"

namespace kvfold {
namespace {

// Chunks of [n, heads, d] values encoding (token, head, i), appended across
// several growths, must read back as [heads, slots, d] in order.
TEST(FullKvCacheTest, AppendsChunksInHeadMajorLayout) {
  const CacheShape shape{2, 3, 4};
  FullKvCache cache(shape);
  auto code = [](int64_t t, int64_t g, int64_t i) { return t * 100.0f + g * 10 + i; };
  int64_t seen = 0;
  for (int64_t n : {1, 5, 2, 17}) {
    std::vector<float> k(n * 3 * 4), v(k.size());
    std::vector<int32_t> pos(n);
    for (int64_t t = 0; t < n; ++t) {
      pos[t] = int32_t(seen + t);
      for (int64_t g = 0; g < 3; ++g) {
        for (int64_t i = 0; i < 4; ++i) {
          k[(t * 3 + g) * 4 + i] = code(seen + t, g, i);
          v[(t * 3 + g) * 4 + i] = -code(seen + t, g, i);
        }
      }
    }
    for (int layer = 0; layer < 2; ++layer) {
      ASSERT_TRUE(cache.Append(layer, k.data(), v.data(), pos.data(), n).ok());
    }
    seen += n;
  }
  EXPECT_EQ(cache.tokens_seen(), 25);
  const LayerView view = cache.View(1);
  EXPECT_EQ(view.length, 25);
  EXPECT_GE(view.stride, 25);
  for (int64_t g = 0; g < 3; ++g) {
    for (int64_t t = 0; t < 25; ++t) {
      for (int64_t i = 0; i < 4; ++i) {
        EXPECT_EQ(view.keys[(g * view.stride + t) * 4 + i], code(t, g, i));
        EXPECT_EQ(view.values[(g * view.stride + t) * 4 + i], -code(t, g, i));
      }
    }
  }
  std::unique_ptr<KvCache> clone = cache.Clone();
  EXPECT_EQ(clone->tokens_seen(), 25);
  EXPECT_EQ(clone->View(0).keys[(2 * clone->View(0).stride + 24) * 4 + 3],
            code(24, 2, 3));
  EXPECT_EQ(cache.bytes(), clone->bytes());
  EXPECT_FALSE(cache.Append(2, nullptr, nullptr, nullptr, 0).ok());
}

}  // namespace
}  // namespace kvfold
