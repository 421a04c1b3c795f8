// Unicode support for the tokenizer.json reimplementation: UTF-8 decoding and
// encoding (incl. Rust-compatible lossy decoding), general categories and
// properties for the pre-tokenizer regex engine, simple and full case folding,
// and NFC/NFD/NFKC/NFKD normalization. Tables are generated from Python's
// unicodedata (Unicode 14.0.0, the version of Oniguruma in tokenizers 0.20.3)
// by tools/tokenizer/make_unicode_tables.py.
#ifndef KVFOLD_MODELS_TOKENIZER_UNICODE_H_
#define KVFOLD_MODELS_TOKENIZER_UNICODE_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace kvfold::unicode {

// The Unicode version of the tables, e.g. "14.0.0".
absl::string_view UnicodeVersion();

// ---- UTF-8 ----------------------------------------------------------------

// Decodes UTF-8 into code points. On invalid UTF-8 (overlong, surrogates,
// > U+10FFFF, truncated, stray continuation) returns InvalidArgumentError
// naming the byte offset; `what` is put in the message (e.g. "input text").
absl::Status DecodeUtf8(absl::string_view utf8, std::u32string* out,
                        absl::string_view what = "text");
bool IsValidUtf8(absl::string_view s);
// Appends the UTF-8 encoding of `c` (surrogates and values > U+10FFFF are
// written as U+FFFD).
void AppendUtf8(char32_t c, std::string* out);
std::string EncodeUtf8(std::u32string_view s);
// Length in bytes of the longest prefix of `s` that is complete, valid UTF-8
// (streaming detokenization: never emit half a character).
size_t ValidUtf8PrefixLength(absl::string_view s);
// Like Rust's String::from_utf8_lossy: each maximal invalid subpart (Unicode
// "substitution of maximal subparts", also what Python's
// bytes.decode("utf-8", "replace") does) becomes one U+FFFD.
std::string Utf8Lossy(absl::string_view bytes);
// The code point that starts at byte `pos` of `text` and sets *length to
// its byte length; an invalid or truncated sequence gives U+FFFD, length 1.
char32_t CharAt(absl::string_view text, size_t pos, size_t* length);
// The code point that ends at byte `end` (> 0) of `text`, likewise.
char32_t CharBefore(absl::string_view text, size_t end, size_t* length);

// ---- Categories and properties --------------------------------------------

// General category indices, the order of the generated tables.
enum GeneralCategory : uint8_t {
  kLu, kLl, kLt, kLm, kLo, kMn, kMc, kMe, kNd, kNl, kNo,
  kPc, kPd, kPs, kPe, kPi, kPf, kPo, kSm, kSc, kSk, kSo,
  kZs, kZl, kZp, kCc, kCf, kCs, kCo, kCn,
  kNumGeneralCategories
};
// Masks over (1u << GeneralCategory).
inline constexpr uint32_t kMaskL = 0x1Fu;
inline constexpr uint32_t kMaskM = 0x7u << kMn;
inline constexpr uint32_t kMaskN = 0x7u << kNd;
inline constexpr uint32_t kMaskP = 0x7Fu << kPc;
inline constexpr uint32_t kMaskS = 0xFu << kSm;
inline constexpr uint32_t kMaskZ = 0x7u << kZs;
inline constexpr uint32_t kMaskC = 0x1Fu << kCc;

// Property byte of a code point (two-stage table lookup): bits 0-4 the
// GeneralCategory, then the flags below.
inline constexpr uint8_t kPropCategoryBits = 0x1F;
inline constexpr uint8_t kPropWhiteSpace = 0x20;  // White_Space (Onig \s)
inline constexpr uint8_t kPropNotNfcSafe = 0x40;  // may change under NFC
inline constexpr uint8_t kPropWordExtra = 0x80;   // So but Alphabetic (\w)
uint8_t Props(char32_t c);
inline GeneralCategory Category(char32_t c) {
  return static_cast<GeneralCategory>(Props(c) & kPropCategoryBits);
}
// Parses a general category name as accepted in \p{...}: short ("L", "Lu",
// "LC") or long ("Letter", "Uppercase_Letter"), case, spaces, '_' and '-'
// ignored. Returns false for anything else.
bool ParseCategoryName(absl::string_view name, uint32_t* mask);

bool IsLetter(char32_t c);
bool IsNumber(char32_t c);
bool IsMark(char32_t c);
bool IsPunctuation(char32_t c);
bool IsSymbol(char32_t c);
bool IsSeparator(char32_t c);
bool IsOther(char32_t c);
// The White_Space property, which is what Oniguruma's \s matches with UTF-8
// (U+0009-000D, U+0020, U+0085, U+00A0, U+1680, U+2000-200A, U+2028, U+2029,
// U+202F, U+205F, U+3000; not U+200B, U+FEFF, U+180E).
bool IsWhitespace(char32_t c);
// Oniguruma's \w: Alphabetic, marks, numbers (all of N) and Pc.
bool IsWordChar(char32_t c);

// ---- Case folding -----------------------------------------------------------

// Simple case folding (CaseFolding.txt statuses C and S) of one code point.
char32_t SimpleFold(char32_t c);
// Full case folding (C and F): writes 1 to 3 code points to out[], returns
// the count.
int FullFold(char32_t c, char32_t out[3]);
// All code points whose simple folding equals SimpleFold(c), c included.
std::u32string CaseVariants(char32_t c);

// ---- Normalization ------------------------------------------------------------

int CombiningClass(char32_t c);
std::u32string Nfc(std::u32string_view s);
std::u32string Nfd(std::u32string_view s);
std::u32string Nfkc(std::u32string_view s);
std::u32string Nfkd(std::u32string_view s);
// Fast path: true if `s` is certainly already NFC (every code point is a
// starter that neither decomposes nor combines with what precedes it, e.g.
// all of ASCII); false means "maybe not".
bool IsDefinitelyNfc(std::u32string_view s);

}  // namespace kvfold::unicode

#endif  // KVFOLD_MODELS_TOKENIZER_UNICODE_H_
