#include "kernels/sampling.h"

#include <map>
#include <vector>

#include "gtest/gtest.h"

namespace kvfold {
namespace {

TEST(SamplingTest, ArgmaxPicksFirstOfTies) {
  const std::vector<float> x = {0.5f, 2.0f, -1.0f, 2.0f};
  EXPECT_EQ(Argmax(x.data(), x.size()), 1);
}

TEST(SamplingTest, ZeroTemperatureIsGreedy) {
  const std::vector<float> x = {0.1f, 0.3f, 3.0f, 0.2f};
  std::mt19937_64 rng(1);
  EXPECT_EQ(Sample(x.data(), x.size(), {0.0f, 0, 1.0f}, rng), 2);
}

TEST(SamplingTest, TopKOneIsGreedy) {
  const std::vector<float> x = {0.1f, 0.3f, 0.25f, 0.2f, 0.29f};
  std::mt19937_64 rng(7);
  for (int i = 0; i < 50; ++i) {
    EXPECT_EQ(Sample(x.data(), x.size(), {1.0f, 1, 1.0f}, rng), 1);
  }
}

TEST(SamplingTest, FrequenciesFollowSoftmaxWithinTopK) {
  // logits ln(4), ln(2), ln(1), ln(1) -> probs 0.5, 0.25, 0.125, 0.125.
  const std::vector<float> x = {std::log(4.0f), std::log(2.0f), 0.0f, 0.0f};
  std::mt19937_64 rng(42);
  std::map<int, int> counts;
  const int n = 40000;
  for (int i = 0; i < n; ++i) ++counts[Sample(x.data(), 4, {1.0f, 3, 1.0f}, rng)];
  // top_k = 3 drops id 3 (tie with 2 goes to the lower id): 4/7, 2/7, 1/7.
  EXPECT_NEAR(counts[0] / double(n), 4.0 / 7, 0.01);
  EXPECT_NEAR(counts[1] / double(n), 2.0 / 7, 0.01);
  EXPECT_NEAR(counts[2] / double(n), 1.0 / 7, 0.01);
  EXPECT_EQ(counts[3], 0);
}

TEST(SamplingTest, TopPKeepsSmallestPrefixReachingMass) {
  const std::vector<float> x = {std::log(4.0f), std::log(2.0f), 0.0f, 0.0f};
  std::mt19937_64 rng(3);
  std::map<int, int> counts;
  for (int i = 0; i < 20000; ++i) ++counts[Sample(x.data(), 4, {1.0f, 0, 0.7f}, rng)];
  // 0.5 < 0.7 <= 0.75: ids 0 and 1 only, in ratio 2:1.
  EXPECT_EQ(counts[2] + counts[3], 0);
  EXPECT_NEAR(counts[0] / 20000.0, 2.0 / 3, 0.015);
}

TEST(SamplingTest, SameSeedSameSequence) {
  std::vector<float> x(100);
  for (int i = 0; i < 100; ++i) x[i] = std::sin(i * 0.37f);
  std::mt19937_64 a(9), b(9);
  for (int i = 0; i < 100; ++i) {
    EXPECT_EQ(Sample(x.data(), 100, {0.8f, 20, 0.9f}, a),
              Sample(x.data(), 100, {0.8f, 20, 0.9f}, b));
  }
}

TEST(SamplingTest, RejectsBadParams) {
  EXPECT_FALSE(ValidateSamplingParams({-1.0f, 0, 1.0f}).ok());
  EXPECT_FALSE(ValidateSamplingParams({1.0f, -2, 1.0f}).ok());
  EXPECT_FALSE(ValidateSamplingParams({1.0f, 0, 0.0f}).ok());
  EXPECT_FALSE(ValidateSamplingParams({1.0f, 0, 1.5f}).ok());
  EXPECT_TRUE(ValidateSamplingParams({0.7f, 40, 0.95f}).ok());
}

}  // namespace
}  // namespace kvfold
