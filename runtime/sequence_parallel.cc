#include "runtime/sequence_parallel.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"

namespace kvfold {

int64_t DefaultAnchorTokens(int64_t document_tokens, int sp) {
  if (sp <= 1 || document_tokens <= 0) return 0;
  const int64_t block = document_tokens / sp;
  return std::min<int64_t>(4096, std::max<int64_t>(1, block / 4));
}

absl::StatusOr<SpPlan> PlanBlocks(int64_t document_tokens, int sp, int64_t anchor) {
  if (sp < 1) return absl::InvalidArgumentError(absl::StrCat("--sp=", sp, ": must be >= 1"));
  if (document_tokens < sp) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--sp=", sp, " needs a document of at least ", sp, " tokens (one block per rank); this ",
        "one has ", document_tokens));
  }
  if (anchor < 0) {
    return absl::InvalidArgumentError(absl::StrCat("anchor of ", anchor, " tokens: must be >= 0"));
  }
  SpPlan plan;
  plan.anchor = sp == 1 ? 0 : anchor;
  const int64_t base = document_tokens / sp, longer = document_tokens % sp;
  int64_t begin = 0;
  for (int r = 0; r < sp; ++r) {
    const int64_t size = base + (r < longer ? 1 : 0);
    plan.blocks.push_back({begin, begin + size});
    begin += size;
  }
  // The anchor is prefixed to blocks 1..sp-1, the shortest of which is the
  // last one.
  if (plan.anchor > plan.blocks.back().size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "an anchor of ", plan.anchor, " tokens is longer than a block (", document_tokens,
        " tokens over --sp=", sp, " ranks: blocks of ", plan.blocks.back().size(),
        "); use a shorter anchor or fewer ranks"));
  }
  return plan;
}

double BlockCost(const SpCostModel& cost, int rank, int64_t block, int64_t anchor) {
  const double a = rank == 0 ? 0.0 : double(anchor), b = double(block);
  const double keys = double(cost.cache) + a + double(rank) * double(cost.passing);
  return (a + b) * cost.token + cost.pair * (b * keys + a * (a + 1) / 2);
}

absl::StatusOr<SpPlan> PlanBalancedBlocks(int64_t document_tokens, int sp, int64_t anchor,
                                          const SpCostModel& cost) {
  KVFOLD_ASSIGN_OR_RETURN(SpPlan plan, PlanBlocks(document_tokens, sp, anchor));
  if (sp == 1) return plan;
  // BlockCost is u_r * block + c_r. Equal costs T give block_r = (T - c_r) /
  // u_r; ranks whose block would fall below its minimum are held there and
  // the others re-solved.
  std::vector<double> u(sp), c(sp);
  std::vector<int64_t> least(sp);
  for (int r = 0; r < sp; ++r) {
    c[r] = BlockCost(cost, r, 0, plan.anchor);
    u[r] = BlockCost(cost, r, 1, plan.anchor) - c[r];
    least[r] = r == 0 ? 1 : std::max<int64_t>(1, plan.anchor);
  }
  int64_t held_tokens = 0;
  for (int r = 0; r < sp; ++r) held_tokens += least[r];
  // PlanBlocks' checks leave room for the minimums; no cost: equal blocks.
  if (held_tokens > document_tokens || !(u[0] > 0)) return plan;
  std::vector<bool> held(sp, false);
  std::vector<double> size(sp);
  for (int round = 0; round < sp; ++round) {
    double free_tokens = double(document_tokens), inverse = 0, offset = 0;
    for (int r = 0; r < sp; ++r) {
      if (held[r]) {
        free_tokens -= double(least[r]);
      } else {
        inverse += 1 / u[r];
        offset += c[r] / u[r];
      }
    }
    const double target = (free_tokens + offset) / inverse;
    bool changed = false;
    for (int r = 0; r < sp; ++r) {
      size[r] = held[r] ? double(least[r]) : (target - c[r]) / u[r];
      if (!held[r] && size[r] < double(least[r])) held[r] = changed = true;
    }
    if (!changed) break;
  }
  // Whole tokens: round down, then hand the rest out by largest remainder
  // (the earliest rank first on ties), so every rank plans the same blocks.
  std::vector<int64_t> tokens(sp);
  int64_t total = 0;
  for (int r = 0; r < sp; ++r) {
    tokens[r] = std::max(least[r], int64_t(std::floor(size[r])));
    total += tokens[r];
  }
  std::vector<int> order(sp);
  for (int r = 0; r < sp; ++r) order[r] = r;
  std::stable_sort(order.begin(), order.end(), [&](int x, int y) {
    return size[x] - std::floor(size[x]) > size[y] - std::floor(size[y]);
  });
  for (int i = 0; total < document_tokens; i = (i + 1) % sp, ++total) ++tokens[order[i]];
  for (int i = sp - 1; total > document_tokens; i = (i + sp - 1) % sp) {
    const int r = order[i];
    if (tokens[r] > least[r]) {
      --tokens[r];
      --total;
    }
  }
  int64_t begin = 0;
  for (int r = 0; r < sp; ++r) {
    plan.blocks[r] = {begin, begin + tokens[r]};
    begin += tokens[r];
  }
  return plan;
}

}  // namespace kvfold
