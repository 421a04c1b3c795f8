#include "models/tokenizer/decoders.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/status_macros.h"
#include "models/tokenizer/byte_level.h"
#include "models/tokenizer/json_util.h"
#include "models/tokenizer/unicode.h"

namespace kvfold {
namespace {

using tokenizer_json::FieldError;
using tokenizer_json::json;

constexpr char kReplacementChar[] = "\xEF\xBF\xBD";  // U+FFFD

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

// "<0xNN>" -> NN, else -1.
int ByteToken(const std::string& t) {
  if (t.size() != 6 || t.compare(0, 3, "<0x") != 0 || t[5] != '>') return -1;
  const int hi = HexDigit(t[3]), lo = HexDigit(t[4]);
  return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

}  // namespace

absl::Status Decoder::Add(const json& j, const std::string& where, std::vector<Step>* steps) {
  KVFOLD_ASSIGN_OR_RETURN(std::string type, tokenizer_json::GetType(j, where));
  if (type == "Sequence") {
    auto it = j.find("decoders");
    if (it == j.end() || !it->is_array()) return FieldError(where, "missing \"decoders\"");
    for (size_t i = 0; i < it->size(); ++i) {
      KVFOLD_RETURN_IF_ERROR(Add((*it)[i], absl::StrCat(where, ".decoders[", i, "]"), steps));
    }
    return absl::OkStatus();
  }
  Step step;
  if (type == "ByteLevel") {
    step.kind = Step::kByteLevel;
  } else if (type == "ByteFallback") {
    step.kind = Step::kByteFallback;
  } else if (type == "Fuse") {
    step.kind = Step::kFuse;
  } else if (type == "Strip") {
    step.kind = Step::kStrip;
    KVFOLD_ASSIGN_OR_RETURN(step.content, tokenizer_json::GetString(j, "content", where));
    std::u32string one;
    if (!unicode::DecodeUtf8(step.content, &one).ok() || one.size() != 1) {
      return FieldError(where, "\"content\" must be one character");
    }
    KVFOLD_ASSIGN_OR_RETURN(int64_t start, tokenizer_json::GetInt(j, "start", 0, where));
    KVFOLD_ASSIGN_OR_RETURN(int64_t stop, tokenizer_json::GetInt(j, "stop", 0, where));
    step.start = static_cast<size_t>(start);
    step.stop = static_cast<size_t>(stop);
  } else if (type == "Replace") {
    step.kind = Step::kReplace;
    KVFOLD_ASSIGN_OR_RETURN(step.content, tokenizer_json::GetString(j, "content", where));
    auto it = j.find("pattern");
    if (it == j.end()) return FieldError(where, "missing \"pattern\"");
    KVFOLD_ASSIGN_OR_RETURN(step.pattern, TextPattern::FromJson(*it, where + ".pattern"));
  } else if (type == "Metaspace") {
    step.kind = Step::kMetaspace;
    KVFOLD_ASSIGN_OR_RETURN(step.content, tokenizer_json::GetString(j, "replacement", where));
    std::u32string one;
    if (!unicode::DecodeUtf8(step.content, &one).ok() || one.size() != 1) {
      return FieldError(where, "\"replacement\" must be one character");
    }
    KVFOLD_ASSIGN_OR_RETURN(bool add_prefix,
                            tokenizer_json::GetBool(j, "add_prefix_space", true, where));
    KVFOLD_ASSIGN_OR_RETURN(
        std::string scheme,
        tokenizer_json::GetOptionalString(j, "prepend_scheme",
                                          add_prefix ? "always" : "never", where));
    step.drop_first_space = scheme != "never";
  } else {
    return FieldError(where, absl::StrCat("decoder type \"", type,
                                          "\" is not supported (supported: ByteLevel, "
                                          "ByteFallback, Fuse, Strip, Replace, Metaspace, "
                                          "Sequence)"));
  }
  steps->push_back(std::move(step));
  return absl::OkStatus();
}

absl::StatusOr<Decoder> Decoder::FromJson(const json& j, absl::string_view where) {
  Decoder d;
  if (j.is_null()) return d;
  d.present_ = true;
  KVFOLD_RETURN_IF_ERROR(Add(j, std::string(where), &d.steps_));
  return d;
}

std::vector<std::string> Decoder::Apply(const Step& step, std::vector<std::string> tokens) {
  switch (step.kind) {
    case Step::kByteLevel: {
      // Each token's characters back to bytes (a token with a character
      // outside the table keeps its UTF-8), then lossy UTF-8 of the whole.
      std::string bytes;
      std::u32string chars;
      for (const std::string& t : tokens) {
        bool all = unicode::DecodeUtf8(t, &chars).ok();
        std::string raw;
        for (char32_t c : chars) {
          if (!all) break;
          const int b = byte_level::CharToByte(c);
          if (b < 0) all = false;
          raw.push_back(char(b));
        }
        bytes += all ? raw : t;
      }
      return {unicode::Utf8Lossy(bytes)};
    }
    case Step::kByteFallback: {
      std::vector<std::string> out;
      std::string pending;
      auto flush = [&] {
        if (pending.empty()) return;
        if (unicode::IsValidUtf8(pending)) {
          out.push_back(pending);
        } else {
          for (size_t i = 0; i < pending.size(); ++i) out.push_back(kReplacementChar);
        }
        pending.clear();
      };
      for (std::string& t : tokens) {
        const int b = ByteToken(t);
        if (b >= 0) {
          pending.push_back(char(b));
        } else {
          flush();
          out.push_back(std::move(t));
        }
      }
      flush();
      return out;
    }
    case Step::kFuse:
      return {absl::StrJoin(tokens, "")};
    case Step::kStrip: {
      std::u32string content;
      (void)unicode::DecodeUtf8(step.content, &content);
      for (std::string& t : tokens) {
        std::u32string chars;
        if (!unicode::DecodeUtf8(t, &chars).ok()) continue;
        size_t begin = 0, end = chars.size();
        for (size_t i = 0; i < step.start && i < chars.size() && chars[i] == content[0]; ++i) {
          begin = i + 1;
        }
        for (size_t i = 0; i < step.stop && i < chars.size(); ++i) {
          const size_t index = chars.size() - i - 1;
          if (chars[index] != content[0]) break;
          end = index;
        }
        t = begin < end ? unicode::EncodeUtf8(std::u32string_view(chars).substr(
                              begin, end - begin))
                        : std::string();
      }
      return tokens;
    }
    case Step::kReplace:
      for (std::string& t : tokens) {
        std::string out;
        size_t last = 0;
        step.pattern.FindAll(t, [&](size_t b, size_t e) {
          out.append(t, last, b - last);
          out += step.content;
          last = e;
        });
        out.append(t, last, std::string::npos);
        t = std::move(out);
      }
      return tokens;
    case Step::kMetaspace:
      for (size_t i = 0; i < tokens.size(); ++i) {
        std::string out;
        const std::string& t = tokens[i];
        for (size_t at = 0; at < t.size();) {
          if (t.compare(at, step.content.size(), step.content) == 0) {
            if (!(i == 0 && step.drop_first_space)) out.push_back(' ');
            at += step.content.size();
          } else {
            out.push_back(t[at++]);
          }
        }
        tokens[i] = std::move(out);
      }
      return tokens;
  }
  return tokens;
}

std::string Decoder::Decode(std::vector<std::string> tokens) const {
  if (!present_) return absl::StrJoin(tokens, " ");
  for (const Step& step : steps_) tokens = Apply(step, std::move(tokens));
  return absl::StrJoin(tokens, "");
}

}  // namespace kvfold
