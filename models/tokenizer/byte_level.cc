#include "models/tokenizer/byte_level.h"

#include <array>

namespace kvfold::byte_level {
namespace {

bool Printable(int b) {
  return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

struct Table {
  std::array<char32_t, 256> to_char;
  Table() {
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      to_char[b] = Printable(b) ? char32_t(b) : next++;
    }
  }
};

const Table& GetTable() {
  static const Table table;
  return table;
}

}  // namespace

char32_t ByteToChar(uint8_t b) { return GetTable().to_char[b]; }

int CharToByte(char32_t c) {
  if (c < 256) return Printable(int(c)) ? int(c) : -1;
  // The non-printable bytes in order map to U+0100...U+0143.
  static const std::array<int, 68> kInverse = [] {
    std::array<int, 68> inv{};
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      if (!Printable(b)) inv[n++] = b;
    }
    return inv;
  }();
  if (c >= 256 && c < 256 + kInverse.size()) return kInverse[c - 256];
  return -1;
}

}  // namespace kvfold::byte_level
