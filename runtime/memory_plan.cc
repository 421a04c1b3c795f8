#include "runtime/memory_plan.h"

#include <algorithm>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "kernels/status_macros.h"

namespace kvfold {

absl::StatusOr<MemoryPlan> PlanMemory(const ModelConfig& c, const EngineOptions& options,
                                      int tp, int weight_bytes, int64_t longest_document,
                                      int64_t answer_tokens, int sp) {
  if (tp < 1) return absl::InvalidArgumentError("tp must be >= 1");
  if (sp < 1) return absl::InvalidArgumentError("sp must be >= 1");
  MemoryPlan p;
  p.weights = double(weight_bytes) * c.NumParameters() / tp;
  // KV heads per rank (one replicated head when there are fewer than ranks).
  const int64_t kv_heads = std::max<int64_t>(1, c.num_kv_heads / tp);
  const int64_t chunk = options.prefill_chunk;
  // Unknown document lengths (a job file not yet tokenized, no
  // --max_document_tokens): compressed caches are sized by their budget, a
  // full cache cannot be and is left out.
  p.longest = longest_document > 0
                  ? std::min<int64_t>(longest_document + answer_tokens,
                                      c.max_position_embeddings)
                  : 0;
  // Slot budgets do not depend on the features (checked elsewhere).
  CacheConfig slots_only = options.cache;
  slots_only.clear_feature_budget();
  LearnedParams learned = Learned(options);
  learned.matryoshka = nullptr;
  KVFOLD_ASSIGN_OR_RETURN(std::vector<int64_t> budgets,
                          LayerBudgets(slots_only, c.num_layers, chunk, learned));
  // Sequence parallelism: the largest block and its anchor.
  int64_t block = 0, anchor = 0;
  if (sp > 1 && longest_document > sp) {
    KVFOLD_ASSIGN_OR_RETURN(const SpPlan plan,
                            PlanSpBlocks(options, c, longest_document, sp));
    anchor = plan.anchor;
    for (const SpBlock& b : plan.blocks) block = std::max(block, b.size());
  }
  // Slots per layer at the peak: the budget plus one chunk (compression
  // runs after it), or every token for the full cache (every token of a
  // rank's block and the answer under SP). Keys and values, f32.
  const int64_t cap = p.longest > 0 ? p.longest : c.max_position_embeddings;
  const int64_t held = block > 0 ? std::min<int64_t>(block + answer_tokens, cap) : p.longest;
  double slots = 0;
  for (int64_t l = 0; l < c.num_layers; ++l) {
    slots += budgets.empty() ? double(held)
                             : double(std::min<int64_t>(budgets[l] + chunk, cap));
  }
  double per_sequence = slots * kv_heads * c.head_dim * 2 * 4;
  if (options.cache.feature_budget() > 0) per_sequence *= options.cache.feature_budget();
  // The document's cache, and one copy per answer stream decoded together.
  p.sequences = 1 + options.batch;
  p.caches = per_sequence * p.sequences;
  // One forward call: the residual stream and its norm, q/k/v/attention,
  // the MLP's two intermediate rows, the logits of every row (scoring), and
  // each thread's attention scores over the keys.
  const double rows = double(std::max<int64_t>(chunk, options.batch));
  const double q_dim = double(c.num_heads) / std::min<int64_t>(tp, c.num_heads) * c.head_dim;
  const double keys = std::max(1.0, slots / c.num_layers);
  const double vocab = double(c.vocab_size) / tp + 1;
  p.workspace = 4.0 * rows *
                    (2.0 * c.hidden_size + 2.0 * q_dim + 2.0 * kv_heads * c.head_dim +
                     2.0 * c.intermediate_size / tp + vocab + c.hidden_size) +
                4.0 * keys * (32 * 64 + kv_heads);
  if (block > 0) {
    // Every row of the block prefill at once (with the question's, when it
    // observes), the anchor's keys and values for every layer, and the
    // passing blocks of the whole group plus the earlier ranks' unpacked.
    const double block_rows = double(block + anchor + answer_tokens);
    const double kv_row = 2.0 * kv_heads * c.head_dim;
    const double passing =
        options.sp_passing_slots > 0 ? double(options.sp_passing_slots)
        : budgets.empty()            ? double(block)
                                     : double(*std::max_element(budgets.begin(), budgets.end()));
    p.workspace += 4.0 * block_rows * (c.hidden_size + 2.0 * q_dim + q_dim / c.head_dim) +
                   4.0 * double(anchor + answer_tokens) * c.num_layers * kv_row +
                   4.0 * 2.0 * sp * (passing * kv_row + 1);
  }
  return p;
}

namespace {

std::string Size(double bytes) {
  constexpr double kMiB = 1 << 20, kGiB = 1 << 30;
  return bytes >= kGiB ? absl::StrFormat("%.2f GiB", bytes / kGiB)
                       : absl::StrFormat("%.1f MiB", bytes / kMiB);
}

}  // namespace

absl::Status CheckMemoryPlan(const MemoryPlan& p, double limit, const std::string& what) {
  if (limit <= 0 || p.total() <= limit) return absl::OkStatus();
  const std::string length =
      p.longest > 0 ? absl::StrCat("of up to ", p.longest, " tokens")
                    : std::string("of unknown length (a full cache not counted)");
  return absl::ResourceExhaustedError(absl::StrCat(
      "this job needs about ", Size(p.total()), " per rank (weights ", Size(p.weights),
      ", caches ", Size(p.caches), " for ", p.sequences, " sequences ", length,
      ", workspace ", Size(p.workspace), "), more than ", what, " (", Size(limit),
      "): lower --batch, --prefill_chunk or the cache budget (--cache_slots, "
      "--feature_budget), cap documents with --max_document_tokens, or spread the model "
      "over more ranks (--tp)"));
}

absl::StatusOr<double> ParseBytes(const std::string& text) {
  if (text.empty()) return absl::InvalidArgumentError("empty size");
  double scale = 1;
  std::string number = text;
  switch (text.back()) {
    case 'K': case 'k': scale = 1024.0; break;
    case 'M': case 'm': scale = 1024.0 * 1024; break;
    case 'G': case 'g': scale = 1024.0 * 1024 * 1024; break;
    case 'T': case 't': scale = 1024.0 * 1024 * 1024 * 1024; break;
    default: break;
  }
  if (scale != 1) number.pop_back();
  double v;
  if (!absl::SimpleAtod(number, &v) || !(v > 0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "\"", text, "\" is not a size (bytes, or a number with K, M, G or T)"));
  }
  return v * scale;
}

}  // namespace kvfold
