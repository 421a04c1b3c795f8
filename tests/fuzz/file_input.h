// The harnesses' input as a file: the loaders under test read paths (and
// mmap them), so each input is written to one scratch file per process.
#ifndef KVFOLD_TESTS_FUZZ_FILE_INPUT_H_
#define KVFOLD_TESTS_FUZZ_FILE_INPUT_H_

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace kvfold {

inline std::string WriteInput(const uint8_t* data, size_t size, const char* suffix) {
  const char* dir = std::getenv("TEST_TMPDIR");
  static const std::string path = std::string(dir != nullptr ? dir : "/tmp") +
                                  "/kvfold_fuzz_" + std::to_string(getpid()) + suffix;
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) std::abort();
  if (size > 0 && std::fwrite(data, 1, size, f) != size) std::abort();
  std::fclose(f);
  return path;
}

}  // namespace kvfold

#endif  // KVFOLD_TESTS_FUZZ_FILE_INPUT_H_
