// LoCoCo's cache update against direct double-precision formulas (the
// PyTorch reference parity lives in tests/lococo_golden_test.cc): the hard
// selection when alpha = 0, a uniform average when the conv is zero, a naive
// convolution otherwise; when it fires; and the config checks.
#include "cache/lococo.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "cache/policies.h"
#include "gtest/gtest.h"
#include "kernels/test_util.h"

namespace kvfold {
namespace {

constexpr int64_t kHeads = 2, kDim = 4;

std::shared_ptr<LoCoCoParams> Params(int64_t layers, int64_t m, int64_t mc,
                                     int64_t kernel, float alpha, float scale) {
  auto p = std::make_shared<LoCoCoParams>();
  p->slots = m;
  p->compressed_slots = mc;
  p->kernel = kernel;
  p->head_dim = kDim;
  p->hh_keep_rate = 1.0 - double(mc) / m;
  p->buffer = 2;
  for (int64_t l = 0; l < layers; ++l) {
    LoCoCoLayer w;
    w.conv_weight = Tensor({mc, 2 * kDim * kernel}, DType::kF32);
    w.conv_bias = Tensor({mc}, DType::kF32);
    auto wv = Random(w.conv_weight.numel(), 10 + l, scale);
    auto bv = Random(mc, 20 + l, scale);
    std::copy(wv.begin(), wv.end(), w.conv_weight.as<float>());
    std::copy(bv.begin(), bv.end(), w.conv_bias.as<float>());
    w.alpha = alpha;
    p->layers.push_back(std::move(w));
  }
  EXPECT_TRUE(p->Validate().ok()) << p->Validate();
  return p;
}

// One layer cache fed `n` random tokens in one chunk, compressed with the
// column sums `hh` [kHeads, n].
struct Fed {
  std::vector<float> k, v, hh;  // k, v: [n, kHeads, kDim]
  std::unique_ptr<KvCache> cache;
};

Fed FeedOne(std::shared_ptr<LoCoCoParams> p, int64_t n) {
  Fed f;
  f.k = Random(n * kHeads * kDim, 1);
  f.v = Random(n * kHeads * kDim, 2);
  f.hh = Random(kHeads * n, 3);
  for (float& x : f.hh) x = std::abs(x);
  CacheConfig c;
  c.mutable_lococo();
  CacheShape shape{1, kHeads, kDim, {}};
  auto made = MakeCache(c, shape, n, LearnedParams{p});
  EXPECT_TRUE(made.ok()) << made.status();
  f.cache = std::move(*made);
  std::vector<int32_t> pos(n);
  std::iota(pos.begin(), pos.end(), 100);
  EXPECT_TRUE(f.cache->Append(0, f.k.data(), f.v.data(), pos.data(), n).ok());
  EXPECT_TRUE(f.cache->AfterAttention(0, {f.hh.data(), nullptr, n}).ok());
  return f;
}

// Indices of the k largest of x (distinct values), ascending.
std::vector<int64_t> Top(const std::vector<double>& x, int64_t k) {
  std::vector<int64_t> idx(x.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) { return x[a] > x[b]; });
  idx.resize(k);
  std::sort(idx.begin(), idx.end());
  return idx;
}

// The expected layer, head g: [heavy ; W rest] with W from a naive conv.
void Expect(const Fed& f, const LoCoCoParams& p, int64_t n) {
  const LayerView view = f.cache->View(0);
  ASSERT_EQ(view.length, p.slots);
  const int64_t mc = p.compressed_slots, keep = p.slots - mc, rest = n - keep;
  const int64_t kk = p.kernel, half = kk / 2;
  const LoCoCoLayer& w = p.layers[0];
  double err = 0, norm = 0;
  for (int64_t g = 0; g < kHeads; ++g) {
    std::vector<double> hh(n);
    for (int64_t j = 0; j < n; ++j) hh[j] = f.hh[g * n + j];
    const std::vector<int64_t> heavy = Top(hh, keep);
    std::vector<int64_t> others;
    std::vector<double> others_hh;
    for (int64_t j = 0; j < n; ++j) {
      if (!std::binary_search(heavy.begin(), heavy.end(), j)) {
        others.push_back(j);
        others_hh.push_back(hh[j]);
      }
    }
    const std::vector<int64_t> sel = Top(others_hh, mc);
    auto kv = [&](int64_t token, int64_t c) -> double {  // channel c of X
      const int64_t at = (token * kHeads + g) * kDim;
      return c < kDim ? f.k[at + c] : f.v[at + c - kDim];
    };
    for (int64_t i = 0; i < p.slots; ++i) {
      std::vector<double> want_k(kDim, 0), want_v(kDim, 0);
      int32_t want_pos;
      if (i < keep) {
        for (int64_t c = 0; c < kDim; ++c) {
          want_k[c] = kv(heavy[i], c);
          want_v[c] = kv(heavy[i], kDim + c);
        }
        want_pos = static_cast<int32_t>(100 + heavy[i]);
      } else {
        const int64_t o = i - keep;
        std::vector<double> y(rest);
        for (int64_t t = 0; t < rest; ++t) {
          double acc = w.conv_bias.as<float>()[o];
          for (int64_t c = 0; c < 2 * kDim; ++c) {
            for (int64_t j = 0; j < kk; ++j) {
              const int64_t src = t + j - half;
              if (src < 0 || src >= rest) continue;
              acc += double(w.conv_weight.as<float>()[(o * 2 * kDim + c) * kk + j]) *
                     kv(others[src], c);
            }
          }
          y[t] = std::exp(std::max(acc, 0.0));
        }
        const double sum = std::accumulate(y.begin(), y.end(), 0.0);
        for (int64_t t = 0; t < rest; ++t) {
          const double wt = w.alpha * y[t] / sum + (t == sel[o] ? 1.0 - w.alpha : 0.0);
          for (int64_t c = 0; c < kDim; ++c) {
            want_k[c] += wt * kv(others[t], c);
            want_v[c] += wt * kv(others[t], kDim + c);
          }
        }
        want_pos = static_cast<int32_t>(100 + others[sel[o]]);
      }
      EXPECT_EQ(view.positions[g * view.stride + i], want_pos) << "head " << g << " slot " << i;
      for (int64_t c = 0; c < kDim; ++c) {
        const double gk = view.keys[(g * view.stride + i) * kDim + c];
        const double gv = view.values[(g * view.stride + i) * kDim + c];
        err += (gk - want_k[c]) * (gk - want_k[c]) + (gv - want_v[c]) * (gv - want_v[c]);
        norm += want_k[c] * want_k[c] + want_v[c] * want_v[c];
      }
    }
  }
  EXPECT_LT(std::sqrt(err / norm), 1e-6);
}

TEST(LoCoCoTest, MatchesDirectFormulas) {
  const int64_t n = 30;
  for (float alpha : {0.0f, 0.37f, 1.0f}) {
    for (int64_t kernel : {1, 5, 41}) {
      auto p = Params(1, 12, 8, kernel, alpha, 0.3f);
      Fed f = FeedOne(p, n);
      Expect(f, *p, n);
    }
  }
  auto pure = Params(1, 10, 10, 3, 1.0f, 0.5f);  // hh_keep_rate 0
  Fed f = FeedOne(pure, n);
  Expect(f, *pure, n);
}

TEST(LoCoCoTest, ZeroConvAveragesTheRest) {
  auto p = Params(1, 6, 6, 3, 1.0f, 0.0f);  // pure: every slot = mean of all
  const int64_t n = 9;
  Fed f = FeedOne(p, n);
  const LayerView view = f.cache->View(0);
  for (int64_t c = 0; c < kDim; ++c) {
    double mean = 0;
    for (int64_t t = 0; t < n; ++t) mean += f.k[(t * kHeads + 1) * kDim + c] / n;
    for (int64_t i = 0; i < 6; ++i) {
      EXPECT_NEAR(view.keys[(view.stride + i) * kDim + c], mean, 1e-6);
    }
  }
}

TEST(LoCoCoTest, FiresPastBufferInPrefillAndDecode) {
  auto p = Params(2, 8, 4, 3, 0.5f, 0.3f);  // buffer 2: compress above 10
  CacheConfig c;
  c.mutable_lococo();
  CacheShape shape{2, kHeads, kDim, {}};
  auto made = MakeCache(c, shape, 6, LearnedParams{p});
  ASSERT_TRUE(made.ok()) << made.status();
  KvCache& cache = **made;
  int32_t next = 0;
  auto feed = [&](int64_t n) {
    auto k = Random(n * kHeads * kDim, next), v = Random(n * kHeads * kDim, next + 1);
    std::vector<int32_t> pos(n);
    std::iota(pos.begin(), pos.end(), next);
    next += n;
    for (int layer = 0; layer < 2; ++layer) {
      ASSERT_TRUE(cache.Append(layer, k.data(), v.data(), pos.data(), n).ok());
      std::vector<float> hh(kHeads * cache.View(layer).length, 1.0f);
      for (size_t j = 0; j < hh.size(); ++j) hh[j] += 0.001f * float(j % 97);
      ASSERT_TRUE(cache.AfterAttention(layer, {hh.data(), nullptr, n}).ok());
    }
  };
  std::vector<int64_t> lengths;
  for (int i = 0; i < 3; ++i) {
    feed(5);
    lengths.push_back(cache.View(1).length);
  }
  EXPECT_EQ(lengths, (std::vector<int64_t>{5, 10, 8}));  // 15 > 10: back to 8
  cache.SetPhase(CachePhase::kAppend);
  feed(6);  // a question-agnostic question is appended as is
  EXPECT_EQ(cache.View(0).length, 14);
  cache.SetPhase(CachePhase::kDecode);
  feed(1);  // decoding compresses back to M, not to the size at its start
  EXPECT_EQ(cache.View(0).length, 8);
  lengths.clear();
  for (int i = 0; i < 3; ++i) {
    feed(1);
    lengths.push_back(cache.View(0).length);
  }
  EXPECT_EQ(lengths, (std::vector<int64_t>{9, 10, 8}));
}

TEST(LoCoCoTest, ConfigChecks) {
  auto p = Params(2, 8, 4, 3, 0.5f, 0.3f);
  CacheConfig c;
  c.mutable_lococo();
  EXPECT_TRUE(ValidateCacheConfig(c, 2, 16, LearnedParams{p}).ok());
  auto budgets = LayerBudgets(c, 2, 16, LearnedParams{p});
  ASSERT_TRUE(budgets.ok());
  EXPECT_EQ(*budgets, (std::vector<int64_t>{8, 8}));
  auto message = [&](const CacheConfig& config, int64_t layers, const LearnedParams& l) {
    return std::string(ValidateCacheConfig(config, layers, 16, l).message());
  };
  EXPECT_NE(message(c, 2, {}).find("--compressor"), std::string::npos);
  EXPECT_NE(message(c, 3, {p}).find("has 2 layers but the model has 3"), std::string::npos);
  CacheConfig wrong = c;
  wrong.set_slots(16);
  EXPECT_NE(message(wrong, 2, {p}).find("--cache_slots=16 does not match"), std::string::npos);
  wrong.set_slots(8);
  EXPECT_TRUE(ValidateCacheConfig(wrong, 2, 16, LearnedParams{p}).ok());
  wrong.clear_slots();
  wrong.add_layer_slots(8);
  wrong.add_layer_slots(8);
  EXPECT_NE(message(wrong, 2, {p}).find("not layer_slots"), std::string::npos);
  CacheConfig h2o;
  h2o.mutable_h2o();
  h2o.set_slots(8);
  EXPECT_NE(message(h2o, 2, {p}).find("--cache=lococo only"), std::string::npos);
  CacheShape other{2, kHeads, kDim * 2, {}};
  EXPECT_FALSE(MakeCache(c, other, 16, LearnedParams{p}).ok());  // head_dim
  c.mutable_lococo()->set_buffer(-1);
  EXPECT_NE(message(c, 2, {p}).find("buffer must be >= 0"), std::string::npos);
}

}  // namespace
}  // namespace kvfold
