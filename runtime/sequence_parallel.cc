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

void MergePartialAttention(const std::vector<const float*>& outs,
                           const std::vector<const float*>& lses, int64_t rows, int64_t dim,
                           float* out, float* lse) {
  constexpr float kNone = -std::numeric_limits<float>::infinity();
  const size_t parts = outs.size();
  std::vector<float> row(dim);
  for (int64_t i = 0; i < rows; ++i) {
    float top = kNone;
    for (size_t h = 0; h < parts; ++h) top = std::max(top, lses[h][i]);
    std::fill(row.begin(), row.end(), 0.0f);
    if (top == kNone) {  // no rank had a key for this row
      std::copy(row.begin(), row.end(), out + i * dim);
      lse[i] = kNone;
      continue;
    }
    double total = 0;
    for (size_t h = 0; h < parts; ++h) total += std::exp(double(lses[h][i]) - top);
    for (size_t h = 0; h < parts; ++h) {
      if (lses[h][i] == kNone) continue;
      const float w = float(std::exp(double(lses[h][i]) - top) / total);
      const float* o = outs[h] + i * dim;
      for (int64_t d = 0; d < dim; ++d) row[d] += w * o[d];
    }
    std::copy(row.begin(), row.end(), out + i * dim);
    lse[i] = top + float(std::log(total));
  }
}

absl::Status MergeAcrossGroup(Communicator& sp, const TensorView& out, const TensorView& lse) {
  if (out.dtype != DType::kF32 || lse.dtype != DType::kF32 ||
      out.device.kind != Device::Kind::kCpu || lse.device.kind != Device::Kind::kCpu ||
      out.shape.size() != 2 || lse.shape.size() != 1 || lse.dim(0) != out.dim(0)) {
    return absl::InvalidArgumentError(
        "MergeAcrossGroup: expects f32 CPU tensors out [rows, dim] and lse [rows]");
  }
  const int n = sp.size();
  if (n == 1) return absl::OkStatus();
  const int64_t rows = out.dim(0), dim = out.dim(1);
  Tensor all_out({n * rows, dim}, DType::kF32), all_lse({n * rows}, DType::kF32);
  KVFOLD_RETURN_IF_ERROR(sp.AllGather(out, all_out.view()));
  KVFOLD_RETURN_IF_ERROR(sp.AllGather(lse, all_lse.view()));
  std::vector<const float*> outs(n), lses(n);
  for (int h = 0; h < n; ++h) {
    outs[h] = all_out.view().as<float>() + h * rows * dim;
    lses[h] = all_lse.view().as<float>() + h * rows;
  }
  MergePartialAttention(outs, lses, rows, dim, out.as<float>(), lse.as<float>());
  return absl::OkStatus();
}

}  // namespace kvfold
