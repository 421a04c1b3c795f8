// Jinja lexer: template source -> text pieces and tag token lists.
// Internal to //models/chat:jinja.
#ifndef KVFOLD_MODELS_CHAT_JINJA_LEX_H_
#define KVFOLD_MODELS_CHAT_JINJA_LEX_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace kvfold::jinja::internal {

struct Token {
  enum class Type { kName, kString, kInt, kFloat, kOp, kEnd };
  Type type;
  std::string text;  // name, decoded string, operator
  int64_t int_value = 0;
  double float_value = 0;
  int line = 0, col = 0;
};

// One piece of the template: text, {{ tokens }} or {% tokens %}.
struct Piece {
  enum class Type { kText, kOutput, kBlock };
  Type type;
  std::string text;
  std::vector<Token> tokens;  // ends with kEnd
  int line = 0, col = 0;
};

// Splits `source` into pieces, applying whitespace control, trim_blocks,
// lstrip_blocks, {% raw %} and comments. Errors name `name:line:col`.
absl::StatusOr<std::vector<Piece>> Lex(std::string_view source,
                                       const std::string& name);

}  // namespace kvfold::jinja::internal

#endif  // KVFOLD_MODELS_CHAT_JINJA_LEX_H_
