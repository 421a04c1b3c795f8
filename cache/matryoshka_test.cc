// MatryoshkaKV projections: checks of the parameters, and the projected
// cache + attention against a direct double-precision evaluation of the
// paper's formulas (centered k~ = (k - mu) U_r, logits (q~ . k~ + q . mu) /
// sqrt(d), o = softmax . v~ U_r^T + mu), which kvfold computes differently
// (uncentered k U_r, see matryoshka.h).
#include "cache/matryoshka.h"

#include <cmath>
#include <random>

#include "cache/kv_cache.h"
#include "gtest/gtest.h"
#include "kernels/test_util.h"
#include "kernels/thread_pool.h"

namespace kvfold {
namespace {

MatryoshkaParams RandomParams(int64_t layers, int64_t heads, int64_t d, uint64_t seed) {
  return RandomMatryoshka(layers, heads, d, {1.0}, 0.7f, seed);
}

TEST(MatryoshkaParamsTest, ValidatesWhatTheFileSays) {
  MatryoshkaParams p = RandomParams(2, 2, 8, 1);
  p.budgets.push_back(0.5);
  p.ranks.push_back({4, 4, 4, 4, 4, 4, 4, 4});
  ASSERT_TRUE(p.Validate().ok()) << p.Validate();
  EXPECT_EQ(*p.Allocation(0.5), 1);
  EXPECT_NE(p.Allocation(0.3).status().message().find("stores 1, 0.5"), std::string::npos)
      << p.Allocation(0.3).status();

  MatryoshkaParams bad = RandomParams(2, 2, 8, 1);
  bad.heads[3].value_basis[5] += 0.01f;
  EXPECT_NE(bad.Validate().message().find("layer 1 KV head 1: the value basis is not "
                                          "orthonormal"),
            std::string::npos)
      << bad.Validate();

  bad = RandomParams(2, 2, 8, 1);
  bad.ranks[0][5] = 9;  // layer 1, head 0, V
  EXPECT_NE(bad.Validate().message().find("value rank of layer 1 KV head 0 is 9"),
            std::string::npos)
      << bad.Validate();

  bad = RandomParams(2, 2, 8, 1);
  bad.budgets = {0.5};  // full ranks keep 1 of the features
  EXPECT_NE(bad.Validate().message().find("more than the budget"), std::string::npos);

  bad = p;
  bad.ranks[0] = bad.ranks[1];
  bad.budgets = {0.5, 0.5};
  EXPECT_NE(bad.Validate().message().find("strictly descending"), std::string::npos);

  bad = RandomParams(2, 2, 8, 1);
  bad.heads[0].key_mean[0] = NAN;
  EXPECT_NE(bad.Validate().message().find("non-finite"), std::string::npos);
}

// The paper's attention for one KV head in double: queries q [n, group, d]
// over keys/values [len, d], query i seeing keys [0, len - n + i].
struct Reference {
  std::vector<double> out, lse, col_sums;
};

Reference PaperAttention(const MatryoshkaParams::Head& h, int64_t rk, int64_t rv, int64_t d,
                         const std::vector<float>& q, const std::vector<float>& k,
                         const std::vector<float>& v, int64_t n, int64_t group,
                         int64_t len) {
  auto center_project = [&](const std::vector<float>& x, const std::vector<float>& mu,
                            const std::vector<float>& u, int64_t t, int64_t j) {
    double s = 0;
    for (int64_t i = 0; i < d; ++i) s += (double(x[t * d + i]) - mu[i]) * u[i * d + j];
    return s;
  };
  Reference r;
  r.out.assign(n * group * d, 0.0);
  r.lse.assign(group * n, 0.0);
  r.col_sums.assign(len, 0.0);
  const double scale = 1.0 / std::sqrt(double(d));
  for (int64_t j = 0; j < group; ++j) {
    for (int64_t i = 0; i < n; ++i) {
      const float* qi = q.data() + (i * group + j) * d;
      const int64_t seen = len - n + i + 1;
      std::vector<double> logit(seen);
      double qmu = 0;
      for (int64_t t = 0; t < d; ++t) qmu += double(qi[t]) * h.key_mean[t];
      for (int64_t s = 0; s < seen; ++s) {
        double dot = 0;
        for (int64_t c = 0; c < rk; ++c) {
          double qc = 0;
          for (int64_t t = 0; t < d; ++t) qc += double(qi[t]) * h.key_basis[t * d + c];
          dot += qc * center_project(k, h.key_mean, h.key_basis, s, c);
        }
        logit[s] = (dot + qmu) * scale;
      }
      double mx = logit[0];
      for (double x : logit) mx = std::max(mx, x);
      double sum = 0;
      for (double x : logit) sum += std::exp(x - mx);
      r.lse[j * n + i] = mx + std::log(sum);
      std::vector<double> o(rv, 0.0);
      for (int64_t s = 0; s < seen; ++s) {
        const double p = std::exp(logit[s] - mx) / sum;
        r.col_sums[s] += p;
        for (int64_t c = 0; c < rv; ++c) {
          o[c] += p * center_project(v, h.value_mean, h.value_basis, s, c);
        }
      }
      for (int64_t t = 0; t < d; ++t) {
        double x = h.value_mean[t];
        for (int64_t c = 0; c < rv; ++c) x += o[c] * h.value_basis[t * d + c];
        r.out[(i * group + j) * d + t] = x;
      }
    }
  }
  return r;
}

TEST(ProjectedAttentionTest, EqualsThePapersFormulas) {
  // One layer, 2 KV heads of 3 query heads each, d = 12, mixed ranks; a
  // cache of 9 slots appended in two chunks (the second: the queries).
  const int64_t d = 12, heads = 2, group = 3, n = 4, len = 9;
  MatryoshkaParams p = RandomParams(1, heads, d, 7);
  p.ranks = {{5, 12, 9, 3}};
  p.budgets = {p.Fraction(0)};
  ASSERT_TRUE(p.Validate().ok()) << p.Validate();
  auto layout = FeatureLayout::Make(p, 0, 0, heads);
  ASSERT_TRUE(layout.ok()) << layout.status();
  CacheShape shape{1, heads, d};
  shape.features = *layout;
  FullKvCache cache(shape);
  const std::vector<float> k = Random(len * heads * d, 11), v = Random(len * heads * d, 12);
  const std::vector<float> q = Random(n * heads * group * d, 13);
  std::vector<int32_t> pos(len);
  for (int64_t i = 0; i < len; ++i) pos[i] = static_cast<int32_t>(i);
  const int64_t first = len - n, row = heads * d;
  ASSERT_TRUE(cache.Append(0, k.data(), v.data(), pos.data(), first).ok());
  ASSERT_TRUE(cache.Append(0, k.data() + first * row, v.data() + first * row,
                           pos.data() + first, n)
                  .ok());
  // Projected storage only: the ranks' features per slot.
  EXPECT_EQ(cache.bytes(), 4 * cache.View(0).stride * (5 + 9 + 12 + 3));

  std::vector<float> out(n * heads * group * d), lse(heads * group * n),
      col_sums(heads * len);
  AttentionArgs a;
  a.q = q.data();
  a.out = out.data();
  a.lse = lse.data();
  a.col_sums = col_sums.data();
  a.num_queries = n;
  a.num_keys = len;
  a.causal_offset = len - n;
  a.q_heads = heads * group;
  a.kv_heads = heads;
  a.head_dim = d;
  a.scale = 1.0f / std::sqrt(float(d));
  Stream s;
  ASSERT_TRUE(ProjectedAttention(s, **layout, 0, cache.View(0), a).ok());
  {  // the same on a thread pool (one query head per task), bit for bit
    ThreadPool pool(3);
    Stream ps;
    ps.pool = &pool;
    std::vector<float> out2(out.size()), lse2(lse.size()), cols2(col_sums.size());
    AttentionArgs b = a;
    b.out = out2.data();
    b.lse = lse2.data();
    b.col_sums = cols2.data();
    ASSERT_TRUE(ProjectedAttention(ps, **layout, 0, cache.View(0), b).ok());
    EXPECT_EQ(out2, out);
    EXPECT_EQ(lse2, lse);
    EXPECT_EQ(cols2, col_sums);
  }

  for (int64_t g = 0; g < heads; ++g) {
    // This head's inputs, [tokens, d] and [n, group, d].
    std::vector<float> kg(len * d), vg(len * d), qg(n * group * d);
    for (int64_t t = 0; t < len; ++t) {
      for (int64_t i = 0; i < d; ++i) {
        kg[t * d + i] = k[(t * heads + g) * d + i];
        vg[t * d + i] = v[(t * heads + g) * d + i];
      }
    }
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t j = 0; j < group * d; ++j) {
        qg[i * group * d + j] = q[i * heads * group * d + g * group * d + j];
      }
    }
    const Reference want = PaperAttention(p.head(0, g), p.ranks[0][2 * g],
                                          p.ranks[0][2 * g + 1], d, qg, kg, vg, n, group, len);
    std::vector<float> got_out(n * group * d), got_lse(group * n);
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t j = 0; j < group * d; ++j) {
        got_out[i * group * d + j] = out[i * heads * group * d + g * group * d + j];
      }
    }
    std::copy_n(lse.begin() + g * group * n, group * n, got_lse.begin());
    const std::vector<float> got_cols(col_sums.begin() + g * len,
                                      col_sums.begin() + (g + 1) * len);
    EXPECT_LT(RelErr(got_out, want.out), 1e-5) << "head " << g;
    EXPECT_LT(RelErr(got_lse, want.lse), 1e-5) << "head " << g;
    EXPECT_LT(RelErr(got_cols, want.col_sums), 1e-5) << "head " << g;
  }
}

TEST(FeatureLayoutTest, SlicesTheHeadsOfATensorParallelRank) {
  MatryoshkaParams p = RandomParams(2, 4, 8, 3);
  p.ranks = {{8, 8, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7}};
  p.budgets = {p.Fraction(0)};
  auto layout = FeatureLayout::Make(p, 0, 2, 2);
  ASSERT_TRUE(layout.ok());
  EXPECT_EQ((*layout)->head(0, 0).key_dim, 4);    // layer 0, model head 2
  EXPECT_EQ((*layout)->head(1, 1).value_dim, 7);  // layer 1, model head 3
  EXPECT_FALSE(FeatureLayout::Make(p, 0, 3, 2).ok());
}

}  // namespace
}  // namespace kvfold
