#include "models/tokenizer/pipeline.h"

#include "absl/strings/str_cat.h"
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

size_t CharLen(unsigned char lead) {
  return lead < 0x80 ? 1 : lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : 2;
}

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
  size_t i = 0;
  std::u32string one;
  while (i < text.size()) {
    const size_t n = CharLen(static_cast<unsigned char>(text[i]));
    one.clear();
    if (unicode::DecodeUtf8(text.substr(i, n), &one).ok() && !one.empty() &&
        pred(one[0])) {
      on_match(i, i + n);
    }
    i += n;
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
  size_t cp = 0, byte = 0;
  auto advance = [&](size_t to) {
    for (; cp < to; ++cp) byte += CharLen(static_cast<unsigned char>(text[byte]));
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
    auto it = j.find("normalizers");
    if (it == j.end() || !it->is_array()) return FieldError(where, "missing \"normalizers\"");
    for (size_t i = 0; i < it->size(); ++i) {
      KVFOLD_RETURN_IF_ERROR(Add((*it)[i], absl::StrCat(where, ".normalizers[", i, "]"), steps));
    }
    return absl::OkStatus();
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
    auto it = j.find("pattern");
    if (it == j.end()) return FieldError(where, "missing \"pattern\"");
    KVFOLD_ASSIGN_OR_RETURN(step.pattern, TextPattern::FromJson(*it, where + ".pattern"));
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
      case Step::kReplace: {
        std::string out;
        size_t last = 0;
        step.pattern.FindAll(text, [&](size_t b, size_t e) {
          out.append(text, last, b - last);
          out += step.text;
          last = e;
        });
        out.append(text, last, std::string::npos);
        text = std::move(out);
        break;
      }
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
    auto it = j.find("pretokenizers");
    if (it == j.end() || !it->is_array()) {
      return FieldError(where, "missing \"pretokenizers\"");
    }
    for (size_t i = 0; i < it->size(); ++i) {
      KVFOLD_RETURN_IF_ERROR(
          Add((*it)[i], absl::StrCat(where, ".pretokenizers[", i, "]"), steps));
    }
    return absl::OkStatus();
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
    auto it = j.find("pattern");
    if (it == j.end()) return FieldError(where, "missing \"pattern\"");
    KVFOLD_ASSIGN_OR_RETURN(step.pattern, TextPattern::FromJson(*it, where + ".pattern"));
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
                            tokenizer_json::GetString(j, "replacement", where));
    std::u32string one;
    if (!unicode::DecodeUtf8(step.replacement, &one).ok() || one.size() != 1) {
      return FieldError(where, "\"replacement\" must be one character");
    }
    KVFOLD_ASSIGN_OR_RETURN(step.split, tokenizer_json::GetBool(j, "split", true, where));
    // Older files have add_prefix_space instead of prepend_scheme.
    KVFOLD_ASSIGN_OR_RETURN(bool add_prefix,
                            tokenizer_json::GetBool(j, "add_prefix_space", true, where));
    KVFOLD_ASSIGN_OR_RETURN(
        std::string scheme,
        tokenizer_json::GetOptionalString(j, "prepend_scheme",
                                          add_prefix ? "always" : "never", where));
    if (scheme == "always") {
      step.prepend = Step::kAlways;
    } else if (scheme == "first") {
      step.prepend = Step::kFirst;
    } else if (scheme == "never") {
      step.prepend = Step::kNever;
    } else {
      return FieldError(where, absl::StrCat("unknown prepend_scheme \"", scheme, "\""));
    }
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
      std::string buffer;
      buffer.reserve(text.size() + step.replacement.size());
      for (char c : text) {
        if (c == ' ') {
          buffer += step.replacement;
        } else {
          buffer.push_back(c);
        }
      }
      const bool starts = buffer.compare(0, step.replacement.size(), step.replacement) == 0;
      if (!starts && (step.prepend == Step::kAlways ||
                      (step.prepend == Step::kFirst && at_start))) {
        buffer.insert(0, step.replacement);
      }
      if (!step.split) {
        next(buffer, true);
        return;
      }
      const absl::string_view input = buffer;
      SplitBy(input, Behavior::kMergedWithNext, false,
              [&](auto on_match) {
                for (size_t at = input.find(step.replacement); at != absl::string_view::npos;
                     at = input.find(step.replacement, at + step.replacement.size())) {
                  on_match(at, at + step.replacement.size());
                }
              },
              next);
      return;
    }
  }
}

}  // namespace kvfold
