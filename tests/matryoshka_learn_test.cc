// MatryoshkaKV training learns (tests/golden/matryoshka/learn/, made by
// tools/calibrate/make_matryoshka_golden.py on the built-in model): on
// held-out text, kvfold's own NLL with the Cayley-trained projections is
// lower than with their PCA start at every stored budget below 1, and the
// adaptive allocation is stored for every budget. Prints the NLL-vs-budget
// table that README.md quotes.
#include <cstdio>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "models/compressor_file.h"
#include "runtime/engine.h"
#include "tests/learn_util.h"

namespace kvfold {
namespace {

const char kModel[] = "tools/model";
const char kDir[] = "tests/golden/matryoshka/learn/";

TEST(MatryoshkaLearnTest, TrainedBeatsPcaAtEveryBudget) {
  auto model = LlamaModel::Load(kModel);
  ASSERT_TRUE(model.ok()) << model.status();
  const auto heldout = ReadIds(std::string(kDir) + "heldout.ids");
  ASSERT_FALSE(heldout.empty());
  EngineOptions plain;
  plain.prefill_chunk = 1024;
  const double unprojected = MeanNll(**model, plain, heldout);
  std::printf("held-out NLL/token, no projection: %.4f\n", unprojected);

  std::vector<std::shared_ptr<const CompressorFile>> files;
  for (const char* name : {"pca", "trained", "adaptive"}) {
    auto f = LoadCompressorFile(std::string(kDir) + name + ".safetensors");
    ASSERT_TRUE(f.ok()) << f.status();
    files.push_back(*f);
  }
  const std::vector<double>& budgets = files[0]->matryoshka->budgets;
  for (const auto& f : files) ASSERT_EQ(f->matryoshka->budgets, budgets) << f->path;
  std::printf("| budget | PCA | trained | adaptive |\n|---|---|---|---|\n");
  for (double b : budgets) {
    double nll[3];
    for (int i = 0; i < 3; ++i) {
      EngineOptions o = plain;
      o.projection = files[i];
      o.cache.set_feature_budget(b);
      nll[i] = MeanNll(**model, o, heldout);
    }
    std::printf("| %g | %.4f | %.4f | %.4f |\n", b, nll[0], nll[1], nll[2]);
    if (b == 1.0) {
      // Full rank is the model itself, whatever the bases.
      for (double x : nll) EXPECT_NEAR(x, unprojected, 1e-4);
    } else {
      EXPECT_LT(nll[1], nll[0]) << "trained vs PCA at budget " << b;
    }
  }
}

}  // namespace
}  // namespace kvfold
