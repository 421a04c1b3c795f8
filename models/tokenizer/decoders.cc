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

}  // namespace

int ByteFallbackValue(absl::string_view t) {
  if (t.size() != 6 || t.substr(0, 3) != "<0x" || t[5] != '>') return -1;
  const int hi = HexDigit(t[3]), lo = HexDigit(t[4]);
  return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

absl::Status Decoder::Add(const json& j, const std::string& where, std::vector<Step>* steps) {
  KVFOLD_ASSIGN_OR_RETURN(std::string type, tokenizer_json::GetType(j, where));
  if (type == "Sequence") {
    return tokenizer_json::ForEachInSequence(
        j, "decoders", where,
        [&](const json& item, const std::string& at) { return Add(item, at, steps); });
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
    KVFOLD_ASSIGN_OR_RETURN(const std::string content,
                            tokenizer_json::GetChar(j, "content", where));
    size_t length;
    step.strip_char = unicode::CharAt(content, 0, &length);
    KVFOLD_ASSIGN_OR_RETURN(int64_t start, tokenizer_json::GetInt(j, "start", 0, where));
    KVFOLD_ASSIGN_OR_RETURN(int64_t stop, tokenizer_json::GetInt(j, "stop", 0, where));
    step.start = static_cast<size_t>(start);
    step.stop = static_cast<size_t>(stop);
  } else if (type == "Replace") {
    step.kind = Step::kReplace;
    KVFOLD_ASSIGN_OR_RETURN(step.content, tokenizer_json::GetString(j, "content", where));
    KVFOLD_ASSIGN_OR_RETURN(step.pattern, TextPattern::FromField(j, "pattern", where));
  } else if (type == "Metaspace") {
    step.kind = Step::kMetaspace;
    KVFOLD_ASSIGN_OR_RETURN(step.content, tokenizer_json::GetChar(j, "replacement", where));
    KVFOLD_ASSIGN_OR_RETURN(const std::string scheme,
                            tokenizer_json::GetPrependScheme(j, where));
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
        const int b = ByteFallbackValue(t);
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
    case Step::kStrip:
      for (std::string& t : tokens) {
        std::u32string chars;
        if (!unicode::DecodeUtf8(t, &chars).ok()) continue;
        size_t begin = 0, end = chars.size();
        while (begin < step.start && begin < end && chars[begin] == step.strip_char) ++begin;
        while (chars.size() - end < step.stop && end > begin && chars[end - 1] == step.strip_char) {
          --end;
        }
        t = unicode::EncodeUtf8(std::u32string_view(chars).substr(begin, end - begin));
      }
      return tokens;
    case Step::kReplace:
      for (std::string& t : tokens) t = step.pattern.ReplaceAll(t, step.content);
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
