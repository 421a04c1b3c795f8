// Reading the transformers golden fixtures (tools/golden/
// make_model_fixtures.py) and comparing logits with them; shared by the CPU
// and CUDA model tests.
#ifndef KVFOLD_TESTS_GOLDEN_IO_H_
#define KVFOLD_TESTS_GOLDEN_IO_H_

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace kvfold {

// A checked-in checkpoint of tests/golden/ and its tolerance against the
// storage-dtype run of transformers (bf16/f16 round every op, kvfold computes
// in f32 from the same weights); 0 = no such run.
struct Fixture {
  const char* name;
  double native_tolerance;
};

inline const Fixture kGoldenCheckpoints[] = {
    {"llama3_f32", 0},        {"mistral_gqa_f32", 0}, {"qwen2_bias_tied_bf16", 0.05},
    {"llama_f16", 0.03},      {"llama_attn_bias_f32", 0}};

struct Sequence {
  std::vector<int32_t> ids;
  std::vector<std::vector<float>> logits;         // f32 reference
  std::vector<std::vector<float>> logits_native;  // storage-dtype run, if any
  std::vector<int32_t> greedy;
};

inline std::vector<Sequence> ReadGolden(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << path;
  nlohmann::json j = nlohmann::json::parse(in);
  std::vector<Sequence> out;
  for (const auto& s : j["sequences"]) {
    Sequence seq;
    seq.ids = s["input_ids"].get<std::vector<int32_t>>();
    seq.logits = s["logits"].get<std::vector<std::vector<float>>>();
    if (s.contains("logits_native")) {
      seq.logits_native = s["logits_native"].get<std::vector<std::vector<float>>>();
    }
    seq.greedy = s["greedy"].get<std::vector<int32_t>>();
    // A truncated fixture must fail, not be checked in part.
    EXPECT_EQ(seq.logits.size(), seq.ids.size()) << path;
    if (!seq.logits_native.empty()) {
      EXPECT_EQ(seq.logits_native.size(), seq.ids.size()) << path;
    }
    EXPECT_EQ(seq.greedy.size(), 16u) << path;
    out.push_back(std::move(seq));
  }
  EXPECT_FALSE(out.empty()) << path << " has no sequences";
  return out;
}

// max |got - want| / max |want| over all positions; infinite if any got is
// NaN (which max() alone would skip).
inline double NormalisedError(const std::vector<float>& got,
                              const std::vector<std::vector<float>>& want) {
  double err = 0, scale = 0;
  const size_t vocab = want[0].size();
  for (size_t t = 0; t < want.size(); ++t) {
    for (size_t j = 0; j < vocab; ++j) {
      if (std::isnan(got[t * vocab + j])) return INFINITY;
      err = std::max(err, double(std::abs(got[t * vocab + j] - want[t][j])));
      scale = std::max(scale, double(std::abs(want[t][j])));
    }
  }
  return err / scale;
}

// max |a - b| / max |b| over two runs' logits; infinite if their sizes
// differ or either holds a NaN.
inline double MaxRelDiff(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return INFINITY;
  double diff = 0, scale = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isnan(a[i]) || std::isnan(b[i])) return INFINITY;
    diff = std::max(diff, double(std::abs(a[i] - b[i])));
    scale = std::max(scale, double(std::abs(b[i])));
  }
  return diff / scale;
}

}  // namespace kvfold

#endif  // KVFOLD_TESTS_GOLDEN_IO_H_
