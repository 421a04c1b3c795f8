// Batched decode (many sequences, one forward per step) against the
// single-sequence path and against transformers:
// - teacher-forced batched decode steps of the golden sequences give
//   transformers' logits, and equal one-sequence Decode steps;
// - AnswerBatch gives what Answer gives per request (tokens, logits of
//   every step, stats) for compressing policies that act in decode, batch
//   sizes 1, 3 and larger than the number of answers, greedy and sampled;
// - a failing request (bad input, an error in its prefill or its decode)
//   gets its own error while the others' results are unchanged;
// - tensor parallelism (in-process thread group, TP = 2) equals TP = 1.
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "cache/policies.h"
#include "gtest/gtest.h"
#include "parallel/thread_group.h"
#include "runtime/engine.h"
#include "tests/golden_io.h"

namespace kvfold {
namespace {

constexpr int64_t kVocab = 256;  // of every golden checkpoint

// max |got - want| / max |want| (golden_io.h) of logits [rows, vocab].
double RelDiff(absl::Span<const float> got, absl::Span<const float> want,
               size_t vocab) {
  if (got.size() != want.size() || want.empty() || want.size() % vocab != 0) {
    return INFINITY;
  }
  std::vector<std::vector<float>> rows;
  for (size_t i = 0; i < want.size(); i += vocab) {
    rows.emplace_back(want.begin() + i, want.begin() + i + vocab);
  }
  return NormalisedError(std::vector<float>(got.begin(), got.end()), rows);
}

std::vector<int32_t> Ids(int64_t n, int64_t seed, int64_t vocab = kVocab) {
  std::vector<int32_t> ids(n);
  for (int64_t i = 0; i < n; ++i) ids[i] = int32_t((i * 37 + seed * 101 + 11) % vocab);
  return ids;
}

std::unique_ptr<LlamaModel> Load(const std::string& name, Communicator* tp = nullptr) {
  LoadOptions o;
  o.tp = tp;
  auto m = LlamaModel::Load("tests/golden/" + name, o);
  EXPECT_TRUE(m.ok()) << m.status();
  return m.ok() ? std::move(*m) : nullptr;
}

EngineOptions Options(const std::string& cache, int batch, int64_t chunk = 16) {
  EngineOptions o;
  o.threads = 2;
  o.prefill_chunk = chunk;
  o.batch = batch;
  auto c = ParseCacheConfig(cache, "batch_decode_test");
  EXPECT_TRUE(c.ok()) << c.status();
  if (c.ok()) o.cache = *c;
  return o;
}

// ---- Teacher-forced batched steps vs transformers -------------------------

class GoldenBatchTest : public ::testing::TestWithParam<Fixture> {};

TEST_P(GoldenBatchTest, BatchedStepsMatchTransformers) {
  const std::string dir = std::string("tests/golden/") + GetParam().name;
  auto model = Load(GetParam().name);
  ASSERT_NE(model, nullptr);
  const std::vector<Sequence> golden = ReadGolden(dir + "/golden.json");
  // Every golden sequence twice, after prefixes of different lengths, so the
  // rows of one step sit at different positions and leave at different steps.
  struct Row {
    const Sequence* seq;
    int64_t prefix;
    std::unique_ptr<KvCache> batched, alone;
    std::vector<float> got, one;  // logits of positions [prefix - 1, len)
  };
  Engine engine(*model, Options("", 8, 7));
  std::vector<Row> rows;
  for (const Sequence& seq : golden) {
    for (int64_t prefix : {int64_t{1}, int64_t{5}}) {
      Row r{&seq, prefix, nullptr, nullptr, {}, {}};
      std::vector<float> logits;
      const absl::Span<const int32_t> head(seq.ids.data(), prefix);
      for (std::unique_ptr<KvCache>* c : {&r.batched, &r.alone}) {
        auto made = engine.NewCache();
        ASSERT_TRUE(made.ok()) << made.status();
        *c = std::move(*made);
        ASSERT_TRUE(engine.Prefill(head, LogitsFor::kAll, **c, &logits).ok());
      }
      // The prefix's own logits come from prefill; keep the last row.
      r.got.assign(logits.end() - kVocab, logits.end());
      r.one = r.got;
      rows.push_back(std::move(r));
    }
  }
  std::vector<float> logits, one;
  for (int64_t step = 0;; ++step) {
    std::vector<int32_t> tokens;
    std::vector<KvCache*> caches;
    std::vector<Row*> in;
    for (Row& r : rows) {
      const int64_t pos = r.prefix + step;
      if (pos >= int64_t(r.seq->ids.size())) continue;
      tokens.push_back(r.seq->ids[pos]);
      caches.push_back(r.batched.get());
      in.push_back(&r);
    }
    if (in.empty()) break;
    ASSERT_TRUE(engine.DecodeBatch(tokens, caches, &logits).ok());
    ASSERT_EQ(logits.size(), in.size() * kVocab);
    for (size_t b = 0; b < in.size(); ++b) {
      in[b]->got.insert(in[b]->got.end(), logits.begin() + b * kVocab,
                        logits.begin() + (b + 1) * kVocab);
      ASSERT_TRUE(engine.Decode(tokens[b], *in[b]->alone, &one).ok());
      in[b]->one.insert(in[b]->one.end(), one.begin(), one.end());
    }
  }
  for (const Row& r : rows) {
    const std::vector<std::vector<float>> want(r.seq->logits.begin() + r.prefix - 1,
                                               r.seq->logits.end());
    ASSERT_EQ(r.got.size(), want.size() * kVocab);
    const double vs_hf = NormalisedError(r.got, want);
    const double vs_one = RelDiff(r.got, r.one, kVocab);
    std::printf("%s len %zu prefix %lld, %zu rows: batched decode vs transformers %.2e, "
                "vs one-row decode %.2e\n",
                GetParam().name, r.seq->ids.size(), (long long)r.prefix, rows.size(),
                vs_hf, vs_one);
    EXPECT_LE(vs_hf, 1e-4) << "prefix " << r.prefix;
    EXPECT_LE(vs_one, 1e-5) << "prefix " << r.prefix;
  }
}

INSTANTIATE_TEST_SUITE_P(Checkpoints, GoldenBatchTest,
                         ::testing::ValuesIn(kGoldenCheckpoints),
                         [](const auto& info) { return std::string(info.param.name); });

// ---- AnswerBatch vs Answer ------------------------------------------------

// What a run gave for one request: its results, and the logits of every
// token each answer sampled ([answer][step][vocab], through on_logits).
struct Outcome {
  absl::StatusOr<std::vector<GenerateResult>> results;
  std::vector<std::vector<std::vector<float>>> logits;
};

// Points the request's on_logits at `out`.
void Capture(GenerateOptions& o, Outcome& out) {
  o.on_logits = [&out](size_t answer, absl::Span<const float> logits) {
    if (out.logits.size() <= answer) out.logits.resize(answer + 1);
    out.logits[answer].emplace_back(logits.begin(), logits.end());
  };
}

// Each request alone through Answer on an engine of batch 1.
std::vector<Outcome> OneByOne(const LlamaModel& model, const EngineOptions& options,
                              const std::vector<AnswerRequest>& requests) {
  EngineOptions o = options;
  o.batch = 1;
  Engine engine(model, o);
  std::vector<Outcome> out(requests.size());
  for (size_t i = 0; i < requests.size(); ++i) {
    GenerateOptions g = requests[i].options;
    Capture(g, out[i]);
    out[i].results = engine.Answer(requests[i].document, requests[i].questions, g);
  }
  return out;
}

std::vector<Outcome> Together(const LlamaModel& model, const EngineOptions& options,
                              std::vector<AnswerRequest> requests) {
  std::vector<Outcome> out(requests.size());
  for (size_t i = 0; i < requests.size(); ++i) Capture(requests[i].options, out[i]);
  Engine engine(model, options);
  std::vector<absl::StatusOr<std::vector<GenerateResult>>> r = engine.AnswerBatch(requests);
  EXPECT_EQ(r.size(), requests.size());
  for (size_t i = 0; i < r.size() && i < out.size(); ++i) out[i].results = std::move(r[i]);
  return out;
}

// Same tokens and stats; the logits of every step within `tolerance`.
void ExpectSame(const Outcome& got, const Outcome& want, const std::string& what,
                double tolerance = 1e-5) {
  ASSERT_EQ(got.results.ok(), want.results.ok()) << what << ": " << got.results.status();
  if (!want.results.ok()) {
    EXPECT_EQ(got.results.status(), want.results.status()) << what;
    return;
  }
  ASSERT_EQ(got.results->size(), want.results->size()) << what;
  ASSERT_EQ(got.logits.size(), want.logits.size()) << what;
  double worst = 0;
  for (size_t a = 0; a < want.results->size(); ++a) {
    const GenerateResult &g = (*got.results)[a], &w = (*want.results)[a];
    const std::string at = what + " answer " + std::to_string(a);
    EXPECT_EQ(g.tokens, w.tokens) << at;
    EXPECT_EQ(g.stopped_at_eos, w.stopped_at_eos) << at;
    EXPECT_EQ(g.prompt_tokens, w.prompt_tokens) << at;
    EXPECT_EQ(g.document_cache.tokens_seen, w.document_cache.tokens_seen) << at;
    EXPECT_EQ(g.document_cache.slots_held, w.document_cache.slots_held) << at;
    EXPECT_EQ(g.cache.tokens_seen, w.cache.tokens_seen) << at;
    EXPECT_EQ(g.cache.slots_held, w.cache.slots_held) << at;
    EXPECT_GT(g.decode_seconds, 0) << at;
    ASSERT_EQ(g.tokens.size(), got.logits[a].size()) << at;
    ASSERT_EQ(w.tokens.size(), want.logits[a].size()) << at;
    for (size_t t = 0; t < w.tokens.size() && t < g.tokens.size(); ++t) {
      const double d = RelDiff(got.logits[a][t], want.logits[a][t],
                               want.logits[a][t].size());
      worst = std::max(worst, d);
      EXPECT_LE(d, tolerance) << at << " step " << t;
    }
  }
  std::printf("%s: logits vs Answer %.2e\n", what.c_str(), worst);
}

// Three documents of different lengths: two questions (greedy), three
// questions (sampled), none (continue the document; stops at eos).
std::vector<AnswerRequest> Requests(const std::vector<std::vector<int32_t>>& docs) {
  std::vector<AnswerRequest> r(3);
  r[0].document = docs[0];
  r[0].questions = {Ids(5, 20), Ids(9, 21)};
  r[0].options.max_new_tokens = 12;
  r[0].options.stop_at_eos = false;
  r[1].document = docs[1];
  r[1].questions = {Ids(3, 22), Ids(7, 23), Ids(4, 24)};
  r[1].options.max_new_tokens = 7;
  r[1].options.stop_at_eos = false;
  r[1].options.sampling.temperature = 0.9;
  r[1].options.sampling.top_k = 40;
  r[1].options.seed = 7;
  r[2].document = docs[2];
  r[2].options.max_new_tokens = 9;
  return r;
}

class AnswerBatchVsAnswerTest : public ::testing::TestWithParam<const char*> {};

TEST_P(AnswerBatchVsAnswerTest, EqualsAnswerPerRequest) {
  auto model = Load(GetParam());
  ASSERT_NE(model, nullptr);
  const std::vector<std::vector<int32_t>> docs = {Ids(70, 1), Ids(33, 2), Ids(101, 3)};
  // Budgets well under the documents; question-agnostic unless said.
  for (const char* cache :
       {"", "slots: 24 streaming {}", "slots: 24 h2o {}", "slots: 24 snapkv { window: 8 }",
        "slots: 24 kvmerger {}", "slots: 24 question_aware: true h2o {}"}) {
    const EngineOptions options = Options(cache, 1);
    const std::vector<AnswerRequest> requests = Requests(docs);
    const std::vector<Outcome> want = OneByOne(*model, options, requests);
    for (const Outcome& w : want) ASSERT_TRUE(w.results.ok()) << w.results.status();
    if (std::string(cache).find("slots") != std::string::npos) {
      // The budget binds: the documents were compressed.
      EXPECT_LT((*want[2].results)[0].document_cache.slots_held, 2 * 101) << cache;
    }
    for (int batch : {1, 3, 64}) {
      const std::vector<Outcome> got = Together(*model, Options(cache, batch), requests);
      for (size_t i = 0; i < requests.size(); ++i) {
        ExpectSame(got[i], want[i],
                   std::string(GetParam()) + " [" + cache + "] batch " +
                       std::to_string(batch) + " request " + std::to_string(i));
      }
    }
  }
}

// GQA (one KV head), biases with a tied head, and plain Llama 3.
INSTANTIATE_TEST_SUITE_P(Checkpoints, AnswerBatchVsAnswerTest,
                         ::testing::Values("llama3_f32", "mistral_gqa_f32",
                                           "qwen2_bias_tied_bf16"));

TEST(AnswerBatchErrorTest, FailingRequestsGetTheirOwnError) {
  auto model = Load("llama3_f32");
  ASSERT_NE(model, nullptr);
  const std::vector<std::vector<int32_t>> docs = {Ids(70, 1), Ids(33, 2), Ids(101, 3)};
  std::vector<int32_t> bad_doc = Ids(40, 4);
  bad_doc[17] = kVocab;
  std::vector<AnswerRequest> good = Requests(docs);
  std::vector<AnswerRequest> requests(6);
  requests[0] = good[0];
  requests[1].document = {};  // empty
  requests[2] = good[1];
  requests[3].document = bad_doc;  // fails in its prefill
  // Its first question starts decoding before the second fails in prefill.
  requests[4].document = docs[0];
  requests[4].questions = {Ids(4, 30), {5, int32_t(kVocab) + 3}};
  requests[4].options.max_new_tokens = 20;
  requests[5] = good[2];
  for (const char* cache :
       {"slots: 24 h2o {}", "slots: 24 question_aware: true snapkv { window: 8 }"}) {
    const std::vector<Outcome> want = OneByOne(*model, Options(cache, 1), requests);
    for (int batch : {1, 3}) {
      const std::vector<Outcome> got = Together(*model, Options(cache, batch), requests);
      const std::string what = std::string(cache) + " batch " + std::to_string(batch);
      EXPECT_EQ(got[1].results.status().code(), absl::StatusCode::kInvalidArgument);
      EXPECT_EQ(got[1].results.status().message(), "empty prompt");
      for (size_t i : {3, 4}) {
        ASSERT_FALSE(got[i].results.ok()) << what << " request " << i;
        EXPECT_NE(got[i].results.status().message().find("outside the vocabulary"),
                  absl::string_view::npos)
            << got[i].results.status();
      }
      for (size_t i = 0; i < requests.size(); ++i) {
        ExpectSame(got[i], want[i], what + " request " + std::to_string(i));
      }
    }
  }
}

// A request that runs past the model's sliding window fails mid-decode; the
// rows beside it go on.
TEST(AnswerBatchErrorTest, FailureDuringDecodeLeavesTheOthers) {
  ModelConfig c;
  c.vocab_size = 64, c.hidden_size = 32, c.intermediate_size = 64;
  c.num_layers = 2, c.num_heads = 4, c.num_kv_heads = 2, c.head_dim = 8;
  c.rope.theta = 10000.0;
  c.rope.rotary_dim = 8;
  c.max_position_embeddings = 4096;
  c.sliding_window = 48;
  auto model = LlamaModel::Random(c, 3);
  ASSERT_TRUE(model.ok()) << model.status();
  std::vector<AnswerRequest> requests(3);
  const std::vector<int32_t> docs[] = {Ids(10, 1, 64), Ids(40, 2, 64), Ids(20, 3, 64)};
  for (int i = 0; i < 3; ++i) {
    requests[i].document = docs[i];
    requests[i].options.max_new_tokens = 16;
    requests[i].options.stop_at_eos = false;
  }
  const std::vector<Outcome> want = OneByOne(**model, Options("slots: 16 h2o {}", 1), requests);
  ASSERT_FALSE(want[1].results.ok());
  EXPECT_NE(want[1].results.status().message().find("sliding_window"), absl::string_view::npos);
  for (int batch : {1, 2, 3}) {
    const std::vector<Outcome> got =
        Together(**model, Options("slots: 16 h2o {}", batch), requests);
    for (size_t i = 0; i < 3; ++i) {
      ExpectSame(got[i], want[i], "batch " + std::to_string(batch) + " request " +
                                      std::to_string(i));
    }
  }
}

TEST(AnswerBatchTest, PerRequestCacheConfig) {
  auto model = Load("mistral_gqa_f32");
  ASSERT_NE(model, nullptr);
  const std::vector<std::vector<int32_t>> docs = {Ids(70, 1), Ids(33, 2), Ids(101, 3)};
  std::vector<AnswerRequest> requests = Requests(docs);
  auto h2o = ParseCacheConfig("slots: 20 h2o {}", "test");
  auto snap = ParseCacheConfig("slots: 24 question_aware: true snapkv { window: 8 }", "test");
  ASSERT_TRUE(h2o.ok() && snap.ok());
  requests[0].cache = &*h2o;
  requests[1].cache = &*snap;  // requests[2]: the engine's (full)
  const std::vector<Outcome> got = Together(*model, Options("", 4), requests);
  const char* configs[] = {"slots: 20 h2o {}",
                           "slots: 24 question_aware: true snapkv { window: 8 }", ""};
  for (size_t i = 0; i < requests.size(); ++i) {
    std::vector<AnswerRequest> one = {requests[i]};
    one[0].cache = nullptr;
    const std::vector<Outcome> want = OneByOne(*model, Options(configs[i], 1), one);
    ExpectSame(got[i], want[0], std::string("per-request [") + configs[i] + "]");
  }
  EXPECT_EQ((*got[0].results)[0].document_cache.slots_held, 2 * 20);
  EXPECT_EQ((*got[2].results)[0].document_cache.slots_held, 2 * 101);
}

TEST(AnswerBatchTest, PrefillProgressAfterEveryChunk) {
  auto model = Load("llama3_f32");
  ASSERT_NE(model, nullptr);
  for (bool aware : {false, true}) {
    Engine engine(*model, Options(aware ? "slots: 24 question_aware: true snapkv { window: 8 }"
                                        : "slots: 24 snapkv { window: 8 }",
                                  2));
    std::vector<std::pair<int64_t, int64_t>> calls;
    GenerateOptions g;
    g.max_new_tokens = 2;
    g.on_prefill = [&calls](int64_t done, int64_t total) { calls.emplace_back(done, total); };
    auto r = engine.Answer(Ids(70, 1), {Ids(5, 2)}, g);
    ASSERT_TRUE(r.ok()) << r.status();
    // Chunks of 16; question-aware puts the document's last 11 tokens in
    // one chunk with the 5 of the question.
    const std::vector<std::pair<int64_t, int64_t>> want =
        aware ? std::vector<std::pair<int64_t, int64_t>>{{16, 70}, {32, 70}, {48, 70},
                                                         {59, 70}, {70, 70}}
              : std::vector<std::pair<int64_t, int64_t>>{{16, 70}, {32, 70}, {48, 70},
                                                         {64, 70}, {70, 70}};
    EXPECT_EQ(calls, want) << (aware ? "aware" : "agnostic");
  }
}

TEST(AnswerBatchTest, RefusesBadBatchesClearly) {
  auto model = Load("llama3_f32");
  ASSERT_NE(model, nullptr);
  EngineOptions o = Options("", 0);
  const absl::Status bad = ValidateEngineOptions(o);
  EXPECT_EQ(bad.message(), "batch must be >= 1, got 0");
  Engine engine(*model, o);
  AnswerRequest r;
  const std::vector<int32_t> doc = Ids(10, 1);
  r.document = doc;
  auto out = engine.AnswerBatch({&r, 1});
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].status(), bad);
  // One cache twice in a step would lose a key: refused.
  Engine ok(*model, Options("", 2));
  auto cache = ok.NewCache();
  ASSERT_TRUE(cache.ok());
  std::vector<float> logits;
  ASSERT_TRUE(ok.Prefill(doc, LogitsFor::kLast, **cache, &logits).ok());
  KvCache* const twice[] = {cache->get(), cache->get()};
  const int32_t tokens[] = {1, 2};
  EXPECT_FALSE(ok.DecodeBatch(tokens, twice, &logits).ok());
  EXPECT_TRUE(ok.AnswerBatch({}).empty());
}

// ---- Tensor parallelism ---------------------------------------------------

TEST(AnswerBatchTpTest, TwoRanksEqualOne) {
  const std::vector<std::vector<int32_t>> docs = {Ids(70, 1), Ids(33, 2), Ids(101, 3)};
  // llama3: KV heads split over the ranks; mistral_gqa: one KV head,
  // replicated (its column sums are shared between the ranks).
  for (const char* name : {"llama3_f32", "mistral_gqa_f32"}) {
    for (const char* cache : {"slots: 24 h2o {}", "slots: 24 kvmerger {}"}) {
      auto one = Load(name);
      ASSERT_NE(one, nullptr);
      const std::vector<Outcome> want = Together(*one, Options(cache, 3), Requests(docs));
      ThreadGroup group(2);
      std::vector<std::vector<Outcome>> got(2);
      std::vector<std::thread> ranks;
      for (int r = 0; r < 2; ++r) {
        ranks.emplace_back([&, r] {
          auto model = Load(name, group.rank(r));
          if (model == nullptr) return;
          EngineOptions o = Options(cache, 3);
          o.threads = 1;
          got[r] = Together(*model, o, Requests(docs));
        });
      }
      for (std::thread& t : ranks) t.join();
      for (int r = 0; r < 2; ++r) {
        ASSERT_EQ(got[r].size(), want.size());
        for (size_t i = 0; i < want.size(); ++i) {
          ExpectSame(got[r][i], want[i],
                     std::string(name) + " [" + cache + "] TP=2 rank " + std::to_string(r) +
                         " request " + std::to_string(i));
        }
      }
    }
  }
}

}  // namespace
}  // namespace kvfold
