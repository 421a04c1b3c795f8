// The forward pass against Hugging Face transformers: logits at every
// position and 16-token greedy continuations recorded by
// tools/golden/make_model_fixtures.py, for each checked-in tiny checkpoint.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/golden_io.h"
#include "runtime/engine.h"

namespace kvfold {
namespace {

class GoldenModelTest : public ::testing::TestWithParam<Fixture> {};

TEST_P(GoldenModelTest, LogitsMatchTransformersForEveryChunking) {
  const std::string dir = std::string("tests/golden/") + GetParam().name;
  auto model = LlamaModel::Load(dir);
  ASSERT_TRUE(model.ok()) << model.status();
  for (const Sequence& seq : ReadGolden(dir + "/golden.json")) {
    std::vector<float> one_chunk;
    for (int64_t chunk : {int64_t(1) << 20, int64_t(1), int64_t(7), int64_t(64)}) {
      Engine engine(**model, {.threads = 2, .prefill_chunk = chunk, .cache = {}});
      auto cache_or = engine.NewCache();
      ASSERT_TRUE(cache_or.ok());
      std::unique_ptr<KvCache> cache = std::move(*cache_or);
      std::vector<float> logits;
      ASSERT_TRUE(engine.Prefill(seq.ids, LogitsFor::kAll, *cache, &logits).ok());
      ASSERT_EQ(logits.size(), seq.logits.size() * seq.logits[0].size());
      // f32: max abs error <= 1e-4 x max |logit| (the bound).
      const double err = NormalisedError(logits, seq.logits);
      std::printf("%s len %zu chunk %lld: error vs transformers f32 %.2e\n",
                  GetParam().name, seq.ids.size(), (long long)chunk, err);
      EXPECT_LE(err, 1e-4)
          << dir << " len " << seq.ids.size() << " chunk " << chunk;
      if (one_chunk.empty()) {
        one_chunk = logits;
      } else {
        // Chunking changes only GEMM shapes, so f32 rounding noise at most.
        double diff = 0, scale = 0;
        for (size_t i = 0; i < logits.size(); ++i) {
          diff = std::max(diff, double(std::abs(logits[i] - one_chunk[i])));
          scale = std::max(scale, double(std::abs(one_chunk[i])));
        }
        EXPECT_LE(diff / scale, 1e-5)
            << "chunk " << chunk << " differs from one chunk";
      }
      if (GetParam().native_tolerance > 0) {
        const double native = NormalisedError(logits, seq.logits_native);
        std::printf("%s len %zu: error vs transformers in storage dtype %.2e\n",
                    GetParam().name, seq.ids.size(), native);
        EXPECT_LE(native, GetParam().native_tolerance);
      }
    }
  }
}

TEST_P(GoldenModelTest, GreedyContinuationIsIdentical) {
  const std::string dir = std::string("tests/golden/") + GetParam().name;
  auto model = LlamaModel::Load(dir);
  ASSERT_TRUE(model.ok()) << model.status();
  for (const Sequence& seq : ReadGolden(dir + "/golden.json")) {
    for (int64_t chunk : {int64_t(512), int64_t(7)}) {
      Engine engine(**model, {.threads = 2, .prefill_chunk = chunk, .cache = {}});
      GenerateOptions opts;
      opts.max_new_tokens = static_cast<int64_t>(seq.greedy.size());
      opts.stop_at_eos = false;  // the reference loop did not stop either
      auto r = engine.Generate(seq.ids, opts);
      ASSERT_TRUE(r.ok()) << r.status();
      EXPECT_EQ(r->tokens, seq.greedy) << dir << " chunk " << chunk;
    }
  }
}

// score's log-probabilities against log_softmax of the transformers logits.
TEST_P(GoldenModelTest, ScoreMatchesTransformersLogSoftmax) {
  const std::string dir = std::string("tests/golden/") + GetParam().name;
  auto model = LlamaModel::Load(dir);
  ASSERT_TRUE(model.ok()) << model.status();
  for (const Sequence& seq : ReadGolden(dir + "/golden.json")) {
    Engine engine(**model, {.threads = 2, .prefill_chunk = 7, .cache = {}});
    auto r = engine.Score(seq.ids);
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_EQ(r->logprobs.size(), seq.ids.size() - 1);
    double nll = 0;
    for (size_t i = 0; i + 1 < seq.ids.size(); ++i) {
      const std::vector<float>& row = seq.logits[i];
      double mx = *std::max_element(row.begin(), row.end()), sum = 0;
      for (float v : row) sum += std::exp(v - mx);
      const double want = row[seq.ids[i + 1]] - mx - std::log(sum);
      EXPECT_NEAR(r->logprobs[i], want, 1e-4) << dir << " position " << i;
      nll -= want;
    }
    EXPECT_NEAR(r->nll, nll, 1e-3 * seq.ids.size());
  }
}

INSTANTIATE_TEST_SUITE_P(
    Checkpoints, GoldenModelTest,
    ::testing::ValuesIn(kGoldenCheckpoints),
    [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace kvfold
