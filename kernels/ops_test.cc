// Every CPU op against a straightforward double-precision reference, on odd
// sizes, with and without worker threads.
#include "kernels/ops.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/test_util.h"

namespace kvfold {
namespace {

class OpsTest : public ::testing::TestWithParam<int> {
 protected:
  OpsTest() : pool_(GetParam()) { stream_.pool = &pool_; }
  ThreadPool pool_;
  Stream stream_;
};

TEST_P(OpsTest, MatMulNT) {
  for (int64_t m : {1, 3, 7, 70}) {
    const int64_t n = 301, k = 19;
    auto a = Random(m * k, 1), b = Random(n * k, 2), c = Random(m * n, 3);
    std::vector<double> want(m * n);
    for (bool acc : {false, true}) {
      for (int64_t i = 0; i < m; ++i) {
        for (int64_t j = 0; j < n; ++j) {
          double s = acc ? c[i * n + j] : 0.0;
          for (int64_t t = 0; t < k; ++t) s += double(a[i * k + t]) * b[j * k + t];
          want[i * n + j] = s;
        }
      }
      auto got = c;
      ASSERT_TRUE(MatMulNT(stream_, a.data(), k, b.data(), k, got.data(), n, m,
                           n, k, acc).ok());
      EXPECT_LT(RelErr(got, want), 1e-5) << "m=" << m << " acc=" << acc;
    }
  }
}

TEST_P(OpsTest, RmsNorm) {
  const int64_t rows = 5, dim = 37;
  auto x = Random(rows * dim, 4), w = Random(dim, 5);
  std::vector<double> want(rows * dim);
  for (int64_t r = 0; r < rows; ++r) {
    double ss = 0;
    for (int64_t i = 0; i < dim; ++i) ss += double(x[r * dim + i]) * x[r * dim + i];
    const double inv = 1.0 / std::sqrt(ss / dim + 1e-5);
    for (int64_t i = 0; i < dim; ++i) want[r * dim + i] = x[r * dim + i] * inv * w[i];
  }
  std::vector<float> got(rows * dim);
  ASSERT_TRUE(RmsNorm(stream_, x.data(), w.data(), 1e-5f, got.data(), rows, dim).ok());
  EXPECT_LT(RelErr(got, want), 1e-6);
}

TEST_P(OpsTest, Rope) {
  const int64_t n = 9, heads = 3, hd = 14, half = hd / 2;
  auto x = Random(n * heads * hd, 6);
  std::vector<int32_t> pos = {0, 1, 5, 17, 100, 2047, 3, 4, 9999};
  std::vector<float> inv_freq(half);
  for (int64_t i = 0; i < half; ++i) inv_freq[i] = std::pow(500.0f, -2.0f * i / hd);
  std::vector<double> want(x.size());
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t h = 0; h < heads; ++h) {
      const float* v = &x[(t * heads + h) * hd];
      double* o = &want[(t * heads + h) * hd];
      for (int64_t i = 0; i < half; ++i) {
        const double ang = double(float(pos[t]) * inv_freq[i]);
        o[i] = v[i] * std::cos(ang) - v[i + half] * std::sin(ang);
        o[i + half] = v[i + half] * std::cos(ang) + v[i] * std::sin(ang);
      }
    }
  }
  ASSERT_TRUE(ApplyRope(stream_, x.data(), pos.data(), inv_freq.data(), n,
                        heads, hd).ok());
  EXPECT_LT(RelErr(x, want), 1e-6);
  EXPECT_FALSE(ApplyRope(stream_, x.data(), pos.data(), inv_freq.data(), n,
                         heads, 7).ok());
}

// A Conv1d with "same" zero padding computed as im2col + one GEMM against the
// direct sum over channels and taps (PyTorch's cross-correlation).
TEST_P(OpsTest, Conv1dAsIm2ColGemm) {
  const int64_t channels = 6, length = 23, out_ch = 5;
  for (int64_t kernel : {1, 3, 7, 31}) {  // 31 > length: taps reach past both ends
    const int64_t kk = channels * kernel, ld = kk + 2;
    auto x = Random(channels * length, 11), w = Random(out_ch * kk, 12);
    std::vector<double> want(out_ch * length);
    for (int64_t o = 0; o < out_ch; ++o) {
      for (int64_t t = 0; t < length; ++t) {
        double acc = 0;
        for (int64_t c = 0; c < channels; ++c) {
          for (int64_t j = 0; j < kernel; ++j) {
            const int64_t src = t + j - (kernel - 1) / 2;
            if (src >= 0 && src < length) {
              acc += double(w[(o * channels + c) * kernel + j]) * x[c * length + src];
            }
          }
        }
        want[o * length + t] = std::max(acc, 0.0);
      }
    }
    std::vector<float> cols(length * ld, 9.0f), y(out_ch * length);
    ASSERT_TRUE(Im2Col1d(stream_, x.data(), channels, length, kernel, cols.data(), ld).ok());
    ASSERT_TRUE(MatMulNT(stream_, w.data(), kk, cols.data(), ld, y.data(), length,
                         out_ch, length, kk, false).ok());
    ASSERT_TRUE(Relu(stream_, y.data(), y.size()).ok());
    EXPECT_LT(RelErr(y, want), 1e-6) << "kernel=" << kernel;
  }
  std::vector<float> x(4), cols(8);
  EXPECT_FALSE(Im2Col1d(stream_, x.data(), 2, 2, 2, cols.data(), 4).ok());  // even
  EXPECT_FALSE(Im2Col1d(stream_, x.data(), 2, 2, 3, cols.data(), 5).ok());  // ld
}

TEST_P(OpsTest, SoftmaxSiluAddEmbedding) {
  const int64_t rows = 4, cols = 33;
  auto x = Random(rows * cols, 7, 5.0f);
  std::vector<double> want(x.size());
  for (int64_t r = 0; r < rows; ++r) {
    double s = 0;
    for (int64_t j = 0; j < cols; ++j) s += std::exp(double(x[r * cols + j]));
    for (int64_t j = 0; j < cols; ++j) want[r * cols + j] = std::exp(double(x[r * cols + j])) / s;
  }
  auto sm = x;
  ASSERT_TRUE(Softmax(stream_, sm.data(), rows, cols).ok());
  EXPECT_LT(RelErr(sm, want), 1e-6);

  const int64_t n = 20001;  // above the parallel threshold
  auto g = Random(n, 8), u = Random(n, 9);
  std::vector<float> out(n);
  std::vector<double> want_silu(n), want_add(n);
  for (int64_t i = 0; i < n; ++i) {
    want_silu[i] = g[i] / (1.0 + std::exp(-double(g[i]))) * u[i];
    want_add[i] = double(g[i]) + u[i];
  }
  ASSERT_TRUE(SiluMul(stream_, g.data(), u.data(), out.data(), n).ok());
  EXPECT_LT(RelErr(out, want_silu), 1e-6);
  ASSERT_TRUE(AddInPlace(stream_, g.data(), u.data(), n).ok());
  EXPECT_LT(RelErr(g, want_add), 1e-7);

  const int64_t vocab = 11, dim = 5;
  auto table = Random(vocab * dim, 10);
  std::vector<int32_t> ids = {10, 0, -1, 3, 3};
  std::vector<float> emb(ids.size() * dim, 7.0f);
  ASSERT_TRUE(Embedding(stream_, table.data(), DType::kF32, ids.data(), ids.size(), dim, emb.data()).ok());
  for (size_t t = 0; t < ids.size(); ++t) {
    for (int64_t i = 0; i < dim; ++i) {
      EXPECT_EQ(emb[t * dim + i], ids[t] < 0 ? 0.0f : table[ids[t] * dim + i]);
    }
  }
}

// Reference attention in double: out, lse and grouped column sums.
void ReferenceAttention(const AttentionArgs& a, std::vector<double>* out,
                        std::vector<double>* lse, std::vector<double>* cols) {
  const int64_t d = a.head_dim, group = a.q_heads / a.kv_heads;
  out->assign(a.num_queries * a.q_heads * d, 0.0);
  lse->assign(a.q_heads * a.num_queries, 0.0);
  cols->assign(a.kv_heads * a.num_keys, 0.0);
  for (int64_t h = 0; h < a.q_heads; ++h) {
    const int64_t g = h / group;
    for (int64_t i = 0; i < a.num_queries; ++i) {
      const int64_t seen = std::min(a.num_keys, a.causal_offset + i + 1);
      std::vector<double> s(seen);
      double mx = -1e300;
      for (int64_t j = 0; j < seen; ++j) {
        double dot = 0;
        for (int64_t t = 0; t < d; ++t) {
          dot += double(a.q[(i * a.q_heads + h) * d + t]) *
                 a.k[(g * a.kv_stride + j) * d + t];
        }
        s[j] = dot * a.scale;
        mx = std::max(mx, s[j]);
      }
      double sum = 0;
      for (double& v : s) sum += (v = std::exp(v - mx));
      (*lse)[h * a.num_queries + i] = mx + std::log(sum);
      for (int64_t j = 0; j < seen; ++j) {
        const double p = s[j] / sum;
        if (i >= a.col_sums_from_query) (*cols)[g * a.num_keys + j] += p;
        for (int64_t t = 0; t < d; ++t) {
          (*out)[(i * a.q_heads + h) * d + t] += p * a.v[(g * a.kv_stride + j) * d + t];
        }
      }
    }
  }
}

TEST_P(OpsTest, AttentionGqaWithCacheAndStats) {
  struct Case {
    int64_t queries, keys, stride, q_heads, kv_heads, d, cols_from;
  };
  for (const Case& c :
       {Case{5, 23, 30, 6, 2, 10, 0}, Case{70, 70, 71, 4, 4, 8, 0},
        Case{1, 41, 41, 9, 3, 12, 0}, Case{37, 101, 128, 8, 1, 16, 0},
        Case{37, 101, 128, 8, 2, 16, 29}, Case{70, 70, 70, 4, 2, 8, 33}}) {
    auto q = Random(c.queries * c.q_heads * c.d, 11, 2.0f);
    auto k = Random(c.kv_heads * c.stride * c.d, 12);
    auto v = Random(c.kv_heads * c.stride * c.d, 13);
    std::vector<float> out(q.size()), lse(c.q_heads * c.queries),
        cols(c.kv_heads * c.keys, -1.0f);
    AttentionArgs a;
    a.q = q.data();
    a.k = k.data();
    a.v = v.data();
    a.out = out.data();
    a.lse = lse.data();
    a.col_sums = cols.data();
    a.col_sums_from_query = c.cols_from;
    a.num_queries = c.queries;
    a.num_keys = c.keys;
    a.kv_stride = c.stride;
    a.causal_offset = c.keys - c.queries;
    a.q_heads = c.q_heads;
    a.kv_heads = c.kv_heads;
    a.head_dim = c.d;
    a.scale = 1.0f / std::sqrt(float(c.d));
    ASSERT_TRUE(Attention(stream_, a).ok());
    std::vector<double> want_out, want_lse, want_cols;
    ReferenceAttention(a, &want_out, &want_lse, &want_cols);
    EXPECT_LT(RelErr(out, want_out), 1e-5) << c.queries << "x" << c.keys;
    EXPECT_LT(RelErr(lse, want_lse), 1e-5);
    EXPECT_LT(RelErr(cols, want_cols), 1e-5);
  }
}

TEST_P(OpsTest, AttentionRejectsBadShapes) {
  std::vector<float> buf(64);
  AttentionArgs a;
  a.q = a.k = a.v = buf.data();
  a.out = buf.data();
  a.num_queries = 1;
  a.num_keys = 4;
  a.kv_stride = 2;  // smaller than num_keys
  a.q_heads = 2;
  a.kv_heads = 1;
  a.head_dim = 2;
  a.causal_offset = 3;
  EXPECT_FALSE(Attention(stream_, a).ok());
  a.kv_stride = 4;
  a.q_heads = 3;
  a.kv_heads = 2;  // not a multiple
  EXPECT_FALSE(Attention(stream_, a).ok());
}

INSTANTIATE_TEST_SUITE_P(Threads, OpsTest, ::testing::Values(1, 3));

}  // namespace
}  // namespace kvfold
