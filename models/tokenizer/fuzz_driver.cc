// A deterministic stand-in for libFuzzer's driver so the harness runs in
// the normal test suite: each seed file, then --iterations mutations of the
// seeds (byte flips, insertions of bytes and UTF-8 fragments, deletions,
// duplications, splices, truncation), fed to LLVMFuzzerTestOneInput.
// Usage: fuzz_driver ITERATIONS [--text] SEED_FILE...
// (--text: a seed is text; otherwise a tokenizer.json, and the seed text is
// appended after a NUL byte.)
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
    std::fprintf(stderr, "usage: fuzz_driver ITERATIONS [--text] SEED_FILE...\n");
    return 2;
  }
  const long iterations = std::atol(argv[1]);
  int first = 2;
  const bool text_seeds = std::string(argv[2]) == "--text";
  if (text_seeds) ++first;
  const std::string sample_text =
      "Hello, world! It's 12345 tokens: 東京 🙂 e\xCC\x81 <s> </s> <|begin_of_text|>\n\n  x";
  std::vector<std::string> seeds;
  for (int i = first; i < argc; ++i) {
    seeds.push_back(text_seeds ? Read(argv[i]) : Read(argv[i]) + '\0' + sample_text);
  }
  for (const std::string& s : seeds) Run(s);
  static const char* kFragments[] = {"\xF0\x9F", "\xE6\x9D\xB1", "\xC3", "\x80", "\xFF", " ",
                                     "\n", "\"", "{", "}", "[", "]", ",", ":", "\\u0000",
                                     "<s>", "\xE2\x96\x81", "null", "1e309", "-1"};
  std::mt19937_64 rng(12345);
  for (long it = 0; it < iterations; ++it) {
    std::string s = seeds[rng() % seeds.size()];
    const int edits = 1 + rng() % 8;
    for (int e = 0; e < edits && !s.empty(); ++e) {
      const size_t at = rng() % s.size();
      switch (rng() % 6) {
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
      }
    }
    Run(s);
  }
  std::printf("fuzz_driver: %zu seeds and %ld mutated inputs, no crash\n", seeds.size(),
              iterations);
  return 0;
}
