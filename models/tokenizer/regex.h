// A backtracking regex engine for the subset of Oniguruma (Ruby syntax, UTF-8)
// used by Hugging Face pre-tokenizer patterns (tokenizer.json "Regex"), with
// the match semantics of the `onig` crate that tokenizers 0.20.3 uses.
//
// Supported: literals and escapes (\t \n \r \f \v \a \e \\ \. \xHH \x{H..}
// \uHHHH, escaped punctuation), `.` (anything but \n), classes [...] with
// ranges, negation, nested classes and \s \S \d \D \w \W \h \H \p{X} \P{X}
// \p{^X} (general categories, short or long names), groups (...) (?:...)
// (?<name>...) (?i:...) (?-i:...) (?i) (?-i), alternation, quantifiers ? * +
// {n} {n,} {,m} {n,m} with lazy (?) and possessive (+, not after {}) forms,
// lookahead (?=...) (?!...), anchors ^ $ (line), \A \z \Z \b \B.
// Oniguruma quirks kept: \s is White_Space, \d is Nd, \w is Alphabetic | M |
// N | Pc, `\pL` (no braces) is the literal "pL", `x{` is literal, (?i)
// extends to the end of the enclosing group including later alternatives,
// and case-insensitive literals compare full case foldings (so (?i:ss)
// matches "ß").
// Not supported (Compile error naming the position): backreferences,
// lookbehind, atomic groups, conditionals, class intersection (&&), POSIX
// brackets, script properties, other options (?m) (?x).
// Cost: single-character repeats (\p{L}+, \s*, [^...]{1,3}) are iterative,
// and backtracking into them only retries positions where the continuation
// can start; quantified groups ((?:ab)+) recurse once per iteration, so they
// are meant for short runs (none of the pre-tokenizer patterns has one).
#ifndef KVFOLD_MODELS_TOKENIZER_REGEX_H_
#define KVFOLD_MODELS_TOKENIZER_REGEX_H_

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kvfold {

class Regex {
 public:
  // Compiles a UTF-8 pattern. Errors name the code point offset in the
  // pattern and the construct.
  static absl::StatusOr<Regex> Compile(absl::string_view pattern);

  // All matches scanning left to right over `text`, as [begin, end) code
  // point offsets, exactly as tokenizers' onig find_iter yields them:
  // leftmost-first (backtracking priority) matches; an empty match advances
  // the next search by one code point, and an empty match right where the
  // previous match ended is dropped. Empty matches ARE reported (tokenizers'
  // Split uses them as split points even though they produce no piece).
  void FindAll(std::u32string_view text,
               std::vector<std::pair<size_t, size_t>>* matches) const;

  // The leftmost match starting at or after `start` (the whole text is
  // visible to anchors and lookahead). Returns false if there is none.
  bool Search(std::u32string_view text, size_t start, size_t* begin,
              size_t* end) const;

  const std::string& pattern() const;

  struct Program;  // compiled form, defined in regex.cc

 private:
  explicit Regex(std::shared_ptr<const Program> p) : prog_(std::move(p)) {}
  std::shared_ptr<const Program> prog_;
};

}  // namespace kvfold

#endif  // KVFOLD_MODELS_TOKENIZER_REGEX_H_
