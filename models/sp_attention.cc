#include "models/sp_attention.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "kernels/tensor.h"

namespace kvfold {

namespace {
constexpr float kNoKeys = -std::numeric_limits<float>::infinity();
}  // namespace

void MergePartialAttention(const std::vector<const float*>& outs,
                           const std::vector<const float*>& lses, int64_t queries,
                           int64_t heads, int64_t dim, float* out, float* lse) {
  const size_t parts = outs.size();
  std::vector<float> row(dim), weights(parts);
  for (int64_t h = 0; h < heads; ++h) {
    for (int64_t i = 0; i < queries; ++i) {
      const int64_t at = h * queries + i;  // in lse
      float top = kNoKeys;
      for (size_t p = 0; p < parts; ++p) top = std::max(top, lses[p][at]);
      std::fill(row.begin(), row.end(), 0.0f);
      float* dst = out + (i * heads + h) * dim;
      if (top == kNoKeys) {  // no part had a key for this row
        std::copy(row.begin(), row.end(), dst);
        lse[at] = kNoKeys;
        continue;
      }
      double total = 0;
      for (size_t p = 0; p < parts; ++p) total += std::exp(double(lses[p][at]) - top);
      for (size_t p = 0; p < parts; ++p) {
        weights[p] = lses[p][at] == kNoKeys
                         ? 0.0f
                         : float(std::exp(double(lses[p][at]) - top) / total);
      }
      for (size_t p = 0; p < parts; ++p) {
        if (weights[p] == 0.0f) continue;
        const float* o = outs[p] + (i * heads + h) * dim;
        for (int64_t d = 0; d < dim; ++d) row[d] += weights[p] * o[d];
      }
      std::copy(row.begin(), row.end(), dst);
      lse[at] = top + float(std::log(total));
    }
  }
}

absl::Status MergeInto(const Stream& s, float* acc_out, float* acc_lse, const float* part_out,
                       const float* part_lse, int64_t queries, int64_t heads, int64_t dim,
                       std::vector<float>* host) {
  const int64_t values = queries * heads * dim, rows = queries * heads;
  if (s.device.kind == Device::Kind::kCpu) {
    MergePartialAttention({acc_out, part_out}, {acc_lse, part_lse}, queries, heads, dim,
                          acc_out, acc_lse);
    return absl::OkStatus();
  }
  // Through the host: a handful of merges per layer, small next to the
  // attention itself.
  host->resize(2 * (values + rows));
  float* ao = host->data();
  float* po = ao + values;
  float* al = po + values;
  float* pl = al + rows;
  KVFOLD_RETURN_IF_ERROR(CopyToHost(s, ao, acc_out, values * sizeof(float)));
  KVFOLD_RETURN_IF_ERROR(CopyToHost(s, po, part_out, values * sizeof(float)));
  KVFOLD_RETURN_IF_ERROR(CopyToHost(s, al, acc_lse, rows * sizeof(float)));
  KVFOLD_RETURN_IF_ERROR(CopyToHost(s, pl, part_lse, rows * sizeof(float)));
  MergePartialAttention({ao, po}, {al, pl}, queries, heads, dim, ao, al);
  KVFOLD_RETURN_IF_ERROR(CopyToDevice(s, acc_out, ao, values * sizeof(float)));
  return CopyToDevice(s, acc_lse, al, rows * sizeof(float));
}

absl::Status MergeAcrossGroup(Communicator& sp, float* out, float* lse, int64_t queries,
                              int64_t heads, int64_t dim) {
  const int n = sp.size();
  if (n == 1) return absl::OkStatus();
  const int64_t values = queries * heads * dim, rows = queries * heads;
  // One all-gather: each rank's [out ; lse].
  std::vector<float> mine(values + rows), all(n * (values + rows));
  std::copy_n(out, values, mine.data());
  std::copy_n(lse, rows, mine.data() + values);
  KVFOLD_RETURN_IF_ERROR(sp.AllGather(
      TensorView{mine.data(), DType::kF32, Device::Cpu(), {values + rows}},
      TensorView{all.data(), DType::kF32, Device::Cpu(), {n * (values + rows)}}));
  std::vector<const float*> outs(n), lses(n);
  for (int r = 0; r < n; ++r) {
    outs[r] = all.data() + r * (values + rows);
    lses[r] = outs[r] + values;
  }
  MergePartialAttention(outs, lses, queries, heads, dim, out, lse);
  return absl::OkStatus();
}

int64_t PassingBlockFloats(int64_t kv_heads, int64_t slots, int64_t head_dim) {
  return 1 + 2 * kv_heads * slots * head_dim;
}

absl::Status PackPassingBlock(const Stream& s, const LayerView& view, int64_t kv_heads,
                              int64_t head_dim, int64_t slots, float* packed) {
  if (view.key_offsets != nullptr) {
    return absl::UnimplementedError(
        "sequence parallelism with MatryoshkaKV projections is not supported");
  }
  const int64_t count = std::min(slots, view.length), first = view.length - count;
  const float header = float(count);
  KVFOLD_RETURN_IF_ERROR(CopyToDevice(s, packed, &header, sizeof(float)));
  float* keys = packed + 1;
  float* values = keys + kv_heads * slots * head_dim;
  const int64_t bytes = count * head_dim * sizeof(float);
  for (int64_t g = 0; g < kv_heads && count > 0; ++g) {
    const int64_t from = (g * view.stride + first) * head_dim;
    KVFOLD_RETURN_IF_ERROR(
        CopyOnDevice(s, keys + g * slots * head_dim, view.keys + from, bytes));
    KVFOLD_RETURN_IF_ERROR(
        CopyOnDevice(s, values + g * slots * head_dim, view.values + from, bytes));
  }
  return absl::OkStatus();
}

absl::StatusOr<int64_t> UnpackPassingBlocks(const Stream& s, const float* gathered, int ranks,
                                            int64_t kv_heads, int64_t head_dim, int64_t slots,
                                            int64_t capacity, float* keys, float* values) {
  const int64_t block = PassingBlockFloats(kv_heads, slots, head_dim);
  int64_t used = 0;
  for (int r = 0; r < ranks; ++r) {
    const float* packed = gathered + r * block;
    float header = 0;
    KVFOLD_RETURN_IF_ERROR(CopyToHost(s, &header, packed, sizeof(float)));
    const int64_t count = int64_t(header);
    if (count < 0 || count > slots || used + count > capacity) {
      return absl::InternalError(absl::StrCat("passing block of rank ", r, " claims ", header,
                                              " slots (at most ", slots, ")"));
    }
    const float* k = packed + 1;
    const float* v = k + kv_heads * slots * head_dim;
    for (int64_t g = 0; g < kv_heads && count > 0; ++g) {
      const int64_t bytes = count * head_dim * sizeof(float);
      float* kd = keys + (g * capacity + used) * head_dim;
      float* vd = values + (g * capacity + used) * head_dim;
      KVFOLD_RETURN_IF_ERROR(CopyOnDevice(s, kd, k + g * slots * head_dim, bytes));
      KVFOLD_RETURN_IF_ERROR(CopyOnDevice(s, vd, v + g * slots * head_dim, bytes));
    }
    used += count;
  }
  return used;
}

}  // namespace kvfold
