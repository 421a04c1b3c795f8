// --cache* flags -> CacheConfig. A --cache_config text proto is read first;
// flags given on the command line then override its fields.
#include <string>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "cache/policies.h"
#include "kernels/status_macros.h"
#include "launch/commands.h"
#include "launch/flags.h"
#include "models/files.h"

namespace kvfold {

namespace {

// Sets `window` in the chosen policy; false if it has none.
bool SetWindow(CacheConfig& c, int32_t window) {
  switch (c.policy_case()) {
    case CacheConfig::kStreaming: c.mutable_streaming()->set_window(window); return true;
    case CacheConfig::kH2O: c.mutable_h2o()->set_window(window); return true;
    case CacheConfig::kSnapkv: c.mutable_snapkv()->set_window(window); return true;
    case CacheConfig::kPyramidkv: c.mutable_pyramidkv()->set_window(window); return true;
    case CacheConfig::kKvmerger: c.mutable_kvmerger()->set_window(window); return true;
    default: return false;
  }
}

}  // namespace

absl::StatusOr<CacheConfig> CacheConfigFromFlags(bool lococo_file) {
  CacheConfig c;
  const std::string file = absl::GetFlag(FLAGS_cache_config);
  if (!file.empty()) {
    KVFOLD_ASSIGN_OR_RETURN(std::string text, ReadTextFile(file, 1 << 20));
    KVFOLD_ASSIGN_OR_RETURN(c, ParseCacheConfig(text, file));
  }
  const std::string name = absl::GetFlag(FLAGS_cache);
  if (!name.empty()) {
    CacheConfig named;
    KVFOLD_RETURN_IF_ERROR(SetPolicyByName(name, &named));
    if (c.policy_case() != CacheConfig::POLICY_NOT_SET &&
        c.policy_case() != named.policy_case()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--cache=", name, " conflicts with the policy ", PolicyName(c),
          " in --cache_config=", file));
    }
    if (c.policy_case() == CacheConfig::POLICY_NOT_SET) {
      KVFOLD_RETURN_IF_ERROR(SetPolicyByName(name, &c));
    }
  }
  // A compressor file names its method: it selects the policy if none was.
  if (lococo_file && c.policy_case() == CacheConfig::POLICY_NOT_SET) {
    c.mutable_lococo();
  }
  const int32_t slots = absl::GetFlag(FLAGS_cache_slots);
  if (slots != 0) {
    if (slots < 0) {
      return absl::InvalidArgumentError(absl::StrCat("--cache_slots must be > 0, got ", slots));
    }
    c.set_slots(slots);
    c.clear_layer_slots();
  }
  const std::string layer_slots = absl::GetFlag(FLAGS_cache_layer_slots);
  if (!layer_slots.empty()) {
    if (slots != 0) {
      return absl::InvalidArgumentError("give --cache_slots or --cache_layer_slots, not both");
    }
    c.clear_layer_slots();
    c.set_slots(0);
    for (absl::string_view item : absl::StrSplit(layer_slots, ',')) {
      int32_t v;
      if (!absl::SimpleAtoi(item, &v)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "--cache_layer_slots: \"", item, "\" is not an integer"));
      }
      c.add_layer_slots(v);
    }
  }
  const int32_t sinks = absl::GetFlag(FLAGS_cache_sinks);
  if (sinks >= 0) {
    if (c.policy_case() != CacheConfig::kStreaming) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--cache_sinks applies to --cache=streaming only, not ", PolicyName(c)));
    }
    c.mutable_streaming()->set_sinks(sinks);
  }
  const int32_t window = absl::GetFlag(FLAGS_cache_window);
  if (window >= 0 && !SetWindow(c, window)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--cache_window does not apply to the ", PolicyName(c), " cache"));
  }
  const int32_t buffer = absl::GetFlag(FLAGS_cache_buffer);
  if (buffer >= 0) {
    if (c.policy_case() != CacheConfig::kLococo) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--cache_buffer applies to --cache=lococo only, not ", PolicyName(c)));
    }
    c.mutable_lococo()->set_buffer(buffer);
  }
  const double feature_budget = absl::GetFlag(FLAGS_feature_budget);
  if (feature_budget != 0) {
    if (!(feature_budget > 0 && feature_budget <= 1)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--feature_budget must be in (0, 1], got ", feature_budget));
    }
    c.set_feature_budget(feature_budget);
  }
  const std::string mode = absl::GetFlag(FLAGS_question_mode);
  if (mode == "aware") {
    c.set_question_aware(true);
  } else if (mode == "agnostic") {
    c.set_question_aware(false);
  } else if (!mode.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--question_mode must be agnostic or aware, got \"", mode, "\""));
  }
  return c;
}

}  // namespace kvfold
