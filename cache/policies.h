// Makes the KvCache a CacheConfig asks for, and checks a config against the
// model and the prefill chunk before any work is done.
#ifndef KVFOLD_CACHE_POLICIES_H_
#define KVFOLD_CACHE_POLICIES_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "cache/cache_config.pb.h"
#include "cache/kv_cache.h"
#include "cache/lococo.h"
#include "cache/matryoshka.h"

namespace kvfold {

// What policies learned in calibration (the --compressor file); null
// members when there is none.
struct LearnedParams {
  std::shared_ptr<const LoCoCoParams> lococo;
  std::shared_ptr<const MatryoshkaParams> matryoshka;  // validated
  // Optional: matryoshka's layout per stored allocation, made once for the
  // caches' KV heads (MakeCache builds one when absent or for other heads).
  std::vector<std::shared_ptr<const FeatureLayout>> matryoshka_layouts;
};

// Every check of a config that needs only the layer count, the longest
// prefill chunk and the learned parameters: budgets vs sinks and windows,
// per-layer budget count, window vs chunk, parameter ranges, the learned
// module's slots and layers. Messages say which field and why.
absl::Status ValidateCacheConfig(const CacheConfig& config, int64_t num_layers,
                                 int64_t max_chunk,
                                 const LearnedParams& learned = {});

// The cache for one sequence. `max_chunk`: the longest chunk that will be
// appended at once (the prefill chunk).
absl::StatusOr<std::unique_ptr<KvCache>> MakeCache(
    const CacheConfig& config, const CacheShape& shape, int64_t max_chunk,
    const LearnedParams& learned = {});

// Slots per layer the config gives a model of `num_layers` (empty for the
// full cache). The config must be valid.
absl::StatusOr<std::vector<int64_t>> LayerBudgets(
    const CacheConfig& config, int64_t num_layers, int64_t max_chunk,
    const LearnedParams& learned = {});

// "full", "streaming", "h2o", "snapkv", "pyramidkv", "kvmerger", "lococo".
std::string PolicyName(const CacheConfig& config);
// Selects the named policy (with default parameters) in `config`.
absl::Status SetPolicyByName(const std::string& name, CacheConfig* config);

// Parses a text-format CacheConfig; `source` names it in errors.
absl::StatusOr<CacheConfig> ParseCacheConfig(const std::string& text,
                                             const std::string& source);

}  // namespace kvfold

#endif  // KVFOLD_CACHE_POLICIES_H_
