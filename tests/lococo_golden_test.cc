// LoCoCo through the real forward pass against the PyTorch reference
// (tools/calibrate/make_lococo_golden.py): the same tiny checkpoint, the same
// compressor file and the same ids give the same compressed keys, values and
// positions after every forward call (chunked prefill, then decode steps)
// and the same logits.
#include <algorithm>
#include <cmath>
#include <cstdio>
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

const char kDir[] = "tests/golden/lococo/";

// ||got - want|| / ||want||, in double.
double RelErr(const float* got, const float* want, int64_t n) {
  double err = 0, norm = 0;
  for (int64_t i = 0; i < n; ++i) {
    err += (double(got[i]) - want[i]) * (double(got[i]) - want[i]);
    norm += double(want[i]) * want[i];
  }
  return std::sqrt(err / std::max(norm, 1e-30));
}

int64_t MetaInt(const SafetensorsFile& f, const std::string& key) {
  auto it = f.metadata().find(key);
  EXPECT_NE(it, f.metadata().end()) << key;
  int64_t v = -1;
  if (it != f.metadata().end()) {
    EXPECT_TRUE(absl::SimpleAtoi(it->second, &v)) << key;
  }
  return v;
}

class LoCoCoGoldenTest : public ::testing::TestWithParam<std::string> {};

TEST_P(LoCoCoGoldenTest, StateAndLogitsAfterEveryForward) {
  const std::string variant = GetParam();
  auto model = LlamaModel::Load(absl::StrCat(kDir, "model"));
  ASSERT_TRUE(model.ok()) << model.status();
  auto compressor =
      LoadCompressorFile(absl::StrCat(kDir, "parity/", variant, ".compressor.safetensors"));
  ASSERT_TRUE(compressor.ok()) << compressor.status();
  auto golden =
      SafetensorsFile::Open(absl::StrCat(kDir, "parity/", variant, ".golden.safetensors"));
  ASSERT_TRUE(golden.ok()) << golden.status();
  const SafetensorsFile& g = **golden;

  std::vector<int32_t> ids;
  for (absl::string_view item : absl::StrSplit(g.metadata().at("ids"), ',')) {
    int32_t id;
    ASSERT_TRUE(absl::SimpleAtoi(item, &id)) << item;
    ids.push_back(id);
  }
  const int64_t chunk = MetaInt(g, "prefill_chunk");
  const int64_t prompt = MetaInt(g, "prompt_length");
  const int64_t decode = MetaInt(g, "decode_steps");
  const int64_t steps = MetaInt(g, "steps");
  ASSERT_EQ(static_cast<int64_t>(ids.size()), prompt + decode);
  ASSERT_EQ(MetaInt(g, "buffer"), (*compressor)->lococo->buffer);

  EngineOptions o;
  o.threads = 2;
  o.prefill_chunk = chunk;
  o.cache.mutable_lococo();
  o.compressor = *compressor;
  const ModelConfig& config = (**model).config();
  ASSERT_TRUE(ValidateCacheOptions(o, config).ok());
  Engine engine(**model, o);
  auto made = engine.NewCache();
  ASSERT_TRUE(made.ok()) << made.status();
  KvCache& cache = **made;

  const int64_t vocab = config.vocab_size, d = config.head_dim;
  const int64_t heads = config.num_kv_heads;
  int64_t step = 0, compressions = 0;
  double worst_logits = 0, worst_kv = 0;
  std::vector<float> logits;
  auto check_step = [&](int64_t tokens) {
    SCOPED_TRACE(absl::StrCat(variant, " step ", step));
    const std::string at = absl::StrCat("step", step, ".");
    auto want_logits = g.LoadF32(at + "logits", {tokens, vocab});
    ASSERT_TRUE(want_logits.ok()) << want_logits.status();
    const double logit_err = RelErr(logits.data(), want_logits->as<float>(), tokens * vocab);
    EXPECT_LT(logit_err, 1e-5);
    worst_logits = std::max(worst_logits, logit_err);
    for (int layer = 0; layer < config.num_layers; ++layer) {
      const LayerView view = cache.View(layer);
      const std::string name = absl::StrCat(at, "layer", layer, ".");
      auto entry = g.tensors().find(name + "positions");
      ASSERT_NE(entry, g.tensors().end()) << name;
      ASSERT_EQ(entry->second.shape, (Shape{heads, view.length})) << name << " length";
      auto keys = g.LoadF32(name + "keys", {heads, view.length, d});
      auto values = g.LoadF32(name + "values", {heads, view.length, d});
      ASSERT_TRUE(keys.ok() && values.ok()) << keys.status() << values.status();
      std::vector<float> got_k, got_v;
      std::vector<int32_t> got_p;
      for (int64_t h = 0; h < heads; ++h) {
        const float* k = view.keys + h * view.stride * d;
        const float* v = view.values + h * view.stride * d;
        got_k.insert(got_k.end(), k, k + view.length * d);
        got_v.insert(got_v.end(), v, v + view.length * d);
        const int32_t* p = view.positions + h * view.stride;
        got_p.insert(got_p.end(), p, p + view.length);
      }
      const double k_err = RelErr(got_k.data(), keys->as<float>(), got_k.size());
      const double v_err = RelErr(got_v.data(), values->as<float>(), got_v.size());
      EXPECT_LT(k_err, 1e-5) << name;
      EXPECT_LT(v_err, 1e-5) << name;
      worst_kv = std::max({worst_kv, k_err, v_err});
      const auto* want_p = reinterpret_cast<const int32_t*>(entry->second.data);
      EXPECT_EQ(got_p, std::vector<int32_t>(want_p, want_p + got_p.size())) << name;
    }
  };

  int64_t previous = 0;
  for (int64_t begin = 0; begin < prompt; begin += chunk, ++step) {
    const int64_t n = std::min(chunk, prompt - begin);
    ASSERT_TRUE(engine.Prefill(absl::MakeSpan(ids).subspan(begin, n), LogitsFor::kAll,
                               cache, &logits).ok());
    compressions += cache.View(0).length < previous + n;
    previous = cache.View(0).length;
    check_step(n);
  }
  for (int64_t i = 0; i < decode; ++i, ++step) {
    ASSERT_TRUE(engine.Decode(ids[prompt + i], cache, &logits).ok());
    compressions += cache.View(0).length < previous + 1;
    previous = cache.View(0).length;
    check_step(1);
  }
  EXPECT_EQ(step, steps);
  std::printf("%s: %ld forwards, %ld compressions; worst relative error: logits %.2e, "
              "keys/values %.2e\n",
              variant.c_str(), step, compressions, worst_logits, worst_kv);
  // The fixture must exercise the module in both phases.
  EXPECT_GE(compressions, 4) << "compressions seen";
}

INSTANTIATE_TEST_SUITE_P(Variants, LoCoCoGoldenTest,
                         ::testing::Values("official", "pure"));

}  // namespace
}  // namespace kvfold
