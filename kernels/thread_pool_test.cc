#include "kernels/thread_pool.h"

#include <algorithm>
#include <atomic>
#include <mutex>
#include <vector>

#include "gtest/gtest.h"

namespace kvfold {
namespace {

// Every index is visited exactly once, for sizes below, at and above the
// thread count, over many back-to-back generations.
TEST(ThreadPoolTest, CoversEveryIndexOnceAcrossManyCalls) {
  for (int threads : {1, 2, 3, 8}) {
    ThreadPool pool(threads);
    EXPECT_EQ(pool.size(), threads);
    for (int round = 0; round < 2000; ++round) {
      const int64_t n = round % 13;
      std::vector<std::atomic<int>> hits(n);
      pool.ParallelFor(n, [&](int64_t b, int64_t e) {
        ASSERT_LE(0, b);
        ASSERT_LE(b, e);
        ASSERT_LE(e, n);
        for (int64_t i = b; i < e; ++i) hits[i]++;
      });
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << threads << " " << n;
    }
  }
}

TEST(ThreadPoolTest, RangesAreContiguousAndBalanced) {
  ThreadPool pool(3);
  std::vector<std::pair<int64_t, int64_t>> ranges;
  std::mutex mu;
  pool.ParallelFor(10, [&](int64_t b, int64_t e) {
    std::lock_guard<std::mutex> lock(mu);
    ranges.emplace_back(b, e);
  });
  std::sort(ranges.begin(), ranges.end());
  ASSERT_EQ(ranges.size(), 3u);
  EXPECT_EQ(ranges[0], std::make_pair(int64_t{0}, int64_t{4}));
  EXPECT_EQ(ranges[1], std::make_pair(int64_t{4}, int64_t{7}));
  EXPECT_EQ(ranges[2], std::make_pair(int64_t{7}, int64_t{10}));
}

}  // namespace
}  // namespace kvfold
