// Sequence parallelism under mpirun (mpi_gtest.sh runs it with 2 and 4 ranks,
// MPI communicator, CPU). Every rank loads the golden checkpoints with the
// world as its SP group (and, on 4 ranks, also as a 2 x 2 TP x SP mesh) and
// a whole model with no group as the reference, and checks
// - exactness: with the Full policy, no anchor and passing blocks that
//   carry each rank's whole block, greedy answers equal transformers'
//   (golden fixtures) and SP = 1's, and every step's logits equal SP = 1's;
//   with a question too;
// - a one-rank block prefill (layer after layer) leaves the same cache as
//   the ordinary chunked prefill, for every compressing policy;
// - with compression (default anchor, default passing blocks): results are
//   deterministic, and the question and decode steps equal one rank's
//   attention over the union of the ranks' final caches;
// - bad input (a document too short for the ranks, an anchor longer than a
//   block, passing blocks larger than the cache) is refused with a clear
//   message on every rank;
// - question-aware: the question's rows observe each block's last chunk.
//   Their votes (the policy's column sums) equal transformers' attention
//   (golden, tools/golden/make_sp_question_golden.py); with the Full policy
//   the answers are those of question-agnostic SP, to the bit; with SnapKV
//   the question changes what is kept; deterministic, and decode equals one
//   rank over the union of the caches.
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "cache/compressed_cache.h"
#include "cache/compressors.h"
#include "cache/policies.h"
#include "gtest/gtest.h"
#include <nlohmann/json.hpp>
#include "parallel/mesh.h"
#include "runtime/engine.h"
#include "tests/golden_io.h"
#include "tests/mpi_gtest_main.h"

namespace kvfold {
namespace {

EngineOptions Options(const std::string& cache, int64_t anchor, int64_t passing) {
  EngineOptions o;
  o.threads = 1;
  o.prefill_chunk = 7;
  auto parsed = ParseCacheConfig(cache, "sp_test");
  EXPECT_TRUE(parsed.ok()) << parsed.status();
  if (parsed.ok()) o.cache = *parsed;
  o.sp_anchor = anchor;
  o.sp_passing_slots = passing;
  return o;
}

struct Answered {
  std::vector<int32_t> tokens;
  std::vector<float> logits;  // every sampled step's, concatenated
  absl::Status status;
  CacheStats document_cache, cache;  // the first answer's
};

Answered Ask(const LlamaModel& model, const EngineOptions& o, absl::Span<const int32_t> doc,
             const std::vector<std::vector<int32_t>>& questions, int64_t new_tokens) {
  Engine engine(model, o);
  GenerateOptions g;
  g.max_new_tokens = new_tokens;
  g.stop_at_eos = false;
  Answered a;
  g.on_logits = [&a](size_t, absl::Span<const float> l) {
    a.logits.insert(a.logits.end(), l.begin(), l.end());
  };
  auto r = engine.Answer(doc, questions, g);
  a.status = r.status();
  if (r.ok()) {
    a.tokens = (*r)[0].tokens;
    a.document_cache = (*r)[0].document_cache;
    a.cache = (*r)[0].cache;
  }
  return a;
}

// The TP and SP groups of this rank in a one-replica mesh (null for a
// degree of 1).
struct Groups {
  std::unique_ptr<Communicator> tp, sp;
};
Groups Split(int tp) {
  Communicator& world = TestWorld();
  Groups g;
  const int tp_rank = world.rank() % tp, sp_rank = world.rank() / tp;
  auto tp_group = world.Split(sp_rank, tp_rank);
  auto sp_group = world.Split(tp_rank, sp_rank);
  EXPECT_TRUE(tp_group.ok() && sp_group.ok());
  if (tp > 1) g.tp = std::move(*tp_group);
  if (world.size() / tp > 1) g.sp = std::move(*sp_group);
  return g;
}

class SpTest : public ::testing::TestWithParam<Fixture> {};

TEST_P(SpTest, FullPolicyEqualsOneRankAndTransformers) {
  Communicator& world = TestWorld();
  const std::string dir = std::string("tests/golden/") + GetParam().name;
  auto config = ModelConfig::FromFile(dir + "/config.json");
  ASSERT_TRUE(config.ok()) << config.status();
  auto one = LlamaModel::Load(dir);
  ASSERT_TRUE(one.ok()) << one.status();
  const EngineOptions full = Options("", /*anchor=*/0, /*passing=*/0);
  for (int tp : {1, 2}) {
    const int sp = world.size() / tp;
    if (sp < 2 || world.size() % tp != 0) continue;
    if (!Mesh::Create(world.size(), world.rank(), {.tp = tp, .sp = sp},
                      {int(config->num_heads), int(config->num_kv_heads),
                       config->intermediate_size})
             .ok()) {
      continue;
    }
    Groups groups = Split(tp);
    LoadOptions lo;
    lo.tp = groups.tp.get();
    lo.sp = groups.sp.get();
    auto model = LlamaModel::Load(dir, lo);
    ASSERT_TRUE(model.ok()) << model.status();
    for (const Sequence& seq : ReadGolden(dir + "/golden.json")) {
      const Answered a = Ask(**model, full, seq.ids, {}, 16);
      const Answered b = Ask(**one, full, seq.ids, {}, 16);
      ASSERT_TRUE(a.status.ok()) << a.status;
      ASSERT_TRUE(b.status.ok()) << b.status;
      const double diff = MaxRelDiff(a.logits, b.logits);
      std::printf("rank %d %s TP=%d SP=%d len %zu: answer logits vs one rank %.2e\n",
                  world.rank(), GetParam().name, tp, sp, seq.ids.size(), diff);
      EXPECT_LE(diff, 1e-5);
      EXPECT_EQ(a.tokens, seq.greedy) << "transformers' greedy answer";
      EXPECT_EQ(a.tokens, b.tokens);

      // The document over the ranks, then a question (phase 2 for all of it).
      const size_t cut = seq.ids.size() * 3 / 4;
      const std::vector<int32_t> doc(seq.ids.begin(), seq.ids.begin() + cut);
      const std::vector<std::vector<int32_t>> question = {
          std::vector<int32_t>(seq.ids.begin() + cut, seq.ids.end())};
      const Answered qa = Ask(**model, full, doc, question, 6);
      const Answered qb = Ask(**one, full, doc, question, 6);
      ASSERT_TRUE(qa.status.ok()) << qa.status;
      EXPECT_LE(MaxRelDiff(qa.logits, qb.logits), 1e-5);
      EXPECT_EQ(qa.tokens, qb.tokens);
      // The group's caches together hold what one rank's does.
      for (auto [x, y] : {std::pair{qa.document_cache, qb.document_cache},
                          std::pair{qa.cache, qb.cache}}) {
        EXPECT_EQ(x.tokens_seen, y.tokens_seen);
        EXPECT_EQ(x.slots_held, y.slots_held);
        EXPECT_DOUBLE_EQ(x.compression_ratio, 1.0);
      }
      EXPECT_EQ(qa.document_cache.tokens_seen, int64_t(cut));
      // Question-aware: the question's rows observe every block but never
      // enter a cache, so without compression nothing changes, to the bit.
      const Answered aware =
          Ask(**model, Options("question_aware: true", 0, 0), doc, question, 6);
      ASSERT_TRUE(aware.status.ok()) << aware.status;
      EXPECT_EQ(aware.logits, qa.logits);
      EXPECT_EQ(aware.tokens, qa.tokens);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Checkpoints, SpTest, ::testing::ValuesIn(kGoldenCheckpoints),
                         [](const auto& info) { return std::string(info.param.name); });

const char* const kPolicies[] = {
    "slots: 24 h2o {}",       "slots: 24 snapkv { window: 4 }", "slots: 24 streaming {}",
    "slots: 24 kvmerger {}",  "slots: 24 pyramidkv { window: 4 }",
};

const char* const kAware = " question_aware: true";
using Tokens = std::vector<int32_t>;

std::vector<int32_t> Document(size_t n) {
  std::vector<int32_t> doc(n);
  for (size_t i = 0; i < n; ++i) doc[i] = int32_t((i * 37 + 11) % 256);
  return doc;
}

TEST(SpBlockTest, OneRankBlockPrefillEqualsChunkedPrefill) {
  auto one = LlamaModel::Load("tests/golden/llama3_f32");
  ASSERT_TRUE(one.ok()) << one.status();
  const std::vector<int32_t> doc = Document(150);
  for (const char* policy : kPolicies) {
    const EngineOptions o = Options(policy, 0, 0);
    Engine engine(**one, o);
    auto chunked = engine.NewCache();
    auto layered = engine.NewCache();
    ASSERT_TRUE(chunked.ok() && layered.ok());
    ASSERT_TRUE(engine.Prefill(doc, LogitsFor::kNone, **chunked, nullptr).ok());
    BlockPrefill p;
    p.block = doc;
    p.chunk = o.prefill_chunk;
    ForwardScratch scratch;
    ASSERT_TRUE((*one)->PrefillBlock(engine.stream(), p, **layered, scratch).ok());
    for (int l = 0; l < (*one)->config().num_layers; ++l) {
      const LayerView a = (*chunked)->View(l), b = (*layered)->View(l);
      ASSERT_EQ(a.length, b.length) << policy;
      const int64_t d = (*one)->config().head_dim;
      for (int64_t g = 0; g < (*one)->tp_slice().kv_heads; ++g) {
        for (int64_t j = 0; j < a.length; ++j) {
          ASSERT_EQ(a.positions[g * a.stride + j], b.positions[g * b.stride + j]) << policy;
          for (int64_t k = 0; k < d; ++k) {
            ASSERT_NEAR(a.keys[(g * a.stride + j) * d + k], b.keys[(g * b.stride + j) * d + k],
                        1e-4)
                << policy;
          }
        }
      }
    }
  }
}

// Passes a policy's column sums on to it and keeps a copy of each layer's.
class Recorder : public Compressor {
 public:
  explicit Recorder(std::shared_ptr<const Compressor> policy) : policy_(std::move(policy)) {}
  int64_t ColumnSumQueries(int64_t chunk) const override {
    return policy_->ColumnSumQueries(chunk);
  }
  bool AccumulatesScores() const override { return policy_->AccumulatesScores(); }
  absl::Status Compress(LayerState& layer, const CompressRequest& r) const override {
    const int64_t n = r.shape->kv_heads * layer.slots.length;
    votes[r.layer].assign(r.col_sums, r.col_sums + n);
    return policy_->Compress(layer, r);
  }
  mutable std::map<int, std::vector<float>> votes;  // [kv_heads, length] per layer

 private:
  std::shared_ptr<const Compressor> policy_;
};

// One rank (no SP group), a document that fits one chunk: the block's rows
// and the question's see exact keys, so the votes the policy gets are
// transformers' attention probabilities over [document ; question],
// renormalised over the columns the cache holds (the block, after the
// anchor) and summed over the voting rows and each KV head's query heads.
TEST(SpQuestionTest, VotesEqualTransformers) {
  for (const char* name : {"llama3_f32", "mistral_gqa_f32"}) {
    std::ifstream in(std::string("tests/golden/sp_question/") + name + ".json");
    ASSERT_TRUE(in.good()) << name;
    const nlohmann::json golden = nlohmann::json::parse(in);
    const Tokens doc = golden["document"].get<Tokens>();
    const Tokens question = golden["question"].get<Tokens>();
    // [layer][query head][row][document column]
    const auto probs = golden["probs"].get<std::vector<std::vector<std::vector<std::vector<double>>>>>();
    auto model = LlamaModel::Load(std::string("tests/golden/") + name);
    ASSERT_TRUE(model.ok()) << model.status();
    const int64_t nd = int64_t(doc.size()), nq = int64_t(question.size());
    const int64_t kv_heads = (*model)->config().num_kv_heads;
    const int64_t group = (*model)->config().num_heads / kv_heads;
    Engine engine(**model, Options("", 0, 0));
    struct Vote {
      const char* policy;
      std::shared_ptr<const Compressor> compressor;
      int64_t voters;  // the last rows of [block ; question] that vote
    };
    for (int64_t anchor : {0, 12}) {
      const int64_t block = nd - anchor;
      for (const Vote& v : {Vote{"snapkv", MakeSnapKVCompressor(4, 5), 4},
                            Vote{"h2o", MakeH2OCompressor(8, false), block + nq}}) {
        auto recorder = std::make_shared<Recorder>(v.compressor);
        const int layers = (*model)->config().num_layers;
        CompressedKvCache cache((*model)->cache_shape(engine.stream()),
                                std::vector<int64_t>(layers, 16), 64, recorder);
        BlockPrefill p;
        p.anchor = absl::MakeConstSpan(doc).subspan(0, anchor);
        p.block = absl::MakeConstSpan(doc).subspan(anchor);
        p.block_begin = anchor;
        p.chunk = 64;
        p.question = question;
        p.question_begin = nd;
        ForwardScratch scratch;
        ASSERT_TRUE((*model)->PrefillBlock(engine.stream(), p, cache, scratch).ok());
        EXPECT_EQ(cache.tokens_seen(), block) << "the question must not enter the cache";
        double worst = 0;
        for (int l = 0; l < layers; ++l) {
          ASSERT_EQ(recorder->votes[l].size(), size_t(kv_heads * block)) << v.policy;
          for (int64_t g = 0; g < kv_heads; ++g) {
            std::vector<double> want(block, 0.0);
            for (int64_t h = g * group; h < (g + 1) * group; ++h) {
              for (int64_t row = nd + nq - v.voters; row < nd + nq; ++row) {
                const std::vector<double>& pr = probs[l][h][row];
                double held = 0;
                for (int64_t j = anchor; j < nd; ++j) held += pr[j];
                for (int64_t j = anchor; j < nd; ++j) want[j - anchor] += pr[j] / held;
              }
            }
            for (int64_t j = 0; j < block; ++j) {
              worst = std::max(worst, std::abs(recorder->votes[l][g * block + j] - want[j]) /
                                          std::max(1.0, want[j]));
            }
          }
        }
        std::printf("%s anchor %lld %s: votes vs transformers %.2e\n", name, (long long)anchor,
                    v.policy, worst);
        EXPECT_LE(worst, 1e-5) << name << " " << v.policy;
      }
    }
  }
}

// Every rank's cache, gathered into one full cache in rank order.
std::unique_ptr<KvCache> Union(const KvCache& mine, int64_t document) {
  Communicator& world = TestWorld();
  const CacheShape& shape = mine.shape();
  auto all = std::make_unique<FullKvCache>(shape);
  const int64_t h = shape.kv_heads, d = shape.head_dim;
  for (int l = 0; l < shape.num_layers; ++l) {
    const LayerView v = mine.View(l);
    // Mine as [length, kv_heads, d] keys, then values, then positions.
    float length = float(v.length);
    EXPECT_TRUE(world.AllReduce(TensorView{&length, DType::kF32, Device::Cpu(), {1}},
                                ReduceOp::kMax).ok());
    const int64_t most = int64_t(length), row = 2 * h * d + 1;
    std::vector<float> packed(most * row + 1, 0.0f), gathered(world.size() * packed.size());
    packed[0] = float(v.length);
    for (int64_t j = 0; j < v.length; ++j) {
      float* r = packed.data() + 1 + j * row;
      for (int64_t g = 0; g < h; ++g) {
        std::copy_n(v.keys + (g * v.stride + j) * d, d, r + g * d);
        std::copy_n(v.values + (g * v.stride + j) * d, d, r + (h + g) * d);
      }
      r[2 * h * d] = float(v.positions[j]);
    }
    EXPECT_TRUE(world.AllGather(
        TensorView{packed.data(), DType::kF32, Device::Cpu(), {int64_t(packed.size())}},
        TensorView{gathered.data(), DType::kF32, Device::Cpu(), {int64_t(gathered.size())}})
                    .ok());
    for (int r = 0; r < world.size(); ++r) {
      const float* p = gathered.data() + r * packed.size();
      const int64_t n = int64_t(p[0]);
      std::vector<float> k(n * h * d), val(n * h * d);
      std::vector<int32_t> pos(n);
      for (int64_t j = 0; j < n; ++j) {
        const float* src = p + 1 + j * row;
        std::copy_n(src, h * d, k.data() + j * h * d);
        std::copy_n(src + h * d, h * d, val.data() + j * h * d);
        pos[j] = int32_t(src[2 * h * d]);
      }
      if (n > 0) {
        EXPECT_TRUE(all->Append(l, k.data(), val.data(), pos.data(), n).ok());
      }
    }
  }
  all->SkipPositions(document - all->tokens_seen());
  return all;
}

TEST(SpCompressedTest, DeterministicAndDecodeEqualsUnionOfCaches) {
  Communicator& world = TestWorld();
  const std::string dir = "tests/golden/llama3_f32";
  LoadOptions lo;
  lo.sp = &world;
  auto model = LlamaModel::Load(dir, lo);
  auto one = LlamaModel::Load(dir);
  ASSERT_TRUE(model.ok() && one.ok());
  const std::vector<int32_t> doc = Document(240);
  const std::vector<int32_t> question = {5, 77, 190, 3, 18};
  std::vector<std::string> policies(std::begin(kPolicies), std::end(kPolicies));
  for (const char* policy : kPolicies) policies.push_back(std::string(policy) + kAware);
  for (const std::string& policy : policies) {
    const bool aware = policy.find(kAware) != std::string::npos;
    const EngineOptions o = Options(policy, -1, 0);
    const Answered a = Ask(**model, o, doc, {question}, 8);
    const Answered b = Ask(**model, o, doc, {question}, 8);
    ASSERT_TRUE(a.status.ok()) << a.status;
    EXPECT_EQ(a.tokens, b.tokens) << policy;
    EXPECT_EQ(a.logits, b.logits) << policy << ": not deterministic";

    // The same steps by hand: SP prefill, then the question and decode
    // steps on the SP group and on one rank over the union of the caches.
    Engine sp_engine(**model, o);
    EngineOptions full = o;
    full.cache = CacheConfig();
    Engine one_engine(**one, full);
    auto cache = sp_engine.NewCache();
    ASSERT_TRUE(cache.ok());
    ASSERT_TRUE(
        sp_engine.PrefillDocument(doc, **cache, nullptr, {}, aware ? question : Tokens{}).ok());
    EXPECT_EQ((*cache)->next_position(), int64_t(doc.size()));
    if (aware) {  // the question's votes changed what some rank keeps
      const EngineOptions agnostic = Options(policy.substr(0, policy.find(kAware)), -1, 0);
      Engine plain(**model, agnostic);
      auto other = plain.NewCache();
      ASSERT_TRUE(other.ok() && plain.PrefillDocument(doc, **other, nullptr).ok());
      float differ = 0;
      for (int l = 0; l < (*one)->config().num_layers; ++l) {
        const LayerView x = (*cache)->View(l), y = (*other)->View(l);
        for (int64_t j = 0; j < std::min(x.length, y.length); ++j) {
          differ = std::max(differ, float(x.positions[j] != y.positions[j]));
        }
      }
      ASSERT_TRUE(world.AllReduce(TensorView{&differ, DType::kF32, Device::Cpu(), {1}},
                                  ReduceOp::kMax).ok());
      if (policy.find("snapkv") != std::string::npos) {
        EXPECT_EQ(differ, 1.0f) << policy << ": the question changed nothing";
      }
    }
    std::unique_ptr<KvCache> all = Union(**cache, int64_t(doc.size()));
    (*cache)->SetPhase(CachePhase::kAppend);
    std::vector<float> got, want;
    ASSERT_TRUE(sp_engine.Prefill(question, LogitsFor::kLast, **cache, &got).ok());
    ASSERT_TRUE(one_engine.Prefill(question, LogitsFor::kLast, *all, &want).ok());
    double worst = MaxRelDiff(got, want);
    // Policies that evict while decoding change the last rank's cache.
    const bool evicts = policy.find("h2o") != std::string::npos ||
                        policy.find("streaming") != std::string::npos;
    for (int step = 0; step < (evicts ? 0 : 4); ++step) {
      const int32_t token = int32_t(std::max_element(want.begin(), want.end()) - want.begin());
      ASSERT_TRUE(sp_engine.Decode(token, **cache, &got).ok());
      ASSERT_TRUE(one_engine.Decode(token, *all, &want).ok());
      worst = std::max(worst, MaxRelDiff(got, want));
    }
    std::printf("rank %d SP=%d %s: %lld slots here, logits vs one rank over the union %.2e\n",
                world.rank(), world.size(), policy.c_str(),
                (long long)(*cache)->Stats().slots_held,
                worst);
    EXPECT_LE(worst, 1e-5) << policy;
  }
}

TEST(SpBadInputTest, ClearErrors) {
  Communicator& world = TestWorld();
  const int sp = world.size();
  LoadOptions lo;
  lo.sp = &world;
  auto model = LlamaModel::Load("tests/golden/llama3_f32", lo);
  ASSERT_TRUE(model.ok());
  auto expect = [](const Answered& a, const std::string& words) {
    EXPECT_FALSE(a.status.ok()) << words;
    EXPECT_NE(std::string(a.status.message()).find(words), std::string::npos) << a.status;
  };
  // The last token goes through phase 2, so sp tokens leave sp - 1 to split.
  expect(Ask(**model, Options("", 0, 0), Document(sp), {}, 1), "needs a document of at least");
  expect(Ask(**model, Options("", 30, 0), Document(40), {{1, 2}}, 1), "longer than a block");
  expect(Ask(**model, Options("slots: 24 h2o {}", -1, 25), Document(100), {}, 1),
         "exceeds the cache of 24 slots");
  // The ranks are still in step: a good request works.
  const Answered ok = Ask(**model, Options("", -1, 0), Document(60), {{1, 2}}, 2);
  EXPECT_TRUE(ok.status.ok()) << ok.status;
}

}  // namespace
}  // namespace kvfold
