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

}  // namespace kvfold
