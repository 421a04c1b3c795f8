#include "cache/policies.h"

#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/text_format.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "cache/compressed_cache.h"
#include "cache/compressors.h"
#include "kernels/status_macros.h"

namespace kvfold {

namespace {

using Error = absl::Status;

// Per layer and KV head; a budget is allocated when the cache is made.
constexpr int64_t kMaxSlots = int64_t{1} << 24;

Error Invalid(const std::string& policy, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("cache ", policy, ": ", what));
}

// A config with its defaults filled in and its budgets per layer.
struct Resolved {
  std::vector<int64_t> budgets;
  std::shared_ptr<const Compressor> compressor;  // null: full cache
};

// An optional field's value, or `fallback` when unset.
template <typename T>
int64_t Or(bool has, T value, int64_t fallback) {
  return has ? static_cast<int64_t>(value) : fallback;
}

// LoCoCo: one budget, M, fixed by the calibrated module.
absl::StatusOr<Resolved> ResolveLoCoCo(const CacheConfig& c, int64_t num_layers,
                                       const LearnedParams& learned) {
  const std::string name = PolicyName(c);
  const std::shared_ptr<const LoCoCoParams>& p = learned.lococo;
  if (p == nullptr) {
    return Invalid(name, "needs its calibrated parameters: --compressor=PATH (made by "
                         "tools/calibrate/calibrate.py)");
  }
  if (absl::Status s = p->Validate(); !s.ok()) return s;
  if (c.layer_slots_size() > 0) {
    return Invalid(name, "every layer has the compressor's M slots; give slots, not layer_slots");
  }
  if (c.slots() != 0 && c.slots() != p->slots) {
    return Invalid(name, absl::StrCat("--cache_slots=", c.slots(),
                                      " does not match the compressor, calibrated for M=",
                                      p->slots, " slots (omit --cache_slots or calibrate for ",
                                      c.slots(), ")"));
  }
  if (static_cast<int64_t>(p->layers.size()) != num_layers) {
    return Invalid(name, absl::StrCat("the compressor has ", p->layers.size(),
                                      " layers but the model has ", num_layers));
  }
  const LoCoCoPolicy& lp = c.lococo();
  const int64_t buffer = Or(lp.has_buffer(), lp.buffer(), p->buffer);
  if (buffer < 0) return Invalid(name, absl::StrCat("buffer must be >= 0, got ", buffer));
  Resolved r;
  r.budgets.assign(num_layers, p->slots);
  r.compressor = MakeLoCoCoCompressor(p, buffer);
  return r;
}

// The MatryoshkaKV allocation a config picks (-1: no projection).
absl::StatusOr<int> ResolveFeatures(const CacheConfig& c, int64_t num_layers,
                                    const LearnedParams& learned) {
  const MatryoshkaParams* p = learned.matryoshka.get();
  const double budget = c.feature_budget();
  if (p == nullptr) {
    if (budget == 0) return -1;
    return absl::InvalidArgumentError(absl::StrCat(
        "feature_budget ", budget, " needs MatryoshkaKV projections: --compressor=PATH "
        "(made by kvfold calibrate --method=pca)"));
  }
  if (p->num_layers != num_layers) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the MatryoshkaKV projections have ", p->num_layers, " layers but the model has ",
        num_layers));
  }
  if (c.has_streaming() && c.streaming().reindex_positions()) {
    return Invalid("streaming", "reindex_positions re-rotates cached keys, which "
                                "MatryoshkaKV stores projected after RoPE: drop one of them");
  }
  if (budget == 0) {
    if (p->budgets.size() == 1) return 0;
    return absl::InvalidArgumentError(absl::StrCat(
        "the MatryoshkaKV projections store several rank allocations: choose one with "
        "--feature_budget (", p->BudgetList(), ")"));
  }
  return p->Allocation(budget);
}

absl::StatusOr<Resolved> Resolve(const CacheConfig& c, int64_t num_layers,
                                 int64_t max_chunk, const LearnedParams& learned) {
  const std::string name = PolicyName(c);
  if (absl::StatusOr<int> f = ResolveFeatures(c, num_layers, learned); !f.ok()) {
    return f.status();
  }
  if (c.policy_case() != CacheConfig::kLococo && learned.lococo != nullptr) {
    return Invalid(name, "a LoCoCo compressor (--compressor) applies to --cache=lococo only");
  }
  if (c.policy_case() == CacheConfig::kLococo) return ResolveLoCoCo(c, num_layers, learned);
  Resolved r;
  if (c.policy_case() == CacheConfig::kFull ||
      c.policy_case() == CacheConfig::POLICY_NOT_SET) {
    if (c.slots() != 0 || c.layer_slots_size() != 0) {
      return Invalid(name, "keeps every token; slots and layer_slots do not apply");
    }
    return r;
  }
  // The budget: `slots` for every layer, or one per layer.
  if (c.slots() < 0) return Invalid(name, absl::StrCat("slots must be > 0, got ", c.slots()));
  if (c.slots() > 0 && c.layer_slots_size() > 0) {
    return Invalid(name, "give slots or layer_slots, not both");
  }
  if (c.slots() == 0 && c.layer_slots_size() == 0) {
    return Invalid(name, "needs a budget: slots (--cache_slots) or layer_slots");
  }
  if (c.layer_slots_size() > 0) {
    if (c.policy_case() == CacheConfig::kPyramidkv) {
      return Invalid(name, "computes its own layer budgets; give slots, not layer_slots");
    }
    if (c.layer_slots_size() != num_layers) {
      return Invalid(name, absl::StrCat("layer_slots has ", c.layer_slots_size(),
                                        " budgets but the model has ",
                                        num_layers, " layers"));
    }
    for (int i = 0; i < c.layer_slots_size(); ++i) {
      if (c.layer_slots(i) <= 0) {
        return Invalid(name, absl::StrCat("layer_slots[", i, "] must be > 0, got ",
                                          c.layer_slots(i)));
      }
      r.budgets.push_back(c.layer_slots(i));
    }
  } else {
    r.budgets.assign(num_layers, c.slots());
  }
  for (int64_t b : r.budgets) {
    if (b > kMaxSlots) {
      return Invalid(name, absl::StrCat("a budget of ", b, " slots exceeds the limit of ",
                                        kMaxSlots, " (storage is reserved up front)"));
    }
  }
  // The smallest budget is the one every window must fit in.
  const int64_t budget = *std::min_element(r.budgets.begin(), r.budgets.end());
  auto check_window = [&](int64_t window, bool has) -> Error {
    const std::string label = has ? "" : " (the default)";
    if (window < 1) return Invalid(name, absl::StrCat("window must be >= 1, got ", window));
    if (window > budget) {
      return Invalid(name, absl::StrCat("budget ", budget, " is smaller than the window ",
                                        window, label));
    }
    if (window > max_chunk) {
      return Invalid(name, absl::StrCat("window ", window, label,
                                        " is larger than the prefill chunk ", max_chunk,
                                        " (its queries must be in one chunk)"));
    }
    return absl::OkStatus();
  };
  auto check_kernel = [&](int64_t kernel) -> Error {
    if (kernel < 1 || kernel % 2 == 0) {
      return Invalid(name, absl::StrCat("kernel must be odd and >= 1, got ", kernel));
    }
    return absl::OkStatus();
  };

  switch (c.policy_case()) {
    case CacheConfig::kStreaming: {
      const StreamingPolicy& p = c.streaming();
      const int64_t sinks = Or(p.has_sinks(), p.sinks(), 4);
      if (sinks < 0) return Invalid(name, absl::StrCat("sinks must be >= 0, got ", sinks));
      const int64_t window = Or(p.has_window(), p.window(), budget - sinks);
      if (window < 1) {
        return Invalid(name, absl::StrCat("budget ", budget, " is smaller than sinks ", sinks,
                                          " + a window of at least 1"));
      }
      if (sinks + window > budget) {
        return Invalid(name, absl::StrCat("budget ", budget, " is smaller than sinks ", sinks,
                                          " + window ", window));
      }
      // A window given explicitly caps every layer at sinks + window.
      if (p.has_window()) {
        for (int64_t& b : r.budgets) b = std::min(b, sinks + window);
      }
      r.compressor = MakeStreamingCompressor(sinks, p.reindex_positions());
      return r;
    }
    case CacheConfig::kH2O: {
      const H2OPolicy& p = c.h2o();
      const int64_t window = Or(p.has_window(), p.window(), std::max<int64_t>(1, budget / 2));
      if (window < 0) return Invalid(name, absl::StrCat("window must be >= 0, got ", window));
      if (window > budget) {
        return Invalid(name, absl::StrCat("budget ", budget, " is smaller than the window ",
                                          window));
      }
      r.compressor = MakeH2OCompressor(window, p.average_over_queries());
      return r;
    }
    case CacheConfig::kSnapkv: {
      const SnapKVPolicy& p = c.snapkv();
      const int64_t window = Or(p.has_window(), p.window(), 32);
      const int64_t kernel = Or(p.has_kernel(), p.kernel(), 5);
      if (Error e = check_window(window, p.has_window()); !e.ok()) return e;
      if (Error e = check_kernel(kernel); !e.ok()) return e;
      r.compressor = MakeSnapKVCompressor(window, kernel);
      return r;
    }
    case CacheConfig::kPyramidkv: {
      const PyramidKVPolicy& p = c.pyramidkv();
      const int64_t window = Or(p.has_window(), p.window(), 32);
      const int64_t kernel = Or(p.has_kernel(), p.kernel(), 5);
      const int64_t beta = Or(p.has_beta(), p.beta(), 20);
      if (Error e = check_window(window, p.has_window()); !e.ok()) return e;
      if (Error e = check_kernel(kernel); !e.ok()) return e;
      if (beta < 1) return Invalid(name, absl::StrCat("beta must be >= 1, got ", beta));
      // Every layer gets at least its window (the smallest prefix budget,
      // (B - w) / beta, is >= 0).
      r.budgets = PyramidBudgets(budget, window, beta, num_layers);
      r.compressor = MakeSnapKVCompressor(window, kernel);
      return r;
    }
    case CacheConfig::kKvmerger: {
      const KVMergerPolicy& p = c.kvmerger();
      KVMergerParams m;
      m.window = Or(p.has_window(), p.window(), std::max<int64_t>(1, budget / 8));
      m.heavy = Or(p.has_heavy(), p.heavy(), budget / 8);
      m.sigma = p.has_sigma() ? p.sigma() : 5.0f;
      m.scale_values_by_size = p.value_norm() == KVMergerPolicy::SCALED_BY_SIZE;
      if (m.window < 0 || m.heavy < 0) {
        return Invalid(name, absl::StrCat("window and heavy must be >= 0, got ", m.window,
                                          " and ", m.heavy));
      }
      if (m.window + m.heavy >= budget) {
        return Invalid(name, absl::StrCat("budget ", budget, " must be larger than window ",
                                          m.window, " + heavy ", m.heavy,
                                          " (room for merged slots)"));
      }
      if (!(m.sigma > 0) || !std::isfinite(m.sigma)) {
        return Invalid(name, absl::StrCat("sigma must be a positive number, got ", m.sigma));
      }
      r.compressor = MakeKVMergerCompressor(m);
      return r;
    }
    default:
      return Invalid(name, "unknown policy");
  }
}

}  // namespace

absl::Status ValidateCacheConfig(const CacheConfig& config, int64_t num_layers,
                                 int64_t max_chunk, const LearnedParams& learned) {
  return Resolve(config, num_layers, max_chunk, learned).status();
}

absl::StatusOr<std::vector<int64_t>> LayerBudgets(
    const CacheConfig& config, int64_t num_layers, int64_t max_chunk,
    const LearnedParams& learned) {
  absl::StatusOr<Resolved> r = Resolve(config, num_layers, max_chunk, learned);
  if (!r.ok()) return r.status();
  return r->budgets;
}

absl::StatusOr<std::unique_ptr<KvCache>> MakeCache(
    const CacheConfig& config, const CacheShape& shape, int64_t max_chunk,
    const LearnedParams& learned) {
  absl::StatusOr<Resolved> r = Resolve(config, shape.num_layers, max_chunk, learned);
  if (!r.ok()) return r.status();
  if (learned.lococo != nullptr && learned.lococo->head_dim != shape.head_dim) {
    return Invalid(PolicyName(config),
                   absl::StrCat("the compressor was calibrated for head_dim ",
                                learned.lococo->head_dim, ", the model has ", shape.head_dim));
  }
  CacheShape projected = shape;
  if (absl::StatusOr<int> a = ResolveFeatures(config, shape.num_layers, learned);
      !a.ok()) {
    return a.status();
  } else if (*a >= 0) {
    const MatryoshkaParams& p = *learned.matryoshka;
    if (p.head_dim != shape.head_dim) {
      return absl::InvalidArgumentError(absl::StrCat(
          "the MatryoshkaKV projections are for head_dim ", p.head_dim,
          ", the model has ", shape.head_dim));
    }
    if (shape.stream.device.kind != Device::Kind::kCpu) {
      return absl::UnimplementedError(
          "MatryoshkaKV projections (--feature_budget) run on the CPU backend only so "
          "far: run with --device=cpu");
    }
    const auto& made = learned.matryoshka_layouts;
    if (static_cast<size_t>(*a) < made.size() && made[*a]->head_begin() == shape.kv_head_begin &&
        made[*a]->kv_heads() == shape.kv_heads) {
      projected.features = made[*a];
    } else {
      KVFOLD_ASSIGN_OR_RETURN(projected.features,
                              FeatureLayout::Make(p, *a, shape.kv_head_begin, shape.kv_heads));
    }
  }
  if (r->compressor == nullptr) {
    return std::unique_ptr<KvCache>(std::make_unique<FullKvCache>(projected));
  }
  if (r->compressor->NeedsHostKeys() &&
      shape.stream.device.kind != Device::Kind::kCpu) {
    return absl::UnimplementedError(absl::StrCat(
        "--cache=", PolicyName(config),
        (config.has_streaming() ? " with reindex_positions" : ""),
        " rewrites cached keys on the host and has no CUDA kernel yet: run it "
        "with --device=cpu, or pick full, streaming, h2o, snapkv or pyramidkv"));
  }
  // The storage reserved up front, keys and values in f32 for budget + one
  // chunk per layer, must fit in this machine's memory (host RAM; on a GPU
  // an allocation that does not fit is reported by the first Append).
  double bytes = 0;
  for (int64_t b : r->budgets) {
    bytes += 8.0 * (b + r->compressor->Slack() + max_chunk) * shape.kv_heads *
             shape.head_dim;  // an upper bound with projected features
  }
  const double physical = double(sysconf(_SC_PHYS_PAGES)) * sysconf(_SC_PAGE_SIZE);
  if (physical > 0 && bytes > physical) {
    return Invalid(PolicyName(config),
                   absl::StrCat("budget + prefill chunk need ", bytes / (1 << 30),
                                " GiB of keys and values per sequence, more than this "
                                "machine's ", physical / (1 << 30), " GiB"));
  }
  if (r->compressor->ReindexesPositions() &&
      static_cast<int64_t>(shape.rope_inv_freq.size()) * 2 != shape.head_dim) {
    return Invalid(PolicyName(config),
                   "reindex_positions needs the model's RoPE frequencies");
  }
  return std::unique_ptr<KvCache>(std::make_unique<CompressedKvCache>(
      projected, std::move(r->budgets), max_chunk, std::move(r->compressor)));
}

std::string PolicyName(const CacheConfig& config) {
  switch (config.policy_case()) {
    case CacheConfig::kStreaming: return "streaming";
    case CacheConfig::kH2O: return "h2o";
    case CacheConfig::kSnapkv: return "snapkv";
    case CacheConfig::kPyramidkv: return "pyramidkv";
    case CacheConfig::kKvmerger: return "kvmerger";
    case CacheConfig::kLococo: return "lococo";
    default: return "full";
  }
}

absl::Status SetPolicyByName(const std::string& name, CacheConfig* config) {
  if (name == "full") {
    config->mutable_full();
  } else if (name == "streaming") {
    config->mutable_streaming();
  } else if (name == "h2o") {
    config->mutable_h2o();
  } else if (name == "snapkv") {
    config->mutable_snapkv();
  } else if (name == "pyramidkv") {
    config->mutable_pyramidkv();
  } else if (name == "kvmerger") {
    config->mutable_kvmerger();
  } else if (name == "lococo") {
    config->mutable_lococo();
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "unknown cache policy \"", name,
        "\" (known: full, streaming, h2o, snapkv, pyramidkv, kvmerger, lococo)"));
  }
  return absl::OkStatus();
}

namespace {
// Collects the first parse error with its line and column.
class ErrorCollector : public google::protobuf::io::ErrorCollector {
 public:
  void AddError(int line, int column, const std::string& message) override {
    if (first.empty()) first = absl::StrCat(line + 1, ":", column + 1, ": ", message);
  }
  std::string first;
};
}  // namespace

absl::StatusOr<CacheConfig> ParseCacheConfig(const std::string& text,
                                             const std::string& source) {
  CacheConfig config;
  google::protobuf::TextFormat::Parser parser;
  ErrorCollector errors;
  parser.RecordErrorsTo(&errors);
  if (!parser.ParseFromString(text, &config)) {
    return absl::InvalidArgumentError(absl::StrCat(source, ":", errors.first));
  }
  return config;
}

}  // namespace kvfold
