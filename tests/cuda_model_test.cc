// The model on a CUDA device against Hugging Face transformers (the golden
// fixtures of tools/golden/make_model_fixtures.py) and against the CPU
// backend. Without a usable GPU (or in a binary built without CUDA) every
// test reports SKIPPED with the reason.
//
// Tolerances (max |got - want| / max |want|):
// - f32 weights on the GPU: 1e-4 against transformers in f32, as on the CPU;
// - bf16/f16 weights: 5e-2 against transformers in f32 (rounding the weights
//   and the GEMM inputs), and the fixture's own bound against transformers
//   run in its storage dtype;
// - greedy continuations: identical to transformers' for f32 weights; for
//   bf16, identical up to the first step where the f32 model's top-2 margin
//   is under the bf16 tolerance (there the rounding may pick either token).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cache/policies.h"
#include "gtest/gtest.h"
#include "kernels/device_stream.h"
#include "runtime/engine.h"
#include "tests/golden_io.h"

namespace kvfold {
namespace {

constexpr double kBf16Tolerance = 5e-2;

class CudaModelTest : public ::testing::TestWithParam<Fixture> {
 protected:
  void SetUp() override {
    std::string why;
    if (CudaDeviceCount(&why) == 0) GTEST_SKIP() << "no usable CUDA device: " << why;
    dir_ = std::string("tests/golden/") + GetParam().name;
  }
  std::unique_ptr<LlamaModel> Load(DType dtype) {
    auto m = LlamaModel::Load(dir_, {Device::Cuda(0), dtype});
    EXPECT_TRUE(m.ok()) << m.status();
    return m.ok() ? std::move(*m) : nullptr;
  }
  std::string dir_;
};

TEST_P(CudaModelTest, F32LogitsAndGreedyMatchTransformers) {
  std::unique_ptr<LlamaModel> model = Load(DType::kF32);
  ASSERT_NE(model, nullptr);
  for (const Sequence& seq : ReadGolden(dir_ + "/golden.json")) {
    for (int64_t chunk : {int64_t(1) << 20, int64_t(7)}) {
      Engine engine(*model, {.threads = 2, .prefill_chunk = chunk, .cache = {}});
      auto cache = engine.NewCache();
      ASSERT_TRUE(cache.ok()) << cache.status();
      std::vector<float> logits;
      ASSERT_TRUE(engine.Prefill(seq.ids, LogitsFor::kAll, **cache, &logits).ok());
      const double err = NormalisedError(logits, seq.logits);
      std::printf("%s cuda f32 len %zu chunk %lld: error vs transformers f32 %.2e\n",
                  GetParam().name, seq.ids.size(), (long long)chunk, err);
      EXPECT_LE(err, 1e-4) << "chunk " << chunk;
      GenerateOptions opts;
      opts.max_new_tokens = int64_t(seq.greedy.size());
      opts.stop_at_eos = false;
      auto r = engine.Generate(seq.ids, opts);
      ASSERT_TRUE(r.ok()) << r.status();
      EXPECT_EQ(r->tokens, seq.greedy) << "chunk " << chunk;
    }
  }
}

TEST_P(CudaModelTest, HalfPrecisionWithinTolerance) {
  const DType dtype = std::string(GetParam().name) == "llama_f16" ? DType::kF16 : DType::kBF16;
  std::unique_ptr<LlamaModel> model = Load(dtype);
  ASSERT_NE(model, nullptr);
  auto cpu_model = LlamaModel::Load(dir_);
  ASSERT_TRUE(cpu_model.ok());
  Engine cpu(**cpu_model, {.threads = 2, .prefill_chunk = 512, .cache = {}});
  for (const Sequence& seq : ReadGolden(dir_ + "/golden.json")) {
    Engine engine(*model, {.threads = 2, .prefill_chunk = 512, .cache = {}});
    auto cache = engine.NewCache();
    ASSERT_TRUE(cache.ok()) << cache.status();
    std::vector<float> logits;
    ASSERT_TRUE(engine.Prefill(seq.ids, LogitsFor::kAll, **cache, &logits).ok());
    const double err = NormalisedError(logits, seq.logits);
    std::printf("%s cuda %s len %zu: error vs transformers f32 %.2e\n", GetParam().name,
                DTypeName(dtype), seq.ids.size(), err);
    EXPECT_LE(err, kBf16Tolerance);
    if (GetParam().native_tolerance > 0) {
      const double native = NormalisedError(logits, seq.logits_native);
      std::printf("%s cuda %s: error vs transformers in storage dtype %.2e\n",
                  GetParam().name, DTypeName(dtype), native);
      EXPECT_LE(native, GetParam().native_tolerance);
    }
    // Greedy: the same tokens as f32 until a step whose f32 margin is small.
    GenerateOptions opts;
    opts.max_new_tokens = int64_t(seq.greedy.size());
    opts.stop_at_eos = false;
    auto r = engine.Generate(seq.ids, opts);
    ASSERT_TRUE(r.ok()) << r.status();
    std::vector<int32_t> full = seq.ids;
    full.insert(full.end(), seq.greedy.begin(), seq.greedy.end());
    auto cpu_cache = cpu.NewCache();
    ASSERT_TRUE(cpu_cache.ok());
    std::vector<float> ref;
    ASSERT_TRUE(cpu.Prefill(full, LogitsFor::kAll, **cpu_cache, &ref).ok());
    const int64_t vocab = model->config().vocab_size;
    size_t compared = 0;
    for (size_t i = 0; i < seq.greedy.size(); ++i) {
      const float* row = ref.data() + (seq.ids.size() - 1 + i) * vocab;
      std::vector<float> sorted(row, row + vocab);
      std::partial_sort(sorted.begin(), sorted.begin() + 2, sorted.end(), std::greater<float>());
      const double scale = std::max(std::abs(sorted[0]), std::abs(sorted[vocab - 1]));
      if (sorted[0] - sorted[1] < kBf16Tolerance * scale) break;
      EXPECT_EQ(r->tokens[i], seq.greedy[i]) << "step " << i;
      ++compared;
      if (r->tokens[i] != seq.greedy[i]) break;
    }
    std::printf("%s cuda %s: greedy compared over %zu of %zu steps\n", GetParam().name,
                DTypeName(dtype), compared, seq.greedy.size());
  }
}

// Every policy that runs on the GPU keeps the same slots as on the CPU: with
// f32 weights, scores agree to f32 noise and greedy answers are identical.
TEST_P(CudaModelTest, CachePoliciesMatchCpu) {
  std::unique_ptr<LlamaModel> model = Load(DType::kF32);
  ASSERT_NE(model, nullptr);
  auto cpu_model = LlamaModel::Load(dir_);
  ASSERT_TRUE(cpu_model.ok());
  const std::vector<Sequence> seqs = ReadGolden(dir_ + "/golden.json");
  const Sequence& seq = *std::max_element(
      seqs.begin(), seqs.end(),
      [](const Sequence& a, const Sequence& b) { return a.ids.size() < b.ids.size(); });
  for (const char* policy : {"streaming", "h2o", "snapkv", "pyramidkv"}) {
    CacheConfig config;
    ASSERT_TRUE(SetPolicyByName(policy, &config).ok());
    config.set_slots(int32_t(seq.ids.size() / 3));
    if (config.has_snapkv()) config.mutable_snapkv()->set_window(4);
    if (config.has_pyramidkv()) config.mutable_pyramidkv()->set_window(4);
    EngineOptions o{.threads = 2, .prefill_chunk = 8, .cache = config};
    Engine gpu(*model, o), cpu(**cpu_model, o);
    auto g = gpu.Score(seq.ids);
    auto c = cpu.Score(seq.ids);
    ASSERT_TRUE(g.ok()) << policy << ": " << g.status();
    ASSERT_TRUE(c.ok()) << policy << ": " << c.status();
    double diff = 0;
    for (size_t i = 0; i < c->logprobs.size(); ++i) {
      diff = std::max(diff, std::abs(g->logprobs[i] - c->logprobs[i]));
    }
    std::printf("%s %s: max |logprob gpu - cpu| %.2e, slots %lld\n", GetParam().name,
                policy, diff, (long long)g->cache.slots_held);
    EXPECT_LT(diff, 1e-3) << policy;
    EXPECT_EQ(g->cache.slots_held, c->cache.slots_held) << policy;
    GenerateOptions opts;
    opts.max_new_tokens = 8;
    opts.stop_at_eos = false;
    auto ga = gpu.Generate(seq.ids, opts);
    auto ca = cpu.Generate(seq.ids, opts);
    ASSERT_TRUE(ga.ok() && ca.ok()) << policy;
    EXPECT_EQ(ga->tokens, ca->tokens) << policy;
  }
  // Policies that rewrite keys on the host say so instead of running.
  CacheConfig merger;
  ASSERT_TRUE(SetPolicyByName("kvmerger", &merger).ok());
  merger.set_slots(8);
  Engine gpu(*model, {.threads = 2, .prefill_chunk = 5, .cache = merger});
  auto r = gpu.Score(seq.ids);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("--device=cpu"), std::string::npos) << r.status();
}

INSTANTIATE_TEST_SUITE_P(
    Checkpoints, CudaModelTest,
    ::testing::ValuesIn(kGoldenCheckpoints),
    [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace kvfold
