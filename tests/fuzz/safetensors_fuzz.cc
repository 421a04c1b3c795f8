// libFuzzer harness: a safetensors file (header and data). Open() must
// accept it or say why; every tensor it accepts must load as f32 with its
// own shape (the data really inside the mapping). Never a crash.
#include "models/safetensors.h"
#include "tests/fuzz/file_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = kvfold::WriteInput(data, size, ".safetensors");
  auto file = kvfold::SafetensorsFile::Open(path);
  if (!file.ok()) return 0;
  for (const auto& [name, entry] : (*file)->tensors()) {
    if (kvfold::NumElements(entry.shape) > (1 << 22)) continue;  // bounded work
    auto t = (*file)->LoadF32(name, entry.shape);
    (void)t;
  }
  return 0;
}
