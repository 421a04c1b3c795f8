// libFuzzer harness: a compressor file (LoCoCo module or MatryoshkaKV
// projections). LoadCompressorFile must accept it or say why; what it
// accepts must validate and, for projections, lay out every stored
// allocation.
#include "cache/matryoshka.h"
#include "models/compressor_file.h"
#include "tests/fuzz/file_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = kvfold::WriteInput(data, size, ".safetensors");
  auto file = kvfold::LoadCompressorFile(path);
  if (!file.ok()) return 0;
  if (const auto& p = (*file)->matryoshka) {
    if (!p->Validate().ok()) std::abort();  // the loader validated it
    for (size_t a = 0; a < p->budgets.size(); ++a) {
      auto layout = kvfold::FeatureLayout::Make(*p, static_cast<int>(a), 0, p->kv_heads);
      if (!layout.ok()) std::abort();
    }
  }
  if (const auto& l = (*file)->lococo) {
    if (!l->Validate().ok()) std::abort();
  }
  return 0;
}
