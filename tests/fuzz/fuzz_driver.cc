// A deterministic stand-in for libFuzzer's driver, so the harnesses of this
// folder run in the normal test suite: each seed file as it is, then
// ITERATIONS mutations of the seeds (byte flips, insertions of bytes and
// JSON/number fragments, deletions, duplications, splices, truncations),
// each fed to LLVMFuzzerTestOneInput. Built with clang's -fsanitize=fuzzer
// instead (tools/fuzz/fuzz.sh), the same harnesses run under libFuzzer.
// Also the tokenizer's driver (models/tokenizer:fuzz_driver).
// Usage: fuzz_driver ITERATIONS [--nul_sample] SEED_FILE...
// (--nul_sample: a NUL byte and a sample text are appended to every seed,
// the tokenizer harness's "tokenizer.json, NUL, text" input.)
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

std::string Read(const char* path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "fuzz_driver: cannot read %s\n", path);
    std::exit(2);
  }
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void Run(const std::string& s) {
  LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: fuzz_driver ITERATIONS [--nul_sample] SEED_FILE...\n");
    return 2;
  }
  const long iterations = std::atol(argv[1]);
  int first = 2;
  const bool nul_sample = std::string(argv[2]) == "--nul_sample";
  if (nul_sample) ++first;
  const std::string sample =
      std::string(1, '\0') +
      "Hello, world! It's 12345 tokens: 東京 🙂 e\xCC\x81 <s> </s> <|begin_of_text|>\n\n  x";
  std::vector<std::string> seeds;
  for (int i = first; i < argc; ++i) seeds.push_back(Read(argv[i]) + (nul_sample ? sample : ""));
  for (const std::string& s : seeds) Run(s);
  static const char* kFragments[] = {"{", "}", "[", "]", ",", ":", "\"", "\\", "\\u0000",
                                     "null", "true", "-1", "0", "1e309", "4294967296",
                                     "9223372036854775807", "-9223372036854775808", "NaN",
                                     "\xFF", "\x00\x00\x00\x00", "\n", "[[[[[[[[[[[[[[[[",
                                     // UTF-8 pieces (whole and cut) and tokenizer markers
                                     "\xF0\x9F", "\xE6\x9D\xB1", "\xC3", "\x80", " ", "<s>",
                                     "\xE2\x96\x81"};
  std::mt19937_64 rng(12345);
  for (long it = 0; it < iterations; ++it) {
    std::string s = seeds[rng() % seeds.size()];
    const int edits = 1 + rng() % 8;
    for (int e = 0; e < edits && !s.empty(); ++e) {
      const size_t at = rng() % s.size();
      switch (rng() % 7) {
        case 0: s[at] = char(rng()); break;
        case 1: s.insert(at, kFragments[rng() % (sizeof(kFragments) / sizeof(*kFragments))]); break;
        case 2: s.erase(at, 1 + rng() % 16); break;
        case 3: s.insert(at, s.substr(rng() % s.size(), 1 + rng() % 32)); break;
        case 4: {
          const std::string& other = seeds[rng() % seeds.size()];
          s.insert(at, other.substr(rng() % other.size(), 1 + rng() % 64));
          break;
        }
        case 5: s.resize(at); break;
        case 6: {  // a digit changed: sizes, offsets, shapes, ranks
          const size_t digit = s.find_first_of("0123456789", at);
          if (digit != std::string::npos) s[digit] = char('0' + rng() % 10);
          break;
        }
      }
    }
    Run(s);
  }
  std::printf("fuzz_driver: %zu seeds and %ld mutated inputs, no crash\n", seeds.size(),
              iterations);
  return 0;
}
