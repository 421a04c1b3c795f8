// The cache policies inside the real forward pass (tiny checked-in
// checkpoints): a policy that never has to compress is exactly the full
// cache; chunked prefill keeps every invariant with real attention
// statistics; question-agnostic and question-aware answering.
#include <cmath>
#include <string>
#include <vector>

#include "cache/policies.h"
#include "gtest/gtest.h"
#include "runtime/engine.h"

namespace kvfold {
namespace {

CacheConfig Config(const std::string& text) {
  auto c = ParseCacheConfig(text, "test");
  EXPECT_TRUE(c.ok()) << c.status();
  return *c;
}

EngineOptions Options(const std::string& config, int64_t chunk) {
  EngineOptions o;
  o.threads = 2;
  o.prefill_chunk = chunk;
  o.cache = Config(config);
  return o;
}

std::vector<int32_t> Ids(int64_t n, int64_t seed, int64_t vocab = 256) {
  std::vector<int32_t> ids(n);
  for (int64_t i = 0; i < n; ++i) ids[i] = int32_t((i * 37 + seed * 101 + 11) % vocab);
  return ids;
}

std::unique_ptr<LlamaModel> Load(const std::string& name) {
  auto m = LlamaModel::Load("tests/golden/" + name);
  EXPECT_TRUE(m.ok()) << m.status();
  return m.ok() ? std::move(*m) : nullptr;
}

// All-position logits of `ids` through a fresh cache of `config`.
std::vector<float> Logits(const LlamaModel& model, const std::string& config,
                          const std::vector<int32_t>& ids, int64_t chunk) {
  const EngineOptions o = Options(config, chunk);
  Engine engine(model, o);
  auto cache = engine.NewCache();
  EXPECT_TRUE(cache.ok()) << cache.status();
  std::vector<float> logits;
  EXPECT_TRUE(engine.Prefill(ids, LogitsFor::kAll, **cache, &logits).ok());
  return logits;
}

TEST(CacheModelTest, PoliciesWithRoomForEverythingEqualTheFullCache) {
  auto model = Load("mistral_gqa_f32");
  ASSERT_NE(model, nullptr);
  const std::vector<int32_t> ids = Ids(90, 1);
  const std::vector<float> full = Logits(*model, "", ids, 16);
  EXPECT_EQ(Logits(*model, "full {}", ids, 16), full);
  for (const char* c : {"slots: 128 streaming {}",
                        "slots: 128 streaming { reindex_positions: true }",
                        "slots: 128 h2o {}", "slots: 128 snapkv { window: 8 }",
                        "slots: 200 pyramidkv { window: 8 beta: 2 }",
                        "slots: 128 kvmerger {}"}) {
    // pyramidkv's budgets are 296 and 104: 90 tokens fit both.
    EXPECT_EQ(Logits(*model, c, ids, 16), full) << c;
  }
}

TEST(CacheModelTest, CompressionChangesLogitsOnlyAfterTheBudgetFills) {
  auto model = Load("llama3_f32");
  ASSERT_NE(model, nullptr);
  const std::vector<int32_t> ids = Ids(120, 2);
  const std::vector<float> full = Logits(*model, "", ids, 16);
  const int64_t vocab = 256;
  for (const char* c : {"slots: 40 streaming {}", "slots: 40 h2o {}",
                        "slots: 40 snapkv { window: 8 }", "slots: 40 kvmerger {}"}) {
    const std::vector<float> got = Logits(*model, c, ids, 16);
    // Chunks 0..2 (48 tokens) attend over at most 40 + 16 slots only from
    // the third chunk on: the first 48 positions see an uncompressed cache.
    for (int64_t j = 0; j < 48 * vocab; ++j) ASSERT_EQ(got[j], full[j]) << c;
    double diff = 0;
    for (size_t j = 48 * vocab; j < full.size(); ++j) {
      ASSERT_TRUE(std::isfinite(got[j]));
      diff = std::max(diff, double(std::abs(got[j] - full[j])));
    }
    EXPECT_GT(diff, 1e-3) << c << ": compression had no effect";
  }
}

TEST(CacheModelTest, ChunkedPrefillKeepsInvariantsWithRealAttention) {
  auto model = Load("mistral_gqa_f32");
  ASSERT_NE(model, nullptr);
  for (const char* c : {"slots: 48 streaming {}", "slots: 48 h2o {}",
                        "slots: 48 snapkv { window: 8 }",
                        "slots: 48 pyramidkv { window: 8 beta: 4 }",
                        "slots: 48 kvmerger { window: 4 heavy: 8 }"}) {
    const EngineOptions o = Options(c, 20);
    Engine engine(*model, o);
    auto cache = engine.NewCache();
    ASSERT_TRUE(cache.ok());
    auto budgets = LayerBudgets(o.cache, 2, 20);
    ASSERT_TRUE(budgets.ok());
    const std::vector<int32_t> ids = Ids(200, 3);
    std::vector<float> logits;
    for (int64_t begin = 0; begin < 200; begin += 20) {
      std::vector<int32_t> part(ids.begin() + begin, ids.begin() + begin + 20);
      ASSERT_TRUE(engine.Prefill(part, LogitsFor::kLast, **cache, &logits).ok());
      for (int layer = 0; layer < 2; ++layer) {
        const LayerView v = (*cache)->View(layer);
        ASSERT_EQ(v.length, std::min((*budgets)[layer], begin + 20)) << c;
        const int32_t* p = v.positions;  // one KV head
        for (int64_t i = 1; i < v.length; ++i) ASSERT_LT(p[i - 1], p[i]) << c;
        EXPECT_EQ(p[v.length - 1], begin + 19) << c << ": newest token kept";
        if (std::string(c).find("streaming") != std::string::npos) {
          for (int s = 0; s < 4; ++s) EXPECT_EQ(p[s], s) << c << ": sink";
        }
      }
    }
    const CacheStats st = (*cache)->Stats();
    EXPECT_EQ(st.tokens_seen, 200);
    EXPECT_NEAR(st.compression_ratio, 400.0 / st.slots_held, 1e-9);
  }
}

TEST(CacheModelTest, QuestionAgnosticServesManyQuestionsFromOneDocument) {
  auto model = Load("llama3_f32");
  ASSERT_NE(model, nullptr);
  const EngineOptions o = Options("slots: 40 snapkv { window: 8 }", 32);
  Engine engine(*model, o);
  GenerateOptions g;
  g.max_new_tokens = 6;
  g.stop_at_eos = false;
  const std::vector<int32_t> doc = Ids(150, 4);
  const std::vector<std::vector<int32_t>> questions = {Ids(5, 5), Ids(9, 6)};
  auto both = engine.Answer(doc, questions, g);
  ASSERT_TRUE(both.ok()) << both.status();
  ASSERT_EQ(both->size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    // Each answer equals answering that question alone: the shared
    // compressed document is copied, never modified by a question.
    auto alone = engine.Answer(doc, {questions[i]}, g);
    ASSERT_TRUE(alone.ok());
    EXPECT_EQ((*both)[i].tokens, (*alone)[0].tokens);
    const GenerateResult& r = (*both)[i];
    EXPECT_EQ(r.document_cache.tokens_seen, 150);
    EXPECT_EQ(r.document_cache.slots_held, 2 * 40);
    // Question appended whole; snapkv does not evict while decoding.
    const int64_t q = static_cast<int64_t>(questions[i].size());
    EXPECT_EQ(r.cache.slots_held, 2 * (40 + q + 5));
    // The same by hand: prefill the document, append the question
    // uncompressed, decode greedily.
    auto cache = engine.NewCache();
    std::vector<float> logits;
    ASSERT_TRUE(engine.Prefill(doc, LogitsFor::kLast, **cache, &logits).ok());
    ASSERT_TRUE(engine.PrefillQuestion(questions[i], LogitsFor::kLast, **cache, &logits).ok());
    EXPECT_EQ((*cache)->View(0).length, 40 + q);
  }
}

TEST(CacheModelTest, QuestionAwareCompressesTheQuestionWithTheDocument) {
  auto model = Load("llama3_f32");
  ASSERT_NE(model, nullptr);
  const EngineOptions o = Options("slots: 40 question_aware: true snapkv { window: 8 }", 32);
  Engine engine(*model, o);
  GenerateOptions g;
  g.max_new_tokens = 4;
  g.stop_at_eos = false;
  const std::vector<int32_t> doc = Ids(150, 4), question = Ids(12, 7);
  auto r = engine.Answer(doc, {question}, g);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ((*r)[0].cache.tokens_seen, 150 + 12 + 3);
  EXPECT_EQ((*r)[0].cache.slots_held, 2 * (40 + 3));  // question compressed in
  // The question is the observation window: its 8 last tokens are held.
  auto cache = engine.NewCache();
  ASSERT_TRUE(engine.Prefill(doc, LogitsFor::kNone, **cache, nullptr).ok());
  std::vector<float> logits;
  ASSERT_TRUE(engine.PrefillQuestion(question, LogitsFor::kLast, **cache, &logits).ok());
  const LayerView v = (*cache)->View(1);
  ASSERT_EQ(v.length, 40);
  for (int i = 0; i < 8; ++i) EXPECT_EQ(v.positions[40 - 8 + i], 162 - 8 + i);
  EXPECT_EQ((*r)[0].tokens.size(), 4u);
  // Answer puts the question in one chunk with the document's last 20
  // tokens (chunk 32), so that chunk is compressed once with its votes.
  auto aligned = engine.NewCache();
  ASSERT_TRUE(engine.Prefill(std::vector<int32_t>(doc.begin(), doc.begin() + 130),
                             LogitsFor::kNone, **aligned, nullptr).ok());
  std::vector<int32_t> last(doc.begin() + 130, doc.end());
  last.insert(last.end(), question.begin(), question.end());
  ASSERT_TRUE(engine.PrefillQuestion(last, LogitsFor::kLast, **aligned, &logits).ok());
  EXPECT_EQ(Argmax(logits.data(), 256), (*r)[0].tokens[0]);
  EXPECT_EQ((*r)[0].document_cache.tokens_seen, 130);
}

TEST(CacheModelTest, ScoreUnderCompressionReportsStats) {
  auto model = Load("llama3_f32");
  ASSERT_NE(model, nullptr);
  const EngineOptions o = Options("slots: 32 h2o {}", 16);
  Engine engine(*model, o);
  auto r = engine.Score(Ids(100, 8));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->logprobs.size(), 99u);
  EXPECT_TRUE(std::isfinite(r->perplexity));
  EXPECT_EQ(r->cache.tokens_seen, 99);
  EXPECT_EQ(r->cache.slots_held, 2 * 32);
}

TEST(CacheModelTest, BadCacheConfigFailsBeforeWork) {
  auto model = Load("llama3_f32");
  ASSERT_NE(model, nullptr);
  // The model has 2 layers.
  const EngineOptions o = Options("layer_slots: 32 snapkv { window: 8 }", 16);
  Engine engine(*model, o);
  auto r = engine.Answer(Ids(10, 1), {}, GenerateOptions());
  ASSERT_FALSE(r.ok());
  EXPECT_NE(std::string(r.status().message()).find("model has 2 layers"), std::string::npos);
  EXPECT_FALSE(engine.Score(Ids(10, 1)).ok());
}

}  // namespace
}  // namespace kvfold
