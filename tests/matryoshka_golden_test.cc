// MatryoshkaKV through the real forward pass against the PyTorch reference
// (tools/calibrate/make_matryoshka_golden.py): the tiny checkpoint with
// seeded random projections gives the reference's logits at every position
// and its cached k~ = (k - mu) U_r, v~ per layer and KV head, for full,
// mixed and half ranks. Then: at full rank every slot policy gives what it
// gives without projection, and projected storage is what the ranks say.
#include <cmath>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "models/compressor_file.h"
#include "models/safetensors.h"
#include "runtime/engine.h"

namespace kvfold {
namespace {

const char kModel[] = "tests/golden/lococo/model";
const char kDir[] = "tests/golden/matryoshka/";

// ||got - want|| / ||want||, in double.
double RelErr(const float* got, const float* want, int64_t n) {
  double err = 0, norm = 0;
  for (int64_t i = 0; i < n; ++i) {
    err += (double(got[i]) - want[i]) * (double(got[i]) - want[i]);
    norm += double(want[i]) * want[i];
  }
  return std::sqrt(err / std::max(norm, 1e-30));
}

std::vector<int32_t> Ids(const SafetensorsFile& g) {
  std::vector<int32_t> ids;
  for (absl::string_view item : absl::StrSplit(g.metadata().at("ids"), ',')) {
    int32_t v = 0;
    EXPECT_TRUE(absl::SimpleAtoi(item, &v));
    ids.push_back(v);
  }
  return ids;
}

// The tiny checkpoint, the projection file and the reference's outputs,
// loaded for each test.
class MatryoshkaGoldenTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(model.ok()) << model.status();
    ASSERT_TRUE(file.ok()) << file.status();
    ASSERT_TRUE(golden.ok()) << golden.status();
  }
  absl::StatusOr<std::unique_ptr<LlamaModel>> model = LlamaModel::Load(kModel);
  absl::StatusOr<std::shared_ptr<const CompressorFile>> file =
      LoadCompressorFile(absl::StrCat(kDir, "parity.safetensors"));
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> golden =
      SafetensorsFile::Open(absl::StrCat(kDir, "parity_golden.safetensors"));
};

TEST_F(MatryoshkaGoldenTest, LogitsAndCacheMatchThePyTorchReference) {
  const SafetensorsFile& g = **golden;
  const std::vector<int32_t> ids = Ids(g);
  const int64_t n = ids.size(), vocab = (*model)->config().vocab_size;
  const MatryoshkaParams& p = *(*file)->matryoshka;
  ASSERT_EQ(p.budgets.size(), 3u);

  for (size_t a = 0; a < p.budgets.size(); ++a) {
    SCOPED_TRACE(absl::StrCat("allocation ", a, " (budget ", p.budgets[a], ")"));
    EngineOptions options;
    options.prefill_chunk = 32;  // three chunks: projection happens per append
    options.projection = *file;
    options.cache.set_feature_budget(p.budgets[a]);
    Engine engine(**model, options);
    auto cache = engine.NewCache();
    ASSERT_TRUE(cache.ok()) << cache.status();
    std::vector<float> logits;
    ASSERT_TRUE(engine.Prefill(ids, LogitsFor::kAll, **cache, &logits).ok());
    auto want = g.LoadF32(absl::StrCat("alloc", a, ".logits"), {n, vocab});
    ASSERT_TRUE(want.ok()) << want.status();
    EXPECT_LT(RelErr(logits.data(), want->as<float>(), n * vocab), 1e-5);

    for (int64_t l = 0; l < p.num_layers; ++l) {
      const LayerView view = (**cache).View(static_cast<int>(l));
      ASSERT_NE(view.key_offsets, nullptr);
      for (int64_t h = 0; h < p.kv_heads; ++h) {
        const int64_t d = p.head_dim;
        const int32_t rk = p.ranks[a][2 * (l * p.kv_heads + h)];
        const int32_t rv = p.ranks[a][2 * (l * p.kv_heads + h) + 1];
        const MatryoshkaParams::Head& head = p.head(l, h);
        // kvfold holds k U_r; the paper's k~ is that minus mu U_r.
        auto centered = [&](const float* cached, int32_t r, const std::vector<float>& basis,
                            const std::vector<float>& mean) {
          std::vector<float> out(n * r);
          for (int32_t c = 0; c < r; ++c) {
            double shift = 0;
            for (int64_t i = 0; i < d; ++i) shift += double(mean[i]) * basis[i * d + c];
            for (int64_t t = 0; t < n; ++t) out[t * r + c] = cached[t * r + c] - float(shift);
          }
          return out;
        };
        const std::string prefix = absl::StrCat("alloc", a, ".layer", l, ".head", h, ".");
        auto wk = g.LoadF32(prefix + "keys", {n, rk});
        auto wv = g.LoadF32(prefix + "values", {n, rv});
        ASSERT_TRUE(wk.ok() && wv.ok()) << wk.status() << wv.status();
        const std::vector<float> k =
            centered(view.keys + view.key_offsets[h], rk, head.key_basis, head.key_mean);
        const std::vector<float> v = centered(view.values + view.value_offsets[h], rv,
                                              head.value_basis, head.value_mean);
        EXPECT_LT(RelErr(k.data(), wk->as<float>(), n * rk), 1e-5) << prefix;
        EXPECT_LT(RelErr(v.data(), wv->as<float>(), n * rv), 1e-5) << prefix;
      }
    }
    // Storage: the ranks' features per slot, nothing padded to head_dim.
    int64_t features = 0;
    for (int32_t r : p.ranks[a]) features += r;
    EXPECT_EQ((**cache).bytes(), 4 * features * (**cache).View(0).stride);
  }
}

// Every slot policy on a full-rank projected cache (random orthogonal bases,
// non-zero means) keeps the same slots and gives the same log-probabilities
// as on the plain cache: projection at full rank is a rotation.
TEST_F(MatryoshkaGoldenTest, FullRankComposesWithEverySlotPolicy) {
  std::vector<int32_t> ids = Ids(**golden);
  for (int rep = 0; rep < 2; ++rep) ids.insert(ids.end(), ids.begin(), ids.begin() + 90);
  const ModelConfig& c = (*model)->config();
  auto lococo = std::make_shared<CompressorFile>();
  lococo->method = "lococo";
  lococo->model = {"model", c.num_layers, c.hidden_size, c.num_heads, c.num_kv_heads,
                   c.head_dim, c.vocab_size};
  lococo->lococo = std::make_shared<LoCoCoParams>(
      RandomLoCoCo(c.num_layers, c.head_dim, 32, 0.5, 5, 17));

  for (const std::string policy :
       {"full", "streaming", "h2o", "snapkv", "pyramidkv", "kvmerger", "lococo"}) {
    SCOPED_TRACE(policy);
    std::vector<double> logprobs[2];
    int64_t bytes[2];
    for (int projected = 0; projected < 2; ++projected) {
      EngineOptions options;
      options.prefill_chunk = 40;
      ASSERT_TRUE(SetPolicyByName(policy, &options.cache).ok());
      if (policy != "full") options.cache.set_slots(32);
      if (policy == "lococo") options.compressor = lococo;
      if (projected) {
        options.projection = *file;
        options.cache.set_feature_budget(1.0);
      }
      ASSERT_TRUE(ValidateCacheOptions(options, c).ok())
          << ValidateCacheOptions(options, c);
      Engine engine(**model, options);
      auto r = engine.Score(ids);
      ASSERT_TRUE(r.ok()) << r.status();
      logprobs[projected] = r->logprobs;
      bytes[projected] = r->cache.bytes;
    }
    double worst = 0;
    for (size_t i = 0; i < logprobs[0].size(); ++i) {
      worst = std::max(worst, std::abs(logprobs[0][i] - logprobs[1][i]));
    }
    EXPECT_LT(worst, 1e-4);
    EXPECT_EQ(bytes[0], bytes[1]);  // full rank stores as much
  }
}

// A forward call whose caches share one layout folds U_v into W_o; mixed
// layouts (batched decode of different budgets) reconstruct each head's
// output instead. Both give the same logits.
TEST_F(MatryoshkaGoldenTest, FoldedOutputProjectionEqualsReconstruction) {
  const std::vector<int32_t> ids = Ids(**golden);
  const LlamaModel& m = **model;
  const int64_t vocab = m.config().vocab_size;
  Stream s;
  LearnedParams learned;
  learned.matryoshka = (*file)->matryoshka;
  std::vector<std::unique_ptr<KvCache>> caches;
  for (double budget : {0.5859375, 0.5}) {  // two layouts
    CacheConfig config;
    config.set_feature_budget(budget);
    auto cache = MakeCache(config, m.cache_shape(s), 128, learned);
    ASSERT_TRUE(cache.ok()) << cache.status();
    std::vector<int32_t> pos(ids.size());
    for (size_t i = 0; i < ids.size(); ++i) pos[i] = static_cast<int32_t>(i);
    ForwardScratch sc;
    ASSERT_TRUE(m.Forward(s, ids, pos, LogitsFor::kNone, **cache, sc, nullptr).ok());
    caches.push_back(*std::move(cache));
  }
  // One step of each alone (folded) on copies, then both together (mixed).
  const int32_t next = static_cast<int32_t>(ids.size());
  std::vector<float> alone(2 * vocab), together(2 * vocab);
  for (int b = 0; b < 2; ++b) {
    std::unique_ptr<KvCache> copy = caches[b]->Clone();
    ForwardScratch sc;
    const int32_t tok = 7 + b;
    ASSERT_TRUE(m.Forward(s, {&tok, 1}, {&next, 1}, LogitsFor::kLast, *copy, sc,
                          alone.data() + b * vocab)
                    .ok());
  }
  const std::vector<int32_t> tokens = {7, 8}, positions = {next, next};
  KvCache* both[] = {caches[0].get(), caches[1].get()};
  ForwardScratch sc;
  ASSERT_TRUE(m.ForwardDecodeBatch(s, tokens, positions, both, sc, together.data()).ok());
  EXPECT_LT(RelErr(together.data(), alone.data(), 2 * vocab), 1e-6);
}

TEST_F(MatryoshkaGoldenTest, ClearErrorsForImpossibleCombinations) {
  const ModelConfig& c = (*model)->config();
  EngineOptions o;
  o.cache.set_feature_budget(0.5);
  EXPECT_NE(ValidateCacheOptions(o, c).message().find("needs MatryoshkaKV projections"),
            std::string::npos);
  o.projection = *file;
  o.cache.set_feature_budget(0.3);
  EXPECT_NE(ValidateCacheOptions(o, c).message().find("stores 1, 0.5859375, 0.5"),
            std::string::npos)
      << ValidateCacheOptions(o, c);
  o.cache.set_feature_budget(0);
  EXPECT_NE(ValidateCacheOptions(o, c).message().find("choose one with --feature_budget"),
            std::string::npos);
  o.cache.set_feature_budget(0.5);
  o.cache.mutable_streaming()->set_reindex_positions(true);
  o.cache.set_slots(32);
  EXPECT_NE(ValidateCacheOptions(o, c).message().find("reindex_positions"),
            std::string::npos);
  ModelConfig other = c;
  other.head_dim = 32;
  other.num_layers = 3;
  EXPECT_NE(ValidateCacheOptions(o, other).message().find("was calibrated for"),
            std::string::npos);
}

}  // namespace
}  // namespace kvfold
