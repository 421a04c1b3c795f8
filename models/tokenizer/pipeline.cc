#include "models/tokenizer/pipeline.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "kernels/status_macros.h"
#include "models/tokenizer/json_util.h"
#include "models/tokenizer/unicode.h"

namespace kvfold {
namespace {

using tokenizer_json::FieldError;
using tokenizer_json::json;

// The GPT-2 pattern ByteLevel(use_regex=true) splits with.
constexpr char kGpt2Pattern[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

bool IsAscii(absl::string_view s) {
  for (unsigned char c : s) {
    if (c >= 0x80) return false;
  }
  return true;
}

// Calls on_match for each code point of `text` that `pred` accepts.
template <typename Pred>
void FindChars(absl::string_view text, Pred pred,
               absl::FunctionRef<void(size_t, size_t)> on_match) {
  size_t n = 0;
  for (size_t i = 0; i < text.size(); i += n) {
    if (pred(unicode::CharAt(text, i, &n))) on_match(i, i + n);
  }
}

}  // namespace

absl::StatusOr<TextPattern> TextPattern::FromJson(const json& j, absl::string_view where) {
  TextPattern p;
  if (!j.is_object() || j.size() != 1) {
    return FieldError(where, "must be {\"String\": ...} or {\"Regex\": ...}");
  }
  if (auto it = j.find("String"); it != j.end() && it->is_string()) {
    p.literal = it->get<std::string>();
    return p;
  }
  if (auto it = j.find("Regex"); it != j.end() && it->is_string()) {
    absl::StatusOr<Regex> re = Regex::Compile(it->get<std::string>());
    if (!re.ok()) return FieldError(where, re.status().message());
    p.regex = std::make_shared<const Regex>(std::move(*re));
    return p;
  }
  return FieldError(where, "must be {\"String\": ...} or {\"Regex\": ...}");
}

absl::StatusOr<TextPattern> TextPattern::FromField(const json& obj, const char* key,
                                                   const std::string& where) {
  auto it = obj.find(key);
  if (it == obj.end()) return FieldError(where, absl::StrCat("missing \"", key, "\""));
  return FromJson(*it, absl::StrCat(where, ".", key));
}

std::string TextPattern::ReplaceAll(absl::string_view text, absl::string_view with) const {
  std::string out;
  size_t last = 0;
  FindAll(text, [&](size_t b, size_t e) {
    absl::StrAppend(&out, text.substr(last, b - last), with);
    last = e;
  });
  absl::StrAppend(&out, text.substr(last));
  return out;
}

void TextPattern::FindAll(absl::string_view text,
                          absl::FunctionRef<void(size_t, size_t)> on_match) const {
  if (!regex) {
    if (literal.empty()) return;
    for (size_t at = text.find(literal); at != absl::string_view::npos;
         at = text.find(literal, at + literal.size())) {
      on_match(at, at + literal.size());
    }
    return;
  }
  std::u32string cps;
  if (!unicode::DecodeUtf8(text, &cps).ok()) return;  // callers pass valid UTF-8
  std::vector<std::pair<size_t, size_t>> spans;
  regex->FindAll(cps, &spans);
  // Code point offsets -> byte offsets, walking forward once.
  size_t cp = 0, byte = 0, n = 0;
  auto advance = [&](size_t to) {
    for (; cp < to; ++cp, byte += n) unicode::CharAt(text, byte, &n);
    return byte;
  };
  for (const auto& [b, e] : spans) {
    const size_t begin = advance(b);
    on_match(begin, advance(e));
  }
}

absl::Status Normalizer::Add(const json& j, const std::string& where,
                             std::vector<Step>* steps) {
  KVFOLD_ASSIGN_OR_RETURN(std::string type, tokenizer_json::GetType(j, where));
  if (type == "Sequence") {
    return tokenizer_json::ForEachInSequence(
        j, "normalizers", where,
        [&](const json& item, const std::string& at) { return Add(item, at, steps); });
  }
  Step step;
  if (type == "NFC") {
    step.kind = Step::kNfc;
  } else if (type == "NFD") {
    step.kind = Step::kNfd;
  } else if (type == "NFKC") {
    step.kind = Step::kNfkc;
  } else if (type == "NFKD") {
    step.kind = Step::kNfkd;
  } else if (type == "Prepend") {
    step.kind = Step::kPrepend;
    KVFOLD_ASSIGN_OR_RETURN(step.text, tokenizer_json::GetString(j, "prepend", where));
  } else if (type == "Replace") {
    step.kind = Step::kReplace;
    KVFOLD_ASSIGN_OR_RETURN(step.text, tokenizer_json::GetString(j, "content", where));
    KVFOLD_ASSIGN_OR_RETURN(step.pattern, TextPattern::FromField(j, "pattern", where));
  } else {
    return FieldError(where, absl::StrCat("normalizer type \"", type,
                                          "\" is not supported (supported: NFC, NFD, "
                                          "NFKC, NFKD, Prepend, Replace, Sequence)"));
  }
  steps->push_back(std::move(step));
  return absl::OkStatus();
}

absl::StatusOr<Normalizer> Normalizer::FromJson(const json& j, absl::string_view where) {
  Normalizer n;
  if (j.is_null()) return n;
  KVFOLD_RETURN_IF_ERROR(Add(j, std::string(where), &n.steps_));
  return n;
}

std::string Normalizer::Apply(absl::string_view input) const {
  std::string text(input);
  for (const Step& step : steps_) {
    switch (step.kind) {
      case Step::kNfc:
      case Step::kNfd:
      case Step::kNfkc:
      case Step::kNfkd: {
        if (IsAscii(text)) break;  // ASCII is in every normal form
        std::u32string cps;
        if (!unicode::DecodeUtf8(text, &cps).ok()) break;
        std::u32string out = step.kind == Step::kNfc    ? unicode::Nfc(cps)
                             : step.kind == Step::kNfd  ? unicode::Nfd(cps)
                             : step.kind == Step::kNfkc ? unicode::Nfkc(cps)
                                                        : unicode::Nfkd(cps);
        text = unicode::EncodeUtf8(out);
        break;
      }
      case Step::kPrepend:
        if (!text.empty()) text.insert(0, step.text);
        break;
      case Step::kReplace:
        text = step.pattern.ReplaceAll(text, step.text);
        break;
    }
  }
  return text;
}

absl::Status PreTokenizer::Add(const json& j, const std::string& where,
                               std::vector<Step>* steps) {
  KVFOLD_ASSIGN_OR_RETURN(std::string type, tokenizer_json::GetType(j, where));
  if (!steps->empty() && steps->back().kind == Step::kByteLevel) {
    return FieldError(where, "kvfold supports ByteLevel only as the last pre-tokenizer");
  }
  if (type == "Sequence") {
    return tokenizer_json::ForEachInSequence(
        j, "pretokenizers", where,
        [&](const json& item, const std::string& at) { return Add(item, at, steps); });
  }
  Step step;
  if (type == "ByteLevel") {
    step.kind = Step::kByteLevel;
    KVFOLD_ASSIGN_OR_RETURN(step.add_prefix_space,
                            tokenizer_json::GetBool(j, "add_prefix_space", true, where));
    KVFOLD_ASSIGN_OR_RETURN(step.use_regex,
                            tokenizer_json::GetBool(j, "use_regex", true, where));
    if (step.use_regex) {
      KVFOLD_ASSIGN_OR_RETURN(step.pattern,
                              TextPattern::FromJson(json{{"Regex", kGpt2Pattern}}, where));
    }
  } else if (type == "Split") {
    step.kind = Step::kSplit;
    KVFOLD_ASSIGN_OR_RETURN(step.pattern, TextPattern::FromField(j, "pattern", where));
    KVFOLD_ASSIGN_OR_RETURN(std::string behavior,
                            tokenizer_json::GetString(j, "behavior", where));
    if (behavior == "Removed") {
      step.behavior = Behavior::kRemoved;
    } else if (behavior == "Isolated") {
      step.behavior = Behavior::kIsolated;
    } else if (behavior == "MergedWithPrevious") {
      step.behavior = Behavior::kMergedWithPrevious;
    } else if (behavior == "MergedWithNext") {
      step.behavior = Behavior::kMergedWithNext;
    } else if (behavior == "Contiguous") {
      step.behavior = Behavior::kContiguous;
    } else {
      return FieldError(where, absl::StrCat("unknown behavior \"", behavior, "\""));
    }
    KVFOLD_ASSIGN_OR_RETURN(step.invert, tokenizer_json::GetBool(j, "invert", false, where));
  } else if (type == "Metaspace") {
    step.kind = Step::kMetaspace;
    KVFOLD_ASSIGN_OR_RETURN(step.replacement,
                            tokenizer_json::GetChar(j, "replacement", where));
    step.pattern.literal = step.replacement;  // where split=true cuts
    KVFOLD_ASSIGN_OR_RETURN(step.split, tokenizer_json::GetBool(j, "split", true, where));
    KVFOLD_ASSIGN_OR_RETURN(const std::string scheme,
                            tokenizer_json::GetPrependScheme(j, where));
    step.prepend = scheme == "always" ? Step::kAlways
                   : scheme == "first" ? Step::kFirst
                                       : Step::kNever;
  } else if (type == "Digits") {
    step.kind = Step::kDigits;
    KVFOLD_ASSIGN_OR_RETURN(step.individual_digits,
                            tokenizer_json::GetBool(j, "individual_digits", false, where));
  } else {
    return FieldError(where, absl::StrCat("pre_tokenizer type \"", type,
                                          "\" is not supported (supported: ByteLevel, "
                                          "Split, Metaspace, Digits, Sequence)"));
  }
  steps->push_back(std::move(step));
  return absl::OkStatus();
}

absl::StatusOr<PreTokenizer> PreTokenizer::FromJson(const json& j, absl::string_view where) {
  PreTokenizer p;
  if (j.is_null()) return p;
  KVFOLD_RETURN_IF_ERROR(Add(j, std::string(where), &p.steps_));
  p.byte_level_ = !p.steps_.empty() && p.steps_.back().kind == Step::kByteLevel;
  return p;
}

void PreTokenizer::SplitBy(
    absl::string_view text, Behavior behavior, bool invert,
    absl::FunctionRef<void(absl::FunctionRef<void(size_t, size_t)>)> find,
    absl::FunctionRef<void(absl::string_view, bool)> emit) {
  // Spans arrive in order and cover the text; `pending` holds the one a
  // merging behavior may still extend.
  bool has_pending = false, pending_match = false, previous_match = false;
  size_t pending_begin = 0, pending_end = 0;
  auto out = [&](size_t b, size_t e) {
    if (e > b) emit(text.substr(b, e - b), b == 0);
  };
  auto flush = [&] {
    if (has_pending) out(pending_begin, pending_end);
    has_pending = false;
  };
  auto hold = [&](size_t b, size_t e, bool match) {
    has_pending = true;
    pending_begin = b;
    pending_end = e;
    pending_match = match;
  };
  auto span = [&](size_t b, size_t e, bool match) {
    if (invert) match = !match;
    switch (behavior) {
      case Behavior::kIsolated:
        out(b, e);
        break;
      case Behavior::kRemoved:
        if (!match) out(b, e);
        break;
      case Behavior::kContiguous:
        if (has_pending && match == previous_match) {
          pending_end = e;
        } else {
          flush();
          hold(b, e, match);
        }
        break;
      case Behavior::kMergedWithPrevious:
        if (has_pending && match && !previous_match) {
          pending_end = e;
        } else {
          flush();
          hold(b, e, match);
        }
        break;
      case Behavior::kMergedWithNext:
        // A match joins the span after it when that one is not a match.
        if (has_pending && pending_match && !match) {
          out(pending_begin, e);
          has_pending = false;
        } else {
          flush();
          if (match) {
            hold(b, e, match);
          } else {
            out(b, e);
          }
        }
        break;
    }
    previous_match = match;
  };
  size_t pos = 0;
  find([&](size_t b, size_t e) {
    if (pos < b) span(pos, b, false);
    span(b, e, true);
    pos = e;
  });
  if (pos < text.size()) span(pos, text.size(), false);
  flush();
}

void PreTokenizer::Run(absl::string_view text, bool at_start,
                       absl::FunctionRef<void(absl::string_view)> emit) const {
  RunStep(0, text, at_start, emit);
}

void PreTokenizer::RunStep(size_t index, absl::string_view text, bool at_start,
                           absl::FunctionRef<void(absl::string_view)> emit) const {
  if (text.empty()) return;
  if (index == steps_.size()) {
    emit(text);
    return;
  }
  const Step& step = steps_[index];
  auto next = [&](absl::string_view piece, bool first) {
    RunStep(index + 1, piece, at_start && first, emit);
  };
  switch (step.kind) {
    case Step::kSplit:
      SplitBy(text, step.behavior, step.invert,
              [&](auto on_match) { step.pattern.FindAll(text, on_match); }, next);
      return;
    case Step::kDigits:
      SplitBy(text, step.individual_digits ? Behavior::kIsolated : Behavior::kContiguous,
              false,
              [&](auto on_match) { FindChars(text, unicode::IsNumber, on_match); }, next);
      return;
    case Step::kByteLevel: {
      std::string buffer;
      absl::string_view input = text;
      if (step.add_prefix_space && text[0] != ' ') {
        buffer = absl::StrCat(" ", text);
        input = buffer;
      }
      if (!step.use_regex) {
        next(input, true);
        return;
      }
      SplitBy(input, Behavior::kIsolated, false,
              [&](auto on_match) { step.pattern.FindAll(input, on_match); }, next);
      return;
    }
    case Step::kMetaspace: {
      std::string buffer = absl::StrReplaceAll(text, {{" ", step.replacement}});
      if (!absl::StartsWith(buffer, step.replacement) &&
          (step.prepend == Step::kAlways || (step.prepend == Step::kFirst && at_start))) {
        buffer.insert(0, step.replacement);
      }
      if (!step.split) {
        next(buffer, true);
        return;
      }
      const absl::string_view input = buffer;
      SplitBy(input, Behavior::kMergedWithNext, false,
              [&](auto on_match) { step.pattern.FindAll(input, on_match); }, next);
      return;
    }
  }
}

}  // namespace kvfold
