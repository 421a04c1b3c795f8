// The GPT-2 byte-to-character table of byte-level BPE: every byte is shown
// as a printable character (printable Latin-1 bytes as themselves, the rest
// as U+0100 + n in byte order).
#ifndef KVFOLD_MODELS_TOKENIZER_BYTE_LEVEL_H_
#define KVFOLD_MODELS_TOKENIZER_BYTE_LEVEL_H_

#include <cstdint>

namespace kvfold::byte_level {

char32_t ByteToChar(uint8_t b);
// The byte a byte-level character stands for, or -1.
int CharToByte(char32_t c);

}  // namespace kvfold::byte_level

#endif  // KVFOLD_MODELS_TOKENIZER_BYTE_LEVEL_H_
