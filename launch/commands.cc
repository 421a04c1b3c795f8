#include "launch/commands.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <nlohmann/json.hpp>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "kernels/status_macros.h"
#include "launch/flags.h"
#include "launch/prompt.h"
#include "launch/report.h"
#include "models/tokenizer/tokenizer.h"
#include "cache/policies.h"
#include "models/compressor_file.h"
#include "models/config.h"
#include "models/files.h"
#include "runtime/engine.h"

namespace kvfold {

absl::StatusOr<std::vector<int32_t>> ParseIds(const std::string& text,
                                              const std::string& source) {
  std::vector<int32_t> ids;
  for (absl::string_view item :
       absl::StrSplit(text, absl::ByAnyChar(", \t\r\n"), absl::SkipEmpty())) {
    int32_t id;
    if (!absl::SimpleAtoi(item, &id) || id < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          source, ": \"", item, "\" is not a token id (a non-negative integer)"));
    }
    ids.push_back(id);
  }
  if (ids.empty()) return absl::InvalidArgumentError(source + ": no token ids");
  return ids;
}


absl::Status WriteFileAtomically(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::trunc);
    f << text;
    if (!f.good()) return absl::PermissionDeniedError(absl::StrCat(tmp, ": cannot write"));
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat(path, ": ", ec.message()));
  return absl::OkStatus();
}

absl::Status AsFlagError(const absl::Status& s) {
  if (s.ok()) return s;
  return absl::Status(s.code(), absl::StrCat("--", s.message()));
}

absl::StatusOr<LoadOptions> LoadOptionsFromFlags() {
  LoadOptions o;
  KVFOLD_ASSIGN_OR_RETURN(o.device, ParseDevice(absl::GetFlag(FLAGS_device)));
  const std::string dtype = absl::GetFlag(FLAGS_dtype);
  if (dtype == "auto") {
    o.dtype = o.device.kind == Device::Kind::kCpu ? DType::kF32 : DType::kBF16;
  } else if (dtype == "f32") {
    o.dtype = DType::kF32;
  } else if (dtype == "bf16") {
    o.dtype = DType::kBF16;
  } else if (dtype == "f16") {
    o.dtype = DType::kF16;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "--dtype=", dtype, ": expected auto, f32, bf16 or f16"));
  }
  KVFOLD_RETURN_IF_ERROR(ValidateLoadOptions(o));
  return o;
}

absl::StatusOr<EngineOptions> EngineOptionsFromFlags() {
  EngineOptions o{.threads = absl::GetFlag(FLAGS_threads),
                  .prefill_chunk = absl::GetFlag(FLAGS_prefill_chunk),
                  .cache = {}};
  o.batch = absl::GetFlag(FLAGS_batch);
  o.sp_anchor = absl::GetFlag(FLAGS_sp_anchor);
  o.sp_passing_slots = absl::GetFlag(FLAGS_sp_passing_slots);
  o.sp_balance = absl::GetFlag(FLAGS_sp_balance);
  KVFOLD_RETURN_IF_ERROR(AsFlagError(ValidateEngineOptions(o)));
  // --compressor=A[,B]: at most one file per method (a LoCoCo module and
  // MatryoshkaKV projections compose).
  for (absl::string_view item :
       absl::StrSplit(absl::GetFlag(FLAGS_compressor), ',', absl::SkipWhitespace())) {
    const absl::string_view path = absl::StripAsciiWhitespace(item);
    absl::StatusOr<std::shared_ptr<const CompressorFile>> file =
        LoadCompressorFile(std::string(path));
    if (!file.ok()) {
      return absl::Status(file.status().code(),
                          absl::StrCat("--compressor: ", file.status().message()));
    }
    auto& slot = (*file)->method == "matryoshka" ? o.projection : o.compressor;
    if (slot != nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--compressor: ", slot->path, " and ", path, " are both ", (*file)->method,
          " files; give one per method"));
    }
    slot = *std::move(file);
  }
  KVFOLD_ASSIGN_OR_RETURN(o.cache, CacheConfigFromFlags(o.compressor != nullptr));
  return o;
}

nlohmann::json CacheStatsJson(const CacheStats& s) {
  return {{"tokens_seen", s.tokens_seen},
          {"slots_held", s.slots_held},
          {"compression_ratio", s.compression_ratio},
          {"bytes", s.bytes}};
}

nlohmann::json SpExchangeJson(const std::vector<int64_t>& bytes_per_rank) {
  int64_t total = 0;
  for (int64_t b : bytes_per_rank) total += b;
  return {{"bytes_per_rank", bytes_per_rank}, {"bytes", total}};
}

absl::Status RunTokenize() {
  const std::string dir = absl::GetFlag(FLAGS_model);
  if (dir.empty()) return absl::InvalidArgumentError("--model is required");
  KVFOLD_ASSIGN_OR_RETURN(Tokenizer tokenizer, Tokenizer::FromDirectory(dir));
  KVFOLD_ASSIGN_OR_RETURN(Prompt prompt, PromptFromFlags(dir, &tokenizer));
  nlohmann::json j;
  if (prompt.from_text) {
    j = {{"ids", prompt.document}, {"tokens", prompt.document.size()}};
    if (!prompt.questions.empty()) j["questions"] = prompt.questions;
    j["chat_template"] = prompt.chat_template;
  } else {
    j = {{"text", tokenizer.Decode(prompt.document, /*skip_special_tokens=*/false)}};
  }
  PrintJson(j);
  return absl::OkStatus();
}

}  // namespace kvfold
