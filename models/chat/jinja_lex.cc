// Jinja lexer, following jinja2's with trim_blocks and lstrip_blocks on and
// keep_trailing_newline off: newlines are normalised to "\n", one trailing
// newline of the template is dropped, "{%-"/"-%}" (and for {{ }} and {# #})
// strip all whitespace on that side, "{%+" disables lstrip_blocks, a block or
// comment tag alone on its line loses the indentation before it, and the
// first newline after a block or comment tag is removed.
#include "models/chat/jinja_lex.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "models/chat/jinja.h"
#include "models/chat/jinja_internal.h"

namespace kvfold::jinja::internal {
namespace {

bool IsSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' ||
         c == '\f';
}

class Lexer {
 public:
  Lexer(std::string_view source, const std::string& name) : name_(name) {
    // Normalise newlines; drop one trailing newline (keep_trailing_newline
    // off).
    src_.reserve(source.size());
    for (size_t i = 0; i < source.size(); ++i) {
      if (source[i] == '\r') {
        src_ += '\n';
        if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
      } else {
        src_ += source[i];
      }
    }
    if (!src_.empty() && src_.back() == '\n') src_.pop_back();
    line_starts_.push_back(0);
    for (size_t i = 0; i < src_.size(); ++i) {
      if (src_[i] == '\n') line_starts_.push_back(i + 1);
    }
  }

  absl::StatusOr<std::vector<Piece>> Run() {
    std::vector<Piece> pieces;
    size_t pos = 0;
    bool strip_next = false;  // previous tag ended with '-'
    bool trim_next = false;   // previous tag was a block/comment (trim_blocks)
    while (pos <= src_.size()) {
      size_t tag = FindTag(pos);
      std::string text = src_.substr(pos, tag - pos);
      bool at_line_start = pos == 0 || src_[pos - 1] == '\n';
      if (strip_next) {
        size_t k = 0;
        while (k < text.size() && IsSpace(text[k])) ++k;
        if (k > 0) at_line_start = text[k - 1] == '\n' || at_line_start;
        text.erase(0, k);
      } else if (trim_next && !text.empty() && text[0] == '\n') {
        text.erase(0, 1);
        at_line_start = true;
      }
      if (tag == src_.size()) {
        AddText(pieces, std::move(text), pos);
        break;
      }
      char kind = src_[tag + 1];  // '{', '%' or '#'
      char mod = tag + 2 < src_.size() ? src_[tag + 2] : 0;
      if (mod == '-') {
        while (!text.empty() && IsSpace(text.back())) text.pop_back();
      } else if (mod != '+' && kind != '{') {
        // lstrip_blocks: only spaces/tabs between the line start and tag.
        size_t k = text.size();
        while (k > 0 && (text[k - 1] == ' ' || text[k - 1] == '\t')) --k;
        if ((k == 0 && at_line_start) || (k > 0 && text[k - 1] == '\n')) {
          text.resize(k);
        }
      }
      AddText(pieces, std::move(text), pos);
      size_t body = tag + 2 + ((mod == '-' || mod == '+') ? 1 : 0);
      auto [line, col] = LineCol(tag);
      if (kind == '#') {
        size_t end = src_.find("#}", body);
        if (end == std::string::npos) {
          return Error(tag, "unclosed comment: missing '#}'");
        }
        strip_next = end > body && src_[end - 1] == '-';
        trim_next = true;
        pos = end + 2;
        continue;
      }
      Piece piece;
      piece.type = kind == '{' ? Piece::Type::kOutput : Piece::Type::kBlock;
      piece.line = line;
      piece.col = col;
      auto end = Tokenize(body, kind == '{' ? "}}" : "%}", &piece.tokens);
      if (!end.ok()) return end.status();
      strip_next = end->second;
      trim_next = kind == '%';
      pos = end->first;
      if (piece.type == Piece::Type::kBlock && piece.tokens.size() == 2 &&
          piece.tokens[0].type == Token::Type::kName &&
          piece.tokens[0].text == "raw") {
        auto raw = ReadRaw(pos, strip_next, tag);
        if (!raw.ok()) return raw.status();
        AddText(pieces, std::move(raw->first), pos);
        pos = raw->second.first;
        strip_next = raw->second.second;
        trim_next = true;
        continue;
      }
      pieces.push_back(std::move(piece));
    }
    return pieces;
  }

 private:
  void AddText(std::vector<Piece>& pieces, std::string text, size_t pos) {
    if (text.empty()) return;
    Piece p;
    p.type = Piece::Type::kText;
    p.text = std::move(text);
    auto [line, col] = LineCol(pos);
    p.line = line;
    p.col = col;
    pieces.push_back(std::move(p));
  }

  size_t FindTag(size_t pos) const {
    while (true) {
      size_t t = src_.find('{', pos);
      if (t == std::string::npos || t + 1 >= src_.size()) return src_.size();
      char c = src_[t + 1];
      if (c == '{' || c == '%' || c == '#') return t;
      pos = t + 1;
    }
  }

  std::pair<int, int> LineCol(size_t pos) const {
    // line_starts_[k] is the offset where line k+1 begins.
    auto it = std::upper_bound(line_starts_.begin(), line_starts_.end(), pos);
    size_t line = size_t(it - line_starts_.begin());
    return {int(line), int(pos - line_starts_[line - 1]) + 1};
  }

  absl::Status Error(size_t pos, std::string_view msg) const {
    auto [line, col] = LineCol(pos);
    return absl::InvalidArgumentError(
        Cat(name_, ":", line, ":", col, ": ", msg));
  }

  // Text up to {% endraw %}; returns (text, (position after, strip_next)).
  absl::StatusOr<std::pair<std::string, std::pair<size_t, bool>>> ReadRaw(
      size_t pos, bool strip_leading, size_t open) {
    size_t search = pos;
    while (true) {
      size_t t = src_.find("{%", search);
      if (t == std::string::npos) return Error(open, "missing {% endraw %}");
      size_t i = t + 2;
      bool strip_before = i < src_.size() && src_[i] == '-';
      if (i < src_.size() && (src_[i] == '-' || src_[i] == '+')) ++i;
      while (i < src_.size() && IsSpace(src_[i])) ++i;
      if (src_.compare(i, 6, "endraw") != 0) {
        search = t + 2;
        continue;
      }
      i += 6;
      while (i < src_.size() && IsSpace(src_[i])) ++i;
      bool strip_after = i < src_.size() && src_[i] == '-';
      if (strip_after) ++i;
      if (src_.compare(i, 2, "%}") != 0) {
        search = t + 2;
        continue;
      }
      std::string text = src_.substr(pos, t - pos);
      if (strip_leading) {
        size_t k = 0;
        while (k < text.size() && IsSpace(text[k])) ++k;
        text.erase(0, k);
      } else if (!text.empty() && text[0] == '\n') {
        text.erase(0, 1);  // trim_blocks after {% raw %}
      }
      if (strip_before) {
        while (!text.empty() && IsSpace(text.back())) text.pop_back();
      }
      return std::make_pair(std::move(text), std::make_pair(i + 2, strip_after));
    }
  }

  // Tokens from `pos` up to the closing delimiter; returns (position after
  // it, whether it was preceded by '-').
  absl::StatusOr<std::pair<size_t, bool>> Tokenize(size_t pos,
                                                   std::string_view close,
                                                   std::vector<Token>* out) {
    int depth = 0;  // open ( [ { so that "}}" inside a dict is not the end
    size_t i = pos;
    while (true) {
      while (i < src_.size() && IsSpace(src_[i])) ++i;
      if (i >= src_.size()) {
        return Error(pos, Cat("unexpected end of template: missing '",
                                       close, "'"));
      }
      auto [line, col] = LineCol(i);
      if (depth == 0) {
        if (src_[i] == '-' && src_.compare(i + 1, close.size(), close) == 0) {
          out->push_back(Token{Token::Type::kEnd, "", 0, 0, line, col});
          return std::make_pair(i + 1 + close.size(), true);
        }
        if (src_.compare(i, close.size(), close) == 0) {
          out->push_back(Token{Token::Type::kEnd, "", 0, 0, line, col});
          return std::make_pair(i + close.size(), false);
        }
      }
      Token tok;
      tok.line = line;
      tok.col = col;
      char c = src_[i];
      if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
        size_t j = i;
        while (j < src_.size() &&
               (std::isalnum(static_cast<unsigned char>(src_[j])) ||
                src_[j] == '_')) {
          ++j;
        }
        tok.type = Token::Type::kName;
        tok.text = src_.substr(i, j - i);
        i = j;
      } else if (std::isdigit(static_cast<unsigned char>(c))) {
        size_t j = i;
        bool is_float = false;
        while (j < src_.size() &&
               (std::isdigit(static_cast<unsigned char>(src_[j])) ||
                src_[j] == '_')) {
          ++j;
        }
        if (j + 1 < src_.size() && src_[j] == '.' &&
            std::isdigit(static_cast<unsigned char>(src_[j + 1]))) {
          is_float = true;
          ++j;
          while (j < src_.size() &&
                 std::isdigit(static_cast<unsigned char>(src_[j]))) {
            ++j;
          }
        }
        if (j < src_.size() && (src_[j] == 'e' || src_[j] == 'E')) {
          size_t k = j + 1;
          if (k < src_.size() && (src_[k] == '+' || src_[k] == '-')) ++k;
          if (k < src_.size() &&
              std::isdigit(static_cast<unsigned char>(src_[k]))) {
            is_float = true;
            j = k;
            while (j < src_.size() &&
                   std::isdigit(static_cast<unsigned char>(src_[j]))) {
              ++j;
            }
          }
        }
        std::string digits;
        for (size_t k = i; k < j; ++k) {
          if (src_[k] != '_') digits += src_[k];
        }
        if (is_float) {
          tok.type = Token::Type::kFloat;
          tok.float_value = std::strtod(digits.c_str(), nullptr);
        } else {
          tok.type = Token::Type::kInt;
          errno = 0;
          tok.int_value = std::strtoll(digits.c_str(), nullptr, 10);
          if (errno == ERANGE) return Error(i, "integer literal too large");
        }
        i = j;
      } else if (c == '\'' || c == '"') {
        auto s = ReadString(i, &tok.text);
        if (!s.ok()) return s.status();
        tok.type = Token::Type::kString;
        i = *s;
      } else {
        static constexpr std::string_view kOps[] = {
            "//", "**", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "~",
            "<",  ">",  "=",  "(",  ")",  "[",  "]", "{", "}", ",", ".", ":",
            "|"};
        std::string_view op;
        for (std::string_view o : kOps) {
          if (src_.compare(i, o.size(), o) == 0) {
            op = o;
            break;
          }
        }
        if (op.empty()) {
          return Error(i, Cat("unexpected character '",
                                       std::string(1, c), "'"));
        }
        if (op == "(" || op == "[" || op == "{") ++depth;
        if (op == ")" || op == "]" || op == "}") {
          if (depth == 0) {
            return Error(i, Cat("unexpected '", op, "'"));
          }
          --depth;
        }
        tok.type = Token::Type::kOp;
        tok.text = std::string(op);
        i += op.size();
      }
      out->push_back(std::move(tok));
    }
  }

  // Decodes a quoted string with Python escapes; returns the end position.
  absl::StatusOr<size_t> ReadString(size_t i, std::string* out) {
    char quote = src_[i];
    size_t j = i + 1;
    while (j < src_.size() && src_[j] != quote) {
      char c = src_[j];
      if (c != '\\' || j + 1 >= src_.size()) {
        *out += c;
        ++j;
        continue;
      }
      char e = src_[j + 1];
      j += 2;
      switch (e) {
        case 'n': *out += '\n'; break;
        case 't': *out += '\t'; break;
        case 'r': *out += '\r'; break;
        case '0': *out += '\0'; break;
        case 'a': *out += '\a'; break;
        case 'b': *out += '\b'; break;
        case 'f': *out += '\f'; break;
        case 'v': *out += '\v'; break;
        case '\\': *out += '\\'; break;
        case '\'': *out += '\''; break;
        case '"': *out += '"'; break;
        case '\n': break;  // line continuation
        case 'x': case 'u': case 'U': {
          size_t n = e == 'x' ? 2 : e == 'u' ? 4 : 8;
          if (j + n > src_.size()) return Error(i, "truncated escape");
          uint32_t cp = 0;
          for (size_t k = 0; k < n; ++k) {
            char h = src_[j + k];
            if (!std::isxdigit(static_cast<unsigned char>(h))) {
              return Error(i, "bad escape in string literal");
            }
            cp = cp * 16 + (std::isdigit(static_cast<unsigned char>(h))
                                ? h - '0'
                                : std::tolower(h) - 'a' + 10);
          }
          j += n;
          if (cp > 0x10FFFF) return Error(i, "bad escape in string literal");
          AppendUtf8(cp, out);
          break;
        }
        default:
          *out += '\\';
          *out += e;
      }
    }
    if (j >= src_.size()) return Error(i, "unterminated string literal");
    return j + 1;
  }

  static void AppendUtf8(uint32_t cp, std::string* out) {
    if (cp < 0x80) {
      *out += char(cp);
    } else if (cp < 0x800) {
      *out += char(0xC0 | (cp >> 6));
      *out += char(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      *out += char(0xE0 | (cp >> 12));
      *out += char(0x80 | ((cp >> 6) & 0x3F));
      *out += char(0x80 | (cp & 0x3F));
    } else {
      *out += char(0xF0 | (cp >> 18));
      *out += char(0x80 | ((cp >> 12) & 0x3F));
      *out += char(0x80 | ((cp >> 6) & 0x3F));
      *out += char(0x80 | (cp & 0x3F));
    }
  }

  std::string src_;
  std::vector<size_t> line_starts_;
  const std::string& name_;
};

}  // namespace

absl::StatusOr<std::vector<Piece>> Lex(std::string_view source,
                                       const std::string& name) {
  Lexer lexer(source, name);
  return lexer.Run();
}

}  // namespace kvfold::jinja::internal
