// Sequence-parallel attention pieces against a direct computation: the
// log-sum-exp merge equals one attention over the union of the parts' keys
// (double precision, per head), in process and across a thread group; a
// passing block packs the last slots of each KV head and unpacks in rank
// order.
#include "models/sp_attention.h"

#include <cmath>
#include <limits>
#include <random>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "parallel/thread_group.h"

namespace kvfold {
namespace {

// Softmax attention (scale 1) of q [queries, heads, dim] over keys [begin,
// end) of k, v [keys, heads, dim]: out [queries, heads, dim] and lse
// [heads, queries] (-inf without keys).
struct Problem {
  int queries = 5, heads = 3, dim = 8, keys = 23;
  std::vector<double> q, k, v;
  std::vector<int> cuts = {0, 9, 9, 23};  // part 1 holds no key
  Problem() {
    std::mt19937 rng(7);
    std::normal_distribution<double> g(0, 1.5);
    for (int i = 0; i < queries * heads * dim; ++i) q.push_back(g(rng));
    for (int i = 0; i < keys * heads * dim; ++i) k.push_back(g(rng));
    for (int i = 0; i < keys * heads * dim; ++i) v.push_back(g(rng));
  }
  void Attend(int begin, int end, std::vector<float>* out, std::vector<float>* lse) const {
    out->assign(size_t(queries) * heads * dim, 0.0f);
    lse->assign(size_t(heads) * queries, -std::numeric_limits<float>::infinity());
    if (begin == end) return;
    for (int h = 0; h < heads; ++h) {
      for (int i = 0; i < queries; ++i) {
        std::vector<double> s;
        double top = -1e300;
        for (int j = begin; j < end; ++j) {
          double dot = 0;
          for (int d = 0; d < dim; ++d) {
            dot += q[(i * heads + h) * dim + d] * k[(j * heads + h) * dim + d];
          }
          s.push_back(dot);
          top = std::max(top, dot);
        }
        double total = 0;
        for (double& x : s) total += (x = std::exp(x - top));
        for (int d = 0; d < dim; ++d) {
          double acc = 0;
          for (int j = begin; j < end; ++j) acc += s[j - begin] * v[(j * heads + h) * dim + d];
          (*out)[(i * heads + h) * dim + d] = float(acc / total);
        }
        (*lse)[h * queries + i] = float(top + std::log(total));
      }
    }
  }
};

void ExpectNear(const std::vector<float>& got, const std::vector<float>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-5) << i;
}

TEST(MergePartialAttentionTest, EqualsAttentionOverTheUnion) {
  Problem p;
  std::vector<float> want_out, want_lse;
  p.Attend(0, p.keys, &want_out, &want_lse);
  const int parts = int(p.cuts.size()) - 1;
  std::vector<std::vector<float>> outs(parts), lses(parts);
  std::vector<const float*> out_ptrs, lse_ptrs;
  for (int h = 0; h < parts; ++h) {
    p.Attend(p.cuts[h], p.cuts[h + 1], &outs[h], &lses[h]);
    out_ptrs.push_back(outs[h].data());
    lse_ptrs.push_back(lses[h].data());
  }
  // In place over part 0, as the group merge does.
  MergePartialAttention(out_ptrs, lse_ptrs, p.queries, p.heads, p.dim, outs[0].data(),
                        lses[0].data());
  ExpectNear(outs[0], want_out);
  ExpectNear(lses[0], want_lse);

  // Two parts on the stream (the prefill's merges).
  std::vector<float> a_out, a_lse, b_out, b_lse, host;
  p.Attend(0, 14, &a_out, &a_lse);
  p.Attend(14, p.keys, &b_out, &b_lse);
  Stream s;
  ASSERT_TRUE(MergeInto(s, a_out.data(), a_lse.data(), b_out.data(), b_lse.data(), p.queries,
                        p.heads, p.dim, &host)
                  .ok());
  ExpectNear(a_out, want_out);
  ExpectNear(a_lse, want_lse);

  // No keys anywhere: zero output, -inf log-sum-exp.
  std::vector<float> empty_out(p.dim, 1.0f), empty_lse(1, -INFINITY);
  MergePartialAttention({empty_out.data()}, {empty_lse.data()}, 1, 1, p.dim, empty_out.data(),
                        empty_lse.data());
  EXPECT_EQ(empty_out, std::vector<float>(p.dim, 0.0f));
  EXPECT_TRUE(std::isinf(empty_lse[0]) && empty_lse[0] < 0);
}

TEST(MergePartialAttentionTest, AcrossAThreadGroup) {
  Problem p;
  std::vector<float> want_out, want_lse;
  p.Attend(0, p.keys, &want_out, &want_lse);
  const int n = int(p.cuts.size()) - 1;
  ThreadGroup group(n);
  std::vector<std::vector<float>> outs(n), lses(n);
  std::vector<absl::Status> status(n);
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r) {
    threads.emplace_back([&, r] {
      p.Attend(p.cuts[r], p.cuts[r + 1], &outs[r], &lses[r]);
      status[r] = MergeAcrossGroup(*group.rank(r), outs[r].data(), lses[r].data(), p.queries,
                                   p.heads, p.dim);
    });
  }
  for (std::thread& t : threads) t.join();
  for (int r = 0; r < n; ++r) {
    ASSERT_TRUE(status[r].ok()) << status[r];
    ExpectNear(outs[r], want_out);
    ExpectNear(lses[r], want_lse);
    EXPECT_EQ(outs[r], outs[0]) << "ranks disagree";
  }
}

TEST(PassingBlockTest, PacksTheLastSlotsOfEachHeadAndUnpacksInRankOrder) {
  constexpr int64_t kHeads = 2, kDim = 3, kStride = 10, kSlots = 4;
  // Two ranks' layer views: rank 0 holds 6 slots (passes its last 4), rank
  // 1 holds 2 (passes both). Value of slot j of head g: 100 r + 10 g + j.
  std::vector<std::vector<float>> keys(2), values(2);
  const int64_t lengths[2] = {6, 2};
  std::vector<float> gathered(2 * PassingBlockFloats(kHeads, kSlots, kDim), -1.0f);
  Stream s;
  for (int r = 0; r < 2; ++r) {
    keys[r].assign(kHeads * kStride * kDim, 0.0f);
    values[r].assign(kHeads * kStride * kDim, 0.0f);
    for (int64_t g = 0; g < kHeads; ++g) {
      for (int64_t j = 0; j < lengths[r]; ++j) {
        for (int64_t d = 0; d < kDim; ++d) {
          keys[r][(g * kStride + j) * kDim + d] = float(100 * r + 10 * g + j);
          values[r][(g * kStride + j) * kDim + d] = -float(100 * r + 10 * g + j);
        }
      }
    }
    LayerView view;
    view.keys = keys[r].data();
    view.values = values[r].data();
    view.length = lengths[r];
    view.stride = kStride;
    ASSERT_TRUE(PackPassingBlock(s, view, kHeads, kDim, kSlots,
                                 gathered.data() + r * PassingBlockFloats(kHeads, kSlots, kDim))
                    .ok());
  }
  constexpr int64_t kCapacity = 8;
  std::vector<float> k(kHeads * kCapacity * kDim, 0.0f), v(kHeads * kCapacity * kDim, 0.0f);
  absl::StatusOr<int64_t> used =
      UnpackPassingBlocks(s, gathered.data(), 2, kHeads, kDim, kSlots, kCapacity, k.data(),
                          v.data());
  ASSERT_TRUE(used.ok()) << used.status();
  ASSERT_EQ(*used, 6);
  const float want[6] = {2, 3, 4, 5, 100, 101};  // rank 0's slots 2..5, then rank 1's
  for (int64_t g = 0; g < kHeads; ++g) {
    for (int64_t j = 0; j < 6; ++j) {
      EXPECT_EQ(k[(g * kCapacity + j) * kDim], want[j] + 10 * g) << g << " " << j;
      EXPECT_EQ(v[(g * kCapacity + j) * kDim + 2], -(want[j] + 10 * g)) << g << " " << j;
    }
  }
  // Blocks that do not fit the space given: an error, not an overrun.
  EXPECT_FALSE(UnpackPassingBlocks(s, gathered.data(), 2, kHeads, kDim, kSlots, 5, k.data(),
                                   v.data())
                   .ok());
}

}  // namespace
}  // namespace kvfold
