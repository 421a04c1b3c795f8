// libFuzzer harness: config.json text. FromJson must accept it or say why;
// a config it accepts must be usable to plan a tensor-parallel slice.
#include <string>

#include "models/config.h"
#include "models/llama.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto config = kvfold::ModelConfig::FromJson(text, "fuzz");
  if (!config.ok()) return 0;
  for (int tp : {1, 2, 4}) {
    auto slice = kvfold::MakeTpSlice(*config, 0, tp);
    (void)slice;
  }
  return 0;
}
