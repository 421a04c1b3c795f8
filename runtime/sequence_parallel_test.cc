// Sequence parallelism without a model: the block plan and its errors, and
// the log-sum-exp merge against one attention over the union of the ranks'
// keys (computed directly in double precision).
#include "runtime/sequence_parallel.h"

#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "parallel/thread_group.h"

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

// Softmax attention of `rows` queries over keys [begin, end) (scale 1),
// in double precision: out [rows, dim] and lse [rows] (-inf without keys).
void Attend(const std::vector<double>& q, const std::vector<double>& k,
            const std::vector<double>& v, int rows, int dim, int begin, int end,
            std::vector<float>* out, std::vector<float>* lse) {
  out->assign(size_t(rows) * dim, 0.0f);
  lse->assign(rows, -std::numeric_limits<float>::infinity());
  for (int i = 0; i < rows; ++i) {
    if (begin == end) continue;
    std::vector<double> s(end - begin);
    double top = -1e300;
    for (int j = begin; j < end; ++j) {
      double dot = 0;
      for (int d = 0; d < dim; ++d) dot += q[i * dim + d] * k[j * dim + d];
      s[j - begin] = dot;
      top = std::max(top, dot);
    }
    double total = 0;
    for (double& x : s) total += (x = std::exp(x - top));
    for (int d = 0; d < dim; ++d) {
      double acc = 0;
      for (int j = begin; j < end; ++j) acc += s[j - begin] * v[j * dim + d];
      (*out)[i * dim + d] = float(acc / total);
    }
    (*lse)[i] = float(top + std::log(total));
  }
}

struct Problem {
  int rows = 5, dim = 8, keys = 23;
  std::vector<double> q, k, v;
  std::vector<int> cuts = {0, 9, 9, 23};  // rank 1 holds no key
  Problem() {
    std::mt19937 rng(7);
    std::normal_distribution<double> g(0, 1.5);
    for (int i = 0; i < rows * dim; ++i) q.push_back(g(rng));
    for (int i = 0; i < keys * dim; ++i) k.push_back(g(rng));
    for (int i = 0; i < keys * dim; ++i) v.push_back(g(rng));
  }
};

TEST(MergePartialAttentionTest, EqualsAttentionOverTheUnion) {
  Problem p;
  std::vector<float> want_out, want_lse;
  Attend(p.q, p.k, p.v, p.rows, p.dim, 0, p.keys, &want_out, &want_lse);
  const int parts = int(p.cuts.size()) - 1;
  std::vector<std::vector<float>> outs(parts), lses(parts);
  std::vector<const float*> out_ptrs, lse_ptrs;
  for (int h = 0; h < parts; ++h) {
    Attend(p.q, p.k, p.v, p.rows, p.dim, p.cuts[h], p.cuts[h + 1], &outs[h], &lses[h]);
    out_ptrs.push_back(outs[h].data());
    lse_ptrs.push_back(lses[h].data());
  }
  // In place over part 0, as the group merge does.
  MergePartialAttention(out_ptrs, lse_ptrs, p.rows, p.dim, outs[0].data(), lses[0].data());
  for (size_t i = 0; i < want_out.size(); ++i) EXPECT_NEAR(outs[0][i], want_out[i], 1e-5) << i;
  for (int i = 0; i < p.rows; ++i) EXPECT_NEAR(lses[0][i], want_lse[i], 1e-5) << i;

  // No keys anywhere: zero output, -inf log-sum-exp.
  std::vector<float> empty_out(p.dim, 1.0f), empty_lse(1, -INFINITY);
  MergePartialAttention({empty_out.data()}, {empty_lse.data()}, 1, p.dim, empty_out.data(),
                        empty_lse.data());
  EXPECT_EQ(empty_out, std::vector<float>(p.dim, 0.0f));
  EXPECT_TRUE(std::isinf(empty_lse[0]) && empty_lse[0] < 0);
}

TEST(MergePartialAttentionTest, AcrossAThreadGroup) {
  Problem p;
  std::vector<float> want_out, want_lse;
  Attend(p.q, p.k, p.v, p.rows, p.dim, 0, p.keys, &want_out, &want_lse);
  const int n = int(p.cuts.size()) - 1;
  ThreadGroup group(n);
  std::vector<std::vector<float>> outs(n), lses(n);
  std::vector<absl::Status> status(n);
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r) {
    threads.emplace_back([&, r] {
      Attend(p.q, p.k, p.v, p.rows, p.dim, p.cuts[r], p.cuts[r + 1], &outs[r], &lses[r]);
      status[r] = MergeAcrossGroup(
          *group.rank(r),
          {outs[r].data(), DType::kF32, Device::Cpu(), {p.rows, p.dim}},
          {lses[r].data(), DType::kF32, Device::Cpu(), {p.rows}});
    });
  }
  for (std::thread& t : threads) t.join();
  for (int r = 0; r < n; ++r) {
    ASSERT_TRUE(status[r].ok()) << status[r];
    for (size_t i = 0; i < want_out.size(); ++i) EXPECT_NEAR(outs[r][i], want_out[i], 1e-5);
    for (int i = 0; i < p.rows; ++i) EXPECT_NEAR(lses[r][i], want_lse[i], 1e-5);
  }
}

}  // namespace
}  // namespace kvfold
