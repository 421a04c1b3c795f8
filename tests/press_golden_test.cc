// Cache policies against their references, on the tiny checked-in
// checkpoints: NVIDIA kvpress for StreamingLLM, SnapKV, ObservedAttention
// (H2O-like) and PyramidKV, and a plain PyTorch reference of ALGORITHMS.md
// for KVMerger. tools/presses/make_press_golden.py recorded, per case, the
// document positions each layer and KV head keeps after compressing a
// 160-token document in one prefill, and the logits of an 8-token
// continuation on that cache. kvfold must keep the same positions and match
// the logits.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cache/policies.h"
#include "gtest/gtest.h"
#include "runtime/engine.h"

namespace kvfold {
namespace {

constexpr char kDir[] = "tests/golden/presses";

std::vector<std::string> Cases() {
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(kDir)) {
    if (e.path().extension() == ".json") names.push_back(e.path().stem().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

class PressGoldenTest : public ::testing::TestWithParam<std::string> {};

TEST_P(PressGoldenTest, SamePositionsAndContinuationLogits) {
  std::ifstream in(std::string(kDir) + "/" + GetParam() + ".json");
  ASSERT_TRUE(in.good());
  const nlohmann::json g = nlohmann::json::parse(in);
  SCOPED_TRACE(g["reference"].get<std::string>());
  auto model = LlamaModel::Load("tests/golden/" + g["checkpoint"].get<std::string>());
  ASSERT_TRUE(model.ok()) << model.status();
  auto config = ParseCacheConfig(g["cache_config"].get<std::string>(), GetParam());
  ASSERT_TRUE(config.ok()) << config.status();

  const auto doc = g["doc_ids"].get<std::vector<int32_t>>();
  const auto cont = g["cont_ids"].get<std::vector<int32_t>>();
  EngineOptions o;
  o.threads = 2;
  o.prefill_chunk = static_cast<int64_t>(doc.size());  // one compression, as kvpress
  o.cache = *config;
  Engine engine(**model, o);
  auto cache = engine.NewCache();
  ASSERT_TRUE(cache.ok()) << cache.status();
  ASSERT_TRUE(engine.Prefill(doc, LogitsFor::kNone, **cache, nullptr).ok());

  const auto kept = g["kept"].get<std::vector<std::vector<std::vector<int32_t>>>>();
  const CacheShape& shape = (*cache)->shape();
  ASSERT_EQ(static_cast<int64_t>(kept.size()), shape.num_layers);
  for (int layer = 0; layer < shape.num_layers; ++layer) {
    const LayerView v = (*cache)->View(layer);
    ASSERT_EQ(static_cast<int64_t>(kept[layer].size()), shape.kv_heads);
    for (int64_t h = 0; h < shape.kv_heads; ++h) {
      const int32_t* p = v.positions + h * v.stride;
      EXPECT_EQ(std::vector<int32_t>(p, p + v.length), kept[layer][h])
          << "layer " << layer << " kv head " << h;
    }
  }
  if (g.contains("merged_keys")) {
    // KVMerger: the merged keys themselves, not only where they sit.
    const auto want = g["merged_keys"].get<std::vector<std::vector<std::vector<std::vector<float>>>>>();
    for (int layer = 0; layer < shape.num_layers; ++layer) {
      const LayerView v = (*cache)->View(layer);
      double err = 0, scale = 0;
      for (int64_t h = 0; h < shape.kv_heads; ++h) {
        ASSERT_EQ(static_cast<int64_t>(want[layer][h].size()), v.length);
        for (int64_t s = 0; s < v.length; ++s) {
          for (int64_t i = 0; i < shape.head_dim; ++i) {
            const float got = v.keys[(h * v.stride + s) * shape.head_dim + i];
            err = std::max(err, double(std::abs(got - want[layer][h][s][i])));
            scale = std::max(scale, double(std::abs(want[layer][h][s][i])));
          }
        }
      }
      EXPECT_LE(err, 1e-5 * scale) << "merged keys, layer " << layer;
    }
  }

  std::vector<float> logits;
  ASSERT_TRUE(engine.PrefillQuestion(cont, LogitsFor::kAll, **cache, &logits).ok());
  const auto want = g["cont_logits"].get<std::vector<std::vector<float>>>();
  ASSERT_EQ(want.size(), cont.size());
  const size_t vocab = want[0].size();
  double err = 0, scale = 0;
  for (size_t t = 0; t < want.size(); ++t) {
    for (size_t j = 0; j < vocab; ++j) {
      err = std::max(err, double(std::abs(logits[t * vocab + j] - want[t][j])));
      scale = std::max(scale, double(std::abs(want[t][j])));
    }
  }
  EXPECT_LE(err, 1e-4 * scale) << "continuation logits, max error " << err;
}

INSTANTIATE_TEST_SUITE_P(References, PressGoldenTest, ::testing::ValuesIn(Cases()),
                         [](const auto& info) { return info.param; });

TEST(PressGoldenFilesTest, EveryPolicyHasAReferenceCase) {
  const std::vector<std::string> names = Cases();
  for (const char* prefix : {"streaming_", "snapkv_", "observed_", "pyramidkv_", "kvmerger_"}) {
    EXPECT_TRUE(std::any_of(names.begin(), names.end(), [&](const std::string& n) {
      return n.rfind(prefix, 0) == 0;
    })) << "no golden case " << prefix << "*";
  }
}

}  // namespace
}  // namespace kvfold
