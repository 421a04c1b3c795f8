// Calibration actually learns: on the tiny checkpoint of tests/golden/lococo/
// and its held-out sequences (sampled from the model itself; see
// tools/calibrate/make_lococo_golden.py), kvfold's own scoring gives a lower
// NLL with the calibrated compressor than with the random one it started
// from, and lower than StreamingLLM with the same number of slots.
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "cache/policies.h"
#include "gtest/gtest.h"
#include "models/compressor_file.h"
#include "runtime/engine.h"
#include "tests/learn_util.h"

namespace kvfold {
namespace {

const char kDir[] = "tests/golden/lococo/";
constexpr int64_t kChunk = 32;  // the calibration chunk

EngineOptions LoCoCo(const std::string& file) {
  EngineOptions o;
  o.threads = 2;
  o.prefill_chunk = kChunk;
  o.cache.mutable_lococo();
  auto c = LoadCompressorFile(absl::StrCat(kDir, "learn/", file));
  EXPECT_TRUE(c.ok()) << c.status();
  if (c.ok()) o.compressor = *c;
  return o;
}

class LoCoCoLearnTest : public ::testing::TestWithParam<std::string> {};

TEST_P(LoCoCoLearnTest, CalibratedBeatsRandomAndStreaming) {
  const std::string variant = GetParam();
  auto model = LlamaModel::Load(absl::StrCat(kDir, "model"));
  ASSERT_TRUE(model.ok()) << model.status();
  const auto docs = ReadIds(absl::StrCat(kDir, "learn/heldout.ids"));

  const EngineOptions calibrated = LoCoCo(variant + ".calibrated.safetensors");
  const EngineOptions random = LoCoCo(variant + ".random.safetensors");
  ASSERT_NE(calibrated.compressor, nullptr);
  ASSERT_NE(random.compressor, nullptr);
  const int64_t slots = calibrated.compressor->lococo->slots;
  EngineOptions streaming = calibrated;
  streaming.compressor = nullptr;
  streaming.cache = CacheConfig();
  streaming.cache.set_slots(static_cast<int32_t>(slots));
  streaming.cache.mutable_streaming()->set_sinks(4);
  EngineOptions full = streaming;
  full.cache = CacheConfig();

  const double nll_full = MeanNll(**model, full, docs);
  const double nll_calibrated = MeanNll(**model, calibrated, docs);
  const double nll_random = MeanNll(**model, random, docs);
  const double nll_streaming = MeanNll(**model, streaming, docs);
  std::printf("%s, %ld slots, held-out mean NLL/token: full %.4f, calibrated %.4f, "
              "random %.4f, streaming %.4f\n",
              variant.c_str(), slots, nll_full, nll_calibrated, nll_random, nll_streaming);
  EXPECT_LT(nll_calibrated, nll_random);
  EXPECT_LT(nll_calibrated, nll_streaming);
  // The same numbers from the PyTorch reference (the trainer's evaluation).
  std::ifstream in(absl::StrCat(kDir, "learn/results.json"));
  ASSERT_TRUE(in.good());
  const nlohmann::json torch = nlohmann::json::parse(in)["heldout_mean_nll_per_token"];
  EXPECT_NEAR(nll_full, torch["full"].get<double>(), 1e-4);
  EXPECT_NEAR(nll_streaming, torch["streaming_4+28"].get<double>(), 1e-4);
  EXPECT_NEAR(nll_calibrated, torch[variant + "_calibrated"].get<double>(), 1e-4);
  EXPECT_NEAR(nll_random, torch[variant + "_random"].get<double>(), 1e-4);
}

INSTANTIATE_TEST_SUITE_P(Variants, LoCoCoLearnTest, ::testing::Values("official", "pure"));

}  // namespace
}  // namespace kvfold
