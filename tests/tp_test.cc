// Tensor parallelism under mpirun (mpi_gtest.sh runs it with 2 and 4 ranks,
// MPI communicator, CPU): every rank loads its TP slice of each golden
// checkpoint and the whole model (TP = 1) and checks
// - all-position logits equal TP = 1 (f32 reduction-order tolerance) and
//   transformers' (the golden fixtures),
// - the greedy continuation equals transformers' and TP = 1's,
// - the same with compressing cache policies (greedy tokens and logits equal
//   TP = 1; a replicated KV head shares its attention statistics),
// - each rank read only its slice of the checkpoint (bytes read),
// - the cache of each rank holds only its KV heads.
// A checkpoint whose heads the TP degree cannot split must be refused with
// the mesh's message.
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "cache/policies.h"
#include "gtest/gtest.h"
#include "parallel/mesh.h"
#include "runtime/engine.h"
#include "tests/golden_io.h"
#include "tests/mpi_gtest_main.h"

namespace kvfold {
namespace {

struct RunResult {
  std::vector<float> logits;   // after prefill, all positions
  std::vector<int32_t> greedy;
  CacheStats cache;
};

RunResult Prefill(const LlamaModel& model, const std::string& config,
            const std::vector<int32_t>& ids, int64_t greedy_tokens) {
  EngineOptions o;
  o.threads = 1;
  o.prefill_chunk = 7;
  auto parsed = ParseCacheConfig(config, "tp_test");
  EXPECT_TRUE(parsed.ok()) << parsed.status();
  o.cache = *parsed;
  Engine engine(model, o);
  RunResult run;
  auto cache = engine.NewCache();
  EXPECT_TRUE(cache.ok()) << cache.status();
  EXPECT_TRUE(engine.Prefill(ids, LogitsFor::kAll, **cache, &run.logits).ok());
  run.cache = (*cache)->Stats();
  GenerateOptions g;
  g.max_new_tokens = greedy_tokens;
  g.stop_at_eos = false;
  auto r = engine.Generate(ids, g);
  EXPECT_TRUE(r.ok()) << r.status();
  if (r.ok()) run.greedy = r->tokens;
  return run;
}

// Bytes of this rank's slice of the checkpoint, counted from the slice's
// definition (independently of the loader): `elem` bytes per stored value.
double SliceBytes(const ModelConfig& c, const TpSlice& t, double elem) {
  const double h = c.hidden_size, d = c.head_dim;
  double values = double(t.vocab_rows) * h * (c.tie_word_embeddings ? 1 : 2) + h;
  double layer = 2 * h + t.q_heads * d * h + 2 * t.kv_heads * d * h +
                 h * t.q_heads * d + 3.0 * h * t.inter;
  if (c.qkv_bias) layer += t.q_heads * d + 2 * t.kv_heads * d;
  if (c.o_bias && t.rank == 0) layer += h;
  return elem * (values + c.num_layers * layer);
}

class TpTest : public ::testing::TestWithParam<Fixture> {};

TEST_P(TpTest, EqualsOneRankAndTransformers) {
  Communicator& world = TestWorld();
  const int t = world.size();
  const std::string dir = std::string("tests/golden/") + GetParam().name;
  auto config = ModelConfig::FromFile(dir + "/config.json");
  ASSERT_TRUE(config.ok()) << config.status();
  auto mesh = Mesh::Create(t, world.rank(), {.tp = t, .sp = 1},
                           {int(config->num_heads), int(config->num_kv_heads),
                            config->intermediate_size});
  LoadOptions tp_options;
  tp_options.tp = &world;
  auto tp = LlamaModel::Load(dir, tp_options);
  if (!mesh.ok()) {
    // The model refuses what the mesh refuses, with the same message.
    ASSERT_FALSE(tp.ok());
    EXPECT_EQ(tp.status().message(), mesh.status().message());
    EXPECT_NE(mesh.status().message().find("--tp="), absl::string_view::npos);
    std::printf("rank %d: %s refused at TP=%d: %s\n", world.rank(), GetParam().name, t,
                std::string(mesh.status().message()).c_str());
    return;
  }
  ASSERT_TRUE(tp.ok()) << tp.status();
  auto one = LlamaModel::Load(dir);
  ASSERT_TRUE(one.ok()) << one.status();

  // Bytes read: exactly this rank's slice, well under the whole checkpoint.
  const TpSlice& slice = (*tp)->tp_slice();
  const double elem = double((*one)->stats().bytes_read) /
                      SliceBytes(*config, (*one)->tp_slice(), 1.0);
  EXPECT_TRUE(elem == 2 || elem == 4) << elem;
  EXPECT_EQ(double((*tp)->stats().bytes_read), SliceBytes(*config, slice, elem));
  EXPECT_LT((*tp)->stats().bytes_read, (*one)->stats().bytes_read * 0.75);
  std::printf("rank %d %s TP=%d: read %llu of %llu checkpoint bytes\n", world.rank(),
              GetParam().name, t, (unsigned long long)(*tp)->stats().bytes_read,
              (unsigned long long)(*one)->stats().bytes_read);

  for (const Sequence& seq : ReadGolden(dir + "/golden.json")) {
    const RunResult a = Prefill(**tp, "", seq.ids, 16), b = Prefill(**one, "", seq.ids, 16);
    const double vs_one = MaxRelDiff(a.logits, b.logits);
    const double vs_hf = NormalisedError(a.logits, seq.logits);
    std::printf("rank %d %s TP=%d len %zu: logits vs TP=1 %.2e, vs transformers %.2e\n",
                world.rank(), GetParam().name, t, seq.ids.size(), vs_one, vs_hf);
    EXPECT_LE(vs_one, 1e-5);
    EXPECT_LE(vs_hf, 1e-4);
    EXPECT_EQ(a.greedy, seq.greedy);
    EXPECT_EQ(a.greedy, b.greedy);
    // Cache memory per rank divides by T (KV heads replicated when fewer).
    EXPECT_EQ(a.cache.bytes * t / slice.kv_replication, b.cache.bytes);
  }
  // Compressing policies over a longer synthetic document (budget 24 slots
  // for 90 tokens): same greedy tokens, same logits.
  std::vector<int32_t> doc(90);
  for (size_t i = 0; i < doc.size(); ++i) doc[i] = int32_t((i * 37 + 11) % 256);
  for (const char* policy : {"slots: 24 h2o {}", "slots: 24 snapkv { window: 4 }",
                             "slots: 24 streaming {}", "slots: 24 kvmerger {}"}) {
    const RunResult a = Prefill(**tp, policy, doc, 12), b = Prefill(**one, policy, doc, 12);
    const double vs_one = MaxRelDiff(a.logits, b.logits);
    std::printf("rank %d %s TP=%d %s: logits vs TP=1 %.2e, compression %.2f\n",
                world.rank(), GetParam().name, t, policy, vs_one,
                a.cache.compression_ratio);
    EXPECT_GT(a.cache.compression_ratio, 1.0) << policy;
    EXPECT_LE(vs_one, 1e-5) << policy;
    EXPECT_EQ(a.greedy, b.greedy) << policy;
  }
}

// Vocabularies T does not divide (the last ranks hold fewer rows, or none)
// and a bias on o: random weights named the same on every rank.
TEST(TpRandomTest, UnevenVocabulary) {
  Communicator& world = TestWorld();
  for (int64_t vocab : {int64_t{250}, int64_t{9}}) {
    ModelConfig c;
    c.vocab_size = vocab, c.hidden_size = 32, c.intermediate_size = 64;
    c.num_layers = 2, c.num_heads = 4, c.num_kv_heads = 2, c.head_dim = 8;
    c.rope.theta = 10000.0;
    c.rope.rotary_dim = 8;
    c.qkv_bias = c.o_bias = true;
    c.max_position_embeddings = 4096;
    LoadOptions tp_options;
    tp_options.tp = &world;
    auto tp = LlamaModel::Random(c, 5, tp_options);
    ASSERT_TRUE(tp.ok()) << tp.status();
    auto one = LlamaModel::Random(c, 5);
    ASSERT_TRUE(one.ok()) << one.status();
    std::vector<int32_t> ids(40);
    for (size_t i = 0; i < ids.size(); ++i) ids[i] = int32_t((i * 5 + 3) % vocab);
    const RunResult a = Prefill(**tp, "", ids, 8), b = Prefill(**one, "", ids, 8);
    ASSERT_EQ(a.logits.size(), b.logits.size());
    const double diff = MaxRelDiff(a.logits, b.logits);
    std::printf("rank %d vocab %lld (%lld rows here) TP=%d: logits vs TP=1 %.2e\n",
                world.rank(), (long long)vocab, (long long)(*tp)->tp_slice().vocab_rows,
                world.size(), diff);
    EXPECT_LE(diff, 1e-5) << "vocab " << vocab;
    EXPECT_EQ(a.greedy, b.greedy) << "vocab " << vocab;
  }
}

INSTANTIATE_TEST_SUITE_P(Checkpoints, TpTest, ::testing::ValuesIn(kGoldenCheckpoints),
                         [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace kvfold
