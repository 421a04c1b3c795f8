// Makes the KvCache a CacheConfig asks for.
#ifndef KVFOLD_CACHE_POLICIES_H_
#define KVFOLD_CACHE_POLICIES_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "cache/cache_config.pb.h"
#include "cache/kv_cache.h"

namespace kvfold {

absl::StatusOr<std::unique_ptr<KvCache>> MakeCache(const CacheConfig& config,
                                                   const CacheShape& shape);

// Parses a text-format CacheConfig; `source` names it in errors.
absl::StatusOr<CacheConfig> ParseCacheConfig(const std::string& text,
                                             const std::string& source);

}  // namespace kvfold

#endif  // KVFOLD_CACHE_POLICIES_H_
